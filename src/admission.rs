//! AdmissionReview in, AdmissionResponse out. Pure: modes, UPDATE rules,
//! warnings and dry-run are decided here; the server only moves bytes.

use std::collections::BTreeSet;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::config::Mode;
use crate::mutate::{self, Mutation};
use crate::policy::workload::controller_owner;
use crate::policy::{ClusterFacts, Finding, Policy, Rule, Severity};

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// What to answer when the policy cannot read an object (or panics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailureMode {
    /// Admit, with a warning that says why.
    #[default]
    Allow,
    Deny,
}

/// The body is not an AdmissionReview pvc-guard can answer at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed request: the typed envelope and the raw objects.
#[derive(Debug, Clone)]
pub struct Request {
    pub request: AdmissionRequest<DynamicObject>,
    /// `request.object` exactly as sent: never a typed round-trip.
    pub object: Option<Value>,
    pub old_object: Option<Value>,
}

impl Request {
    pub fn namespace(&self) -> Option<&str> {
        self.request.namespace.as_deref().filter(|s| !s.is_empty())
    }
}

/// Parses an AdmissionReview v1 body.
pub fn parse(body: &[u8]) -> Result<Request, BadRequest> {
    let mut review: Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("the body is not valid JSON: {e}")))?;
    let Some(map) = review.as_object_mut() else {
        return Err(BadRequest("the body is not a JSON object".into()));
    };
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(BadRequest(format!(
                "unsupported apiVersion {other:?}: pvc-guard answers {API_VERSION} AdmissionReviews only (set admissionReviewVersions: [v1])"
            )));
        }
        None => {
            return Err(BadRequest(
                "the body has no apiVersion; expected an AdmissionReview".into(),
            ));
        }
    }
    if map.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err(BadRequest("the body's kind is not AdmissionReview".into()));
    }
    let Some(request) = map.get_mut("request").and_then(Value::as_object_mut) else {
        return Err(BadRequest("the AdmissionReview has no request".into()));
    };
    match request.get("uid").and_then(Value::as_str) {
        Some(uid) if !uid.is_empty() => {}
        _ => return Err(BadRequest("the AdmissionReview request has no uid".into())),
    }
    let take = |r: &mut serde_json::Map<String, Value>, key: &str| match r.remove(key) {
        Some(Value::Null) | None => None,
        Some(v) => Some(v),
    };
    let object = take(request, "object");
    let old_object = take(request, "oldObject");
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review)
        .map_err(|e| BadRequest(format!("the AdmissionReview request is malformed: {e}")))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| BadRequest("the AdmissionReview has no request".into()))?;
    Ok(Request {
        request,
        object,
        old_object,
    })
}

/// The effect of an answer, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Warn,
    Deny,
    /// Mutated (a patch was returned).
    Patch,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Warn => "warn",
            Decision::Deny => "deny",
            Decision::Patch => "patch",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub response: AdmissionResponse,
    pub decision: Decision,
    /// Every finding's rule, including those audit mode only logs.
    pub rules: Vec<Rule>,
    pub mode: Mode,
    /// Why the object could not be judged, if it could not.
    pub error: Option<String>,
}

impl Verdict {
    /// The AdmissionReview body. kube-core serializes `patch` as an array
    /// of numbers; the API server's own types (Go `[]byte`) use base64, which
    /// is also a quarter of the size, so the patch is written that way.
    pub fn to_json(&self) -> Vec<u8> {
        use base64::Engine;
        // The patch is taken out first: left in, every byte of it would
        // become a JSON number Value only to be replaced.
        let mut response = self.response.clone();
        let patch = response.patch.take();
        let mut review =
            serde_json::to_value(response.into_review()).expect("an AdmissionReview serializes");
        if let Some(patch) = patch {
            review["response"]["patch"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
        }
        serde_json::to_vec(&review).expect("a JSON value serializes")
    }
}

fn allow(req: &Request) -> Verdict {
    Verdict {
        response: AdmissionResponse::from(&req.request),
        decision: Decision::Allow,
        rules: Vec::new(),
        mode: Mode::Enforce,
        error: None,
    }
}

/// The answer when the object cannot be judged: per the failure mode.
pub fn failure(req: &Request, why: &str, mode: FailureMode) -> Verdict {
    let mut v = allow(req);
    v.error = Some(why.to_string());
    match mode {
        FailureMode::Allow => {
            v.response.warnings = Some(vec![format!("[pvc-guard] not checked: {why}")]);
            v.decision = Decision::Warn;
        }
        FailureMode::Deny => {
            v.response = v
                .response
                .deny(format!("[pvc-guard] cannot check this object: {why}"));
            v.response.result.code = 400;
            v.decision = Decision::Deny;
        }
    }
    v
}

/// Nothing to judge: deletes, subresources, excluded or ignored namespaces.
fn out_of_scope(policy: &Policy, req: &Request, facts: &ClusterFacts) -> bool {
    let r = &req.request;
    matches!(r.operation, Operation::Delete | Operation::Connect)
        || r.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
        || req
            .namespace()
            .is_some_and(|ns| policy.config.excluded_namespaces.iter().any(|e| e == ns))
        || facts.namespace_ignored()
}

/// An owned object: `Some(true)` when its owner is a built-in workload kind
/// (the owner was checked), `Some(false)` for any other owner (an operator).
fn owned_by_builtin(object: &Value) -> Option<bool> {
    let (api_version, kind) = controller_owner(object)?;
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let builtin_group = matches!(group, "" | "apps" | "batch");
    Some(
        builtin_group
            && crate::policy::Kind::from_kind(kind).is_some_and(|k| k != crate::policy::Kind::Pod),
    )
}

/// The findings that count for one object, once owners and UPDATE
/// semantics are applied. `Ok(None)`: nothing to judge (not a workload, or
/// owned by a built-in workload whose owner was checked).
pub fn judge(
    policy: &Policy,
    object: &Value,
    old_object: Option<&Value>,
    facts: &ClusterFacts,
    mut mode: Mode,
) -> Result<Option<(Vec<Finding>, Mode)>, crate::policy::Unreadable> {
    match owned_by_builtin(object) {
        Some(true) => return Ok(None),
        Some(false) => mode = Mode::Warn,
        None => {}
    }
    let Some(assessment) = policy.evaluate(object, facts)? else {
        return Ok(None);
    };
    let mut findings = assessment.findings;
    if mode == Mode::Warn {
        for f in &mut findings {
            f.severity = Severity::Warn;
        }
    }
    // UPDATE: a violation the old object already had is allowed with a warning.
    if let Some(Ok(Some(old))) = old_object.map(|o| policy.evaluate(o, facts)) {
        let inherited: BTreeSet<_> = old
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Deny)
            .map(|f| (f.rule, f.container.clone(), f.path.clone()))
            .collect();
        for f in findings.iter_mut().filter(|f| f.severity == Severity::Deny) {
            if inherited.contains(&(f.rule, f.container.clone(), f.path.clone())) {
                f.severity = Severity::Warn;
                f.short = format!(
                    "{} (it was there before this update, so it is allowed)",
                    f.short
                );
            }
        }
    }
    Ok(Some((findings, mode)))
}

/// The validating webhook.
pub fn validate(
    policy: &Policy,
    req: &Request,
    facts: &ClusterFacts,
    failure_mode: FailureMode,
) -> Verdict {
    if out_of_scope(policy, req, facts) {
        return allow(req);
    }
    let Some(object) = req.object.as_ref() else {
        return failure(req, "the request carries no object", failure_mode);
    };
    let old = match req.request.operation {
        Operation::Update => req.old_object.as_ref(),
        _ => None,
    };
    let (findings, mode) = match judge(policy, object, old, facts, facts.mode(&policy.config)) {
        Ok(Some(j)) => j,
        Ok(None) => return allow(req),
        Err(e) => return failure(req, &e.0, failure_mode),
    };
    let mut v = allow(req);
    v.rules = findings.iter().map(|f| f.rule).collect();
    v.mode = mode;
    match mode {
        Mode::Audit => {}
        Mode::Warn => {
            v.response.warnings = warnings(findings.iter());
        }
        Mode::Enforce => {
            let denied: Vec<&Finding> = findings
                .iter()
                .filter(|f| f.severity == Severity::Deny)
                .collect();
            v.response.warnings =
                warnings(findings.iter().filter(|f| f.severity == Severity::Warn));
            if !denied.is_empty() {
                let message = denied
                    .iter()
                    .map(|f| f.message.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                v.response = v.response.deny(message);
                v.response.result.code = 403;
                v.response.result.reason = "Forbidden".into();
                v.decision = Decision::Deny;
                return v;
            }
        }
    }
    if v.response.warnings.is_some() {
        v.decision = Decision::Warn;
    }
    v
}

fn warnings<'f>(findings: impl Iterator<Item = &'f Finding>) -> Option<Vec<String>> {
    let w: Vec<String> = findings.map(Finding::warning).collect();
    (!w.is_empty()).then_some(w)
}

/// The mutating webhook: fixes on CREATE, puts a lost fix back on UPDATE.
pub fn mutate(
    policy: &Policy,
    req: &Request,
    facts: &ClusterFacts,
    failure_mode: FailureMode,
) -> Verdict {
    if out_of_scope(policy, req, facts) || !facts.mutation_enabled(&policy.config) {
        return allow(req);
    }
    let Some(object) = req.object.as_ref() else {
        return failure(req, "the request carries no object", failure_mode);
    };
    // Owned objects are never mutated: their controller would fight it.
    if controller_owner(object).is_some() {
        return allow(req);
    }
    let result = match req.request.operation {
        Operation::Create => mutate::mutate_create(policy, object, facts),
        Operation::Update => match req.old_object.as_ref() {
            Some(old) => mutate::mutate_update(old, object),
            None => Ok(Mutation::default()),
        },
        _ => Ok(Mutation::default()),
    };
    let m = match result {
        Ok(m) => m,
        Err(e) => return failure(req, &e.0, failure_mode),
    };
    let mut v = allow(req);
    let mut w: Vec<String> = m.applied.clone();
    w.extend(m.warnings.iter().cloned());
    if !m.is_empty() {
        v.response = v
            .response
            .with_patch(m.patch.clone())
            .expect("a JSON patch serializes");
        v.decision = Decision::Patch;
        v.rules = m
            .record
            .rules
            .iter()
            .filter_map(|r| Rule::from_id(r))
            .collect();
    }
    if !w.is_empty() {
        v.response.warnings = Some(
            w.iter()
                .map(|s| crate::policy::rules::truncate(s, crate::policy::rules::WARNING_LIMIT))
                .collect(),
        );
        if v.decision == Decision::Allow {
            v.decision = Decision::Warn;
        }
    }
    v
}

/// Answers one parsed request at an endpoint. The caller supplies cluster
/// facts for the request's namespace.
pub fn review(
    policy: &Policy,
    endpoint: Endpoint,
    req: &Request,
    facts: &ClusterFacts,
    failure_mode: FailureMode,
) -> Verdict {
    match endpoint {
        Endpoint::Validate => validate(policy, req, facts, failure_mode),
        Endpoint::Mutate => mutate(policy, req, facts, failure_mode),
    }
}
