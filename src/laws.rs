//! What must hold for any input: the four laws of the mutation (DESIGN.md
//! section 4) and the contract of the admission handler for any body.
//!
//! It lives in the library rather than in `tests/` because several callers
//! must agree on what "holds" means: the property tests (tests/laws.rs), the
//! fuzz targets (fuzz/, a separate crate that cannot see `tests/`) and the
//! replay of every fuzz crash (tests/fuzz_regressions.rs). One
//! implementation means a law tightened for one is tightened for all, and a
//! crash input replays as a regression test unchanged.

use serde_json::Value;

use crate::admission::{self, Endpoint, FailureMode};
use crate::mutate::{mutate_create, mutate_update};
use crate::policy::workload::{at, controller_owner};
use crate::policy::{ClusterFacts, Policy, Rule, Severity};

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
    !at(object, path).is_some_and(Value::is_object)
        && value.as_object().is_some_and(|fields| {
            fields.keys().all(|k| {
                let k = k.replace('~', "~0").replace('/', "~1");
                owned(&format!("{path}/{k}"))
            })
        })
}

/// [`check_with`] without cluster facts (the offline case).
pub fn check(policy: &Policy, object: &Value) -> Result<(), String> {
    check_with(policy, object, &ClusterFacts::default())
}

/// Checks the four laws for the CREATE mutation of `object`, and that an
/// UPDATE which drops the fix gets it back. `Err` names the broken law.
///
/// An object the policy cannot read passes: the webhook answers it per the
/// failure mode, and there is no fix whose laws could break.
pub fn check_with(policy: &Policy, object: &Value, facts: &ClusterFacts) -> Result<(), String> {
    let Ok(m) = mutate_create(policy, object, facts) else {
        return Ok(());
    };
    // 0. A fixed object comes with a patch, and the only fix without one
    // changed nothing.
    if m.fixed.is_none() != m.patch.0.is_empty() || (m.fixed.is_none() && !m.applied.is_empty()) {
        return Err(format!(
            "law 0: fixed object {}, patch of {} operations, {} changes applied",
            if m.fixed.is_some() { "set" } else { "absent" },
            m.patch.0.len(),
            m.applied.len()
        ));
    }
    let fixed = m.fixed_or(object);
    // 1. The patch applied to the original gives exactly the fixed object.
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &m.patch)
        .map_err(|e| format!("law 1: the patch does not apply: {e}"))?;
    if patched != *fixed {
        return Err(format!(
            "law 1: the patched object differs from the fixed one\npatched: {patched}\nfixed:   {}",
            fixed
        ));
    }
    // 2. Mutating the fixed object again changes nothing.
    let again = mutate_create(policy, fixed, facts)
        .map_err(|e| format!("law 2: the fixed object is unreadable: {}", e.0))?;
    if !again.patch.0.is_empty() {
        return Err(format!("law 2: second patch {:?}", again.patch));
    }
    // 3. No deny finding the mutation could fix is left. An object with a
    // controller is never mutated (its controller would fight the change),
    // so nothing on it is a finding the mutation could fix.
    if m.unfixed.is_empty() && controller_owner(object).is_none() {
        let assessment = policy
            .evaluate(fixed, facts)
            .map_err(|e| format!("law 3: the fixed object is unreadable: {}", e.0))?;
        if let Some(a) = assessment {
            let left: Vec<_> = a
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Deny && f.rule == Rule::EphemeralDataPath)
                .map(|f| f.message.clone())
                .collect();
            if !left.is_empty() {
                return Err(format!("law 3: left after the fix: {left:?}"));
            }
        }
    }
    // 4. Every field the mutation does not own is unchanged.
    for op in &m.patch.0 {
        let op = serde_json::to_value(op).map_err(|e| e.to_string())?;
        let path = op["path"].as_str().unwrap_or_default();
        if !owned(path) && !owned_parent(object, path, &op["value"]) {
            return Err(format!("law 4: the mutation touched {path}"));
        }
    }
    // An UPDATE that drops the fix (a GitOps re-apply) gets it back.
    if !m.patch.0.is_empty() {
        let restored = mutate_update(fixed, object)
            .map_err(|e| format!("update: the original is unreadable: {}", e.0))?;
        let mut back = object.clone();
        json_patch::patch(&mut back, &restored.patch)
            .map_err(|e| format!("update: the restoring patch does not apply: {e}"))?;
        let denies = |o: &Value| -> Result<usize, String> {
            Ok(policy
                .evaluate(o, facts)
                .map_err(|e| format!("update: unreadable: {}", e.0))?
                .map_or(0, |a| {
                    a.findings
                        .iter()
                        .filter(|f| f.severity == Severity::Deny)
                        .count()
                }))
        };
        let (still, before) = (denies(&back)?, denies(fixed)?);
        if still != before {
            return Err(format!(
                "update: the restored object has {still} deny findings, the fixed one {before}"
            ));
        }
    }
    Ok(())
}

/// The handler's contract for an arbitrary request body, as the server runs
/// it (`admission::parse`, then `admission::review`, then `to_json`) for both
/// endpoints and both failure modes: a body `parse` accepts gets a valid
/// AdmissionReview v1 carrying the request's uid, and a patch, if any, is a
/// JSON Patch that applies to the object sent. Panics are left to escape so
/// a fuzzer sees them: the server's `catch_unwind` would hide a bug as a
/// failure-mode answer.
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
            if answer["response"]["uid"] != request.request.uid.as_str() {
                return Err(format!("{endpoint:?}: the answer lost the uid: {answer}"));
            }
            if let Some(patch) = answer["response"]["patch"].as_str() {
                check_patch(patch, request.object.as_ref())
                    .map_err(|e| format!("{endpoint:?}: {e}"))?;
            }
        }
    }
    Ok(())
}

fn check_patch(patch: &str, object: Option<&Value>) -> Result<(), String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JSON Patch: {e}"))?;
    let mut object = object
        .cloned()
        .ok_or("a patch for a request without an object")?;
    json_patch::patch(&mut object, &patch).map_err(|e| format!("the patch does not apply: {e}"))
}
