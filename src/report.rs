//! Reports of findings, shared by `check` and `audit`: text, JSON and SARIF
//! 2.1.0 (what code-scanning tools read); and the policy reports the
//! claim controller keeps in the cluster ([`policy_report`]).

pub mod policy_report;

use serde_json::{Value, json};

use crate::manifest::Problem;
use crate::model::Kind;
use crate::policy::{Finding, Rule, Severity};

/// One object and what the policy found in it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// A file path for `check`, the cluster context for `audit`.
    pub source: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub findings: Vec<Finding>,
}

impl Entry {
    pub fn decision(&self) -> &'static str {
        if self.findings.iter().any(|f| f.severity == Severity::Deny) {
            "deny"
        } else if self.findings.is_empty() {
            "allow"
        } else {
            "warn"
        }
    }

    fn qualified_name(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// Objects pvc-guard judges are listed even when clean.
    fn listed(&self) -> bool {
        !self.findings.is_empty() || Kind::from_kind(&self.kind).is_some()
    }
}

pub fn any_deny(entries: &[Entry]) -> bool {
    entries.iter().any(|e| e.decision() == "deny")
}

/// One block per object: its decision, then each finding in full.
pub fn text(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries.iter().filter(|e| e.listed()) {
        let ns = if e.namespace.is_empty() {
            String::new()
        } else {
            format!("{}/", e.namespace)
        };
        out.push_str(&format!(
            "{} {} {ns}{}: {}\n",
            e.source,
            e.kind,
            e.name,
            e.decision()
        ));
        for f in &e.findings {
            out.push_str(&format!("  {}: {}\n", f.severity.as_str(), f.message()));
        }
    }
    out
}

/// A table of objects with findings, then the findings in full.
pub fn table(entries: &[Entry]) -> String {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .filter(|e| !e.findings.is_empty())
        .map(|e| {
            let mut rules: Vec<&str> = e.findings.iter().map(|f| f.rule.id()).collect();
            rules.sort_unstable();
            rules.dedup();
            [
                e.decision().to_string(),
                e.kind.clone(),
                e.namespace.clone(),
                e.name.clone(),
                rules.join(","),
            ]
        })
        .collect();
    let header = ["DECISION", "KIND", "NAMESPACE", "NAME", "RULES"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "\n{} objects listed, {} with findings, {} would be denied\n",
        entries.len(),
        rows.len(),
        entries.iter().filter(|e| e.decision() == "deny").count()
    ));
    for e in entries.iter().filter(|e| !e.findings.is_empty()) {
        for f in &e.findings {
            out.push_str(&format!("\n{}: {}", f.severity.as_str(), f.message()));
        }
    }
    if !rows.is_empty() {
        out.push('\n');
    }
    out
}

/// The shape `check --output json` prints: one object per input object,
/// then one per document that could not be read.
pub fn json(entries: &[Entry], unreadable: &[Problem]) -> Value {
    let unread = unreadable.iter().map(|p| {
        json!({"source": p.source, "decision": "unreadable", "error": p.reason, "findings": []})
    });
    Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "source": e.source,
                    "kind": e.kind,
                    "namespace": e.namespace,
                    "name": e.name,
                    "decision": e.decision(),
                    "findings": e.findings.iter().map(|f| json!({
                        "rule": f.rule.id(),
                        "severity": f.severity.as_str(),
                        "container": f.container,
                        "path": f.path,
                        "message": f.message(),
                    })).collect::<Vec<_>>(),
                })
            })
            .chain(unread)
            .collect(),
    )
}

/// A SARIF 2.1.0 log with one run; `files` says whether sources are files
/// (physical locations) or a cluster (logical locations only). Documents
/// that could not be read are the run's error notifications.
pub fn sarif(entries: &[Entry], unreadable: &[Problem], files: bool) -> Value {
    let rules: Vec<Value> = Rule::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.id(),
                "shortDescription": {"text": r.summary()},
            })
        })
        .collect();
    let mut results = Vec::new();
    for e in entries {
        for f in &e.findings {
            let mut location = json!({
                "logicalLocations": [{
                    "name": e.name,
                    "fullyQualifiedName": e.qualified_name(),
                    "kind": "object",
                }],
            });
            if files {
                location["physicalLocation"] =
                    json!({"artifactLocation": {"uri": artifact_uri(&e.source)}});
            }
            results.push(json!({
                "ruleId": f.rule.id(),
                "ruleIndex": Rule::ALL.iter().position(|r| *r == f.rule),
                "level": match f.severity { Severity::Deny => "error", Severity::Warn => "warning" },
                "message": {"text": f.message()},
                "locations": [location],
            }));
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "pvc-guard",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
            "invocations": [{
                "executionSuccessful": unreadable.is_empty(),
                "toolExecutionNotifications": unreadable.iter().map(|p| json!({
                    "level": "error",
                    "message": {"text": p.reason},
                    "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact_uri(&p.source)}}}],
                })).collect::<Vec<_>>(),
            }],
        }],
    })
}

/// `dir/file.yaml#2.items[0]` names a document in a file; SARIF wants the file.
fn artifact_uri(source: &str) -> String {
    source
        .split('#')
        .next()
        .unwrap_or(source)
        .replace('\\', "/")
}
