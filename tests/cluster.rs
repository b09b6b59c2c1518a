//! Cluster facts, the claim controller and `audit`, against a kube client
//! whose API server is a scripted tower service answering with responses a
//! real kube-apiserver v1.33 sent (tests/data/api).

#[path = "common/api.rs"]
mod api;
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::ApiServer;
use clap::Parser;
use common::*;
use pvc_guard::cli::{Cli, Command};
use pvc_guard::cluster::claims;
use pvc_guard::cluster::metrics::ControllerMetrics;
use pvc_guard::config::Config;
use serde_json::{Value, json};

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
    let metrics = ControllerMetrics::default();
    let client = api.client();
    // The namespaces list is held while the claims cache syncs, so the
    // controller and the stores' own sync task are both waiting when it
    // arrives: the controller must still be woken (kube-runtime wakes only
    // the last task that polled a store's readiness).
    api.close();
    let stores = claims::Stores::start(&client, &metrics.cluster);
    let (_config, config_rx) = tokio::sync::watch::channel(Arc::new(Config::default()));
    let controller = tokio::spawn(claims::run(
        client,
        stores,
        config_rx,
        "pvc-guard".into(),
        metrics.clone(),
        Duration::from_millis(200),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.writes().is_empty(), "no claim before the caches sync");
    api.open();
    eventually("two claims posted", async || api.writes().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    controller.abort();
    let writes = api.writes();
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
    let metrics = ControllerMetrics::default();
    let client = api.client();
    let stores = claims::Stores::start(&client, &metrics.cluster);
    let (config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
    let controller = tokio::spawn(claims::run(
        client,
        stores,
        config_rx,
        "pvc-guard".into(),
        metrics.clone(),
        Duration::from_secs(3600),
    ));
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
                stop.subscribe(),
            ));
            (identity, metrics, task)
        })
        .collect();
    eventually("a leader creates the claim", async || {
        !api.writes().iter().all(|w| w.path.contains("leases"))
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
