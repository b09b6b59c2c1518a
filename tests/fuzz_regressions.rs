//! Every input the fuzz targets (fuzz/) ever failed on, replayed through the
//! same checks (pvc_guard::laws), so a fixed bug stays fixed without
//! libFuzzer or a nightly toolchain. To add one, see fuzz/README.md.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use pvc_guard::config::Config;
use pvc_guard::laws;
use pvc_guard::policy::{ClusterFacts, Policy};
use serde_json::{Value, json};

fn inputs(target: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(common::data(&format!("fuzz/{target}"))) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// The mutation_laws target saves `{"restricted": bool, "object": workload}`.
fn workload(path: &PathBuf) -> (Value, ClusterFacts) {
    let saved: Value = serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let facts = if saved["restricted"] == true {
        ClusterFacts {
            namespace_labels: Some(BTreeMap::from([(
                "pod-security.kubernetes.io/enforce".to_string(),
                "restricted".to_string(),
            )])),
            ..ClusterFacts::default()
        }
    } else {
        ClusterFacts::default()
    };
    (saved["object"].clone(), facts)
}

#[test]
fn the_mutation_laws_hold_for_every_saved_fuzz_input() {
    let policy = Policy::new(Config::default());
    let files = inputs("mutation_laws");
    // The directory holds the crashes the fuzzer found: an empty list would
    // mean the test replays nothing.
    assert!(files.len() >= 4, "{files:?}");
    for path in files {
        let (object, facts) = workload(&path);
        laws::check_with(&policy, &object, &facts)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn every_saved_fuzz_input_gets_an_answer_with_its_uid() {
    let policy = Policy::new(Config::default());
    let mut bodies: Vec<(PathBuf, Vec<u8>)> = inputs("admission_bytes")
        .into_iter()
        .map(|p| {
            let body = std::fs::read(&p).unwrap();
            (p, body)
        })
        .collect();
    // The workloads the law target failed on, as the API server sends them.
    for path in inputs("mutation_laws") {
        let (object, _) = workload(&path);
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "fuzz-regression",
                "kind": {"group": "", "version": "v1", "kind": object["kind"].as_str().unwrap_or("Pod")},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "w",
                "namespace": "ns",
                "operation": "CREATE",
                "userInfo": {"username": "fuzz"},
                "object": object,
            },
        });
        assert!(pvc_guard::admission::parse(&serde_json::to_vec(&review).unwrap()).is_ok());
        bodies.push((path, serde_json::to_vec(&review).unwrap()));
    }
    assert!(!bodies.is_empty());
    for (path, body) in bodies {
        laws::check_answer(&policy, &body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
