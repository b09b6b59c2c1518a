//! Prometheus metrics (prometheus-client), served as text on /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::refusals::Refusal;
use crate::cluster::metrics::ClusterMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    /// From [`kind_label`]: never the string the caller sent.
    pub kind: &'static str,
    pub operation: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub endpoint: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    pub decision: &'static str,
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// [`Refusal::as_str`]
    pub reason: &'static str,
}

/// The metric label of a request's kind: one of the workload kinds
/// pvc-guard judges, or `other`. Every caller-sent kind became a series of
/// its own before (20,000 made-up kinds grew /metrics to 42 MB).
pub fn kind_label(group: &str, kind: &str) -> &'static str {
    match (group, kind) {
        ("apps", "Deployment") => "Deployment",
        ("apps", "StatefulSet") => "StatefulSet",
        ("apps", "DaemonSet") => "DaemonSet",
        ("apps", "ReplicaSet") => "ReplicaSet",
        ("", "ReplicationController") => "ReplicationController",
        ("batch", "Job") => "Job",
        ("batch", "CronJob") => "CronJob",
        ("", "Pod") => "Pod",
        _ => "other",
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub cluster: ClusterMetrics,
    pub requests: Family<RequestLabels, Counter>,
    pub findings: Family<FindingLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram>,
    pub rejected: Family<RejectLabels, Counter>,
    pub policy_errors: Counter,
    pub panics: Counter,
    pub cert_expiry: Gauge,
    pub cert_reloads: Counter,
    pub cert_reload_errors: Counter,
    pub config_reloads: Counter,
    pub config_reload_errors: Counter,
    pub config_last_reload_ok: Gauge,
    pub connections: Gauge,
    pub reviews_running: Gauge,
    pub reviews_waiting: Gauge,
    pub buffered_bytes: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut root = crate::telemetry::registry();
        let registry = root.sub_registry_with_prefix("pvc_guard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "AdmissionReviews answered",
            requests.clone(),
        );
        let findings = Family::<FindingLabels, Counter>::default();
        registry.register(
            "admission_findings",
            "Findings in answered AdmissionReviews, by rule",
            findings.clone(),
        );
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ])
        });
        registry.register(
            "admission_duration_seconds",
            "Time from request to answer",
            latency.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "http_rejected",
            "Requests and connections refused before admission",
            rejected.clone(),
        );
        let policy_errors = Counter::default();
        registry.register(
            "policy_unreadable_objects",
            "Objects the policy could not read",
            policy_errors.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "policy_panics",
            "Panics caught in the policy",
            panics.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires",
            cert_expiry.clone(),
        );
        let cert_reloads = Counter::default();
        registry.register(
            "certificate_reloads",
            "Certificates loaded from changed files",
            cert_reloads.clone(),
        );
        let cert_reload_errors = Counter::default();
        registry.register(
            "certificate_reload_errors",
            "Changed certificate files that could not be loaded",
            cert_reload_errors.clone(),
        );
        let config_reloads = Counter::default();
        registry.register(
            "config_reloads",
            "Configs loaded from a changed file",
            config_reloads.clone(),
        );
        let config_reload_errors = Counter::default();
        registry.register(
            "config_reload_errors",
            "Changed config files that could not be loaded",
            config_reload_errors.clone(),
        );
        let config_last_reload_ok = Gauge::default();
        registry.register(
            "config_last_reload_success",
            "1 when the last config load succeeded",
            config_last_reload_ok.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "open_connections",
            "TLS connections being served",
            connections.clone(),
        );
        let reviews_running = Gauge::default();
        registry.register(
            "reviews_running",
            "Evaluations running on blocking threads (at most --max-concurrent-reviews)",
            reviews_running.clone(),
        );
        let reviews_waiting = Gauge::default();
        registry.register(
            "reviews_waiting",
            "Requests read and waiting for an evaluation slot (at most --max-queued-reviews)",
            reviews_waiting.clone(),
        );
        let buffered_bytes = Gauge::default();
        registry.register(
            "request_body_bytes",
            "Bytes of request bodies held in memory (at most --max-buffered-bytes)",
            buffered_bytes.clone(),
        );
        config_last_reload_ok.set(1);
        // Every series an alert or a panel reads exists from the start, so
        // a rate over it is 0 rather than no data.
        for why in Refusal::ALL {
            let _ = rejected.get_or_create(&RejectLabels {
                reason: why.as_str(),
            });
        }
        for endpoint in ["validate", "mutate"] {
            let _ = latency.get_or_create(&EndpointLabels { endpoint });
        }
        let cluster = ClusterMetrics::default();
        cluster.register(registry);
        Metrics {
            registry: root,
            cluster,
            requests,
            findings,
            latency,
            rejected,
            policy_errors,
            panics,
            cert_expiry,
            cert_reloads,
            cert_reload_errors,
            config_reloads,
            config_reload_errors,
            config_last_reload_ok,
            connections,
            reviews_running,
            reviews_waiting,
            buffered_bytes,
        }
    }

    pub fn reject(&self, why: Refusal) {
        self.rejected
            .get_or_create(&RejectLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// A gauge one higher while this lives, however its holder ends (done,
/// or dropped when a request timed out or a client went away).
pub struct Held(Gauge);

impl Held {
    pub fn new(gauge: &Gauge) -> Held {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
