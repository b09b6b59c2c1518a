//! Generated workloads against the four mutation laws (pvc_guard::laws).
//!
//! The generator draws mostly from what the policy recognises (catalog
//! images, their data paths, PGDATA, SQLite URIs, pvc-guard.io annotations)
//! so that most inputs reach the fix; nulls, missing fields, wrong types and
//! random strings are mixed in at every level. A failing input's Debug is
//! the workload's JSON, so `cargo fuzz fmt` prints what to save under
//! tests/data/fuzz/mutation_laws/ (the
//! regression test reads `{"restricted": bool, "object": workload}`).
#![no_main]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pvc_guard::config::Config;
use pvc_guard::policy::{ClusterFacts, Policy};
use serde_json::{Map, Value, json};

static POLICY: LazyLock<Policy> = LazyLock::new(|| Policy::new(Config::default()));

struct Input {
    object: Value,
    restricted: bool,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let saved = json!({"restricted": self.restricted, "object": self.object});
        f.write_str(&serde_json::to_string_pretty(&saved).unwrap_or_default())
    }
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Input {
            object: workload(u)?,
            restricted: u.ratio(1, 8)?,
        })
    }
}

fuzz_target!(|input: Input| {
    let facts = if input.restricted {
        ClusterFacts {
            namespace_labels: Some(
                [(
                    "pod-security.kubernetes.io/enforce".to_string(),
                    "restricted".to_string(),
                )]
                .into(),
            ),
            ..ClusterFacts::default()
        }
    } else {
        ClusterFacts::default()
    };
    if let Err(e) = pvc_guard::laws::check_with(&POLICY, &input.object, &facts) {
        panic!("{e}\n{input:?}");
    }
});

const IMAGES: &[&str] = &[
    "postgres",
    "postgres:16.4",
    "postgres:17-alpine",
    "postgres:18",
    "postgres:18.1-bookworm",
    "postgres@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "docker.io/library/postgres:15",
    "postgis/postgis:16-3.4",
    "pgvector/pgvector:pg17",
    "timescale/timescaledb:2.17.0-pg16",
    "timescale/timescaledb-ha:pg17",
    "bitnami/postgresql:17",
    "bitnamilegacy/postgresql:16",
    "mysql:8.4",
    "mysql/mysql-server:8.0",
    "percona:8",
    "mariadb:11",
    "bitnami/mariadb:11",
    "bitnami/mysql:8.4",
    "mongo:7",
    "bitnami/mongodb:7",
    "redis:7.4",
    "valkey/valkey:8",
    "eqalpha/keydb",
    "bitnami/redis:7",
    "registry.k8s.io/redis",
    "mcr.microsoft.com/oss/bitnami/redis:6",
    "elasticsearch:8.15.0",
    "docker.elastic.co/elasticsearch/elasticsearch:8.15.0",
    "opensearchproject/opensearch:2",
    "cassandra:5",
    "clickhouse/clickhouse-server:24",
    "cockroachdb/cockroach:v24.2.0",
    "influxdb:1.8",
    "influxdb:2.7",
    "influxdb:3-core",
    "neo4j:5",
    "couchdb:3",
    "rabbitmq:3-management",
    "bitnami/rabbitmq:3",
    "mcr.microsoft.com/mssql/server:2022-latest",
    "minio/minio",
    "quay.io/coreos/etcd:v3.5.0",
    "qdrant/qdrant",
    "getmeili/meilisearch:v1.10",
    "rethinkdb:2.4",
    "prom/prometheus:v2.54.0",
    "grafana/grafana:11.0.0",
    "bitnami/elasticsearch:8",
    "nginx:1.27",
    "busybox",
    "example/app:1",
    "",
    ":",
    "@",
    "postgres:",
    "postgres:999999999999999999999",
];

const PATHS: &[&str] = &[
    "/var/lib/postgresql/data",
    "/var/lib/postgresql/data/pgdata",
    "/var/lib/postgresql",
    "/var/lib/postgresql/18/docker",
    "/var/lib/mysql",
    "/data",
    "/data/db",
    "/bitnami/postgresql",
    "/bitnami/postgresql/data",
    "/bitnami/redis/data",
    "/bitnami/mongodb",
    "/usr/share/elasticsearch/data",
    "/var/lib/grafana",
    "/prometheus",
    "/cockroach/cockroach-data",
    "/var/lib/etcd",
    "/var/opt/mssql",
    "/srv/state",
    "/app",
    "/app/data",
    "/tmp",
    "/",
    "/var/lib",
    "relative/dir",
    "",
    "/data/",
    "//data",
    "/data/../data",
];

const VOLUME_NAMES: &[&str] = &[
    "data",
    "other",
    "pgdata",
    "pvc-guard-db",
    "pvc-guard-app",
    "",
];
const CONTAINER_NAMES: &[&str] = &["db", "app", "sidecar", "pvc-guard-permissions", "DB", ""];

const ENV: &[(&str, &str)] = &[
    ("PGDATA", "/var/lib/postgresql/data/pgdata"),
    ("PGDATA", "/var/lib/postgresql/data"),
    ("PGDATA", "/srv/pg"),
    ("PGDATA", "pgdata"),
    ("DB", "sqlite:////srv/state/app.db"),
    ("DB", "sqlite:///rel.db"),
    ("DATABASE_URL", "file:/data/x.sqlite"),
    ("JDBC", "jdbc:sqlite:/var/db/app.sqlite3"),
    ("CONN", "Data Source=/app/app.db"),
    ("DB", "/app/app.db"),
    ("DB", "/data/app.duckdb"),
    ("DB_HOST", "postgres.db"),
    ("MYSQL_ROOT_PASSWORD", "x"),
    ("POSTGRES_PASSWORD", "x"),
    ("REDIS_URL", "redis://redis:6379"),
];

const ARGS: &[&str] = &[
    "postgres",
    "-D",
    "/srv/pg",
    "pg_ctl",
    "mysqld",
    "--datadir=/srv/mysql",
    "--datadir",
    "mongod",
    "--dbpath",
    "/srv/mongo",
    "redis-server",
    "--dir",
    "/srv/redis",
    "etcd",
    "--data-dir=/var/lib/etcd",
    "cockroach",
    "start",
    "--store=/cockroach/cockroach-data",
    "minio",
    "server",
    "/export",
    "meilisearch",
    "--db-path",
    "/meili",
    "prometheus",
    "--storage.tsdb.path=/prom",
    "elasticsearch",
    "-Epath.data=/es",
    "docker-entrypoint.sh",
    "sh",
    "-c",
    "exec postgres -D /srv/pg",
    "/app/app.db",
    "app.sqlite",
];

const ANNOTATIONS: &[(&str, &[&str])] = &[
    (
        "pvc-guard.io/data-paths",
        &[
            "/app/data",
            "db=/var/lib/postgresql/data;app=/app/data",
            "db=/srv/x",
            "",
            ";",
            "=",
            "db=",
        ],
    ),
    (
        "pvc-guard.io/data-owner",
        &["1000:1000", "0:0", "999", "x:y", ""],
    ),
    (
        "pvc-guard.io/claim-name",
        &["my-claim", "", "Bad_Name", "a"],
    ),
    ("pvc-guard.io/claim-size", &["5Gi", "0", "x", "", "1e3"]),
    ("pvc-guard.io/claim-storage-class", &["fast", ""]),
    (
        "pvc-guard.io/claim-access-mode",
        &["ReadWriteOnce", "ReadWriteMany", "x"],
    ),
    ("pvc-guard.io/allow-ephemeral", &["cache only", ""]),
    ("pvc-guard.io/statefulset-hint", &["x"]),
    (
        "pvc-guard.io/mutated",
        &[
            "",
            "{}",
            "[]",
            "not json",
            r#"{"rules":["ephemeral-data-path"],"changes":[]}"#,
            r#"{"rules":[],"changes":[{"change":"mount","container":"db","volume":"data","mountPath":"/data"}]}"#,
        ],
    ),
    ("other.io/x", &["y"]),
];

fn pick<T: Clone>(u: &mut Unstructured, from: &[T]) -> Result<T> {
    u.choose(from).cloned()
}

/// Mostly one of `known`, sometimes any string.
fn string(u: &mut Unstructured, known: &[&str]) -> Result<Value> {
    Ok(if u.ratio(1, 8)? {
        Value::String(u.arbitrary::<String>()?)
    } else {
        Value::String(pick(u, known)?.to_string())
    })
}

/// Sets `key` to `value` most of the time; else leaves it out, sets null, or
/// a value of the wrong type.
fn put(u: &mut Unstructured, map: &mut Map<String, Value>, key: &str, value: Value) -> Result<()> {
    match u.int_in_range(0..=19)? {
        0 => {}
        1 => {
            map.insert(key.into(), Value::Null);
        }
        2 => {
            let wrong = pick(
                u,
                &[json!(7), json!("x"), json!([]), json!({}), json!(true)],
            )?;
            map.insert(key.into(), wrong);
        }
        _ => {
            map.insert(key.into(), value);
        }
    }
    Ok(())
}

fn list(
    u: &mut Unstructured,
    max: usize,
    mut item: impl FnMut(&mut Unstructured) -> Result<Value>,
) -> Result<Value> {
    let n = u.int_in_range(0..=max)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(if u.ratio(1, 30)? {
            Value::Null
        } else {
            item(u)?
        });
    }
    Ok(Value::Array(v))
}

fn annotations(u: &mut Unstructured) -> Result<Value> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let (key, values) = pick(u, ANNOTATIONS)?;
        m.insert(key.into(), string(u, values)?);
    }
    Ok(Value::Object(m))
}

fn metadata(u: &mut Unstructured, top: bool) -> Result<Value> {
    let mut m = Map::new();
    if top {
        let v = string(
            u,
            &[
                "w",
                "pg",
                "a-very-long-workload-name-that-goes-on-and-on-past-sixty-three-characters",
            ],
        )?;
        put(u, &mut m, "name", v)?;
        put(u, &mut m, "namespace", json!("ns"))?;
        if u.ratio(1, 10)? {
            let owner = json!([{
                "apiVersion": string(u, &["apps/v1", "batch/v1", "postgresql.cnpg.io/v1", "v1"])?,
                "kind": string(u, &["ReplicaSet", "Job", "Cluster", "Deployment", "CronJob"])?,
                "name": "o",
                "uid": "1",
                "controller": u.arbitrary::<bool>()?,
            }]);
            put(u, &mut m, "ownerReferences", owner)?;
        }
    }
    put(u, &mut m, "labels", json!({"a": "b"}))?;
    if u.ratio(2, 3)? {
        let v = annotations(u)?;
        put(u, &mut m, "annotations", v)?;
    }
    Ok(Value::Object(m))
}

fn env(u: &mut Unstructured) -> Result<Value> {
    list(u, 3, |u| {
        let (name, value) = pick(u, ENV)?;
        let mut e = Map::new();
        let v = string(u, &[name])?;
        put(u, &mut e, "name", v)?;
        if u.ratio(1, 6)? {
            put(
                u,
                &mut e,
                "valueFrom",
                json!({"secretKeyRef": {"name": "s", "key": "k"}}),
            )?;
        } else {
            let v = string(u, &[value])?;
            put(u, &mut e, "value", v)?;
        }
        Ok(Value::Object(e))
    })
}

fn mount(u: &mut Unstructured) -> Result<Value> {
    let mut m = Map::new();
    let v = string(u, VOLUME_NAMES)?;
    put(u, &mut m, "name", v)?;
    let v = string(u, PATHS)?;
    put(u, &mut m, "mountPath", v)?;
    if u.ratio(1, 4)? {
        let v = string(u, &["pgdata", "data", "", "../x"])?;
        put(u, &mut m, "subPath", v)?;
    }
    if u.ratio(1, 8)? {
        let v = json!(u.arbitrary::<bool>()?);
        put(u, &mut m, "readOnly", v)?;
    }
    Ok(Value::Object(m))
}

fn security_context(u: &mut Unstructured, pod: bool) -> Result<Value> {
    let mut m = Map::new();
    if u.arbitrary()? {
        let v = json!(pick(u, &[0, 70, 999, 1000, 1001, -1])?);
        put(u, &mut m, "runAsUser", v)?;
    }
    if u.arbitrary()? {
        let v = json!(u.arbitrary::<bool>()?);
        put(u, &mut m, "runAsNonRoot", v)?;
    }
    if pod && u.arbitrary()? {
        let v = json!(pick(u, &[0, 999, 1001])?);
        put(u, &mut m, "fsGroup", v)?;
    }
    Ok(Value::Object(m))
}

fn container(u: &mut Unstructured, init: bool) -> Result<Value> {
    let mut c = Map::new();
    let v = string(u, CONTAINER_NAMES)?;
    put(u, &mut c, "name", v)?;
    let v = string(u, IMAGES)?;
    put(u, &mut c, "image", v)?;
    if u.ratio(1, 4)? {
        let cmd = list(u, 3, |u| string(u, ARGS))?;
        put(u, &mut c, "command", cmd)?;
    }
    if u.ratio(1, 3)? {
        let args = list(u, 4, |u| string(u, ARGS))?;
        put(u, &mut c, "args", args)?;
    }
    if u.arbitrary()? {
        let e = env(u)?;
        put(u, &mut c, "env", e)?;
    }
    if u.ratio(1, 10)? {
        put(
            u,
            &mut c,
            "envFrom",
            json!([{"configMapRef": {"name": "cm"}}]),
        )?;
    }
    if u.ratio(1, 6)? {
        let v = string(u, &["/app", "/srv", "/", ""])?;
        put(u, &mut c, "workingDir", v)?;
    }
    let mounts = list(u, 3, mount)?;
    put(u, &mut c, "volumeMounts", mounts)?;
    if u.ratio(1, 4)? {
        let sc = security_context(u, false)?;
        put(u, &mut c, "securityContext", sc)?;
    }
    if init && u.arbitrary()? {
        let v = string(u, &["Always", "OnFailure"])?;
        put(u, &mut c, "restartPolicy", v)?;
    }
    if u.ratio(1, 6)? {
        c.insert("x-unknown-field".into(), json!({"kept": true}));
    }
    Ok(Value::Object(c))
}

fn volume(u: &mut Unstructured) -> Result<Value> {
    let mut vol = Map::new();
    let v = string(u, VOLUME_NAMES)?;
    put(u, &mut vol, "name", v)?;
    let (key, source) = match u.int_in_range(0..=7)? {
        0 => ("emptyDir", json!({})),
        1 => (
            "emptyDir",
            json!({"sizeLimit": string(u, &["2Gi", "500Mi", "0", "x", ""])?}),
        ),
        2 => ("emptyDir", json!({"medium": "Memory"})),
        3 => (
            "ephemeral",
            json!({"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": string(u, &["3Gi", "x"])?}}}}}),
        ),
        4 => (
            "persistentVolumeClaim",
            json!({"claimName": string(u, &["c", "w-db-data", ""])?}),
        ),
        5 => ("hostPath", json!({"path": "/x"})),
        6 => ("configMap", json!({"name": "cm"})),
        _ => ("secret", json!({"secretName": "s"})),
    };
    put(u, &mut vol, key, source)?;
    Ok(Value::Object(vol))
}

fn pod_spec(u: &mut Unstructured) -> Result<Value> {
    let mut p = Map::new();
    let containers = list(u, 3, |u| container(u, false))?;
    put(u, &mut p, "containers", containers)?;
    if u.ratio(1, 3)? {
        let init = list(u, 2, |u| container(u, true))?;
        put(u, &mut p, "initContainers", init)?;
    }
    let volumes = list(u, 3, volume)?;
    put(u, &mut p, "volumes", volumes)?;
    if u.ratio(1, 3)? {
        let sc = security_context(u, true)?;
        put(u, &mut p, "securityContext", sc)?;
    }
    if u.ratio(1, 6)? {
        p.insert("x-unknown".into(), json!([1, 2, 3]));
    }
    Ok(Value::Object(p))
}

fn template(u: &mut Unstructured) -> Result<Value> {
    let mut t = Map::new();
    let meta = metadata(u, false)?;
    put(u, &mut t, "metadata", meta)?;
    let spec = pod_spec(u)?;
    put(u, &mut t, "spec", spec)?;
    Ok(Value::Object(t))
}

fn claim_template(u: &mut Unstructured) -> Result<Value> {
    Ok(json!({
        "metadata": {"name": string(u, VOLUME_NAMES)?},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
}

fn workload(u: &mut Unstructured) -> Result<Value> {
    let kind = string(
        u,
        &[
            "Deployment",
            "StatefulSet",
            "Pod",
            "Job",
            "CronJob",
            "DaemonSet",
            "ReplicaSet",
            "ReplicationController",
            "ConfigMap",
        ],
    )?;
    let api_version = match kind.as_str() {
        Some("Pod" | "ReplicationController" | "ConfigMap") => "v1",
        Some("Job" | "CronJob") => "batch/v1",
        _ => "apps/v1",
    };
    let mut o = Map::new();
    o.insert("apiVersion".into(), json!(api_version));
    put(u, &mut o, "kind", kind.clone())?;
    let meta = metadata(u, true)?;
    put(u, &mut o, "metadata", meta)?;
    let spec = match kind.as_str() {
        Some("Pod") => pod_spec(u)?,
        Some("CronJob") => {
            let mut job = Map::new();
            let v = json!(pick(u, &[0, 1, 2])?);
            put(u, &mut job, "parallelism", v)?;
            let t = template(u)?;
            put(u, &mut job, "template", t)?;
            let mut js = Map::new();
            put(u, &mut js, "spec", Value::Object(job))?;
            let mut s = Map::new();
            s.insert("schedule".into(), json!("* * * * *"));
            put(u, &mut s, "jobTemplate", Value::Object(js))?;
            Value::Object(s)
        }
        _ => {
            let mut s = Map::new();
            let key = if kind == "Job" {
                "parallelism"
            } else {
                "replicas"
            };
            let n = pick(u, &[0, 1, 1, 2, 3, -1])?;
            put(u, &mut s, key, json!(n))?;
            if kind != "Job" {
                s.insert("selector".into(), json!({"matchLabels": {"a": "b"}}));
            }
            if u.ratio(1, 3)? {
                let strategy = pick(
                    u,
                    &[
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}),
                        json!({"type": "Recreate"}),
                        json!({}),
                    ],
                )?;
                put(u, &mut s, "strategy", strategy)?;
            }
            if kind == "StatefulSet" && u.ratio(1, 3)? {
                let vct = list(u, 2, claim_template)?;
                put(u, &mut s, "volumeClaimTemplates", vct)?;
            }
            let t = template(u)?;
            put(u, &mut s, "template", t)?;
            Value::Object(s)
        }
    };
    put(u, &mut o, "spec", spec)?;
    Ok(Value::Object(o))
}
