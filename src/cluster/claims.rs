//! The claim controller: creates the claims a `pvc-guard.io/mutated` record
//! names once the workload is stored. Admission never does this itself: the
//! webhooks are `sideEffects: None`, which is what makes dry-run safe.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{PartialObjectMeta, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

use super::metrics::{ClusterMetrics, ResourceLabels};
use crate::record::{CREATED_FOR_ANNOTATION, ClaimSpec, MUTATED_ANNOTATION, Record};

/// The Lease two replicas compete for, in the webhook's namespace.
pub const LEASE_NAME: &str = "pvc-guard-claim-controller";

/// A claim a stored workload's record names: (namespace, claim name).
type ClaimKey = (String, String);

/// What happened to one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exists,
    Created,
    /// Someone created it between the cache's view and ours: as good.
    AlreadyExists,
}

/// Creates `name` in `namespace` unless the cache already holds it. A 409
/// is success; no claim is ever modified or deleted.
pub async fn ensure_claim(
    client: &Client,
    cache: &Store<PersistentVolumeClaim>,
    namespace: &str,
    name: &str,
    spec: &ClaimSpec,
    owner: &str,
) -> Result<Outcome, kube::Error> {
    if cache.get(&ObjectRef::new(name).within(namespace)).is_some() {
        return Ok(Outcome::Exists);
    }
    let mut manifest = spec.manifest(name, Some(namespace));
    manifest["metadata"]["annotations"] = serde_json::json!({ CREATED_FOR_ANNOTATION: owner });
    let claim: PersistentVolumeClaim =
        serde_json::from_value(manifest).map_err(kube::Error::SerdeError)?;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &claim).await {
        Ok(_) => Ok(Outcome::Created),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::AlreadyExists),
        Err(e) => Err(e),
    }
}

/// A workload watch failed: which collection, and why.
type WatchFailure = (&'static str, watcher::Error);

/// Metadata of stored workloads of one kind, as (kind, metadata).
fn workload_metadata<K>(
    client: &Client,
    collection: &'static str,
) -> BoxStream<'static, Result<(&'static str, ObjectMeta), WatchFailure>>
where
    K: k8s_openapi::Resource
        + kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::KIND;
    // Metadata only: the record is an annotation, and specs are large.
    let api: Api<PartialObjectMeta<K>> = Api::all(client.clone());
    watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map_ok(move |o| (kind, o.metadata))
        .map_err(move |e| (collection, e))
        .boxed()
}

/// Worth another try: the API server is busy or unreachable. A 4xx other
/// than 429 (a namespace being deleted, a quota, an invalid size) will not
/// change by retrying.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::SerdeError(_) => false,
        _ => true,
    }
}

/// Watches the kinds a mutation records itself on and creates what is
/// missing; failed creations are retried every `retry`. Records are honoured
/// only where the webhook judges: not in `excluded` namespaces and not in
/// namespaces labelled `pvc-guard.io/ignore`, where admission never ran and
/// an annotation could be written by anyone.
pub async fn run(
    client: Client,
    caches: super::Caches,
    excluded: Vec<String>,
    metrics: ClusterMetrics,
    retry: Duration,
) {
    caches.wait_claims_synced().await;
    let mut workloads = stream::select_all([
        workload_metadata::<Deployment>(&client, "deployments"),
        workload_metadata::<ReplicaSet>(&client, "replicasets"),
        workload_metadata::<ReplicationController>(&client, "replicationcontrollers"),
        workload_metadata::<Pod>(&client, "pods"),
        workload_metadata::<Job>(&client, "jobs"),
    ]);
    let covered = |namespace: &str| {
        !excluded.iter().any(|e| e == namespace)
            && caches
                .namespaces
                .get(&ObjectRef::new(namespace))
                .is_none_or(|n| {
                    n.labels().get("pvc-guard.io/ignore").map(String::as_str) != Some("true")
                })
    };
    let mut failed: BTreeMap<ClaimKey, (ClaimSpec, String)> = BTreeMap::new();
    let mut tick = tokio::time::interval(retry);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wanted: Vec<(ClaimKey, ClaimSpec, String)> = tokio::select! {
            next = workloads.next() => match next {
                Some(Ok((kind, meta))) => recorded_claims(kind, &meta),
                Some(Err((resource, e))) => {
                    metrics.watch_errors.get_or_create(&ResourceLabels { resource }).inc();
                    warn!(resource, error = %e, "workload watch failed; retrying with backoff");
                    continue;
                }
                None => return,
            },
            _ = tick.tick() => std::mem::take(&mut failed)
                .into_iter()
                .map(|(key, (spec, owner))| (key, spec, owner))
                .collect(),
        };
        for ((namespace, name), spec, owner) in wanted {
            if !covered(&namespace) {
                continue;
            }
            match ensure_claim(&client, &caches.claims, &namespace, &name, &spec, &owner).await {
                Ok(Outcome::Created) => {
                    metrics.claims_created.inc();
                    info!(
                        namespace,
                        claim = name,
                        owner,
                        "created the claim a mutated workload needs"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.claim_create_errors.inc();
                    if transient(&e) {
                        warn!(namespace, claim = name, owner, error = %e, "creating a claim failed; will retry");
                        failed.insert((namespace, name), (spec, owner));
                    } else {
                        error!(namespace, claim = name, owner, error = %e, "creating a claim was refused; not retrying");
                    }
                }
            }
        }
    }
}

/// The claims a workload's `pvc-guard.io/mutated` record names.
/// Objects being deleted and objects a controller owns are skipped: a
/// ReplicaSet carries a copy of its Deployment's annotations, and a late
/// event for a deleted workload must not bring back a claim just deleted.
fn recorded_claims(kind: &str, meta: &ObjectMeta) -> Vec<(ClaimKey, ClaimSpec, String)> {
    let controlled = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    if meta.deletion_timestamp.is_some() || controlled {
        return Vec::new();
    }
    let Some(text) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(MUTATED_ANNOTATION))
    else {
        return Vec::new();
    };
    let Some(record) = Record::parse(text) else {
        return Vec::new();
    };
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let owner = format!("{kind}/{}", meta.name.as_deref().unwrap_or(""));
    record
        .claims()
        .map(|(name, spec)| {
            (
                (namespace.clone(), name.to_string()),
                spec.clone(),
                owner.clone(),
            )
        })
        .collect()
}

/// Who competes for the claim controller's Lease, and where it lives.
#[derive(Debug, Clone)]
pub struct Election {
    pub lease_namespace: String,
    pub identity: String,
}

/// Runs [`run`] only while this replica holds the Lease, so two replicas
/// do not both create claims, until `stop` turns true; then hands the Lease
/// back so the next leader need not wait for it to expire.
pub async fn run_elected(
    client: Client,
    caches: super::Caches,
    excluded: Vec<String>,
    metrics: ClusterMetrics,
    election: Election,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut stop_for_build = stop.clone();
    let build = async {
        // The Lease may be out of reach at start (API server restarting,
        // RBAC not applied yet): keep trying rather than never lead.
        let mut delay = Duration::from_secs(1);
        loop {
            let built = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
                .with_namespace(election.lease_namespace.clone())
                .with_identity(election.identity.clone())
                .with_duration(15)
                .with_grace(5)
                .build()
                .await;
            match built {
                Ok(manager) => return manager,
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "claim controller: the Lease is out of reach");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    };
    let manager = tokio::select! {
        m = build => m,
        _ = stop_for_build.wait_for(|s| *s) => return,
    };
    let (mut leader, lease_task) = manager.watch().await;
    loop {
        tokio::select! {
            led = leader.wait_for(|l| *l) => if led.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
        metrics.leader.set(1);
        info!("claim controller: leading");
        // The lease crate logs a renewal that keeps failing but does not
        // report the lease lost, so in a partition two replicas may both run
        // for a while. That is safe: a claim created twice is a 409, done.
        let stopped = tokio::select! {
            _ = run(client.clone(), caches.clone(), excluded.clone(), metrics.clone(), Duration::from_secs(30)) => false,
            _ = leader.wait_for(|l| !*l) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        metrics.leader.set(0);
        if stopped {
            break;
        }
        info!("claim controller: lost the lease");
    }
    // Closing the channel makes the lease task release the Lease.
    drop(leader);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
}
