//! The four laws of the mutation (DESIGN.md section 4), as property tests
//! over generated workloads and over the API-server-defaulted objects.

mod common;

use proptest::prelude::*;
use pvc_guard::config::Config;
use pvc_guard::laws;
use pvc_guard::mutate::{mutate_create, mutate_update};
use pvc_guard::policy::{ClusterFacts, Policy};
use serde_json::{Value, json};

fn policy() -> Policy {
    Policy::new(Config::default())
}

fn check_laws(object: &Value) -> Result<(), TestCaseError> {
    laws::check(&policy(), object).map_err(TestCaseError::fail)
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
        Just(json!({"name": "data", "hostPath": {"path": "/x"}})),
    ]
}

fn container(name: &'static str) -> impl Strategy<Value = Value> {
    (
        image(),
        env(),
        mounts(),
        any::<bool>(),
        prop::option::of(0i64..2000),
    )
        .prop_map(move |(image, env, mounts, unknown, uid)| {
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

fn workload() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("Deployment"), Just("StatefulSet"), Just("Pod"), Just("Job"), Just("DaemonSet"), Just("ReplicaSet")],
        prop::collection::vec(container("db"), 1..2),
        prop::option::of(container("sidecar")),
        prop::collection::vec(volume(), 0..3),
        0i64..3,
        any::<bool>(),
        prop::option::of(Just(json!({"runAsNonRoot": true}))),
    )
        .prop_map(|(kind, mut containers, sidecar, volumes, replicas, strategy, pod_sc)| {
            if let Some(s) = sidecar {
                containers.push(s);
            }
            let mut names = std::collections::BTreeSet::new();
            let volumes: Vec<Value> = volumes.into_iter().filter(|v| names.insert(v["name"].as_str().unwrap().to_string())).collect();
            let mut pod = json!({"containers": containers, "volumes": volumes, "x-unknown": [1, 2, 3]});
            if let Some(sc) = pod_sc {
                pod["securityContext"] = sc;
            }
            if kind == "Pod" {
                return json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "w", "namespace": "ns"}, "spec": pod});
            }
            let mut spec = json!({"replicas": replicas, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod}});
            if kind == "Job" {
                spec = json!({"parallelism": replicas, "template": {"spec": pod}});
            }
            if strategy && kind == "Deployment" {
                spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}});
            }
            json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w", "namespace": "ns", "labels": {"keep": "me"}}, "spec": spec})
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn the_mutation_laws_hold_for_generated_workloads(w in workload()) {
        check_laws(&w)?;
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

#[test]
fn an_update_that_drops_the_recorded_claim_gets_it_back() {
    let policy = policy();
    let facts = ClusterFacts::default();
    let review = common::read_json("admission/pg-emptydir.create.json");
    let original = &review["request"]["object"];
    let created = mutate_create(&policy, original, &facts)
        .unwrap()
        .fixed
        .expect("the fix changed the object");
    // A GitOps tool re-applies the original manifest: the emptyDir is back.
    let m = mutate_update(&created, original).unwrap();
    assert!(!m.patch.0.is_empty());
    let mut updated = original.clone();
    json_patch::patch(&mut updated, &m.patch).unwrap();
    assert_eq!(
        updated["spec"]["template"]["spec"]["volumes"],
        created["spec"]["template"]["spec"]["volumes"]
    );
    assert!(m.warnings[0].starts_with("[ephemeral-data-path]"));
    // An UPDATE that keeps the claim is left alone.
    let m = mutate_update(&created, &created).unwrap();
    assert!(m.patch.0.is_empty());
}
