//! The policy core: detection, storage classification, rules and findings.
//! Pure functions over `serde_json::Value` and the config; no I/O.

pub mod catalog;
pub mod detect;
pub mod rules;
pub mod storage;
pub mod workload;

use std::collections::BTreeMap;

use serde_json::Value;

pub use rules::{Finding, Rule, Severity};
pub use workload::{Kind, Unreadable, Workload};

use crate::config::{Config, Mode};
use catalog::Catalog;
use detect::{DataPath, DbContainer, Source};
use storage::{Backing, Placement, StorageClass};

pub const ALLOW_EPHEMERAL_ANNOTATION: &str = "pvc-guard.io/allow-ephemeral";

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
    /// Claims of the object's namespace by name.
    pub claims: Option<BTreeMap<String, ClaimFacts>>,
    /// HorizontalPodAutoscalers of the object's namespace.
    pub autoscalers: Option<Vec<Autoscaler>>,
    /// The claim controller runs: claims a `pvc-guard.io/mutated` record
    /// names will be created, so their absence is not worth a warning.
    pub claim_controller: bool,
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
    fn claim_missing(&self, claim: &str) -> bool {
        self.claims.as_ref().is_some_and(|c| !c.contains_key(claim))
    }

    /// An autoscaler that can take `kind/name` above one replica.
    fn scaling_autoscaler(&self, kind: &str, name: &str) -> Option<&Autoscaler> {
        self.autoscalers
            .as_ref()?
            .iter()
            .find(|h| h.target_kind == kind && h.target_name == name && h.max_replicas > 1)
    }

    fn claim_read_write_many(&self, claim: &str) -> bool {
        self.claims
            .as_ref()
            .and_then(|c| c.get(claim))
            .is_some_and(|c| c.access_modes.iter().any(|m| m == "ReadWriteMany"))
    }
}

/// One data path of one database container, and where it lives.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    pub db: usize,
    pub path: DataPath,
    pub placement: Placement<'a>,
}

/// Everything the core concluded about one workload.
#[derive(Debug, Clone)]
pub struct Assessment<'a, 'c> {
    pub workload: Workload<'a>,
    pub dbs: Vec<DbContainer<'a, 'c>>,
    pub sites: Vec<Site<'a>>,
    pub findings: Vec<Finding>,
    /// The accepted `pvc-guard.io/allow-ephemeral` reason, if any.
    pub opted_out: Option<String>,
}

impl Assessment<'_, '_> {
    pub fn has_deny(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Deny)
    }
}

impl Policy {
    pub fn new(config: Config) -> Policy {
        let catalog = Catalog::with_overrides(&config.catalog);
        Policy { config, catalog }
    }

    /// Judges one object. `Ok(None)` for kinds pvc-guard does not look at.
    pub fn evaluate<'a, 'c>(
        &'c self,
        object: &'a Value,
        facts: &ClusterFacts,
    ) -> Result<Option<Assessment<'a, 'c>>, Unreadable> {
        let Some(workload) = Workload::from_object(object)? else {
            return Ok(None);
        };
        let dbs = detect::detect(&workload, &self.catalog, &self.config.durable_images);
        let mut sites = Vec::new();
        for (i, db) in dbs.iter().enumerate() {
            let volumes = db
                .facts
                .as_ref()
                .map(|f| f.volumes.as_slice())
                .unwrap_or_default();
            for path in &db.paths {
                let placement = storage::place(
                    &workload,
                    &db.container,
                    &path.path,
                    path.file,
                    volumes,
                    &self.config.csi_drivers,
                );
                sites.push(Site {
                    db: i,
                    path: path.clone(),
                    placement,
                });
            }
        }
        let mut assessment = Assessment {
            workload,
            dbs,
            sites,
            findings: Vec::new(),
            opted_out: None,
        };
        self.apply_rules(&mut assessment, facts);
        Ok(Some(assessment))
    }

    fn apply_rules(&self, a: &mut Assessment<'_, '_>, facts: &ClusterFacts) {
        let who = a.workload.display();
        let mut findings = Vec::new();
        // Parsed only when a claim is missing and the controller could create it.
        let object = a.workload.object;
        let recorded = |claim: &str| {
            crate::mutate::Record::from_object(object)
                .is_some_and(|r| r.claims().iter().any(|(name, _)| name == claim))
        };
        for (si, site) in a.sites.iter().enumerate() {
            let db = &a.dbs[site.db];
            let ctx = Ctx {
                who: &who,
                db,
                site,
                index: si,
            };
            let p = &site.placement;
            match p.class {
                StorageClass::WritableLayer | StorageClass::ImageVolume | StorageClass::Ephemeral => {
                    findings.push(ephemeral_data_path(&ctx));
                }
                StorageClass::ReadOnlySource => findings.push(ctx.finding(
                    Rule::ConfigVolumeDataPath,
                    Severity::Deny,
                    format!("on {}, a read-only source the kubelet rewrites: writes fail or vanish", p.describe),
                    format!("Mount a PersistentVolumeClaim at {}", ctx.mount_target()),
                )),
                StorageClass::NodeLocal => findings.push(ctx.finding(
                    Rule::NodeLocalDataPath,
                    Severity::Warn,
                    format!("on {}: the data stays on one node and a pod scheduled elsewhere starts empty", p.describe),
                    "Use a PersistentVolumeClaim (a local PersistentVolume if node-local storage is intended)".into(),
                )),
                StorageClass::Unknown => findings.push(ctx.finding(
                    Rule::UnknownStorage,
                    Severity::Warn,
                    format!("on {}, whose lifetime pvc-guard does not know", p.describe),
                    "Use a PersistentVolumeClaim, or add the CSI driver to csiDrivers in the pvc-guard config".into(),
                )),
                StorageClass::Persistent => {}
            }
            if p.file_mount {
                findings.push(ctx.finding(
                    Rule::SqliteFileMount,
                    Severity::Warn,
                    "as a single-file mount: SQLite's -wal and -shm journal files land beside it on the container's writable layer and are lost on restart".into(),
                    "Mount the directory that holds the database file instead".into(),
                ));
            }
            if p.mount.as_ref().is_some_and(|m| m.read_only) {
                findings.push(ctx.finding(
                    Rule::ReadOnlyDataPath,
                    Severity::Warn,
                    "on a readOnly mount: the database cannot write its data".into(),
                    "Remove readOnly from that volumeMount".into(),
                ));
            }
            let claim = match &p.backing {
                Backing::Claim(c) if p.class == StorageClass::Persistent => Some(c.as_str()),
                _ => None,
            };
            if let Some(claim) = claim.filter(|_| site.path.source.is_database())
                && let Some(f) = shared_claim_replicas(&ctx, &a.workload, claim)
            {
                findings.push(f);
            }
            if let Some(claim) = claim
                && facts.claim_missing(claim)
                && !(facts.claim_controller && recorded(claim))
            {
                findings.push(ctx.finding(
                    Rule::MissingClaim,
                    Severity::Warn,
                    format!("on claim {claim:?}, which pvc-guard's cache of the namespace does not hold: a pod stays Pending until the claim exists"),
                    format!("Create the PersistentVolumeClaim {claim:?} (pvc-guard fix prints one), or run pvc-guard with --create-claims"),
                ));
            }
            if let Some(claim) = claim
                && a.workload.kind == Kind::Deployment
                && site.path.source.is_database()
                && let Some(hpa) = facts.scaling_autoscaler("Deployment", &a.workload.name)
            {
                findings.push(ctx.finding(
                    Rule::AutoscaledClaim,
                    Severity::Warn,
                    format!("on claim {claim:?} that HorizontalPodAutoscaler {:?} can scale to {} replicas through /scale (which admission never sees): the replicas would share one data directory", hpa.name, hpa.max_replicas),
                    "Set the autoscaler's maxReplicas to 1, or run the database as a StatefulSet".into(),
                ));
            }
            if let Some(claim) = claim
                && a.workload.kind == Kind::Deployment
                && !facts.claim_read_write_many(claim)
            {
                let strategy =
                    workload::at(a.workload.object, "/spec/strategy/type").and_then(Value::as_str);
                if strategy.is_none_or(|s| s == "RollingUpdate") {
                    findings.push(ctx.finding(
                            Rule::RollingUpdateClaim,
                            Severity::Warn,
                            format!("on claim {claim:?} with the RollingUpdate strategy: during a rollout the new pod hangs on Multi-Attach, or two database processes share one data directory"),
                            "Set spec.strategy.type: Recreate".into(),
                        ));
                }
            }
            let claim_like = matches!(p.backing, Backing::Claim(_) | Backing::ClaimTemplate(_));
            if db.is_postgres()
                && claim_like
                && db.pgdata.as_deref() == Some(site.path.path.as_str())
                && p.mount
                    .as_ref()
                    .is_some_and(|m| m.mount_path == site.path.path && m.sub_path.is_none())
            {
                findings.push(ctx.finding(
                    Rule::PgdataMountRoot,
                    Severity::Warn,
                    "as PGDATA at the root of the claim's mount: a fresh volume holds lost+found there and initdb refuses a non-empty directory".into(),
                    format!("Mount the claim with subPath: pgdata, or set PGDATA to {}/pgdata", site.path.path),
                ));
            }
        }
        for db in &a.dbs {
            for u in &db.unresolved {
                let short = format!(
                    "[{}] container {:?}: {}",
                    Rule::UnresolvedDataPath,
                    db.container.name,
                    u.why
                );
                findings.push(Finding {
                    rule: Rule::UnresolvedDataPath,
                    severity: Severity::Warn,
                    container: db.container.name.to_string(),
                    path: u.path.clone(),
                    message: format!(
                        "[{}] {who} container {:?} ({}): {}.",
                        Rule::UnresolvedDataPath,
                        db.container.name,
                        db.image,
                        u.why
                    ),
                    short,
                    site: None,
                });
            }
            let is_server = db.family().is_some()
                && db
                    .paths
                    .iter()
                    .any(|p| p.source.is_database() && p.source != Source::Sqlite);
            if a.workload.kind == Kind::Deployment && is_server && !db.cache_like {
                let family = db.family().unwrap_or("");
                findings.push(Finding {
                    rule: Rule::DatabaseInDeployment,
                    severity: Severity::Warn,
                    container: db.container.name.to_string(),
                    path: db.paths.first().map(|p| p.path.clone()).unwrap_or_default(),
                    message: format!(
                        "[{}] {who} container {:?} ({}) runs {family} in a Deployment. A StatefulSet gives each replica its own claim and a stable identity; `pvc-guard convert -f <file>` prints one.",
                        Rule::DatabaseInDeployment, db.container.name, db.image
                    ),
                    short: format!(
                        "[{}] container {:?} runs {family} in a Deployment; a StatefulSet fits better (pvc-guard convert)",
                        Rule::DatabaseInDeployment, db.container.name
                    ),
                    site: None,
                });
            }
        }
        self.apply_opt_out(a, &mut findings);
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
    }

    fn apply_opt_out(&self, a: &mut Assessment<'_, '_>, findings: &mut Vec<Finding>) {
        let Some(reason) = a.workload.annotation(ALLOW_EPHEMERAL_ANNOTATION) else {
            return;
        };
        let who = a.workload.display();
        let refuse = |why: String| Finding {
            rule: Rule::InvalidOptOut,
            severity: Severity::Warn,
            container: String::new(),
            path: String::new(),
            message: format!("[{}] {who}: {why}", Rule::InvalidOptOut),
            short: format!("[{}] {why}", Rule::InvalidOptOut),
            site: None,
        };
        if reason.trim().is_empty() {
            findings.push(refuse(format!(
                "{ALLOW_EPHEMERAL_ANNOTATION} needs a reason (\"<why this data may be lost>\"); the opt-out is ignored"
            )));
            return;
        }
        let ns = a.workload.namespace.as_deref().unwrap_or("default");
        let allowed = &self.config.opt_out_namespaces;
        if !allowed.is_empty() && !allowed.iter().any(|n| n == ns) {
            findings.push(refuse(format!(
                "opt-outs are not allowed in namespace {ns:?} by the pvc-guard config; the opt-out is ignored"
            )));
            return;
        }
        findings.retain(|f| !f.rule.opt_out_covers());
        a.opted_out = Some(reason.trim().to_string());
    }
}

/// What a rule needs to word its finding.
struct Ctx<'x, 'a, 'c> {
    who: &'x str,
    db: &'x DbContainer<'a, 'c>,
    site: &'x Site<'a>,
    index: usize,
}

impl Ctx<'_, '_, '_> {
    /// Where a claim must be mounted so no image VOLUME shadows the path.
    fn mount_target(&self) -> String {
        let path = &self.site.path;
        if let Some(v) = &self.site.placement.image_volume {
            return v.clone();
        }
        if let Some(mp) = self.db.facts.as_ref().and_then(|f| f.mount_path.as_ref())
            && workload::path_contains(mp, &path.path)
        {
            return mp.clone();
        }
        if path.file {
            return parent_dir(&path.path);
        }
        path.path.clone()
    }

    fn finding(&self, rule: Rule, severity: Severity, what: String, fix: String) -> Finding {
        let c = self.db.container.name;
        let path = &self.site.path.path;
        Finding {
            rule,
            severity,
            container: c.to_string(),
            path: path.clone(),
            message: format!(
                "[{rule}] {} container {c:?} ({}) keeps {path} {what}. {fix}.",
                self.who, self.db.image
            ),
            short: format!(
                "[{rule}] container {c:?} keeps {path} {}; {}",
                first_clause(&what),
                lower_first(&fix)
            ),
            site: Some(self.index),
        }
    }
}

fn first_clause(s: &str) -> &str {
    s.split([':', ',']).next().unwrap_or(s).trim_end()
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

pub fn parent_dir(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((dir, _)) => dir.to_string(),
    }
}

/// Directories images populate: a claim mounted there would hide the image's files.
pub fn image_populated_dir(dir: &str, working_dir: Option<&str>) -> bool {
    const POPULATED: &[&str] = &[
        "/", "/app", "/usr", "/bin", "/etc", "/opt", "/srv", "/home", "/root", "/var", "/var/lib",
    ];
    POPULATED.contains(&dir) || working_dir.is_some_and(|w| workload::normalize_path(w) == dir)
}

/// ephemeral-data-path: the words depend on the storage and on what can fix it.
fn ephemeral_data_path(ctx: &Ctx<'_, '_, '_>) -> Finding {
    let p = &ctx.site.placement;
    let path = &ctx.site.path;
    let lost = match p.class {
        StorageClass::WritableLayer => format!(
            "on {}: the data is lost whenever the pod restarts",
            p.describe
        ),
        StorageClass::ImageVolume => format!(
            "in {}: the data is lost whenever the container is recreated",
            p.describe
        ),
        _ if p.per_pod_sub_path => format!(
            "on {} with a subPathExpr naming the pod: every new pod starts with an empty directory",
            p.describe
        ),
        _ => format!(
            "on {}: the data is lost whenever the pod is deleted, evicted or rescheduled",
            p.describe
        ),
    };
    let target = ctx.mount_target();
    let mut fix = if path.file && image_populated_dir(&target, ctx.db.container.working_dir()) {
        format!(
            "Move the database file into a directory of its own (not {target}, which the image populates) and mount a PersistentVolumeClaim there"
        )
    } else if p.class == StorageClass::ImageVolume {
        format!("Mount a PersistentVolumeClaim at exactly {target} (pvc-guard fix shows how)")
    } else if matches!(p.backing, Backing::EmptyDir | Backing::GenericEphemeral) {
        format!(
            "Replace volume {:?} with a PersistentVolumeClaim (pvc-guard fix shows how)",
            p.mount.as_ref().map(|m| m.volume_name).unwrap_or("")
        )
    } else {
        format!("Mount a PersistentVolumeClaim at {target} (pvc-guard fix shows how)")
    };
    if ctx.db.pgdata_hidden {
        fix.push_str("; PGDATA comes from envFrom or valueFrom, so pvc-guard cannot fix it: set PGDATA in env");
    }
    let severity = if ctx.db.cache_like {
        Severity::Warn
    } else {
        Severity::Deny
    };
    let mut f = ctx.finding(Rule::EphemeralDataPath, severity, lost, fix);
    f.message.push_str(&format!(
        " Or annotate the workload with {ALLOW_EPHEMERAL_ANNOTATION}: \"<reason>\"."
    ));
    if ctx.db.cache_like {
        f.message.push_str(&format!(
            " A warning only: {} is a cache by default; annotate {} if it holds data you need.",
            ctx.db
                .facts
                .as_ref()
                .map(|f| f.entry.name.as_str())
                .unwrap_or("this image"),
            detect::DATA_PATHS_ANNOTATION
        ));
    }
    f
}

/// shared-claim-replicas: several pods at once on one claim at a database path.
fn shared_claim_replicas(ctx: &Ctx<'_, '_, '_>, w: &Workload<'_>, claim: &str) -> Option<Finding> {
    let replicas = w.replicas();
    let (severity, how) = match w.kind {
        Kind::Deployment | Kind::ReplicaSet | Kind::ReplicationController | Kind::StatefulSet
            if replicas > 1 =>
        {
            (Severity::Deny, format!("{replicas} replicas"))
        }
        Kind::DaemonSet => (Severity::Deny, "a pod on every node".to_string()),
        Kind::Job if replicas > 1 => (Severity::Deny, format!("parallelism {replicas}")),
        Kind::CronJob if replicas > 1 => (Severity::Deny, format!("parallelism {replicas}")),
        Kind::CronJob => {
            let policy = workload::at(w.object, "/spec/concurrencyPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Allow");
            if policy != "Allow" {
                return None;
            }
            (
                Severity::Warn,
                "concurrencyPolicy Allow (runs may overlap)".to_string(),
            )
        }
        _ => return None,
    };
    let fix = match w.kind {
        Kind::CronJob if severity == Severity::Warn => {
            "Set spec.concurrencyPolicy: Forbid".to_string()
        }
        Kind::StatefulSet => {
            format!("Move claim {claim:?} into volumeClaimTemplates so each replica gets its own")
        }
        _ => "Run one replica, or a StatefulSet with volumeClaimTemplates (pvc-guard convert)"
            .to_string(),
    };
    Some(ctx.finding(
        Rule::SharedClaimReplicas,
        severity,
        format!("on claim {claim:?} shared by {how}: several database processes would use one data directory, or pods hang on Multi-Attach"),
        fix,
    ))
}
