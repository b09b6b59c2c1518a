//! Hard caps and linear cost, over HTTPS against the real binary. Every
//! count an object can grow (containers, volumes, mounts, data-path
//! entries, data paths, list elements, findings, message bytes) has a
//! cap; beyond it the answer is a denial that names the cap, never a
//! hang. The three inputs that used to take seconds to minutes (tens of
//! thousands of volumes, thousands of postgres containers, a data-paths
//! annotation of 20,000 entries over 4,000 mounts) are answered here;
//! benches/core.rs measures how fast.
//! Time is never asserted: these tests check the answers.

mod common;
// The bench measures these same objects (benches/core.rs).
#[path = "../benches/shapes.rs"]
#[allow(dead_code)]
mod shapes;

use common::{Server, allowed, patch_of, post, warnings};
use serde_json::{Value, json};
use shapes::{deployment, postgres};

fn review(object: Value, operation: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "limits", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "big", "namespace": "shop", "operation": operation,
        "userInfo": {"username": "admin", "groups": ["system:masters"]},
        "object": object}})
}

fn message(answer: &Value) -> &str {
    answer
        .pointer("/response/status/message")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Sends `object` to both endpoints; returns (validate, mutate) answers.
async fn judge(server: &Server, object: Value) -> (Value, Value) {
    let client = server.client(true);
    let body = review(object, "CREATE");
    let (s1, validate) = post(&client, &server.url("/validate"), &body).await;
    let (s2, mutate) = post(&client, &server.url("/mutate"), &body).await;
    assert_eq!((s1, s2), (200, 200), "{validate} {mutate}");
    (validate, mutate)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inputs_that_used_to_take_minutes_are_answered_with_the_cap_they_exceed() {
    let server = Server::start(&["--max-body-bytes", "8388608"]);
    // 40,000 unused emptyDir volumes beside one postgres.
    let (v, m) = judge(&server, shapes::volumes(40_000)).await;
    assert_eq!(allowed(&v), Some(false));
    assert!(message(&v).starts_with("[limit-exceeded]"), "{v}");
    assert!(message(&v).contains("40000 volumes") && message(&v).contains("1024"));
    assert!(
        patch_of(&m).is_none(),
        "nothing is fixed on an object not judged"
    );
    // 4,000 postgres containers.
    let (v, _) = judge(&server, shapes::postgres_containers(4_000)).await;
    assert!(
        message(&v).contains("4000 containers and init containers"),
        "{v}"
    );
    // A data-paths annotation of 20,000 entries over 4,000 mounts.
    let (v, _) = judge(&server, shapes::data_paths(20_000, 4_000)).await;
    assert!(message(&v).starts_with("[limit-exceeded]"), "{v}");
    assert!(
        message(&v).contains("4000 volume mounts in one container"),
        "the first cap exceeded is named: {v}"
    );
    // The server is still answering at once.
    let (small, _) = judge(&server, deployment(vec![postgres(0)], vec![], json!({}))).await;
    assert!(
        message(&small).starts_with("[ephemeral-data-path]"),
        "{small}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inputs_whose_cost_was_a_product_of_their_parts_are_answered() {
    let server = Server::start(&[]);
    let root_warnings = |answer: &Value| {
        warnings(answer)
            .iter()
            .filter(|w| w.starts_with("[pgdata-mount-root]"))
            .count()
    };
    // 32 postgres at the root of one claim and an init container whose
    // `rm` has 15,000 arguments over 1,024 roots of that claim: each
    // postgres compared every root with every argument (minutes).
    let (v, _) = judge(&server, shapes::lost_found(32, 1024, 15_000, false)).await;
    assert_eq!(allowed(&v), Some(true), "{v}");
    assert_eq!(root_warnings(&v), 32, "{v}");
    // The same, where the last argument removes the last root's
    // lost+found: initdb will find the empty directory it needs.
    let (v, _) = judge(&server, shapes::lost_found(32, 1024, 15_000, true)).await;
    assert_eq!(allowed(&v), Some(true), "{v}");
    assert_eq!(root_warnings(&v), 0, "{v}");

    // A 200 KB minio script: each word looked back through all those
    // before it for `server`.
    let script = format!("exec minio server {}/data", "x ".repeat(100_000));
    let minio =
        json!({"name": "minio", "image": "example/minio:1", "command": ["sh", "-c", script]});
    let (v, _) = judge(&server, deployment(vec![minio], vec![], json!({}))).await;
    assert!(message(&v).starts_with("[ephemeral-data-path]"), "{v}");
    assert!(message(&v).contains("/data"), "{v}");
    // A variable of 50,000 `)/a.db` after one `$(`: each match searched
    // back for the `$(` and copied everything from it.
    let value = format!("$({}", ")/a.db ".repeat(50_000));
    let app =
        json!({"name": "app", "image": "example/app:1", "env": [{"name": "DB", "value": value}]});
    let (v, _) = judge(&server, deployment(vec![app], vec![], json!({}))).await;
    assert!(message(&v).starts_with("[ephemeral-data-path]"), "{v}");
    assert!(message(&v).contains("/a.db"), "{v}");
    // 150,000 relative SQLite files in one variable, joined onto a working
    // directory of 4,000 bytes (and, without one, unplaceable): each was a
    // data path and a finding, gigabytes in all. Denied at a cap: the
    // bytes of the joined paths first, the count without them.
    let value: String = (0..150_000).map(|i| format!("sqlite:f{i}.db ")).collect();
    for (working_dir, cap) in [
        (
            Some(format!("/{}", "w".repeat(4000))),
            "bytes of data paths",
        ),
        (None, "4097 data paths"),
    ] {
        let mut app = json!({"name": "app", "image": "example/app:1", "env": [{"name": "DB", "value": value}]});
        if let Some(wd) = &working_dir {
            app["workingDir"] = json!(wd);
        }
        let (v, m) = judge(&server, deployment(vec![app], vec![], json!({}))).await;
        assert!(message(&v).starts_with("[limit-exceeded]"), "{v}");
        assert!(message(&v).contains(cap), "{v}");
        assert!(patch_of(&m).is_none());
    }

    // 4,096 SQLite files on an emptyDir whose sizeLimit is 4,096 nines
    // (more than claims.maxSize allows), in a working directory of 4,096
    // bytes: every data path copied the size into its refusal (80 MB),
    // and normalised the working directory again.
    let env: Vec<Value> = (0..4096)
        .map(|i| json!({"name": format!("DB{i}"), "value": format!("/d/{i}.db")}))
        .collect();
    let app = json!({"name": "app", "image": "example/app:1", "env": env,
        "workingDir": "/a".repeat(2048), "volumeMounts": [{"name": "d", "mountPath": "/d"}]});
    let volume = json!({"name": "d", "emptyDir": {"sizeLimit": "9".repeat(4096)}});
    let (v, m) = judge(&server, deployment(vec![app], vec![volume], json!({}))).await;
    assert!(message(&v).starts_with("[ephemeral-data-path]"), "{v}");
    assert!(
        message(&v).contains(&format!("{}...", "9".repeat(100))),
        "{v}"
    );
    assert!(
        !message(&v).contains(&"9".repeat(200)),
        "the size is quoted short"
    );
    assert!(patch_of(&m).is_none(), "{m}");

    // 16 databases on one emptyDir that 240 other containers (names of
    // 253 bytes) write too, and 256 data paths in each database: every
    // data path listed every writer, 660 MB for an 82 KB request. The
    // first few are named, the rest counted.
    let databases = (0..16).map(|k| {
        json!({"name": format!("db{k}"), "image": "example/app:1",
            "volumeMounts": [{"name": "v", "mountPath": "/d"}]})
    });
    let writers = (0..240).map(|k| {
        json!({"name": format!("{k:04}{}", "w".repeat(249)), "image": "example/app:1",
            "volumeMounts": [{"name": "v", "mountPath": "/e"}]})
    });
    let paths: Vec<String> = (0..256).map(|i| format!("/d/{i}")).collect();
    let object = deployment(
        databases.chain(writers).collect(),
        vec![json!({"name": "v", "emptyDir": {}})],
        json!({"pvc-guard.io/data-paths": paths.join(";")}),
    );
    let (v, m) = judge(&server, object).await;
    assert_eq!(allowed(&v), Some(false), "{v}");
    assert!(message(&v).contains("and 252 more"), "{}", message(&v));
    assert!(message(&v).len() <= 32 * 1024);
    assert!(patch_of(&m).is_none(), "{m}");

    // A record of 1,000 claim volumes and their mounts (200 KB) that the
    // object does not carry: every entry pvc-guard would write is kept,
    // and the fix's own entries follow them. Each entry was checked
    // against every other.
    let (v, m) = judge(&server, shapes::long_record(1_000)).await;
    assert_eq!(allowed(&v), Some(false), "{v}");
    let changes = recorded_changes(&m);
    assert!(changes.len() > 2_000, "{} entries", changes.len());
    assert_eq!(changes[1_999]["mountPath"], "/d/999");
    assert!(
        changes[2_000..]
            .iter()
            .any(|c| c["change"] == "mount" && c["container"] == "pg-0"),
        "{:?}",
        &changes[2_000..]
    );
    // One of 12,000 (2.6 MB) is more than the API server stores with an
    // object: ignored, with a warning, and the record is the fix's own.
    let (_, m) = judge(&server, shapes::long_record(12_000)).await;
    assert!(
        warnings(&m)
            .iter()
            .any(|w| w.contains("more than the 262144 the API server stores")),
        "{:?}",
        warnings(&m)
    );
    let changes = recorded_changes(&m);
    assert!(changes.len() < 10, "{changes:?}");

    // UPDATE: a record naming one volume 2,000 times, over 4 containers of
    // 256 mounts of it each. Each entry redid the volume's mounts: where
    // the update drops the claim, 2,000 copies of the 1,024 mounts put
    // back (1.7 GB at 423 KB); where the mounts share a path and the
    // update points the volume elsewhere, their square per entry.
    let update = |shared_path: bool, new_source: Value| {
        let entry = json!({"change": "claimVolume", "volume": "data", "claim": "big-cl",
            "size": "10Gi", "accessMode": "ReadWriteOnce"});
        let record =
            json!({"rules": ["ephemeral-data-path"], "changes": vec![entry; 2_000]}).to_string();
        let object = |source: Value| {
            let containers = (0..4)
                .map(|c| {
                    let mounts: Vec<Value> = (0..256)
                        .map(|i| {
                            let path = if shared_path { "/d".to_string() } else { format!("/d/{i}") };
                            json!({"name": "data", "mountPath": path, "subPath": format!("s{i}")})
                        })
                        .collect();
                    json!({"name": format!("c{c}"), "image": "example/app:1", "volumeMounts": mounts})
                })
                .collect();
            let mut volume = json!({"name": "data"});
            volume
                .as_object_mut()
                .unwrap()
                .extend(source.as_object().unwrap().clone());
            deployment(
                containers,
                vec![volume],
                json!({"pvc-guard.io/mutated": record}),
            )
        };
        let mut body = review(object(new_source), "UPDATE");
        body["request"]["oldObject"] =
            object(json!({"persistentVolumeClaim": {"claimName": "big-cl"}}));
        body
    };
    let client = server.client(true);
    let (status, m) = post(
        &client,
        &server.url("/mutate"),
        &update(false, json!({"emptyDir": {}})),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    let patch = patch_of(&m).expect("the claim is put back");
    let mounts = serde_json::to_value(&patch)
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    assert!(mounts < 4 * 1_024, "{mounts} operations");
    let (status, m) = post(
        &client,
        &server.url("/mutate"),
        &update(true, json!({"hostPath": {"path": "/x"}})),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    assert!(patch_of(&m).is_none(), "{m}");
    let on_purpose = warnings(&m)
        .iter()
        .filter(|w| w.contains("a change made on purpose wins"))
        .count();
    assert_eq!(on_purpose, 1, "{:?}", warnings(&m));
}

/// The entries of the record a mutation's patch writes.
fn recorded_changes(answer: &Value) -> Vec<Value> {
    let patch = patch_of(answer).expect("a patch");
    let record = serde_json::to_value(&patch)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find_map(|op| {
            let value = op.get("value")?;
            value
                .get("pvc-guard.io/mutated")
                .or_else(|| {
                    op["path"]
                        .as_str()?
                        .ends_with("pvc-guard.io~1mutated")
                        .then_some(value)
                })
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .expect("the record is written");
    let record: Value = serde_json::from_str(&record).unwrap();
    record["changes"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_cap_is_a_denial_that_names_it_and_just_below_it_the_object_is_judged() {
    let server = Server::start(&["--max-body-bytes", "8388608"]);
    let mount = |i: usize| json!({"name": "d", "mountPath": format!("/m/{i}")});
    let app = |mounts: Vec<Value>| json!({"name": "app", "image": "example/app:1", "volumeMounts": mounts});
    let d = || vec![json!({"name": "d", "emptyDir": {}})];
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "containers",
            deployment((0..257).map(postgres).collect(), vec![], json!({})),
            "257 containers and init containers",
        ),
        (
            "volumes",
            deployment(
                vec![postgres(0)],
                (0..1025)
                    .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
                    .collect(),
                json!({}),
            ),
            "1025 volumes",
        ),
        (
            "mounts in one container",
            deployment(vec![app((0..1025).map(mount).collect())], d(), json!({})),
            "1025 volume mounts in one container",
        ),
        (
            "mounts",
            deployment(
                (0..5)
                    .map(|c| {
                        let mut a = app((0..900).map(mount).collect());
                        a["name"] = json!(format!("app-{c}"));
                        a
                    })
                    .collect(),
                d(),
                json!({}),
            ),
            "4500 volume mounts",
        ),
        (
            "data-path entries",
            deployment(
                vec![app(vec![])],
                d(),
                json!({"pvc-guard.io/data-paths": (0..257).map(|i| format!("/d/{i}")).collect::<Vec<_>>().join(";")}),
            ),
            "257 entries in the pvc-guard.io/data-paths annotation",
        ),
        ("SQLite files", shapes::sqlite(4097), "4097 data paths"),
        // Variables, arguments, items, ...: all lists together, counted
        // with the container.
        (
            "list elements",
            shapes::empty_variables(32_768),
            "32769 list elements",
        ),
        (
            "data-paths entries times the containers they reach",
            shapes::data_paths_everywhere(17),
            "4352 data paths",
        ),
        (
            "the object's name",
            {
                let mut o = deployment(vec![postgres(0)], vec![], json!({}));
                o["metadata"]["name"] = json!("a".repeat(254));
                o
            },
            "254 bytes in its longest name",
        ),
        (
            "an image",
            deployment(
                vec![json!({"name": "app", "image": format!("example/{}:1", "a".repeat(1015))})],
                vec![],
                json!({}),
            ),
            "1025 bytes in its longest image reference",
        ),
        (
            "a working directory",
            deployment(
                vec![
                    json!({"name": "app", "image": "example/app:1", "workingDir": format!("/{}", "w".repeat(4096))}),
                ],
                vec![],
                json!({}),
            ),
            "4097 bytes in its longest workingDir, mountPath or subPath",
        ),
        (
            "the bytes of all data paths",
            // 16 entries of 3,999 bytes reaching 17 containers: 272 paths,
            // 1.09 MB.
            {
                let containers = (0..17)
                    .map(|c| {
                        json!({"name": format!("app{c}"), "image": "example/app:1",
                        "volumeMounts": [{"name": "d", "mountPath": "/d"}]})
                    })
                    .collect();
                let entries: Vec<String> = (0..16)
                    .map(|i| format!("/d/{i:02}{}", "p".repeat(3994)))
                    .collect();
                deployment(
                    containers,
                    d(),
                    json!({"pvc-guard.io/data-paths": entries.join(";")}),
                )
            },
            "1087728 bytes of data paths",
        ),
        (
            "a pvc-guard.io annotation value",
            deployment(
                vec![postgres(0)],
                vec![],
                json!({"pvc-guard.io/data-owner": format!("999:{}999", " ".repeat(4090))}),
            ),
            "4097 bytes in its longest pvc-guard.io annotation value",
        ),
        (
            "an emptyDir's sizeLimit",
            deployment(
                vec![app(vec![mount(0)])],
                vec![json!({"name": "d", "emptyDir": {"sizeLimit": "9".repeat(4097)}})],
                json!({}),
            ),
            "4097 bytes in its longest pvc-guard.io annotation value (but data-paths) or volume size",
        ),
        (
            "command and args",
            deployment(
                vec![
                    json!({"name": "app", "image": "example/app:1", "command": ["sh", "-c", "a;".repeat(131_072)], "args": ["x"]}),
                ],
                vec![],
                json!({}),
            ),
            "262149 bytes of command and args in all containers",
        ),
        (
            "a data-paths entry",
            deployment(
                vec![app(vec![])],
                d(),
                json!({"pvc-guard.io/data-paths": format!("/{}", "a".repeat(4096))}),
            ),
            "4097 bytes in its longest pvc-guard.io/data-paths entry",
        ),
    ];
    for (what, object, named) in cases {
        let (v, m) = judge(&server, object).await;
        assert_eq!(allowed(&v), Some(false), "{what}: {v}");
        assert!(message(&v).contains(named), "{what}: {v}");
        assert!(patch_of(&m).is_none(), "{what}");
    }
    // At the caps themselves the object is judged and fixed as usual.
    let at_cap = deployment(
        (0..256).map(postgres).collect(),
        (0..1024)
            .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
            .collect(),
        json!({}),
    );
    let (v, m) = judge(&server, at_cap).await;
    assert!(message(&v).starts_with("[ephemeral-data-path]"), "{v}");
    assert!(!message(&v).contains("limit-exceeded"));
    // A name and a working directory of the most bytes allowed.
    let mut long = deployment(
        vec![
            json!({"name": "pg", "image": "postgres:16", "workingDir": format!("/{}", "w".repeat(4095))}),
        ],
        vec![],
        json!({}),
    );
    long["metadata"]["name"] = json!("n".repeat(253));
    let (lv, lm) = judge(&server, long).await;
    assert!(message(&lv).starts_with("[ephemeral-data-path]"), "{lv}");
    assert!(patch_of(&lm).is_some());
    let patch = patch_of(&m).expect("a fix");
    assert!(patch.0.len() > 256, "every container gets its claim: {m}");
    // 4,096 data paths, SQLite files or annotation entries times the
    // containers they reach, are judged.
    for (what, object) in [
        ("SQLite files", shapes::sqlite(4096)),
        ("data-paths entries", shapes::data_paths_everywhere(16)),
        ("list elements", shapes::env(32_767, 8)),
    ] {
        let (v, m) = judge(&server, object).await;
        assert!(
            message(&v).starts_with("[ephemeral-data-path]"),
            "{what}: {v}"
        );
        assert!(patch_of(&m).is_some(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn findings_and_the_denial_message_are_capped_and_say_how_many_were_left_out() {
    let server = Server::start(&[]);
    // 150 SQLite files on the writable layer: 150 findings.
    let env: Vec<Value> = (0..150)
        .map(|i| json!({"name": format!("DB{i}"), "value": format!("/var/data/store-{i:03}/app.db")}))
        .collect();
    let container = json!({"name": "app", "image": "example/app:1", "env": env});
    let (v, _) = judge(&server, deployment(vec![container], vec![], json!({}))).await;
    let m = message(&v);
    assert_eq!(allowed(&v), Some(false));
    assert!(m.len() <= 32 * 1024, "{} bytes", m.len());
    let listed = m.matches("[ephemeral-data-path]").count();
    assert!((50..=100).contains(&listed), "{listed} listed");
    assert!(
        m.ends_with("...") || m.contains("and 50 more findings"),
        "the message says it is not the whole list: {}",
        &m[m.len() - 200..]
    );
    assert!(warnings(&v).len() <= 100);
}
