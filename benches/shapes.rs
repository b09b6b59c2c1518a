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

/// `postgres` containers keeping PGDATA at the root of one claim
/// (`pgdata-mount-root` warns for each), and an init container that runs
/// `rm` with `words` arguments and mounts the claim's root at `roots`
/// paths. With `clears`, the last argument is the last root's
/// `lost+found`, and the warnings go. Each postgres asked about every
/// root times every argument: 64 x 1,024 x 30,000 took minutes.
pub fn lost_found(postgres: usize, roots: usize, words: usize, clears: bool) -> Value {
    let mounts: Vec<Value> = (0..roots)
        .map(|k| json!({"name": "data", "mountPath": format!("/m{k}")}))
        .collect();
    let mut command = vec!["rm".to_string(), "-rf".to_string()];
    command.extend((0..words).map(|i| format!("/m{}/x{i}", i % roots.max(1))));
    if clears {
        command.push(format!("/m{}/lost+found", roots.saturating_sub(1)));
    }
    let containers = (0..postgres)
        .map(|i| {
            json!({"name": format!("pg-{i}"), "image": "postgres:16", "volumeMounts": [
                {"name": "data", "mountPath": "/var/lib/postgresql/data"}]})
        })
        .collect();
    let mut object = deployment(
        containers,
        vec![json!({"name": "data", "persistentVolumeClaim": {"claimName": "data"}})],
        json!({}),
    );
    object["spec"]["strategy"] = json!({"type": "Recreate"});
    object["spec"]["template"]["spec"]["initContainers"] = json!([
        {"name": "clear", "image": "busybox:1", "command": command, "volumeMounts": mounts}]);
    object
}

/// One postgres on the writable layer whose `pvc-guard.io/mutated` record
/// names `entries` claim volumes, each with its mount, that the object
/// does not have: a record is anyone's to write, and a check of each
/// entry against every other took its length squared (a 3 MiB record,
/// about 12,000 entries, a third of a second).
pub fn long_record(entries: usize) -> Value {
    let changes: Vec<Value> = (0..entries)
        .flat_map(|i| {
            [
                json!({"change": "claimVolume", "volume": format!("v{i}"),
                    "claim": format!("big-c{i}"), "size": "10Gi", "accessMode": "ReadWriteOnce"}),
                json!({"change": "mount", "container": "pg-0", "volume": format!("v{i}"),
                    "mountPath": format!("/d/{i}")}),
            ]
        })
        .collect();
    let record = json!({"rules": ["ephemeral-data-path"], "changes": changes}).to_string();
    deployment(
        vec![postgres(0)],
        vec![],
        json!({"pvc-guard.io/mutated": record}),
    )
}
