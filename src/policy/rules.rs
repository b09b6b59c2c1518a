//! The rules of DESIGN.md section 3: ids, severities and the words each
//! finding uses. Every rule id appears here exactly once, in `Rule::id`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Rule {
    /// A data path on the writable layer, an unmatched image VOLUME or an
    /// ephemeral volume.
    EphemeralDataPath,
    /// A data path on configMap, secret, downwardAPI, projected or image volumes.
    ConfigVolumeDataPath,
    /// A data path on hostPath: it stays on one node.
    NodeLocalDataPath,
    /// A data path on an inline CSI volume of an unknown driver.
    UnknownStorage,
    /// A data path mounted readOnly.
    ReadOnlyDataPath,
    /// One claim at a database data path used by several pods at once.
    SharedClaimReplicas,
    /// A Deployment with a claim at a data path and the RollingUpdate strategy.
    RollingUpdateClaim,
    /// Postgres PGDATA is the root of a claim's mount (lost+found).
    PgdataMountRoot,
    /// A database in a Deployment: the StatefulSet hint.
    DatabaseInDeployment,
    /// A data path that cannot be placed.
    UnresolvedDataPath,
    /// A SQLite file mounted by itself; its journal lands on the writable layer.
    SqliteFileMount,
    /// A `pvc-guard.io/allow-ephemeral` opt-out that is not accepted.
    InvalidOptOut,
    /// A workload references a claim the cluster does not have.
    MissingClaim,
    /// An autoscaler can scale a Deployment with a claim at a data path.
    AutoscaledClaim,
    /// `audit` only: a claim whose StorageClass deletes the volume with it.
    ReclaimPolicyDelete,
    /// `audit` only: a StatefulSet whose retention policy deletes its claims.
    ClaimRetentionDelete,
}

impl Rule {
    pub fn id(self) -> &'static str {
        match self {
            Rule::EphemeralDataPath => "ephemeral-data-path",
            Rule::ConfigVolumeDataPath => "config-volume-data-path",
            Rule::NodeLocalDataPath => "node-local-data-path",
            Rule::UnknownStorage => "unknown-storage",
            Rule::ReadOnlyDataPath => "read-only-data-path",
            Rule::SharedClaimReplicas => "shared-claim-replicas",
            Rule::RollingUpdateClaim => "rolling-update-claim",
            Rule::PgdataMountRoot => "pgdata-mount-root",
            Rule::DatabaseInDeployment => "database-in-deployment",
            Rule::UnresolvedDataPath => "unresolved-data-path",
            Rule::SqliteFileMount => "sqlite-file-mount",
            Rule::InvalidOptOut => "invalid-opt-out",
            Rule::MissingClaim => "missing-claim",
            Rule::AutoscaledClaim => "autoscaled-claim",
            Rule::ReclaimPolicyDelete => "reclaim-policy-delete",
            Rule::ClaimRetentionDelete => "claim-retention-delete",
        }
    }

    /// One line on what the rule guards against, for SARIF rule metadata.
    pub fn summary(self) -> &'static str {
        match self {
            Rule::EphemeralDataPath => "A database data path on storage that dies with the pod",
            Rule::ConfigVolumeDataPath => "A database data path on a read-only source volume",
            Rule::NodeLocalDataPath => "A database data path on node-local storage",
            Rule::UnknownStorage => "A database data path on a CSI volume of unknown lifetime",
            Rule::ReadOnlyDataPath => "A database data path mounted readOnly",
            Rule::SharedClaimReplicas => "One claim at a data path used by several pods at once",
            Rule::RollingUpdateClaim => "A Deployment with a claim at a data path rolls updates",
            Rule::PgdataMountRoot => "Postgres PGDATA at the root of a claim's mount",
            Rule::DatabaseInDeployment => "A database in a Deployment rather than a StatefulSet",
            Rule::UnresolvedDataPath => "A data path pvc-guard cannot place",
            Rule::SqliteFileMount => "A SQLite file mounted by itself",
            Rule::InvalidOptOut => "An allow-ephemeral opt-out that is not accepted",
            Rule::MissingClaim => "A workload references a claim that does not exist",
            Rule::AutoscaledClaim => "An autoscaler can scale a database Deployment with a claim",
            Rule::ReclaimPolicyDelete => "A claim whose StorageClass deletes the volume with it",
            Rule::ClaimRetentionDelete => "A StatefulSet whose claims are deleted with it",
        }
    }

    pub const ALL: [Rule; 16] = [
        Rule::EphemeralDataPath,
        Rule::ConfigVolumeDataPath,
        Rule::NodeLocalDataPath,
        Rule::UnknownStorage,
        Rule::ReadOnlyDataPath,
        Rule::SharedClaimReplicas,
        Rule::RollingUpdateClaim,
        Rule::PgdataMountRoot,
        Rule::DatabaseInDeployment,
        Rule::UnresolvedDataPath,
        Rule::SqliteFileMount,
        Rule::InvalidOptOut,
        Rule::MissingClaim,
        Rule::AutoscaledClaim,
        Rule::ReclaimPolicyDelete,
        Rule::ClaimRetentionDelete,
    ];

    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.id() == id)
    }

    /// Does `pvc-guard.io/allow-ephemeral` cover it?
    pub fn opt_out_covers(self) -> bool {
        matches!(self, Rule::EphemeralDataPath | Rule::ConfigVolumeDataPath)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Warn,
    Deny,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warn => "warn",
            Severity::Deny => "deny",
        }
    }
}

/// One finding: a rule broken by one container at one path.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    pub container: String,
    pub path: String,
    /// The full text: what happens to the data and how to fix it.
    pub message: String,
    /// The one-line warning kubectl prints.
    #[serde(skip)]
    pub short: String,
    /// Which placed data path (index into `Assessment::sites`) it is about.
    #[serde(skip)]
    pub site: Option<usize>,
}

/// The API server truncates long warnings; keep each well under its limit.
pub const WARNING_LIMIT: usize = 240;

impl Finding {
    /// A finding about a whole object rather than one container's path.
    pub fn about_object(rule: Rule, path: &str, message: String) -> Finding {
        Finding {
            rule,
            severity: Severity::Warn,
            container: String::new(),
            path: path.to_string(),
            short: truncate(&message, WARNING_LIMIT),
            message,
            site: None,
        }
    }

    /// Findings are the same violation when rule, container and path match
    /// (so reordering containers is not a new violation).
    pub fn key(&self) -> (Rule, &str, &str) {
        (self.rule, &self.container, &self.path)
    }

    pub fn warning(&self) -> String {
        truncate(&self.short, WARNING_LIMIT)
    }
}

pub fn truncate(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let mut end = limit - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
