//! The rules (docs/architecture.md, "Rules"): one small function per rule,
//! named as its id, each returning what it found as a typed [`Finding`].
//! [`SITE_RULES`] run for every placed data path, [`CONTAINER_RULES`] for
//! every database container, [`OBJECT_RULES`] once per object.

use std::cell::OnceCell;
use std::collections::HashSet;

use super::catalog::ImageRef;
use super::detect::{DbContainer, Origin, Soft, command_words};
use super::finding::{Detail, Finding, Fix, Note, Rule, Severity, Sharing, What};
use super::storage::{Backing, Describe, StorageClass};
use super::{Autoscaler, ClusterFacts, Policy, Site};
use crate::config::ACCESS_MODES;
use crate::k8s::{self, parent_dir, path_contains};
use crate::model::{Annotation, Kind, Workload};
use crate::record::Record;

/// What a site rule sees.
pub struct SiteCtx<'x, 'w, 'c> {
    pub who: &'x str,
    pub workload: &'w Workload,
    pub db: &'x DbContainer<'w, 'c>,
    pub site: &'x Site<'w>,
    /// The site's index in the assessment.
    pub index: usize,
    pub facts: &'x ClusterFacts,
    pub shared: &'x Shared<'w>,
}

/// What site rules look up across the whole workload, worked out at most
/// once per evaluation and only when a rule asks: worked out per site, a
/// long record or init command cost its length once for every data path.
pub struct Shared<'w> {
    workload: &'w Workload,
    recorded_claims: OnceCell<HashSet<String>>,
    lost_found_removed: OnceCell<HashSet<&'w str>>,
    /// The autoscaler that can scale this Deployment past one replica:
    /// a namespace can hold thousands, each site asked.
    autoscaler: OnceCell<Option<Autoscaler>>,
}

impl<'w> Shared<'w> {
    pub fn new(workload: &'w Workload) -> Shared<'w> {
        Shared {
            workload,
            recorded_claims: OnceCell::new(),
            lost_found_removed: OnceCell::new(),
            autoscaler: OnceCell::new(),
        }
    }

    fn autoscaler(&self, facts: &ClusterFacts) -> Option<&Autoscaler> {
        self.autoscaler
            .get_or_init(|| {
                facts
                    .scaling_autoscaler("Deployment", &self.workload.name)
                    .cloned()
            })
            .as_ref()
    }

    /// Does the workload's own `pvc-guard.io/mutated` record name `claim`?
    fn recorded(&self, claim: &str) -> bool {
        self.recorded_claims
            .get_or_init(|| {
                self.workload
                    .mutated()
                    .and_then(Record::parse)
                    .map(|r| r.claims().map(|(name, _)| name.to_string()).collect())
                    .unwrap_or_default()
            })
            .contains(claim)
    }

    /// Does an init container remove the `lost+found` at the root of
    /// `volume` (`rmdir /vol/lost+found`) before postgres starts? initdb
    /// then finds the empty directory it needs.
    fn removes_lost_found(&self, volume: &str) -> bool {
        self.lost_found_removed
            .get_or_init(|| volumes_cleared_of_lost_found(self.workload))
            .contains(volume)
    }
}

pub type SiteRule = fn(&SiteCtx<'_, '_, '_>) -> Option<Finding>;

pub const SITE_RULES: &[SiteRule] = &[
    ephemeral_data_path,
    config_volume_data_path,
    node_local_data_path,
    unknown_storage,
    sqlite_file_mount,
    read_only_data_path,
    shared_claim_replicas,
    missing_claim,
    autoscaled_claim,
    rolling_update_claim,
    pgdata_mount_root,
];

/// What a container rule sees.
pub struct ContainerCtx<'x, 'w, 'c> {
    pub who: &'x str,
    pub workload: &'w Workload,
    pub db: &'x DbContainer<'w, 'c>,
}

pub type ContainerRule = fn(&ContainerCtx<'_, '_, '_>, &mut Vec<Finding>);

pub const CONTAINER_RULES: &[ContainerRule] = &[unresolved_data_path, database_in_deployment];

pub type ObjectRule = fn(&Policy, &Workload, &str, &mut Vec<Finding>);

pub const OBJECT_RULES: &[ObjectRule] = &[invalid_annotation];

impl SiteCtx<'_, '_, '_> {
    /// Where a claim must be mounted so no image VOLUME shadows the path.
    fn mount_target(&self) -> String {
        let path = &self.site.path;
        if let Some(v) = &self.site.placement.image_volume {
            return v.clone();
        }
        if let Some(mp) = self.db.facts.as_ref().and_then(|f| f.mount_path.as_ref())
            && path_contains(mp, &path.path)
        {
            return mp.clone();
        }
        if path.file {
            return parent_dir(&path.path);
        }
        path.path.clone()
    }

    /// A finding at this site. A layout only guessed from the image's name
    /// never denies: the finding is a warning that names the guess.
    fn finding(&self, rule: Rule, severity: Severity, what: What, fix: Fix) -> Finding {
        let db = self.db;
        let guess = db.guess().map(|entry| Note::Guess {
            entry: entry.to_string(),
            repository: ImageRef::parse(db.image).full_name(),
        });
        let inherited = match &db.origin {
            Some(Origin::ServerEnv { var, entry }) => Some((entry.clone(), *var)),
            _ => None,
        };
        Finding {
            rule,
            severity: if guess.is_some() {
                Severity::Warn
            } else {
                severity
            },
            container: db.name().to_string(),
            path: self.site.path.path.clone(),
            detail: Detail::Site {
                who: self.who.to_string(),
                image: db.image.to_string(),
                what,
                fix,
                pgdata_hidden: false,
                blocked: None,
                opt_out_hint: false,
                note: guess,
                inherited,
            },
            inherited: false,
            site: Some(self.index),
        }
    }

    /// The claim at this path, if the path is on one.
    fn claim(&self) -> Option<&str> {
        match self.site.placement.backing {
            Backing::Claim(c) if self.site.placement.class == StorageClass::Persistent => Some(c),
            _ => None,
        }
    }
}

/// Directories images populate: a claim mounted there would hide the image's files.
pub fn image_populated_dir(dir: &str, working_dir: Option<&str>) -> bool {
    const POPULATED: &[&str] = &[
        "/", "/app", "/usr", "/bin", "/etc", "/opt", "/srv", "/home", "/root", "/var", "/var/lib",
    ];
    // The view's working directory is normalised already.
    POPULATED.contains(&dir) || working_dir == Some(dir)
}

/// ephemeral-data-path: data on the writable layer, in an image VOLUME no
/// mount matches, or on an ephemeral volume.
fn ephemeral_data_path(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let p = &ctx.site.placement;
    let what = match (&p.class, &p.describe) {
        (StorageClass::WritableLayer, _) => What::WritableLayer,
        (StorageClass::ImageVolume, Describe::ImageVolume(v)) => What::ImageVolume(v.clone()),
        (StorageClass::ImageVolume, Describe::ImageVolumeOver { volume, mount }) => {
            What::ImageVolumeOver {
                volume: volume.clone(),
                mount: mount.to_string(),
            }
        }
        (StorageClass::Ephemeral, d) if p.per_pod_sub_path => What::PerPodSubPath(d.to_string()),
        (StorageClass::Ephemeral, d) => What::Ephemeral(d.to_string()),
        _ => return None,
    };
    let target = ctx.mount_target();
    let fix = if ctx.site.path.file
        && image_populated_dir(&target, ctx.db.container.container.working_dir())
    {
        Fix::MoveFile { dir: target }
    } else if p.class == StorageClass::ImageVolume {
        Fix::MountExactly { target }
    } else if matches!(p.backing, Backing::EmptyDir | Backing::GenericEphemeral) {
        Fix::ReplaceVolume {
            volume: p.mount.as_ref().map(|m| m.volume_name).unwrap_or("").into(),
        }
    } else {
        Fix::MountClaim { target }
    };
    let entry = || {
        ctx.db
            .facts
            .as_ref()
            .map_or("this image", |f| f.entry.name.as_str())
            .to_string()
    };
    let soft = ctx.db.soft.as_ref().map(|s| match s {
        Soft::Cache => Note::Cache { entry: entry() },
        Soft::Provisioned { mount } => Note::Provisioned {
            entry: entry(),
            mount: mount.clone(),
        },
    });
    let mut f = ctx.finding(
        Rule::EphemeralDataPath,
        if soft.is_some() {
            Severity::Warn
        } else {
            Severity::Deny
        },
        what,
        fix,
    );
    if let Detail::Site {
        pgdata_hidden,
        opt_out_hint,
        note,
        ..
    } = &mut f.detail
    {
        *pgdata_hidden = ctx.db.pgdata_hidden;
        *opt_out_hint = true;
        if note.is_none() {
            *note = soft;
        }
    }
    Some(f)
}

/// config-volume-data-path: data on a source the kubelet rewrites.
fn config_volume_data_path(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let p = &ctx.site.placement;
    (p.class == StorageClass::ReadOnlySource).then(|| {
        ctx.finding(
            Rule::ConfigVolumeDataPath,
            Severity::Deny,
            What::ReadOnlySource(p.describe.to_string()),
            Fix::MountClaimAt {
                target: ctx.mount_target(),
            },
        )
    })
}

/// node-local-data-path: data that stays on one node.
fn node_local_data_path(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let p = &ctx.site.placement;
    (p.class == StorageClass::NodeLocal).then(|| {
        ctx.finding(
            Rule::NodeLocalDataPath,
            Severity::Warn,
            What::NodeLocal(p.describe.to_string()),
            Fix::UseClaimOrLocal,
        )
    })
}

/// unknown-storage: an inline CSI driver whose lifetime is not known.
fn unknown_storage(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let p = &ctx.site.placement;
    (p.class == StorageClass::Unknown).then(|| {
        ctx.finding(
            Rule::UnknownStorage,
            Severity::Warn,
            What::UnknownLifetime(p.describe.to_string()),
            Fix::UseClaimOrDeclareDriver,
        )
    })
}

/// sqlite-file-mount: the journal lands beside a file mounted by itself.
fn sqlite_file_mount(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    ctx.site.placement.file_mount.then(|| {
        ctx.finding(
            Rule::SqliteFileMount,
            Severity::Warn,
            What::FileMount,
            Fix::MountDirectory,
        )
    })
}

/// read-only-data-path: the database cannot write.
fn read_only_data_path(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let read_only = ctx
        .site
        .placement
        .mount
        .as_ref()
        .is_some_and(|m| m.read_only);
    read_only.then(|| {
        ctx.finding(
            Rule::ReadOnlyDataPath,
            Severity::Warn,
            What::ReadOnlyMount,
            Fix::RemoveReadOnly,
        )
    })
}

/// shared-claim-replicas: several pods at once on one claim at a database path.
fn shared_claim_replicas(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let claim = ctx.claim()?;
    if !ctx.site.path.source.is_database() {
        return None;
    }
    let w = ctx.workload;
    let replicas = w.replicas();
    let (severity, how) = match w.kind {
        Kind::Deployment | Kind::ReplicaSet | Kind::ReplicationController | Kind::StatefulSet
            if replicas > 1 =>
        {
            (Severity::Deny, Sharing::Replicas(replicas))
        }
        Kind::DaemonSet => (Severity::Deny, Sharing::EveryNode),
        Kind::Job | Kind::CronJob if replicas > 1 => {
            (Severity::Deny, Sharing::Parallelism(replicas))
        }
        Kind::CronJob => {
            let policy = w.spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if policy != "Allow" {
                return None;
            }
            (Severity::Warn, Sharing::OverlappingRuns)
        }
        _ => return None,
    };
    let fix = match w.kind {
        Kind::CronJob if severity == Severity::Warn => Fix::ForbidOverlap,
        Kind::StatefulSet => Fix::TemplatePerReplica {
            claim: claim.to_string(),
        },
        _ => Fix::OneReplica,
    };
    Some(ctx.finding(
        Rule::SharedClaimReplicas,
        severity,
        What::SharedClaim {
            claim: claim.to_string(),
            how,
        },
        fix,
    ))
}

/// missing-claim: (cluster facts) the claim does not exist and the claim
/// controller will not create it.
fn missing_claim(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let claim = ctx.claim()?;
    (ctx.facts.claim_missing(claim) && !(ctx.facts.claim_controller && ctx.shared.recorded(claim)))
        .then(|| {
            ctx.finding(
                Rule::MissingClaim,
                Severity::Warn,
                What::MissingClaim(claim.to_string()),
                Fix::CreateClaim {
                    claim: claim.to_string(),
                },
            )
        })
}

/// autoscaled-claim: (cluster facts) an autoscaler can scale the Deployment
/// past one replica through /scale, which admission never sees.
fn autoscaled_claim(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let claim = ctx.claim()?;
    let w = ctx.workload;
    if w.kind != Kind::Deployment || !ctx.site.path.source.is_database() {
        return None;
    }
    let hpa = ctx.shared.autoscaler(ctx.facts)?;
    Some(ctx.finding(
        Rule::AutoscaledClaim,
        Severity::Warn,
        What::Autoscaled {
            claim: claim.to_string(),
            autoscaler: hpa.name.clone(),
            max_replicas: hpa.max_replicas,
        },
        Fix::LimitAutoscaler,
    ))
}

/// rolling-update-claim: a Deployment that rolls updates over a claim.
fn rolling_update_claim(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let claim = ctx.claim()?;
    let w = ctx.workload;
    if w.kind != Kind::Deployment || ctx.facts.claim_read_write_many(claim) {
        return None;
    }
    let strategy = w.spec.strategy.type_.as_deref();
    strategy.is_none_or(|s| s == "RollingUpdate").then(|| {
        ctx.finding(
            Rule::RollingUpdateClaim,
            Severity::Warn,
            What::RollingUpdate(claim.to_string()),
            Fix::Recreate,
        )
    })
}

/// pgdata-mount-root: initdb refuses a mount root that holds lost+found.
fn pgdata_mount_root(ctx: &SiteCtx<'_, '_, '_>) -> Option<Finding> {
    let p = &ctx.site.placement;
    let path = &ctx.site.path.path;
    let claim_like = matches!(p.backing, Backing::Claim(_) | Backing::ClaimTemplate(_));
    let at_root = p
        .mount
        .as_ref()
        .is_some_and(|m| m.mount_path == path && m.sub_path.is_none());
    let volume = p.mount.as_ref().map_or("", |m| m.volume_name);
    (ctx.db.is_postgres()
        && claim_like
        && ctx.db.pgdata.as_deref() == Some(path)
        && at_root
        && !ctx.shared.removes_lost_found(volume))
    .then(|| {
        ctx.finding(
            Rule::PgdataMountRoot,
            Severity::Warn,
            What::PgdataRoot,
            Fix::SubPath { path: path.clone() },
        )
    })
}

/// The volumes whose root some ordinary init container mounts and whose
/// `lost+found` it removes with `rm` or `rmdir`: one pass over each init
/// container's words and mounts.
fn volumes_cleared_of_lost_found(w: &Workload) -> HashSet<&str> {
    let mut cleared = HashSet::new();
    for c in w.containers().filter(|c| c.ordinary_init()) {
        let words = command_words(c.container);
        let removes = words.iter().any(|w| {
            let program = w.text.rsplit('/').next().unwrap_or("");
            program == "rm" || program == "rmdir"
        });
        if !removes {
            continue;
        }
        let targets: HashSet<String> = words.iter().map(|w| k8s::normalize_path(&w.text)).collect();
        for m in c.container.mounts().filter(|m| m.sub_path().is_none()) {
            if let (Some(volume), Some(root)) = (m.name.as_deref(), m.mount_path.as_deref())
                && targets.contains(&format!("{}/lost+found", root.trim_end_matches('/')))
            {
                cleared.insert(volume);
            }
        }
    }
    cleared
}

/// unresolved-data-path: a path the detector could not place.
fn unresolved_data_path(ctx: &ContainerCtx<'_, '_, '_>, out: &mut Vec<Finding>) {
    for u in &ctx.db.unresolved {
        out.push(Finding {
            rule: Rule::UnresolvedDataPath,
            severity: Severity::Warn,
            container: ctx.db.name().to_string(),
            path: u.path.clone(),
            detail: Detail::Unresolved {
                who: ctx.who.to_string(),
                image: ctx.db.image.to_string(),
                why: u.why.clone(),
            },
            inherited: false,
            site: None,
        });
    }
}

/// database-in-deployment: the StatefulSet hint.
fn database_in_deployment(ctx: &ContainerCtx<'_, '_, '_>, out: &mut Vec<Finding>) {
    let db = ctx.db;
    let Some(family) = db.family() else {
        return;
    };
    // Whether it runs a server, not how its paths were found: the same
    // database in the same Deployment gets the same answer whether an
    // annotation, a flag or the catalog names its data. A cache, or a
    // server whose configuration is provisioned, needs no identity.
    if ctx.workload.kind != Kind::Deployment || !db.server || db.soft.is_some() {
        return;
    }
    out.push(Finding {
        rule: Rule::DatabaseInDeployment,
        severity: Severity::Warn,
        container: db.name().to_string(),
        path: db.paths.first().map(|p| p.path.clone()).unwrap_or_default(),
        detail: Detail::DatabaseInDeployment {
            who: ctx.who.to_string(),
            image: db.image.to_string(),
            family: family.to_string(),
        },
        inherited: false,
        site: None,
    });
}

/// invalid-annotation: a `pvc-guard.io/*` annotation whose value pvc-guard
/// refuses. The claim annotations decide what the claim controller creates
/// with its own rights, so they are held to the config's limits here.
fn invalid_annotation(policy: &Policy, w: &Workload, who: &str, out: &mut Vec<Finding>) {
    let limits = &policy.config.claims;
    let mut refuse = |which: Annotation, value: &str, expected: String| {
        out.push(Finding {
            rule: Rule::InvalidAnnotation,
            severity: Severity::Deny,
            container: String::new(),
            path: which.key().to_string(),
            detail: Detail::InvalidAnnotation {
                who: who.to_string(),
                key: which.key(),
                value: value.to_string(),
                expected,
            },
            inherited: false,
            site: None,
        });
    };
    if let Some(v) = w.annotation(Annotation::ClaimSize) {
        let max = k8s::parse_quantity(&limits.max_size);
        match k8s::parse_quantity(v) {
            None => refuse(
                Annotation::ClaimSize,
                v,
                "expected a storage size such as 10Gi or 500Mi".into(),
            ),
            Some(q) if q <= 0.0 => refuse(
                Annotation::ClaimSize,
                v,
                "expected a size above zero".into(),
            ),
            Some(q) if max.is_some_and(|m| q > m) => refuse(
                Annotation::ClaimSize,
                v,
                format!(
                    "the pvc-guard config allows claims of at most {} (claims.maxSize)",
                    limits.max_size
                ),
            ),
            Some(_) => {}
        }
    }
    if let Some(v) = w.annotation(Annotation::ClaimAccessMode) {
        if !ACCESS_MODES.contains(&v) {
            refuse(
                Annotation::ClaimAccessMode,
                v,
                format!("expected one of {}", ACCESS_MODES.join(", ")),
            );
        } else if !limits.allowed_access_modes.iter().any(|m| m == v) {
            refuse(
                Annotation::ClaimAccessMode,
                v,
                format!(
                    "the pvc-guard config allows only {} (claims.allowedAccessModes)",
                    limits.allowed_access_modes.join(", ")
                ),
            );
        }
    }
    if let Some(v) = w.annotation(Annotation::ClaimStorageClass) {
        if !k8s::is_dns_subdomain(v) {
            refuse(
                Annotation::ClaimStorageClass,
                v,
                "expected the name of a StorageClass".into(),
            );
        } else if !limits.allowed_storage_classes.is_empty()
            && !limits.allowed_storage_classes.iter().any(|c| c == v)
        {
            refuse(
                Annotation::ClaimStorageClass,
                v,
                format!(
                    "the pvc-guard config allows only {} (claims.allowedStorageClasses)",
                    limits.allowed_storage_classes.join(", ")
                ),
            );
        }
    }
    if let Some(v) = w.annotation(Annotation::ClaimName)
        && !k8s::is_dns_subdomain(v.trim())
    {
        refuse(
            Annotation::ClaimName,
            v,
            "expected a claim name: lower-case letters, digits, '-' and '.', at most 253 characters".into(),
        );
    }
    if let Some(v) = w.annotation(Annotation::DataOwner)
        && crate::config::parse_owner(v).is_none()
    {
        refuse(
            Annotation::DataOwner,
            v,
            "expected a numeric uid or uid:gid such as 999:999".into(),
        );
    }
    if let Some(v) = w.annotation(Annotation::DataPaths) {
        let bad = super::detect::data_path_entries(v)
            .map(|e| e.split_once('=').map_or(e, |(_, p)| p).trim())
            .find(|p| !p.starts_with('/'));
        if let Some(bad) = bad {
            refuse(
                Annotation::DataPaths,
                v,
                format!(
                    "{bad:?} is not an absolute path; expected \"/path\" or \"container=/path\" entries separated by ';'"
                ),
            );
        }
    }
}
