//! The policy core: detection, storage classification, rules and findings.
//! Pure functions over the typed view of an object ([`crate::model`]), the
//! config and the cluster facts the shell passes in; no I/O. The layers and
//! the whole request path are in docs/architecture.md.

pub mod catalog;
pub mod detect;
pub mod finding;
pub mod ownership;
pub mod rules;
pub mod storage;

use std::collections::BTreeMap;

pub use finding::{Detail, Finding, Rule, Severity};
pub use ownership::{Caller, Ownership, ownership};

use crate::config::{Config, Mode, RuleSetting};
use crate::model::{Annotation, Workload, limits};
use catalog::Catalog;
use detect::{DataPath, DbContainer};
use storage::Placement;

/// The compiled policy: config plus the catalog it extends. Cheap to share.
#[derive(Debug, Clone)]
pub struct Policy {
    pub config: Config,
    pub catalog: Catalog,
}

/// What the cluster knows, each part possibly unknown (offline, or caches
/// not synced). The core never asks for it; the shell passes it in.
#[derive(Debug, Clone, Default)]
pub struct ClusterFacts {
    /// Labels of the object's namespace.
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// Claims of the object's namespace by name (those the object names).
    pub claims: Option<BTreeMap<String, ClaimFacts>>,
    /// HorizontalPodAutoscalers of the object's namespace.
    pub autoscalers: Option<Vec<Autoscaler>>,
    /// The claim controller runs: claims a `pvc-guard.io/mutated` record
    /// names will be created, so their absence is not worth a warning.
    pub claim_controller: bool,
    /// ConfigMaps of the object's namespace by name, each key to its text:
    /// a server's config file mounted from one can make a cache durable
    /// (`appendonly yes`). Known offline, from the same input; the webhook
    /// does not read ConfigMaps.
    pub config_maps: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

/// What an autoscaler can do to a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoscaler {
    pub name: String,
    pub target_kind: String,
    pub target_name: String,
    pub max_replicas: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimFacts {
    pub access_modes: Vec<String>,
    pub storage_class: Option<String>,
    /// `pvc-guard.io/created-for`: the workload the claim controller made it for.
    pub created_for: Option<String>,
}

impl ClusterFacts {
    pub fn namespace_label(&self, key: &str) -> Option<&str> {
        self.namespace_labels.as_ref()?.get(key).map(String::as_str)
    }

    /// Validation mode: the namespace label `pvc-guard.io/mode`, else config.
    pub fn mode(&self, config: &Config) -> Mode {
        self.namespace_label("pvc-guard.io/mode")
            .and_then(Mode::parse)
            .unwrap_or(config.mode)
    }

    pub fn mutation_enabled(&self, config: &Config) -> bool {
        config.mutate && self.namespace_label("pvc-guard.io/mutate") != Some("false")
    }

    pub fn namespace_ignored(&self) -> bool {
        self.namespace_label("pvc-guard.io/ignore") == Some("true")
    }

    /// A `restricted` Pod Security namespace does not admit root init containers.
    pub fn restricted(&self) -> bool {
        self.namespace_label("pod-security.kubernetes.io/enforce") == Some("restricted")
    }

    /// The claim is known not to exist (unknown when there are no facts).
    pub fn claim_missing(&self, claim: &str) -> bool {
        self.claims.as_ref().is_some_and(|c| !c.contains_key(claim))
    }

    /// The workload (`Kind/name`) an existing claim was created for, if any.
    pub fn claim_created_for(&self, claim: &str) -> Option<&str> {
        self.claims.as_ref()?.get(claim)?.created_for.as_deref()
    }

    /// An autoscaler that can take `kind/name` above one replica.
    pub fn scaling_autoscaler(&self, kind: &str, name: &str) -> Option<&Autoscaler> {
        self.autoscalers
            .as_ref()?
            .iter()
            .find(|h| h.target_kind == kind && h.target_name == name && h.max_replicas > 1)
    }

    pub fn claim_read_write_many(&self, claim: &str) -> bool {
        self.claims
            .as_ref()
            .and_then(|c| c.get(claim))
            .is_some_and(|c| c.access_modes.iter().any(|m| m == "ReadWriteMany"))
    }
}

/// One data path of one database container, and where it lives.
#[derive(Debug, Clone)]
pub struct Site<'w> {
    /// Index into [`Assessment::dbs`].
    pub db: usize,
    pub path: DataPath,
    pub placement: Placement<'w>,
}

/// Everything the core concluded about one workload.
#[derive(Debug, Clone)]
pub struct Assessment<'w, 'c> {
    pub workload: &'w Workload,
    pub dbs: Vec<DbContainer<'w, 'c>>,
    pub sites: Vec<Site<'w>>,
    /// Sorted (deny first, then by rule, container and path), one per key.
    /// All of them: the mutation fixes every one it can; answers list at
    /// most [`limits::FINDINGS`].
    pub findings: Vec<Finding>,
    /// The accepted `pvc-guard.io/allow-ephemeral` reason, if any.
    pub opted_out: Option<String>,
}

impl Assessment<'_, '_> {
    pub fn has_deny(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Deny)
    }
}

fn limit_exceeded(who: String, what: &'static str, count: usize, cap: usize) -> Finding {
    Finding {
        rule: Rule::LimitExceeded,
        severity: Severity::Deny,
        container: String::new(),
        path: what.to_string(),
        detail: Detail::LimitExceeded {
            who,
            what,
            count,
            cap,
        },
        inherited: false,
        site: None,
    }
}

impl Policy {
    pub fn new(config: Config) -> Policy {
        let catalog = Catalog::with_overrides(&config.catalog);
        Policy { config, catalog }
    }

    /// Judges one workload. Linear in its size: every list is walked a
    /// fixed number of times, and lookups go through maps built once.
    pub fn evaluate<'w, 'c>(
        &'c self,
        workload: &'w Workload,
        facts: &ClusterFacts,
    ) -> Assessment<'w, 'c> {
        let who = workload.display();
        let mut a = Assessment {
            workload,
            dbs: Vec::new(),
            sites: Vec::new(),
            findings: Vec::new(),
            opted_out: None,
        };
        let (entries, longest_entry) = detect::data_path_entry_count(workload);
        let exceeded = workload
            .exceeded_limit()
            .or_else(|| {
                (entries > limits::DATA_PATH_ENTRIES).then_some((
                    "entries in the pvc-guard.io/data-paths annotation",
                    entries,
                    limits::DATA_PATH_ENTRIES,
                ))
            })
            .or_else(|| {
                // Each entry is copied once for each container it reaches.
                (longest_entry > limits::PATH_BYTES).then_some((
                    "bytes in its longest pvc-guard.io/data-paths entry",
                    longest_entry,
                    limits::PATH_BYTES,
                ))
            });
        let limited = self.config.rule_setting(Rule::LimitExceeded) != Some(RuleSetting::Off);
        if let Some((what, count, cap)) = exceeded
            && limited
        {
            a.findings.push(limit_exceeded(who, what, count, cap));
            return a;
        }
        // Every data path costs a finding and a fix, so they are capped:
        // detection stops as soon as they pass a cap, before copying more.
        let detected = detect::detect(
            workload,
            &self.catalog,
            &self.config.durable_images,
            facts.config_maps.as_ref(),
            limited,
        );
        match detected {
            Ok(dbs) => a.dbs = dbs,
            Err(tally) => {
                // Detection stops only past a cap, so one is named.
                if let Some((what, count, cap)) = tally.exceeded() {
                    a.findings.push(limit_exceeded(who, what, count, cap));
                }
                return a;
            }
        }
        let volumes = workload.volumes_by_name();
        for (i, db) in a.dbs.iter().enumerate() {
            let image_volumes = db
                .facts
                .as_ref()
                .map(|f| f.volumes.as_slice())
                .unwrap_or_default();
            let mounts = storage::MountIndex::new(db.container);
            for path in &db.paths {
                let placement = storage::place(
                    workload,
                    &volumes,
                    &mounts,
                    &path.path,
                    path.file,
                    image_volumes,
                    &self.config.csi_drivers,
                );
                a.sites.push(Site {
                    db: i,
                    path: path.clone(),
                    placement,
                });
            }
        }
        let mut findings = Vec::new();
        let shared = rules::Shared::new(workload);
        for (index, site) in a.sites.iter().enumerate() {
            let ctx = rules::SiteCtx {
                who: &who,
                workload,
                db: &a.dbs[site.db],
                site,
                index,
                facts,
                shared: &shared,
            };
            findings.extend(rules::SITE_RULES.iter().filter_map(|rule| rule(&ctx)));
        }
        for db in &a.dbs {
            let ctx = rules::ContainerCtx {
                who: &who,
                workload,
                db,
            };
            for rule in rules::CONTAINER_RULES {
                rule(&ctx, &mut findings);
            }
        }
        for rule in rules::OBJECT_RULES {
            rule(self, workload, &who, &mut findings);
        }
        a.opted_out = self.apply_opt_out(workload, &who, &mut findings);
        // A rule the config turns off finds nothing, for the validator and
        // the mutation alike.
        findings.retain(|f| self.config.rule_setting(f.rule) != Some(RuleSetting::Off));
        findings.sort_by(|x, y| {
            (y.severity, x.rule, &x.container, &x.path).cmp(&(
                x.severity,
                y.rule,
                &y.container,
                &y.path,
            ))
        });
        findings.dedup_by(|x, y| x.key() == y.key());
        a.findings = findings;
        a
    }

    /// `pvc-guard.io/allow-ephemeral`: with a reason, in a namespace the
    /// config allows, it takes the findings it covers away.
    fn apply_opt_out(
        &self,
        workload: &Workload,
        who: &str,
        findings: &mut Vec<Finding>,
    ) -> Option<String> {
        let reason = workload.annotation(Annotation::AllowEphemeral)?;
        let refuse = |why| Finding {
            rule: Rule::InvalidOptOut,
            severity: Severity::Warn,
            container: String::new(),
            path: String::new(),
            detail: Detail::OptOut {
                who: who.to_string(),
                why,
            },
            inherited: false,
            site: None,
        };
        if reason.trim().is_empty() {
            findings.push(refuse(finding::OptOutRefusal::NoReason));
            return None;
        }
        let ns = workload.namespace.as_deref().unwrap_or("default");
        let allowed = &self.config.opt_out_namespaces;
        if !allowed.is_empty() && !allowed.iter().any(|n| n == ns) {
            findings.push(refuse(finding::OptOutRefusal::NamespaceNotAllowed(
                ns.to_string(),
            )));
            return None;
        }
        findings.retain(|f| !f.rule.opt_out_covers());
        Some(reason.trim().to_string())
    }
}
