//! Policy reports: the documents Policy Reporter, `kubectl get
//! policyreport` and the other tools platform teams read, one per
//! namespace, built from what the policy concluded about each stored
//! workload. `pvc-guard controller` keeps them in the cluster and
//! `pvc-guard audit -o policyreport` prints them; both build them here,
//! from [`Subject`]s, so the two never differ in shape.
//!
//! The schemas are the published CRDs: `wgpolicyk8s.io/v1alpha2`
//! PolicyReport and its successor `openreports.io/v1alpha1` Report, whose
//! results are the same. One result per workload and rule: `fail` for a
//! finding the policy denies (whatever the namespace's mode: the mode
//! decides what admission does about it, not whether it is wrong), `warn`
//! for a warning, `pass` for a workload with nothing found, `skip` for the
//! rules an accepted `pvc-guard.io/allow-ephemeral` takes away (and for
//! every workload of a namespace pvc-guard does not judge), `error` for an
//! object that cannot be read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Mode;
use crate::policy::finding::truncate;
use crate::policy::{Finding, Rule, Severity};

/// Every report pvc-guard writes has this name in its namespace, so it is
/// updated in place, never recreated.
pub const NAME: &str = "pvc-guard";
/// `results[].source` (and a Report's `source`): the engine.
pub const SOURCE: &str = "pvc-guard";
/// `results[].policy`: one policy, whose rules are the rule ids.
pub const POLICY: &str = "pvc-guard";
pub const CATEGORY: &str = "Data durability";
/// The label every report pvc-guard writes carries, and that the
/// controller lists its own reports by.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "pvc-guard");
/// Set when results had to be left out to keep the report under
/// [`MAX_RESULT_BYTES`]: how many.
pub const OMITTED_ANNOTATION: &str = "pvc-guard.io/results-omitted";
/// A result's message is the finding's full text up to this many bytes.
pub const MESSAGE_BYTES: usize = 1024;
/// The results of one report, serialized, stay under this: etcd refuses an
/// object above 1.5 MiB. Beyond it the least telling results (passes
/// first, then skips) are left out; the summary still counts them.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// The report kinds pvc-guard writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportApi {
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport: what most tools read today.
    PolicyReport,
    /// `openreports.io/v1alpha1` Report: its successor.
    OpenReports,
}

impl ReportApi {
    pub const ALL: [ReportApi; 2] = [ReportApi::PolicyReport, ReportApi::OpenReports];

    pub fn group(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "wgpolicyk8s.io",
            ReportApi::OpenReports => "openreports.io",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "v1alpha2",
            ReportApi::OpenReports => "v1alpha1",
        }
    }

    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }

    pub fn kind(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "PolicyReport",
            ReportApi::OpenReports => "Report",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "policyreports",
            ReportApi::OpenReports => "reports",
        }
    }
}

/// One stored workload and what became of it.
#[derive(Debug, Clone)]
pub struct Subject {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    /// Judged. `findings` carry the severities the policy gives them (never
    /// lowered by the namespace's `mode`, which is given alongside), and
    /// `opted_out` the accepted `pvc-guard.io/allow-ephemeral` reason.
    Judged {
        findings: Vec<Finding>,
        opted_out: Option<String>,
        mode: Mode,
    },
    /// Not judged, and why (its namespace is ignored or excluded).
    Skipped(String),
    /// Stored, but not readable as a workload, and why.
    Unreadable(String),
}

/// A result's `result`. Declared in the order results are kept when a
/// report has to leave some out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Fail,
    Error,
    Warn,
    Skip,
    Pass,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Warn => "warn",
            Outcome::Skip => "skip",
            Outcome::Pass => "pass",
        }
    }
}

/// When a result was first found (a protobuf Timestamp, as the CRDs define it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            seconds: since.as_secs() as i64,
            nanos: since.subsec_nanos() as i32,
        }
    }
}

/// `results[].resources[]`: the workload a result is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// One entry of `results`, as the CRDs define it (the fields pvc-guard sets).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult {
    #[serde(default)]
    pub source: String,
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub result: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Vec<ResourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

impl ReportResult {
    /// The workload it is about.
    pub fn subject(&self) -> Option<&ResourceRef> {
        self.resources.first()
    }

    /// Identifies the result whenever it was found: a digest of all but
    /// its timestamp (stable within one process).
    pub fn key(&self) -> u64 {
        let ReportResult {
            source,
            policy,
            rule,
            result,
            severity,
            category,
            message,
            properties,
            resources,
            timestamp: _,
        } = self;
        hash_of(&(
            source, policy, rule, result, severity, category, message, properties, resources,
        ))
    }
}

fn hash_of(value: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A digest of a report's results, timestamps included: equal digests,
/// the same document (within one process).
pub fn digest(results: &[ReportResult]) -> u64 {
    hash_of(&results)
}

fn result(
    subject: &Subject,
    outcome: Outcome,
    rule: Option<Rule>,
    message: String,
) -> ReportResult {
    ReportResult {
        source: SOURCE.into(),
        policy: POLICY.into(),
        rule: rule.map(|r| r.id().to_string()),
        result: outcome,
        severity: None,
        category: CATEGORY.into(),
        message: truncate(&message, MESSAGE_BYTES),
        properties: BTreeMap::new(),
        resources: vec![ResourceRef {
            api_version: subject.api_version.clone(),
            kind: subject.kind.clone(),
            namespace: subject.namespace.clone(),
            name: subject.name.clone(),
            uid: subject.uid.clone(),
        }],
        timestamp: None,
    }
}

/// The results for `subjects`, in a stable order (by workload, then the
/// worst outcome first), without timestamps ([`stamp`] adds them).
pub fn results(subjects: &[Subject]) -> Vec<ReportResult> {
    let mut out = Vec::new();
    for s in subjects {
        match &s.verdict {
            Verdict::Skipped(why) => out.push(result(s, Outcome::Skip, None, why.clone())),
            Verdict::Unreadable(why) => out.push(result(
                s,
                Outcome::Error,
                None,
                format!("pvc-guard cannot read {} {}: {why}", s.kind, s.name),
            )),
            Verdict::Judged {
                findings,
                opted_out,
                mode,
            } => {
                for f in findings {
                    let (outcome, severity) = match f.severity {
                        Severity::Deny => (Outcome::Fail, "high"),
                        Severity::Warn => (Outcome::Warn, "medium"),
                    };
                    let mut r = result(s, outcome, Some(f.rule), f.message());
                    r.severity = Some(severity.into());
                    for (key, value) in [("container", &f.container), ("path", &f.path)] {
                        if !value.is_empty() {
                            r.properties.insert(key.into(), value.clone());
                        }
                    }
                    // What admission does about it in this namespace.
                    r.properties.insert("mode".into(), mode.as_str().into());
                    out.push(r);
                }
                if let Some(reason) = opted_out {
                    for rule in Rule::ALL.into_iter().filter(|r| r.opt_out_covers()) {
                        let mut r = result(
                            s,
                            Outcome::Skip,
                            Some(rule),
                            format!("opted out with pvc-guard.io/allow-ephemeral: {reason}"),
                        );
                        r.properties.insert("reason".into(), reason.clone());
                        out.push(r);
                    }
                } else if findings.is_empty() {
                    out.push(result(
                        s,
                        Outcome::Pass,
                        None,
                        "no database data on storage that dies with the pod, and nothing else pvc-guard checks".into(),
                    ));
                }
            }
        }
    }
    out.sort_by(|a, b| {
        (a.subject(), a.result, &a.rule, &a.message).cmp(&(
            b.subject(),
            b.result,
            &b.rule,
            &b.message,
        ))
    });
    out
}

/// Gives each result a timestamp: the one `first_found` knows for it (so
/// an unchanged report stays byte for byte the same and is not written
/// again), else `now`.
pub fn stamp(
    results: &mut [ReportResult],
    first_found: impl Fn(&ReportResult) -> Option<Timestamp>,
    now: Timestamp,
) {
    for r in results.iter_mut() {
        r.timestamp = first_found(r).or(Some(now));
    }
}

/// When each of `results` was found, by [`ReportResult::key`].
pub fn timestamps(results: &[ReportResult]) -> std::collections::HashMap<u64, Timestamp> {
    results
        .iter()
        .filter_map(|r| Some((r.key(), r.timestamp?)))
        .collect()
}

/// `summary`: how many results of each outcome.
pub fn summary(results: &[ReportResult]) -> BTreeMap<&'static str, u64> {
    let mut counts: BTreeMap<&'static str, u64> = ["pass", "fail", "warn", "error", "skip"]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
    for r in results {
        *counts.entry(r.result.as_str()).or_default() += 1;
    }
    counts
}

/// The report of `api` for `namespace` holding `results`: named [`NAME`],
/// labelled [`MANAGED_BY`]. The summary counts every result; the results
/// listed stay under [`MAX_RESULT_BYTES`], the least telling left out
/// first and counted in [`OMITTED_ANNOTATION`].
pub fn document(api: ReportApi, namespace: &str, results: &[ReportResult]) -> Value {
    let mut kept: Vec<(usize, &ReportResult)> = results.iter().enumerate().collect();
    // Keep the worst outcomes when something has to go.
    kept.sort_by_key(|(i, r)| (r.result, *i));
    let mut bytes = 0;
    let mut omitted = 0;
    kept.retain(|(_, r)| {
        let size = serde_json::to_vec(r).map_or(0, |v| v.len()) + 1;
        if bytes + size > MAX_RESULT_BYTES {
            omitted += 1;
            false
        } else {
            bytes += size;
            true
        }
    });
    kept.sort_by_key(|(i, _)| *i);
    let listed: Vec<&ReportResult> = kept.into_iter().map(|(_, r)| r).collect();
    let mut metadata = json!({
        "name": NAME,
        "namespace": namespace,
        "labels": {MANAGED_BY.0: MANAGED_BY.1},
    });
    if omitted > 0 {
        metadata["annotations"] = json!({OMITTED_ANNOTATION: omitted.to_string()});
    }
    let mut doc = json!({
        "apiVersion": api.api_version(),
        "kind": api.kind(),
        "metadata": metadata,
        "summary": summary(results),
        "results": listed,
    });
    if api == ReportApi::OpenReports {
        doc["source"] = json!(SOURCE);
    }
    doc
}

/// The results a stored report of pvc-guard's holds; none when it is not
/// one (a foreign object under the name is never read as ours).
pub fn results_of(report: &Value) -> Vec<ReportResult> {
    report
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| serde_json::from_value(r.clone()).ok())
        .filter(|r: &ReportResult| r.source == SOURCE)
        .collect()
}

/// The reports for `subjects`, one per namespace that has any, in
/// namespace order, each result stamped `now`: what `audit -o
/// policyreport` prints.
pub fn documents(api: ReportApi, subjects: &[Subject], now: Timestamp) -> Vec<Value> {
    let mut by_namespace: BTreeMap<&str, Vec<Subject>> = BTreeMap::new();
    for s in subjects {
        by_namespace
            .entry(s.namespace.as_str())
            .or_default()
            .push(s.clone());
    }
    by_namespace
        .into_iter()
        .map(|(ns, subjects)| {
            let mut r = results(&subjects);
            stamp(&mut r, |_| None, now);
            document(api, ns, &r)
        })
        .collect()
}

/// The rule and outcome of each fail and warn result about one workload:
/// what a `PolicyViolation` event says changed.
pub fn violations<'r>(results: impl Iterator<Item = &'r ReportResult>) -> Vec<(Outcome, String)> {
    let mut out: Vec<(Outcome, String)> = results
        .filter(|r| matches!(r.result, Outcome::Fail | Outcome::Warn))
        .map(|r| (r.result, r.rule.clone().unwrap_or_default()))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Detail;

    fn finding(rule: Rule, severity: Severity, container: &str) -> Finding {
        Finding {
            rule,
            severity,
            container: container.into(),
            path: "/data".into(),
            detail: Detail::OptOut {
                who: "Deployment shop/db".into(),
                why: crate::policy::finding::OptOutRefusal::NoReason,
            },
            inherited: false,
            site: None,
        }
    }

    fn subject(name: &str, verdict: Verdict) -> Subject {
        Subject {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            verdict,
        }
    }

    fn outcomes(results: &[ReportResult]) -> Vec<(String, &'static str, String)> {
        results
            .iter()
            .map(|r| {
                (
                    r.subject().unwrap().name.clone(),
                    r.result.as_str(),
                    r.rule.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn each_workload_gets_a_result_per_rule_or_a_pass() {
        let subjects = [
            subject(
                "denied",
                Verdict::Judged {
                    findings: vec![
                        finding(Rule::EphemeralDataPath, Severity::Deny, "pg"),
                        finding(Rule::DatabaseInDeployment, Severity::Warn, "pg"),
                    ],
                    opted_out: None,
                    mode: Mode::Audit,
                },
            ),
            subject(
                "clean",
                Verdict::Judged {
                    findings: vec![],
                    opted_out: None,
                    mode: Mode::Enforce,
                },
            ),
            subject(
                "opted",
                Verdict::Judged {
                    findings: vec![],
                    opted_out: Some("a cache, rebuilt at start".into()),
                    mode: Mode::Enforce,
                },
            ),
            subject("ignored", Verdict::Skipped("namespace ignored".into())),
            subject("broken", Verdict::Unreadable("not an object".into())),
        ];
        let r = results(&subjects);
        assert_eq!(
            outcomes(&r),
            [
                ("broken".into(), "error", "".into()),
                ("clean".into(), "pass", "".into()),
                ("denied".into(), "fail", "ephemeral-data-path".into()),
                ("denied".into(), "warn", "database-in-deployment".into()),
                ("ignored".into(), "skip", "".into()),
                ("opted".into(), "skip", "config-volume-data-path".into()),
                ("opted".into(), "skip", "ephemeral-data-path".into()),
            ]
        );
        let fail = &r[2];
        assert_eq!(fail.severity.as_deref(), Some("high"));
        assert_eq!(fail.properties["mode"], "audit");
        assert_eq!(fail.properties["container"], "pg");
        assert_eq!(fail.resources[0].uid.as_deref(), Some("uid-denied"));
        assert!(r[5].message.contains("a cache, rebuilt at start"));
        let doc = document(ReportApi::PolicyReport, "shop", &r);
        assert_eq!(
            doc["summary"],
            json!({"pass": 1, "fail": 1, "warn": 1, "error": 1, "skip": 3})
        );
        assert_eq!(doc["metadata"]["name"], NAME);
        assert!(
            doc.get("source").is_none(),
            "v1alpha2 has no top-level source"
        );
        let open = document(ReportApi::OpenReports, "shop", &r);
        assert_eq!(open["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(open["source"], SOURCE);
        assert_eq!(open["results"], doc["results"]);
        // Read back as written.
        assert_eq!(results_of(&doc), r);
    }

    #[test]
    fn an_unchanged_result_keeps_its_timestamp() {
        let clean = |mode| {
            subject(
                "db",
                Verdict::Judged {
                    findings: vec![finding(Rule::EphemeralDataPath, Severity::Deny, "pg")],
                    opted_out: None,
                    mode,
                },
            )
        };
        let then = Timestamp {
            seconds: 100,
            nanos: 5,
        };
        let later = Timestamp {
            seconds: 200,
            nanos: 0,
        };
        let mut first = results(&[clean(Mode::Enforce)]);
        stamp(&mut first, |_| None, then);
        let known = timestamps(&first);
        let mut again = results(&[clean(Mode::Enforce)]);
        stamp(&mut again, |r| known.get(&r.key()).copied(), later);
        assert_eq!(again, first, "nothing changed: the same document");
        assert_eq!(digest(&again), digest(&first));
        let mut changed = results(&[clean(Mode::Warn)]);
        stamp(&mut changed, |r| known.get(&r.key()).copied(), later);
        assert_eq!(changed[0].timestamp, Some(later));
        assert_ne!(digest(&changed), digest(&first));
    }

    #[test]
    fn a_huge_namespace_keeps_its_failures_under_the_size_limit() {
        let long = "x".repeat(2000);
        let mut subjects: Vec<Subject> = (0..3000)
            .map(|i| {
                subject(
                    &format!("clean-{i:04}-{long}"),
                    Verdict::Judged {
                        findings: vec![],
                        opted_out: None,
                        mode: Mode::Enforce,
                    },
                )
            })
            .collect();
        subjects.push(subject(
            "zz-denied",
            Verdict::Judged {
                findings: vec![finding(Rule::EphemeralDataPath, Severity::Deny, "pg")],
                opted_out: None,
                mode: Mode::Enforce,
            },
        ));
        let r = results(&subjects);
        let doc = document(ReportApi::PolicyReport, "shop", &r);
        assert!(serde_json::to_vec(&doc["results"]).unwrap().len() <= MAX_RESULT_BYTES);
        let listed = doc["results"].as_array().unwrap();
        assert!(
            listed.iter().any(|r| r["result"] == "fail"),
            "the failure is kept"
        );
        let omitted: usize = doc["metadata"]["annotations"][OMITTED_ANNOTATION]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(omitted + listed.len(), r.len());
        assert_eq!(doc["summary"]["pass"], 3000, "the summary counts them all");
    }
}
