//! The three inputs of tests/limits.rs that used to take seconds to
//! minutes, over the caps (denied as `limit-exceeded`) and at the caps
//! (the largest objects still judged piece by piece, which must cost
//! time linear in their size too).
//!
//! Shared by benches/core.rs and tests/limits.rs, so what the bench
//! measures is what the test holds to its answer.

use serde_json::{Value, json};

pub fn deployment(containers: Vec<Value>, volumes: Vec<Value>, annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "big", "namespace": "shop", "annotations": annotations},
        "spec": {"replicas": 1, "template": {"spec": {"containers": containers, "volumes": volumes}}}})
}

pub fn postgres(i: usize) -> Value {
    json!({"name": format!("pg-{i}"), "image": "postgres:16"})
}

/// `n` unused emptyDir volumes beside one postgres.
pub fn volumes(n: usize) -> Value {
    let volumes = (0..n)
        .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
        .collect();
    deployment(vec![postgres(0)], volumes, json!({}))
}

/// `n` postgres containers, each fixed with a claim of its own.
pub fn postgres_containers(n: usize) -> Value {
    deployment((0..n).map(postgres).collect(), vec![], json!({}))
}

/// A data-paths annotation of `entries` entries over `mounts` mounts
/// of one emptyDir, in one container (over the caps).
pub fn data_paths(entries: usize, mounts: usize) -> Value {
    let mount_list: Vec<Value> = (0..mounts)
        .map(|i| json!({"name": "d", "mountPath": format!("/data/{i}")}))
        .collect();
    let annotation: Vec<String> = (0..entries)
        .map(|i| format!("/data/{}", i % mounts.max(1)))
        .collect();
    deployment(
        vec![json!({"name": "app", "image": "example/app:1", "volumeMounts": mount_list})],
        vec![json!({"name": "d", "emptyDir": {}})],
        json!({"pvc-guard.io/data-paths": annotation.join(";")}),
    )
}

/// The same annotation where it costs most: 256 entries without a
/// container name, each under a mount every one of `containers` has
/// (16 each), so each entry goes to every container: 256 data paths
/// per container, each on that container's emptyDir. 16 containers
/// make 4,096 data paths, the cap; 256 containers make 65,536.
pub fn data_paths_everywhere(containers: usize) -> Value {
    let list = (0..containers)
        .map(|c| {
            let mounts: Vec<Value> = (0..16)
                .map(|k| json!({"name": format!("v{c}"), "mountPath": format!("/data/{k}")}))
                .collect();
            json!({"name": format!("app{c}"), "image": "example/app:1", "volumeMounts": mounts})
        })
        .collect();
    let volumes = (0..containers)
        .map(|c| json!({"name": format!("v{c}"), "emptyDir": {}}))
        .collect();
    let annotation: Vec<String> = (0..256).map(|i| format!("/data/{}/s{i}", i % 16)).collect();
    deployment(
        list,
        volumes,
        json!({"pvc-guard.io/data-paths": annotation.join(";")}),
    )
}

/// One app whose variables name `n` SQLite files.
pub fn sqlite(n: usize) -> Value {
    let env: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("DB_{i}"), "value": format!("/var/app/store-{i}.db")}))
        .collect();
    deployment(
        vec![json!({"name": "app", "image": "example/app:1", "env": env})],
        vec![],
        json!({}),
    )
}

/// One postgres with `n` environment variables whose values are
/// `value_len` bytes: 32,767 of them (with the container, the
/// `LIST_ELEMENTS` cap) and values of 57 bytes make a body just under the
/// 3 MiB `--max-body-bytes`.
pub fn env(n: usize, value_len: usize) -> Value {
    let env: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("VAR_{i:06}"), "value": format!("{i:0value_len$}")}))
        .collect();
    deployment(
        vec![json!({"name": "pg", "image": "postgres:16", "env": env})],
        vec![],
        json!({}),
    )
}

/// One postgres with `n` variables that are empty objects: three bytes of
/// JSON each (`{},`), the most list elements a body can hold.
pub fn empty_variables(n: usize) -> Value {
    deployment(
        vec![json!({"name": "pg", "image": "postgres:16", "env": vec![json!({}); n]})],
        vec![],
        json!({}),
    )
}
