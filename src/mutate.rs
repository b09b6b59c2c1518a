//! The fix and its patch (DESIGN.md, section 4). Pure: works on the raw
//! object as `serde_json::Value` and returns `json_patch::diff(raw, fixed)`.
//!
//! A fix is a list of [`Change`]s. Each change finds what it owns by name
//! (volume, container, mount path), never by position, so applying it again
//! changes nothing; the same list is recorded in `pvc-guard.io/mutated` and
//! put back on UPDATE when a re-applied manifest lost it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::Permissions;
use crate::policy::detect::{DbContainer, start_user};
use crate::policy::storage::{Backing, StorageClass};
use crate::policy::workload::{Kind, at, normalize_path, path_contains};
use crate::policy::{
    Assessment, ClusterFacts, Policy, Rule, Severity, Unreadable, Workload, image_populated_dir,
    parent_dir,
};

pub const MUTATED_ANNOTATION: &str = "pvc-guard.io/mutated";
pub const HINT_ANNOTATION: &str = "pvc-guard.io/statefulset-hint";
pub const CLAIM_NAME_ANNOTATION: &str = "pvc-guard.io/claim-name";
pub const CLAIM_SIZE_ANNOTATION: &str = "pvc-guard.io/claim-size";
pub const CLAIM_CLASS_ANNOTATION: &str = "pvc-guard.io/claim-storage-class";
pub const CLAIM_ACCESS_ANNOTATION: &str = "pvc-guard.io/claim-access-mode";
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
        let mut spec = json!({
            "accessModes": [self.access_mode],
            "resources": {"requests": {"storage": self.size}},
        });
        if let Some(class) = &self.storage_class {
            spec["storageClassName"] = json!(class);
        }
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec})
    }
}

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

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

/// One owned edit. Applying a change twice is the same as applying it once.
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
    pub fn from_object(object: &Value) -> Option<Record> {
        let text = at(object, "/metadata/annotations")?
            .get(MUTATED_ANNOTATION)?
            .as_str()?;
        Record::parse(text)
    }

    /// The annotation's value; `None` if it is not a record.
    pub fn parse(text: &str) -> Option<Record> {
        serde_json::from_str(text).ok()
    }

    /// Claims the record names, with what they should look like.
    pub fn claims(&self) -> Vec<(String, ClaimSpec)> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                Change::ClaimVolume { claim, spec, .. } => Some((claim.clone(), spec.clone())),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Mutation {
    /// The object after the fix; `None` when the fix changed nothing, so
    /// the many requests with nothing to fix never copy their object.
    pub fixed: Option<Value>,
    pub patch: json_patch::Patch,
    pub record: Record,
    /// What the fix did, one line each (for warnings and `fix`).
    pub applied: Vec<String>,
    /// What it could not fix, and why.
    pub unfixed: Vec<String>,
    /// Warnings the mutating webhook returns.
    pub warnings: Vec<String>,
}

impl Mutation {
    /// The object as the fix leaves it, given the object it was made for.
    pub fn fixed_or<'v>(&'v self, original: &'v Value) -> &'v Value {
        self.fixed.as_ref().unwrap_or(original)
    }
}

/// Validates a Kubernetes quantity such as `10Gi`, `500M` or `1e3`.
pub fn parse_quantity(q: &str) -> Option<()> {
    let q = q.trim();
    let digits_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits_end);
    if number.is_empty() || number.parse::<f64>().is_err() {
        return None;
    }
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "m",
    ];
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|e| e.parse::<i32>().is_ok());
    (SUFFIXES.contains(&suffix) || exponent).then_some(())
}

/// `name` as a DNS label or subdomain of at most `max` characters; a longer
/// one keeps its start and ends with a hash of the whole.
pub fn shorten(name: &str, max: usize) -> String {
    let clean: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c| c == '-' || c == '.').to_string();
    if clean.len() <= max {
        return clean;
    }
    let hash = Sha256::digest(name.as_bytes());
    let hex: String = hash.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let keep = clean[..max - hex.len() - 1].trim_end_matches(['-', '.']);
    format!("{keep}-{hex}")
}

fn pod_spec_mut(object: &mut Value, kind: Kind) -> Option<&mut Map<String, Value>> {
    object.pointer_mut(kind.pod_spec_pointer())?.as_object_mut()
}

fn array_mut<'v>(map: &'v mut Map<String, Value>, key: &str) -> &'v mut Vec<Value> {
    let slot = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut().expect("just made an array")
}

fn named<'v>(items: &'v mut [Value], name: &str) -> Option<&'v mut Value> {
    items
        .iter_mut()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
}

fn claim_template_value(name: &str, spec: &ClaimSpec) -> Value {
    let mut s = json!({
        "accessModes": [spec.access_mode],
        "resources": {"requests": {"storage": spec.size}},
    });
    if let Some(class) = &spec.storage_class {
        s["storageClassName"] = json!(class);
    }
    json!({"metadata": {"name": name}, "spec": s})
}

fn permissions_container(image: &str, dirs: &[InitDir]) -> Value {
    let mut script = String::from("set -e");
    let mut mounts = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let target = format!("/pvc-guard/{i}");
        // Recursive only when the directory's own owner is wrong, so
        // restarts of a large database stay fast.
        script.push_str(&format!(
            "; [ \"$(stat -c %u:%g {target})\" = \"{o}\" ] || chown -R {o} {target}",
            o = d.owner
        ));
        if let Some(mode) = &d.mode {
            script.push_str(&format!("; chmod {mode} {target}"));
        }
        let mut m = json!({"name": d.volume, "mountPath": target});
        if let Some(sp) = &d.sub_path {
            m["subPath"] = json!(sp);
        }
        mounts.push(m);
    }
    json!({
        "name": PERMISSIONS_CONTAINER,
        "image": image,
        "command": ["sh", "-c", script],
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

/// Applies one change to the object; finds everything it owns by name.
pub fn apply(object: &mut Value, kind: Kind, change: &Change) {
    if let Change::ClaimTemplate { name, spec } = change
        && let Some(spec_map) = object.get_mut("spec").and_then(Value::as_object_mut)
    {
        let templates = array_mut(spec_map, "volumeClaimTemplates");
        let exists = templates
            .iter()
            .any(|t| at(t, "/metadata/name").and_then(Value::as_str) == Some(name));
        if !exists {
            templates.push(claim_template_value(name, spec));
        }
    }
    if let Change::Recreate = change {
        if let Some(spec_map) = object.get_mut("spec").and_then(Value::as_object_mut) {
            let strategy = spec_map.entry("strategy").or_insert_with(|| json!({}));
            if !strategy.is_object() {
                *strategy = json!({});
            }
            let s = strategy.as_object_mut().expect("object");
            s.insert("type".into(), json!("Recreate"));
            s.remove("rollingUpdate");
        }
        return;
    }
    let Some(pod) = pod_spec_mut(object, kind) else {
        return;
    };
    match change {
        Change::ClaimVolume { volume, claim, .. } => {
            let new = json!({"name": volume, "persistentVolumeClaim": {"claimName": claim}});
            let volumes = array_mut(pod, "volumes");
            match named(volumes, volume) {
                Some(v) => *v = new,
                None => volumes.push(new),
            }
        }
        Change::ClaimTemplate { name, .. } => {
            if let Some(Value::Array(volumes)) = pod.get_mut("volumes") {
                volumes.retain(|v| v.get("name").and_then(Value::as_str) != Some(name));
                if volumes.is_empty() {
                    pod.remove("volumes");
                }
            }
        }
        Change::Mount {
            container,
            volume,
            mount_path,
            sub_path,
        } => {
            for list in ["containers", "initContainers"] {
                let Some(Value::Array(items)) = pod.get_mut(list) else {
                    continue;
                };
                let Some(Value::Object(c)) = named(items, container) else {
                    continue;
                };
                let mounts = array_mut(c, "volumeMounts");
                let existing = mounts.iter_mut().find(|m| {
                    m.get("mountPath")
                        .and_then(Value::as_str)
                        .map(normalize_path)
                        .as_deref()
                        == Some(mount_path.as_str())
                });
                match existing.and_then(Value::as_object_mut) {
                    Some(m) => {
                        m.insert("name".into(), json!(volume));
                        if let Some(sp) = sub_path {
                            m.insert("subPath".into(), json!(sp));
                        }
                    }
                    None => {
                        let mut m = json!({"name": volume, "mountPath": mount_path});
                        if let Some(sp) = sub_path {
                            m["subPath"] = json!(sp);
                        }
                        mounts.push(m);
                    }
                }
                break;
            }
        }
        Change::Permissions { image, dirs } => {
            let init = permissions_container(image, dirs);
            let inits = array_mut(pod, "initContainers");
            match named(inits, PERMISSIONS_CONTAINER) {
                Some(existing) => *existing = init,
                None => inits.insert(0, init),
            }
        }
        Change::FsGroup { gid } => {
            let sc = pod.entry("securityContext").or_insert_with(|| json!({}));
            if !sc.is_object() {
                *sc = json!({});
            }
            let sc = sc.as_object_mut().expect("object");
            sc.entry("fsGroup").or_insert(json!(gid));
            sc.entry("fsGroupChangePolicy")
                .or_insert(json!("OnRootMismatch"));
        }
        Change::Recreate => {}
    }
}

fn set_annotation(object: &mut Value, key: &str, value: String) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations
        .as_object_mut()
        .expect("object")
        .insert(key.to_string(), Value::String(value));
}

/// Changes find volumes by name, so two volumes of one name (which the API
/// server rejects anyway) would leave a fix unable to find its own again.
fn volume_names_unique(w: &Workload<'_>) -> Result<(), String> {
    let names: Vec<&str> = w
        .pod_spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    if let Some((_, name)) = names
        .iter()
        .enumerate()
        .find(|(i, n)| names[..*i].contains(n))
    {
        return Err(format!(
            "two volumes are named {name:?}, so a fix could not tell them apart (the API server rejects such a pod anyway)"
        ));
    }
    Ok(())
}

/// Can the mutation give this workload's pods a claim of their own?
fn fixable_kind(assessment: &Assessment<'_, '_>) -> Result<(), String> {
    let w = &assessment.workload;
    match w.kind {
        Kind::DaemonSet => {
            Err("a DaemonSet runs a pod on every node, and they cannot share one claim".into())
        }
        Kind::CronJob => Err("a CronJob's runs may overlap on one claim".into()),
        Kind::Deployment | Kind::ReplicaSet | Kind::ReplicationController if w.replicas() > 1 => {
            Err(format!("{} replicas cannot share one claim", w.replicas()))
        }
        Kind::Job if w.replicas() > 1 => Err(format!(
            "parallelism {} cannot share one claim",
            w.replicas()
        )),
        _ => Ok(()),
    }
}

struct Planner<'p, 'x, 'a, 'c> {
    policy: &'p Policy,
    facts: &'x ClusterFacts,
    a: &'x Assessment<'a, 'c>,
    changes: Vec<Change>,
    rules: Vec<Rule>,
    applied: Vec<String>,
    unfixed: Vec<String>,
    warnings: Vec<String>,
    init_dirs: Vec<InitDir>,
    claims_made: usize,
}

impl Planner<'_, '_, '_, '_> {
    fn did(&mut self, rule: Rule, what: String) {
        self.applied.push(format!("[{rule}] {what}"));
    }

    fn annotation(&self, key: &str) -> Option<String> {
        self.a
            .workload
            .annotation(key)
            .map(str::to_string)
            .filter(|s| !s.trim().is_empty())
    }

    fn claim_spec(
        &self,
        volume_size: Option<String>,
        class: Option<String>,
        mode: Option<String>,
    ) -> ClaimSpec {
        let cfg = &self.policy.config.claims;
        ClaimSpec {
            size: self
                .annotation(CLAIM_SIZE_ANNOTATION)
                .filter(|s| parse_quantity(s).is_some())
                .or(volume_size)
                .unwrap_or_else(|| cfg.size.clone()),
            storage_class: self
                .annotation(CLAIM_CLASS_ANNOTATION)
                .or(class)
                .or_else(|| cfg.storage_class.clone()),
            access_mode: self
                .annotation(CLAIM_ACCESS_ANNOTATION)
                .or(mode)
                .unwrap_or_else(|| cfg.access_mode.clone()),
        }
    }

    fn claim_name(&mut self, container: &str) -> String {
        self.claims_made += 1;
        let workload = &self.a.workload.name;
        let workload = workload.trim_end_matches('-');
        if let Some(name) = self.annotation(CLAIM_NAME_ANNOTATION) {
            return if self.claims_made == 1 {
                shorten(&name, 253)
            } else {
                shorten(&format!("{name}-{container}"), 253)
            };
        }
        let name = self
            .policy
            .config
            .claims
            .name_template
            .replace("{workload}", workload)
            .replace("{container}", container);
        shorten(&name, 253)
    }

    /// Backs `volume` with storage that outlives the pod: a claim template
    /// per replica in a StatefulSet, one claim otherwise. `replacing`: the
    /// volume exists (emptyDir or ephemeral) rather than being added.
    fn back_with_claim(&mut self, volume: &str, container: &str, spec: ClaimSpec, replacing: bool) {
        let size = spec.size.clone();
        if self.a.workload.kind == Kind::StatefulSet {
            let what = if replacing {
                format!(
                    "replaced volume {volume:?} with a volumeClaimTemplate of {size} per replica"
                )
            } else {
                format!("added a volumeClaimTemplate {volume:?} of {size} per replica")
            };
            self.did(Rule::EphemeralDataPath, what);
            self.changes.push(Change::ClaimTemplate {
                name: volume.to_string(),
                spec,
            });
        } else {
            let claim = self.claim_name(container);
            let what = if replacing {
                format!("volume {volume:?} now uses claim {claim:?} ({size})")
            } else {
                format!("added volume {volume:?} on claim {claim:?} ({size})")
            };
            self.did(Rule::EphemeralDataPath, what);
            self.changes.push(Change::ClaimVolume {
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
        let user = start_user(&self.a.workload, db);
        let c = db.container.name;
        let Some((uid, gid)) = user else {
            self.warnings.push(format!(
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
        let pod_non_root = self
            .a
            .workload
            .pod_security_context("runAsNonRoot")
            .and_then(Value::as_bool)
            == Some(true);
        let pod_fs_group = self.a.workload.pod_security_context("fsGroup").is_some();
        let use_fs_group = match mode {
            Permissions::FsGroup => true,
            Permissions::InitContainer => false,
            _ => pod_non_root || self.facts.restricted(),
        };
        if use_fs_group {
            if !pod_fs_group
                && !self
                    .changes
                    .iter()
                    .any(|c| matches!(c, Change::FsGroup { .. }))
            {
                self.changes.push(Change::FsGroup { gid });
                self.did(Rule::EphemeralDataPath, format!("set the pod's fsGroup to {gid} (OnRootMismatch) so user {uid} can write {path}"));
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

    /// Another container (or an init container) writes this volume too.
    fn other_writers(&self, db: &DbContainer<'_, '_>, volume: &str) -> Vec<String> {
        self.a
            .workload
            .containers()
            .iter()
            .filter(|c| !(c.list == db.container.list && c.index == db.container.index))
            .filter(|c| {
                c.mounts().iter().any(|m| {
                    m.get("name").and_then(Value::as_str) == Some(volume)
                        && m.get("readOnly").and_then(Value::as_bool) != Some(true)
                })
            })
            .map(|c| c.name.to_string())
            .collect()
    }

    fn plan_site(&mut self, si: usize) -> Result<(), String> {
        let a = self.a;
        let site = &a.sites[si];
        let db = &a.dbs[site.db];
        let c = db.container.name;
        let p = &site.placement;
        // Every change finds its container by name; one without a name of
        // its own (missing, not a string, shared) would be fixed again on
        // every call. The API server rejects such a pod after mutation anyway.
        let has_name =
            db.container.value.get("name").and_then(Value::as_str) == Some(c) && !c.is_empty();
        if !has_name
            || a.workload
                .containers()
                .iter()
                .filter(|o| o.name == c)
                .count()
                > 1
        {
            return Err(format!(
                "container {c:?} has no name of its own, so a fix could not find it again"
            ));
        }
        if db.pgdata_hidden {
            return Err(
                "PGDATA may come from envFrom or valueFrom, so where the data lands is unknown"
                    .into(),
            );
        }
        if p.per_pod_sub_path {
            return Err(
                "its subPathExpr names the pod; pvc-guard leaves that layout to you".into(),
            );
        }
        match (&p.backing, &p.mount) {
            (Backing::EmptyDir | Backing::GenericEphemeral, Some(m))
                if p.class == StorageClass::Ephemeral =>
            {
                let volume = m.volume_name.to_string();
                let writers = self.other_writers(db, &volume);
                if !writers.is_empty() {
                    return Err(format!(
                        "volume {volume:?} is also written by {}: a copy or restore on every start would overwrite the data",
                        writers.join(", ")
                    ));
                }
                let vol = a.workload.volume(&volume);
                let (size, class, mode) = match &p.backing {
                    Backing::GenericEphemeral => {
                        let t = vol.and_then(|v| at(v, "/ephemeral/volumeClaimTemplate/spec"));
                        let s = |ptr: &str| {
                            t.and_then(|t| at(t, ptr))
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        };
                        (
                            s("/resources/requests/storage"),
                            s("/storageClassName"),
                            s("/accessModes/0"),
                        )
                    }
                    _ => (
                        vol.and_then(|v| at(v, "/emptyDir/sizeLimit"))
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        None,
                        None,
                    ),
                };
                let spec = self.claim_spec(size, class, mode);
                self.back_with_claim(&volume, c, spec, true);
                // Postgres never initialises a file-system root (lost+found).
                let mut sub_path = m.sub_path.map(str::to_string);
                let only_mount = a
                    .workload
                    .containers()
                    .iter()
                    .map(|c| {
                        c.mounts()
                            .iter()
                            .filter(|mm| mm.get("name").and_then(Value::as_str) == Some(&volume))
                            .count()
                    })
                    .sum::<usize>()
                    == 1;
                if db.is_postgres()
                    && sub_path.is_none()
                    && db.pgdata.as_deref() == Some(m.mount_path.as_str())
                    && only_mount
                {
                    sub_path = Some("pgdata".into());
                    self.changes.push(Change::Mount {
                        container: c.to_string(),
                        volume: volume.clone(),
                        mount_path: m.mount_path.clone(),
                        sub_path: sub_path.clone(),
                    });
                }
                self.permissions(db, &volume, sub_path.as_deref(), &m.mount_path);
                Ok(())
            }
            (Backing::None, None) => {
                let target = if site.path.file {
                    let dir = p
                        .image_volume
                        .clone()
                        .unwrap_or_else(|| parent_dir(&site.path.path));
                    if image_populated_dir(&dir, db.container.working_dir()) {
                        return Err(format!(
                            "the database file sits in {dir}, a directory the image populates; move it into a directory of its own"
                        ));
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
                let family = db.family().unwrap_or("");
                if let Some(other) = db
                    .container
                    .mounts()
                    .iter()
                    .filter_map(|m| m.get("mountPath").and_then(Value::as_str))
                    .map(normalize_path)
                    .find(|mp| {
                        path_contains(&target, mp)
                            || self
                                .policy
                                .catalog
                                .by_distinctive_path(mp)
                                .is_some_and(|e| e.family == family)
                    })
                {
                    return Err(format!(
                        "the mount at {other} lands elsewhere than where the data goes and may hold data in another layout; move it to {target} yourself"
                    ));
                }
                let volume = shorten(&format!("pvc-guard-{c}"), 63);
                let existing_mount = self.changes.iter().any(|ch| matches!(ch, Change::Mount { container, mount_path, .. } if container == c && path_contains(mount_path, &target)));
                if existing_mount {
                    return Ok(());
                }
                let same_volume_mounts = self
                    .changes
                    .iter()
                    .filter(|ch| matches!(ch, Change::Mount { volume: v, .. } if *v == volume))
                    .count();
                let sub_path = if db.is_postgres() {
                    Some("pgdata".to_string())
                } else if same_volume_mounts > 0 {
                    Some(shorten(target.trim_start_matches('/'), 63))
                } else {
                    None
                };
                if same_volume_mounts == 0 {
                    let spec = self.claim_spec(None, None, None);
                    self.back_with_claim(&volume, c, spec, false);
                }
                self.did(
                    Rule::EphemeralDataPath,
                    format!("mounted it in container {c:?} at {target}"),
                );
                self.changes.push(Change::Mount {
                    container: c.to_string(),
                    volume: volume.clone(),
                    mount_path: target.clone(),
                    sub_path: sub_path.clone(),
                });
                self.permissions(db, &volume, sub_path.as_deref(), &target);
                Ok(())
            }
            (_, Some(m)) => Err(format!(
                "it sits under the mount at {} but lands elsewhere; the claim there may hold data in another layout, so pvc-guard does not move it",
                m.mount_path
            )),
            _ => Err("pvc-guard cannot tell how to fix this storage".into()),
        }
    }
}

/// What one planning pass decided.
struct Plan {
    changes: Vec<Change>,
    rules: Vec<Rule>,
    applied: Vec<String>,
    unfixed: Vec<String>,
    warnings: Vec<String>,
}

/// One pass: plan changes from an assessment.
fn plan(policy: &Policy, facts: &ClusterFacts, a: &Assessment<'_, '_>) -> Plan {
    let mut planner = Planner {
        policy,
        facts,
        a,
        changes: Vec::new(),
        rules: Vec::new(),
        applied: Vec::new(),
        unfixed: Vec::new(),
        warnings: Vec::new(),
        init_dirs: Vec::new(),
        claims_made: 0,
    };
    let ephemeral: Vec<(usize, String, String)> = a
        .findings
        .iter()
        .filter(|f| f.rule == Rule::EphemeralDataPath && f.severity == Severity::Deny)
        .filter_map(|f| Some((f.site?, f.container.clone(), f.path.clone())))
        .collect();
    if !ephemeral.is_empty() {
        match volume_names_unique(&a.workload).and_then(|()| fixable_kind(a)) {
            Err(why) => {
                for (_, c, p) in &ephemeral {
                    planner.unfixed.push(format!(
                        "[{}] container {c:?} {p}: {why}",
                        Rule::EphemeralDataPath
                    ));
                }
            }
            Ok(()) => {
                for (si, c, p) in &ephemeral {
                    match planner.plan_site(*si) {
                        Ok(()) => {
                            if !planner.rules.contains(&Rule::EphemeralDataPath) {
                                planner.rules.push(Rule::EphemeralDataPath);
                            }
                        }
                        Err(why) => planner.unfixed.push(format!(
                            "[{}] container {c:?} {p}: {why}",
                            Rule::EphemeralDataPath
                        )),
                    }
                }
            }
        }
    }
    // Recreate: single-replica Deployments with a claim at a data path.
    let rolling = a
        .findings
        .iter()
        .any(|f| f.rule == Rule::RollingUpdateClaim);
    if rolling && a.workload.kind == Kind::Deployment && a.workload.replicas() <= 1 {
        planner.changes.push(Change::Recreate);
        planner.rules.push(Rule::RollingUpdateClaim);
        planner.did(Rule::RollingUpdateClaim, "set strategy Recreate so two database processes never share the data directory during a rollout".into());
    }
    if !planner.init_dirs.is_empty() {
        let dirs = std::mem::take(&mut planner.init_dirs);
        planner.did(
            Rule::EphemeralDataPath,
            format!(
                "added init container {PERMISSIONS_CONTAINER} to set the owner of {}",
                dirs.iter()
                    .map(|d| d.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        planner.changes.push(Change::Permissions {
            image: policy.config.permissions_image.clone(),
            dirs,
        });
    }
    Plan {
        changes: planner.changes,
        rules: planner.rules,
        applied: planner.applied,
        unfixed: planner.unfixed,
        warnings: planner.warnings,
    }
}

/// The mutation on CREATE: fix what can be fixed safely.
pub fn mutate_create(
    policy: &Policy,
    object: &Value,
    facts: &ClusterFacts,
) -> Result<Mutation, Unreadable> {
    let mut m = Mutation::default();
    // Copied only once there is something to change.
    let mut fixed: Option<Value> = None;
    let mut record = Record::from_object(object).unwrap_or_default();
    let mut database_in_deployment = false;
    // The second pass judges the fixed object as the validator will: it
    // finds what the fix itself calls for (a new claim on a Deployment wants
    // Recreate) and what the fix did not cure (an image VOLUME below the new
    // mount shadows it). Two passes reach the fixed point.
    for _ in 0..2 {
        let current = fixed.as_ref().unwrap_or(object);
        let Some(a) = policy.evaluate(current, facts)? else {
            return Ok(m);
        };
        if a.workload.controller_owner().is_some() {
            return Ok(m);
        }
        database_in_deployment |= a
            .findings
            .iter()
            .any(|f| f.rule == Rule::DatabaseInDeployment);
        let Plan {
            changes,
            rules,
            applied,
            unfixed,
            warnings,
        } = plan(policy, facts, &a);
        let kind = a.workload.kind;
        drop(a);
        if m.unfixed.is_empty() {
            m.unfixed = unfixed;
        }
        m.warnings.extend(warnings);
        if changes.is_empty() {
            break;
        }
        if !object.get("metadata").is_some_and(Value::is_object) {
            m.unfixed.push("the object has no metadata to record a fix in, and a fix without its record could not be put back on UPDATE".into());
            break;
        }
        let target = fixed.get_or_insert_with(|| object.clone());
        for change in &changes {
            apply(target, kind, change);
        }
        m.applied.extend(applied);
        for r in rules {
            let id = r.id().to_string();
            if !record.rules.contains(&id) {
                record.rules.push(id);
            }
        }
        record.changes.extend(changes);
    }
    // Copied only on a change, so a copy means changes to record.
    let Some(mut fixed) = fixed else {
        return Ok(m);
    };
    set_annotation(
        &mut fixed,
        MUTATED_ANNOTATION,
        serde_json::to_string(&record).expect("record serializes"),
    );
    if database_in_deployment {
        set_annotation(
            &mut fixed,
            HINT_ANNOTATION,
            "a database runs in this Deployment; a StatefulSet gives each replica its own claim (pvc-guard convert prints one)".into(),
        );
        m.warnings.push(format!(
            "[{}] a database runs in this Deployment; `pvc-guard convert -f <file>` prints the equivalent StatefulSet",
            Rule::DatabaseInDeployment
        ));
    }
    m.record = record;
    m.patch = json_patch::diff(object, &fixed);
    m.fixed = Some(fixed);
    Ok(m)
}

/// Is every recorded claim mount (and claim volume) still in the object?
fn record_intact(object: &Value, kind: Kind, record: &Record) -> bool {
    let pod = at(object, kind.pod_spec_pointer());
    let pod_list = |key: &str| pod.and_then(|p| p.get(key));
    record.changes.iter().all(|change| match change {
        Change::ClaimVolume { volume, claim, .. } => entries_named(pod_list("volumes"), volume)
            .any(|v| {
                at(v, "/persistentVolumeClaim/claimName").and_then(Value::as_str) == Some(claim)
            }),
        Change::ClaimTemplate { name, .. } => at(object, "/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .is_some_and(|ts| {
                ts.iter()
                    .any(|t| at(t, "/metadata/name").and_then(Value::as_str) == Some(name))
            }),
        Change::Mount {
            container,
            volume,
            mount_path,
            sub_path,
        } => ["containers", "initContainers"]
            .into_iter()
            .flat_map(|list| entries_named(pod_list(list), container))
            .flat_map(|c| entries_named(c.get("volumeMounts"), volume))
            .any(|m| {
                m.get("mountPath")
                    .and_then(Value::as_str)
                    .map(normalize_path)
                    .as_deref()
                    == Some(mount_path.as_str())
                    && (sub_path.is_none()
                        || m.get("subPath").and_then(Value::as_str) == sub_path.as_deref())
            }),
        _ => true,
    })
}

/// The entries of a list field (volumes, containers, mounts) named `name`.
fn entries_named<'v>(list: Option<&'v Value>, name: &str) -> impl Iterator<Item = &'v Value> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |v| v.get("name").and_then(Value::as_str) == Some(name))
}

/// The mutation on UPDATE: nothing new; a recorded fix the new object lost
/// is put back exactly, so the pods keep the claim that holds the data.
pub fn mutate_update(old: &Value, new: &Value) -> Result<Mutation, Unreadable> {
    let mut m = Mutation::default();
    let Some(workload) = Workload::from_object(new)? else {
        return Ok(m);
    };
    if workload.controller_owner().is_some() {
        return Ok(m);
    }
    let kind = workload.kind;
    let Some(record) = Record::from_object(old) else {
        return Ok(m);
    };
    // Only what the old object really carries is put back: a record copied
    // along with a manifest can name changes its object never had, and
    // putting those back would, say, mount a volume that does not exist.
    let held = Record {
        rules: Vec::new(),
        changes: record
            .changes
            .iter()
            .filter(|c| {
                let one = Record {
                    rules: Vec::new(),
                    changes: vec![(*c).clone()],
                };
                record_intact(old, kind, &one)
            })
            .cloned()
            .collect(),
    };
    if record_intact(new, kind, &held) {
        return Ok(m);
    }
    let mut fixed = new.clone();
    for change in &held.changes {
        apply(&mut fixed, kind, change);
    }
    set_annotation(
        &mut fixed,
        MUTATED_ANNOTATION,
        serde_json::to_string(&record).expect("record serializes"),
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
    m.patch = json_patch::diff(new, &fixed);
    m.fixed = Some(fixed);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shortened_with_a_hash() {
        let long = "a".repeat(80);
        let s = shorten(&format!("pvc-guard-{long}"), 63);
        assert_eq!(s.len(), 63);
        assert!(s.starts_with("pvc-guard-aaa"));
        assert_ne!(s, shorten(&format!("pvc-guard-{long}b"), 63));
        assert_eq!(shorten("pvc-guard-db", 63), "pvc-guard-db");
    }

    #[test]
    fn quantities() {
        assert!(parse_quantity("10Gi").is_some());
        assert!(parse_quantity("1.5T").is_some());
        assert!(parse_quantity("1e3").is_some());
        assert!(parse_quantity("ten").is_none());
        assert!(parse_quantity("10GB").is_none());
    }
}
