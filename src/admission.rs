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
///
/// One pass into the envelope's fields and the two objects, without the
/// objects' `metadata.managedFields`: the policy never reads them and the
/// mutation never writes them, so the patch is the same without them, and
/// they are a third of a typical object's nodes, each one parsed, cloned,
/// diffed and freed for nothing. Any body this pass refuses (a type error,
/// duplicate keys, not JSON at all) goes through [`parse_exactly`], which
/// takes what Go's decoder takes and says precisely what is wrong.
pub fn parse(body: &[u8]) -> Result<Request, BadRequest> {
    let answerable = serde_json::from_slice::<wire::Review>(body)
        .ok()
        .filter(|r| {
            r.api_version.as_deref() == Some(API_VERSION)
                && r.kind.as_deref() == Some("AdmissionReview")
        })
        .and_then(|r| r.request)
        .filter(|r| !r.uid.is_empty());
    let Some(r) = answerable else {
        return parse_exactly(body);
    };
    let request = AdmissionRequest {
        types: kube::core::TypeMeta {
            api_version: API_VERSION.into(),
            kind: "AdmissionReview".into(),
        },
        uid: r.uid,
        kind: r.kind,
        resource: r.resource,
        sub_resource: r.sub_resource,
        request_kind: r.request_kind,
        request_resource: r.request_resource,
        request_sub_resource: r.request_sub_resource,
        name: r.name,
        namespace: r.namespace,
        operation: r.operation,
        user_info: r.user_info,
        object: None,
        old_object: None,
        dry_run: r.dry_run,
        options: None,
    };
    Ok(Request {
        request,
        object: r.object.map(|o| o.0),
        old_object: r.old_object.map(|o| o.0),
    })
}

/// The AdmissionReview as the API server sends it, read in one pass.
mod wire {
    use std::fmt;

    use k8s_openapi::api::authentication::v1::UserInfo;
    use kube::core::admission::Operation;
    use kube::core::{GroupVersionKind, GroupVersionResource};
    use serde::Deserialize;
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    #[derive(Deserialize)]
    pub struct Review {
        #[serde(rename = "apiVersion")]
        pub api_version: Option<String>,
        pub kind: Option<String>,
        pub request: Option<Request>,
    }

    /// kube-core's `AdmissionRequest`, field for field, but for the objects.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Request {
        pub uid: String,
        pub kind: GroupVersionKind,
        pub resource: GroupVersionResource,
        #[serde(default)]
        pub sub_resource: Option<String>,
        #[serde(default)]
        pub request_kind: Option<GroupVersionKind>,
        #[serde(default)]
        pub request_resource: Option<GroupVersionResource>,
        #[serde(default)]
        pub request_sub_resource: Option<String>,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub namespace: Option<String>,
        pub operation: Operation,
        pub user_info: UserInfo,
        #[serde(default)]
        pub object: Option<Object>,
        #[serde(default)]
        pub old_object: Option<Object>,
        #[serde(default)]
        pub dry_run: bool,
    }

    /// An object as sent, but for `metadata.managedFields`.
    pub struct Object(pub Value);

    impl<'de> Deserialize<'de> for Object {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            ObjectVisitor { top: true }.deserialize(d).map(Object)
        }
    }

    /// Any JSON value; a map drops `metadata.managedFields` (`top`: the
    /// object itself) or `managedFields` (the metadata).
    struct ObjectVisitor {
        top: bool,
    }

    impl<'de> DeserializeSeed<'de> for ObjectVisitor {
        type Value = Value;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for ObjectVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a Kubernetes object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = match (self.top, key.as_str()) {
                    (true, "metadata") => map.next_value_seed(ObjectVisitor { top: false })?,
                    (false, "managedFields") => {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    _ => map.next_value::<Value>()?,
                };
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
            Value::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(v.into())
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(v.into())
        }

        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(v.into())
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(v.into())
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(v.into())
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
    }
}

/// Parses an AdmissionReview v1 body through a `Value`, as Go's decoder
/// reads it (the last of duplicate keys wins), with an error that names
/// what is wrong. The objects are kept whole.
pub fn parse_exactly(body: &[u8]) -> Result<Request, BadRequest> {
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
    /// is also a quarter of the size, so the patch is written that way. The
    /// answer is written straight from the response, not through a `Value`.
    pub fn to_json(&self) -> Vec<u8> {
        use base64::Engine;
        let r = &self.response;
        let answer = wire_out::Review {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: wire_out::Response {
                uid: &r.uid,
                allowed: r.allowed,
                status: &r.result,
                patch: r
                    .patch
                    .as_ref()
                    .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
                patch_type: r.patch.as_ref().map(|_| "JSONPatch"),
                audit_annotations: &r.audit_annotations,
                warnings: r.warnings.as_deref(),
            },
        };
        serde_json::to_vec(&answer).expect("an AdmissionReview serializes")
    }
}

/// The AdmissionReview pvc-guard answers, as kube-core would write it.
mod wire_out {
    use std::collections::HashMap;

    use kube::core::Status;
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Review<'a> {
        pub api_version: &'static str,
        pub kind: &'static str,
        pub response: Response<'a>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Response<'a> {
        pub uid: &'a str,
        pub allowed: bool,
        pub status: &'a Status,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub patch: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub patch_type: Option<&'static str>,
        #[serde(skip_serializing_if = "HashMap::is_empty")]
        pub audit_annotations: &'a HashMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub warnings: Option<&'a [String]>,
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
    let mut w = m.applied;
    w.extend(m.warnings);
    if !m.patch.0.is_empty() {
        v.response = v
            .response
            .with_patch(m.patch)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/admission");
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .expect("the fixtures")
            .map(|e| e.expect("an entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read(&p).expect("a fixture"),
                )
            })
            .collect();
        out.sort();
        assert!(out.len() >= 15, "the captured AdmissionReviews are missing");
        out
    }

    fn without_managed_fields(object: Option<&Value>) -> Option<Value> {
        let mut o = object.cloned()?;
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        Some(o)
    }

    #[test]
    fn the_one_pass_parse_reads_what_the_exact_parse_reads_but_managed_fields() {
        let mut dropped = 0;
        for (name, body) in fixtures() {
            let fast = parse(&body).expect(&name);
            let exact = parse_exactly(&body).expect(&name);
            assert_eq!(
                serde_json::to_value(&fast.request).unwrap(),
                serde_json::to_value(AdmissionRequest {
                    options: None,
                    ..exact.request.clone()
                })
                .unwrap(),
                "{name}: the envelope"
            );
            assert_eq!(fast.request.types, exact.request.types, "{name}");
            for (f, e) in [
                (&fast.object, &exact.object),
                (&fast.old_object, &exact.old_object),
            ] {
                assert_eq!(f.clone(), without_managed_fields(e.as_ref()), "{name}");
                dropped += usize::from(f != e);
            }
        }
        assert!(
            dropped > 10,
            "the fixtures carry managedFields; the parse must drop them"
        );
    }

    #[test]
    fn bodies_the_one_pass_parse_refuses_are_judged_exactly() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/admission/pg-no-volume.create.json"
        ))
        .unwrap();
        let text = String::from_utf8(body).unwrap();
        // Go's decoder takes the last of duplicate keys; so does pvc-guard.
        let duplicated = text.replacen(r#""uid":"#, r#""uid":"first","uid":"#, 1);
        assert_ne!(duplicated, text);
        let r = parse(duplicated.as_bytes()).expect("duplicate keys parse");
        assert_ne!(r.request.uid, "first");
        assert!(r.object.is_some());
        let cases = [
            (
                text.replacen("admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1),
                "unsupported apiVersion",
            ),
            (
                text.replacen(r#""kind":"AdmissionReview""#, r#""kind":"Review""#, 1),
                "kind is not AdmissionReview",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.into(),
                "has no request",
            ),
            (
                text.replacen(r#""operation":"CREATE""#, r#""operation":5"#, 1),
                "malformed",
            ),
            ("{".into(), "not valid JSON"),
            ("[]".into(), "not a JSON object"),
        ];
        for (body, want) in cases {
            assert_ne!(body, text, "{want}: the case changes nothing");
            let e = parse(body.as_bytes()).expect_err(want);
            assert!(e.0.contains(want), "{want}: {}", e.0);
        }
    }

    #[test]
    fn the_answer_is_what_kube_core_writes_with_a_base64_patch() {
        use base64::Engine;
        let policy = Policy::new(crate::config::Config::default());
        let mut patched = 0;
        for (name, body) in fixtures() {
            let req = parse(&body).expect(&name);
            for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
                for mode in [FailureMode::Allow, FailureMode::Deny] {
                    let mut verdicts = vec![review(
                        &policy,
                        endpoint,
                        &req,
                        &ClusterFacts::default(),
                        mode,
                    )];
                    verdicts.push(failure(&req, "a test", mode));
                    for v in verdicts {
                        let mut expected =
                            serde_json::to_value(v.response.clone().into_review()).unwrap();
                        if let Some(p) = &v.response.patch {
                            expected["response"]["patch"] =
                                base64::engine::general_purpose::STANDARD.encode(p).into();
                            patched += 1;
                        }
                        let got: Value = serde_json::from_slice(&v.to_json()).unwrap();
                        assert_eq!(got, expected, "{name} {endpoint:?}");
                    }
                }
            }
        }
        assert!(patched > 0);
    }
}
