//! The claim controller: creates the claims a stored workload's
//! `pvc-guard.io/mutated` record names, and only those admission itself
//! could have asked for. Admission never creates anything (the webhooks
//! are `sideEffects: None`, which is what makes dry-run safe), so this is
//! the one place pvc-guard writes to the cluster, with rights of its own
//! (`pvc-guard controller`, its own Deployment and ServiceAccount).
//!
//! The record is an annotation: whoever can write the workload can write
//! it, and where the webhook does not judge nothing checks it. So it is
//! read as a list of claim names to look at, never as an authority
//! (src/record.rs). A claim is created only when
//! - the namespace is one the webhook judges and fixes in: not the control
//!   plane's, not pvc-guard's own, not in the live config's
//!   `excludedNamespaces`, not labelled `pvc-guard.io/ignore=true` or
//!   `pvc-guard.io/mutate=false`, and `mutate` is on in the config;
//! - the stored workload's pod mounts it: a volume with that `claimName`
//!   that some container mounts, read from the full object, which is
//!   fetched only for workloads whose metadata carries a record;
//! - its size, class and access mode are within the live config's
//!   `claims.maxSize`, `allowedStorageClasses` and `allowedAccessModes`,
//!   the limits admission holds the claim annotations to.
//!
//! Anything else is logged and counted by reason, never clamped: what is
//! left is what the same user could get through admission with the claim
//! annotations.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::events::Events;
use super::metrics::{ClusterMetrics, ControllerMetrics, RefusalLabels, ResourceLabels};
use super::{Changed, Seen, controlled};
use crate::config::{ClaimDefaults, Config};
use crate::k8s;
use crate::model::{Object, Volume, Workload};
use crate::record::{CREATED_FOR_ANNOTATION, ClaimSpec, MUTATED_ANNOTATION, Record};

/// The Lease the controller's replicas compete for, in their namespace.
pub const LEASE_NAME: &str = "pvc-guard-claim-controller";

/// The control plane's namespaces: the webhooks' namespaceSelector leaves
/// them out, so admission never ran on what they hold. pvc-guard's own
/// namespace (the Lease's) is left out the same way, at run time.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Why a claim a record names is not created. A fixed set: each is a label
/// value of `pvc_guard_claims_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// kube-system, kube-public, kube-node-lease or pvc-guard's own.
    SystemNamespace,
    /// In the config's `excludedNamespaces`.
    ExcludedNamespace,
    /// Labelled `pvc-guard.io/ignore=true`.
    IgnoredNamespace,
    /// Labelled `pvc-guard.io/mutate=false`, or `mutate: false` in the config.
    MutationOff,
    /// The annotation is not a record pvc-guard could have written.
    InvalidRecord,
    /// The stored object cannot be read as a workload.
    UnreadableWorkload,
    /// No container of the pod mounts a volume of that claim.
    NotMounted,
    /// Not a name a claim can have.
    InvalidClaimName,
    /// Not a size, zero, or above `claims.maxSize`.
    Size,
    /// A class `claims.allowedStorageClasses` does not list.
    StorageClass,
    /// An access mode `claims.allowedAccessModes` does not list.
    AccessMode,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::SystemNamespace,
        Refusal::ExcludedNamespace,
        Refusal::IgnoredNamespace,
        Refusal::MutationOff,
        Refusal::InvalidRecord,
        Refusal::UnreadableWorkload,
        Refusal::NotMounted,
        Refusal::InvalidClaimName,
        Refusal::Size,
        Refusal::StorageClass,
        Refusal::AccessMode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SystemNamespace => "system-namespace",
            Refusal::ExcludedNamespace => "excluded-namespace",
            Refusal::IgnoredNamespace => "ignored-namespace",
            Refusal::MutationOff => "mutation-off",
            Refusal::InvalidRecord => "invalid-record",
            Refusal::UnreadableWorkload => "unreadable-workload",
            Refusal::NotMounted => "not-mounted",
            Refusal::InvalidClaimName => "invalid-claim-name",
            Refusal::Size => "size",
            Refusal::StorageClass => "storage-class",
            Refusal::AccessMode => "access-mode",
        }
    }
}

/// A refusal and the sentence that explains it.
pub type Refused = (Refusal, String);

/// A claim a workload's record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub claim: String,
    pub spec: ClaimSpec,
    /// Some container of the pod mounts a volume of this claim.
    pub mounted: bool,
}

/// The claims `workload`'s own `pvc-guard.io/mutated` record names, each
/// with whether the pod mounts it; `None` without a record.
pub fn wanted_claims(workload: &Workload) -> Option<Result<Vec<Wanted>, Refused>> {
    let text = workload.mutated()?;
    let Some(record) = Record::parse(text) else {
        return Some(Err((
            Refusal::InvalidRecord,
            "the pvc-guard.io/mutated annotation is not a record pvc-guard writes".into(),
        )));
    };
    // Past a cap the view holds only the first items, so a mount could be
    // missed; admission denies such an object anyway (limit-exceeded).
    if let Some((what, n, cap)) = workload.exceeded_limit() {
        return Some(Err((
            Refusal::UnreadableWorkload,
            format!("the pod has {n} {what}, more than pvc-guard reads ({cap})"),
        )));
    }
    let mounted_volumes: HashSet<&str> = workload
        .containers()
        .flat_map(|c| c.container.mounts())
        .filter_map(|m| m.name.as_deref())
        .collect();
    let mounted_claims: HashSet<&str> = workload
        .pod
        .volumes
        .iter()
        .filter(|v| mounted_volumes.contains(v.name()))
        .filter_map(Volume::claim)
        .collect();
    Some(Ok(record
        .claims()
        .map(|(claim, spec)| Wanted {
            claim: claim.to_string(),
            spec: spec.clone(),
            mounted: mounted_claims.contains(claim),
        })
        .collect()))
}

/// Why nothing is created in `namespace`, if so. `labels`: the
/// namespace's, `None` when they are not known yet (then only its name
/// and the config can refuse).
pub fn gate(
    config: &Config,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    own_namespace: &str,
) -> Option<Refused> {
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    if SYSTEM_NAMESPACES.contains(&namespace) || namespace == own_namespace {
        Some((
            Refusal::SystemNamespace,
            format!("the webhooks never judge namespace {namespace}"),
        ))
    } else if config.excluded_namespaces.iter().any(|e| e == namespace) {
        Some((
            Refusal::ExcludedNamespace,
            format!("namespace {namespace} is in the config's excludedNamespaces"),
        ))
    } else if label("pvc-guard.io/ignore") == Some("true") {
        Some((
            Refusal::IgnoredNamespace,
            format!(
                "namespace {namespace} is labelled pvc-guard.io/ignore=true: the webhooks do not judge it"
            ),
        ))
    } else if label("pvc-guard.io/mutate") == Some("false") {
        Some((
            Refusal::MutationOff,
            format!(
                "namespace {namespace} is labelled pvc-guard.io/mutate=false: the webhook fixes nothing there"
            ),
        ))
    } else if !config.mutate {
        Some((
            Refusal::MutationOff,
            "the config turns the mutation off (mutate: false)".into(),
        ))
    } else {
        None
    }
}

/// Is `spec` for claim `claim` within `limits`, as admission holds the
/// claim annotations to them?
pub fn check_spec(limits: &ClaimDefaults, claim: &str, spec: &ClaimSpec) -> Result<(), Refused> {
    if !k8s::is_dns_subdomain(claim) {
        return Err((
            Refusal::InvalidClaimName,
            format!("{claim:?} is not a claim name"),
        ));
    }
    let max = k8s::parse_quantity(&limits.max_size);
    let size = k8s::parse_quantity(&spec.size);
    if !size.is_some_and(|q| q > 0.0 && max.is_none_or(|m| q <= m)) {
        return Err((
            Refusal::Size,
            format!(
                "size {:?} is not a size above zero of at most {} (claims.maxSize)",
                spec.size, limits.max_size
            ),
        ));
    }
    let allowed = &limits.allowed_storage_classes;
    match &spec.storage_class {
        Some(class)
            if !k8s::is_dns_subdomain(class)
                || !(allowed.is_empty() || allowed.contains(class)) =>
        {
            return Err((
                Refusal::StorageClass,
                format!(
                    "storage class {class:?} is not one of {} (claims.allowedStorageClasses)",
                    allowed.join(", ")
                ),
            ));
        }
        // Admission leaves the class unset only when the config names no
        // default class: then the cluster's default is what it asks for.
        None if !allowed.is_empty() && limits.storage_class.is_some() => {
            return Err((
                Refusal::StorageClass,
                format!(
                    "no storage class (the cluster's default), where the config allows only {} (claims.allowedStorageClasses)",
                    allowed.join(", ")
                ),
            ));
        }
        _ => {}
    }
    if !limits.allowed_access_modes.contains(&spec.access_mode) {
        return Err((
            Refusal::AccessMode,
            format!(
                "access mode {:?} is not one of {} (claims.allowedAccessModes)",
                spec.access_mode,
                limits.allowed_access_modes.join(", ")
            ),
        ));
    }
    Ok(())
}

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

/// The caches the controller reads: namespaces (their labels), claims
/// (which exist) and autoscalers, the cluster facts its reports judge
/// with. The webhook's caches are not reused: this process has no use for
/// storage classes, nor rights to read them.
#[derive(Clone)]
pub struct Stores {
    pub namespaces: Store<Namespace>,
    pub claims: Store<PersistentVolumeClaim>,
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    /// The namespaces whose facts changed, for the reports.
    pub changed: Arc<Changed>,
    synced: watch::Receiver<bool>,
}

impl Stores {
    /// Starts the three watches on the current runtime, each restarted
    /// with backoff when it breaks.
    pub fn start(client: &Client, metrics: &ClusterMetrics) -> Stores {
        let changed = Arc::new(Changed::default());
        let namespaces = super::watch(
            Api::all(client.clone()),
            "namespaces",
            metrics,
            Some(changed.clone()),
        );
        let claims = super::watch(
            Api::all(client.clone()),
            "persistentvolumeclaims",
            metrics,
            Some(changed.clone()),
        );
        let autoscalers = super::watch(
            Api::all(client.clone()),
            "horizontalpodautoscalers",
            metrics,
            Some(changed.clone()),
        );
        let (set_synced, synced) = watch::channel(false);
        let (n, c, a) = (namespaces.clone(), claims.clone(), autoscalers.clone());
        let synced_gauge = metrics.caches_synced.clone();
        // The one waiter on the stores themselves: a store's readiness
        // wakes only the last task that polled it (see `Caches::synced`).
        tokio::spawn(async move {
            let ready = async {
                tokio::join!(
                    n.wait_until_ready(),
                    c.wait_until_ready(),
                    a.wait_until_ready()
                )
            };
            tokio::pin!(ready);
            let ready = match tokio::time::timeout(Duration::from_secs(30), &mut ready).await {
                Ok(ready) => ready,
                Err(_) => {
                    error!(
                        "the namespaces, claims and autoscalers caches have not synced after 30 s (see the watch errors above; check the API server and the controller's RBAC): /readyz answers 503 until they do"
                    );
                    ready.await
                }
            };
            if let (Ok(()), Ok(()), Ok(())) = ready {
                set_synced.send_replace(true);
                synced_gauge.set(1);
                info!("claim controller caches synced");
            }
        });
        Stores {
            namespaces,
            claims,
            autoscalers,
            changed,
            synced,
        }
    }

    /// Both caches have completed their first list.
    pub fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        // Err: the sync task ended without syncing, which only happens as
        // the runtime shuts down.
        let _ = synced.wait_for(|s| *s).await;
    }
}

/// A workload kind the mutation gives claim volumes to (a StatefulSet's
/// claims come from its own controller, a CronJob is never fixed).
struct WorkloadKind {
    kind: &'static str,
    /// The plural, for logs and metric labels.
    collection: &'static str,
    resource: ApiResource,
}

fn workload_kind<K>() -> WorkloadKind
where
    K: k8s_openapi::Resource + kube::Resource<DynamicType = ()>,
{
    WorkloadKind {
        kind: <K as k8s_openapi::Resource>::KIND,
        collection: <K as k8s_openapi::Resource>::URL_PATH_SEGMENT,
        resource: ApiResource::erase::<K>(&()),
    }
}

/// What identifies one version of a workload for the controller: its uid
/// (a workload deleted and created again is another), its `generation`
/// (the spec's version; absent on Pods, whose volumes and mounts never
/// change) and a digest of its record. `None`: nothing to do for this
/// object. Objects being deleted and objects a controller
/// owns are skipped: a ReplicaSet carries a copy of its Deployment's
/// annotations (the Deployment is the one recorded), and a late event for
/// a deleted workload must not bring back a claim just deleted.
fn version_of(meta: &ObjectMeta) -> Option<Version> {
    if meta.deletion_timestamp.is_some() || controlled(meta) {
        return None;
    }
    let record = meta.annotations.as_ref()?.get(MUTATED_ANNOTATION)?;
    Some((meta.uid.clone(), meta.generation, k8s::short_hash(record)))
}

type Version = (Option<String>, Option<i64>, String);

/// The claims the record in `meta` names; none when it is not a record.
fn named_claims(meta: &ObjectMeta) -> Vec<String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(MUTATED_ANNOTATION))
        .and_then(|text| Record::parse(text))
        .map(|r| r.claims().map(|(name, _)| name.to_string()).collect())
        .unwrap_or_default()
}

/// A tracked workload: its kind (an index into the watched kinds),
/// namespace and name.
type Key = (usize, String, String);

fn key_of(kind: usize, meta: &ObjectMeta) -> Key {
    (
        kind,
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// What the controller knows of one stored workload that carries a record.
struct Tracked {
    kind: usize,
    namespace: String,
    name: String,
    version: Version,
    /// The claims the record in the watched metadata names, for what is
    /// logged before (or without) reading the full object.
    named: Vec<String>,
    /// What the full object's record asks for; `None` until it was read
    /// (a failed read is tried again at the next resync).
    read: Option<Result<Vec<Wanted>, Refused>>,
    /// Refusals logged and counted for this version, by claim.
    reported: BTreeSet<(String, Refusal)>,
    /// Claims created, found, or refused by the API server for this
    /// version: not tried again until the workload changes.
    done: BTreeSet<String>,
}

/// What a GET of the stored workload found.
enum Stored {
    /// Deleted, replaced, being deleted, owned, or without a record now:
    /// its own watch event says what to do next.
    Gone,
    Read(Result<Vec<Wanted>, Refused>),
}

struct Controller {
    client: Client,
    stores: Stores,
    own_namespace: String,
    metrics: ControllerMetrics,
    events: Events,
    kinds: Vec<WorkloadKind>,
}

impl Controller {
    async fn read_stored(&self, t: &Tracked) -> Result<Stored, kube::Error> {
        let kind = &self.kinds[t.kind];
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &t.namespace, &kind.resource);
        let Some(object) = api.get_opt(&t.name).await? else {
            return Ok(Stored::Gone);
        };
        let meta = &object.metadata;
        if meta.uid != t.version.0 || version_of(meta).is_none() {
            return Ok(Stored::Gone);
        }
        let mut value = serde_json::to_value(&object).map_err(kube::Error::SerdeError)?;
        if value.get("kind").is_none() {
            value["kind"] = kind.kind.into();
            value["apiVersion"] = kind.resource.api_version.clone().into();
        }
        Ok(match Object::from_value(&value) {
            Ok(Object::Workload(w)) => match wanted_claims(&w) {
                Some(read) => Stored::Read(read),
                None => Stored::Gone,
            },
            Ok(Object::Other) => Stored::Read(Err((
                Refusal::UnreadableWorkload,
                format!("{} is not a kind pvc-guard fixes", kind.kind),
            ))),
            Err(e) => Stored::Read(Err((Refusal::UnreadableWorkload, e.0))),
        })
    }

    /// Decides and acts for one tracked workload. `false`: stop tracking it.
    async fn evaluate(&self, t: &mut Tracked, config: &Config) -> bool {
        let owner = format!("{}/{}", self.kinds[t.kind].kind, t.name);
        let namespace = self.stores.namespaces.get(&ObjectRef::new(&t.namespace));
        let gated = gate(
            config,
            &t.namespace,
            namespace.as_ref().map(|n| n.labels()),
            &self.own_namespace,
        );
        // A namespace the cache has not seen yet is decided at the next
        // resync rather than taken as unlabelled.
        if gated.is_none() && namespace.is_none() {
            return true;
        }
        let named = || {
            let open: Vec<&str> = t
                .named
                .iter()
                .filter(|c| !t.done.contains(*c))
                .map(String::as_str)
                .collect();
            open.join(",")
        };
        let decisions: Vec<(String, Result<ClaimSpec, Refused>)> = if let Some(refused) = gated {
            // Nothing is read where nothing will be created.
            let named = named();
            if named.is_empty() && !t.named.is_empty() {
                return true;
            }
            vec![(named, Err(refused))]
        } else {
            if t.read.is_none() {
                match self.read_stored(t).await {
                    Ok(Stored::Gone) => return false,
                    Ok(Stored::Read(read)) => t.read = Some(read),
                    Err(e) => {
                        warn!(namespace = %t.namespace, workload = %owner, error = %e, "reading a workload that carries a record failed; will retry");
                        return true;
                    }
                }
            }
            match t.read.as_ref() {
                None => return true,
                Some(Err(refused)) => vec![(named(), Err(refused.clone()))],
                Some(Ok(wanted)) => wanted
                    .iter()
                    .filter(|w| !t.done.contains(&w.claim))
                    .map(|w| {
                        let decision = if w.mounted {
                            check_spec(&config.claims, &w.claim, &w.spec).map(|()| w.spec.clone())
                        } else {
                            Err((
                                Refusal::NotMounted,
                                format!(
                                    "no container of the pod mounts a volume of claim {:?}",
                                    w.claim
                                ),
                            ))
                        };
                        (w.claim.clone(), decision)
                    })
                    .collect(),
            }
        };
        let mut reported = BTreeSet::new();
        for (claim, decision) in decisions {
            let spec = match decision {
                Ok(spec) => spec,
                Err((reason, why)) => {
                    let key = (claim, reason);
                    if !t.reported.contains(&key) {
                        self.metrics
                            .claims_refused
                            .get_or_create(&RefusalLabels {
                                reason: reason.as_str(),
                            })
                            .inc();
                        warn!(namespace = %t.namespace, workload = %owner, claim = %key.0, reason = reason.as_str(), why = %why, "not creating a claim the pvc-guard.io/mutated record names");
                    }
                    reported.insert(key);
                    continue;
                }
            };
            let created = ensure_claim(
                &self.client,
                &self.stores.claims,
                &t.namespace,
                &claim,
                &spec,
                &owner,
            )
            .await;
            let kind = &self.kinds[t.kind];
            let regarding = super::events::reference(
                &kind.resource.api_version,
                kind.kind,
                &t.namespace,
                &t.name,
                t.version.0.as_deref(),
            );
            let claim_ref =
                super::events::reference("v1", "PersistentVolumeClaim", &t.namespace, &claim, None);
            match created {
                Ok(outcome) => {
                    if outcome == Outcome::Created {
                        self.metrics.claims_created.inc();
                        info!(namespace = %t.namespace, claim = %claim, workload = %owner, size = %spec.size, "created claim");
                        let note = format!(
                            "created PersistentVolumeClaim {claim} ({}, {}, storage class {}) that the pvc-guard.io/mutated record names",
                            spec.size,
                            spec.access_mode,
                            spec.storage_class
                                .as_deref()
                                .unwrap_or("(the cluster's default)")
                        );
                        self.events
                            .publish(
                                &regarding,
                                false,
                                super::events::CLAIM_CREATED,
                                "CreateClaim",
                                &note,
                                Some(claim_ref),
                            )
                            .await;
                    }
                    t.done.insert(claim);
                }
                Err(e) => {
                    self.metrics.claim_create_errors.inc();
                    if transient(&e) {
                        warn!(namespace = %t.namespace, claim = %claim, workload = %owner, error = %e, "creating a claim failed; will retry");
                    } else {
                        error!(namespace = %t.namespace, claim = %claim, workload = %owner, error = %e, "creating a claim was refused; not retrying until the workload changes");
                        // What the API server said, where the workload's owner looks.
                        let why = match &e {
                            kube::Error::Api(status) => {
                                format!("{} ({}): {}", status.reason, status.code, status.message)
                            }
                            other => other.to_string(),
                        };
                        let note = format!(
                            "creating PersistentVolumeClaim {claim} ({}) was refused by the API server: {why}. Not retried until {owner} changes.",
                            spec.size
                        );
                        self.events
                            .publish(
                                &regarding,
                                true,
                                super::events::CLAIM_CREATE_FAILED,
                                "CreateClaim",
                                &note,
                                Some(claim_ref),
                            )
                            .await;
                        t.done.insert(claim);
                    }
                }
            }
        }
        t.reported = reported;
        true
    }
}

/// Watches the kinds a mutation records claims on and creates what is
/// missing, as the module says. Every `resync` (and whenever `config`
/// changes) each tracked workload is decided again from the caches: a
/// failed creation is retried, a namespace label or a config change takes
/// effect, and nothing is read from the API server again.
pub async fn run(
    client: Client,
    stores: Stores,
    mut config: watch::Receiver<Arc<Config>>,
    own_namespace: String,
    metrics: ControllerMetrics,
    events: Events,
    resync: Duration,
) {
    stores.wait_synced().await;
    let controller = Controller {
        kinds: vec![
            workload_kind::<Deployment>(),
            workload_kind::<ReplicaSet>(),
            workload_kind::<ReplicationController>(),
            workload_kind::<Pod>(),
            workload_kind::<Job>(),
        ],
        client,
        stores,
        own_namespace,
        metrics,
        events,
    };
    let c = &controller.client;
    let mut events = stream::select_all(
        controller
            .kinds
            .iter()
            .enumerate()
            .map(|(i, k)| super::metadata_events(c, &k.resource, k.collection, i)),
    );
    let mut tracked: HashMap<Key, Tracked> = HashMap::new();
    // Per kind being re-listed: what it listed so far.
    let mut relisting: HashMap<usize, HashSet<Key>> = HashMap::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + resync, resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut config_open = true;
    loop {
        let resync_all = tokio::select! {
            next = events.next() => match next {
                Some(Ok((kind, seen))) => {
                    let config = config.borrow().clone();
                    match seen {
                        Seen::Relist => {
                            relisting.insert(kind, HashSet::new());
                        }
                        Seen::RelistDone => {
                            if let Some(listed) = relisting.remove(&kind) {
                                tracked.retain(|key, _| key.0 != kind || listed.contains(key));
                            }
                        }
                        Seen::Deleted(meta) => {
                            let key = key_of(kind, &meta);
                            if tracked.get(&key).is_some_and(|t| t.version.0 == meta.uid) {
                                tracked.remove(&key);
                            }
                        }
                        Seen::Applied(meta) => {
                            let key = key_of(kind, &meta);
                            let Some(version) = version_of(&meta) else {
                                tracked.remove(&key);
                                continue;
                            };
                            if let Some(listed) = relisting.get_mut(&kind) {
                                listed.insert(key.clone());
                            }
                            let t = tracked.entry(key.clone()).or_insert_with(|| Tracked {
                                kind,
                                namespace: key.1.clone(),
                                name: key.2.clone(),
                                version: version.clone(),
                                named: named_claims(&meta),
                                read: None,
                                reported: BTreeSet::new(),
                                done: BTreeSet::new(),
                            });
                            if t.version != version {
                                t.version = version;
                                t.named = named_claims(&meta);
                                t.read = None;
                                t.reported.clear();
                                t.done.clear();
                            }
                            if !controller.evaluate(t, &config).await {
                                tracked.remove(&key);
                            }
                        }
                    }
                    false
                }
                Some(Err((resource, e))) => {
                    controller.metrics.cluster.watch_errors.get_or_create(&ResourceLabels { resource }).inc();
                    warn!(resource, error = %e, "workload watch failed; retrying with backoff");
                    false
                }
                None => return,
            },
            _ = tick.tick() => true,
            changed = config.changed(), if config_open => {
                config_open = changed.is_ok();
                config_open
            }
        };
        if resync_all {
            let config = config.borrow_and_update().clone();
            let mut gone = Vec::new();
            for (key, t) in tracked.iter_mut() {
                if !controller.evaluate(t, &config).await {
                    gone.push(key.clone());
                }
            }
            for key in gone {
                tracked.remove(&key);
            }
        }
    }
}

/// Who competes for the claim controller's Lease, and where it lives (the
/// namespace pvc-guard runs in, which the controller also never creates
/// claims in).
#[derive(Debug, Clone)]
pub struct Election {
    pub lease_namespace: String,
    pub identity: String,
}

/// The Lease holder's name: unique per replica, and the pod's name when the
/// downward API provides it (so `kubectl get lease` names the pod).
pub fn lease_identity() -> String {
    ["POD_NAME", "HOSTNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            format!("pvc-guard-{}-{nanos:x}", std::process::id())
        })
}

/// Runs [`run`] only while this replica holds the Lease, so two replicas
/// do not both create claims, until `stop` turns true; then hands the Lease
/// back so the next leader need not wait for it to expire.
pub async fn run_elected(
    client: Client,
    stores: Stores,
    config: watch::Receiver<Arc<Config>>,
    metrics: ControllerMetrics,
    election: Election,
    reports: super::reports::Options,
    mut stop: watch::Receiver<bool>,
) {
    let events = Events::new(client.clone(), &election.identity, metrics.clone());
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
        // for a while. That is safe: a claim created twice is a 409, done,
        // and two writers of a report write the same document.
        let claims = run(
            client.clone(),
            stores.clone(),
            config.clone(),
            election.lease_namespace.clone(),
            metrics.clone(),
            events.clone(),
            Duration::from_secs(30),
        );
        let reports = super::reports::run(
            client.clone(),
            stores.clone(),
            config.clone(),
            election.lease_namespace.clone(),
            metrics.clone(),
            events.clone(),
            reports.clone(),
        );
        // Either ends only when its watches do, which they never do.
        let running = async {
            tokio::join!(claims, reports);
        };
        let stopped = tokio::select! {
            _ = running => false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(size: &str, class: Option<&str>, mode: &str) -> ClaimSpec {
        ClaimSpec {
            size: size.into(),
            storage_class: class.map(str::to_string),
            access_mode: mode.into(),
        }
    }

    fn workload(value: serde_json::Value) -> Workload {
        match Object::from_value(&value).unwrap() {
            Object::Workload(w) => *w,
            Object::Other => panic!("not a workload"),
        }
    }

    #[test]
    fn only_claims_a_container_mounts_are_wanted() {
        let record = Record {
            rules: vec![],
            changes: ["mounted", "declared-only", "sidecar", "nowhere"]
                .iter()
                .map(|c| crate::record::Change::ClaimVolume {
                    volume: format!("v-{c}"),
                    claim: c.to_string(),
                    spec: spec("1Gi", None, "ReadWriteOnce"),
                })
                .collect(),
        };
        let w = workload(json!({"kind": "Deployment",
        "metadata": {"name": "d", "annotations": {MUTATED_ANNOTATION: record.to_annotation()}},
        "spec": {"template": {"spec": {
            "containers": [{"name": "db", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "initContainers": [{"name": "log", "restartPolicy": "Always",
                "volumeMounts": [{"name": "side", "mountPath": "/side"}]}],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "mounted"}},
                {"name": "unused", "persistentVolumeClaim": {"claimName": "declared-only"}},
                {"name": "side", "persistentVolumeClaim": {"claimName": "sidecar"}},
            ]}}}}));
        let wanted = wanted_claims(&w).unwrap().unwrap();
        let mounted: Vec<(&str, bool)> = wanted
            .iter()
            .map(|w| (w.claim.as_str(), w.mounted))
            .collect();
        assert_eq!(
            mounted,
            [
                ("mounted", true),
                ("declared-only", false),
                ("sidecar", true),
                ("nowhere", false)
            ]
        );
        let forged = workload(json!({"kind": "Pod",
            "metadata": {"name": "p", "annotations": {MUTATED_ANNOTATION: "{\"claims\": 1}"}},
            "spec": {"containers": []}}));
        assert_eq!(
            wanted_claims(&forged).unwrap().unwrap_err().0,
            Refusal::InvalidRecord
        );
        let plain = workload(json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {}}));
        assert!(wanted_claims(&plain).is_none());
    }

    #[test]
    fn specs_are_held_to_the_config_limits_never_clamped() {
        let limits = ClaimDefaults {
            max_size: "100Gi".into(),
            allowed_storage_classes: vec!["standard".into(), "fast".into()],
            ..ClaimDefaults::default()
        };
        let ok = |s: ClaimSpec| check_spec(&limits, "db-data", &s).map_err(|e| e.0);
        assert_eq!(ok(spec("100Gi", Some("fast"), "ReadWriteOnce")), Ok(()));
        assert_eq!(ok(spec("10Gi", None, "ReadWriteOncePod")), Ok(()));
        for (s, why) in [
            (spec("1Ei", Some("fast"), "ReadWriteOnce"), Refusal::Size),
            (spec("101Gi", None, "ReadWriteOnce"), Refusal::Size),
            (spec("0", None, "ReadWriteOnce"), Refusal::Size),
            (spec("ten", None, "ReadWriteOnce"), Refusal::Size),
            (
                spec("1Gi", Some("premium-rwx"), "ReadWriteOnce"),
                Refusal::StorageClass,
            ),
            (
                spec("1Gi", Some("Fast!"), "ReadWriteOnce"),
                Refusal::StorageClass,
            ),
            (spec("1Gi", None, "ReadWriteMany"), Refusal::AccessMode),
            (spec("1Gi", None, "ReadOnlyMany"), Refusal::AccessMode),
        ] {
            assert_eq!(ok(s.clone()), Err(why), "{s:?}");
        }
        assert_eq!(
            check_spec(&limits, "Not A Name", &spec("1Gi", None, "ReadWriteOnce"))
                .unwrap_err()
                .0,
            Refusal::InvalidClaimName
        );
        // With a default class named, admission never leaves it unset.
        let named = ClaimDefaults {
            storage_class: Some("standard".into()),
            ..limits.clone()
        };
        assert_eq!(
            check_spec(&named, "d", &spec("1Gi", None, "ReadWriteOnce"))
                .unwrap_err()
                .0,
            Refusal::StorageClass
        );
        // No allowed list: any class name.
        let open = ClaimDefaults::default();
        assert!(
            check_spec(
                &open,
                "d",
                &spec("1Gi", Some("premium-rwx"), "ReadWriteOnce")
            )
            .is_ok()
        );
    }

    #[test]
    fn namespaces_admission_never_judges_get_nothing() {
        let config = Config {
            excluded_namespaces: vec!["legacy".into()],
            ..Config::default()
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let none = labels(&[]);
        let why = |ns: &str, l: &BTreeMap<String, String>, c: &Config| {
            gate(c, ns, Some(l), "pvc-guard").map(|r| r.0)
        };
        for ns in ["kube-system", "kube-public", "kube-node-lease", "pvc-guard"] {
            assert_eq!(why(ns, &none, &config), Some(Refusal::SystemNamespace));
        }
        assert_eq!(
            why("legacy", &none, &config),
            Some(Refusal::ExcludedNamespace)
        );
        assert_eq!(
            why("ci", &labels(&[("pvc-guard.io/ignore", "true")]), &config),
            Some(Refusal::IgnoredNamespace)
        );
        assert_eq!(
            why(
                "frozen",
                &labels(&[("pvc-guard.io/mutate", "false")]),
                &config
            ),
            Some(Refusal::MutationOff)
        );
        assert_eq!(
            why("shop", &labels(&[("pvc-guard.io/mode", "warn")]), &config),
            None
        );
        let off = Config {
            mutate: false,
            ..Config::default()
        };
        assert_eq!(why("shop", &none, &off), Some(Refusal::MutationOff));
        // Labels not known yet: only the name and the config can refuse.
        assert_eq!(gate(&config, "shop", None, "pvc-guard"), None);
        assert_eq!(
            gate(&config, "kube-system", None, "pvc-guard").map(|r| r.0),
            Some(Refusal::SystemNamespace)
        );
        assert_eq!(
            gate(&config, "legacy", None, "pvc-guard").map(|r| r.0),
            Some(Refusal::ExcludedNamespace)
        );
    }

    #[test]
    fn refusal_labels_are_distinct() {
        let labels: BTreeSet<&str> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
