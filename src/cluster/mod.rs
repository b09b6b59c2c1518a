//! The cluster edge: watch caches that hand the policy its cluster facts,
//! the claim controller (and `pvc-guard controller`, the process that runs
//! it), and `audit`. Admission never waits on the API server; it reads what
//! the caches hold.

pub mod audit;
pub mod claims;
pub mod controller;
pub mod metrics;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

use crate::model::Workload;
use crate::policy::{Autoscaler, ClaimFacts, ClusterFacts};
use crate::record::CREATED_FOR_ANNOTATION;
use metrics::{ClusterMetrics, ResourceLabels};

/// Reflector caches of what the policy asks about.
#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<Namespace>,
    pub claims: Store<PersistentVolumeClaim>,
    pub storage_classes: Store<StorageClass>,
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    /// Every store has completed its first list. Only the sync task in
    /// `start` waits on the stores themselves: a store's readiness wakes
    /// only the last task that polled it (kube-runtime 5's `DelayedInit`
    /// holds one oneshot waker), so a second waiter could sleep forever.
    synced: Arc<AtomicBool>,
    /// A claim controller runs in this cluster (`createClaims`), so
    /// recorded claims will be created.
    pub claim_controller: bool,
}

impl Caches {
    /// Starts one watch per resource on the current runtime. Each is
    /// restarted with backoff when it breaks, for as long as the process runs.
    pub fn start(client: &Client, metrics: &ClusterMetrics, claim_controller: bool) -> Caches {
        let caches = Caches {
            namespaces: watch(Api::all(client.clone()), "namespaces", metrics),
            claims: watch(Api::all(client.clone()), "persistentvolumeclaims", metrics),
            storage_classes: watch(Api::all(client.clone()), "storageclasses", metrics),
            autoscalers: watch(
                Api::all(client.clone()),
                "horizontalpodautoscalers",
                metrics,
            ),
            synced: Arc::new(AtomicBool::new(false)),
            claim_controller,
        };
        let c = caches.clone();
        let synced_gauge = metrics.caches_synced.clone();
        tokio::spawn(async move {
            let all = async {
                tokio::join!(
                    c.namespaces.wait_until_ready(),
                    c.claims.wait_until_ready(),
                    c.storage_classes.wait_until_ready(),
                    c.autoscalers.wait_until_ready(),
                )
            };
            tokio::pin!(all);
            // A list that never succeeds (RBAC missing, API server down)
            // keeps /readyz at 503; say why where someone will look.
            let synced = match tokio::time::timeout(std::time::Duration::from_secs(30), &mut all)
                .await
            {
                Ok(synced) => synced,
                Err(_) => {
                    error!(
                        "the cluster caches have not synced after 30 s (see the watch errors above; check the API server and pvc-guard's RBAC): /readyz answers 503 until they do"
                    );
                    all.await
                }
            };
            if let (Ok(()), Ok(()), Ok(()), Ok(())) = synced {
                c.synced.store(true, Ordering::Relaxed);
                synced_gauge.set(1);
                info!("cluster caches synced");
            }
        });
        caches
    }

    /// Every cache has completed its first list.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// The facts for `object` in `namespace`; unknown until synced. Only the
    /// claims the object names are looked up, so a request costs the same
    /// in a cluster of ten claims or ten thousand.
    pub fn facts(&self, namespace: Option<&str>, workload: Option<&Workload>) -> ClusterFacts {
        if !self.synced() {
            return ClusterFacts {
                claim_controller: self.claim_controller,
                ..ClusterFacts::default()
            };
        }
        let ns = namespace.unwrap_or("default");
        let namespace = self.namespaces.get(&ObjectRef::new(ns));
        let claims: Vec<_> = workload
            .into_iter()
            .flat_map(Workload::claim_names)
            .filter_map(|name| self.claims.get(&ObjectRef::new(name).within(ns)))
            .collect();
        let autoscalers = self
            .autoscalers
            .state_filter(|h| h.namespace().as_deref() == Some(ns));
        // A named claim the cache lacks is left out: that records it as absent.
        facts_for(
            namespace.as_deref(),
            claims.iter().map(|c| c.as_ref()),
            autoscalers.iter().map(|h| h.as_ref()),
            self.claim_controller,
        )
    }
}

/// Cluster facts from one namespace's objects: shared by the caches and `audit`.
pub fn facts_for<'a>(
    namespace: Option<&Namespace>,
    claims: impl Iterator<Item = &'a PersistentVolumeClaim>,
    autoscalers: impl Iterator<Item = &'a HorizontalPodAutoscaler>,
    claim_controller: bool,
) -> ClusterFacts {
    ClusterFacts {
        namespace_labels: namespace.map(|n| n.labels().clone().into_iter().collect()),
        claims: Some(
            claims
                .map(|c| {
                    let spec = c.spec.clone().unwrap_or_default();
                    (
                        c.name_any(),
                        ClaimFacts {
                            access_modes: spec.access_modes.unwrap_or_default(),
                            storage_class: spec.storage_class_name,
                            created_for: c.annotations().get(CREATED_FOR_ANNOTATION).cloned(),
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        ),
        autoscalers: Some(
            autoscalers
                .map(|h| {
                    let spec = h.spec.clone().unwrap_or_default();
                    Autoscaler {
                        name: h.name_any(),
                        target_kind: spec.scale_target_ref.kind,
                        target_name: spec.scale_target_ref.name,
                        max_replicas: spec.max_replicas,
                    }
                })
                .collect(),
        ),
        claim_controller,
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A reflector over `api`, driven on its own task.
fn watch<K>(api: Api<K>, resource: &'static str, metrics: &ClusterMetrics) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let metrics = metrics.clone();
    // managedFields is most of a small object's size and nothing reads it.
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer);
    tokio::spawn(async move {
        let labels = ResourceLabels { resource };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    metrics
                        .cache_updated
                        .get_or_create(&labels)
                        .set(now_seconds());
                }
                Err(e) => {
                    metrics.watch_errors.get_or_create(&labels).inc();
                    warn!(resource, error = %e, "watch failed; retrying with backoff");
                }
            }
        }
    });
    reader
}
