//! AdmissionReview in, AdmissionResponse out. Pure: modes, ownership,
//! UPDATE rules, warnings and dry-run are decided here; the server only
//! moves bytes. The body is read in one pass into the envelope's fields and
//! the typed views of the objects ([`crate::model`]); nothing else of the
//! objects is kept.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::config::{Mode, RuleSetting};
use crate::model::read::{Checked, Lenient, Shape, view_struct};
use crate::model::{CountedObject, Object, Unreadable, Workload, limits};
use crate::mutate::{self, Mutation};
use crate::policy::finding::{WARNING_LIMIT, truncate};
use crate::policy::{Caller, ClusterFacts, Finding, Policy, Rule, Severity, ownership};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Admit, with a warning that says why.
    #[default]
    Allow,
    Deny,
}

/// The body is not an AdmissionReview pvc-guard can answer at all.
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("the body is not valid JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("the body is not valid JSON: it is not UTF-8 ({0})")]
    NotUtf8(std::str::Utf8Error),
    #[error("the body is not a JSON object")]
    NotObject,
    #[error("the body has no apiVersion; expected an AdmissionReview")]
    NoApiVersion,
    #[error(
        "unsupported apiVersion {0:?}: pvc-guard answers {API_VERSION} AdmissionReviews only (set admissionReviewVersions: [v1])"
    )]
    ApiVersion(String),
    #[error("the body's kind is not AdmissionReview")]
    NotReview,
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("the AdmissionReview request has no uid")]
    NoUid,
    #[error("the AdmissionReview request is malformed: {0}")]
    Malformed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

// The envelope is the API server's and held to its schema (a field of
// the wrong type is a malformed request); the objects are read leniently.
view_struct! {
    struct WireGvk {
        "group" => group: Checked<String>,
        "version" => version: Checked<String>,
        "kind" => kind: Checked<String>,
    }
}

view_struct! {
    struct WireUser {
        "username" => username: Checked<String>,
    }
}

view_struct! {
    struct WireRequest {
        "uid" => uid: Checked<String>,
        "kind" => kind: WireGvk,
        "subResource" => sub_resource: Checked<String>,
        "name" => name: Checked<String>,
        "namespace" => namespace: Checked<String>,
        "operation" => operation: Checked<String>,
        "userInfo" => user_info: WireUser,
        "object" => object: CountedObject,
        "oldObject" => old_object: CountedObject,
        "dryRun" => dry_run: Checked<bool>,
    }
}

view_struct! {
    struct WireReview {
        "apiVersion" => api_version: Option<String>,
        "kind" => kind: Option<String>,
        "request" => request: WireRequest,
    }
}

/// A parsed request: the envelope's fields and the typed objects.
#[derive(Debug, Clone)]
pub struct Request {
    pub uid: String,
    /// `request.kind`: what the API server says the object is.
    pub kind: String,
    pub group: String,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    /// `request.userInfo.username`: who is writing.
    pub username: String,
    pub dry_run: bool,
    /// `None` when the request carries no object (null or absent).
    pub object: Option<Result<Object, Unreadable>>,
    pub old_object: Option<Result<Object, Unreadable>>,
}

impl Request {
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|s| !s.is_empty())
    }

    /// The workload being written, when the object is one.
    pub fn workload(&self) -> Option<&Workload> {
        match &self.object {
            Some(Ok(o)) => o.workload(),
            _ => None,
        }
    }

    fn old_workload(&self) -> Option<&Workload> {
        match &self.old_object {
            Some(Ok(o)) => o.workload(),
            _ => None,
        }
    }

    fn caller(&self) -> Caller<'_> {
        Caller::User(&self.username)
    }
}

fn object_of(raw: CountedObject) -> Option<Result<Object, Unreadable>> {
    match raw.value.shape {
        Shape::Absent | Shape::Null => None,
        _ => Some(Object::from_raw(raw)),
    }
}

/// Parses an AdmissionReview v1 body in one pass. Keys that repeat take
/// the last value, as Go's decoder does.
pub fn parse(body: &[u8]) -> Result<Request, BadRequest> {
    // Checked once up front: strings the parse skips are not checked one
    // by one, and JSON is UTF-8 or it is not JSON.
    let text = std::str::from_utf8(body).map_err(BadRequest::NotUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let review = <WireReview as Lenient>::read(&mut de)?;
    de.end()?;
    if review.shape != Shape::Present {
        return Err(BadRequest::NotObject);
    }
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => return Err(BadRequest::ApiVersion(other.to_string())),
        None => return Err(BadRequest::NoApiVersion),
    }
    if review.kind.as_deref() != Some("AdmissionReview") {
        return Err(BadRequest::NotReview);
    }
    let r = review.request;
    if r.shape != Shape::Present {
        return Err(BadRequest::NoRequest);
    }
    let uid = r
        .uid
        .value
        .filter(|u| !u.is_empty())
        .ok_or(BadRequest::NoUid)?;
    let wrong = [
        (r.kind.shape == Shape::Other, "kind must be an object"),
        (r.kind.group.wrong, "kind.group must be a string"),
        (r.kind.version.wrong, "kind.version must be a string"),
        (r.kind.kind.wrong, "kind.kind must be a string"),
        (r.sub_resource.wrong, "subResource must be a string"),
        (r.name.wrong, "name must be a string"),
        (r.namespace.wrong, "namespace must be a string"),
        (
            r.user_info.shape == Shape::Other,
            "userInfo must be an object",
        ),
        (
            r.user_info.username.wrong,
            "userInfo.username must be a string",
        ),
        (r.dry_run.wrong, "dryRun must be a boolean"),
    ];
    if let Some((_, what)) = wrong.into_iter().find(|(w, _)| *w) {
        return Err(BadRequest::Malformed(what));
    }
    let operation = match r.operation.value.as_deref() {
        Some("CREATE") => Operation::Create,
        Some("UPDATE") => Operation::Update,
        Some("DELETE") => Operation::Delete,
        Some("CONNECT") => Operation::Connect,
        _ => {
            return Err(BadRequest::Malformed(
                "operation must be one of CREATE, UPDATE, DELETE, CONNECT",
            ));
        }
    };
    Ok(Request {
        uid,
        kind: r.kind.kind.value.unwrap_or_default(),
        group: r.kind.group.value.unwrap_or_default(),
        sub_resource: r.sub_resource.value,
        name: r.name.value.unwrap_or_default(),
        namespace: r.namespace.value,
        operation,
        username: r.user_info.username.value.unwrap_or_default(),
        dry_run: r.dry_run.value.unwrap_or(false),
        object: object_of(r.object),
        old_object: object_of(r.old_object),
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

/// A refusal's status, as the API server shows it to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub message: String,
    pub reason: &'static str,
}

/// The AdmissionResponse: always for the request's uid, always v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    pub status: Option<Status>,
    /// A JSON Patch, as JSON text (base64 on the wire).
    pub patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub response: Response,
    pub decision: Decision,
    /// Every finding's rule, including those audit mode only logs.
    pub rules: Vec<Rule>,
    pub mode: Mode,
    /// Why the object could not be judged, if it could not.
    pub error: Option<String>,
    /// Why findings were left unfixed (`Unfixable::kind`), for metrics.
    pub unfixed: Vec<&'static str>,
}

impl Verdict {
    /// The AdmissionReview body, written straight from the response. The
    /// patch is base64, as the API server's own types (Go `[]byte`) read it.
    pub fn to_json(&self) -> Vec<u8> {
        use base64::Engine;
        use serde_json::value::RawValue;
        let r = &self.response;
        let answer = wire_out::Review {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: wire_out::Response {
                uid: &r.uid,
                allowed: r.allowed,
                status: wire_out::Status(r.status.as_ref()),
                patch: r.patch.as_ref().map(|p| {
                    // Base64 never needs escaping: handed over as a raw JSON
                    // string, serde_json copies it instead of scanning each
                    // byte for an escape (a twentieth of a postgres fix).
                    let mut quoted = String::with_capacity(p.len() * 4 / 3 + 6);
                    quoted.push('"');
                    base64::engine::general_purpose::STANDARD.encode_string(p, &mut quoted);
                    quoted.push('"');
                    RawValue::from_string(quoted).expect("base64 in quotes is a JSON string")
                }),
                patch_type: r.patch.as_ref().map(|_| "JSONPatch"),
                warnings: (!r.warnings.is_empty()).then_some(r.warnings.as_slice()),
            },
        };
        serde_json::to_vec(&answer).expect("an AdmissionReview serializes")
    }
}

mod wire_out {
    use serde::Serialize;
    use serde::ser::SerializeMap;

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
        pub status: Status<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub patch: Option<Box<serde_json::value::RawValue>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub patch_type: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub warnings: Option<&'a [String]>,
    }

    /// A metav1.Status: `{}` when allowed.
    pub struct Status<'a>(pub Option<&'a super::Status>);

    impl Serialize for Status<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let Some(st) = self.0 else {
                return s.serialize_map(Some(0))?.end();
            };
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("code", &st.code)?;
            m.serialize_entry("message", &st.message)?;
            if !st.reason.is_empty() {
                m.serialize_entry("reason", st.reason)?;
            }
            m.end()
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn allow(uid: &str) -> Verdict {
    Verdict {
        response: Response {
            uid: uid.to_string(),
            allowed: true,
            status: None,
            patch: None,
            warnings: Vec::new(),
        },
        decision: Decision::Allow,
        rules: Vec::new(),
        mode: Mode::Enforce,
        error: None,
        unfixed: Vec::new(),
    }
}

/// The answer when the object cannot be judged: per the failure mode.
pub fn failure(uid: &str, why: &str, mode: FailureMode) -> Verdict {
    let mut v = allow(uid);
    v.error = Some(why.to_string());
    match mode {
        FailureMode::Allow => {
            v.response.warnings = vec![format!("[pvc-guard] not checked: {why}")];
            v.decision = Decision::Warn;
        }
        FailureMode::Deny => {
            v.response.allowed = false;
            v.response.status = Some(Status {
                code: 400,
                message: format!("[pvc-guard] cannot check this object: {why}"),
                reason: "",
            });
            v.decision = Decision::Deny;
        }
    }
    v
}

/// Nothing to judge: deletes, subresources, excluded or ignored namespaces.
fn out_of_scope(policy: &Policy, req: &Request, facts: &ClusterFacts) -> bool {
    matches!(req.operation, Operation::Delete | Operation::Connect)
        || req.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
        || req
            .namespace()
            .is_some_and(|ns| policy.config.excluded_namespaces.iter().any(|e| e == ns))
        || facts.namespace_ignored()
}

/// The findings that count for one workload, once ownership and UPDATE
/// semantics are applied. `None`: nothing to judge (written by the control
/// plane for a built-in owner, which was judged itself).
pub fn judge(
    policy: &Policy,
    workload: &Workload,
    old: Option<&Workload>,
    facts: &ClusterFacts,
    mut mode: Mode,
    caller: Caller<'_>,
) -> Option<Judgement> {
    let owned = ownership(workload, caller, &policy.config);
    match owned {
        crate::policy::Ownership::Controller => return None,
        crate::policy::Ownership::Operator if mode == Mode::Enforce => mode = Mode::Warn,
        _ => {}
    }
    let a = policy.evaluate(workload, facts);
    let blocked = blocked_fixes(policy, facts, &a, owned.mutable());
    let opted_out = a.opted_out.clone();
    let mut findings = settled(policy, a.findings);
    for f in &mut findings {
        if let (crate::policy::Detail::Site { blocked: b, .. }, Some(why)) = (
            &mut f.detail,
            blocked.get(&(f.container.clone(), f.path.clone())),
        ) {
            *b = Some(why.clone());
        }
    }
    if mode == Mode::Warn {
        for f in &mut findings {
            f.severity = Severity::Warn;
        }
    }
    // UPDATE: a violation the old object already had is allowed with a warning.
    if let Some(old) = old {
        let before = settled(policy, policy.evaluate(old, facts).findings);
        let inherited: BTreeSet<_> = before
            .iter()
            .filter(|f| f.severity == Severity::Deny)
            .map(|f| f.key())
            .collect();
        for f in findings.iter_mut().filter(|f| f.severity == Severity::Deny) {
            if inherited.contains(&f.key()) {
                f.severity = Severity::Warn;
                f.inherited = true;
            }
        }
    }
    // An answer lists a bounded number of findings, the denials first.
    let omitted = findings.len().saturating_sub(limits::FINDINGS);
    findings.truncate(limits::FINDINGS);
    Some(Judgement {
        findings,
        mode,
        omitted,
        opted_out,
    })
}

/// Why the fix cannot mend a site, by (container, path): asked of the
/// planner only when a denial the fix might mend is there, so a message
/// says "pvc-guard fix shows how" only when it does.
fn blocked_fixes(
    policy: &Policy,
    facts: &ClusterFacts,
    a: &crate::policy::Assessment<'_, '_>,
    mutable: bool,
) -> std::collections::HashMap<(String, String), String> {
    let fixable = |f: &&Finding| f.rule == Rule::EphemeralDataPath && f.severity == Severity::Deny;
    let sites = a.findings.iter().filter(fixable);
    if !mutable {
        return sites
            .map(|f| {
                let why = "the object is owned by a controller, which would undo a change".into();
                ((f.container.clone(), f.path.clone()), why)
            })
            .collect();
    }
    if !a.findings.iter().any(|f| fixable(&f)) {
        return Default::default();
    }
    let mut names = mutate::claims::ClaimNames::new(a.workload);
    mutate::plan::plan(policy, facts, a, &mut names)
        .unfixed
        .into_iter()
        .filter_map(|u| Some((u.at?, u.why.to_string())))
        .collect()
}

/// Findings with the config's per-rule severities, denials first.
fn settled(policy: &Policy, mut findings: Vec<Finding>) -> Vec<Finding> {
    for f in &mut findings {
        match policy.config.rule_setting(f.rule) {
            Some(RuleSetting::Warn) => f.severity = Severity::Warn,
            Some(RuleSetting::Deny) => f.severity = Severity::Deny,
            _ => {}
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    findings
}

/// What [`judge`] concluded.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub findings: Vec<Finding>,
    pub mode: Mode,
    /// Findings beyond the cap, counted only.
    pub omitted: usize,
    /// The accepted `pvc-guard.io/allow-ephemeral` reason, if any (what
    /// a policy report shows as skipped).
    pub opted_out: Option<String>,
}

/// The validating webhook.
pub fn validate(
    policy: &Policy,
    req: &Request,
    facts: &ClusterFacts,
    failure_mode: FailureMode,
) -> Verdict {
    if out_of_scope(policy, req, facts) {
        return allow(&req.uid);
    }
    let workload = match &req.object {
        None => return failure(&req.uid, "the request carries no object", failure_mode),
        Some(Err(e)) => return failure(&req.uid, &e.0, failure_mode),
        Some(Ok(Object::Other)) => return allow(&req.uid),
        Some(Ok(Object::Workload(w))) => w,
    };
    let old = match req.operation {
        Operation::Update => req.old_workload(),
        _ => None,
    };
    let mode = facts.mode(&policy.config);
    let Some(j) = judge(policy, workload, old, facts, mode, req.caller()) else {
        return allow(&req.uid);
    };
    let mut v = allow(&req.uid);
    v.rules = j.findings.iter().map(|f| f.rule).collect();
    v.mode = j.mode;
    match j.mode {
        Mode::Audit => {}
        Mode::Warn => v.response.warnings = warnings(j.findings.iter()),
        Mode::Enforce => {
            v.response.warnings =
                warnings(j.findings.iter().filter(|f| f.severity == Severity::Warn));
            let denied: Vec<String> = j
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Deny)
                .map(Finding::message)
                .collect();
            if !denied.is_empty() {
                let mut message = denied.join("\n");
                if j.omitted > 0 {
                    message.push_str(&format!(
                        "\n(and {} more findings, not listed: pvc-guard lists at most {})",
                        j.omitted,
                        limits::FINDINGS
                    ));
                }
                v.response.allowed = false;
                v.response.status = Some(Status {
                    code: 403,
                    message: truncate(&message, limits::MESSAGE_BYTES),
                    reason: "Forbidden",
                });
                v.decision = Decision::Deny;
                return v;
            }
        }
    }
    if !v.response.warnings.is_empty() {
        v.decision = Decision::Warn;
    }
    v
}

fn warnings<'f>(findings: impl Iterator<Item = &'f Finding>) -> Vec<String> {
    findings.map(Finding::warning).collect()
}

/// The mutating webhook: fixes on CREATE, puts a lost fix back on UPDATE.
pub fn mutate(
    policy: &Policy,
    req: &Request,
    facts: &ClusterFacts,
    failure_mode: FailureMode,
) -> Verdict {
    if out_of_scope(policy, req, facts) || !facts.mutation_enabled(&policy.config) {
        return allow(&req.uid);
    }
    let workload = match &req.object {
        None => return failure(&req.uid, "the request carries no object", failure_mode),
        Some(Err(e)) => return failure(&req.uid, &e.0, failure_mode),
        Some(Ok(Object::Other)) => return allow(&req.uid),
        Some(Ok(Object::Workload(w))) => w,
    };
    // Owned objects are never mutated: their controller would fight it.
    if !ownership(workload, req.caller(), &policy.config).mutable() {
        return allow(&req.uid);
    }
    let m = match req.operation {
        Operation::Create => mutate::mutate_create(policy, workload, facts),
        Operation::Update => match req.old_workload() {
            Some(old) => mutate::mutate_update(policy, facts, old, workload),
            None => Mutation::default(),
        },
        _ => Mutation::default(),
    };
    answer_mutation(&req.uid, m)
}

/// The mutating webhook's answer for a mutation.
fn answer_mutation(uid: &str, m: Mutation) -> Verdict {
    let mut v = allow(uid);
    v.unfixed = m.unfixed.iter().map(|u| u.why.kind()).collect();
    if !m.patch.is_empty() {
        v.response.patch = Some(m.patch_json());
        v.decision = Decision::Patch;
        v.rules = m
            .record
            .rules
            .iter()
            .filter_map(|r| Rule::from_id(r))
            .collect();
    }
    let lines = m.applied.iter().chain(&m.warnings);
    v.response.warnings = lines.map(|s| truncate(s, WARNING_LIMIT)).collect();
    if !v.response.warnings.is_empty() && v.decision == Decision::Allow {
        v.decision = Decision::Warn;
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

impl Serialize for Operation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/data/admission/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn bad_bodies_get_errors_that_say_what_is_wrong() {
        let text = fixture("pg-no-volume.create.json");
        // Go's decoder takes the last of duplicate keys; so does pvc-guard.
        let duplicated = text.replacen(r#""uid":"#, r#""uid":"first","uid":"#, 1);
        assert_ne!(duplicated, text);
        let r = parse(duplicated.as_bytes()).expect("duplicate keys parse");
        assert_ne!(r.uid, "first");
        assert!(r.workload().is_some());
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
            (text.replacen(r#""uid":"#, r#""uidx":"#, 1), "has no uid"),
            ("{".into(), "not valid JSON"),
            (format!("{text} x"), "not valid JSON"),
            ("[]".into(), "not a JSON object"),
            ("[".repeat(1000), "not valid JSON"),
        ];
        for (body, want) in cases {
            assert_ne!(body, text, "{want}: the case changes nothing");
            let e = parse(body.as_bytes()).expect_err(want).to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn the_answer_is_a_v1_review_with_a_base64_patch() {
        use base64::Engine;
        let policy = Policy::new(crate::config::Config::default());
        let req = parse(fixture("pg-no-volume.create.json").as_bytes()).unwrap();
        let v = review(
            &policy,
            Endpoint::Mutate,
            &req,
            &ClusterFacts::default(),
            FailureMode::Allow,
        );
        let answer: serde_json::Value = serde_json::from_slice(&v.to_json()).unwrap();
        assert_eq!(answer["apiVersion"], API_VERSION);
        assert_eq!(answer["response"]["uid"], req.uid.as_str());
        assert_eq!(answer["response"]["status"], serde_json::json!({}));
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        let _: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let v = review(
            &policy,
            Endpoint::Validate,
            &req,
            &ClusterFacts::default(),
            FailureMode::Allow,
        );
        let answer: serde_json::Value = serde_json::from_slice(&v.to_json()).unwrap();
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["status"]["code"], 403);
        assert_eq!(answer["response"]["status"]["reason"], "Forbidden");
        assert!(answer["response"].get("patch").is_none());
    }
}
