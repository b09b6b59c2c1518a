//! The rules' ids: the vocabulary the policy, the config (per-rule
//! settings), the record and every message share. Every rule id appears
//! here once, in [`Rule::id`]; what each rule checks is in
//! src/policy/rules.rs, in a function of the same name.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// A `pvc-guard.io/claim-*` (or other) annotation with a value pvc-guard refuses.
    InvalidAnnotation,
    /// The object holds more than pvc-guard judges (containers, volumes, ...).
    LimitExceeded,
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
            Rule::InvalidAnnotation => "invalid-annotation",
            Rule::LimitExceeded => "limit-exceeded",
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
            Rule::InvalidAnnotation => "A pvc-guard annotation with a value pvc-guard refuses",
            Rule::LimitExceeded => "An object larger than pvc-guard judges",
            Rule::MissingClaim => "A workload references a claim that does not exist",
            Rule::AutoscaledClaim => "An autoscaler can scale a database Deployment with a claim",
            Rule::ReclaimPolicyDelete => "A claim whose StorageClass deletes the volume with it",
            Rule::ClaimRetentionDelete => "A StatefulSet whose claims are deleted with it",
        }
    }

    pub const ALL: [Rule; 18] = [
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
        Rule::InvalidAnnotation,
        Rule::LimitExceeded,
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

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}
