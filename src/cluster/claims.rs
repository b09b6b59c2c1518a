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
use kube::api::{PartialObjectMeta, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::mutate::{ClaimSpec, MUTATED_ANNOTATION, Record};
use crate::server::metrics::ClusterMetrics;

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
    manifest["metadata"]["annotations"] = serde_json::json!({ "pvc-guard.io/created-for": owner });
    let claim: PersistentVolumeClaim =
        serde_json::from_value(manifest).map_err(kube::Error::SerdeError)?;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &claim).await {
        Ok(_) => Ok(Outcome::Created),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::AlreadyExists),
        Err(e) => Err(e),
    }
}

/// Metadata of stored workloads of one kind, as (kind, metadata).
fn stored<K>(
    client: &Client,
) -> BoxStream<'static, Result<(&'static str, ObjectMeta), watcher::Error>>
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
        .touched_objects()
        .map_ok(move |o| (kind, o.metadata))
        .boxed()
}

/// Watches the kinds a mutation records itself on and creates what is
/// missing; failed creations are retried every `retry`.
pub async fn run(
    client: Client,
    cache: Store<PersistentVolumeClaim>,
    metrics: ClusterMetrics,
    retry: Duration,
) {
    let _ = cache.wait_until_ready().await;
    let mut workloads = stream::select_all([
        stored::<Deployment>(&client),
        stored::<ReplicaSet>(&client),
        stored::<ReplicationController>(&client),
        stored::<Pod>(&client),
        stored::<Job>(&client),
    ]);
    let mut failed: BTreeMap<ClaimKey, (ClaimSpec, String)> = BTreeMap::new();
    let mut tick = tokio::time::interval(retry);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wanted: Vec<(ClaimKey, ClaimSpec, String)> = tokio::select! {
            next = workloads.next() => match next {
                Some(Ok((kind, meta))) => recorded_claims(kind, &meta),
                Some(Err(e)) => {
                    metrics.watch_errors.get_or_create(&crate::server::metrics::ResourceLabels { resource: "workloads" }).inc();
                    warn!(error = %e, "workload watch failed; retrying with backoff");
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
            match ensure_claim(&client, &cache, &namespace, &name, &spec, &owner).await {
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
                    metrics.claim_errors.inc();
                    warn!(namespace, claim = name, owner, error = %e, "creating a claim failed; will retry");
                    failed.insert((namespace, name), (spec, owner));
                }
            }
        }
    }
}

/// The claims a workload's `pvc-guard.io/mutated` record names.
fn recorded_claims(kind: &str, meta: &ObjectMeta) -> Vec<(ClaimKey, ClaimSpec, String)> {
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
        .into_iter()
        .map(|(name, spec)| ((namespace.clone(), name), spec, owner.clone()))
        .collect()
}

/// Runs [`run`] only while this replica holds the Lease, so two replicas
/// never race to create the same claims.
pub async fn run_elected(
    client: Client,
    cache: Store<PersistentVolumeClaim>,
    metrics: ClusterMetrics,
    lease_namespace: String,
    identity: String,
) -> anyhow::Result<()> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(lease_namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, _task) = manager.watch().await;
    loop {
        while !*leader.borrow_and_update() {
            leader.changed().await?;
        }
        metrics.leader.set(1);
        info!("claim controller: leading");
        tokio::select! {
            _ = run(client.clone(), cache.clone(), metrics.clone(), Duration::from_secs(30)) => {}
            _ = async {
                while *leader.borrow_and_update() {
                    if leader.changed().await.is_err() { break; }
                }
            } => {}
        }
        metrics.leader.set(0);
        info!("claim controller: lost the lease");
    }
}
