//! The laws of the mutation (docs/architecture.md, "The mutation and its
//! laws"), as property tests over generated workloads and over the
//! API-server-defaulted objects: the patch gives exactly the planned
//! object, a second mutation changes nothing, nothing fixable is left,
//! nothing unowned is touched, one claim backs one volume, and no
//! generated claim name is shared by two workloads.

mod common;

use proptest::prelude::*;
use pvc_guard::config::Config;
use pvc_guard::laws;
use pvc_guard::model::{Object, Workload};
use pvc_guard::mutate::{mutate_create, mutate_update};
use pvc_guard::policy::{ClusterFacts, Policy};
use pvc_guard::record::Change;
use serde_json::{Value, json};

fn policy() -> Policy {
    Policy::new(Config::default())
}

fn check_laws(object: &Value) -> Result<(), TestCaseError> {
    laws::check(&policy(), object).map_err(TestCaseError::fail)
}

fn view(object: &Value) -> Workload {
    match Object::from_value(object).unwrap() {
        Object::Workload(w) => *w,
        Object::Other => panic!("not a workload"),
    }
}

fn image() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("postgres:16.4")),
        Just(json!("postgres:18")),
        Just(json!("postgres")),
        Just(json!("mysql:8.4")),
        Just(json!("mariadb:11")),
        Just(json!("mongo:7")),
        Just(json!("redis:7.4")),
        Just(json!("bitnami/postgresql:17")),
        Just(json!("grafana/grafana:11.0.0")),
        Just(json!(
            "docker.elastic.co/elasticsearch/elasticsearch:8.15.0"
        )),
        Just(json!("nginx:1.27")),
        Just(json!("example/app:1")),
        Just(Value::Null),
        Just(json!(42)),
    ]
}

fn env() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!([])),
        Just(json!([{"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}])),
        Just(json!([{"name": "DB", "value": "sqlite:////srv/state/app.db"}])),
        Just(json!([{"name": "DB", "value": "/app/app.db"}])),
        Just(
            json!([{"name": "A", "value": "/data/a/app.db"}, {"name": "B", "value": "/data/b/app.db"}])
        ),
        Just(
            json!([{"name": "DB", "value": "/data/a/app.db"}, {"name": "LOG", "value": "/srv/log/audit.db"}])
        ),
        Just(json!([{"name": "MYSQL_ROOT_PASSWORD", "value": "x"}])),
        Just(json!([{"name": "PGDATA", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])),
        Just(json!(null)),
    ]
}

fn mounts() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!([])),
        Just(json!([{"name": "data", "mountPath": "/var/lib/postgresql/data"}])),
        Just(json!([{"name": "data", "mountPath": "/var/lib/postgresql"}])),
        Just(json!([{"name": "data", "mountPath": "/var/lib/mysql"}])),
        Just(json!([{"name": "data", "mountPath": "/data/db"}])),
        Just(json!([{"name": "data", "mountPath": "/data"}])),
        Just(json!([{"name": "data", "mountPath": "/srv/state"}])),
        Just(
            json!([{"name": "data", "mountPath": "/data/a"}, {"name": "other", "mountPath": "/data/b"}])
        ),
        Just(json!([{"name": "other", "mountPath": "/tmp"}])),
    ]
}

fn volume() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"name": "data", "emptyDir": {}})),
        Just(json!({"name": "data", "emptyDir": {"sizeLimit": "2Gi"}})),
        Just(json!({"name": "data", "persistentVolumeClaim": {"claimName": "c"}})),
        Just(
            json!({"name": "data", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "3Gi"}}}}}})
        ),
        Just(json!({"name": "other", "emptyDir": {}})),
        Just(json!({"name": "other", "persistentVolumeClaim": {"claimName": "w-db-data"}})),
        Just(json!({"name": "data", "hostPath": {"path": "/x"}})),
    ]
}

/// Container names that collide once joined to workload names with `-`.
fn container_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("db"), Just("postgres"), Just("db-postgres")]
}

fn container(name: impl Strategy<Value = &'static str>) -> impl Strategy<Value = Value> {
    (
        name,
        image(),
        env(),
        mounts(),
        any::<bool>(),
        // Ids the API server refuses are still seen by pvc-guard first.
        prop::option::of(prop_oneof![8 => 0i64..2000, 1 => Just(-1i64), 1 => Just(1i64 << 31)]),
    )
        .prop_map(move |(name, image, env, mounts, unknown, uid)| {
            let mut c = json!({"name": name, "image": image, "env": env, "volumeMounts": mounts});
            if unknown {
                c["x-unknown-field"] = json!({"kept": true});
            }
            if let Some(uid) = uid {
                c["securityContext"] = json!({"runAsUser": uid});
            }
            c
        })
}

fn workload_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => Just(json!({"name": "w"})),
        1 => Just(json!({"name": "Orders..DB_-"})),
        2 => Just(json!({"name": "orders"})),
        2 => Just(json!({"name": "orders-db"})),
        1 => Just(json!({"generateName": "migrate-"})),
    ]
}

fn workload() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("Deployment"), Just("StatefulSet"), Just("Pod"), Just("Job"), Just("DaemonSet"), Just("ReplicaSet")],
        container(container_name()),
        // A second container, now and then with the name of pvc-guard's
        // init container or the same name as the first.
        prop::option::of(container(prop_oneof![
            6 => Just("sidecar"),
            1 => Just("pvc-guard-permissions"),
            1 => Just("db"),
        ])),
        prop::collection::vec(volume(), 0..3),
        0i64..3,
        any::<bool>(),
        prop::option::of(Just(json!({"runAsNonRoot": true}))),
        workload_name(),
    )
        .prop_map(|(kind, db, sidecar, volumes, replicas, strategy, pod_sc, name)| {
            let mut containers = vec![db];
            if let Some(s) = sidecar {
                containers.push(s);
            }
            let mut names = std::collections::BTreeSet::new();
            let volumes: Vec<Value> = volumes.into_iter().filter(|v| names.insert(v["name"].as_str().unwrap().to_string())).collect();
            let mut pod = json!({"containers": containers, "volumes": volumes, "x-unknown": [1, 2, 3]});
            if let Some(sc) = pod_sc {
                pod["securityContext"] = sc;
            }
            let mut metadata = name;
            metadata["namespace"] = json!("ns");
            if kind == "Pod" {
                return json!({"apiVersion": "v1", "kind": kind, "metadata": metadata, "spec": pod});
            }
            metadata["labels"] = json!({"keep": "me"});
            let mut spec = json!({"replicas": replicas, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod}});
            if kind == "Job" {
                spec = json!({"parallelism": replicas, "template": {"spec": pod}});
            }
            if strategy && kind == "Deployment" {
                spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}});
            }
            json!({"apiVersion": "apps/v1", "kind": kind, "metadata": metadata, "spec": spec})
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn the_mutation_laws_hold_for_generated_workloads(w in workload()) {
        check_laws(&w)?;
    }

    #[test]
    fn no_generated_claim_name_is_shared_by_two_workloads(a in workload(), b in workload()) {
        laws::check_distinct(&policy(), &a, &b).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn the_mutation_laws_hold_for_api_server_defaulted_objects() {
    let mut n = 0;
    for entry in std::fs::read_dir(common::data("admission")).unwrap() {
        let review: Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        let object = &review["request"]["object"];
        check_laws(object).unwrap();
        n += 1;
    }
    assert_eq!(n, 17);
}

fn pod(containers: Value, volumes: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": "ns"},
        "spec": {"containers": containers, "volumes": volumes}})
}

/// The shapes that used to put two data directories on one claim.
#[test]
fn the_colliding_shapes_get_a_claim_each() {
    let policy = policy();
    // Two emptyDirs of one container at /data/a and /data/b.
    let two_dirs = pod(
        json!([{"name": "db", "image": "example/app:1", "env": [
            {"name": "A", "value": "/data/a/app.db"}, {"name": "B", "value": "/data/b/app.db"}],
            "volumeMounts": [{"name": "a", "mountPath": "/data/a"}, {"name": "b", "mountPath": "/data/b"}]}]),
        json!([{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]),
    );
    // A SQLite file on an emptyDir and a second one on the writable layer.
    let mixed = pod(
        json!([{"name": "app", "image": "example/app:1", "env": [
            {"name": "A", "value": "/data/a/app.db"}, {"name": "B", "value": "/srv/log/audit.db"}],
            "volumeMounts": [{"name": "a", "mountPath": "/data/a"}]}]),
        json!([{"name": "a", "emptyDir": {}}]),
    );
    // A new claim whose default name an existing volume already mounts.
    let taken = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": "ns"},
        "spec": {"replicas": 1, "template": {"spec": {
            "containers": [{"name": "db", "image": "postgres:16", "volumeMounts": [{"name": "old", "mountPath": "/backup"}]}],
            "volumes": [{"name": "old", "persistentVolumeClaim": {"claimName": "app-db-data"}}]}}}});
    for object in [&two_dirs, &mixed, &taken] {
        check_laws(object).unwrap();
        let claims = laws::new_claims(&policy, object, &ClusterFacts::default());
        assert!(!claims.is_empty(), "{object}: nothing fixed");
        let mut unique = claims.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), claims.len(), "{object}: {claims:?}");
    }
    let claims = laws::new_claims(&policy, &taken, &ClusterFacts::default());
    assert!(!claims.iter().any(|c| c == "app-db-data"), "{claims:?}");
    // Two workloads whose names join to the same default claim name.
    let deployment = |name: &str, container: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": container, "image": "postgres:16"}]}}}})
    };
    let a = deployment("orders", "db-postgres");
    let b = deployment("orders-db", "postgres");
    laws::check_distinct(&policy, &a, &b).unwrap();
    assert_eq!(
        laws::new_claims(&policy, &b, &ClusterFacts::default()),
        ["orders-db-postgres-data"],
        "a container name without a dash keeps the plain name"
    );
}

/// Several data paths under one mount of an emptyDir (and a second mount
/// of it at another subPath): the volume gets one claim, and each mount's
/// owner is set once. Each path used to add a claim of its own; the
/// volume kept the last and the others were created holding nothing.
#[test]
fn data_paths_on_one_volume_give_it_one_claim() {
    let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "ns", "annotations": {
            "pvc-guard.io/data-paths": "/d/0;/d/1;/d/2;/e/0", "pvc-guard.io/data-owner": "1000:1000"}},
        "spec": {"replicas": 1, "template": {"spec": {
            "containers": [{"name": "c0", "image": "example/app:1", "volumeMounts": [
                {"name": "data", "mountPath": "/d", "subPath": "d"},
                {"name": "data", "mountPath": "/e", "subPath": "e"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]}}}});
    check_laws(&object).unwrap();
    let policy = policy();
    assert_eq!(
        laws::new_claims(&policy, &object, &ClusterFacts::default()),
        ["app-c0-data"]
    );
    let w = view(&object);
    let m = mutate_create(&policy, &w, &ClusterFacts::default());
    let dirs: Vec<(&str, Option<&str>)> = m
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Permissions { dirs, .. } => Some(dirs),
            _ => None,
        })
        .flatten()
        .map(|d| (d.path.as_str(), d.sub_path.as_deref()))
        .collect();
    assert_eq!(dirs, [("/d", Some("d")), ("/e", Some("e"))]);
}

#[test]
fn a_claim_made_for_another_workload_is_never_reused() {
    use pvc_guard::policy::ClaimFacts;
    let object = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "orders-db", "namespace": "shop"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "postgres", "image": "postgres:16"}]}}}});
    let facts = |created_for: &str| ClusterFacts {
        claims: Some(
            [(
                "orders-db-postgres-data".to_string(),
                ClaimFacts {
                    created_for: Some(created_for.to_string()),
                    ..ClaimFacts::default()
                },
            )]
            .into(),
        ),
        ..ClusterFacts::default()
    };
    let policy = policy();
    let other = laws::new_claims(&policy, &object, &facts("Deployment/orders"));
    assert_eq!(other, ["orders-db-postgres-data-2"]);
    let own = laws::new_claims(&policy, &object, &facts("Deployment/orders-db"));
    assert_eq!(own, ["orders-db-postgres-data"]);
}

/// Whether the mutating webhook changes `w` on CREATE, in a namespace with
/// no labels.
fn fixed(policy: &Policy, w: &Workload) -> bool {
    !mutate_create(policy, w, &ClusterFacts::default())
        .patch
        .is_empty()
}

/// The first finding's message as the validating webhook words it.
fn first_finding(policy: &Policy, w: &Workload) -> String {
    let judged = pvc_guard::admission::judge(
        policy,
        w,
        None,
        &ClusterFacts::default(),
        pvc_guard::config::Mode::Enforce,
        pvc_guard::policy::Caller::User("admin"),
    )
    .unwrap();
    judged.findings[0].message()
}

/// `object` is left as it is, and the denial gives `why`.
fn not_fixed_because(policy: &Policy, object: &Value, why: &str) {
    let w = view(object);
    assert!(!fixed(policy, &w), "{object}");
    let message = first_finding(policy, &w);
    assert!(message.contains(why), "{message}");
}

#[test]
fn an_object_named_only_by_generate_name_is_not_fixed_and_the_denial_says_why() {
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "migrate-", "namespace": "ns"},
        "spec": {"template": {"spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}}}});
    let policy = policy();
    let w = view(&job);
    let m = mutate_create(&policy, &w, &ClusterFacts::default());
    assert!(m.patch.is_empty());
    assert!(
        m.unfixed
            .iter()
            .any(|u| u.to_string().contains("generateName")),
        "{:?}",
        m.unfixed
    );
    let message = first_finding(&policy, &w);
    assert!(message.contains("named only by generateName"), "{message}");
    assert!(!message.contains("pvc-guard fix shows how"), "{message}");
}

/// Claim names are made from the workload's name: one without any name got
/// a claim named "" (found by the mutation_laws fuzzer).
#[test]
fn an_object_without_a_name_is_not_fixed_and_the_denial_says_why() {
    let policy = policy();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "ns"},
        "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}});
    not_fixed_because(&policy, &pod, "it has no name");
}

/// Volume and claim names are made from the container's name; one the API
/// server would refuse (not a DNS-1123 label) gave names that the UPDATE
/// restore then refused to trust, so a re-apply lost the fix (found by the
/// mutation_laws fuzzer).
#[test]
fn a_container_whose_name_is_not_a_dns_label_is_not_fixed_and_the_denial_says_why() {
    let policy = policy();
    for name in ["Postgres", "db.primary", "\u{8}db"] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "ns"},
            "spec": {"containers": [{"name": name, "image": "postgres:16"}]}});
        not_fixed_because(&policy, &pod, "is not a DNS-1123 label");
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"containers": [{"name": "db-1", "image": "postgres:16"}]}});
    assert!(fixed(&policy, &view(&pod)));
}

#[test]
fn a_container_that_mounts_two_volumes_at_one_path_is_not_fixed_and_the_denial_says_why() {
    let policy = policy();
    let pod = |second: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "ns"},
            "spec": {"containers": [{"name": "db", "image": "postgres:16", "volumeMounts": [
                {"name": "scratch", "mountPath": "/var/lib/postgresql/data"},
                {"name": "data", "mountPath": second}]}],
            "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "data", "emptyDir": {}}]}})
    };
    // The second path is the first as the kubelet resolves it.
    not_fixed_because(
        &policy,
        &pod("/var/lib/postgresql/data/"),
        "mounts two volumes at /var/lib/postgresql/data",
    );
    let apart = pod("/backup");
    assert!(fixed(&policy, &view(&apart)));
}

#[test]
fn a_database_named_like_pvc_guards_init_container_is_not_fixed_and_the_denial_says_why() {
    let policy = policy();
    let facts = ClusterFacts::default();
    // A postgres sidecar (an init container that keeps running) of that name.
    let sidecar = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}],
            "initContainers": [{"name": "pvc-guard-permissions", "image": "postgres:16",
                "restartPolicy": "Always"}]}});
    not_fixed_because(
        &policy,
        &sidecar,
        "the name of pvc-guard's own init container",
    );
    // Another container of that name: the fix adds no second one.
    let beside = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"containers": [{"name": "db", "image": "postgres:16",
                "securityContext": {"runAsUser": 999}},
            {"name": "pvc-guard-permissions", "image": "nginx"}]}});
    let m = mutate_create(&policy, &view(&beside), &facts);
    assert!(!m.patch.is_empty(), "the claim is still added");
    let record = serde_json::to_string(&m.record).unwrap();
    assert!(!record.contains("permissions"), "{record}");
    let alone = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"containers": [{"name": "db", "image": "postgres:16",
                "securityContext": {"runAsUser": 999}}]}});
    let m = mutate_create(&policy, &view(&alone), &facts);
    let record = serde_json::to_string(&m.record).unwrap();
    assert!(record.contains(r#""change":"permissions""#), "{record}");
}

#[test]
fn a_run_as_user_the_api_server_refuses_is_never_an_owner_to_chown_to() {
    let policy = policy();
    let facts = ClusterFacts::default();
    let pod = |uid: i64| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "ns"},
            "spec": {"containers": [{"name": "db", "image": "postgres:16",
                "securityContext": {"runAsUser": uid}}]}})
    };
    for uid in [-1, 1 << 31] {
        let m = mutate_create(&policy, &view(&pod(uid)), &facts);
        let record = serde_json::to_string(&m.record).unwrap();
        assert!(!record.contains("owner"), "uid {uid}: {record}");
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("does not know which user")),
            "uid {uid}: {:?}",
            m.warnings
        );
        assert!(!m.patch.is_empty(), "the claim is still added");
    }
    let m = mutate_create(&policy, &view(&pod(999)), &facts);
    let record = serde_json::to_string(&m.record).unwrap();
    assert!(record.contains(r#""owner":"999:999""#), "{record}");
}

#[test]
fn an_update_puts_no_mount_back_in_a_container_whose_name_repeats() {
    let policy = policy();
    let facts = ClusterFacts::default();
    // Two containers named "tool" (the API server refuses the pod, but
    // pvc-guard sees it first); the second reads the database's volume.
    let original = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"containers": [
            {"name": "db", "image": "postgres:16",
                "volumeMounts": [{"name": "pgdata", "mountPath": "/var/lib/postgresql/data"}]},
            {"name": "tool", "image": "busybox"},
            {"name": "tool", "image": "busybox",
                "volumeMounts": [{"name": "pgdata", "mountPath": "/backup", "readOnly": true}]}],
            "volumes": [{"name": "pgdata", "emptyDir": {}}]}});
    let m = mutate_create(&policy, &view(&original), &facts);
    let created = m.apply_to(&original).unwrap();
    assert!(created["spec"]["volumes"][0]["persistentVolumeClaim"].is_object());
    let m = mutate_update(&policy, &facts, &view(&created), &view(&original));
    let updated = m.apply_to(&original).unwrap();
    assert_eq!(
        updated["spec"]["volumes"], created["spec"]["volumes"],
        "the claim is back"
    );
    for i in 1..=2 {
        assert_eq!(
            updated["spec"]["containers"][i], original["spec"]["containers"][i],
            "container {i} is the person's"
        );
    }
}

#[test]
fn an_update_that_drops_the_recorded_claim_gets_it_back() {
    let policy = policy();
    let facts = ClusterFacts::default();
    let review = common::read_json("admission/pg-emptydir.create.json");
    let original = &review["request"]["object"];
    let m = mutate_create(&policy, &view(original), &facts);
    let created = m.apply_to(original).unwrap();
    // A GitOps tool re-applies the original manifest: the emptyDir is back.
    let m = mutate_update(&policy, &facts, &view(&created), &view(original));
    assert!(!m.patch.is_empty());
    let updated = m.apply_to(original).unwrap();
    assert_eq!(
        updated["spec"]["template"]["spec"]["volumes"],
        created["spec"]["template"]["spec"]["volumes"]
    );
    assert!(m.warnings[0].starts_with("[ephemeral-data-path]"));
    // An UPDATE that keeps the claim is left alone.
    let m = mutate_update(&policy, &facts, &view(&created), &view(&created));
    assert!(m.patch.is_empty());
}
