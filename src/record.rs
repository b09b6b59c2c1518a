//! What a fix is made of, and how it is written down: the [`Change`]s the
//! mutation plans, the `pvc-guard.io/mutated` [`Record`] that lists them on
//! the workload, and the claims they need. Shared by the mutation, the claim
//! controller, `fix` and `convert`; a leaf that imports nothing from the
//! crate but [`crate::k8s`].
//!
//! The record is a description, never an authority: anyone who can write
//! the workload can write the annotation, so nothing privileged is ever
//! taken from it (docs/architecture.md, "The record").

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const MUTATED_ANNOTATION: &str = "pvc-guard.io/mutated";
pub const HINT_ANNOTATION: &str = "pvc-guard.io/statefulset-hint";
pub const CLAIM_NAME_ANNOTATION: &str = "pvc-guard.io/claim-name";
pub const CLAIM_SIZE_ANNOTATION: &str = "pvc-guard.io/claim-size";
pub const CLAIM_CLASS_ANNOTATION: &str = "pvc-guard.io/claim-storage-class";
pub const CLAIM_ACCESS_ANNOTATION: &str = "pvc-guard.io/claim-access-mode";
pub const DATA_PATHS_ANNOTATION: &str = "pvc-guard.io/data-paths";
pub const DATA_OWNER_ANNOTATION: &str = "pvc-guard.io/data-owner";
pub const ALLOW_EPHEMERAL_ANNOTATION: &str = "pvc-guard.io/allow-ephemeral";
/// On a claim the controller created: `Kind/name` of the workload it is for.
pub const CREATED_FOR_ANNOTATION: &str = "pvc-guard.io/created-for";
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const PERMISSIONS_CONTAINER: &str = "pvc-guard-permissions";

/// A claim a fix needs: what `fix` prints and the claim controller creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    pub access_mode: String,
}

impl ClaimSpec {
    /// The PersistentVolumeClaim manifest: labelled as pvc-guard's, and with
    /// no ownerReference, so deleting the workload never deletes the data.
    pub fn manifest(&self, name: &str, namespace: Option<&str>) -> Value {
        let mut metadata = json!({"name": name, "labels": {MANAGED_BY_LABEL: "pvc-guard"}});
        if let Some(ns) = namespace {
            metadata["namespace"] = json!(ns);
        }
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": self.claim_spec()})
    }

    /// The claim's `spec`, as a claim or a StatefulSet claim template has it.
    pub fn claim_spec(&self) -> Value {
        let mut spec = json!({
            "accessModes": [self.access_mode],
            "resources": {"requests": {"storage": self.size}},
        });
        if let Some(class) = &self.storage_class {
            spec["storageClassName"] = json!(class);
        }
        spec
    }
}

/// A directory the permissions init container gives its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitDir {
    pub volume: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    pub path: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// One owned edit. Applying a change twice is the same as applying it once:
/// each finds what it owns by name (volume, container, mount path), never
/// by position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "camelCase")]
pub enum Change {
    /// The pod volume `volume` becomes (or is added as) a claim volume.
    #[serde(rename_all = "camelCase")]
    ClaimVolume {
        volume: String,
        claim: String,
        #[serde(flatten)]
        spec: ClaimSpec,
    },
    /// A StatefulSet claim template `name`; a pod volume of that name goes.
    #[serde(rename_all = "camelCase")]
    ClaimTemplate {
        name: String,
        #[serde(flatten)]
        spec: ClaimSpec,
    },
    /// A mount of `volume` at `mount_path` in `container`.
    #[serde(rename_all = "camelCase")]
    Mount {
        container: String,
        volume: String,
        mount_path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub_path: Option<String>,
    },
    /// The `pvc-guard-permissions` init container.
    #[serde(rename_all = "camelCase")]
    Permissions { image: String, dirs: Vec<InitDir> },
    /// Pod-level fsGroup with OnRootMismatch.
    #[serde(rename_all = "camelCase")]
    FsGroup { gid: i64 },
    /// `strategy: {type: Recreate}` on a Deployment.
    Recreate,
}

/// What `pvc-guard.io/mutated` records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub rules: Vec<String>,
    pub changes: Vec<Change>,
}

impl Record {
    /// The annotation's value; `None` if it is not a record.
    pub fn parse(text: &str) -> Option<Record> {
        serde_json::from_str(text).ok()
    }

    /// Claims the record names, with what they should look like.
    pub fn claims(&self) -> impl Iterator<Item = (&str, &ClaimSpec)> {
        self.changes.iter().filter_map(|c| match c {
            Change::ClaimVolume { claim, spec, .. } => Some((claim.as_str(), spec)),
            _ => None,
        })
    }

    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }
}

/// The permissions init container: sets each directory's owner, recursively
/// only when the directory's own owner is wrong so restarts of a large
/// database stay fast. Owner and mode are validated numbers passed as
/// separate arguments to a fixed script (`"$@"`), never spliced into it.
pub fn permissions_container(image: &str, dirs: &[InitDir]) -> Value {
    const SCRIPT: &str = "set -e; while [ \"$#\" -gt 0 ]; do d=$1; o=$2; m=$3; shift 3; \
        [ \"$(stat -c %u:%g \"$d\")\" = \"$o\" ] || chown -R \"$o\" \"$d\"; \
        [ \"$m\" = - ] || chmod \"$m\" \"$d\"; done";
    let mut command = vec![
        json!("sh"),
        json!("-c"),
        json!(SCRIPT),
        json!(PERMISSIONS_CONTAINER),
    ];
    let mut mounts = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let target = format!("/pvc-guard/{i}");
        command.push(json!(target));
        command.push(json!(d.owner));
        command.push(json!(d.mode.as_deref().unwrap_or("-")));
        let mut m = json!({"name": d.volume, "mountPath": target});
        if let Some(sp) = &d.sub_path {
            m["subPath"] = json!(sp);
        }
        mounts.push(m);
    }
    json!({
        "name": PERMISSIONS_CONTAINER,
        "image": image,
        "command": command,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]},
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "volumeMounts": mounts,
    })
}
