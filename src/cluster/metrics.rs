//! What the cluster caches and the claim controller report, registered
//! into the server's registry by the server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

/// What the cluster caches and the claim controller report. Clones share
/// the same series.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    /// When each cache last changed (an object event or a re-list). A quiet
    /// collection stays old while healthy; watch errors tell the two apart.
    pub cache_updated: Family<ResourceLabels, Gauge>,
    pub watch_errors: Family<ResourceLabels, Counter>,
    pub claims_created: Counter,
    pub claim_create_errors: Counter,
    pub leader: Gauge,
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
            "claims_created",
            "PersistentVolumeClaims the claim controller created",
            self.claims_created.clone(),
        );
        registry.register(
            "claim_create_errors",
            "Claim creations that failed and will be retried",
            self.claim_create_errors.clone(),
        );
        registry.register(
            "claim_controller_leader",
            "Whether this replica holds the claim controller's Lease (1) or not (0)",
            self.leader.clone(),
        );
    }
}
