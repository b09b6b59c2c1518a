//! The fix and its patch (docs/architecture.md, "The mutation and its
//! laws"). Pure: from the typed view to a list of [`Change`]s, and from the
//! changes to JSON Patch operations addressed at the positions the view
//! holds. The object is never copied into a tree and diffed:
//! `json_patch::diff` is the tests' oracle, not the server's method.

pub mod claims;
pub mod patch;
pub mod plan;

pub use patch::Op;
pub use plan::{Unfixable, Unfixed};

use std::collections::{HashMap, HashSet};

use crate::k8s;
use crate::model::read::Shape;
use crate::model::{ContainerList, Mount, Workload, limits};
use crate::policy::{ClusterFacts, Policy, Rule};
use crate::record::{
    Change, ClaimSpec, HINT_ANNOTATION, MUTATED_ANNOTATION, PERMISSIONS_CONTAINER, Record,
};

#[derive(Debug, Clone, Default)]
pub struct Mutation {
    /// JSON Patch operations against the object as sent; empty when
    /// nothing changes (most requests).
    pub patch: Vec<Op>,
    /// The `pvc-guard.io/mutated` record the patch writes.
    pub record: Record,
    /// The changes this mutation made (the record may hold earlier ones).
    pub changes: Vec<Change>,
    /// The patch also writes the StatefulSet hint annotation.
    pub hint: bool,
    /// What the fix did, one line each (for warnings and `fix`).
    pub applied: Vec<String>,
    /// What it could not fix, and why.
    pub unfixed: Vec<Unfixed>,
    /// Warnings the mutating webhook returns.
    pub warnings: Vec<String>,
}

impl Mutation {
    /// The patch as the AdmissionResponse carries it (before base64).
    pub fn patch_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.patch).expect("a JSON patch serializes")
    }

    /// `object` as the patch leaves it (what `fix` prints).
    pub fn apply_to(&self, object: &serde_json::Value) -> Result<serde_json::Value, String> {
        apply_ops(object, &self.patch)
    }
}

/// The StatefulSet hint annotation's text.
pub const HINT: &str = "a database runs in this Deployment; a StatefulSet gives each replica its own claim (pvc-guard convert prints one)";

/// The mutation on CREATE: fix what can be fixed safely. The caller has
/// checked that the object is not owned.
pub fn mutate_create(policy: &Policy, workload: &Workload, facts: &ClusterFacts) -> Mutation {
    let mut m = Mutation::default();
    // Copied only once there is something to change.
    let mut fixed: Option<Workload> = None;
    let mut ops = Vec::new();
    // A record already on the object (copied along with a fixed manifest)
    // keeps only what pvc-guard would have written.
    let mut record = match record_of(workload, &mut m.warnings) {
        Some(r) => {
            let (changes, dropped) = trusted(&r, policy);
            m.warnings.extend(dropped);
            Record {
                rules: r.rules,
                changes,
            }
        }
        None => Record::default(),
    };
    let mut names = claims::ClaimNames::new(workload);
    let mut database_in_deployment = false;
    // The second pass judges the fixed view as the validator will judge
    // the fixed object: it finds what the fix itself calls for (a new claim
    // on a Deployment wants Recreate) and what the fix did not cure (an
    // image VOLUME below the new mount shadows it).
    for _ in 0..2 {
        let current = fixed.as_ref().unwrap_or(workload);
        let plan = {
            let a = policy.evaluate(current, facts);
            database_in_deployment |= a
                .findings
                .iter()
                .any(|f| f.rule == Rule::DatabaseInDeployment);
            plan::plan(policy, facts, &a, &mut names)
        };
        if m.unfixed.is_empty() {
            m.unfixed = plan.unfixed;
        }
        m.warnings.extend(plan.warnings);
        if plan.changes.is_empty() {
            break;
        }
        if !workload.metadata_shape.is_present() {
            m.unfixed.push(Unfixed {
                at: None,
                why: Unfixable::NoMetadata,
            });
            break;
        }
        let target = fixed.get_or_insert_with(|| workload.clone());
        for change in &plan.changes {
            patch::apply(target, change, &mut ops);
        }
        m.applied.extend(plan.applied);
        for r in plan.rules {
            let id = r.id().to_string();
            if !record.rules.contains(&id) {
                record.rules.push(id);
            }
        }
        m.changes.extend(plan.changes.iter().cloned());
        record.changes.extend(plan.changes);
    }
    let Some(mut fixed) = fixed else {
        return m;
    };
    let mut annotations = vec![(MUTATED_ANNOTATION, record.to_annotation())];
    if database_in_deployment {
        m.hint = true;
        annotations.push((HINT_ANNOTATION, HINT.to_string()));
        m.warnings.push(format!(
            "[{}] a database runs in this Deployment; `pvc-guard convert -f <file>` prints the equivalent StatefulSet",
            Rule::DatabaseInDeployment
        ));
    }
    patch::set_annotations(&mut fixed, &annotations, &mut ops);
    m.record = record;
    m.patch = ops;
    m
}

/// What an object carries of the changes a record can name, indexed once
/// so that each record entry costs a lookup: a record is anyone's to
/// write, and with a scan of the object per entry a long one cost its
/// length times the object's.
struct Carried<'w> {
    /// (volume, claim) of each claim volume.
    claim_volumes: HashSet<(&'w str, &'w str)>,
    claim_templates: HashSet<&'w str>,
    /// (container, volume, mountPath, subPath as written) of each mount of
    /// a named container.
    mounts: HashSet<(&'w str, &'w str, &'w str, Option<&'w str>)>,
    /// The same without the subPath.
    mounted: HashSet<(&'w str, &'w str, &'w str)>,
    /// The mounts at each (container, mountPath).
    at: HashMap<(&'w str, &'w str), Vec<&'w Mount>>,
    /// Per volume name: are all volumes of that name an emptyDir or an
    /// ephemeral volume?
    ephemeral: HashMap<&'w str, bool>,
}

impl<'w> Carried<'w> {
    fn new(w: &'w Workload) -> Carried<'w> {
        let mut carried = Carried {
            claim_volumes: HashSet::new(),
            claim_templates: w.claim_template_names().collect(),
            mounts: HashSet::new(),
            mounted: HashSet::new(),
            at: HashMap::new(),
            ephemeral: HashMap::new(),
        };
        for v in w.pod.volumes.iter() {
            let Some(name) = v.name.as_deref() else {
                continue;
            };
            if v.shape.is_present()
                && let Some(claim) = v.persistent_volume_claim.claim_name.as_deref()
            {
                carried.claim_volumes.insert((name, claim));
            }
            *carried.ephemeral.entry(name).or_insert(true) &=
                matches!(v.source(), "emptyDir" | "ephemeral");
        }
        for (_, c, m) in named_mounts(w) {
            let Some(path) = m.mount_path.as_deref() else {
                continue;
            };
            carried.at.entry((c, path)).or_default().push(m);
            if let Some(volume) = m.name.as_deref() {
                carried
                    .mounts
                    .insert((c, volume, path, m.sub_path.as_deref()));
                carried.mounted.insert((c, volume, path));
            }
        }
        carried
    }

    /// Does the workload carry this change? Only what it owns counts: its
    /// claim volume, claim template and mount, by name.
    fn intact(&self, change: &Change) -> bool {
        match change {
            Change::ClaimVolume { volume, claim, .. } => self
                .claim_volumes
                .contains(&(volume.as_str(), claim.as_str())),
            Change::ClaimTemplate { name, .. } => self.claim_templates.contains(name.as_str()),
            Change::Mount {
                container,
                volume,
                mount_path,
                sub_path: None,
            } => self
                .mounted
                .contains(&(container.as_str(), volume.as_str(), mount_path.as_str())),
            Change::Mount {
                container,
                volume,
                mount_path,
                sub_path: Some(sub_path),
            } => self.mounts.contains(&(
                container.as_str(),
                volume.as_str(),
                mount_path.as_str(),
                Some(sub_path.as_str()),
            )),
            _ => true,
        }
    }

    /// The mounts of the container (of either list) named `container` at
    /// `path`.
    fn mounts_at<'a>(&'a self, container: &'a str, path: &'a str) -> &'a [&'a Mount] {
        self.at
            .get(&(container, path))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Is every volume named `volume` an emptyDir or an ephemeral volume
    /// (or is there none)?
    fn only_ephemeral(&self, volume: &str) -> bool {
        self.ephemeral.get(volume).copied().unwrap_or(true)
    }
}

/// Every mount of every named container (of either list), with the list
/// and the container's name: how a change finds its mounts again.
fn named_mounts(w: &Workload) -> impl Iterator<Item = (ContainerList, &str, &Mount)> {
    [ContainerList::Containers, ContainerList::InitContainers]
        .into_iter()
        .flat_map(move |l| w.pod.list(l).iter().map(move |c| (l, c)))
        .filter(|(_, c)| c.shape.is_present())
        .filter_map(|(l, c)| Some((l, c.name.as_deref()?, c)))
        .flat_map(|(l, name, c)| {
            c.mounts()
                .filter(|m| m.shape.is_present())
                .map(move |m| (l, name, m))
        })
}

/// The names only one container (of either list) has.
fn names_once(w: &Workload) -> std::collections::HashSet<&str> {
    let mut seen = std::collections::HashMap::new();
    for c in [ContainerList::Containers, ContainerList::InitContainers]
        .into_iter()
        .flat_map(|l| w.pod.list(l).iter())
        .filter(|c| c.shape.is_present())
    {
        if let Some(name) = c.name.as_deref() {
            *seen.entry(name).or_insert(0) += 1;
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n == 1)
        .map(|(name, _)| name)
        .collect()
}

/// The workload's own record. The API server stores at most 256 KiB of
/// annotations, so a longer record was never stored with an object and
/// is not one pvc-guard wrote: it is ignored, with a warning, rather than
/// read entry by entry.
fn record_of(w: &Workload, warnings: &mut Vec<String>) -> Option<Record> {
    let text = w.mutated()?;
    if text.len() > limits::RECORD_BYTES {
        warnings.push(format!(
            "[{}] {MUTATED_ANNOTATION} is {} bytes, more than the {} the API server stores, so pvc-guard ignores it",
            Rule::EphemeralDataPath,
            text.len(),
            limits::RECORD_BYTES
        ));
        return None;
    }
    Record::parse(text)
}

/// The entries of a record pvc-guard would have written under this config,
/// and a warning for each other one. A record is anyone's to write, so
/// nothing is taken from an entry the config would not produce.
pub fn trusted(record: &Record, policy: &Policy) -> (Vec<Change>, Vec<String>) {
    let claims = &policy.config.claims;
    let max = k8s::parse_quantity(&claims.max_size);
    let spec_ok = |spec: &ClaimSpec| {
        k8s::parse_quantity(&spec.size).is_some_and(|q| q > 0.0 && max.is_none_or(|m| q <= m))
            && claims.allowed_access_modes.contains(&spec.access_mode)
            && spec.storage_class.as_deref().is_none_or(|c| {
                k8s::is_dns_subdomain(c)
                    && (claims.allowed_storage_classes.is_empty()
                        || claims.allowed_storage_classes.iter().any(|a| a == c))
            })
    };
    let volumes: HashSet<&str> = record
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::ClaimVolume {
                volume,
                claim,
                spec,
            } if k8s::is_dns_subdomain(claim) && spec_ok(spec) => Some(volume.as_str()),
            Change::ClaimTemplate { name, spec } if spec_ok(spec) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let owner_ok =
        |o: &str| crate::config::parse_owner(o).is_some_and(|(u, g)| o == format!("{u}:{g}"));
    let mut keep = Vec::new();
    let mut warnings = Vec::new();
    for change in &record.changes {
        let ok = match change {
            Change::ClaimVolume { volume, .. } | Change::ClaimTemplate { name: volume, .. } => {
                volumes.contains(volume.as_str())
            }
            Change::Mount {
                volume, mount_path, ..
            } => {
                volumes.contains(volume.as_str()) && k8s::normalize_path(mount_path) == *mount_path
            }
            Change::Permissions { image, dirs } => {
                *image == policy.config.permissions_image
                    && dirs.iter().all(|d| {
                        owner_ok(&d.owner) && d.mode.as_deref().is_none_or(|m| m == "0700")
                    })
            }
            Change::FsGroup { gid } => *gid >= 0,
            Change::Recreate => true,
        };
        if ok {
            keep.push(change.clone());
        } else {
            warnings.push(format!(
                "[{}] {MUTATED_ANNOTATION} holds an entry pvc-guard would not write under its config, so pvc-guard ignores it: {}",
                Rule::EphemeralDataPath,
                crate::policy::finding::truncate(
                    &serde_json::to_string(change).unwrap_or_default(),
                    120
                )
            ));
        }
    }
    (keep, warnings)
}

/// The mutation on UPDATE. Nothing new is added; one thing is kept: a
/// recorded claim the update lost (its volume gone or back to the emptyDir
/// it replaced, and nothing else mounted where it was, as when a GitOps
/// tool re-applies the original manifest) is put back, so the pods keep the
/// claim that holds the data. A storage change made on purpose (another
/// claim or volume at that path) wins: nothing is put back and a warning
/// says the record no longer matches. What the put-back claim calls for (its owner's init
/// container, fsGroup, Recreate) is recomputed from the config, never
/// copied from the record.
pub fn mutate_update(
    policy: &Policy,
    facts: &ClusterFacts,
    old: &Workload,
    new: &Workload,
) -> Mutation {
    let mut m = Mutation::default();
    let Some(record) = record_of(old, &mut m.warnings) else {
        return m;
    };
    let (entries, dropped) = trusted(&record, policy);
    m.warnings.extend(dropped);
    let mut restore: Vec<Change> = Vec::new();
    let mut restored: Vec<plan::Restored> = Vec::new();
    // Another volume mounted where the claim served is a change made on
    // purpose only if the old object did not mount it there too.
    let old_mounts: std::collections::HashSet<(&str, Option<&str>, Option<&str>)> =
        named_mounts(old)
            .map(|(_, c, m)| (c, m.name.as_deref(), m.mount_path.as_deref()))
            .collect();
    // A mount is put back in the container of its name: where names repeat
    // (the API server refuses such a pod) it could land in the wrong one,
    // and the fix never mounts anything there (such a container is not
    // fixed), so those mounts are the person's and are left to them.
    let (old_once, new_once) = (names_once(old), names_once(new));
    let (old_carried, new_carried) = (Carried::new(old), Carried::new(new));
    // Every mount of each volume in the old object, by volume.
    let mut old_by_volume: HashMap<&str, Vec<(ContainerList, &str, &Mount)>> = HashMap::new();
    for (l, c, m) in named_mounts(old) {
        if let Some(volume) = m.name.as_deref() {
            old_by_volume.entry(volume).or_default().push((l, c, m));
        }
    }
    // Each volume is decided once: a record can name one many times, and
    // each time cost the volume's mounts (squared where they share a path).
    let mut decided: HashSet<&str> = HashSet::new();
    for entry in &entries {
        let (volume, what) = match entry {
            Change::ClaimVolume { volume, claim, .. } => (volume, format!("claim {claim:?}")),
            Change::ClaimTemplate { name, .. } => (name, format!("claim template {name:?}")),
            _ => continue,
        };
        if decided.contains(volume.as_str()) {
            continue;
        }
        // Where the claim served the data: every mount of it in the old
        // object (the record names only the mounts the fix added).
        // pvc-guard's own init container is recomputed, not restored.
        let mut seen = HashSet::new();
        let served: Vec<Change> = old_by_volume
            .get(volume.as_str())
            .into_iter()
            .flatten()
            .filter(|(l, c, _)| {
                !(*l == ContainerList::InitContainers && *c == PERMISSIONS_CONTAINER)
                    && old_once.contains(c)
                    && new_once.contains(c)
            })
            // Mounts alike (the same path and subPath in one container)
            // are put back once.
            .filter(|(_, c, m)| seen.insert((*c, m.mount_path.as_deref(), m.sub_path.as_deref())))
            .filter_map(|(_, c, m)| {
                Some(Change::Mount {
                    container: c.to_string(),
                    volume: volume.clone(),
                    mount_path: m.mount_path.clone()?,
                    sub_path: m.sub_path.clone(),
                })
            })
            .collect();
        // Only what the old object really carries is put back: a record
        // copied along with a manifest can name changes its object never had.
        if !old_carried.intact(entry) || served.is_empty() {
            continue;
        }
        decided.insert(volume);
        if new_carried.intact(entry) && served.iter().all(|c| new_carried.intact(c)) {
            continue;
        }
        // The original coming back: the recorded volume is gone, or is the
        // emptyDir (or ephemeral volume) the fix replaced; and nothing but
        // it is mounted where the claim served. A claim or any other volume
        // there is a change made on purpose.
        let original_back = new_carried.only_ephemeral(volume);
        // Each place once, however many subPaths of the volume it holds.
        let mut places = HashSet::new();
        let path_free = served.iter().all(|c| match c {
            Change::Mount {
                container,
                mount_path,
                ..
            } => {
                !places.insert((container.as_str(), mount_path.as_str()))
                    || new_carried
                        .mounts_at(container, mount_path)
                        .iter()
                        .all(|mm| {
                            mm.name.as_deref() == Some(volume)
                                || old_mounts.contains(&(
                                    container.as_str(),
                                    mm.name.as_deref(),
                                    mm.mount_path.as_deref(),
                                ))
                        })
            }
            _ => true,
        });
        if !(original_back && path_free) {
            m.warnings.push(format!(
                "[{}] this update changed the storage pvc-guard recorded for {what} (volume {volume:?}); a change made on purpose wins, so nothing was put back and {MUTATED_ANNOTATION} no longer matches the workload",
                Rule::EphemeralDataPath
            ));
            continue;
        }
        restore.push(entry.clone());
        for c in served {
            if let Change::Mount {
                container,
                volume,
                mount_path,
                sub_path,
            } = &c
            {
                restored.push(plan::Restored {
                    container: container.clone(),
                    volume: volume.clone(),
                    sub_path: sub_path.clone(),
                    mount_path: mount_path.clone(),
                });
            }
            restore.push(c);
        }
    }
    if restore.is_empty() || new.metadata_shape != Shape::Present {
        return m;
    }
    let mut fixed = new.clone();
    let mut ops = Vec::new();
    for change in &restore {
        patch::apply(&mut fixed, change, &mut ops);
    }
    let follow = {
        let a = policy.evaluate(&fixed, facts);
        plan::follow_ups(policy, facts, &a, &restored)
    };
    for change in &follow.changes {
        patch::apply(&mut fixed, change, &mut ops);
    }
    restore.extend(follow.changes);
    let record = Record {
        rules: record.rules.clone(),
        changes: entries,
    };
    patch::set_annotations(
        &mut fixed,
        &[(MUTATED_ANNOTATION, record.to_annotation())],
        &mut ops,
    );
    m.applied.push(format!(
        "[{}] put back the claim mounts pvc-guard added when the workload was created",
        Rule::EphemeralDataPath
    ));
    m.applied.extend(follow.applied);
    m.warnings.push(format!(
        "[{}] this update dropped the claim mounts recorded in {MUTATED_ANNOTATION}; pvc-guard put them back so the pods keep their data",
        Rule::EphemeralDataPath
    ));
    m.record = record;
    m.changes = restore;
    m.patch = ops;
    m
}

/// `object` with JSON Patch operations applied, for the offline commands.
pub fn apply_ops(object: &serde_json::Value, ops: &[Op]) -> Result<serde_json::Value, String> {
    let ops = serde_json::to_value(ops).expect("a JSON patch serializes");
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| format!("not a JSON Patch: {e}"))?;
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| format!("the patch does not apply: {e}"))?;
    Ok(out)
}
