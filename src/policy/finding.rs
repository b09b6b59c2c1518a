//! Severities and findings. A finding carries what the rule found as data
//! ([`Detail`]); its words are rendered only when someone reads them (a
//! denial, a warning, a report), so the many requests that are allowed
//! never build a message.

use std::fmt;

use serde::Serialize;

pub use crate::rule::Rule;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Warn,
    Deny,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warn => "warn",
            Severity::Deny => "deny",
        }
    }
}

impl Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What happens to the data at a site, in the words of a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    WritableLayer,
    ImageVolume(String),
    ImageVolumeOver {
        volume: String,
        mount: String,
    },
    /// On an ephemeral volume whose `subPathExpr` names the pod.
    PerPodSubPath(String),
    Ephemeral(String),
    ReadOnlySource(String),
    NodeLocal(String),
    UnknownLifetime(String),
    FileMount,
    ReadOnlyMount,
    SharedClaim {
        claim: String,
        how: Sharing,
    },
    MissingClaim(String),
    Autoscaled {
        claim: String,
        autoscaler: String,
        max_replicas: i32,
    },
    RollingUpdate(String),
    PgdataRoot,
}

/// How several pods come to share one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    Replicas(i64),
    EveryNode,
    Parallelism(i64),
    OverlappingRuns,
}

impl fmt::Display for Sharing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sharing::Replicas(n) => write!(f, "{n} replicas"),
            Sharing::EveryNode => f.write_str("a pod on every node"),
            Sharing::Parallelism(n) => write!(f, "parallelism {n}"),
            Sharing::OverlappingRuns => f.write_str("concurrencyPolicy Allow (runs may overlap)"),
        }
    }
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::WritableLayer => f.write_str(
                "on the container's writable layer: the data is lost whenever the pod restarts",
            ),
            What::ImageVolume(v) => write!(
                f,
                "in the image's VOLUME {v}, which the container runtime gives a fresh directory for every container: the data is lost whenever the container is recreated"
            ),
            What::ImageVolumeOver { volume, mount } => write!(
                f,
                "in the image's VOLUME {volume}: the container runtime mounts a fresh per-container directory there, over the mount at {mount}: the data is lost whenever the container is recreated"
            ),
            What::PerPodSubPath(d) => write!(
                f,
                "on {d} with a subPathExpr naming the pod: every new pod starts with an empty directory"
            ),
            What::Ephemeral(d) => write!(
                f,
                "on {d}: the data is lost whenever the pod is deleted, evicted or rescheduled"
            ),
            What::ReadOnlySource(d) => write!(
                f,
                "on {d}, a read-only source the kubelet rewrites: writes fail or vanish"
            ),
            What::NodeLocal(d) => write!(
                f,
                "on {d}: the data stays on one node and a pod scheduled elsewhere starts empty"
            ),
            What::UnknownLifetime(d) => {
                write!(f, "on {d}, whose lifetime pvc-guard does not know")
            }
            What::FileMount => f.write_str(
                "as a single-file mount: SQLite's -wal and -shm journal files land beside it on the container's writable layer and are lost on restart",
            ),
            What::ReadOnlyMount => {
                f.write_str("on a readOnly mount: the database cannot write its data")
            }
            What::SharedClaim { claim, how } => write!(
                f,
                "on claim {claim:?} shared by {how}: several database processes would use one data directory, or pods hang on Multi-Attach"
            ),
            What::MissingClaim(claim) => write!(
                f,
                "on claim {claim:?}, which pvc-guard's cache of the namespace does not hold: a pod stays Pending until the claim exists"
            ),
            What::Autoscaled {
                claim,
                autoscaler,
                max_replicas,
            } => write!(
                f,
                "on claim {claim:?} that HorizontalPodAutoscaler {autoscaler:?} can scale to {max_replicas} replicas through /scale (which admission never sees): the replicas would share one data directory"
            ),
            What::RollingUpdate(claim) => write!(
                f,
                "on claim {claim:?} with the RollingUpdate strategy: during a rollout the new pod hangs on Multi-Attach, or two database processes share one data directory"
            ),
            What::PgdataRoot => f.write_str(
                "as PGDATA at the root of the claim's mount: a fresh volume holds lost+found there and initdb refuses a non-empty directory",
            ),
        }
    }
}

/// How to fix a site, in the words of a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Move a database file out of a directory the image populates.
    MoveFile {
        dir: String,
    },
    MountExactly {
        target: String,
    },
    ReplaceVolume {
        volume: String,
    },
    MountClaim {
        target: String,
    },
    MountClaimAt {
        target: String,
    },
    UseClaimOrLocal,
    UseClaimOrDeclareDriver,
    MountDirectory,
    RemoveReadOnly,
    ForbidOverlap,
    TemplatePerReplica {
        claim: String,
    },
    OneReplica,
    CreateClaim {
        claim: String,
    },
    LimitAutoscaler,
    Recreate,
    SubPath {
        path: String,
    },
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fix::MoveFile { dir } => write!(
                f,
                "Move the database file into a directory of its own (not {dir}, which the image populates) and mount a PersistentVolumeClaim there"
            ),
            Fix::MountExactly { target } => write!(
                f,
                "Mount a PersistentVolumeClaim at exactly {target} (pvc-guard fix shows how)"
            ),
            Fix::ReplaceVolume { volume } if volume.is_empty() => f.write_str(
                "Name the volume and replace it with a PersistentVolumeClaim",
            ),
            Fix::ReplaceVolume { volume } => write!(
                f,
                "Replace volume {volume:?} with a PersistentVolumeClaim (pvc-guard fix shows how)"
            ),
            Fix::MountClaim { target } => write!(
                f,
                "Mount a PersistentVolumeClaim at {target} (pvc-guard fix shows how)"
            ),
            Fix::MountClaimAt { target } => {
                write!(f, "Mount a PersistentVolumeClaim at {target}")
            }
            Fix::UseClaimOrLocal => f.write_str(
                "Use a PersistentVolumeClaim (a local PersistentVolume if node-local storage is intended)",
            ),
            Fix::UseClaimOrDeclareDriver => f.write_str(
                "Use a PersistentVolumeClaim, or add the CSI driver to csiDrivers in the pvc-guard config",
            ),
            Fix::MountDirectory => {
                f.write_str("Mount the directory that holds the database file instead")
            }
            Fix::RemoveReadOnly => f.write_str("Remove readOnly from that volumeMount"),
            Fix::ForbidOverlap => f.write_str("Set spec.concurrencyPolicy: Forbid"),
            Fix::TemplatePerReplica { claim } => write!(
                f,
                "Move claim {claim:?} into volumeClaimTemplates so each replica gets its own"
            ),
            Fix::OneReplica => f.write_str(
                "Run one replica, or a StatefulSet with volumeClaimTemplates (pvc-guard convert)",
            ),
            Fix::CreateClaim { claim } => write!(
                f,
                "Create the PersistentVolumeClaim {claim:?} (pvc-guard fix prints one), or run pvc-guard with --create-claims"
            ),
            Fix::LimitAutoscaler => f.write_str(
                "Set the autoscaler's maxReplicas to 1, or run the database as a StatefulSet",
            ),
            Fix::Recreate => f.write_str("Set spec.strategy.type: Recreate"),
            Fix::SubPath { path } => write!(
                f,
                "Mount the claim with subPath: pgdata, or set PGDATA to {path}/pgdata"
            ),
        }
    }
}

/// What a finding says, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// A data path of a container: what happens to it and how to fix it.
    Site {
        who: String,
        image: String,
        what: What,
        fix: Fix,
        /// PGDATA comes from envFrom or valueFrom: pvc-guard cannot fix it.
        pgdata_hidden: bool,
        /// Why `pvc-guard fix` (and the mutating webhook) does not fix this
        /// one, when it does not.
        blocked: Option<String>,
        /// Ephemeral storage that the opt-out annotation could accept.
        opt_out_hint: bool,
        /// Why it is only a warning, when it is one by nature.
        note: Option<Note>,
        /// The layout is the official image's named here, inherited
        /// because the variable named here says the image is built on it.
        inherited: Option<(String, &'static str)>,
    },
    /// A data path that cannot be placed, and why.
    Unresolved {
        who: String,
        image: String,
        why: super::detect::Why,
    },
    DatabaseInDeployment {
        who: String,
        image: String,
        family: String,
    },
    /// An opt-out that is not accepted.
    OptOut { who: String, why: OptOutRefusal },
    LimitExceeded {
        who: String,
        what: &'static str,
        count: usize,
        cap: usize,
    },
    InvalidAnnotation {
        who: String,
        key: &'static str,
        value: String,
        expected: String,
    },
    /// Words written by the caller (audit's object-level findings).
    Text(String),
}

/// Why a site finding is only a warning, in the words of its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A cache-like image (redis) not declared durable.
    Cache { entry: String },
    /// Configuration provisioned from a mount: only run-time state is lost.
    Provisioned { entry: String, mount: String },
    /// The image's publisher is unknown; the official `entry`'s layout is
    /// assumed from the image's short name.
    Guess { entry: String, repository: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptOutRefusal {
    NoReason,
    NamespaceNotAllowed(String),
}

impl fmt::Display for OptOutRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptOutRefusal::NoReason => write!(
                f,
                "{} needs a reason (\"<why this data may be lost>\"); the opt-out is ignored",
                crate::record::ALLOW_EPHEMERAL_ANNOTATION
            ),
            OptOutRefusal::NamespaceNotAllowed(ns) => write!(
                f,
                "opt-outs are not allowed in namespace {ns:?} by the pvc-guard config; the opt-out is ignored"
            ),
        }
    }
}

impl fmt::Display for super::detect::Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::detect::Why;
        match self {
            Why::RelativeSqlite { path } => write!(
                f,
                "the SQLite path {path:?} is relative and the container sets no workingDir, so where it lands depends on the image"
            ),
            Why::UnexpandedSqlite { path } => write!(
                f,
                "the SQLite path {path:?} starts with a variable the kubelet expands, so where it lands is unknown; annotate the workload with {}",
                crate::record::DATA_PATHS_ANNOTATION
            ),
            Why::ClientEnv { var, family } => write!(
                f,
                "{var} suggests a {family} server built on the official image, but clients set it too; if this container runs {family}, annotate the workload with {}",
                crate::record::DATA_PATHS_ANNOTATION
            ),
            Why::Digest { image, layout } => write!(
                f,
                "the image {image} is pinned by digest only, so its postgres version cannot be read; the newest layout ({layout}) is assumed"
            ),
            Why::UnknownDataPath {
                family,
                guessed,
                hint,
                moved_by,
            } => {
                if *guessed {
                    write!(f, "its name says it runs {family}, but ")?;
                } else {
                    write!(f, "it runs {family}, but ")?;
                }
                match moved_by {
                    Some(var) => write!(
                        f,
                        "{var} is set, which moves its data where pvc-guard cannot follow"
                    )?,
                    None => f.write_str(
                        "pvc-guard's catalog does not say where this image keeps its data and nothing in the manifest names it",
                    )?,
                }
                if let Some(hint) = hint {
                    write!(f, " ({hint})")?;
                }
                write!(
                    f,
                    "; annotate the workload with {} to have it checked",
                    crate::record::DATA_PATHS_ANNOTATION
                )
            }
        }
    }
}

/// One finding: a rule broken by one container at one path.
#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    pub container: String,
    pub path: String,
    pub detail: Detail,
    /// UPDATE: the old object had it too, so it is allowed.
    pub inherited: bool,
    /// Which placed data path (index into the assessment's sites) it is about.
    pub site: Option<usize>,
}

/// The API server truncates long warnings; keep each well under its limit.
pub const WARNING_LIMIT: usize = 240;

impl Finding {
    /// A finding about a whole object rather than one container's path.
    pub fn about_object(rule: Rule, path: &str, message: String) -> Finding {
        Finding {
            rule,
            severity: Severity::Warn,
            container: String::new(),
            path: path.to_string(),
            detail: Detail::Text(message),
            inherited: false,
            site: None,
        }
    }

    /// Findings are the same violation when rule, container and path match
    /// (so reordering containers is not a new violation).
    pub fn key(&self) -> (Rule, &str, &str) {
        (self.rule, &self.container, &self.path)
    }

    /// The full text: what happens to the data and how to fix it.
    pub fn message(&self) -> String {
        let rule = self.rule;
        let c = &self.container;
        let path = &self.path;
        match &self.detail {
            Detail::Site {
                who,
                image,
                what,
                fix,
                pgdata_hidden,
                blocked,
                opt_out_hint,
                note,
                inherited,
            } => {
                let what = what_text(what, inherited.as_ref());
                let mut fix = fix_text(fix, *pgdata_hidden, blocked.as_deref());
                if matches!(note, Some(Note::Guess { .. })) {
                    // pvc-guard fixes only what it denies, never a guess.
                    fix = fix.replace(" (pvc-guard fix shows how)", "");
                }
                let mut m = match note {
                    Some(Note::Guess { entry, .. }) => format!(
                        "[{rule}] {who} container {c:?} ({image}): if it keeps its data where the official {entry} image does, {path} is {what}. {fix}."
                    ),
                    _ => format!(
                        "[{rule}] {who} container {c:?} ({image}) keeps {path} {what}. {fix}."
                    ),
                };
                if *opt_out_hint {
                    m.push_str(&format!(
                        " Or annotate the workload with {}: \"<reason>\".",
                        crate::record::ALLOW_EPHEMERAL_ANNOTATION
                    ));
                }
                let paths = crate::record::DATA_PATHS_ANNOTATION;
                match note {
                    Some(Note::Cache { entry }) => m.push_str(&format!(
                        " A warning only: {entry} is a cache by default; annotate {paths} if it holds data you need."
                    )),
                    Some(Note::Provisioned { entry, mount }) => m.push_str(&format!(
                        " A warning only: {entry}'s configuration is provisioned from the mount at {mount}, so only state made while it runs is lost; annotate {paths} if that state matters."
                    )),
                    Some(Note::Guess { entry, repository }) => m.push_str(&format!(
                        " A warning only: pvc-guard does not know who publishes {repository}, so it assumed the layout of the official {entry} image from the name; annotate {paths} with where this image keeps its data."
                    )),
                    None => {}
                }
                m
            }
            Detail::Unresolved { who, image, why } => {
                format!("[{rule}] {who} container {c:?} ({image}): {why}.")
            }
            Detail::DatabaseInDeployment { who, image, family } => format!(
                "[{rule}] {who} container {c:?} ({image}) runs {family} in a Deployment. A StatefulSet gives each replica its own claim and a stable identity; `pvc-guard convert -f <file>` prints one."
            ),
            Detail::OptOut { who, why } => format!("[{rule}] {who}: {why}"),
            Detail::LimitExceeded {
                who,
                what,
                count,
                cap,
            } => format!(
                "[{rule}] {who} has {count} {what}; pvc-guard judges objects of at most {cap}, so it denies this one rather than let it pass unjudged."
            ),
            Detail::InvalidAnnotation {
                who,
                key,
                value,
                expected,
            } => format!(
                "[{rule}] {who}: annotation {key}: {:?} is refused: {expected}.",
                truncate(value, 64)
            ),
            Detail::Text(message) => message.clone(),
        }
    }

    /// The one-line warning kubectl prints.
    pub fn short(&self) -> String {
        let rule = self.rule;
        let c = &self.container;
        let path = &self.path;
        let mut s = match &self.detail {
            Detail::Site {
                what,
                fix,
                pgdata_hidden,
                blocked,
                note,
                inherited,
                ..
            } => {
                let what = what_text(what, inherited.as_ref());
                let fix = fix_text(fix, *pgdata_hidden, blocked.as_deref());
                match note {
                    Some(Note::Guess { entry, .. }) => format!(
                        "[{rule}] container {c:?}, if laid out like the official {entry} image, keeps {path} {}; {} (or annotate {})",
                        first_clause(&what),
                        lower_first(&fix),
                        crate::record::DATA_PATHS_ANNOTATION
                    ),
                    _ => format!(
                        "[{rule}] container {c:?} keeps {path} {}; {}",
                        first_clause(&what),
                        lower_first(&fix)
                    ),
                }
            }
            Detail::Unresolved { why, .. } => format!("[{rule}] container {c:?}: {why}"),
            Detail::DatabaseInDeployment { family, .. } => format!(
                "[{rule}] container {c:?} runs {family} in a Deployment; a StatefulSet fits better (pvc-guard convert)"
            ),
            Detail::OptOut { why, .. } => format!("[{rule}] {why}"),
            Detail::LimitExceeded {
                what, count, cap, ..
            } => format!("[{rule}] {count} {what}, more than the {cap} pvc-guard judges"),
            Detail::InvalidAnnotation { key, expected, .. } => {
                format!("[{rule}] {key}: {expected}")
            }
            Detail::Text(message) => truncate(message, WARNING_LIMIT),
        };
        if self.inherited {
            s.push_str(" (it was there before this update, so it is allowed)");
        }
        s
    }

    pub fn warning(&self) -> String {
        truncate(&self.short(), WARNING_LIMIT)
    }
}

/// What happens at a site. A VOLUME of a layout inherited from an official
/// image is named as that image's, never as this image's own.
fn what_text(what: &What, inherited: Option<&(String, &'static str)>) -> String {
    match (what, inherited) {
        (What::ImageVolume(v), Some((entry, var))) => format!(
            "in the VOLUME {v} of the official {entry} image, which {var} says this image is built on: the container runtime gives it a fresh directory for every container, so the data is lost whenever the container is recreated"
        ),
        (What::ImageVolumeOver { volume, mount }, Some((entry, var))) => format!(
            "in the VOLUME {volume} of the official {entry} image, which {var} says this image is built on: the container runtime mounts a fresh per-container directory there, over the mount at {mount}, so the data is lost whenever the container is recreated"
        ),
        _ => what.to_string(),
    }
}

/// The fix, with what stops pvc-guard from making it itself.
fn fix_text(fix: &Fix, pgdata_hidden: bool, blocked: Option<&str>) -> String {
    let mut text = fix.to_string();
    if pgdata_hidden {
        text.push_str("; PGDATA comes from envFrom or valueFrom, so pvc-guard cannot fix it: set PGDATA in env");
    } else if let Some(why) = blocked {
        let stem = text
            .strip_suffix(" (pvc-guard fix shows how)")
            .unwrap_or(&text);
        text = format!("{stem}; pvc-guard does not fix it: {why}");
    }
    text
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

pub fn truncate(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let mut end = limit - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Finding", 5)?;
        st.serialize_field("rule", self.rule.id())?;
        st.serialize_field("severity", &self.severity)?;
        st.serialize_field("container", &self.container)?;
        st.serialize_field("path", &self.path)?;
        st.serialize_field("message", &self.message())?;
        st.end()
    }
}
