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

use crate::model::read::Shape;
use crate::model::{ContainerList, Workload};
use crate::policy::{ClusterFacts, Policy, Rule};
use crate::record::{Change, HINT_ANNOTATION, MUTATED_ANNOTATION, Record};

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
    let mut record = workload
        .mutated()
        .and_then(Record::parse)
        .unwrap_or_default();
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

/// Is every change of `changes` still in the workload? Only what it owns
/// counts: its claim volume, claim template and mount, by name.
fn intact(w: &Workload, change: &Change) -> bool {
    match change {
        Change::ClaimVolume { volume, claim, .. } => w.pod.volumes.iter().any(|v| {
            v.shape.is_present()
                && v.name.as_deref() == Some(volume)
                && v.persistent_volume_claim.claim_name.as_deref() == Some(claim)
        }),
        Change::ClaimTemplate { name, .. } => w
            .spec
            .volume_claim_templates
            .iter()
            .any(|t| t.metadata.name.as_deref() == Some(name)),
        Change::Mount {
            container,
            volume,
            mount_path,
            sub_path,
        } => [ContainerList::Containers, ContainerList::InitContainers]
            .into_iter()
            .flat_map(|l| w.pod.list(l).iter())
            .filter(|c| c.shape.is_present() && c.name.as_deref() == Some(container))
            .flat_map(|c| c.mounts())
            .any(|m| {
                m.shape.is_present()
                    && m.name.as_deref() == Some(volume)
                    && m.mount_path.as_deref() == Some(mount_path)
                    && (sub_path.is_none() || m.sub_path == *sub_path)
            }),
        _ => true,
    }
}

/// The mutation on UPDATE: nothing new; a recorded fix the new object lost
/// is put back exactly, so the pods keep the claim that holds the data.
pub fn mutate_update(old: &Workload, new: &Workload) -> Mutation {
    let mut m = Mutation::default();
    let Some(record) = old.mutated().and_then(Record::parse) else {
        return m;
    };
    // Only what the old object really carries is put back: a record copied
    // along with a manifest can name changes its object never had, and
    // putting those back would, say, mount a volume that does not exist.
    let held: Vec<&Change> = record.changes.iter().filter(|c| intact(old, c)).collect();
    if held.iter().all(|c| intact(new, c)) {
        return m;
    }
    if new.metadata_shape != Shape::Present {
        return m;
    }
    let mut fixed = new.clone();
    let mut ops = Vec::new();
    for change in held {
        patch::apply(&mut fixed, change, &mut ops);
        m.changes.push(change.clone());
    }
    patch::set_annotations(
        &mut fixed,
        &[(MUTATED_ANNOTATION, record.to_annotation())],
        &mut ops,
    );
    m.applied.push(format!(
        "[{}] put back the claim mounts pvc-guard added when the workload was created",
        Rule::EphemeralDataPath
    ));
    m.warnings.push(format!(
        "[{}] this update dropped the claim mounts recorded in {MUTATED_ANNOTATION}; pvc-guard put them back so the pods keep their data",
        Rule::EphemeralDataPath
    ));
    m.record = record;
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
