//! Cluster facts, the claim controller and `audit`, against a kube client
//! whose API server is a scripted tower service answering with responses a
//! real kube-apiserver v1.33 sent (tests/data/api).

#[path = "common/api.rs"]
mod api;
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::ApiServer;
use clap::Parser;
use common::*;
use pvc_guard::cli::{Cli, Command};
use pvc_guard::cluster::claims;
use pvc_guard::cluster::events::Events;
use pvc_guard::cluster::metrics::ControllerMetrics;
use pvc_guard::cluster::reports;
use pvc_guard::config::Config;
use serde_json::{Value, json};

/// Counts the bytes each thread holds, so a test on a current-thread
/// runtime can measure what the code it runs keeps, whatever other tests
/// do meanwhile on their threads.
struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counting touches a const-initialised thread-local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn live_bytes() -> i64 {
    LIVE.with(Cell::get)
}

/// The controller's series, as `pvc-guard controller` serves them.
fn encode(metrics: &ControllerMetrics) -> String {
    let mut registry = prometheus_client::registry::Registry::with_prefix("pvc_guard");
    metrics.register(&mut registry);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

fn fixture(name: &str) -> Value {
    read_json(&format!("admission/{name}.json"))
}

/// Waits up to 30 s for `check` to hold: long enough for a Lease (15 s) to
/// expire once on a loaded machine, bounded so a broken path fails.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `pvc-guard serve` in this process, on 127.0.0.1, with the mock's client.
struct InProcess {
    port: u16,
    ca: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn start(api: &Arc<ApiServer>, extra: &[&str]) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let mut argv = vec!["pvc-guard", "serve", "--write-ca", ca.to_str().unwrap()];
        argv.extend(extra);
        let Command::Serve(args) = Cli::parse_from(argv).command else {
            unreachable!()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(pvc_guard::server::serve_on(
            listener,
            *args,
            Some(api.client()),
            async move {
                let _ = rx.await;
            },
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ca.exists() {
            assert!(Instant::now() < deadline, "the server never wrote its CA");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        InProcess {
            port,
            ca: std::fs::read_to_string(&ca).unwrap(),
            stop: Some(tx),
            task,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    fn client(&self) -> reqwest::Client {
        client_for(&[&self.ca], true)
    }

    async fn ready(&self) -> (u16, String) {
        let r = self.client().get(self.url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn validate(&self, review: &Value) -> Value {
        let (status, body) = post(&self.client(), &self.url("/validate"), review).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server drains and stops")
            .unwrap()
            .unwrap();
    }
}

/// A review of `object` as a CREATE in `namespace`.
fn review_in(namespace: &str, mut object: Value) -> Value {
    let mut review = fixture("pg-no-volume.create");
    object["metadata"]["namespace"] = json!(namespace);
    review["request"]["namespace"] = json!(namespace);
    review["request"]["name"] = object["metadata"]["name"].clone();
    review["request"]["object"] = object;
    review
}

/// The postgres Deployment of the fixture with its data on claim `claim`.
fn postgres_on_claim(name: &str, claim: &str, strategy: &str) -> Value {
    let mut object = fixture("pg-no-volume.create")["request"]["object"].clone();
    object["metadata"]["name"] = json!(name);
    object["spec"]["strategy"] = json!({"type": strategy});
    let pod = &mut object["spec"]["template"]["spec"];
    pod["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    pod["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/var/lib/postgresql/data", "subPath": "pgdata"}]);
    object
}

fn rules_in(answer: &Value) -> Vec<String> {
    let mut text = warnings(answer).join("\n");
    if let Some(m) = answer
        .pointer("/response/status/message")
        .and_then(Value::as_str)
    {
        text.push_str(m);
    }
    pvc_guard::policy::Rule::ALL
        .iter()
        .map(|r| r.id().to_string())
        .filter(|id| text.contains(&format!("[{id}]")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn caches_gate_readiness_and_their_facts_change_decisions() {
    let api = ApiServer::new();
    api.close();
    let server = InProcess::start(&api, &[]).await;
    let (status, why) = server.ready().await;
    assert_eq!(status, 503, "not ready before the caches sync");
    assert!(why.contains("cluster caches"), "{why}");
    // Admission does not wait for the caches: facts are unknown meanwhile.
    let before = server
        .validate(&review_in(
            "shop",
            fixture("pg-no-volume.create")["request"]["object"].clone(),
        ))
        .await;
    assert_eq!(
        allowed(&before),
        Some(false),
        "enforce from config until synced"
    );
    api.open();
    eventually("ready after sync", async || server.ready().await.0 == 200).await;

    // Every list is paged and every watch resumes from its list.
    let requests = api.requests();
    for collection in [
        "/api/v1/namespaces",
        "/api/v1/persistentvolumeclaims",
        "/apis/storage.k8s.io/v1/storageclasses",
        "/apis/autoscaling/v2/horizontalpodautoscalers",
    ] {
        let list = requests
            .iter()
            .find(|s| s.path == collection && !s.is_watch())
            .unwrap_or_else(|| panic!("no list of {collection}"));
        assert_eq!(list.param("limit"), Some("500"), "{list:?}");
        let watch = requests
            .iter()
            .find(|s| s.path == collection && s.is_watch())
            .unwrap_or_else(|| panic!("no watch of {collection}"));
        let listed = if collection.contains("horizontalpodautoscalers") {
            "1" // the mock's empty list
        } else {
            "404"
        };
        assert_eq!(watch.param("resourceVersion"), Some(listed), "{watch:?}");
        assert_eq!(
            watch.param("allowWatchBookmarks"),
            Some("true"),
            "{watch:?}"
        );
    }

    let pg = || fixture("pg-no-volume.create")["request"]["object"].clone();
    // shop is labelled pvc-guard.io/mode=warn: admitted with warnings.
    let answer = server.validate(&review_in("shop", pg())).await;
    assert_eq!(allowed(&answer), Some(true), "{answer}");
    assert!(rules_in(&answer).contains(&"ephemeral-data-path".into()));
    // ci is labelled pvc-guard.io/ignore=true: not judged at all.
    let answer = server.validate(&review_in("ci", pg())).await;
    assert_eq!(
        (allowed(&answer), warnings(&answer).len()),
        (Some(true), 0),
        "{answer}"
    );
    // data has no label: enforce, until a watch event labels it audit.
    let answer = server.validate(&review_in("data", pg())).await;
    assert_eq!(allowed(&answer), Some(false), "{answer}");
    let events = std::fs::read_to_string(data("api/namespaces-watch.jsonl")).unwrap();
    for line in events.lines().filter(|l| !l.trim().is_empty()) {
        api.send_event(line);
    }
    eventually("the label flip reaches the decision", async || {
        allowed(&server.validate(&review_in("data", pg())).await) == Some(true)
    })
    .await;
    let audit_mode = server.validate(&review_in("data", pg())).await;
    assert!(
        warnings(&audit_mode).is_empty(),
        "audit mode returns nothing: {audit_mode}"
    );

    // A restricted Pod Security namespace, arriving by watch, gets fsGroup
    // instead of the root init container.
    api.send_event(
        &json!({"type": "ADDED", "object": {"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": "locked", "resourceVersion": "410",
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}})
        .to_string(),
    );
    let bitnami = || {
        let mut o = pg();
        o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("bitnami/postgresql:17");
        o
    };
    let mutate = async |namespace: &str| {
        let (_, answer) = post(
            &server.client(),
            &server.url("/mutate"),
            &review_in(namespace, bitnami()),
        )
        .await;
        serde_json::to_string(&patch_of(&answer).expect("a patch")).unwrap()
    };
    assert!(mutate("default").await.contains("pvc-guard-permissions"));
    eventually("the restricted namespace is cached", async || {
        mutate("locked").await.contains("fsGroup")
    })
    .await;
    assert!(!mutate("locked").await.contains("pvc-guard-permissions"));

    // Claim facts: a claim that does not exist, and access modes.
    let answer = server
        .validate(&review_in(
            "shop",
            postgres_on_claim("ghost-db", "does-not-exist", "Recreate"),
        ))
        .await;
    assert_eq!(
        rules_in(&answer),
        ["database-in-deployment", "missing-claim"].map(String::from),
        "{answer}"
    );
    assert!(
        warnings(&answer).join("\n").contains("\"does-not-exist\""),
        "{answer}"
    );
    let rwo = server
        .validate(&review_in(
            "shop",
            postgres_on_claim("users-db", "users-db-data", "RollingUpdate"),
        ))
        .await;
    assert!(
        rules_in(&rwo).contains(&"rolling-update-claim".into()),
        "{rwo}"
    );
    assert!(!rules_in(&rwo).contains(&"missing-claim".into()), "{rwo}");
    let rwx = server
        .validate(&review_in(
            "shop",
            postgres_on_claim("files-db", "shared-files", "RollingUpdate"),
        ))
        .await;
    assert!(
        !rules_in(&rwx).contains(&"rolling-update-claim".into()),
        "ReadWriteMany: {rwx}"
    );

    // Admission never writes, dry-run or not.
    let mut dry = review_in("shop", pg());
    dry["request"]["dryRun"] = json!(true);
    let (_, answer) = post(&server.client(), &server.url("/mutate"), &dry).await;
    assert!(patch_of(&answer).is_some(), "{answer}");
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert!(
        api.unexpected.lock().unwrap().is_empty(),
        "{:?}",
        api.unexpected.lock().unwrap()
    );

    let metrics = get_text(&server.client(), &server.url("/metrics")).await;
    assert!(
        metrics
            .contains("pvc_guard_cluster_cache_updated_timestamp_seconds{resource=\"namespaces\"}"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_autoscaler_that_can_scale_a_database_deployment_is_warned_about() {
    let api = ApiServer::new();
    let hpa = |max: i32| {
        json!({"kind": "HorizontalPodAutoscalerList", "apiVersion": "autoscaling/v2",
        "metadata": {"resourceVersion": "500"},
        "items": [{"metadata": {"name": "users-db", "namespace": "shop"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "users-db"},
                "minReplicas": 1, "maxReplicas": max}}]})
    };
    api.set_list(
        "/apis/autoscaling/v2/horizontalpodautoscalers",
        vec![hpa(3)],
    );
    let server = InProcess::start(&api, &[]).await;
    eventually("ready", async || server.ready().await.0 == 200).await;
    let answer = server
        .validate(&review_in(
            "shop",
            postgres_on_claim("users-db", "users-db-data", "Recreate"),
        ))
        .await;
    assert!(
        rules_in(&answer).contains(&"autoscaled-claim".into()),
        "{answer}"
    );
    let text = warnings(&answer).join("\n");
    assert!(text.contains("3 replicas"), "{text}");
    // Another Deployment is not the autoscaler's target.
    let other = server
        .validate(&review_in(
            "shop",
            postgres_on_claim("other-db", "users-db-data", "Recreate"),
        ))
        .await;
    assert!(
        !rules_in(&other).contains(&"autoscaled-claim".into()),
        "{other}"
    );
    server.stop().await;
}

/// The fixture's postgres Deployment as the mutating webhook leaves it, stored.
fn stored_mutated(name: &str) -> Value {
    let policy = pvc_guard::policy::Policy::new(pvc_guard::config::Config::default());
    let mut object = fixture("pg-no-volume.create")["request"]["object"].clone();
    object["metadata"]["name"] = json!(name);
    let fixed = common::fixed(&policy, &object);
    assert_ne!(fixed, object, "the fix changed the object");
    fixed
}

#[tokio::test(flavor = "multi_thread")]
async fn the_claim_controller_creates_each_missing_claim_once_and_409_is_success() {
    let api = ApiServer::new();
    let mut plain = fixture("nginx-stateless.create")["request"]["object"].clone();
    plain["metadata"]["namespace"] = json!("shop");
    // Records that must not lead to a POST: a claim the cache holds, a
    // workload being deleted, a ReplicaSet carrying its Deployment's copy,
    // and a namespace pvc-guard ignores (admission never ran there).
    let mut existing = fixture("pg-no-volume.create")["request"]["object"].clone();
    existing["metadata"]["name"] = json!("users-db");
    existing["metadata"]["annotations"]["pvc-guard.io/claim-name"] = json!("users-db-data");
    let policy = pvc_guard::policy::Policy::new(pvc_guard::config::Config::default());
    let existing = common::fixed(&policy, &existing);
    assert!(existing.to_string().contains("users-db-data"));
    let mut deleting = stored_mutated("old-db");
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-22T03:50:00Z");
    let mut replica_set = stored_mutated("copy-db");
    replica_set["kind"] = json!("ReplicaSet");
    replica_set["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
        "name": "copy-db", "uid": "u", "controller": true}]);
    let mut ignored = stored_mutated("ci-db");
    ignored["metadata"]["namespace"] = json!("ci");
    api.set_list(
        "/apis/apps/v1/replicasets",
        vec![json!({"kind": "ReplicaSetList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"},
            "items": [replica_set]})],
    );
    api.set_list(
        "/apis/apps/v1/deployments",
        vec![json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"},
            "items": [stored_mutated("orders-db"), stored_mutated("billing-db"), plain, existing, deleting, ignored]})],
    );
    // The namespaces list is held while the claims cache syncs, so the
    // controller and the stores' own sync task are both waiting when it
    // arrives: the controller must still be woken (kube-runtime wakes only
    // the last task that polled a store's readiness).
    api.close();
    let (metrics, _config, controller) =
        start_claims(&api, Config::default(), "test", Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.writes().is_empty(), "no claim before the caches sync");
    api.open();
    let claim_writes = || -> Vec<api::Seen> {
        api.writes()
            .into_iter()
            .filter(|w| !w.path.starts_with("/apis/events.k8s.io/"))
            .collect()
    };
    eventually("two claims posted", async || claim_writes().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    controller.abort();
    let writes = claim_writes();
    assert_eq!(
        writes.len(),
        2,
        "one POST per missing claim, none retried: {writes:?}"
    );
    let mut names = Vec::new();
    for w in &writes {
        assert_eq!(
            (w.method.as_str(), w.path.as_str()),
            ("POST", "/api/v1/namespaces/shop/persistentvolumeclaims")
        );
        let claim: Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(
            claim["metadata"]["labels"]["app.kubernetes.io/managed-by"], "pvc-guard",
            "{claim}"
        );
        assert!(
            claim["metadata"].get("ownerReferences").is_none(),
            "{claim}"
        );
        assert_eq!(
            claim["spec"]["resources"]["requests"]["storage"], "10Gi",
            "{claim}"
        );
        assert_eq!(
            claim["spec"]["accessModes"],
            json!(["ReadWriteOnce"]),
            "{claim}"
        );
        names.push(claim["metadata"]["name"].as_str().unwrap().to_string());
    }
    names.sort();
    assert_eq!(
        names,
        ["billing-db-postgres-data", "orders-db-postgres-data"]
    );
    let text = encode(&metrics);
    // The first POST answered 201, the second 409: both count as done.
    assert!(text.contains("pvc_guard_claims_created_total 1"), "{text}");
    assert!(
        text.contains("pvc_guard_claim_create_errors_total 0"),
        "{text}"
    );
    assert!(
        api.unexpected.lock().unwrap().is_empty(),
        "{:?}",
        api.unexpected.lock().unwrap()
    );
}

/// A Deployment in `namespace` whose `pvc-guard.io/mutated` record names
/// claim `claim` of `size`, `class` and `mode`; its pod has a volume of that
/// claim, which its container mounts only when `mounted`.
fn recorded(
    namespace: &str,
    name: &str,
    claim: &str,
    (size, class, mode): (&str, Option<&str>, &str),
    mounted: bool,
) -> Value {
    let mut change = json!({"change": "claimVolume", "volume": "data", "claim": claim,
        "size": size, "accessMode": mode});
    if let Some(class) = class {
        change["storageClass"] = json!(class);
    }
    let record = json!({"rules": ["ephemeral-data-path"], "changes": [change]}).to_string();
    let mounts = if mounted {
        json!([{"name": "data", "mountPath": "/data"}])
    } else {
        json!([])
    };
    json!({"kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
            "generation": 1, "annotations": {"pvc-guard.io/mutated": record}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "containers": [{"name": "app", "image": "nginx:1.27", "volumeMounts": mounts}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}}})
}

const RWO_10G: (&str, Option<&str>, &str) = ("10Gi", None, "ReadWriteOnce");

/// The claim names POSTed so far.
fn posted_claims(api: &ApiServer) -> Vec<String> {
    api.writes()
        .iter()
        .filter(|w| w.method == "POST" && w.path.ends_with("/persistentvolumeclaims"))
        .map(|w| {
            let claim: Value = serde_json::from_slice(&w.body).unwrap();
            claim["metadata"]["name"].as_str().unwrap().to_string()
        })
        .collect()
}

/// `pvc_guard_claims_refused_total` by reason.
fn refused(metrics: &ControllerMetrics) -> std::collections::BTreeMap<String, u64> {
    encode(metrics)
        .lines()
        .filter_map(|l| l.strip_prefix("pvc_guard_claims_refused_total{reason=\""))
        .filter_map(|rest| {
            let (reason, count) = rest.split_once("\"} ")?;
            Some((reason.to_string(), count.parse().ok()?))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_claim_controller_creates_only_what_admission_would_and_counts_why() {
    let api = ApiServer::new();
    let huge = ("1Ei", Some("premium-rwx"), "ReadWriteMany");
    let mut invalid = recorded("shop", "forged-text", "x", RWO_10G, true);
    invalid["metadata"]["annotations"]["pvc-guard.io/mutated"] = json!("{\"claims\": [\"x\"]}");
    let mut pod = recorded("shop", "forged-pod", "forged-pod-data", huge, false);
    pod["kind"] = json!("Pod");
    pod["apiVersion"] = json!("v1");
    pod["spec"] = pod["spec"]["template"]["spec"].clone();
    api.set_list(
        "/apis/apps/v1/deployments",
        vec![json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"},
            "items": [
                // What admission writes: created.
                recorded("shop", "orders-db", "orders-db-data", RWO_10G, true),
                // Forged in a namespace the webhook judges.
                recorded("shop", "forged-unmounted", "forged-unmounted", RWO_10G, false),
                recorded("shop", "forged-huge", "forged-huge", ("1Ei", None, "ReadWriteOnce"), true),
                recorded("shop", "forged-premium", "forged-premium", ("10Gi", Some("premium-rwx"), "ReadWriteOnce"), true),
                recorded("shop", "forged-rwx", "forged-rwx", ("10Gi", None, "ReadWriteMany"), true),
                invalid,
                // Where admission never runs or never fixes.
                recorded("kube-system", "sys-db", "sys-db-data", RWO_10G, true),
                recorded("pvc-guard", "own-db", "own-db-data", RWO_10G, true),
                recorded("finance", "fin-db", "fin-db-data", RWO_10G, true),
                recorded("ci", "ci-db", "ci-db-data", huge, false),
                recorded("frozen", "frozen-db", "frozen-db-data", RWO_10G, true),
            ]})],
    );
    api.set_list(
        "/api/v1/pods",
        vec![
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "600"},
            "items": [pod]}),
        ],
    );
    // A namespace that arrives by watch, with the mutation turned off.
    api.send_event(
        &json!({"type": "ADDED", "object": {"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": "frozen", "resourceVersion": "410",
                "labels": {"pvc-guard.io/mutate": "false"}}}})
        .to_string(),
    );
    let config = Config {
        excluded_namespaces: vec!["finance".into()],
        claims: pvc_guard::config::ClaimDefaults {
            allowed_storage_classes: vec!["standard".into()],
            ..Default::default()
        },
        ..Config::default()
    };
    let (metrics, config_tx, controller) =
        start_claims(&api, config.clone(), "test", Duration::from_secs(3600));
    let expected: std::collections::BTreeMap<String, u64> = [
        ("not-mounted", 2),
        ("size", 1),
        ("storage-class", 1),
        ("access-mode", 1),
        ("invalid-record", 1),
        ("system-namespace", 2),
        ("excluded-namespace", 1),
        ("ignored-namespace", 1),
        ("mutation-off", 1),
    ]
    .into_iter()
    .map(|(r, n)| (r.to_string(), n))
    .collect();
    eventually("every workload is decided", async || {
        refused(&metrics) == expected && !posted_claims(&api).is_empty()
    })
    .await;
    assert_eq!(posted_claims(&api), ["orders-db-data"]);
    // Nothing is read where nothing will be created.
    for ns in ["kube-system", "pvc-guard", "finance", "ci", "frozen"] {
        let read: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|s| s.path.contains(&format!("/namespaces/{ns}/")))
            .collect();
        assert!(read.is_empty(), "{ns}: {read:?}");
    }

    // The config's limits are the live ones: allowing the class creates
    // the claim that was refused, without any event of its workload.
    let mut wider = config.clone();
    wider
        .claims
        .allowed_storage_classes
        .push("premium-rwx".into());
    config_tx.send_replace(Arc::new(wider));
    eventually(
        "the claim refused by the old config is created",
        async || posted_claims(&api).len() == 2,
    )
    .await;
    assert_eq!(posted_claims(&api), ["orders-db-data", "forged-premium"]);
    // A refusal is counted once per version of its workload, not each
    // time the workload is decided again.
    assert_eq!(refused(&metrics), expected);
    controller.abort();
    assert!(
        api.unexpected.lock().unwrap().is_empty(),
        "{:?}",
        api.unexpected.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_process_answers_probes_and_applies_a_changed_config_file() {
    let api = ApiServer::new();
    api.set_list(
        "/apis/apps/v1/deployments",
        vec![json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"},
            "items": [recorded("shop", "big-db", "big-db-data", ("50Gi", None, "ReadWriteOnce"), true)]})],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "createClaims: true\nclaims:\n  maxSize: 20Gi\n").unwrap();
    api.close();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(pvc_guard::cluster::controller::run(
        api.client(),
        listener,
        pvc_guard::cluster::controller::Options {
            config: Some(config.clone()),
            lease_namespace: Some("pvc-guard".into()),
            reload_interval: Duration::from_millis(50),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let get = async |path: &str| {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    eventually("the health address answers", async || {
        http.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    assert_eq!(get("/healthz").await.0, 200);
    let (status, why) = get("/readyz").await;
    assert_eq!(status, 503, "not ready before the caches sync");
    assert!(why.contains("caches"), "{why}");
    api.open();
    eventually("ready once the caches sync", async || {
        get("/readyz").await.0 == 200
    })
    .await;
    let size_refused = "pvc_guard_claims_refused_total{reason=\"size\"} 1";
    eventually("50Gi is above the config's maxSize", async || {
        get("/metrics").await.1.contains(size_refused)
    })
    .await;
    assert!(posted_claims(&api).is_empty());
    let (_, metrics) = get("/metrics").await;
    assert!(
        metrics.contains("pvc_guard_claim_controller_leader 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pvc_guard_claims_refused_total{reason=\"not-mounted\"} 0"),
        "every reason is a series from the start: {metrics}"
    );

    // An invalid file leaves the old config in force; a valid one applies.
    std::fs::write(&config, "claims:\n  maxSize: lots\n").unwrap();
    eventually("the invalid file is refused", async || {
        get("/metrics")
            .await
            .1
            .contains("pvc_guard_config_reload_errors_total 1")
    })
    .await;
    assert!(posted_claims(&api).is_empty());
    std::fs::write(&config, "createClaims: true\nclaims:\n  maxSize: 100Gi\n").unwrap();
    eventually("the claim is created under the new limit", async || {
        posted_claims(&api) == ["big-db-data"]
    })
    .await;
    assert_eq!(get("/nothing").await.0, 404);

    // Shutdown: not ready, the Lease handed back, stopped.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("stops promptly")
        .unwrap()
        .unwrap();
    assert_eq!(api.lease_holder(), None, "the Lease was released");
}

/// A kubeconfig whose only context points at `server`.
fn kubeconfig(dir: &std::path::Path, server: &str, ca_pem: &str) -> std::path::PathBuf {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\ncurrent-context: mock\nusers:\n- name: mock\n  user:\n    token: not-a-secret\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_reports_in_text_json_and_sarif_and_exits_non_zero_on_a_denial() {
    let api = ApiServer::new();
    let mut orders = fixture("pg-no-volume.create")["request"]["object"].clone();
    orders["metadata"]["namespace"] = json!("data");
    let mut clean = fixture("nginx-stateless.create")["request"]["object"].clone();
    clean["metadata"]["namespace"] = json!("data");
    let mut owned = orders.clone();
    owned["metadata"]["name"] = json!("orders-db-5d9c7");
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-db", "uid": "u", "controller": true}]);
    // Two pages: the second is fetched with the first's continue token.
    let page = |items: Vec<Value>| json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "700"}, "items": items});
    api.set_list(
        "/apis/apps/v1/deployments",
        vec![page(vec![clean]), page(vec![orders])],
    );
    api.set_list(
        "/api/v1/pods",
        vec![json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "700"}, "items": [owned]})],
    );
    let set = json!({"metadata": {"name": "ledger", "namespace": "finance"},
        "spec": {"serviceName": "ledger", "selector": {"matchLabels": {"app": "ledger"}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            "template": {"metadata": {"labels": {"app": "ledger"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}});
    api.set_list(
        "/apis/apps/v1/statefulsets",
        vec![json!({"kind": "StatefulSetList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "700"}, "items": [set]})],
    );
    // Over TLS, verified against the kubeconfig's CA, as with a real cluster.
    let (url, ca) = api.serve_https().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &url, &ca);
    let config = config.to_str().unwrap().to_string();
    let run = |output: &'static str| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            run_cli_env(&["audit", "-A", "-o", output], &[("KUBECONFIG", &config)])
        })
    };

    let (code, text, progress) = run("text").await.unwrap();
    assert_eq!(code, 1, "a denial exits 1: {text}{progress}");
    assert!(
        progress.contains("deployments: 2 listed"),
        "paged: {progress}"
    );
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("DECISION") && header.contains("RULES"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("deny")
            && l.contains("orders-db")
            && l.contains("ephemeral-data-path")),
        "{text}"
    );
    assert!(
        !text.contains("orders-db-5d9c7"),
        "a Pod its ReplicaSet owns is judged through the owner: {text}"
    );
    assert!(
        text.contains("claim-retention-delete") && text.contains("ledger"),
        "{text}"
    );
    // users-db-data names no class and so gets the default fast-delete (Delete);
    // shared-files is on retained.
    assert!(
        text.lines()
            .any(|l| l.contains("users-db-data") && l.contains("reclaim-policy-delete")),
        "{text}"
    );
    assert!(!text.contains("shared-files"), "{text}");

    let (code, json_out, _) = run("json").await.unwrap();
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&json_out).unwrap();
    let orders = report
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "orders-db")
        .unwrap();
    assert_eq!(orders["decision"], "deny");
    assert_eq!(orders["kind"], "Deployment");
    // The same shape as `check --output json`.
    let (_, check_out, _) = run_cli(
        &["check", "-o", "json", "-f", "-"],
        Some(
            &serde_yaml_ng::to_string(&fixture("pg-no-volume.create")["request"]["object"])
                .unwrap(),
        ),
    );
    let check: Value = serde_json::from_str(&check_out).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&check[0]), keys(orders));
    assert_eq!(keys(&check[0]["findings"][0]), keys(&orders["findings"][0]));

    let (code, sarif_out, _) = run("sarif").await.unwrap();
    assert_eq!(code, 1);
    let sarif: Value = serde_json::from_str(&sarif_out).unwrap();
    let schema: Value =
        serde_json::from_slice(&std::fs::read(data("sarif-schema-2.1.0.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .any(|r| r["ruleId"] == "ephemeral-data-path" && r["level"] == "error"),
        "{sarif}"
    );
    // A SARIF document that breaks the schema is caught: the check can fail.
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = json!("fatal");
    assert!(!validator.is_valid(&broken));

    // Only one namespace: the Deployment list is asked for there.
    let (code, out, err) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || run_cli_env(&["audit", "-n", "finance"], &[("KUBECONFIG", &config)])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        api.requests()
            .iter()
            .any(|s| s.path == "/api/v1/namespaces/finance"),
        "one namespace is read with a get, not a cluster-wide list"
    );
    assert!(
        api.requests()
            .iter()
            .any(|s| s.path == "/apis/apps/v1/namespaces/finance/deployments")
    );
    assert!(
        api.writes().is_empty(),
        "audit only reads: {:?}",
        api.writes()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_elect_one_claim_controller_through_the_lease() {
    let api = ApiServer::new();
    api.set_list(
        "/apis/apps/v1/deployments",
        vec![json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"},
            "items": [stored_mutated("orders-db")]})],
    );
    let stop = tokio::sync::watch::channel(false).0;
    let replicas: Vec<_> = ["replica-a", "replica-b"]
        .into_iter()
        .map(|identity| {
            let metrics = ControllerMetrics::default();
            let client = api.client();
            let stores = claims::Stores::start(&client, &metrics.cluster);
            let config = tokio::sync::watch::channel(Arc::new(Config::default())).1;
            let task = tokio::spawn(claims::run_elected(
                client,
                stores,
                config,
                metrics.clone(),
                claims::Election {
                    lease_namespace: "pvc-guard".into(),
                    identity: identity.into(),
                },
                reports::Options::default(),
                stop.subscribe(),
            ));
            (identity, metrics, task)
        })
        .collect();
    eventually("a leader creates the claim", async || {
        api.writes()
            .iter()
            .any(|w| w.path.ends_with("/persistentvolumeclaims"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let holder = api.lease_holder().expect("the Lease has a holder");
    let leading: Vec<&str> = replicas
        .iter()
        .filter(|(_, m, _)| {
            encode(m)
                .lines()
                .any(|l| l == "pvc_guard_claim_controller_leader 1")
        })
        .map(|(id, _, _)| *id)
        .collect();
    assert_eq!(leading, [holder.as_str()], "exactly the holder leads");
    let claim_posts: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|w| w.path == "/api/v1/namespaces/shop/persistentvolumeclaims")
        .collect();
    assert_eq!(
        claim_posts.len(),
        1,
        "only the leader creates: {claim_posts:?}"
    );
    // Shutting down hands the Lease back rather than letting it expire.
    stop.send_replace(true);
    for (_, metrics, task) in replicas {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops promptly")
            .unwrap();
        assert!(
            encode(&metrics)
                .lines()
                .any(|l| l == "pvc_guard_claim_controller_leader 0")
        );
    }
    assert_eq!(api.lease_holder(), None, "the Lease was released");
}

/// `fixture`'s object stored as `namespace/name`, with the uid, generation
/// and resourceVersion the API server gives it.
fn stored_as(fixture_name: &str, namespace: &str, name: &str, generation: i64) -> Value {
    let mut object = fixture(fixture_name)["request"]["object"].clone();
    let meta = &mut object["metadata"];
    meta["namespace"] = json!(namespace);
    meta["name"] = json!(name);
    meta["uid"] = json!(format!("uid-{namespace}-{name}"));
    meta["generation"] = json!(generation);
    meta["resourceVersion"] = json!((600 + generation).to_string());
    object
}

const WGPOLICY: &str = "wgpolicyk8s.io/v1alpha2";
const OPENREPORTS: &str = "openreports.io/v1alpha1";

fn report_path(api_version: &str, namespace: &str) -> String {
    let plural = if api_version == WGPOLICY {
        "policyreports"
    } else {
        "reports"
    };
    format!("/apis/{api_version}/namespaces/{namespace}/{plural}/pvc-guard")
}

fn triples(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// The events published about `kind/name`: (type, reason, note).
fn events_about(api: &ApiServer, kind: &str, name: &str) -> Vec<(String, String, String)> {
    api.events()
        .iter()
        .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
                e["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `object` (kind, name) has exactly one event, of `(type, reason)`,
/// whose note contains `note`.
fn assert_one_event(api: &ApiServer, object: (&str, &str), what: (&str, &str), note: &str) {
    let events = events_about(api, object.0, object.1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].0.as_str(), events[0].1.as_str()), what);
    assert!(events[0].2.contains(note), "{events:?}");
}

fn report_writes(api: &ApiServer, path: &str) -> usize {
    api.writes().iter().filter(|w| w.path == path).count()
}

/// The claim controller on the mock's client as `instance`, deciding every
/// tracked workload again each `resync`; the sender changes its config.
fn start_claims(
    api: &Arc<ApiServer>,
    config: Config,
    instance: &str,
    resync: Duration,
) -> (
    ControllerMetrics,
    tokio::sync::watch::Sender<Arc<Config>>,
    tokio::task::JoinHandle<()>,
) {
    let metrics = ControllerMetrics::default();
    let client = api.client();
    let stores = claims::Stores::start(&client, &metrics.cluster);
    let (config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(config));
    let events = Events::new(client.clone(), instance, metrics.clone());
    let task = tokio::spawn(claims::run(
        client,
        stores,
        config_rx,
        "pvc-guard".into(),
        metrics.clone(),
        events,
        resync,
    ));
    (metrics, config_tx, task)
}

/// The reports keeper on the mock's client, computing a namespace at most
/// every `min_interval`.
fn start_reports(
    api: &Arc<ApiServer>,
    config: Config,
    min_interval: Duration,
) -> (ControllerMetrics, tokio::task::JoinHandle<()>) {
    let metrics = ControllerMetrics::default();
    let client = api.client();
    let stores = claims::Stores::start(&client, &metrics.cluster);
    let events = Events::new(client.clone(), "test", metrics.clone());
    let (_, config_rx) = tokio::sync::watch::channel(Arc::new(config));
    let task = tokio::spawn(reports::run(
        client,
        stores,
        config_rx,
        "pvc-guard".into(),
        metrics.clone(),
        events,
        reports::Options {
            batch: Duration::from_millis(100),
            min_interval,
            resync: Duration::from_secs(3600),
            reads: 4,
        },
    ));
    (metrics, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_reports_every_stored_workload_and_follows_the_cluster() {
    let api = ApiServer::new();
    api.serve_reports(WGPOLICY);
    api.serve_reports(OPENREPORTS);
    let deployments = "/apis/apps/v1/deployments";
    let orders = stored_as("pg-no-volume.create", "shop", "orders-db", 1);
    let mut cache = stored_as("pg-opt-out.create", "shop", "cache-db", 1);
    cache["metadata"]["annotations"]["pvc-guard.io/allow-ephemeral"] =
        json!("rebuilt from the ledger at start");
    let mut replica_set = stored_as("pg-no-volume.create", "shop", "orders-db-7d9", 1);
    replica_set["kind"] = json!("ReplicaSet");
    replica_set["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
        "name": "orders-db", "uid": "uid-shop-orders-db", "controller": true}]);
    let list = |kind: &str, items: Vec<Value>| {
        vec![
            json!({"kind": format!("{kind}List"), "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"}, "items": items}),
        ]
    };
    api.set_list(
        deployments,
        list(
            "Deployment",
            vec![
                orders.clone(),
                stored_as("nginx-stateless.create", "shop", "web", 1),
                cache,
                stored_as("redis-emptydir.create", "shop", "sessions", 1),
                // Never judged: pvc-guard.io/ignore=true, and pvc-guard's own namespace.
                stored_as("pg-no-volume.create", "ci", "e2e-db", 1),
                stored_as("pg-no-volume.create", "pvc-guard", "own-db", 1),
            ],
        ),
    );
    api.set_list(
        "/apis/apps/v1/replicasets",
        list("ReplicaSet", vec![replica_set]),
    );
    let mut system = stored_as("mariadb-pod.create", "kube-system", "etcd-backup", 1);
    system["kind"] = json!("Pod");
    api.set_list(
        "/api/v1/pods",
        vec![json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "600"}, "items": [system]})],
    );
    // What an earlier run wrote: shop's report (orders-db already failing)
    // and finance's, where nothing is left to report.
    let earlier = |ns: &str, results: Value| {
        json!({"apiVersion": WGPOLICY, "kind": "PolicyReport",
            "metadata": {"name": "pvc-guard", "namespace": ns, "uid": format!("uid-report-{ns}"),
                "labels": {"app.kubernetes.io/managed-by": "pvc-guard"}},
            "results": results})
    };
    let subject = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop",
        "name": "orders-db", "uid": "uid-shop-orders-db"}]);
    api.objects.lock().unwrap().extend([
        (
            report_path(WGPOLICY, "shop"),
            earlier("shop", json!([
                {"source": "pvc-guard", "policy": "pvc-guard", "rule": "ephemeral-data-path", "result": "fail", "resources": subject},
                {"source": "pvc-guard", "policy": "pvc-guard", "rule": "database-in-deployment", "result": "warn", "resources": subject}])),
        ),
        (
            report_path(WGPOLICY, "finance"),
            earlier("finance", json!([{"source": "pvc-guard", "policy": "pvc-guard", "result": "pass",
                "resources": [{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "finance", "name": "gone"}]}])),
        ),
    ]);
    let (metrics, task) = start_reports(&api, Config::default(), Duration::from_millis(1500));

    let shop = report_path(WGPOLICY, "shop");
    let first = triples(&[
        ("Deployment/cache-db", "warn", "database-in-deployment"),
        ("Deployment/cache-db", "skip", "config-volume-data-path"),
        ("Deployment/cache-db", "skip", "ephemeral-data-path"),
        ("Deployment/orders-db", "fail", "ephemeral-data-path"),
        ("Deployment/orders-db", "warn", "database-in-deployment"),
        ("Deployment/sessions", "warn", "ephemeral-data-path"),
        ("Deployment/web", "pass", ""),
    ]);
    eventually("shop's report holds every workload", async || {
        api.object(&shop)
            .is_some_and(|r| report_results(&r) == first)
    })
    .await;
    let report = api.object(&shop).unwrap();
    assert_eq!(
        report["metadata"]["uid"], "uid-report-shop",
        "updated in place"
    );
    assert_eq!(
        report["summary"],
        json!({"pass": 1, "fail": 1, "warn": 3, "error": 0, "skip": 2})
    );
    let fail = &report["results"].as_array().unwrap()[3];
    assert_eq!(fail["resources"][0]["uid"], "uid-shop-orders-db");
    assert_eq!(
        fail["properties"]["mode"], "warn",
        "shop is labelled mode=warn"
    );
    assert!(
        fail["message"]
            .as_str()
            .unwrap()
            .starts_with("[ephemeral-data-path] Deployment shop/orders-db"),
        "{fail}"
    );
    let skip = &report["results"].as_array().unwrap()[1];
    assert_eq!(
        skip["properties"]["reason"],
        "rebuilt from the ledger at start"
    );
    // The Report of openreports.io holds the same results.
    let open = report_path(OPENREPORTS, "shop");
    eventually("the openreports Report is written too", async || {
        api.object(&open)
            .is_some_and(|r| r["results"] == api.object(&shop).unwrap()["results"])
    })
    .await;
    assert_eq!(api.object(&open).unwrap()["source"], "pvc-guard");
    // An ignored namespace: a skip with the reason; pvc-guard's own and
    // the control plane's: no report; finance: nothing left, deleted.
    let ci_path = report_path(WGPOLICY, "ci");
    eventually("ci's report", async || api.object(&ci_path).is_some()).await;
    let ci = api.object(&ci_path).unwrap();
    assert_eq!(
        report_results(&ci),
        triples(&[("Deployment/e2e-db", "skip", "")])
    );
    assert!(
        ci["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("pvc-guard.io/ignore=true"),
        "{ci}"
    );
    for ns in ["pvc-guard", "kube-system"] {
        assert!(api.object(&report_path(WGPOLICY, ns)).is_none(), "{ns}");
    }
    eventually("finance's stale report is deleted", async || {
        api.object(&report_path(WGPOLICY, "finance")).is_none()
    })
    .await;
    // Each judged workload is read once; nothing owned, skipped or
    // unreported is read at all.
    let gets: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|s| s.method == "GET" && !s.is_watch() && s.path.contains("/namespaces/"))
        .filter(|s| !s.path.contains("wgpolicyk8s.io") && !s.path.contains("openreports.io"))
        .map(|s| s.path)
        .collect();
    let mut expected: Vec<String> = ["cache-db", "orders-db", "sessions", "web"]
        .iter()
        .map(|n| format!("/apis/apps/v1/namespaces/shop/deployments/{n}"))
        .collect();
    let mut sorted = gets.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);
    // Events for what changed since the earlier report: one for each newly
    // found violation, none for orders-db (already reported; decided
    // before sessions, in the same pass).
    eventually("sessions' violation is announced", async || {
        !events_about(&api, "Deployment", "sessions").is_empty()
    })
    .await;
    assert!(events_about(&api, "Deployment", "orders-db").is_empty());
    assert!(events_about(&api, "Deployment", "web").is_empty());
    assert_one_event(
        &api,
        ("Deployment", "sessions"),
        ("Warning", "PolicyViolation"),
        "warn ephemeral-data-path",
    );

    // Fixed: its failure goes, the report is changed in place, and an
    // event says what is left.
    let policy = pvc_guard::policy::Policy::new(Config::default());
    let mut fixed = common::fixed(&policy, &orders);
    fixed["metadata"]["generation"] = json!(2);
    fixed["metadata"]["resourceVersion"] = json!("602");
    api.send_watch(deployments, &json!({"type": "MODIFIED", "object": fixed}));
    eventually("the fixed workload's failure is gone", async || {
        let results = report_results(&api.object(&shop).unwrap());
        !results
            .iter()
            .any(|(w, r, _)| w == "Deployment/orders-db" && r == "fail")
    })
    .await;
    assert_eq!(
        api.object(&shop).unwrap()["metadata"]["uid"],
        "uid-report-shop"
    );
    eventually(
        "an event says what is left of orders-db's findings",
        async || {
            events_about(&api, "Deployment", "orders-db")
                .iter()
                .any(|(t, reason, note)| {
                    t == "Warning" && reason == "PolicyViolation" && !note.contains("fail")
                })
        },
    )
    .await;

    // Deleted: its result goes.
    let mut web = stored_as("nginx-stateless.create", "shop", "web", 1);
    web["metadata"]["resourceVersion"] = json!("700");
    api.send_watch(deployments, &json!({"type": "DELETED", "object": web}));
    eventually("the deleted workload's pass is gone", async || {
        !report_results(&api.object(&shop).unwrap())
            .iter()
            .any(|(w, _, _)| w == "Deployment/web")
    })
    .await;

    // Changes that keep coming cost one computation per interval (1.5 s):
    // ten changes over two seconds, at most three writes.
    let before = report_writes(&api, &shop);
    for generation in 2..12 {
        let mut sessions = stored_as("redis-emptydir.create", "shop", "sessions", generation);
        if generation == 11 {
            sessions["metadata"]["annotations"]["pvc-guard.io/allow-ephemeral"] = json!("a cache");
        } else {
            // Each a change of the report: a new container name.
            sessions["spec"]["template"]["spec"]["containers"][0]["name"] =
                json!(format!("redis-{generation}"));
        }
        api.send_watch(
            deployments,
            &json!({"type": "MODIFIED", "object": sessions}),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually("the last change is reported", async || {
        report_results(&api.object(&shop).unwrap())
            .iter()
            .any(|(w, r, _)| w == "Deployment/sessions" && r == "skip")
    })
    .await;
    let burst = report_writes(&api, &shop) - before;
    assert!(burst <= 3, "{burst} writes for ten changes in two seconds");
    eventually("a violation that goes is announced", async || {
        events_about(&api, "Deployment", "sessions")
            .iter()
            .any(|(t, reason, _)| t == "Normal" && reason == "PolicyPass")
    })
    .await;
    assert!(encode(&metrics).contains("pvc_guard_events_published_total"));
    task.abort();
    assert!(
        api.unexpected.lock().unwrap().is_empty(),
        "{:?}",
        api.unexpected.lock().unwrap()
    );
}

/// What RBAC must allow for a request: (namespace, apiGroup, resource,
/// name, verb) each; none for discovery, which every user may read. A
/// server-side apply (a PATCH with a fieldManager) is authorized as a
/// patch, and also as a create when it creates the object, which the API
/// server checks then: both are required.
fn authorized_as(seen: &api::Seen) -> Vec<(String, String, String, String, String)> {
    let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not an API path: {seen:?}"),
    };
    let (namespace, resource, name) = match rest {
        [] => return Vec::new(),
        ["namespaces", ns, resource, name @ ..] => (*ns, *resource, name.first().copied()),
        [resource, name @ ..] => ("", *resource, name.first().copied()),
    };
    let verbs: &[&str] = match (seen.method.as_str(), name) {
        ("GET", Some(_)) => &["get"],
        ("GET", None) if seen.is_watch() => &["watch"],
        ("GET", None) => &["list"],
        ("POST", _) => &["create"],
        ("PATCH", _) if seen.param("fieldManager").is_some() => &["patch", "create"],
        ("PATCH", _) => &["patch"],
        ("PUT", _) => &["update"],
        ("DELETE", _) => &["delete"],
        (other, _) => panic!("{other} {seen:?}"),
    };
    verbs
        .iter()
        .map(|verb| {
            (
                namespace.into(),
                group.into(),
                resource.into(),
                name.unwrap_or("").into(),
                verb.to_string(),
            )
        })
        .collect()
}

/// Does manifests/base/rbac.yaml let `account` (in pvc-guard) make `request`?
fn granted(
    docs: &[Value],
    account: &str,
    request: &(String, String, String, String, String),
) -> bool {
    let (namespace, group, resource, name, verb) = request;
    let has = |list: &Value, want: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
    };
    docs.iter()
        .filter(|b| b["kind"] == "ClusterRoleBinding" || b["kind"] == "RoleBinding")
        .filter(|b| {
            b["subjects"].as_array().into_iter().flatten().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == account
                    && s["namespace"] == "pvc-guard"
            })
        })
        .any(|binding| {
            let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
            if role_kind == "Role" && binding["metadata"]["namespace"] != namespace.as_str() {
                return false;
            }
            let role = docs
                .iter()
                .find(|d| {
                    d["kind"] == role_kind && d["metadata"]["name"] == binding["roleRef"]["name"]
                })
                .expect("the bound role");
            role["rules"].as_array().into_iter().flatten().any(|rule| {
                has(&rule["apiGroups"], group)
                    && has(&rule["resources"], resource)
                    && has(&rule["verbs"], verb)
                    && (rule.get("resourceNames").is_none() || has(&rule["resourceNames"], name))
            })
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_the_controller_makes_is_granted_to_its_service_account() {
    let api = ApiServer::new();
    api.serve_reports(WGPOLICY);
    api.serve_reports(OPENREPORTS);
    api.set_list(
        "/apis/apps/v1/deployments",
        vec![json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"},
            "items": [stored_mutated("orders-db"), stored_as("redis-emptydir.create", "shop", "sessions", 1)]})],
    );
    for (api_version, plural) in [(WGPOLICY, "policyreports"), (OPENREPORTS, "reports")] {
        api.objects.lock().unwrap().insert(
            report_path(api_version, "finance"),
            json!({"apiVersion": api_version, "metadata": {"name": "pvc-guard", "namespace": "finance",
                "labels": {"app.kubernetes.io/managed-by": "pvc-guard"}}, "kind": plural, "results": []}),
        );
    }
    let metrics = ControllerMetrics::default();
    let client = api.client();
    let stores = claims::Stores::start(&client, &metrics.cluster);
    let (_config, config) = tokio::sync::watch::channel(Arc::new(Config::default()));
    let stop = tokio::sync::watch::channel(false).0;
    let task = tokio::spawn(claims::run_elected(
        client,
        stores,
        config,
        metrics,
        claims::Election {
            lease_namespace: "pvc-guard".into(),
            identity: "controller-0".into(),
        },
        reports::Options {
            batch: Duration::from_millis(50),
            ..reports::Options::default()
        },
        stop.subscribe(),
    ));
    // Every kind of call: the Lease, the caches and watches, a GET, a
    // claim and its event, a report written and one deleted.
    eventually("the controller has done one of everything", async || {
        let w = api.writes();
        let did = |method: &str, part: &str| {
            w.iter()
                .any(|s| s.method == method && s.path.contains(part))
        };
        did("POST", "/persistentvolumeclaims")
            && did("POST", "/events")
            && did("PATCH", "/policyreports/")
            && did("PATCH", "/reports/")
            && did("DELETE", "/policyreports/")
            && did("DELETE", "/reports/")
            && did("PATCH", "/leases/")
    })
    .await;
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops promptly")
        .unwrap();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/rbac.yaml"),
    )
    .unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let mut calls: Vec<_> = api.requests().iter().flat_map(authorized_as).collect();
    calls.sort();
    calls.dedup();
    assert!(calls.iter().any(|c| c.4 == "get" && c.2 == "deployments"));
    let refused: Vec<_> = calls
        .iter()
        .filter(|c| !granted(&docs, "pvc-guard-controller", c))
        .collect();
    assert!(refused.is_empty(), "calls RBAC would refuse: {refused:?}");
    // The check can fail: the webhook's account may make none of these writes.
    assert!(
        calls
            .iter()
            .filter(|c| c.4 != "list" && c.4 != "watch")
            .all(|c| !granted(&docs, "pvc-guard", c))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_events_say_what_was_created_and_why_the_api_server_refused() {
    let api = ApiServer::new();
    api.set_list(
        "/apis/apps/v1/deployments",
        vec![json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"},
            "items": [
                recorded("shop", "orders-db", "orders-db-data", RWO_10G, true),
                recorded("platform", "ledger-db", "ledger-db-data", RWO_10G, true),
            ]})],
    );
    let (metrics, _config, controller) = start_claims(
        &api,
        Config::default(),
        "controller-0",
        Duration::from_secs(3600),
    );
    eventually("an event for each outcome", async || {
        api.events().len() >= 2
    })
    .await;
    controller.abort();
    assert_one_event(
        &api,
        ("Deployment", "orders-db"),
        ("Normal", "ClaimCreated"),
        "orders-db-data (10Gi, ReadWriteOnce",
    );
    assert_one_event(
        &api,
        ("Deployment", "ledger-db"),
        ("Warning", "ClaimCreateFailed"),
        "Forbidden (403): persistentvolumeclaims \"ledger-db-data\" is forbidden: exceeded quota: no-claims",
    );
    let event = api
        .events()
        .into_iter()
        .find(|e| e["reason"] == "ClaimCreateFailed")
        .unwrap();
    assert_eq!(event["regarding"]["uid"], "uid-platform-ledger-db");
    assert_eq!(event["related"]["kind"], "PersistentVolumeClaim");
    assert_eq!(event["related"]["name"], "ledger-db-data");
    assert_eq!(event["reportingController"], "pvc-guard.io/controller");
    assert_eq!(event["reportingInstance"], "controller-0");
    assert!(encode(&metrics).contains("pvc_guard_events_published_total 2"));
}

/// The directory of the policy report CRDs (`$PVC_GUARD_CRDS`, else the
/// copies in tests/data/crds, which the end-to-end tests install too);
/// `None` after saying why when it is absent, unless
/// `PVC_GUARD_E2E_REQUIRED=1` (CI) makes that a failure.
fn crds_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("PVC_GUARD_CRDS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/crds")
        });
    if dir.join("wgpolicyk8s.io_policyreports.yaml").exists() {
        return Some(dir);
    }
    skip(&format!(
        "no policy report CRDs in {} (set PVC_GUARD_CRDS to the directory holding wgpolicyk8s.io_policyreports.yaml and openreports.io_reports.yaml)",
        dir.display()
    ));
    None
}

/// The openAPIV3Schema of `version` in the CRD file `file`, held to its
/// fields the way the API server's strict field validation holds a
/// server-side apply: an object that lists its properties takes no other.
fn crd_schema(dir: &std::path::Path, file: &str, version: &str) -> Value {
    fn strict(schema: &mut Value) {
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        if object.contains_key("properties")
            && !object.contains_key("additionalProperties")
            && !object.contains_key("x-kubernetes-preserve-unknown-fields")
        {
            object.insert("additionalProperties".into(), json!(false));
        }
        for value in object.values_mut() {
            match value {
                Value::Object(_) => strict(value),
                Value::Array(items) => items.iter_mut().for_each(strict),
                _ => {}
            }
        }
    }
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let crd: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut schema = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file} has no version {version}"))["schema"]["openAPIV3Schema"]
        .clone();
    strict(&mut schema);
    schema
}

fn schema_errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_prints_the_controllers_policy_reports_and_they_fit_the_crds() {
    let Some(crds) = crds_dir() else {
        return;
    };
    let wgpolicy = jsonschema::validator_for(&crd_schema(
        &crds,
        "wgpolicyk8s.io_policyreports.yaml",
        "v1alpha2",
    ))
    .unwrap();
    let openreports = jsonschema::validator_for(&crd_schema(
        &crds,
        "openreports.io_reports.yaml",
        "v1alpha1",
    ))
    .unwrap();
    let lists = |api: &ApiServer| {
        let mut owned = stored_as("pg-no-volume.create", "data", "orders-db-5d9c7", 1);
        owned["kind"] = json!("Pod");
        owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "orders-db", "uid": "u", "controller": true}]);
        let mut system = stored_as("mariadb-pod.create", "kube-system", "etcd-backup", 1);
        system["kind"] = json!("Pod");
        api.set_list(
            "/apis/apps/v1/deployments",
            vec![json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"}, "items": [
                stored_as("pg-no-volume.create", "data", "orders-db", 1),
                stored_as("nginx-stateless.create", "data", "web", 1),
                stored_as("pg-opt-out.create", "data", "cache-db", 1),
                stored_as("pg-no-volume.create", "ci", "e2e-db", 1),
            ]})],
        );
        api.set_list(
            "/api/v1/pods",
            vec![json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "600"}, "items": [owned, system]})],
        );
    };
    let api = ApiServer::new();
    lists(&api);
    let (url, ca) = api.serve_https().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &url, &ca);
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_cli_env(
            &["audit", "-A", "-o", "policyreport"],
            &[("KUBECONFIG", config.to_str().unwrap())],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        code, 1,
        "a denial exits 1, as with every format: {out}{err}"
    );
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let namespaces: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["ci", "data"], "no report for kube-system");
    for doc in &docs {
        assert_eq!(doc["apiVersion"], WGPOLICY);
        assert_eq!(doc["kind"], "PolicyReport");
        assert_eq!(doc["metadata"]["name"], "pvc-guard");
        let errors = schema_errors(&wgpolicy, doc);
        assert!(errors.is_empty(), "{errors:?}\n{doc}");
        // The same results as an openreports.io Report fit its CRD too.
        let results = pvc_guard::report::policy_report::results_of(doc);
        let open = pvc_guard::report::policy_report::document(
            pvc_guard::report::policy_report::ReportApi::OpenReports,
            doc["metadata"]["namespace"].as_str().unwrap(),
            &results,
        );
        let errors = schema_errors(&openreports, &open);
        assert!(errors.is_empty(), "{errors:?}\n{open}");
    }
    let data = &docs[1];
    assert_eq!(
        report_results(data),
        triples(&[
            ("Deployment/cache-db", "warn", "database-in-deployment"),
            ("Deployment/cache-db", "skip", "config-volume-data-path"),
            ("Deployment/cache-db", "skip", "ephemeral-data-path"),
            ("Deployment/orders-db", "fail", "ephemeral-data-path"),
            ("Deployment/orders-db", "warn", "database-in-deployment"),
            ("Deployment/web", "pass", ""),
        ])
    );
    assert_eq!(
        report_results(&docs[0]),
        triples(&[("Deployment/e2e-db", "skip", "")])
    );
    // The schema check can fail: an outcome or a field the CRD does not know.
    let mut broken = data.clone();
    broken["results"][0]["result"] = json!("denied");
    assert!(!wgpolicy.is_valid(&broken));
    let mut broken = data.clone();
    broken["results"][0]["rules"] = json!(["x"]);
    assert!(!wgpolicy.is_valid(&broken));

    // The controller writes the same results for the same stored objects.
    let cluster = ApiServer::new();
    lists(&cluster);
    cluster.serve_reports(WGPOLICY);
    let (_metrics, task) = start_reports(&cluster, Config::default(), Duration::from_millis(100));
    let path = report_path(WGPOLICY, "data");
    eventually("the controller reports on data", async || {
        cluster.object(&path).is_some()
    })
    .await;
    task.abort();
    let strip = |doc: &Value| {
        let mut results = doc["results"].clone();
        for r in results.as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("timestamp");
        }
        results
    };
    let written = cluster.object(&path).unwrap();
    assert_eq!(strip(&written), strip(data));
    assert_eq!(written["summary"], data["summary"]);
}

/// A Pod a ReplicaSet owns, with the status a running pod carries.
fn owned_pod(namespace: &str, name: &str) -> Value {
    let mut pod = stored_as("mariadb-pod.create", namespace, name, 1);
    pod["kind"] = json!("Pod");
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": format!("{name}-rs"), "uid": format!("uid-{name}-rs"), "controller": true, "blockOwnerDeletion": true}]);
    let time = "2026-11-22T03:40:00Z";
    let conditions: Vec<Value> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .map(
        |t| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": time}),
    )
    .collect();
    pod["status"] = json!({"phase": "Running", "hostIP": "10.0.3.17", "podIP": "10.244.3.41",
        "podIPs": [{"ip": "10.244.3.41"}], "qosClass": "Burstable", "startTime": time,
        "conditions": conditions,
        "containerStatuses": [{"name": "mariadb", "ready": true, "restartCount": 0, "started": true,
            "image": "docker.io/library/mariadb:11.4", "imageID": format!("docker.io/library/mariadb@sha256:{}", "ab12".repeat(16)),
            "containerID": format!("containerd://{}", "cd34".repeat(16)),
            "state": {"running": {"startedAt": time}}, "lastState": {}}]});
    pod
}

/// What the reports keeper keeps for 2,000 stored workloads beside 8,000
/// owned Pods, against what reflector caches of the full objects keep
/// (managedFields dropped, as pvc-guard's own caches do), counted on this
/// thread. The keeper holds metadata streams, the typed view of each
/// workload without an owner and the reports; the caches would hold every
/// object of every kind. Run with --nocapture to see the numbers.
#[tokio::test(flavor = "current_thread")]
async fn the_reports_keeper_keeps_far_less_than_caches_of_full_objects() {
    const WORKLOADS: usize = 2_000;
    const PODS: usize = 8_000;
    let namespaces = [
        "data",
        "default",
        "finance",
        "logging",
        "monitoring",
        "platform",
        "shop",
        "wordpress",
    ];
    let api = ApiServer::new();
    api.serve_reports(WGPOLICY);
    let deployments: Vec<Value> = (0..WORKLOADS)
        .map(|i| {
            let fixture = [
                "pg-no-volume.create",
                "nginx-stateless.create",
                "redis-emptydir.create",
            ][i % 3];
            stored_as(
                fixture,
                namespaces[i % namespaces.len()],
                &format!("app-{i}"),
                1,
            )
        })
        .collect();
    let pods: Vec<Value> = (0..PODS)
        .map(|i| {
            owned_pod(
                namespaces[i % namespaces.len()],
                &format!("app-{}-5d9c7-{i}", i % WORKLOADS),
            )
        })
        .collect();
    let bytes = |items: &[Value]| items.iter().map(|i| i.to_string().len()).sum::<usize>();
    eprintln!(
        "stored: {WORKLOADS} Deployments ({} KiB of JSON), {PODS} owned Pods ({} KiB)",
        bytes(&deployments) / 1024,
        bytes(&pods) / 1024
    );
    api.set_list(
        "/apis/apps/v1/deployments",
        vec![json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "600"}, "items": deployments})],
    );
    api.set_list(
        "/api/v1/pods",
        vec![json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "600"}, "items": pods})],
    );
    let settle = || tokio::time::sleep(Duration::from_millis(300));

    let before = live_bytes();
    let (_metrics, keeper) = start_reports(&api, Config::default(), Duration::from_millis(100));
    eventually("every namespace is reported", async || {
        namespaces
            .iter()
            .all(|ns| api.object(&report_path(WGPOLICY, ns)).is_some())
    })
    .await;
    settle().await;
    // The mock's own records (requests seen, reports as stored) are not
    // the keeper's.
    api.seen.lock().unwrap().clear();
    api.objects.lock().unwrap().clear();
    let keeper_bytes = live_bytes() - before;
    keeper.abort();
    let _ = keeper.await;
    settle().await;

    let before = live_bytes();
    let client = api.client();
    let mut stores = Vec::new();
    for (group, version, kind, plural) in pvc_guard::cluster::audit::WORKLOADS {
        let resource = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, version, kind),
            plural,
        );
        let writer = kube::runtime::reflector::store::Writer::new(resource.clone());
        let reader = writer.as_reader();
        use kube::runtime::WatchStreamExt;
        let stream = kube::runtime::watcher(
            kube::Api::<kube::api::DynamicObject>::all_with(client.clone(), &resource),
            kube::runtime::watcher::Config::default(),
        )
        .modify(|o| o.metadata.managed_fields = None);
        let stream = kube::runtime::reflector(writer, stream);
        stores.push((
            reader.clone(),
            tokio::spawn(async move {
                use futures_util::StreamExt;
                let mut stream = std::pin::pin!(stream);
                while stream.next().await.is_some() {}
            }),
        ));
    }
    for (reader, _) in &stores {
        reader.wait_until_ready().await.unwrap();
    }
    settle().await;
    let cache_bytes = live_bytes() - before;
    let cached: usize = stores.iter().map(|(r, _)| r.len()).sum();
    eprintln!(
        "reports keeper: {} KiB ({} B per workload judged); full-object caches: {} KiB for {cached} objects ({} B per object)",
        keeper_bytes / 1024,
        keeper_bytes / WORKLOADS as i64,
        cache_bytes / 1024,
        cache_bytes / cached as i64,
    );
    assert_eq!(cached, WORKLOADS + PODS);
    assert!(
        keeper_bytes * 4 < cache_bytes,
        "the keeper keeps {keeper_bytes} B, caches of full objects {cache_bytes} B"
    );
}
