//! The offline CLI through the real binary: the real-world corpus and the
//! fixtures' manifests reach their expected decisions; check, fix and
//! convert behave as documented.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde::Deserialize;
use serde_json::Value;

/// The path of a fixture manifest, tests/data/manifests/<name>.yaml.
fn manifest(name: &str) -> String {
    data(&format!("manifests/{name}.yaml"))
        .to_str()
        .unwrap()
        .to_string()
}

fn check_json(path: &str) -> (i32, Vec<Value>) {
    let (code, out, err) = run_cli(&["check", "-o", "json", "-f", path], None);
    let report: Vec<Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}\n{out}\n{err}"));
    (code, report)
}

/// Rule ids of a report entry's findings, only those of `severity` if given.
fn rules_of<'a>(entry: &'a Value, severity: Option<&str>) -> Vec<&'a str> {
    entry["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| severity.is_none_or(|s| f["severity"] == s))
        .map(|f| f["rule"].as_str().unwrap())
        .collect()
}

fn decision_of(entry: &Value) -> String {
    format!(
        "{} {}",
        entry["decision"].as_str().unwrap(),
        rules_of(entry, None).join(",")
    )
}

#[test]
fn the_real_world_corpus_reaches_every_expected_decision() {
    let expectations: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_slice(&std::fs::read(data("corpus/expectations.json")).unwrap()).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(data("corpus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut checked = 0;
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        let name = file.file_name().unwrap().to_str().unwrap();
        let want = expectations.get(name).cloned().unwrap_or_default();
        let (code, report) = check_json(file.to_str().unwrap());
        let mut any_deny = false;
        for entry in &report {
            let key = format!(
                "{}/{}",
                entry["kind"].as_str().unwrap(),
                entry["name"].as_str().unwrap()
            );
            let decision = entry["decision"].as_str().unwrap();
            let rules = rules_of(entry, None);
            let deny_rules = rules_of(entry, Some("deny"));
            any_deny |= decision == "deny";
            match want.get(&key).map(String::as_str) {
                Some(expected) if expected.starts_with("deny ") => {
                    assert_eq!(decision, "deny", "{name} {key}: {}", decision_of(entry));
                    assert!(
                        deny_rules.contains(&&expected[5..]),
                        "{name} {key}: {}",
                        decision_of(entry)
                    );
                }
                Some(expected) if expected.starts_with("admit warn:") => {
                    assert_ne!(decision, "deny", "{name} {key}: {}", decision_of(entry));
                    assert!(
                        rules.contains(&&expected[11..]),
                        "{name} {key}: {}",
                        decision_of(entry)
                    );
                }
                Some("admit") | None => {
                    assert_ne!(decision, "deny", "{name} {key}: {}", decision_of(entry))
                }
                Some(other) => panic!("unknown expectation {other}"),
            }
            checked += 1;
        }
        assert_eq!(code, if any_deny { 1 } else { 0 }, "{name}");
    }
    assert!(checked >= 40, "only {checked} objects checked");
}

#[derive(Deserialize)]
struct Expect {
    decision: String,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
}

/// tests/data/cases/*.yaml: hand-written cases, each object carrying its
/// expectation in the annotation `test.pvc-guard.io/expect` (JSON).
#[test]
fn every_rule_storage_class_and_family_case() {
    let mut files: Vec<_> = std::fs::read_dir(data("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut seen_rules = std::collections::BTreeSet::new();
    let mut count = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        let (_, report) = check_json(file.to_str().unwrap());
        assert_eq!(docs.len(), report.len(), "{}", file.display());
        for (doc, entry) in docs.iter().zip(&report) {
            let Some(expect) = doc
                .pointer("/metadata/annotations/test.pvc-guard.io~1expect")
                .and_then(Value::as_str)
            else {
                continue;
            };
            let expect: Expect = serde_json::from_str(expect).unwrap();
            let where_ = format!(
                "{} {}: {}",
                entry["source"],
                entry["name"],
                serde_json::to_string_pretty(&entry["findings"]).unwrap()
            );
            assert_eq!(
                entry["decision"].as_str().unwrap(),
                expect.decision,
                "{where_}"
            );
            let rules: Vec<String> = entry["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    format!(
                        "{}:{}",
                        f["severity"].as_str().unwrap(),
                        f["rule"].as_str().unwrap()
                    )
                })
                .collect();
            for r in &expect.rules {
                assert!(rules.contains(r), "{r} missing in {where_}");
                seen_rules.insert(r.split(':').nth(1).unwrap().to_string());
            }
            for r in &expect.absent {
                assert!(
                    !rules.iter().any(|x| x.ends_with(&format!(":{r}"))),
                    "{r} present in {where_}"
                );
            }
            for f in entry["findings"].as_array().unwrap() {
                assert!(
                    f["message"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("[{}]", f["rule"].as_str().unwrap()))
                );
            }
            count += 1;
        }
    }
    for rule in [
        "ephemeral-data-path",
        "config-volume-data-path",
        "node-local-data-path",
        "unknown-storage",
        "read-only-data-path",
        "shared-claim-replicas",
        "rolling-update-claim",
        "pgdata-mount-root",
        "database-in-deployment",
        "unresolved-data-path",
        "sqlite-file-mount",
        "invalid-opt-out",
    ] {
        assert!(seen_rules.contains(rule), "no case covers {rule}");
    }
    assert!(count >= 30, "{count} cases");
}

#[test]
fn every_catalog_family_is_caught_without_storage_and_passes_with_a_claim() {
    let catalog = pvc_guard::policy::catalog::Catalog::built_in();
    for entry in catalog.entries() {
        let image = format!("{}:1", entry.repositories[0]);
        let bare = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db"},
            "spec": {"containers": [{"name": "db", "image": image}]},
        });
        let (_, report, _) = run_cli(&["check", "-o", "json", "-f", "-"], Some(&bare.to_string()));
        let report: Vec<Value> = serde_json::from_str(&report).unwrap();
        let f = report[0]["findings"].as_array().unwrap();
        let facts = pvc_guard::policy::catalog::facts_for(
            entry,
            &pvc_guard::policy::catalog::ImageRef::parse(&image),
        );
        if facts.data_paths.is_empty() {
            continue; // data directory only from flags (minio, etcd)
        }
        let want = if entry.cache_like { "warn" } else { "deny" };
        assert!(
            f.iter()
                .any(|x| x["rule"] == "ephemeral-data-path" && x["severity"] == want),
            "{}: {f:?}",
            entry.name
        );
        let mount = facts.mount_path.clone().unwrap();
        let claimed = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db"},
            "spec": {
                "containers": [{"name": "db", "image": image, "volumeMounts": [{"name": "d", "mountPath": mount, "subPath": "data"}]}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "db"}}],
            },
        });
        let (code, out, _) = run_cli(
            &["check", "-o", "json", "-f", "-"],
            Some(&claimed.to_string()),
        );
        assert_eq!(code, 0, "{}: {out}", entry.name);
        assert!(
            !out.contains("ephemeral-data-path"),
            "{}: {out}",
            entry.name
        );
    }
}

#[test]
fn check_exit_codes_stdin_lists_and_errors_that_name_the_document() {
    let good = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: web}\n  spec: {containers: [{name: web, image: nginx}]}\n";
    let (code, out, _) = run_cli(&["check", "-f", "-"], Some(good));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("-#1.items[0] Pod web: allow"), "{out}");
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a, image: nginx}]}\n---\nkind: Pod\nmetadata: {name: [oops\n";
    let (code, _, err) = run_cli(&["check", "-f", "-"], Some(bad));
    assert_eq!(code, 2);
    assert!(err.contains("-#2"), "{err}");
    let (code, _, err) = run_cli(&["check", "-f", "/does/not/exist.yaml"], None);
    assert_eq!(code, 2);
    assert!(err.contains("/does/not/exist.yaml"), "{err}");
    let (code, _, _) = run_cli(&["check"], None);
    assert_eq!(code, 2, "missing -f is bad usage");
    let (code, out, _) = run_cli(&["check", "-f", data("manifests").to_str().unwrap()], None);
    assert_eq!(code, 1, "the fixtures hold denials: {out}");
}

#[test]
fn a_nameless_volume_or_mount_is_described_in_words() {
    let pod = |mounts: &str, volumes: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: db}}\nspec:\n  containers: [{{name: db, image: 'postgres:16', volumeMounts: [{mounts}]}}]\n  volumes: [{volumes}]\n"
        )
    };
    let nameless = pod(
        "{name: '', mountPath: /var/lib/postgresql/data}",
        "{name: '', emptyDir: {}}",
    );
    let (code, out, _) = run_cli(&["check", "-f", "-"], Some(&nameless));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("a volume without a name (emptyDir)"), "{out}");
    let undefined = pod("{mountPath: /var/lib/postgresql/data}", "");
    let (_, out, _) = run_cli(&["check", "-f", "-"], Some(&undefined));
    assert!(out.contains("a mount that names no volume"), "{out}");
    assert!(!out.contains("volume \"\""), "{out}");
}

#[test]
fn fix_output_applies_cleanly_and_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "pg-emptydir",
        "pg-no-volume",
        "mariadb-pod",
        "sqlite-app",
        "pg-rolling-update",
        "pg18-old-mount",
    ] {
        let (code, out, err) = run_cli(&["fix", "-f", &manifest(name)], None);
        // 0 only when everything is admitted once fixed, so a pipe into
        // kubectl apply stops (with pipefail) on what stays denied.
        let left_denied = name == "pg18-old-mount";
        assert_eq!(code, if left_denied { 1 } else { 0 }, "{name}: {err}");
        if left_denied {
            assert!(err.contains("still denied: [ephemeral-data-path]"), "{err}");
        }
        let fixed = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&fixed, &out).unwrap();
        let (code, report) = check_json(fixed.to_str().unwrap());
        if name == "pg18-old-mount" {
            assert_eq!(code, 1, "left to the validator");
            assert!(err.contains("not fixed"), "{err}");
            continue;
        }
        assert_eq!(code, 0, "{name}: {report:?}");
        let claims: Vec<&Value> = report
            .iter()
            .filter(|r| r["kind"] == "PersistentVolumeClaim")
            .collect();
        if name != "pg-rolling-update" {
            assert_eq!(claims.len(), 1, "{name}: {out}");
        }
        // A second fix changes nothing.
        let (_, again, _) = run_cli(&["fix", "-f", fixed.to_str().unwrap()], None);
        assert_eq!(again, out, "{name}: fix is not idempotent");
    }
    let (_, out, _) = run_cli(&["fix", "-f", &manifest("pg-no-volume")], None);
    assert!(out.contains("claimName: orders-db-postgres-data"), "{out}");
    assert!(out.contains("subPath: pgdata"), "{out}");
    assert!(out.contains("type: Recreate"), "{out}");
    assert!(out.contains("storage: 10Gi"), "{out}");
    assert!(
        out.contains("app.kubernetes.io/managed-by: pvc-guard"),
        "{out}"
    );
}

#[test]
fn convert_prints_a_statefulset_a_headless_service_and_the_move_steps() {
    let (code, out, err) = run_cli(&["convert", "-f", &manifest("pg-pvc-good")], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("# Move the data of claim users-db-data to the StatefulSet's first claim data-users-db-0"), "{out}");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs[0]["kind"], "StatefulSet");
    assert_eq!(docs[0]["spec"]["serviceName"], "users-db-headless");
    assert_eq!(
        docs[0]["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Retain"
    );
    assert_eq!(
        docs[0]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    assert!(
        docs[0].pointer("/spec/template/spec/volumes").is_none(),
        "the claim volume is replaced: {out}"
    );
    assert_eq!(docs[1]["kind"], "Service");
    assert_eq!(docs[1]["spec"]["clusterIP"], "None");
    let sts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(sts.path(), &out).unwrap();
    let (code, _, _) = run_cli(&["check", "-f", sts.path().to_str().unwrap()], None);
    assert_eq!(code, 0, "the StatefulSet passes check");
    // An emptyDir Deployment becomes a StatefulSet with a claim template.
    let (code, out, _) = run_cli(&["convert", "-f", &manifest("pg-emptydir")], None);
    assert_eq!(code, 0);
    assert!(out.contains("volumeClaimTemplates"), "{out}");
    let (code, _, err) = run_cli(&["convert", "-f", &manifest("mariadb-pod")], None);
    assert_eq!(code, 2);
    assert!(err.contains("no Deployment"), "{err}");
}

#[test]
fn check_writes_sarif_that_code_scanning_accepts() {
    let file = data("cases");
    let (code, out, err) = run_cli(
        &["check", "-o", "sarif", "-f", file.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 1, "the cases include denials: {err}");
    let sarif: serde_json::Value = serde_json::from_str(&out).unwrap();
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("sarif-schema-2.1.0.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    for r in results {
        let uri = r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            .as_str()
            .unwrap();
        assert!(
            uri.ends_with(".yaml") && std::path::Path::new(uri).exists(),
            "{uri}"
        );
        let index = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], r["ruleId"]);
    }
    assert!(results.iter().any(|r| r["level"] == "error"));
    assert!(results.iter().any(|r| r["level"] == "warning"));
}

#[test]
fn the_controller_and_the_removed_serve_flag_fail_with_errors_that_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let no_cluster = [
        (
            "KUBECONFIG",
            dir.path().join("absent").to_str().unwrap().to_string(),
        ),
        ("HOME", dir.path().to_str().unwrap().to_string()),
        // Not in a pod, even when the tests run in one.
        ("KUBERNETES_SERVICE_HOST", String::new()),
    ];
    let envs: Vec<(&str, &str)> = no_cluster.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (args, env) in [
        (vec!["serve", "--create-claims"], vec![]),
        (vec!["serve"], vec![("PVC_GUARD_CREATE_CLAIMS", "true")]),
    ] {
        let (code, _, err) = common::run_cli_env(&args, &env);
        assert_eq!(code, 2, "{args:?} {env:?}: {err}");
        assert!(
            err.contains("was removed") && err.contains("pvc-guard controller"),
            "{err}"
        );
    }

    let (code, _, err) = common::run_cli_env(&["controller", "--health-listen", "port 80"], &envs);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--health-listen"), "{err}");

    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "claims:\n  maxSize: plenty\n").unwrap();
    let (code, _, err) =
        common::run_cli_env(&["controller", "--config", config.to_str().unwrap()], &envs);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("config.yaml") && err.contains("claims.maxSize"),
        "{err}"
    );

    // No kubeconfig and not in a pod: said, not panicked.
    let (code, _, err) =
        common::run_cli_env(&["controller", "--health-listen", "127.0.0.1:0"], &envs);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("connecting to the API server"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
