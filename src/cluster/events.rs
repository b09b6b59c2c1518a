//! Kubernetes Events on the workloads the controller acts on or judges,
//! where `kubectl describe` shows them: a claim created for it, a claim
//! the API server refused, findings that changed. Published through
//! kube-runtime's [`Recorder`], which aggregates a repeated event (same
//! object, reason and action within minutes) into a series instead of a
//! new object. Only `pvc-guard controller` publishes them, never the
//! admission path: a webhook must not write (it is `sideEffects: None`, and
//! a dry run would leave events behind).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

use super::metrics::ControllerMetrics;
use crate::policy::finding::truncate;

/// `reportingController` of every event: who says so.
pub const REPORTING_CONTROLLER: &str = "pvc-guard.io/controller";

/// A claim a record names was created for the workload.
pub const CLAIM_CREATED: &str = "ClaimCreated";
/// The API server refused to create a claim a record names (a quota, an
/// admission policy, an invalid spec): not retried until the workload
/// changes.
pub const CLAIM_CREATE_FAILED: &str = "ClaimCreateFailed";
/// The stored workload's findings changed, and some remain.
pub const POLICY_VIOLATION: &str = "PolicyViolation";
/// The stored workload had findings and has none now.
pub const POLICY_PASS: &str = "PolicyPass";

/// The API server refuses a note above 1 kB.
const NOTE_BYTES: usize = 1000;

/// The event publisher of one controller process. Clones share the
/// recorder's aggregation cache.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    metrics: ControllerMetrics,
}

impl Events {
    /// `instance` names this replica (`reportingInstance`: the pod's name).
    pub fn new(client: Client, instance: &str, metrics: ControllerMetrics) -> Events {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(instance.chars().take(128).collect()),
        };
        Events {
            recorder: Recorder::new(client, reporter),
            metrics,
        }
    }

    /// Publishes one event about `regarding`. A failure is logged and
    /// counted, never returned: an event is a courtesy, and the work it
    /// describes is done (or logged) either way.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: &str,
        related: Option<ObjectReference>,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(truncate(note, NOTE_BYTES)),
            action: action.into(),
            secondary: related,
        };
        match self.recorder.publish(&event, regarding).await {
            Ok(()) => {
                self.metrics.events_published.inc();
            }
            Err(e) => {
                self.metrics.event_errors.inc();
                warn!(
                    namespace = regarding.namespace.as_deref().unwrap_or(""),
                    object = %format!("{}/{}", regarding.kind.as_deref().unwrap_or(""), regarding.name.as_deref().unwrap_or("")),
                    reason,
                    error = %e,
                    "publishing an event failed"
                );
            }
        }
    }
}

/// A reference to a namespaced object, as an event's `regarding` or
/// `related`.
pub fn reference(
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: uid.map(str::to_string),
        ..ObjectReference::default()
    }
}
