//! The policy reports `pvc-guard controller` keeps, and the events it
//! publishes when a stored workload's findings change.
//!
//! One report per namespace, named `pvc-guard`, as a `wgpolicyk8s.io/v1alpha2`
//! PolicyReport and, where that CRD is installed too, an
//! `openreports.io/v1alpha1` Report (each looked up through discovery at
//! start and at every resync, so a CRD installed later is picked up). The
//! documents are built by [`crate::report::policy_report`], as `audit -o
//! policyreport` builds them, from verdicts made here by [`verdict`], the
//! same core admission runs (`admission::judge`, `Caller::Offline`) with the
//! live config and the cluster facts of the caches.
//!
//! What it reads: the metadata of every workload kind `audit` judges
//! (watched, and metadata only on the wire too), and each stored workload
//! without a controller owner in full, once per version (uid, generation
//! and the `pvc-guard.io/*` annotations), with a GET straight into the
//! typed view ([`crate::model::Workload`]: only what the policy reads).
//! The view is kept for workloads with a database or a finding, so a change
//! of cluster facts (a namespace label, a claim, an autoscaler) judges them
//! again without reading anything; a clean workload with no database keeps
//! no view (facts cannot change its verdict; a config change reads it
//! again). Of each report only a digest and when each result was first
//! found are kept. Measured (tests/cluster.rs, 2,000 Deployments of which
//! two thirds databases, beside 8,000 owned Pods): about 5 KB per workload
//! judged, 10 MiB in all, where reflector caches of the full objects of the
//! same kinds (managedFields dropped) hold 220 MiB, 22 KB per object,
//! mostly Pods that are never judged. A watch of full objects that kept
//! only views would hold as little, but would take every Pod and
//! ReplicaSet in full off the wire on each status change, although nearly
//! all of them have a controller owner and are skipped.
//!
//! When: a change marks its namespace; the namespace's report is computed
//! `batch` later (changes meanwhile join it) and never sooner than
//! `min_interval` after its last computation, through kube-runtime's
//! scheduler, which holds one pending entry per namespace. A report is
//! written (server-side apply, so it is updated in place and keeps its
//! uid) only when its results changed; an unchanged result keeps the
//! timestamp it was first found at. A namespace with nothing to report has
//! its report deleted. Nothing is computed until every workload kind has
//! been listed once, so a half-listed cluster never deletes a result.
//!
//! Events: `PolicyViolation` (Warning) when a judged workload's failing
//! and warning rules change and some remain, `PolicyPass` when none
//! remain. The rules a report held when the controller started are the
//! baseline, so a restart announces nothing that was already reported.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GetParams, GroupVersionKind, ListParams, Patch,
    PatchParams,
};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::claims::{SYSTEM_NAMESPACES, Stores};
use super::events::{self, Events};
use super::metrics::{ControllerMetrics, ResourceLabels};
use super::{Seen, controlled};
use crate::admission;
use crate::config::{Config, Mode};
use crate::k8s;
use crate::model::{Object, Workload};
use crate::policy::{Caller, ClusterFacts, Policy};
use crate::report::policy_report::{
    self as pr, Outcome, ReportApi, ReportResult, Subject, Timestamp, Verdict,
};

/// The field manager of every report write.
pub const FIELD_MANAGER: &str = "pvc-guard";

/// When reports are computed and how much is read at once.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a change waits for others before its namespace's report
    /// is computed.
    pub batch: Duration,
    /// The least time between two computations of one namespace's report:
    /// a namespace that changes all the time costs one write per interval.
    pub min_interval: Duration,
    /// How often every namespace's report is computed again, the report
    /// APIs looked up again, and failed reads and writes tried again.
    pub resync: Duration,
    /// Workloads read (GET) at once.
    pub reads: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            batch: Duration::from_secs(1),
            min_interval: Duration::from_secs(5),
            resync: Duration::from_secs(60),
            reads: 8,
        }
    }
}

/// The control plane's namespaces and pvc-guard's own get no report: the
/// webhooks never judge there.
pub fn unreported(namespace: &str, own_namespace: Option<&str>) -> bool {
    SYSTEM_NAMESPACES.contains(&namespace) || Some(namespace) == own_namespace
}

/// Why the workloads of `namespace` are not judged, when they are not: the
/// config excludes it, or it is labelled `pvc-guard.io/ignore=true`.
pub fn not_judged(config: &Config, namespace: &str, facts: &ClusterFacts) -> Option<String> {
    if config.excluded_namespaces.iter().any(|e| e == namespace) {
        Some(format!(
            "namespace {namespace} is in the config's excludedNamespaces: pvc-guard does not judge it"
        ))
    } else if facts.namespace_ignored() {
        Some(format!(
            "namespace {namespace} is labelled pvc-guard.io/ignore=true: pvc-guard does not judge it"
        ))
    } else {
        None
    }
}

/// The verdict on one stored workload without a controller owner, as
/// admission would judge a CREATE of it (`Caller::Offline`), with the
/// severities the policy gives: a namespace's mode changes what admission
/// does about a finding, not whether it is one, so it is given alongside.
/// `None`: nothing to judge.
pub fn verdict(policy: &Policy, workload: &Workload, facts: &ClusterFacts) -> Option<Verdict> {
    let mode = facts.mode(&policy.config);
    admission::judge(
        policy,
        workload,
        None,
        facts,
        Mode::Enforce,
        Caller::Offline,
    )
    .map(|j| Verdict::Judged {
        findings: j.findings,
        opted_out: j.opted_out,
        mode,
    })
}

/// The API of `api`'s reports.
pub fn report_resource(api: ReportApi) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(api.group(), api.version(), api.kind()),
        api.plural(),
    )
}

/// A workload kind reports cover.
struct Kind {
    kind: &'static str,
    collection: &'static str,
    resource: ApiResource,
}

fn kinds() -> Vec<Kind> {
    super::audit::WORKLOADS
        .iter()
        .map(|&(group, version, kind, plural)| Kind {
            kind,
            collection: plural,
            resource: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, kind),
                plural,
            ),
        })
        .collect()
}

/// What identifies one version of a workload for its verdict: its uid, its
/// spec's version (`generation`; the resourceVersion where there is none)
/// and a digest of the annotations the policy reads.
type Version = (Option<String>, String, String);

fn version_of(meta: &ObjectMeta) -> Version {
    let spec = match meta.generation {
        Some(g) => format!("g{g}"),
        None => format!("r{}", meta.resource_version.as_deref().unwrap_or("")),
    };
    let read: Vec<String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| {
            k.starts_with("pvc-guard.io/") || *k == "kubectl.kubernetes.io/default-container"
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    (meta.uid.clone(), spec, k8s::short_hash(&read.join("\n")))
}

enum Read {
    Unread,
    /// The typed view: judged again when a fact or the config changes.
    Workload(Box<Workload>),
    /// Judged clean with no database in it: what the facts are cannot
    /// change that, so the view is not kept (most workloads are no
    /// database). Read again when the config changes.
    Clean,
    Unreadable(String),
}

/// One stored workload without a controller owner.
struct Stored {
    uid: Option<String>,
    resource_version: Option<String>,
    version: Version,
    read: Read,
    /// The failing and warning rules last announced by an event (or held
    /// by the report found at start); `None` until first judged.
    announced: Option<Vec<(Outcome, String)>>,
}

/// Workloads by (kind index, name).
type Workloads = BTreeMap<(usize, String), Stored>;

/// What a report holds, as written (or found at start): enough to tell a
/// new one from it and when each result was first found, not the results
/// themselves, whose messages are most of a report.
struct Written {
    digest: u64,
    found: Arc<HashMap<u64, Timestamp>>,
}

impl Written {
    fn of(results: &[ReportResult]) -> Written {
        Written {
            digest: pr::digest(results),
            found: Arc::new(pr::timestamps(results)),
        }
    }
}

/// The failing and warning rules a report found at start held for each
/// workload, by (kind, name): (uid, rules).
type Baseline = HashMap<(String, String), (Option<String>, Vec<(Outcome, String)>)>;

#[derive(Default)]
struct Ns {
    workloads: Workloads,
    last_run: Option<Instant>,
    /// What each report API holds now.
    written: BTreeMap<ReportApi, Written>,
    /// What the report found at start said, until the events of a first
    /// complete computation have been compared with it.
    baseline: Baseline,
    /// Workloads in the last computed report.
    reported: i64,
}

enum Fetched {
    /// Deleted, replaced, being deleted or owned now: its own watch event
    /// says what comes next.
    Gone,
    Workload(Box<Workload>),
    Unreadable(String),
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    metadata: ObjectMeta,
}

/// Reads one stored workload in full, straight into the typed view.
async fn fetch(
    client: &Client,
    kind: &Kind,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<Fetched, kube::Error> {
    let url = DynamicObject::url_path(&kind.resource, Some(namespace));
    let request = kube::core::Request::new(url)
        .get(name, &GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    let text = match client.request_text(request).await {
        Ok(text) => text,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Fetched::Gone),
        Err(e) => return Err(e),
    };
    let meta = match serde_json::from_str::<Head>(&text) {
        Ok(head) => head.metadata,
        Err(e) => return Ok(Fetched::Unreadable(format!("not a JSON object: {e}"))),
    };
    if meta.uid.as_deref() != uid || meta.deletion_timestamp.is_some() || controlled(&meta) {
        return Ok(Fetched::Gone);
    }
    Ok(match Object::from_slice(text.as_bytes()) {
        Ok(Ok(Object::Workload(w))) => Fetched::Workload(w),
        Ok(Ok(Object::Other)) => {
            Fetched::Unreadable(format!("{} is not a kind pvc-guard judges", kind.kind))
        }
        Ok(Err(e)) => Fetched::Unreadable(e.0),
        Err(e) => Fetched::Unreadable(format!("not JSON: {e}")),
    })
}

struct Keeper {
    client: Client,
    stores: Stores,
    own_namespace: String,
    metrics: ControllerMetrics,
    events: Events,
    options: Options,
    kinds: Vec<Kind>,
    policy: Arc<Policy>,
    /// The report APIs the API server serves.
    apis: BTreeSet<ReportApi>,
    namespaces: HashMap<String, Ns>,
    /// (API, status) of failed writes already logged since the last resync.
    logged: HashSet<(ReportApi, u16)>,
    /// It was said that no report API is served.
    said_none: bool,
}

impl Keeper {
    /// Looks the report APIs up; reads the reports of one newly served.
    async fn discover(&mut self) {
        for api in ReportApi::ALL {
            let served = match self
                .client
                .list_api_group_resources(&api.api_version())
                .await
            {
                Ok(list) => list.resources.iter().any(|r| r.name == api.plural()),
                Err(kube::Error::Api(s)) if s.code == 404 => false,
                Err(e) => {
                    warn!(api = %api.api_version(), error = %e, "looking up a report API failed; trying again at the next resync");
                    continue;
                }
            };
            let known = self.apis.contains(&api);
            if served && !known {
                info!(api = %api.api_version(), kind = api.kind(), "writing policy reports");
                self.apis.insert(api);
                self.load(api).await;
            } else if !served && known {
                info!(api = %api.api_version(), kind = api.kind(), "the report API is gone: no more reports of this kind");
                self.apis.remove(&api);
                for ns in self.namespaces.values_mut() {
                    ns.written.remove(&api);
                }
            }
        }
        if self.apis.is_empty() && !self.said_none {
            info!(
                "no policy report CRD is installed (wgpolicyk8s.io/v1alpha2 policyreports, openreports.io/v1alpha1 reports): no reports are written until one is (looked up every resync)"
            );
        }
        self.said_none = self.apis.is_empty();
    }

    /// Reads the reports of `api` pvc-guard wrote earlier (by this process
    /// or another): they are updated or deleted from then on, and the rules
    /// they hold are the baseline of the events.
    async fn load(&mut self, api: ReportApi) {
        let reports: Api<DynamicObject> = Api::all_with(self.client.clone(), &report_resource(api));
        let mut params = ListParams::default()
            .labels(&format!("{}={}", pr::MANAGED_BY.0, pr::MANAGED_BY.1))
            .fields(&format!("metadata.name={}", pr::NAME))
            .limit(100);
        loop {
            let page = match reports.list(&params).await {
                Ok(page) => page,
                Err(e) => {
                    warn!(api = %api.api_version(), error = %e, "listing pvc-guard's reports failed: reports of namespaces with nothing left to report may stay until the next change there");
                    return;
                }
            };
            for report in page.items {
                let Some(ns) = report.namespace() else {
                    continue;
                };
                let value = serde_json::to_value(&report).unwrap_or_default();
                let results = pr::results_of(&value);
                let state = self.namespaces.entry(ns).or_default();
                if state.baseline.is_empty() {
                    let mut by_subject: HashMap<_, Vec<&ReportResult>> = HashMap::new();
                    for r in &results {
                        if let Some(s) = r.subject() {
                            by_subject
                                .entry((s.kind.clone(), s.name.clone(), s.uid.clone()))
                                .or_default()
                                .push(r);
                        }
                    }
                    state.baseline = by_subject
                        .into_iter()
                        .map(|((kind, name, uid), rs)| {
                            ((kind, name), (uid, pr::violations(rs.into_iter())))
                        })
                        .collect();
                }
                state.written.insert(api, Written::of(&results));
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return,
            }
        }
    }

    /// Applies one workload metadata event; the namespaces it changed.
    fn apply(
        &mut self,
        kind: usize,
        seen: Seen,
        relisting: &mut HashMap<usize, HashSet<(String, String)>>,
    ) -> Vec<String> {
        match seen {
            Seen::Relist => {
                relisting.insert(kind, HashSet::new());
                Vec::new()
            }
            Seen::RelistDone => {
                let Some(listed) = relisting.remove(&kind) else {
                    return Vec::new();
                };
                let mut touched = Vec::new();
                for (ns, state) in self.namespaces.iter_mut() {
                    let before = state.workloads.len();
                    state.workloads.retain(|(k, name), _| {
                        *k != kind || listed.contains(&(ns.clone(), name.clone()))
                    });
                    if state.workloads.len() != before {
                        touched.push(ns.clone());
                    }
                }
                touched
            }
            Seen::Deleted(meta) => {
                let (ns, name) = names(&meta);
                let Some(state) = self.namespaces.get_mut(&ns) else {
                    return Vec::new();
                };
                let key = (kind, name);
                if state.workloads.get(&key).is_some_and(|s| s.uid == meta.uid) {
                    state.workloads.remove(&key);
                    return vec![ns];
                }
                Vec::new()
            }
            Seen::Applied(meta) => {
                let (ns, name) = names(&meta);
                if let Some(listed) = relisting.get_mut(&kind) {
                    listed.insert((ns.clone(), name.clone()));
                }
                let key = (kind, name);
                // Objects being deleted, and objects a controller owns: their
                // owner is judged (as audit and the webhook do).
                if meta.deletion_timestamp.is_some() || controlled(&meta) {
                    let removed = self
                        .namespaces
                        .get_mut(&ns)
                        .and_then(|s| s.workloads.remove(&key));
                    return if removed.is_some() {
                        vec![ns]
                    } else {
                        Vec::new()
                    };
                }
                let version = version_of(&meta);
                let state = self.namespaces.entry(ns.clone()).or_default();
                match state.workloads.get_mut(&key) {
                    Some(s) if s.version == version => {
                        s.resource_version = meta.resource_version;
                        Vec::new()
                    }
                    Some(s) => {
                        // The same workload changed: its events compare with
                        // what was announced for its last version.
                        let announced = if s.uid == meta.uid {
                            s.announced.take()
                        } else {
                            None
                        };
                        *s = Stored {
                            uid: meta.uid,
                            resource_version: meta.resource_version,
                            version,
                            read: Read::Unread,
                            announced,
                        };
                        vec![ns]
                    }
                    None => {
                        state.workloads.insert(
                            key,
                            Stored {
                                uid: meta.uid,
                                resource_version: meta.resource_version,
                                version,
                                read: Read::Unread,
                                announced: None,
                            },
                        );
                        vec![ns]
                    }
                }
            }
        }
    }

    /// Reads every workload of `state` not read at this version. `false`:
    /// a read failed, so the report is not computed from a partial view.
    async fn read_unread(&self, namespace: &str, state: &mut Ns) -> bool {
        let unread: Vec<((usize, String), Option<String>)> = state
            .workloads
            .iter()
            .filter(|(_, s)| matches!(s.read, Read::Unread))
            .map(|(key, s)| (key.clone(), s.uid.clone()))
            .collect();
        let client = &self.client;
        let kinds = &self.kinds;
        let fetched: Vec<_> = stream::iter(unread)
            .map(|(key, uid)| async move {
                let got = fetch(client, &kinds[key.0], namespace, &key.1, uid.as_deref()).await;
                (key, got)
            })
            .buffer_unordered(self.options.reads.max(1))
            .collect()
            .await;
        let mut complete = true;
        for (key, got) in fetched {
            match got {
                Ok(Fetched::Gone) => {
                    state.workloads.remove(&key);
                }
                Ok(Fetched::Workload(w)) => {
                    if let Some(s) = state.workloads.get_mut(&key) {
                        s.read = Read::Workload(w);
                    }
                }
                Ok(Fetched::Unreadable(why)) => {
                    if let Some(s) = state.workloads.get_mut(&key) {
                        s.read = Read::Unreadable(why);
                    }
                }
                Err(e) => {
                    complete = false;
                    warn!(namespace, workload = %format!("{}/{}", self.kinds[key.0].kind, key.1), error = %e, "reading a workload for its report failed; trying again at the next resync");
                }
            }
        }
        complete
    }

    /// Computes `namespace`'s report and writes what changed.
    async fn reconcile(&mut self, namespace: &str) {
        let mut state = self.namespaces.remove(namespace).unwrap_or_default();
        state.last_run = Some(Instant::now());
        let keep = self.compute(namespace, &mut state).await;
        self.metrics
            .reported_workloads
            .set(self.namespaces.values().map(|n| n.reported).sum::<i64>() + state.reported);
        if keep {
            self.namespaces.insert(namespace.to_string(), state);
        }
    }

    /// `false`: the namespace is gone and forgotten.
    async fn compute(&mut self, namespace: &str, state: &mut Ns) -> bool {
        let unreported = unreported(namespace, Some(&self.own_namespace));
        let ns_object = self
            .stores
            .namespaces
            .get(&ObjectRef::<Namespace>::new(namespace));
        if ns_object.is_none() && !unreported {
            if state.workloads.is_empty() {
                // Deleted, and its reports with it.
                state.reported = 0;
                return false;
            }
            // The namespaces cache is behind the workload watches: the next
            // resync decides.
            return true;
        }
        let namespace_facts = super::facts_for(
            ns_object.as_deref(),
            std::iter::empty(),
            std::iter::empty(),
            true,
        );
        let skip = not_judged(&self.policy.config, namespace, &namespace_facts);
        if !unreported && skip.is_none() && !self.read_unread(namespace, state).await {
            return true;
        }
        let autoscalers: Vec<_> = self
            .stores
            .autoscalers
            .state()
            .into_iter()
            .filter(|h| h.namespace().as_deref() == Some(namespace))
            .collect();
        let mode = namespace_facts.mode(&self.policy.config);
        let mut subjects = Vec::new();
        // Which subject each stored workload became, for its events.
        let mut judged: Vec<(usize, String)> = Vec::new();
        for ((kind, name), stored) in state.workloads.iter_mut() {
            if unreported {
                break;
            }
            let k = &self.kinds[*kind];
            let verdict = match (&skip, &stored.read) {
                (Some(why), _) => Verdict::Skipped(why.clone()),
                (None, Read::Unread) => continue,
                (None, Read::Unreadable(why)) => Verdict::Unreadable(why.clone()),
                (None, Read::Clean) => {
                    judged.push((*kind, name.clone()));
                    Verdict::Judged {
                        findings: Vec::new(),
                        opted_out: None,
                        mode,
                    }
                }
                (None, Read::Workload(w)) => {
                    let claims: Vec<_> = w
                        .claim_names()
                        .filter_map(|c| {
                            self.stores.claims.get(&ObjectRef::new(c).within(namespace))
                        })
                        .collect();
                    let facts = super::facts_for(
                        ns_object.as_deref(),
                        claims.iter().map(|c| c.as_ref()),
                        autoscalers.iter().map(|h| h.as_ref()),
                        true,
                    );
                    let Some(v) = verdict(&self.policy, w, &facts) else {
                        continue;
                    };
                    judged.push((*kind, name.clone()));
                    let clean = matches!(&v, Verdict::Judged { findings, opted_out: None, .. } if findings.is_empty());
                    if clean && self.policy.evaluate(w, &facts).dbs.is_empty() {
                        stored.read = Read::Clean;
                    }
                    v
                }
            };
            subjects.push(Subject {
                api_version: k.resource.api_version.clone(),
                kind: k.kind.to_string(),
                namespace: namespace.to_string(),
                name: name.clone(),
                uid: stored.uid.clone(),
                verdict,
            });
        }
        state.reported = subjects.len() as i64;
        let mut results = pr::results(&subjects);
        let found = state
            .written
            .get(&ReportApi::PolicyReport)
            .or_else(|| state.written.values().next())
            .map(|w| w.found.clone())
            .unwrap_or_default();
        pr::stamp(
            &mut results,
            |r| found.get(&r.key()).copied(),
            Timestamp::now(),
        );
        let digest = pr::digest(&results);
        let found = Arc::new(pr::timestamps(&results));
        for api in self.apis.clone() {
            let written = state.written.get(&api);
            if results.is_empty() {
                if written.is_some() && self.delete(api, namespace).await {
                    state.written.remove(&api);
                }
            } else if written.is_none_or(|w| w.digest != digest)
                && self.write(api, namespace, &results).await
            {
                let found = found.clone();
                state.written.insert(api, Written { digest, found });
            }
        }
        self.announce(namespace, state, &judged, &results).await;
        // Every workload was compared with the report found at start.
        state.baseline = Baseline::new();
        // Nothing stored and nothing written: nothing to remember.
        !(state.workloads.is_empty() && state.written.is_empty())
    }

    /// Publishes an event for each judged workload whose failing and
    /// warning rules changed since they were last announced.
    async fn announce(
        &self,
        namespace: &str,
        state: &mut Ns,
        judged: &[(usize, String)],
        results: &[ReportResult],
    ) {
        for key in judged {
            let Some(stored) = state.workloads.get_mut(key) else {
                continue;
            };
            let k = &self.kinds[key.0];
            let about = |r: &&ReportResult| {
                r.subject()
                    .is_some_and(|s| s.kind == k.kind && s.name == key.1 && s.uid == stored.uid)
            };
            let now = pr::violations(results.iter().filter(about));
            let before = match stored.announced.take() {
                Some(before) => before,
                // First judged by this process: what the report said.
                None => match state.baseline.remove(&(k.kind.to_string(), key.1.clone())) {
                    Some((uid, rules)) if uid == stored.uid => rules,
                    _ => Vec::new(),
                },
            };
            if now != before {
                let mut regarding = events::reference(
                    &k.resource.api_version,
                    k.kind,
                    namespace,
                    &key.1,
                    stored.uid.as_deref(),
                );
                // Aggregated per version of the workload: the event of a
                // new version says what that version has.
                regarding.resource_version = stored.resource_version.clone();
                let list = |v: &[(Outcome, String)]| {
                    v.iter()
                        .map(|(o, rule)| format!("{} {rule}", o.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if now.is_empty() {
                    let note = format!(
                        "pvc-guard finds nothing wrong any more (was: {}). PolicyReport {} in this namespace.",
                        list(&before),
                        pr::NAME
                    );
                    self.events
                        .publish(
                            &regarding,
                            false,
                            events::POLICY_PASS,
                            "Evaluate",
                            &note,
                            None,
                        )
                        .await;
                } else {
                    let first = results
                        .iter()
                        .filter(about)
                        .find(|r| matches!(r.result, Outcome::Fail | Outcome::Warn))
                        .map(|r| r.message.as_str())
                        .unwrap_or_default();
                    let note = format!(
                        "pvc-guard: {} (PolicyReport {} in this namespace). {first}",
                        list(&now),
                        pr::NAME
                    );
                    self.events
                        .publish(
                            &regarding,
                            true,
                            events::POLICY_VIOLATION,
                            "Evaluate",
                            &note,
                            None,
                        )
                        .await;
                }
            }
            stored.announced = Some(now);
        }
    }

    fn api(&self, api: ReportApi, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &report_resource(api))
    }

    /// Server-side apply of the report: created the first time, changed in
    /// place after. `false`: it failed (tried again at the next resync).
    async fn write(&mut self, api: ReportApi, namespace: &str, results: &[ReportResult]) -> bool {
        let doc = pr::document(api, namespace, results);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match self
            .api(api, namespace)
            .patch(pr::NAME, &params, &Patch::Apply(&doc))
            .await
        {
            Ok(_) => {
                self.metrics.report_writes.inc();
                true
            }
            Err(e) => {
                self.failed(api, namespace, "writing", &e);
                false
            }
        }
    }

    async fn delete(&mut self, api: ReportApi, namespace: &str) -> bool {
        match self
            .api(api, namespace)
            .delete(pr::NAME, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                self.metrics.report_writes.inc();
                true
            }
            Err(kube::Error::Api(s)) if s.code == 404 => true,
            Err(e) => {
                self.failed(api, namespace, "deleting", &e);
                false
            }
        }
    }

    /// Counts a failed write; logs it once per API and status per resync,
    /// so a missing RBAC grant is one line a minute, not one per namespace.
    fn failed(&mut self, api: ReportApi, namespace: &str, doing: &str, e: &kube::Error) {
        self.metrics.report_write_errors.inc();
        let code = match e {
            kube::Error::Api(s) => s.code,
            _ => 0,
        };
        if self.logged.insert((api, code)) {
            warn!(namespace, kind = api.kind(), error = %e, "{doing} a policy report failed; trying again at the next resync (further failures like it are not logged until then)");
        }
    }
}

fn names(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Keeps the policy reports, as the module says, until its watches end
/// (never). Run by the replica that holds the claim controller's Lease.
pub async fn run(
    client: Client,
    stores: Stores,
    mut config: watch::Receiver<Arc<Config>>,
    own_namespace: String,
    metrics: ControllerMetrics,
    events: Events,
    options: Options,
) {
    stores.wait_synced().await;
    let policy = Arc::new(Policy::new((**config.borrow_and_update()).clone()));
    let mut keeper = Keeper {
        kinds: kinds(),
        client,
        stores,
        own_namespace,
        metrics,
        events,
        options,
        policy,
        apis: BTreeSet::new(),
        namespaces: HashMap::new(),
        logged: HashSet::new(),
        said_none: false,
    };
    keeper.discover().await;
    let mut watches = stream::select_all(
        keeper
            .kinds
            .iter()
            .enumerate()
            .map(|(i, k)| super::metadata_events(&keeper.client, &k.resource, k.collection, i)),
    );
    let (requests, queued) = mpsc::unbounded_channel::<ScheduleRequest<String>>();
    let queued = stream::unfold(
        queued,
        |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
    );
    // Holds at most one entry per namespace, at its earliest time.
    let mut queue = std::pin::pin!(scheduler(queued));
    let mut listed = vec![false; keeper.kinds.len()];
    let mut relisting: HashMap<usize, HashSet<(String, String)>> = HashMap::new();
    // Namespaces to compute; held until every kind was listed once.
    let mut pending: HashSet<String> = keeper.namespaces.keys().cloned().collect();
    let resync = keeper.options.resync;
    let mut tick = tokio::time::interval_at(Instant::now() + resync, resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut config_open = true;
    loop {
        tokio::select! {
            next = watches.next() => match next {
                Some(Ok((kind, seen))) => {
                    let done = matches!(seen, Seen::RelistDone);
                    pending.extend(keeper.apply(kind, seen, &mut relisting));
                    if done {
                        listed[kind] = true;
                    }
                }
                Some(Err((resource, e))) => {
                    keeper.metrics.cluster.watch_errors.get_or_create(&ResourceLabels { resource }).inc();
                    warn!(resource, error = %e, "workload watch failed; retrying with backoff");
                }
                None => return,
            },
            Some(namespace) = queue.next() => keeper.reconcile(&namespace).await,
            _ = keeper.stores.changed.wait() => {
                let (all, changed) = keeper.stores.changed.take();
                if all {
                    pending.extend(keeper.namespaces.keys().cloned());
                }
                // Only namespaces with something reported or to report.
                pending.extend(changed.into_iter().filter(|ns| keeper.namespaces.contains_key(ns)));
            }
            _ = tick.tick() => {
                keeper.logged.clear();
                keeper.discover().await;
                pending.extend(keeper.namespaces.keys().cloned());
            }
            changed = config.changed(), if config_open => {
                config_open = changed.is_ok();
                if config_open {
                    keeper.policy = Arc::new(Policy::new((**config.borrow_and_update()).clone()));
                    // A changed catalog can find a database where there was none.
                    for state in keeper.namespaces.values_mut() {
                        for stored in state.workloads.values_mut() {
                            if matches!(stored.read, Read::Clean) {
                                stored.read = Read::Unread;
                            }
                        }
                    }
                    pending.extend(keeper.namespaces.keys().cloned());
                }
            }
        }
        if listed.iter().all(|l| *l) {
            let now = Instant::now();
            for namespace in pending.drain() {
                let earliest = keeper
                    .namespaces
                    .get(&namespace)
                    .and_then(|n| n.last_run)
                    .map_or(now, |t| t + keeper.options.min_interval);
                let run_at = (now + keeper.options.batch).max(earliest);
                let _ = requests.send(ScheduleRequest {
                    message: namespace,
                    run_at,
                });
            }
        }
    }
}
