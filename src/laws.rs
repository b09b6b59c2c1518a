//! What must hold for any input: the laws of the mutation
//! (docs/architecture.md, "The mutation and its laws") and the contract of
//! the admission handler for any body.
//!
//! It lives in the library rather than in `tests/` because several callers
//! must agree on what "holds" means: the property tests (tests/laws.rs), the
//! fuzz targets (fuzz/, a separate crate that cannot see `tests/`) and the
//! replay of every fuzz crash (tests/fuzz_regressions.rs).
//!
//! The oracle is independent of the code under test: [`reference_apply`]
//! makes each change to the object as a JSON tree, the way the first
//! version of pvc-guard did, and the emitted patch applied to the original
//! must give exactly that tree. `json_patch::diff` then shows which fields
//! changed, and every one must be a field the mutation owns.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::admission::{self, Endpoint, FailureMode};
use crate::k8s::normalize_path;
use crate::model::{Kind, Object, Workload};
use crate::mutate::{Mutation, mutate_create, mutate_update};
use crate::policy::{ClusterFacts, Policy, Rule, Severity};
use crate::record::{
    Change, ClaimSpec, HINT_ANNOTATION, MUTATED_ANNOTATION, permissions_container,
};

/// Paths the mutation may change: everything else must be untouched.
pub fn owned(path: &str) -> bool {
    path.starts_with("/metadata/annotations")
        || path.starts_with("/spec/strategy")
        || path.starts_with("/spec/volumeClaimTemplates")
        || path.contains("/volumes")
        || path.contains("/volumeMounts")
        || path.contains("/initContainers")
        || path.contains("/securityContext/fsGroup")
}

/// An owned field whose parent object did not exist (or was not an object)
/// is written as the whole parent (`add /spec/securityContext {"fsGroup": ..}`):
/// allowed when nothing of the user's was there and every key is owned.
fn owned_parent(object: &Value, path: &str, value: &Value) -> bool {
    !object.pointer(path).is_some_and(Value::is_object)
        && value.as_object().is_some_and(|fields| {
            fields.keys().all(|k| {
                let k = k.replace('~', "~0").replace('/', "~1");
                owned(&format!("{path}/{k}"))
            })
        })
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
    json!({"metadata": {"name": name}, "spec": spec.claim_spec()})
}

/// Makes one change to an object held as a JSON tree: the reference the
/// emitted patch is checked against.
pub fn reference_apply(object: &mut Value, kind: Kind, change: &Change) {
    if let Change::ClaimTemplate { name, spec } = change
        && let Some(spec_map) = object.get_mut("spec").and_then(Value::as_object_mut)
    {
        let templates = array_mut(spec_map, "volumeClaimTemplates");
        let exists = templates
            .iter()
            .any(|t| t.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
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
    let Some(pod) = object
        .pointer_mut(kind.pod_spec_pointer())
        .and_then(Value::as_object_mut)
    else {
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
            inits.insert(0, init);
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

/// The object as the mutation's plan describes it, made by the reference.
pub fn planned(object: &Value, kind: Kind, m: &Mutation) -> Value {
    let mut fixed = object.clone();
    if m.patch.is_empty() {
        return fixed;
    }
    for change in &m.changes {
        reference_apply(&mut fixed, kind, change);
    }
    set_annotation(&mut fixed, MUTATED_ANNOTATION, m.record.to_annotation());
    if m.hint {
        set_annotation(&mut fixed, HINT_ANNOTATION, crate::mutate::HINT.into());
    }
    fixed
}

/// The emitted patch applied to `object`.
pub fn patched(object: &Value, m: &Mutation) -> Result<Value, String> {
    m.apply_to(object)
}

fn workload_of(object: &Value) -> Option<Workload> {
    match Object::from_value(object) {
        Ok(Object::Workload(w)) => Some(*w),
        _ => None,
    }
}

/// [`check_with`] without cluster facts (the offline case).
pub fn check(policy: &Policy, object: &Value) -> Result<(), String> {
    check_with(policy, object, &ClusterFacts::default())
}

/// Checks the laws for the CREATE mutation of `object`, and that an
/// UPDATE which drops the fix gets it back. `Err` names the broken law.
///
/// An object the policy cannot read passes: the webhook answers it per the
/// failure mode, and there is no fix whose laws could break.
pub fn check_with(policy: &Policy, object: &Value, facts: &ClusterFacts) -> Result<(), String> {
    let Some(w) = workload_of(object) else {
        return Ok(());
    };
    // Owned objects are never mutated, whoever writes them.
    if w.controller_owner().is_some() {
        let body = json!({"apiVersion": admission::API_VERSION, "kind": "AdmissionReview",
            "request": {"uid": "law", "operation": "CREATE", "userInfo": {"username": "admin"},
                "kind": {"group": "", "version": "v1", "kind": "Pod"}, "object": object}});
        let req = admission::parse(body.to_string().as_bytes()).map_err(|e| e.to_string())?;
        let v = admission::review(policy, Endpoint::Mutate, &req, facts, FailureMode::Allow);
        if v.response.patch.is_some() {
            return Err("law 0: an owned object was mutated".into());
        }
        return Ok(());
    }
    let m = mutate_create(policy, &w, facts);
    // 0. A mutation that says it changed something comes with a patch.
    if m.patch.is_empty() && !m.applied.is_empty() {
        return Err(format!(
            "law 0: {} changes applied but no patch",
            m.applied.len()
        ));
    }
    // 1. The patch applied to the original gives exactly the planned object.
    let fixed = patched(object, &m).map_err(|e| format!("law 1: {e}"))?;
    let planned = planned(object, w.kind, &m);
    if fixed != planned {
        let diff = json_patch::diff(&planned, &fixed);
        return Err(format!(
            "law 1: the patched object differs from the planned one: {}",
            serde_json::to_string(&diff).unwrap_or_default()
        ));
    }
    // 2. Mutating the fixed object again changes nothing.
    let again = workload_of(&fixed).ok_or("law 2: the fixed object is not a workload")?;
    let second = mutate_create(policy, &again, facts);
    if !second.patch.is_empty() {
        return Err(format!(
            "law 2: second patch {}",
            String::from_utf8_lossy(&second.patch_json())
        ));
    }
    // 3. No deny finding the mutation could fix is left.
    if m.unfixed.is_empty() {
        let a = policy.evaluate(&again, facts);
        let left: Vec<_> = a
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Deny && f.rule == Rule::EphemeralDataPath)
            .map(|f| f.message())
            .collect();
        if !left.is_empty() {
            return Err(format!("law 3: left after the fix: {left:?}"));
        }
    }
    // 4. Every field the mutation does not own is unchanged.
    for op in json_patch::diff(object, &fixed).0 {
        let op = serde_json::to_value(&op).map_err(|e| e.to_string())?;
        let path = op["path"].as_str().unwrap_or_default();
        if !owned(path) && !owned_parent(object, path, &op["value"]) {
            return Err(format!("law 4: the mutation touched {path}"));
        }
    }
    // 5. One claim backs one volume: no claim the fix names is mounted by
    // a second volume of the pod, and none by no volume.
    let mut mounted: BTreeMap<String, usize> = BTreeMap::new();
    for claim in again.claim_names() {
        *mounted.entry(claim.to_string()).or_default() += 1;
    }
    for change in &m.changes {
        if let Change::ClaimVolume { claim, .. } = change
            && mounted.get(claim).copied().unwrap_or(0) > 1
        {
            return Err(format!("law 5: claim {claim:?} backs two volumes"));
        }
        // And one volume gets one claim: a claim the record names that no
        // volume uses would still be created, and hold nothing.
        if let Change::ClaimVolume { claim, volume, .. } = change
            && !mounted.contains_key(claim)
        {
            return Err(format!(
                "law 5: claim {claim:?}, made for volume {volume:?}, backs no volume"
            ));
        }
    }
    // 6. The record the fix writes is one the UPDATE path trusts whole:
    // every claim and name in it is one pvc-guard would write, so a
    // re-apply can put it back.
    let (_, distrusted) = crate::mutate::trusted(&m.record, policy);
    if let Some(first) = distrusted.first() {
        return Err(format!(
            "law 6: the fix wrote an entry it distrusts: {first}"
        ));
    }
    // 7. Container names stay unique (across both lists, as the API server
    // checks): the fix adds no second container of a name.
    let names = |o: &Value| -> BTreeMap<String, usize> {
        let mut n = BTreeMap::new();
        let spec = o.pointer(w.kind.pod_spec_pointer());
        for list in ["containers", "initContainers"] {
            for c in spec
                .and_then(|s| s.get(list))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = c.get("name").and_then(Value::as_str) {
                    *n.entry(name.to_string()).or_default() += 1;
                }
            }
        }
        n
    };
    let before = names(object);
    for (name, count) in names(&fixed) {
        if count > 1 && count > before.get(&name).copied().unwrap_or(0) {
            return Err(format!(
                "law 7: the fix added a second container named {name:?}"
            ));
        }
    }
    // An UPDATE that drops the fix (a GitOps re-apply) gets it back.
    if !m.patch.is_empty() {
        let restored = mutate_update(policy, facts, &again, &w);
        let back = patched(object, &restored).map_err(|e| format!("update: {e}"))?;
        let denies = |o: &Value| -> usize {
            workload_of(o).map_or(0, |w| {
                policy
                    .evaluate(&w, facts)
                    .findings
                    .iter()
                    .filter(|f| f.severity == Severity::Deny)
                    .count()
            })
        };
        let (still, before) = (denies(&back), denies(&fixed));
        if still != before {
            return Err(format!(
                "update: the restored object has {still} deny findings, the fixed one {before}"
            ));
        }
        // 9. A storage change a person made wins: where an UPDATE points the
        // fix's volume at another claim, nothing is put back over it.
        let volumes_at = format!("{}/volumes", w.kind.pod_spec_pointer());
        let theirs = json!("a-claim-a-person-chose");
        for change in &m.changes {
            let Change::ClaimVolume { volume, .. } = change else {
                continue;
            };
            let mut changed = fixed.clone();
            let Some(volumes) = changed
                .pointer_mut(&volumes_at)
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for v in volumes
                .iter_mut()
                .filter(|v| v.get("name").and_then(Value::as_str) == Some(volume))
            {
                *v = json!({"name": volume, "persistentVolumeClaim": {"claimName": theirs}});
            }
            let Some(view) = workload_of(&changed) else {
                continue;
            };
            let update = mutate_update(policy, facts, &again, &view);
            let after = patched(&changed, &update).map_err(|e| format!("law 9: {e}"))?;
            let kept = after
                .pointer(&volumes_at)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v.get("name").and_then(Value::as_str) == Some(volume))
                .all(|v| v.pointer("/persistentVolumeClaim/claimName") == Some(&theirs));
            if !kept {
                return Err(format!(
                    "law 9: an update put pvc-guard's claim back over the one a person chose for volume {volume:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The claims a fix of `object` adds, by name.
pub fn new_claims(policy: &Policy, object: &Value, facts: &ClusterFacts) -> Vec<String> {
    let Some(w) = workload_of(object) else {
        return Vec::new();
    };
    if w.controller_owner().is_some() {
        return Vec::new();
    }
    mutate_create(policy, &w, facts)
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::ClaimVolume { claim, .. } => Some(claim.clone()),
            _ => None,
        })
        .collect()
}

/// No generated claim name is shared by two workloads of one namespace:
/// the fixes of `a` and `b` (different objects, neither naming its claim
/// by annotation) add no claim of the same name.
pub fn check_distinct(policy: &Policy, a: &Value, b: &Value) -> Result<(), String> {
    let key = |o: &Value| {
        (
            o["kind"].clone(),
            o.pointer("/metadata/namespace").cloned(),
            o.pointer("/metadata/name").cloned(),
        )
    };
    let named = |o: &Value| {
        o.pointer("/metadata/annotations/pvc-guard.io~1claim-name")
            .is_some()
            || o.pointer("/spec/template/metadata/annotations/pvc-guard.io~1claim-name")
                .is_some()
    };
    if key(a) == key(b) || named(a) || named(b) {
        return Ok(());
    }
    let facts = ClusterFacts::default();
    let ca = new_claims(policy, a, &facts);
    let cb = new_claims(policy, b, &facts);
    match ca.iter().find(|c| cb.contains(c)) {
        Some(shared) => Err(format!(
            "law 8: two workloads get claim {shared:?}: {} and {}",
            key(a).2.unwrap_or_default(),
            key(b).2.unwrap_or_default()
        )),
        None => Ok(()),
    }
}

/// The handler's contract for an arbitrary request body, as the server runs
/// it (`admission::parse`, then `admission::review`, then `to_json`) for both
/// endpoints and both failure modes: a body `parse` accepts gets a valid
/// AdmissionReview v1 carrying the request's uid, and a patch, if any, is a
/// JSON Patch that applies to the object sent. Panics are left to escape so
/// a fuzzer sees them.
pub fn check_answer(policy: &Policy, body: &[u8]) -> Result<(), String> {
    let Ok(request) = admission::parse(body) else {
        return Ok(());
    };
    let facts = ClusterFacts::default();
    for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
        for mode in [FailureMode::Allow, FailureMode::Deny] {
            let verdict = admission::review(policy, endpoint, &request, &facts, mode);
            let answer: Value = serde_json::from_slice(&verdict.to_json())
                .map_err(|e| format!("{endpoint:?}: the answer is not JSON: {e}"))?;
            if answer["apiVersion"] != admission::API_VERSION || answer["kind"] != "AdmissionReview"
            {
                return Err(format!("{endpoint:?}: not an AdmissionReview v1: {answer}"));
            }
            if answer["response"]["uid"] != request.uid.as_str() {
                return Err(format!("{endpoint:?}: the answer lost the uid: {answer}"));
            }
            // A string escape the grammar allows but no Rust string holds (a
            // lone surrogate, in a field the view skips) makes the body
            // unreadable as a tree: there is then no object to check the patch
            // against. The API server never sends one (Go writes U+FFFD).
            if let Some(patch) = answer["response"]["patch"].as_str()
                && let Ok(tree) = serde_json::from_slice::<Value>(body)
            {
                let object = tree
                    .pointer("/request/object")
                    .ok_or("a patch for a request without an object")?;
                check_patch(patch, object).map_err(|e| format!("{endpoint:?}: {e}"))?;
            }
        }
    }
    Ok(())
}

fn check_patch(patch: &str, object: &Value) -> Result<(), String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JSON Patch: {e}"))?;
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch).map_err(|e| format!("the patch does not apply: {e}"))
}
