//! The cluster edge: watch caches that hand the policy its cluster facts,
//! the claim controller (and `pvc-guard controller`, the process that runs
//! it), and `audit`. Admission never waits on the API server; it reads what
//! the caches hold.

pub mod audit;
pub mod claims;
pub mod controller;
pub mod events;
pub mod metrics;
pub mod reports;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
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
            namespaces: watch(Api::all(client.clone()), "namespaces", metrics, None),
            claims: watch(
                Api::all(client.clone()),
                "persistentvolumeclaims",
                metrics,
                None,
            ),
            storage_classes: watch(Api::all(client.clone()), "storageclasses", metrics, None),
            autoscalers: watch(
                Api::all(client.clone()),
                "horizontalpodautoscalers",
                metrics,
                None,
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
        // No ConfigMap is watched: their data is large and often secret-like.
        config_maps: None,
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Namespaces whose cluster facts (labels, claims, autoscalers) changed
/// since the last [`Changed::take`], so the reports of just those are
/// computed again. A set, so it holds at most one entry per namespace
/// however long nobody takes it (a replica that does not lead).
#[derive(Default)]
pub struct Changed {
    namespaces: Mutex<HashSet<String>>,
    /// A cache was listed again: any namespace may have changed.
    all: AtomicBool,
    notify: Notify,
}

impl Changed {
    fn mark(&self, namespace: &str) {
        let mut set = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        if !set.contains(namespace) {
            set.insert(namespace.to_string());
        }
        drop(set);
        self.notify.notify_one();
    }

    fn mark_all(&self) {
        self.all.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Waits until something is marked.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// What changed since the last call: every namespace (`true`), or those listed.
    pub fn take(&self) -> (bool, Vec<String>) {
        let all = self.all.swap(false, Ordering::Relaxed);
        let set = std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|e| e.into_inner()));
        (all, set.into_iter().collect())
    }
}

/// A reflector over `api`, driven on its own task; each change is marked
/// in `changed`, when given, under the namespace it concerns.
fn watch<K>(
    api: Api<K>,
    resource: &'static str,
    metrics: &ClusterMetrics,
    changed: Option<Arc<Changed>>,
) -> Store<K>
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
                Ok(event) => {
                    if let Some(changed) = &changed {
                        match &event {
                            watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                                // A namespace is its own; anything else is in one.
                                match o.meta().namespace.as_deref() {
                                    Some(ns) => changed.mark(ns),
                                    None => changed.mark(&o.name_any()),
                                }
                            }
                            watcher::Event::InitDone => changed.mark_all(),
                            watcher::Event::Init | watcher::Event::InitApply(_) => {}
                        }
                    }
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

/// One event of a workload metadata watch.
pub(crate) enum Seen {
    /// The object as stored now (also each object of a re-list).
    Applied(ObjectMeta),
    Deleted(ObjectMeta),
    /// A re-list starts: whatever it does not list was deleted meanwhile.
    Relist,
    RelistDone,
}

/// A workload watch failed: which collection, and why.
pub(crate) type WatchFailure = (&'static str, watcher::Error);

/// Metadata events of the stored objects of `resource`, tagged with
/// `index`. Metadata only, on the wire too (kube asks the API server for
/// PartialObjectMetadata): what decides whether an object needs reading is
/// in its metadata, and specs are large.
pub(crate) fn metadata_events(
    client: &Client,
    resource: &ApiResource,
    collection: &'static str,
    index: usize,
) -> BoxStream<'static, Result<(usize, Seen), WatchFailure>> {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), resource);
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map_ok(move |event| {
            let seen = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    Seen::Applied(o.metadata)
                }
                watcher::Event::Delete(o) => Seen::Deleted(o.metadata),
                watcher::Event::Init => Seen::Relist,
                watcher::Event::InitDone => Seen::RelistDone,
            };
            (index, seen)
        })
        .map_err(move |e| (collection, e))
        .boxed()
}

/// A controller ownerReference: the object is judged through its owner.
pub(crate) fn controlled(meta: &ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}
