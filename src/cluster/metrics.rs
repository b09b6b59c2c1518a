//! What the cluster caches and the claim controller report: the caches'
//! series are registered by whichever process keeps caches (`serve` and
//! `controller`), the claim controller's only by `controller`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

/// Why a claim a record names was not created: one of the fixed set in
/// [`super::claims::Refusal`], so no workload can grow the series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: &'static str,
}

/// What the cluster caches report. Clones share the same series.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    /// When each cache last changed (an object event or a re-list). A quiet
    /// collection stays old while healthy; watch errors tell the two apart.
    pub cache_updated: Family<ResourceLabels, Gauge>,
    pub watch_errors: Family<ResourceLabels, Counter>,
    /// 1 once every cache has completed its first list (as /readyz says).
    pub caches_synced: Gauge,
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cluster_cache_updated_timestamp_seconds",
            "When each cluster cache last changed (an object event or a re-list)",
            self.cache_updated.clone(),
        );
        registry.register(
            "cluster_watch_errors",
            "Watch failures, each retried with backoff",
            self.watch_errors.clone(),
        );
        registry.register(
            "cluster_caches_synced",
            "1 once every cluster cache has completed its first list",
            self.caches_synced.clone(),
        );
    }
}

/// What `pvc-guard controller` reports. Clones share the same series.
#[derive(Clone, Default)]
pub struct ControllerMetrics {
    pub cluster: ClusterMetrics,
    pub claims_created: Counter,
    pub claim_create_errors: Counter,
    /// Claims a record names that were not created, by why; each counted
    /// once per version of the workload, as it is logged.
    pub claims_refused: Family<RefusalLabels, Counter>,
    pub leader: Gauge,
    /// Policy reports written (created or changed) and deleted.
    pub report_writes: Counter,
    /// Policy report writes and deletes that failed (tried again at the
    /// next resync).
    pub report_write_errors: Counter,
    /// Workloads the last computation of each namespace's report judged or
    /// skipped, summed.
    pub reported_workloads: Gauge,
    pub events_published: Counter,
    pub event_errors: Counter,
    pub config_reloads: Counter,
    pub config_reload_errors: Counter,
    pub config_last_reload_ok: Gauge,
}

impl ControllerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        self.cluster.register(registry);
        registry.register(
            "claims_created",
            "PersistentVolumeClaims the claim controller created",
            self.claims_created.clone(),
        );
        registry.register(
            "claim_create_errors",
            "Claim creations that failed (retried unless the API server refused them)",
            self.claim_create_errors.clone(),
        );
        registry.register(
            "claims_refused",
            "Claims a pvc-guard.io/mutated record names that the claim controller will not create, by reason",
            self.claims_refused.clone(),
        );
        registry.register(
            "claim_controller_leader",
            "Whether this replica holds the claim controller's Lease (1) or not (0)",
            self.leader.clone(),
        );
        registry.register(
            "policy_report_writes",
            "Policy reports written or deleted",
            self.report_writes.clone(),
        );
        registry.register(
            "policy_report_write_errors",
            "Policy report writes or deletes that failed (tried again at the next resync)",
            self.report_write_errors.clone(),
        );
        registry.register(
            "policy_report_workloads",
            "Workloads in the policy reports",
            self.reported_workloads.clone(),
        );
        registry.register(
            "events_published",
            "Kubernetes Events published on workloads",
            self.events_published.clone(),
        );
        registry.register(
            "event_errors",
            "Kubernetes Events that could not be published",
            self.event_errors.clone(),
        );
        registry.register(
            "config_reloads",
            "Configs loaded from a changed file",
            self.config_reloads.clone(),
        );
        registry.register(
            "config_reload_errors",
            "Changed config files that could not be loaded",
            self.config_reload_errors.clone(),
        );
        registry.register(
            "config_last_reload_success",
            "1 when the last config load succeeded",
            self.config_last_reload_ok.clone(),
        );
    }
}
