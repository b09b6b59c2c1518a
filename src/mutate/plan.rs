//! Planning a fix: from an assessment to the typed changes that fix what
//! can be fixed safely, or the typed reason ([`Unfixable`]) a finding is
//! left to the validating webhook.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use super::claims::ClaimNames;
use crate::config::Permissions;
use crate::k8s::{self, PathIndex, parent_dir, path_contains, shorten};
use crate::model::{Annotation, ContainerRef, Kind, Volume};
use crate::policy::catalog::Catalog;
use crate::policy::detect::{DbContainer, start_user};
use crate::policy::rules::image_populated_dir;
use crate::policy::storage::{Backing, StorageClass};
use crate::policy::{Assessment, ClusterFacts, Policy, Rule, Severity, Site};
use crate::record::{Change, ClaimSpec, InitDir, PERMISSIONS_CONTAINER};

/// Why a finding is not fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfixable {
    DuplicateVolumeName(String),
    DaemonSet,
    CronJob,
    SharedReplicas(i64),
    Parallelism(i64),
    GenerateName,
    Unnamed,
    NamelessContainer(String),
    InvalidContainerName(String),
    ReservedContainerName,
    DuplicateMountPath {
        container: String,
        path: String,
    },
    HiddenPgdata,
    PerPodSubPath,
    OtherWriters {
        volume: String,
        /// The first few, by name; `more` counts the rest.
        writers: Vec<String>,
        more: usize,
    },
    SizeAboveLimit {
        size: String,
        max: String,
    },
    ImagePopulatedDir(String),
    OtherLayout {
        mount: String,
        target: String,
    },
    LandsElsewhere {
        mount: String,
    },
    CannotTell,
    NoMetadata,
}

impl Unfixable {
    /// A stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Unfixable::DuplicateVolumeName(_) => "duplicate_volume_name",
            Unfixable::DaemonSet => "daemonset",
            Unfixable::CronJob => "cronjob",
            Unfixable::SharedReplicas(_) => "replicas",
            Unfixable::Parallelism(_) => "parallelism",
            Unfixable::GenerateName => "generate_name",
            Unfixable::Unnamed => "unnamed",
            Unfixable::NamelessContainer(_) => "nameless_container",
            Unfixable::InvalidContainerName(_) => "invalid_container_name",
            Unfixable::ReservedContainerName => "reserved_container_name",
            Unfixable::DuplicateMountPath { .. } => "duplicate_mount_path",
            Unfixable::HiddenPgdata => "hidden_pgdata",
            Unfixable::PerPodSubPath => "per_pod_sub_path",
            Unfixable::OtherWriters { .. } => "other_writers",
            Unfixable::SizeAboveLimit { .. } => "size_above_limit",
            Unfixable::ImagePopulatedDir(_) => "image_populated_dir",
            Unfixable::OtherLayout { .. } => "other_layout",
            Unfixable::LandsElsewhere { .. } => "lands_elsewhere",
            Unfixable::CannotTell => "unknown_storage",
            Unfixable::NoMetadata => "no_metadata",
        }
    }
}

impl fmt::Display for Unfixable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfixable::DuplicateVolumeName(name) => write!(
                f,
                "two volumes are named {name:?}, so a fix could not tell them apart (the API server rejects such a pod anyway)"
            ),
            Unfixable::DaemonSet => {
                f.write_str("a DaemonSet runs a pod on every node, and they cannot share one claim")
            }
            Unfixable::CronJob => f.write_str("a CronJob's runs may overlap on one claim"),
            Unfixable::SharedReplicas(n) => write!(f, "{n} replicas cannot share one claim"),
            Unfixable::Parallelism(n) => write!(f, "parallelism {n} cannot share one claim"),
            Unfixable::Unnamed => f.write_str(
                "it has no name, so no claim name derived from it would be its alone",
            ),
            Unfixable::GenerateName => f.write_str(
                "it is named only by generateName, so no claim name derived from it would be its alone",
            ),
            Unfixable::NamelessContainer(c) => write!(
                f,
                "container {c:?} has no name of its own, so a fix could not find it again"
            ),
            Unfixable::InvalidContainerName(c) => write!(
                f,
                "container name {c:?} is not a DNS-1123 label, so no volume or claim name can be made from it (the API server rejects such a pod anyway)"
            ),
            Unfixable::ReservedContainerName => write!(
                f,
                "the container is named {PERMISSIONS_CONTAINER:?}, the name of pvc-guard's own init container, so a fix could not tell the two apart; rename the container"
            ),
            Unfixable::DuplicateMountPath { container, path } => write!(
                f,
                "container {container:?} mounts two volumes at {path}, so a fix could not tell which one it changes (the API server rejects such a pod anyway)"
            ),
            Unfixable::HiddenPgdata => f.write_str(
                "PGDATA may come from envFrom or valueFrom, so where the data lands is unknown",
            ),
            Unfixable::PerPodSubPath => {
                f.write_str("its subPathExpr names the pod; pvc-guard leaves that layout to you")
            }
            Unfixable::OtherWriters { volume, writers, more } => write!(
                f,
                "volume {volume:?} is also written by {}{}: a copy or restore on every start would overwrite the data",
                writers.join(", "),
                if *more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
            Unfixable::SizeAboveLimit { size, max } => write!(
                f,
                "the volume asks for {size}, more than the {max} the pvc-guard config allows a claim (claims.maxSize)"
            ),
            Unfixable::ImagePopulatedDir(dir) => write!(
                f,
                "the database file sits in {dir}, a directory the image populates; move it into a directory of its own"
            ),
            Unfixable::OtherLayout { mount, target } => write!(
                f,
                "the mount at {mount} lands elsewhere than where the data goes and may hold data in another layout; move it to {target} yourself"
            ),
            Unfixable::LandsElsewhere { mount } => write!(
                f,
                "it sits under the mount at {mount} but lands elsewhere; the claim there may hold data in another layout, so pvc-guard does not move it"
            ),
            Unfixable::CannotTell => f.write_str("pvc-guard cannot tell how to fix this storage"),
            Unfixable::NoMetadata => f.write_str(
                "the object has no metadata to record a fix in, and a fix without its record could not be put back on UPDATE",
            ),
        }
    }
}

/// A finding the plan leaves to the validating webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfixed {
    /// The container and path, unless the whole object cannot be fixed.
    pub at: Option<(String, String)>,
    pub why: Unfixable,
}

impl fmt::Display for Unfixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some((c, p)) => write!(
                f,
                "[{}] container {c:?} {p}: {}",
                Rule::EphemeralDataPath,
                self.why
            ),
            None => write!(f, "{}", self.why),
        }
    }
}

/// What one planning pass decided.
#[derive(Debug, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub rules: Vec<Rule>,
    pub applied: Vec<String>,
    pub unfixed: Vec<Unfixed>,
    pub warnings: Vec<String>,
}

/// Who mounts what, counted once per pass so every site's checks are
/// lookups rather than scans.
struct Index<'w> {
    /// Containers (of both lists) per name.
    named: HashMap<&'w str, usize>,
    /// Writable mounts per volume: (container, its name).
    writers: HashMap<&'w str, Vec<ContainerRef<'w>>>,
    /// Mounts per volume, read-only or not.
    mounts: HashMap<&'w str, usize>,
    volumes: HashMap<&'w str, &'w Volume>,
    /// A path some container mounts twice, per container name.
    doubled_mount_paths: HashMap<&'w str, &'w str>,
    claim_templates: HashSet<&'w str>,
}

impl<'w> Index<'w> {
    fn new(a: &Assessment<'w, '_>) -> Index<'w> {
        let mut index = Index {
            named: HashMap::new(),
            writers: HashMap::new(),
            mounts: HashMap::new(),
            volumes: a.workload.volumes_by_name(),
            doubled_mount_paths: HashMap::new(),
            claim_templates: a.workload.claim_template_names().collect(),
        };
        let mut paths = HashSet::new();
        for c in a.workload.containers() {
            *index.named.entry(c.name()).or_default() += 1;
            paths.clear();
            for m in c.container.mounts() {
                if let Some(path) = m.mount_path.as_deref()
                    && !paths.insert(path)
                {
                    index.doubled_mount_paths.insert(c.name(), path);
                }
                let Some(volume) = m.name.as_deref() else {
                    continue;
                };
                *index.mounts.entry(volume).or_default() += 1;
                if m.read_only != Some(true) {
                    let w = index.writers.entry(volume).or_default();
                    if !w.last().is_some_and(|l| l.same(&c)) {
                        w.push(c);
                    }
                }
            }
        }
        index
    }
}

struct Planner<'p, 'x, 'w, 'c> {
    policy: &'p Policy,
    facts: &'x ClusterFacts,
    a: &'x Assessment<'w, 'c>,
    index: Index<'w>,
    names: &'x mut ClaimNames,
    plan: Plan,
    init_dirs: Vec<InitDir>,
    /// The claim volume this plan adds for each container, by container.
    added_volumes: HashMap<String, String>,
    /// The names of those volumes.
    added_volume_names: HashSet<String>,
    /// The mounts this plan adds, by container and by volume: each site
    /// asks whether one already holds its path, and how many share its
    /// volume.
    added_mounts: HashMap<String, PathIndex<'static, ()>>,
    mounts_per_volume: HashMap<String, usize>,
    /// Mounts (container, index) this plan replaced with a claim, or
    /// found it cannot, and the volumes it replaced.
    fixed_mounts: HashMap<(String, usize), Result<(), Unfixable>>,
    replaced_volumes: HashSet<String>,
    /// The pod's fsGroup is set by this plan (once, for the first owner).
    fs_group_planned: bool,
    /// Each database container's own mounts, sorted for `add_claim_mount`.
    layouts: HashMap<&'w str, Layout<'w>>,
}

/// A database container's mounts, for the question each of its data paths
/// on the writable layer asks before a claim is mounted at a directory:
/// is any mount at or under that directory, or where the database keeps
/// data in another layout? The first such mount, in the container's order.
struct Layout<'w> {
    /// mountPath and index, sorted by mountPath: the mounts under a
    /// directory are one run of them.
    sorted: Vec<(&'w str, usize)>,
    /// The first mount at a path the catalog gives the database's family
    /// for another layout.
    other_layout: Option<usize>,
    /// Answers so far by directory: each mount is counted once for each
    /// directory above it that is asked about, which is linear in the
    /// mounts' length however many data paths ask.
    answers: HashMap<String, Option<usize>>,
}

impl<'w> Layout<'w> {
    fn new(container: ContainerRef<'w>, family: &str, catalog: &Catalog) -> Layout<'w> {
        let mounts = container
            .container
            .mounts()
            .enumerate()
            .filter_map(|(i, m)| Some((m.mount_path.as_deref()?, i)));
        let mut sorted: Vec<_> = mounts.clone().collect();
        sorted.sort_unstable();
        Layout {
            sorted,
            other_layout: mounts
                .filter(|(mp, _)| {
                    catalog
                        .by_distinctive_path(mp)
                        .is_some_and(|e| e.family == family)
                })
                .map(|(_, i)| i)
                .next(),
            answers: HashMap::new(),
        }
    }

    /// The first mount that is at or under `dir` (`path_contains`), or in
    /// another layout.
    fn first_in_the_way(&mut self, dir: &str) -> Option<usize> {
        let dir = dir.trim_end_matches('/');
        if let Some(answer) = self.answers.get(dir) {
            return *answer;
        }
        let run = |from: &str, to: &str| {
            let lo = self.sorted.partition_point(|(mp, _)| *mp < from);
            let hi = self.sorted.partition_point(|(mp, _)| *mp < to);
            self.sorted[lo..hi.max(lo)].iter().map(|(_, i)| *i).min()
        };
        // `dir` itself, then everything below `dir/`: `/` sorts just
        // before `0`. The root contains only what starts with `/`.
        let exact = (!dir.is_empty())
            .then(|| run(dir, &format!("{dir}\0")))
            .flatten();
        let below = run(&format!("{dir}/"), &format!("{dir}0"));
        let answer = [exact, below, self.other_layout]
            .into_iter()
            .flatten()
            .min();
        self.answers.insert(dir.to_string(), answer);
        answer
    }
}

impl<'p, 'x, 'w, 'c> Planner<'p, 'x, 'w, 'c> {
    fn new(
        policy: &'p Policy,
        facts: &'x ClusterFacts,
        a: &'x Assessment<'w, 'c>,
        names: &'x mut ClaimNames,
    ) -> Self {
        Planner {
            policy,
            facts,
            a,
            index: Index::new(a),
            names,
            plan: Plan::default(),
            init_dirs: Vec::new(),
            added_volumes: HashMap::new(),
            added_volume_names: HashSet::new(),
            added_mounts: HashMap::new(),
            mounts_per_volume: HashMap::new(),
            fixed_mounts: HashMap::new(),
            replaced_volumes: HashSet::new(),
            fs_group_planned: false,
            layouts: HashMap::new(),
        }
    }

    /// Every mount change goes through here, so the lookups above see it.
    fn push_mount(
        &mut self,
        container: &str,
        volume: &str,
        mount_path: &str,
        sub_path: Option<String>,
    ) {
        self.added_mounts
            .entry(container.to_string())
            .or_insert_with(|| PathIndex::new([]))
            .insert(Cow::Owned(mount_path.to_string()), ());
        *self
            .mounts_per_volume
            .entry(volume.to_string())
            .or_default() += 1;
        self.plan.changes.push(Change::Mount {
            container: container.to_string(),
            volume: volume.to_string(),
            mount_path: mount_path.to_string(),
            sub_path,
        });
    }
}

/// One pass: plan changes from an assessment.
pub fn plan(
    policy: &Policy,
    facts: &ClusterFacts,
    a: &Assessment<'_, '_>,
    names: &mut ClaimNames,
) -> Plan {
    let mut planner = Planner::new(policy, facts, a, names);
    let ephemeral: Vec<(usize, &str, &str)> = a
        .findings
        .iter()
        .filter(|f| f.rule == Rule::EphemeralDataPath && f.severity == Severity::Deny)
        .filter_map(|f| Some((f.site?, f.container.as_str(), f.path.as_str())))
        .collect();
    if !ephemeral.is_empty() {
        let whole = fixable_object(a);
        for (site, c, p) in ephemeral {
            let result = match &whole {
                Err(why) => Err(why.clone()),
                Ok(()) => planner.plan_site(site),
            };
            match result {
                Ok(()) => {
                    if !planner.plan.rules.contains(&Rule::EphemeralDataPath) {
                        planner.plan.rules.push(Rule::EphemeralDataPath);
                    }
                }
                Err(why) => planner.plan.unfixed.push(Unfixed {
                    at: Some((c.to_string(), p.to_string())),
                    why,
                }),
            }
        }
    }
    planner.finish()
}

/// A claim mount an UPDATE put back: what its permissions are recomputed for.
#[derive(Debug, Clone)]
pub struct Restored {
    pub container: String,
    pub volume: String,
    pub sub_path: Option<String>,
    pub mount_path: String,
}

/// What a put-back claim calls for, recomputed from the config and the
/// object as CREATE would (never copied from the record): its owner's init
/// container or fsGroup, and `Recreate`.
pub fn follow_ups(
    policy: &Policy,
    facts: &ClusterFacts,
    a: &Assessment<'_, '_>,
    restored: &[Restored],
) -> Plan {
    let mut names = ClaimNames::new(a.workload);
    let mut planner = Planner::new(policy, facts, a, &mut names);
    for r in restored {
        if let Some(db) = a.dbs.iter().find(|db| db.name() == r.container) {
            planner.permissions(db, &r.volume, r.sub_path.as_deref(), &r.mount_path);
        }
    }
    planner.finish()
}

impl Planner<'_, '_, '_, '_> {
    /// What every plan ends with: `Recreate` for a single-replica
    /// Deployment on a claim, and the permissions init container.
    fn finish(mut self) -> Plan {
        let a = self.a;
        let rolling = a
            .findings
            .iter()
            .any(|f| f.rule == Rule::RollingUpdateClaim);
        if rolling && a.workload.kind == Kind::Deployment && a.workload.replicas() <= 1 {
            self.plan.changes.push(Change::Recreate);
            self.plan.rules.push(Rule::RollingUpdateClaim);
            self.did(
                Rule::RollingUpdateClaim,
                "set strategy Recreate so two database processes never share the data directory during a rollout".into(),
            );
        }
        // A container of that name the object already has is the user's or
        // ours: either way it is left as it is, never rewritten (names are
        // unique across both lists, so a second one would get the pod
        // refused).
        if !self.init_dirs.is_empty()
            && a.workload
                .pod
                .init_containers
                .iter()
                .chain(a.workload.pod.containers.iter())
                .any(|c| c.name.as_deref() == Some(PERMISSIONS_CONTAINER))
        {
            let dirs = std::mem::take(&mut self.init_dirs);
            self.plan.warnings.push(format!(
                "[{}] the pod already has a container named {PERMISSIONS_CONTAINER}, so pvc-guard left it as it is and did not set the owner of {}",
                Rule::EphemeralDataPath,
                dirs.iter()
                    .map(|d| d.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.init_dirs.is_empty() {
            let dirs = std::mem::take(&mut self.init_dirs);
            self.did(
                Rule::EphemeralDataPath,
                format!(
                    "added init container {PERMISSIONS_CONTAINER} to set the owner of {}",
                    dirs.iter()
                        .map(|d| d.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            self.plan.changes.push(Change::Permissions {
                image: self.policy.config.permissions_image.clone(),
                dirs,
            });
        }
        self.plan
    }
}

/// A path or value as a refusal quotes it. Every data path under a mount
/// carries the mount's refusal into its finding, so 4,096 copies of a
/// 4,096-byte sizeLimit or mountPath were 80 MB; a message needs less.
fn quoted(s: &str) -> String {
    crate::policy::finding::truncate(s, 128)
}

/// Can the mutation give this workload's pods a claim of their own?
fn fixable_object(a: &Assessment<'_, '_>) -> Result<(), Unfixable> {
    let w = a.workload;
    // Changes find volumes by name, so two volumes of one name (which the
    // API server rejects anyway) would leave a fix unable to find its own.
    let mut seen = std::collections::HashSet::new();
    for name in w.pod.volumes.iter().filter_map(|v| v.name.as_deref()) {
        if !seen.insert(name) {
            return Err(Unfixable::DuplicateVolumeName(name.to_string()));
        }
    }
    match w.kind {
        Kind::DaemonSet => Err(Unfixable::DaemonSet),
        Kind::CronJob => Err(Unfixable::CronJob),
        Kind::Deployment | Kind::ReplicaSet | Kind::ReplicationController if w.replicas() > 1 => {
            Err(Unfixable::SharedReplicas(w.replicas()))
        }
        Kind::Job if w.replicas() > 1 => Err(Unfixable::Parallelism(w.replicas())),
        _ if w.generate_name_only => Err(Unfixable::GenerateName),
        // Claim names are made from it: an empty one gave the claim "".
        _ if w.name.is_empty() => Err(Unfixable::Unnamed),
        _ => Ok(()),
    }
}

impl<'w> Planner<'_, '_, 'w, '_> {
    fn did(&mut self, rule: Rule, what: String) {
        self.plan.applied.push(format!("[{rule}] {what}"));
    }

    fn annotation(&self, which: Annotation) -> Option<&str> {
        self.a
            .workload
            .annotation(which)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The claim's size, class and access mode: the claim annotations when
    /// the config allows their values (the validating webhook denies the
    /// rest), else what the replaced volume asked for, else the config.
    fn claim_spec(
        &self,
        volume_size: Option<&str>,
        class: Option<&str>,
        mode: Option<&str>,
    ) -> Result<ClaimSpec, Unfixable> {
        let cfg = &self.policy.config.claims;
        let max = k8s::parse_quantity(&cfg.max_size);
        let size_ok = |s: &&str| {
            k8s::parse_quantity(s).is_some_and(|q| q > 0.0 && max.is_none_or(|m| q <= m))
        };
        let class_ok = |c: &&str| {
            k8s::is_dns_subdomain(c)
                && (cfg.allowed_storage_classes.is_empty()
                    || cfg.allowed_storage_classes.iter().any(|a| a == c))
        };
        let mode_ok = |m: &&str| cfg.allowed_access_modes.iter().any(|a| a == m);
        let size = match self.annotation(Annotation::ClaimSize).filter(size_ok) {
            Some(s) => s.to_string(),
            None => match volume_size.filter(|s| k8s::parse_quantity(s).is_some()) {
                Some(s) if !size_ok(&s) => {
                    return Err(Unfixable::SizeAboveLimit {
                        size: quoted(s),
                        max: cfg.max_size.clone(),
                    });
                }
                Some(s) => s.to_string(),
                None => cfg.size.clone(),
            },
        };
        Ok(ClaimSpec {
            size,
            storage_class: self
                .annotation(Annotation::ClaimStorageClass)
                .filter(class_ok)
                .or(class.filter(class_ok))
                .map(str::to_string)
                .or_else(|| cfg.storage_class.clone()),
            access_mode: self
                .annotation(Annotation::ClaimAccessMode)
                .filter(mode_ok)
                .or(mode.filter(mode_ok))
                .map_or_else(|| cfg.access_mode.clone(), str::to_string),
        })
    }

    /// Backs `volume` with storage that outlives the pod: a claim template
    /// per replica in a StatefulSet, one claim otherwise. `replacing`: the
    /// volume exists (emptyDir or ephemeral) rather than being added.
    /// The volume the fix adds for container `c`, the same for all its
    /// sites: `pvc-guard-<c>`, or with `-2`, `-3`, ... when the pod already
    /// has a volume or claim template of that name, or a mount of it (one
    /// the pod does not define yet). That name is a person's; making it a
    /// claim would change the storage of whatever else mounts it.
    fn added_volume(&mut self, c: &str) -> String {
        if let Some(v) = self.added_volumes.get(c) {
            return v.clone();
        }
        let taken = |name: &str| {
            self.index.volumes.contains_key(name)
                || self.index.mounts.contains_key(name)
                || self.index.claim_templates.contains(name)
                || self.added_volume_names.contains(name)
        };
        let base = format!("pvc-guard-{c}");
        let volume = std::iter::once(shorten(&base, 63))
            .chain((2..).map(|n| shorten(&format!("{base}-{n}"), 63)))
            .find(|name| !taken(name))
            .expect("some suffix is free");
        self.added_volumes.insert(c.to_string(), volume.clone());
        self.added_volume_names.insert(volume.clone());
        volume
    }

    fn back_with_claim(&mut self, volume: &str, container: &str, spec: ClaimSpec, replacing: bool) {
        let size = spec.size.clone();
        let w = self.a.workload;
        if w.kind == Kind::StatefulSet {
            let what = if replacing {
                format!(
                    "replaced volume {volume:?} with a volumeClaimTemplate of {size} per replica"
                )
            } else {
                format!("added a volumeClaimTemplate {volume:?} of {size} per replica")
            };
            self.did(Rule::EphemeralDataPath, what);
            self.plan.changes.push(Change::ClaimTemplate {
                name: volume.to_string(),
                spec,
            });
        } else {
            let claim = self
                .names
                .allocate(&self.policy.config, w, self.facts, container);
            let what = if replacing {
                format!("volume {volume:?} now uses claim {claim:?} ({size})")
            } else {
                format!("added volume {volume:?} on claim {claim:?} ({size})")
            };
            self.did(Rule::EphemeralDataPath, what);
            self.plan.changes.push(Change::ClaimVolume {
                volume: volume.to_string(),
                claim,
                spec,
            });
        }
    }

    /// Makes the claim writable for the database's user (`permissions`).
    fn permissions(
        &mut self,
        db: &DbContainer<'_, '_>,
        volume: &str,
        sub_path: Option<&str>,
        path: &str,
    ) {
        let mode = self.policy.config.permissions;
        if mode == Permissions::None {
            return;
        }
        let w = self.a.workload;
        let c = db.name();
        let Some((uid, gid)) = start_user(w, db) else {
            self.plan.warnings.push(format!(
                "[{}] container {c:?}: pvc-guard does not know which user {} runs as, so it did not set the owner of {path}; annotate the workload with pvc-guard.io/data-owner: \"<uid>:<gid>\"",
                Rule::EphemeralDataPath,
                db.image
            ));
            return;
        };
        if uid == 0 && mode != Permissions::FsGroup {
            // Root can write any directory; official images chown it themselves.
            return;
        }
        let sc = &w.pod.security_context;
        let pod_non_root = sc.run_as_non_root == Some(true);
        let pod_fs_group = sc.fs_group.0 != crate::model::read::Shape::Absent;
        let use_fs_group = match mode {
            Permissions::FsGroup => true,
            Permissions::InitContainer => false,
            _ => pod_non_root || self.facts.restricted(),
        };
        if use_fs_group {
            if !pod_fs_group && !self.fs_group_planned {
                self.fs_group_planned = true;
                self.plan.changes.push(Change::FsGroup { gid });
                self.did(
                    Rule::EphemeralDataPath,
                    format!("set the pod's fsGroup to {gid} (OnRootMismatch) so user {uid} can write {path}"),
                );
            }
            return;
        }
        if pod_fs_group && !db.is_postgres() && mode == Permissions::Auto {
            return;
        }
        self.init_dirs.push(InitDir {
            volume: volume.to_string(),
            sub_path: sub_path.map(str::to_string),
            path: path.to_string(),
            owner: format!("{uid}:{gid}"),
            mode: db.is_postgres().then(|| "0700".to_string()),
        });
    }

    fn plan_site(&mut self, si: usize) -> Result<(), Unfixable> {
        let a = self.a;
        let site = &a.sites[si];
        let db = &a.dbs[site.db];
        let c = db.name();
        let p = &site.placement;
        // Every change finds its container by name; one without a name of
        // its own would be fixed again on every call.
        if c.is_empty() || self.index.named.get(c).copied().unwrap_or(0) > 1 {
            return Err(Unfixable::NamelessContainer(c.to_string()));
        }
        // The volume and claim names are made from it: the record of a fix
        // whose names the API server would refuse is not trusted back.
        if !k8s::is_dns_label(c) {
            return Err(Unfixable::InvalidContainerName(c.to_string()));
        }
        // The name is pvc-guard's: an UPDATE recomputes that init container
        // rather than restoring its mounts, so a database of that name would
        // lose its claim there, and the fix's own would be its second.
        if c == PERMISSIONS_CONTAINER {
            return Err(Unfixable::ReservedContainerName);
        }
        // A mount change finds its mount by path: with two at one path it
        // could rewrite the one the person meant for something else.
        if let Some(path) = self.index.doubled_mount_paths.get(c) {
            return Err(Unfixable::DuplicateMountPath {
                container: c.to_string(),
                path: quoted(path),
            });
        }
        if db.pgdata_hidden {
            return Err(Unfixable::HiddenPgdata);
        }
        if p.per_pod_sub_path {
            return Err(Unfixable::PerPodSubPath);
        }
        match (&p.backing, &p.mount) {
            (Backing::EmptyDir | Backing::GenericEphemeral, Some(m))
                if p.class == StorageClass::Ephemeral =>
            {
                self.replace_ephemeral_volume(db, &p.backing, m)
            }
            (Backing::None, None) => self.add_claim_mount(site, db),
            (_, Some(m)) => Err(Unfixable::LandsElsewhere {
                mount: quoted(m.mount_path),
            }),
            _ => Err(Unfixable::CannotTell),
        }
    }

    /// An emptyDir or generic ephemeral volume only this database writes
    /// becomes a claim (a claim template in a StatefulSet) of the same name.
    fn replace_ephemeral_volume(
        &mut self,
        db: &DbContainer<'_, '_>,
        backing: &Backing<'_>,
        m: &crate::policy::storage::Mount<'_>,
    ) -> Result<(), Unfixable> {
        let c = db.name();
        // Every data path under the mount asks for its fix; the first
        // plans it, or finds why it cannot be, and the rest get the same
        // answer. A second claim for the volume would leave the first one
        // unused (and created), and the owner would be set twice.
        let key = (c.to_string(), m.index);
        if let Some(answer) = self.fixed_mounts.get(&key) {
            return answer.clone();
        }
        let answer = self.replace_mount(db, backing, m);
        self.fixed_mounts.insert(key, answer.clone());
        answer
    }

    fn replace_mount(
        &mut self,
        db: &DbContainer<'_, '_>,
        backing: &Backing<'_>,
        m: &crate::policy::storage::Mount<'_>,
    ) -> Result<(), Unfixable> {
        let c = db.name();
        let volume = m.volume_name;
        let others = || {
            self.index
                .writers
                .get(volume)
                .into_iter()
                .flatten()
                .filter(|w| !w.same(&db.container))
        };
        let count = others().count();
        if count > 0 {
            // A few names say who; 240 of 253 bytes each, in every
            // finding, said it at length.
            const NAMED: usize = 3;
            return Err(Unfixable::OtherWriters {
                volume: volume.to_string(),
                writers: others().take(NAMED).map(|w| w.name().to_string()).collect(),
                more: count.saturating_sub(NAMED),
            });
        }
        // The container's other mount of the volume (another subPath)
        // needs its owner set, not another claim.
        if !self.replaced_volumes.contains(volume) {
            let vol = self.index.volumes.get(volume).copied();
            let spec = match backing {
                Backing::GenericEphemeral => {
                    let t = vol.map(|v| &v.ephemeral.volume_claim_template.spec);
                    self.claim_spec(
                        t.and_then(|t| t.resources.requests.storage.as_deref()),
                        t.and_then(|t| t.storage_class_name.as_deref()),
                        t.and_then(|t| t.access_modes.items.first())
                            .and_then(|m| m.as_deref()),
                    )?
                }
                _ => self.claim_spec(
                    vol.and_then(|v| v.empty_dir.size_limit.as_deref()),
                    None,
                    None,
                )?,
            };
            self.back_with_claim(volume, c, spec, true);
            self.replaced_volumes.insert(volume.to_string());
        }
        // Postgres never initialises a file-system root (lost+found).
        let mut sub_path = m.sub_path.map(str::to_string);
        let only_mount = self.index.mounts.get(volume).copied() == Some(1);
        if db.is_postgres()
            && sub_path.is_none()
            && db.pgdata.as_deref() == Some(m.mount_path)
            && only_mount
        {
            sub_path = Some("pgdata".into());
            self.push_mount(c, volume, m.mount_path, sub_path.clone());
        }
        self.permissions(db, volume, sub_path.as_deref(), m.mount_path);
        Ok(())
    }

    /// A path with no mount gets a claim of its own, mounted exactly where
    /// no image VOLUME shadows it.
    fn add_claim_mount(
        &mut self,
        site: &Site<'_>,
        db: &DbContainer<'w, '_>,
    ) -> Result<(), Unfixable> {
        let c = db.name();
        let p = &site.placement;
        let target = if site.path.file {
            let dir = p
                .image_volume
                .clone()
                .unwrap_or_else(|| parent_dir(&site.path.path));
            if image_populated_dir(&dir, db.container.container.working_dir()) {
                return Err(Unfixable::ImagePopulatedDir(quoted(&dir)));
            }
            dir
        } else if let Some(v) = &p.image_volume {
            v.clone()
        } else {
            db.facts
                .as_ref()
                .and_then(|f| f.mount_path.clone())
                .filter(|mp| path_contains(mp, &site.path.path))
                .unwrap_or_else(|| site.path.path.clone())
        };
        // A claim already mounted where this database kept data in
        // another layout (postgres 18 against /var/lib/postgresql/data)
        // may hold that data: the user moves it, not pvc-guard.
        let catalog = &self.policy.catalog;
        let layout = self
            .layouts
            .entry(db.container.container.name())
            .or_insert_with(|| Layout::new(db.container, db.family().unwrap_or(""), catalog));
        if let Some(other) = layout.first_in_the_way(&target) {
            let other = db.container.container.volume_mounts.items[other]
                .mount_path
                .as_deref()
                .unwrap_or_default();
            return Err(Unfixable::OtherLayout {
                mount: quoted(other),
                target: quoted(&target),
            });
        }
        let volume = self.added_volume(c);
        let already = self
            .added_mounts
            .get(c)
            .is_some_and(|mounts| mounts.longest_containing(&target).is_some());
        if already {
            return Ok(());
        }
        let same_volume_mounts = self.mounts_per_volume.get(&volume).copied().unwrap_or(0);
        let sub_path = if db.is_postgres() {
            Some("pgdata".to_string())
        } else if same_volume_mounts > 0 {
            Some(shorten(target.trim_start_matches('/'), 63))
        } else {
            None
        };
        if same_volume_mounts == 0 {
            let spec = self.claim_spec(None, None, None)?;
            self.back_with_claim(&volume, c, spec, false);
        }
        self.did(
            Rule::EphemeralDataPath,
            format!("mounted it in container {c:?} at {target}"),
        );
        self.push_mount(c, &volume, &target, sub_path.clone());
        self.permissions(db, &volume, sub_path.as_deref(), &target);
        Ok(())
    }
}
