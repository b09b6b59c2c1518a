//! The image catalog through the real binary (`pvc-guard check -o json -f
//! FILE`): who publishes an image decides its layout, each catalog entry
//! is caught without storage and admitted with a claim where its data is,
//! the corpus files of issue 18 reach what their headers say, and the
//! precision ACCURACY.md states is what the corpus gives.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde::Deserialize;
use serde_json::{Value, json};

/// Runs `pvc-guard check -o json -f FILE` on the objects, written to a
/// temporary file as a multi-document stream, with the binary `bin`.
fn check_with(bin: &str, objects: &[Value]) -> (i32, Vec<Value>) {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    std::fs::write(file.path(), text.join("\n---\n")).unwrap();
    check_file(bin, file.path().to_str().unwrap())
}

fn check_file(bin: &str, path: &str) -> (i32, Vec<Value>) {
    let out = std::process::Command::new(bin)
        .args(["check", "-o", "json", "-f", path])
        .output()
        .expect("run pvc-guard");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Vec<Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{path}: {e}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// The report entry of one object.
fn check(object: Value) -> Value {
    let (_, report) = check_with(BIN, &[object]);
    report.into_iter().next().unwrap()
}

fn pod(container: Value, volumes: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "namespace": "data"},
           "spec": {"containers": [container], "volumes": volumes}})
}

fn deployment(name: &str, container: Value, volumes: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "data"},
           "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                    "template": {"spec": {"containers": [container], "volumes": volumes}}}})
}

/// `(severity, rule, path)` of every finding.
fn findings(entry: &Value) -> Vec<(String, String, String)> {
    entry["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f["rule"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn messages(entry: &Value, rule: &str) -> Vec<String> {
    entry["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == rule)
        .map(|f| f["message"].as_str().unwrap().to_string())
        .collect()
}

fn has(entry: &Value, severity: &str, rule: &str, path: &str) -> bool {
    findings(entry)
        .iter()
        .any(|(s, r, p)| s == severity && r == rule && p == path)
}

/// A catalog entry's behaviour: the container with no storage gets
/// `ephemeral-data-path` at `severity` for `path`; with a claim mounted at
/// `claim_at` it is admitted with no finding about where its data is.
fn caught_then_admitted(container: Value, severity: &str, path: &str, claim_at: &str) {
    let bare = check(pod(container.clone(), json!([])));
    assert!(
        has(&bare, severity, "ephemeral-data-path", path),
        "{container}: {:?}",
        findings(&bare)
    );
    let mut claimed = container.clone();
    claimed["volumeMounts"] = json!([{"name": "data", "mountPath": claim_at}]);
    let entry = check(pod(
        claimed,
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}}]),
    ));
    assert_eq!(
        entry["decision"],
        "allow",
        "{container}: {:?}",
        findings(&entry)
    );
}

/// A known server whose data path no source gives: a warning that asks for
/// the annotation, never an allow that looks certain.
fn unresolved(container: Value) -> Value {
    let entry = check(pod(container.clone(), json!([])));
    assert_eq!(
        entry["decision"],
        "warn",
        "{container}: {:?}",
        findings(&entry)
    );
    let m = messages(&entry, "unresolved-data-path");
    assert!(
        m.iter().any(|m| m.contains("pvc-guard.io/data-paths")),
        "{container}: {m:?}"
    );
    entry
}

#[test]
fn the_official_image_through_its_mirrors_is_judged_as_the_official_image() {
    for image in [
        "postgres:16",
        "docker.io/library/postgres:16",
        "mirror.gcr.io/library/postgres:16",
        "public.ecr.aws/docker/library/postgres:16",
        "registry.internal:5000/postgres:16",
        "registry.internal:5000/library/postgres:16",
    ] {
        let e = check(pod(json!({"name": "pg", "image": image}), json!([])));
        assert!(
            has(
                &e,
                "deny",
                "ephemeral-data-path",
                "/var/lib/postgresql/data"
            ),
            "{image}: {:?}",
            findings(&e)
        );
        assert!(
            messages(&e, "ephemeral-data-path")[0]
                .contains("the image's VOLUME /var/lib/postgresql/data"),
            "{image}"
        );
    }
}

#[test]
fn a_short_name_of_an_unknown_publisher_is_a_warning_that_names_the_guess() {
    for (image, path) in [
        ("registry.k8s.io/redis:e2e", "/data"),
        ("example/postgres:16", "/var/lib/postgresql/data"),
        ("quay.io/someone/cassandra:4", "/var/lib/cassandra"),
    ] {
        let e = check(pod(json!({"name": "db", "image": image}), json!([])));
        assert_eq!(e["decision"], "warn", "{image}: {:?}", findings(&e));
        let m = &messages(&e, "ephemeral-data-path")[0];
        assert!(
            m.contains("if it keeps its data where the official")
                && m.contains(path)
                && m.contains("pvc-guard.io/data-paths"),
            "{image}: {m}"
        );
        // A guess names no VOLUME: it does not know the image's.
        assert!(!m.contains("VOLUME"), "{image}: {m}");
    }
}

#[test]
fn what_the_manifest_shows_wins_over_the_guess() {
    // An emptyDir exactly where the family keeps its data: a deny.
    let e = check(pod(
        json!({"name": "pg", "image": "example/postgres:16",
               "volumeMounts": [{"name": "d", "mountPath": "/var/lib/postgresql/data"}]}),
        json!([{"name": "d", "emptyDir": {}}]),
    ));
    assert!(has(
        &e,
        "deny",
        "ephemeral-data-path",
        "/var/lib/postgresql/data"
    ));
    // A claim there: admitted, with nothing about the guessed layout.
    let e = check(pod(
        json!({"name": "pg", "image": "example/postgres:16",
               "volumeMounts": [{"name": "d", "mountPath": "/var/lib/postgresql/data", "subPath": "pg"}]}),
        json!([{"name": "d", "persistentVolumeClaim": {"claimName": "pg"}}]),
    ));
    assert_eq!(e["decision"], "allow", "{:?}", findings(&e));
    // Whatever version the tag would pick, the data is where the claim is.
    let e = check(pod(
        json!({"name": "pg", "image": "example/postgres",
               "volumeMounts": [{"name": "d", "mountPath": "/var/lib/postgresql/data", "subPath": "pg"}]}),
        json!([{"name": "d", "persistentVolumeClaim": {"claimName": "pg"}}]),
    ));
    assert_eq!(e["decision"], "allow", "{:?}", findings(&e));
    // A flag names the data directory.
    let e = check(pod(
        json!({"name": "r", "image": "registry.k8s.io/redis:e2e", "args": ["--dir", "/srv/redis"]}),
        json!([]),
    ));
    assert!(has(&e, "warn", "ephemeral-data-path", "/srv/redis"));
    assert!(!messages(&e, "ephemeral-data-path")[0].contains("if it keeps"));
    // A variable only the official entrypoint reads: built on it, so its
    // VOLUME is inherited, and named as the official image's.
    let e = check(pod(
        json!({"name": "pg", "image": "example/postgres:16",
               "env": [{"name": "POSTGRES_HOST_AUTH_METHOD", "value": "trust"}]}),
        json!([]),
    ));
    assert!(has(
        &e,
        "deny",
        "ephemeral-data-path",
        "/var/lib/postgresql/data"
    ));
    let m = &messages(&e, "ephemeral-data-path")[0];
    assert!(
        m.contains("VOLUME /var/lib/postgresql/data of the official postgres image")
            && !m.contains("the image's VOLUME"),
        "{m}"
    );
}

#[test]
fn a_family_named_by_a_flag_cites_no_volume_of_another_image() {
    let e = check(pod(
        json!({"name": "db", "image": "example/app:1", "command": ["mysqld", "--datadir=/var/lib/mysql"]}),
        json!([]),
    ));
    assert!(has(&e, "deny", "ephemeral-data-path", "/var/lib/mysql"));
    let m = &messages(&e, "ephemeral-data-path")[0];
    assert!(
        m.contains("the container's writable layer") && !m.contains("VOLUME"),
        "{m}"
    );
}

#[test]
fn google_samples_cassandra_keeps_its_data_in_cassandra_data() {
    let c = json!({"name": "cassandra", "image": "gcr.io/google-samples/cassandra:v13"});
    caught_then_admitted(c.clone(), "deny", "/cassandra_data", "/cassandra_data");
    // The official image's directory is not where this image writes.
    let mut at_official = c;
    at_official["volumeMounts"] = json!([{"name": "d", "mountPath": "/var/lib/cassandra"}]);
    let e = check(pod(
        at_official,
        json!([{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]),
    ));
    assert!(has(&e, "deny", "ephemeral-data-path", "/cassandra_data"));
    assert!(messages(&e, "ephemeral-data-path")[0].contains("the image's VOLUME /cassandra_data"));
}

#[test]
fn the_kubernetes_redis_example_image_keeps_the_master_data_where_its_config_says() {
    for image in ["kubernetes/redis:v1", "registry.k8s.io/redis:v1"] {
        let master =
            json!({"name": "master", "image": image, "env": [{"name": "MASTER", "value": "true"}]});
        caught_then_admitted(master, "warn", "/redis-master-data", "/redis-master-data");
        // Without MASTER=true its layout is not known: a warning, not /data.
        let e = unresolved(json!({"name": "r", "image": image}));
        assert!(!has(&e, "warn", "ephemeral-data-path", "/data"), "{image}");
    }
}

#[test]
fn fedora_and_sclorg_postgresql_keep_their_data_in_var_lib_pgsql() {
    for image in [
        "quay.io/fedora/postgresql-16",
        "quay.io/fedora/postgresql-16@sha256:06d566b4be3ba0542690382c2586c5e7e033005cc09a689a5c1f5c1fe7c6cc96",
        "quay.io/sclorg/postgresql-15-c9s:latest",
    ] {
        let c = json!({"name": "pg", "image": image});
        caught_then_admitted(
            c.clone(),
            "deny",
            "/var/lib/pgsql/data/userdata",
            "/var/lib/pgsql/data",
        );
        let e = check(pod(c, json!([])));
        assert!(
            messages(&e, "ephemeral-data-path")[0]
                .contains("the image's VOLUME /var/lib/pgsql/data")
        );
        // PGDATA is a subdirectory of the claim: no lost+found warning.
        assert!(
            !findings(&e)
                .iter()
                .any(|(_, r, _)| r == "pgdata-mount-root")
        );
    }
}

#[test]
fn fedora_mysql_keeps_its_data_in_var_lib_mysql_data_and_declares_no_volume() {
    let c = json!({"name": "mysql", "image": "quay.io/fedora/mysql-80",
                   "env": [{"name": "MYSQL_ROOT_PASSWORD", "value": "x"}]});
    caught_then_admitted(
        c.clone(),
        "deny",
        "/var/lib/mysql/data",
        "/var/lib/mysql/data",
    );
    let e = check(pod(c, json!([])));
    let m = &messages(&e, "ephemeral-data-path")[0];
    assert!(
        m.contains("/var/lib/mysql/data on the container's writable layer")
            && !m.contains("VOLUME"),
        "{m}"
    );
    caught_then_admitted(
        json!({"name": "mysql", "image": "quay.io/sclorg/mysql-80-c9s"}),
        "deny",
        "/var/lib/mysql/data",
        "/var/lib/mysql/data",
    );
}

#[test]
fn sclorg_mariadb_and_mongodb_are_not_given_the_official_layout() {
    // MYSQL_ROOT_PASSWORD would give an unknown image the official mysql
    // layout; the publisher is known, its data directory is not.
    let e = unresolved(
        json!({"name": "db", "image": "quay.io/sclorg/mariadb-1011-c9s",
                              "env": [{"name": "MYSQL_ROOT_PASSWORD", "value": "x"}]}),
    );
    assert!(!has(&e, "deny", "ephemeral-data-path", "/var/lib/mysql"));
    unresolved(json!({"name": "db", "image": "quay.io/sclorg/mongodb-70-c9s"}));
}

#[test]
fn a_guessed_server_with_no_known_data_path_says_it_is_a_guess() {
    let e = unresolved(json!({"name": "c", "image": "example/consul:1"}));
    assert!(messages(&e, "unresolved-data-path")[0].contains("its name says it runs consul"));
}

#[test]
fn pires_elasticsearch_keeps_its_data_in_slash_data() {
    let c = json!({"name": "es", "image": "quay.io/pires/docker-elasticsearch-kubernetes:5.6.2"});
    caught_then_admitted(c.clone(), "deny", "/data", "/data");
    let mut on_empty_dir = c;
    on_empty_dir["volumeMounts"] = json!([{"name": "storage", "mountPath": "/data"}]);
    let e = check(pod(
        on_empty_dir,
        json!([{"name": "storage", "emptyDir": {}}]),
    ));
    assert!(has(&e, "deny", "ephemeral-data-path", "/data"));
}

#[test]
fn bitnami_elasticsearch_keeps_its_data_under_bitnami() {
    caught_then_admitted(
        json!({"name": "es", "image": "bitnami/elasticsearch:8"}),
        "deny",
        "/bitnami/elasticsearch/data",
        "/bitnami/elasticsearch",
    );
}

#[test]
fn etcd_keeps_its_data_in_name_dot_etcd_in_its_working_directory() {
    let release = json!({"name": "etcd", "image": "quay.io/coreos/etcd:v3.5.0"});
    caught_then_admitted(
        release.clone(),
        "deny",
        "/var/lib/etcd/default.etcd",
        "/var/lib/etcd",
    );
    let named = json!({"name": "etcd", "image": "gcr.io/etcd-development/etcd:v3.5.17",
                       "command": ["/usr/local/bin/etcd", "--name", "e1"]});
    caught_then_admitted(named, "deny", "/var/lib/etcd/e1.etcd", "/var/lib/etcd");
    let k8s = json!({"name": "etcd", "image": "registry.k8s.io/etcd:3.5.15-0", "command": ["etcd", "--name=e2"]});
    caught_then_admitted(k8s, "deny", "/e2.etcd", "/e2.etcd");
    let wd = json!({"name": "etcd", "image": "registry.k8s.io/etcd:3.5.15-0", "command": ["etcd"], "workingDir": "/srv"});
    caught_then_admitted(wd, "deny", "/srv/default.etcd", "/srv");
    // --data-dir wins; a variable that moves it cannot be followed.
    caught_then_admitted(
        json!({"name": "etcd", "image": "quay.io/coreos/etcd:v3.5.0", "command": ["etcd", "--data-dir=/etcd-data"]}),
        "deny",
        "/etcd-data",
        "/etcd-data",
    );
    unresolved(
        json!({"name": "etcd", "image": "quay.io/coreos/etcd:v3.5.0",
                      "env": [{"name": "ETCD_DATA_DIR", "value": "/etcd-data"}]}),
    );
    // Run in a Deployment: the StatefulSet hint too.
    let e = check(deployment("etcd", release, json!([])));
    assert!(has(
        &e,
        "warn",
        "database-in-deployment",
        "/var/lib/etcd/default.etcd"
    ));
}

#[test]
fn influxdb_keeps_its_data_where_its_major_version_does() {
    caught_then_admitted(
        json!({"name": "influxdb", "image": "influxdb:1.8.10-alpine"}),
        "deny",
        "/var/lib/influxdb",
        "/var/lib/influxdb",
    );
    caught_then_admitted(
        json!({"name": "influxdb", "image": "docker.io/library/influxdb:2.7"}),
        "deny",
        "/var/lib/influxdb2",
        "/var/lib/influxdb2",
    );
}

#[test]
fn consul_keeps_its_data_in_data_dir() {
    caught_then_admitted(
        json!({"name": "consul", "image": "hashicorp/consul:1.19", "args": ["agent", "-server", "-data-dir=/consul/data"]}),
        "deny",
        "/consul/data",
        "/consul/data",
    );
    caught_then_admitted(
        json!({"name": "consul", "image": "hashicorp/consul:1.19", "command": ["consul", "agent", "-data-dir", "/var/consul"]}),
        "deny",
        "/var/consul",
        "/var/consul",
    );
    let e = unresolved(json!({"name": "consul", "image": "hashicorp/consul:1.19"}));
    assert!(messages(&e, "unresolved-data-path")[0].contains("-data-dir"));
}

#[test]
fn zookeeper_keeps_its_data_in_data_dir() {
    caught_then_admitted(
        json!({"name": "zk", "image": "zookeeper:3.9", "command": ["sh", "-c",
               "echo dataDir=/var/lib/zookeeper >> /conf/zoo.cfg && exec zkServer.sh start-foreground"]}),
        "deny",
        "/var/lib/zookeeper",
        "/var/lib/zookeeper",
    );
    let e = unresolved(json!({"name": "zk", "image": "zookeeper:3.9"}));
    assert!(messages(&e, "unresolved-data-path")[0].contains("dataDir"));
}

#[test]
fn nats_keeps_data_only_with_jetstream() {
    caught_then_admitted(
        json!({"name": "nats", "image": "nats:2.10", "args": ["-js", "--store_dir", "/data/jetstream"]}),
        "deny",
        "/data/jetstream",
        "/data",
    );
    caught_then_admitted(
        json!({"name": "nats", "image": "nats:2.10", "command": ["nats-server", "-js", "--store_dir=/js"]}),
        "deny",
        "/js",
        "/js",
    );
    unresolved(json!({"name": "nats", "image": "nats:2.10", "args": ["-js"]}));
    // Core NATS keeps nothing.
    let e = check(pod(
        json!({"name": "nats", "image": "nats:2.10"}),
        json!([]),
    ));
    assert_eq!(findings(&e), vec![]);
}

#[test]
fn kafka_and_documentdb_are_known_servers_with_an_unknown_data_path() {
    for image in [
        "bitnami/kafka:3.9",
        "apache/kafka:3.9.0",
        "ghcr.io/documentdb/documentdb/documentdb-local:pg17-0.112.0",
        "bitnami/minio:2024",
    ] {
        unresolved(json!({"name": "db", "image": image}));
    }
}

#[test]
fn minio_keeps_its_data_in_the_server_argument() {
    for image in [
        "minio/minio:RELEASE.2024-10-02T17-50-41Z",
        "quay.io/minio/minio",
    ] {
        caught_then_admitted(
            json!({"name": "minio", "image": image, "args": ["server", "/data", "--console-address", ":9001"]}),
            "deny",
            "/data",
            "/data",
        );
    }
    // `minio` alone is not a server.
    let e = check(pod(
        json!({"name": "minio", "image": "quay.io/minio/minio"}),
        json!([]),
    ));
    assert_eq!(findings(&e), vec![]);
}

#[test]
fn redis_and_valkey_with_appendonly_are_durable() {
    for c in [
        json!({"name": "r", "image": "redis:7.4", "args": ["--appendonly", "yes"]}),
        json!({"name": "r", "image": "redis:7.4", "command": ["sh", "-c", "exec redis-server --appendonly yes"]}),
        json!({"name": "r", "image": "valkey/valkey:8", "args": ["valkey-server", "--appendonly", "yes"]}),
    ] {
        caught_then_admitted(c, "deny", "/data", "/data");
    }
    let e = check(pod(json!({"name": "r", "image": "redis:7.4"}), json!([])));
    assert!(has(&e, "warn", "ephemeral-data-path", "/data"));
    let e = check(pod(
        json!({"name": "r", "image": "redis:7.4", "args": ["--appendonly", "no"]}),
        json!([]),
    ));
    assert!(has(&e, "warn", "ephemeral-data-path", "/data"));
}

/// `appendonly yes` in a redis.conf from a ConfigMap in the same input,
/// which the command names, makes redis durable offline; the same file not
/// given to redis, another ConfigMap's namespace, or `appendonly no`, does
/// not.
#[test]
fn redis_with_appendonly_in_a_mounted_config_file_is_durable() {
    let config_map = |namespace: &str, text: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "redis-conf", "namespace": namespace},
               "data": {"redis.conf": text}})
    };
    let redis = |command: Value, mount: Value| {
        deployment(
            "cache",
            json!({"name": "redis", "image": "redis:7.4", "command": command,
                   "volumeMounts": [mount, {"name": "data", "mountPath": "/data"}]}),
            json!([{"name": "conf", "configMap": {"name": "redis-conf"}},
                   {"name": "data", "emptyDir": {}}]),
        )
    };
    let dir_mount = json!({"name": "conf", "mountPath": "/etc/redis/"});
    let file_mount =
        json!({"name": "conf", "mountPath": "/usr/local/etc/redis.conf", "subPath": "redis.conf"});
    let durable = "# persistence\nAPPENDONLY  yes # the AOF\ndir /data\n";
    let severity = |objects: &[Value]| {
        let (_, report) = check_with(BIN, objects);
        let e = report
            .iter()
            .find(|e| e.to_string().contains("Deployment"))
            .expect("the Deployment's entry")
            .clone();
        if has(&e, "deny", "ephemeral-data-path", "/data") {
            "deny"
        } else if has(&e, "warn", "ephemeral-data-path", "/data") {
            "warn"
        } else {
            panic!("{e}")
        }
    };
    let names_it = json!(["redis-server", "/etc/redis/redis.conf"]);
    assert_eq!(
        severity(&[
            config_map("data", durable),
            redis(names_it.clone(), dir_mount.clone())
        ]),
        "deny"
    );
    assert_eq!(
        severity(&[
            config_map("data", durable),
            redis(
                json!(["redis-server", "/usr/local/etc/redis.conf"]),
                file_mount
            )
        ]),
        "deny",
        "mounted by subPath"
    );
    assert_eq!(
        severity(&[redis(names_it.clone(), dir_mount.clone())]),
        "warn",
        "the ConfigMap is not in the input"
    );
    assert_eq!(
        severity(&[
            config_map("data", durable),
            redis(json!(["redis-server"]), dir_mount.clone())
        ]),
        "warn",
        "redis is not given the file"
    );
    assert_eq!(
        severity(&[
            config_map("elsewhere", durable),
            redis(names_it.clone(), dir_mount.clone())
        ]),
        "warn",
        "a ConfigMap of another namespace"
    );
    assert_eq!(
        severity(&[
            config_map("data", "appendonly no\n"),
            redis(names_it.clone(), dir_mount.clone())
        ]),
        "warn"
    );
    assert_eq!(
        severity(&[
            config_map("data", "appendonly yes\nappendonly no\n"),
            redis(names_it.clone(), dir_mount.clone())
        ]),
        "warn",
        "the last line of a setting wins, as redis reads it"
    );
    // `items` decides which key is the file at a path, and that keys it
    // leaves out are not files at all.
    let with_items = |items: Value| {
        let mut d = redis(names_it.clone(), dir_mount.clone());
        d["spec"]["template"]["spec"]["volumes"][0]["configMap"]["items"] = items;
        d
    };
    let two_keys = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "redis-conf", "namespace": "data"},
        "data": {"redis.conf": "appendonly no\n", "durable.conf": "appendonly yes\n"}});
    assert_eq!(
        severity(&[
            two_keys.clone(),
            with_items(json!([{"key": "durable.conf", "path": "redis.conf"}]))
        ]),
        "deny",
        "redis.conf is durable.conf's text"
    );
    assert_eq!(
        severity(&[
            config_map("data", durable),
            with_items(json!([{"key": "redis.conf", "path": "other.conf"}]))
        ]),
        "warn",
        "nothing is mounted at redis.conf"
    );
}

/// kube-prometheus' grafana: an emptyDir for /var/lib/grafana, datasources
/// and dashboards provisioned from mounts.
#[test]
fn grafana_with_provisioned_dashboards_and_datasources_is_a_warning() {
    let grafana = |provisioned: bool| {
        let mut mounts = vec![json!({"name": "grafana-storage", "mountPath": "/var/lib/grafana"})];
        let mut volumes = vec![json!({"name": "grafana-storage", "emptyDir": {}})];
        if provisioned {
            mounts.extend([
                json!({"name": "grafana-datasources", "mountPath": "/etc/grafana/provisioning/datasources"}),
                json!({"name": "grafana-dashboards", "mountPath": "/etc/grafana/provisioning/dashboards"}),
                json!({"name": "grafana-dashboard-nodes", "mountPath": "/grafana-dashboard-definitions/0/nodes"}),
            ]);
            volumes.extend([
                json!({"name": "grafana-datasources", "secret": {"secretName": "grafana-datasources"}}),
                json!({"name": "grafana-dashboards", "configMap": {"name": "grafana-dashboards"}}),
                json!({"name": "grafana-dashboard-nodes", "configMap": {"name": "grafana-dashboard-nodes"}}),
            ]);
        }
        check(deployment(
            "grafana",
            json!({"name": "grafana", "image": "grafana/grafana:11.2.0", "volumeMounts": mounts}),
            json!(volumes),
        ))
    };
    let e = grafana(true);
    assert_eq!(e["decision"], "warn", "{:?}", findings(&e));
    assert!(has(&e, "warn", "ephemeral-data-path", "/var/lib/grafana"));
    assert!(
        messages(&e, "ephemeral-data-path")[0].contains("/etc/grafana/provisioning"),
        "{:?}",
        messages(&e, "ephemeral-data-path")
    );
    let e = grafana(false);
    assert!(has(&e, "deny", "ephemeral-data-path", "/var/lib/grafana"));
}

/// Two postgres Deployments of one repository, one found through PGDATA
/// and one whose path an annotation names (as sourcegraph's pgsql and
/// codeinsights-db), and one through a mount where postgres keeps data:
/// each gets the StatefulSet hint.
#[test]
fn database_in_deployment_is_the_same_answer_however_the_path_was_found() {
    let claim = json!([{"name": "disk", "persistentVolumeClaim": {"claimName": "pg"}}]);
    let by_pgdata = deployment(
        "pgsql",
        json!({"name": "pgsql", "image": "example/postgres-12-alpine:1",
               "env": [{"name": "PGDATA", "value": "/data/pgdata-12"}],
               "volumeMounts": [{"name": "disk", "mountPath": "/data"}]}),
        claim.clone(),
    );
    let mut by_annotation = deployment(
        "codeinsights-db",
        json!({"name": "codeinsights", "image": "postgres:16",
               "volumeMounts": [{"name": "disk", "mountPath": "/var/lib/postgresql/data", "subPath": "pg"}]}),
        claim.clone(),
    );
    by_annotation["metadata"]["annotations"] =
        json!({"pvc-guard.io/data-paths": "codeinsights=/var/lib/postgresql/data"});
    let by_mount = deployment(
        "codeintel-db",
        json!({"name": "codeintel", "image": "example/codeintel-db:1",
               "volumeMounts": [{"name": "disk", "mountPath": "/var/lib/postgresql/data", "subPath": "pg"}]}),
        claim,
    );
    for object in [by_pgdata, by_annotation, by_mount] {
        let e = check(object.clone());
        assert_eq!(e["decision"], "warn", "{}: {:?}", e["name"], findings(&e));
        assert!(
            findings(&e)
                .iter()
                .any(|(_, r, _)| r == "database-in-deployment"),
            "{}: {:?}",
            e["name"],
            findings(&e)
        );
    }
}

/// jpetazzo/container.training's pattern: an init container removes
/// lost+found from the claim before postgres starts.
#[test]
fn pgdata_mount_root_is_silent_when_an_init_container_removes_lost_found() {
    let sts = |init_volume: &str, script: &str| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "pg"},
               "spec": {"serviceName": "pg", "template": {"spec": {
                   "initContainers": [{"name": "rmdir", "image": "alpine",
                       "volumeMounts": [{"name": init_volume, "mountPath": "/vol"}],
                       "command": ["sh", "-c", script]}],
                   "containers": [{"name": "postgres", "image": "postgres:12",
                       "volumeMounts": [{"name": "postgres", "mountPath": "/var/lib/postgresql/data"}]}],
                   "volumes": [{"name": "other", "emptyDir": {}}]}},
                   "volumeClaimTemplates": [{"metadata": {"name": "postgres"},
                       "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    };
    let rm = "if [ -d /vol/lost+found ]; then rmdir /vol/lost+found; fi";
    let rule = |e: &Value| findings(e).iter().any(|(_, r, _)| r == "pgdata-mount-root");
    assert!(!rule(&check(sts("postgres", rm))));
    // Another volume's lost+found, or no removal: the warning stays.
    assert!(rule(&check(sts("other", rm))));
    assert!(rule(&check(sts("postgres", "ls -la /vol"))));
}

/// What the headers of corpus files 24 and 40 to 44 say, beyond the
/// decision the corpus test checks: no warning at all where the manifest
/// is right, and the path the image really writes where it is not.
#[test]
fn the_issue_18_corpus_files_get_what_their_headers_say() {
    let corpus = |name: &str| {
        let path = data(&format!("corpus/{name}"));
        let (_, report) = check_file(BIN, path.to_str().unwrap());
        report
            .into_iter()
            .find(|e| e["kind"] != "StorageClass")
            .unwrap()
    };
    let e = corpus("24-k8s-examples-cassandra-statefulset.yaml");
    assert!(has(&e, "deny", "ephemeral-data-path", "/cassandra_data"));
    for quiet in [
        "40-k8s-website-cassandra-statefulset.yaml",
        "41-k8s-examples-storageos-redis-pvc.yaml",
        "43-container-training-postgres.yaml",
    ] {
        let e = corpus(quiet);
        assert_eq!(findings(&e), vec![], "{quiet}");
    }
    let e = corpus("42-argo-workflows-fedora-postgresql.yaml");
    assert!(has(
        &e,
        "deny",
        "ephemeral-data-path",
        "/var/lib/pgsql/data/userdata"
    ));
    let e = corpus("44-k8s-examples-elasticsearch-rc.yaml");
    assert!(has(&e, "deny", "ephemeral-data-path", "/data"));
}

/// The truth for one object: `deny`, `warn` (with the rules that are
/// right, any one of which must be among the warnings) or `allow`.
#[derive(Debug, Clone, PartialEq)]
enum Truth {
    Deny(String),
    Warn(Vec<String>),
    Allow,
}

#[derive(Deserialize)]
struct Label {
    warn: Vec<String>,
}

#[derive(Deserialize)]
struct CaseExpect {
    decision: String,
    #[serde(default)]
    rules: Vec<String>,
}

const WORKLOADS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
    "Pod",
];

/// Every workload object of tests/data/corpus and tests/data/cases with
/// its truth: corpus expectations.json (`deny RULE`, `admit warn:RULE`,
/// `admit`; an `admit` object is `warn` only where warnings.json says
/// which warning is right and why), and each case's own expectation.
fn truths() -> Vec<(String, Truth)> {
    let mut out = Vec::new();
    let expectations: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_slice(&std::fs::read(data("corpus/expectations.json")).unwrap()).unwrap();
    let labels: BTreeMap<String, BTreeMap<String, Label>> =
        serde_json::from_slice(&std::fs::read(data("corpus/warnings.json")).unwrap()).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(data("corpus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).unwrap();
            let kind = doc["kind"].as_str().unwrap_or("");
            if !WORKLOADS.contains(&kind) {
                continue;
            }
            let key = format!("{kind}/{}", doc["metadata"]["name"].as_str().unwrap());
            let label = labels.get(&name).and_then(|l| l.get(&key));
            let truth = match expectations.get(&name).and_then(|e| e.get(&key)) {
                Some(e) if e.starts_with("deny ") => Truth::Deny(e[5..].to_string()),
                Some(e) if e.starts_with("admit warn:") => Truth::Warn(vec![e[11..].to_string()]),
                _ => match label {
                    Some(l) => Truth::Warn(l.warn.clone()),
                    None => Truth::Allow,
                },
            };
            out.push((format!("corpus/{name} {key}"), truth));
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(data("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).unwrap();
            let kind = doc["kind"].as_str().unwrap_or("");
            let Some(expect) = doc
                .pointer("/metadata/annotations/test.pvc-guard.io~1expect")
                .and_then(Value::as_str)
            else {
                continue;
            };
            if !WORKLOADS.contains(&kind) {
                continue;
            }
            let expect: CaseExpect = serde_json::from_str(expect).unwrap();
            let rules = |severity: &str| -> Vec<String> {
                expect
                    .rules
                    .iter()
                    .filter_map(|r| r.strip_prefix(severity).map(str::to_string))
                    .collect()
            };
            let truth = match expect.decision.as_str() {
                "deny" => Truth::Deny(rules("deny:").into_iter().next().unwrap_or_default()),
                "warn" => Truth::Warn(rules("warn:")),
                _ => Truth::Allow,
            };
            let key = format!("{kind}/{}", doc["metadata"]["name"].as_str().unwrap());
            out.push((format!("cases/{name} {key}"), truth));
        }
    }
    out
}

/// The answers of `bin` for the same objects, by the same keys.
fn answers(bin: &str) -> BTreeMap<String, (String, Vec<String>, Vec<String>)> {
    let mut out = BTreeMap::new();
    for dir in ["corpus", "cases"] {
        let mut files: Vec<_> = std::fs::read_dir(data(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().unwrap().to_str().unwrap().to_string();
            let (_, report) = check_file(bin, file.to_str().unwrap());
            for entry in report {
                let rules = |severity: &str| -> Vec<String> {
                    entry["findings"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|f| f["severity"] == severity)
                        .map(|f| f["rule"].as_str().unwrap().to_string())
                        .collect()
                };
                let key = format!(
                    "{dir}/{name} {}/{}",
                    entry["kind"].as_str().unwrap(),
                    entry["name"].as_str().unwrap()
                );
                let decision = entry["decision"].as_str().unwrap().to_string();
                out.insert(key, (decision, rules("deny"), rules("warn")));
            }
        }
    }
    out
}

/// The figures ACCURACY.md states, counted from scratch.
fn figures(bin: &str) -> (String, Vec<String>) {
    let truths = truths();
    let answers = answers(bin);
    let (mut denied, mut right_denies) = (0, 0);
    let (mut warned, mut right_warns) = (0, 0);
    let (mut stateful, mut missed) = (0, 0);
    let mut wrong = Vec::new();
    for (key, truth) in &truths {
        let (decision, deny_rules, warn_rules) = answers
            .get(key)
            .unwrap_or_else(|| panic!("{key}: no answer"));
        let right = match (decision.as_str(), truth) {
            ("deny", Truth::Deny(rule)) => rule.is_empty() || deny_rules.contains(rule),
            ("warn", Truth::Warn(rules)) => {
                rules.is_empty() || rules.iter().any(|r| warn_rules.contains(r))
            }
            ("allow", Truth::Allow) => true,
            _ => false,
        };
        match decision.as_str() {
            "deny" => {
                denied += 1;
                right_denies += usize::from(right);
            }
            "warn" => {
                warned += 1;
                right_warns += usize::from(right);
            }
            _ => {}
        }
        if truth != &Truth::Allow {
            stateful += 1;
            missed += usize::from(decision == "allow");
        }
        if !right {
            wrong.push(format!(
                "{key}: {decision} {deny_rules:?} {warn_rules:?}, expected {truth:?}"
            ));
        }
    }
    let pct = |a: usize, b: usize| {
        if b == 0 {
            100.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    (
        format!(
            "objects {}: deny precision {right_denies}/{denied} ({:.1} %), warn precision {right_warns}/{warned} ({:.1} %), missed {missed} of {stateful} that should be denied or warned",
            truths.len(),
            pct(right_denies, denied),
            pct(right_warns, warned),
        ),
        wrong,
    )
}

/// Counts deny and warn precision on the project's own corpus and checks
/// that ACCURACY.md states what the binary gives. `PVC_GUARD_BIN=path`
/// counts another build (the figures before a change) and prints them
/// without comparing.
#[test]
fn accuracy_on_the_projects_corpus_is_what_accuracy_md_says() {
    let other = std::env::var("PVC_GUARD_BIN").ok();
    let bin = other.as_deref().unwrap_or(BIN);
    let (line, wrong) = figures(bin);
    println!("{line}");
    for w in &wrong {
        println!("  wrong: {w}");
    }
    if other.is_none() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ACCURACY.md"),
        )
        .unwrap();
        assert!(
            doc.contains(&line),
            "ACCURACY.md does not state what the corpus gives:\n{line}\n{}",
            wrong.join("\n")
        );
    }
}
