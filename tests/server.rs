//! The real server over real HTTPS, HTTP/1.1 and HTTP/2, with the
//! AdmissionReviews a kube-apiserver v1.33 sent (tests/data/admission).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Expected decisions from tests/data/FIXTURES.md: (fixture, allowed, rule
/// that must be the denial's or among the warnings, patch due on /mutate).
const EXPECTED: &[(&str, bool, Option<&str>, bool)] = &[
    ("cronjob-sqlite.create", true, None, false),
    (
        "mariadb-pod.create",
        false,
        Some("ephemeral-data-path"),
        true,
    ),
    (
        "mongo-hostpath.create",
        true,
        Some("node-local-data-path"),
        false,
    ),
    ("mysql-statefulset-good.create", true, None, false),
    ("nginx-stateless.create", true, None, false),
    (
        "pg-emptydir.create",
        false,
        Some("ephemeral-data-path"),
        true,
    ),
    (
        "pg-emptydir.dryrun-create",
        false,
        Some("ephemeral-data-path"),
        true,
    ),
    (
        "pg-no-volume.create",
        false,
        Some("ephemeral-data-path"),
        true,
    ),
    (
        "pg-no-volume.update-scale",
        true,
        Some("ephemeral-data-path"),
        false,
    ),
    ("pg-opt-out.create", true, None, false),
    ("pg-pvc-good.create", true, None, false),
    (
        "pg-pvc-good.update-drop-volume",
        false,
        Some("ephemeral-data-path"),
        false,
    ),
    (
        "pg-replicas-shared-claim.create",
        false,
        Some("shared-claim-replicas"),
        false,
    ),
    (
        "pg-rolling-update.create",
        true,
        Some("rolling-update-claim"),
        true,
    ),
    (
        "pg18-old-mount.create",
        false,
        Some("ephemeral-data-path"),
        false,
    ),
    (
        "redis-emptydir.create",
        true,
        Some("ephemeral-data-path"),
        false,
    ),
    (
        "sqlite-app.create",
        false,
        Some("ephemeral-data-path"),
        true,
    ),
];

fn fixture(name: &str) -> Value {
    read_json(&format!("admission/{name}.json"))
}

fn check_envelope(review: &Value, response: &Value) {
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(
        response.pointer("/response/uid"),
        review.pointer("/request/uid")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fixture_gets_its_decision_and_patch_over_http1_and_http2() {
    let server = Server::start(&[]);
    for http2 in [false, true] {
        let client = server.client(http2);
        for (name, admit, rule, patch_due) in EXPECTED {
            let review = fixture(name);
            let (status, body) = post(&client, &server.url("/validate?timeout=10s"), &review).await;
            assert_eq!(status, 200, "{name}: {body}");
            check_envelope(&review, &body);
            assert_eq!(allowed(&body), Some(*admit), "{name}: {body}");
            let message = body
                .pointer("/response/status/message")
                .and_then(Value::as_str)
                .unwrap_or("");
            let w = warnings(&body);
            if let Some(rule) = rule {
                let tag = format!("[{rule}]");
                if *admit {
                    assert!(
                        w.iter().any(|w| w.starts_with(&tag)),
                        "{name}: no {tag} warning in {w:?}"
                    );
                } else {
                    assert!(
                        message.starts_with(&tag) || message.contains(&format!("\n{tag}")),
                        "{name}: {message}"
                    );
                }
            }
            if *name == "nginx-stateless.create" {
                assert!(w.is_empty(), "{name}: {w:?}");
            }
            for warning in &w {
                assert!(
                    warning.starts_with('['),
                    "warnings start with the rule id: {warning}"
                );
            }

            let (status, mutated) =
                post(&client, &server.url("/mutate?timeout=10s"), &review).await;
            assert_eq!(status, 200);
            check_envelope(&review, &mutated);
            assert_eq!(allowed(&mutated), Some(true), "{name}");
            let patch = patch_of(&mutated);
            assert_eq!(patch.is_some(), *patch_due, "{name}: patch {patch:?}");
            let Some(patch) = patch else { continue };
            assert_eq!(
                mutated.pointer("/response/patchType"),
                Some(&json!("JSONPatch"))
            );
            // The patch applies to the very object sent; the result passes
            // /validate and a second /mutate changes nothing.
            let mut object = review["request"]["object"].clone();
            json_patch::patch(&mut object, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut again = review.clone();
            again["request"]["object"] = object;
            let (_, validated) = post(&client, &server.url("/validate"), &again).await;
            assert_eq!(
                allowed(&validated),
                Some(true),
                "{name} after the patch: {validated}"
            );
            let (_, second) = post(&client, &server.url("/mutate"), &again).await;
            assert!(
                patch_of(&second).is_none(),
                "{name}: second mutation {second}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pg18_denial_names_the_mount_to_use_and_http2_is_negotiated() {
    let server = Server::start(&[]);
    let client = server.client(true);
    let r = client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&fixture("pg18-old-mount.create")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let body: Value = r.json().await.unwrap();
    let message = body
        .pointer("/response/status/message")
        .and_then(Value::as_str)
        .unwrap();
    assert!(message.starts_with("[ephemeral-data-path] Deployment data/analytics-db container \"postgres\" (postgres:18)"), "{message}");
    assert!(
        message.contains("exactly /var/lib/postgresql;"),
        "{message}"
    );
    // The fix would not make this change itself, so the message says why
    // rather than pointing at `pvc-guard fix`.
    assert!(
        message.contains("pvc-guard does not fix it: the mount at /var/lib/postgresql/data"),
        "{message}"
    );
    assert!(!message.contains("pvc-guard fix shows how"), "{message}");
    assert_eq!(body.pointer("/response/status/code"), Some(&json!(403)));
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_gets_the_same_patch_as_a_real_create() {
    let server = Server::start(&[]);
    let client = server.client(false);
    let (_, real) = post(
        &client,
        &server.url("/mutate"),
        &fixture("pg-emptydir.create"),
    )
    .await;
    let (_, dry) = post(
        &client,
        &server.url("/mutate"),
        &fixture("pg-emptydir.dryrun-create"),
    )
    .await;
    // The same operations at the same places (the dry-run object has another name).
    let paths = |p: json_patch::Patch| {
        p.0.iter()
            .map(|op| serde_json::to_value(op).unwrap()["path"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        paths(patch_of(&real).unwrap()),
        paths(patch_of(&dry).unwrap())
    );
    let patch = serde_json::to_string(&patch_of(&real).unwrap()).unwrap();
    assert!(patch.contains("persistentVolumeClaim"), "{patch}");
    assert!(patch.contains("Recreate"), "{patch}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_mode_deny_rejects_objects_the_policy_cannot_read() {
    let server = Server::start(&["--failure-mode", "deny"]);
    let mut null_spec = fixture("pg-no-volume.create");
    null_spec["request"]["object"]["spec"] = Value::Null;
    let (s, body) = post(&server.client(false), &server.url("/validate"), &null_spec).await;
    assert_eq!(s, 200);
    assert_eq!(allowed(&body), Some(false));
    assert!(
        body.pointer("/response/status/message")
            .unwrap()
            .as_str()
            .unwrap()
            .contains("no pod spec")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_was_sent() {
    let server = Server::start(&[]);
    let client = server.client(true);
    for _ in 0..3 {
        post(
            &client,
            &server.url("/validate"),
            &fixture("pg-no-volume.create"),
        )
        .await;
    }
    post(
        &client,
        &server.url("/mutate"),
        &fixture("pg-emptydir.create"),
    )
    .await;
    let metrics = get_text(&client, &server.url("/metrics")).await;
    assert!(
        metrics.contains(r#"pvc_guard_admission_requests_total{endpoint="validate",kind="Deployment",operation="CREATE",decision="deny"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"pvc_guard_admission_findings_total{endpoint="validate",kind="Deployment",operation="CREATE",decision="deny",rule="ephemeral-data-path"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"decision="patch""#), "{metrics}");
    assert!(
        metrics.contains("pvc_guard_admission_duration_seconds_count{endpoint=\"validate\"} 3"),
        "{metrics}"
    );
    let expiry_line = metrics
        .lines()
        .find(|l| l.starts_with("pvc_guard_certificate_expiry_timestamp_seconds "))
        .unwrap();
    let expiry: i64 = expiry_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(expiry > now + 300 * 86_400, "{expiry_line}");
    // One log line per decision, without the object's contents.
    let log = server.log_text();
    assert!(log.contains("admission decision"), "{log}");
    assert!(
        !log.contains("not-a-secret"),
        "the log must not carry env values"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_and_health() {
    let server = Server::start(&[]);
    let client = server.client(false);
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

fn write_pair(dir: &std::path::Path, g: &pvc_guard::certs::Generated) {
    // Written beside and renamed into place, as a Secret volume swaps its files.
    std::fs::write(dir.join("tls.crt.tmp"), &g.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key.tmp"), &g.key_pem).unwrap();
    std::fs::rename(dir.join("tls.key.tmp"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.tmp"), dir.join("tls.crt")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_certificate_is_served_without_a_restart_or_a_failed_request() {
    let names = ["localhost".to_string()];
    let ips = ["127.0.0.1".parse().unwrap()];
    let first = pvc_guard::certs::generate("pvc-guard", &names, &ips, 30).unwrap();
    let second = pvc_guard::certs::generate("pvc-guard", &names, &ips, 30).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), &first);
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--reload-interval",
        "100ms",
    ]);
    let old_only = client_for(&[&first.ca_pem], false);
    let new_only = client_for(&[&second.ca_pem], false);
    assert!(old_only.get(server.url("/healthz")).send().await.is_ok());
    assert!(new_only.get(server.url("/healthz")).send().await.is_err());

    // 64 connections keep sending requests while the files are replaced.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..64)
        .map(|i| {
            let client = client_for(&[&first.ca_pem, &second.ca_pem], i % 2 == 0);
            let (url, stop) = (server.url("/validate"), stop.clone());
            tokio::spawn(async move {
                let review = fixture("pg-no-volume.create");
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (s, body) = post(&client, &url, &review).await;
                    assert_eq!((s, allowed(&body)), (200, Some(false)));
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_pair(dir.path(), &second);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = client_for(&[&second.ca_pem], false);
        if fresh.get(server.url("/healthz")).send().await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served: {}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        assert!(task.await.expect("no request failed") > 0);
    }
    let fresh_old = client_for(&[&first.ca_pem], false);
    assert!(
        fresh_old.get(server.url("/healthz")).send().await.is_err(),
        "the old certificate is still served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_config_keeps_the_old_one_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "mode: warn\n").unwrap();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--reload-interval",
        "100ms",
    ]);
    let client = server.client(false);
    let (_, body) = post(
        &client,
        &server.url("/validate"),
        &fixture("pg-no-volume.create"),
    )
    .await;
    assert_eq!(allowed(&body), Some(true), "warn mode admits");
    std::fs::write(&config, "mode: [not, a, mode]\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, body) = post(
        &client,
        &server.url("/validate"),
        &fixture("pg-no-volume.create"),
    )
    .await;
    assert_eq!(allowed(&body), Some(true), "the old config stays");
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let metrics = get_text(&client, &server.url("/metrics")).await;
    assert!(
        metrics.contains("pvc_guard_config_reload_errors_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pvc_guard_config_last_reload_success 0"),
        "{metrics}"
    );
    std::fs::write(&config, "mode: enforce\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, body) = post(
        &client,
        &server.url("/validate"),
        &fixture("pg-no-volume.create"),
    )
    .await;
    assert_eq!(allowed(&body), Some(false), "the new config is in force");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let mut server = Server::start(&["--drain-timeout", "5s"]);
    let client = server.client(false);
    let body = serde_json::to_vec(&fixture("pg-no-volume.create")).unwrap();
    let (first, rest) = body.split_at(100);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    // A request whose body is still arriving when SIGTERM comes.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(first), Ok(rest)]).then(
        |chunk| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            chunk
        },
    );
    use futures_util::StreamExt;
    let url = server.url("/validate");
    let inflight = tokio::spawn(async move {
        client
            .post(url)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.sigterm();
    let response = inflight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(allowed(&body), Some(false));
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("exits within the drain timeout");
    assert!(status.success(), "{status:?}");
    let log = server.log_text();
    assert!(log.contains("shutting down"));
    assert!(
        !log.contains('\x1b'),
        "no terminal colour codes in a log that is not a terminal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_answers_every_accepted_request() {
    let mut server = Server::start(&["--drain-timeout", "5s"]);
    let signalled = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..64)
        .map(|i| {
            let client = server.client(i % 2 == 0);
            let (url, signalled) = (server.url("/mutate"), signalled.clone());
            tokio::spawn(async move {
                let review = serde_json::to_vec(&fixture("pg-no-volume.create")).unwrap();
                let (mut answered, mut after_signal) = (0, 0);
                loop {
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(review.clone())
                        .send()
                        .await;
                    // Refused: the server has stopped taking requests. Whether
                    // the server had accepted it is checked against its log.
                    let Ok(response) = sent else { break };
                    assert_eq!(response.status().as_u16(), 200);
                    let body: Value = response.json().await.expect("an answer is never cut off");
                    assert!(patch_of(&body).is_some(), "{body}");
                    answered += 1;
                    if signalled.load(Ordering::Relaxed) {
                        after_signal += 1;
                    }
                }
                (answered, after_signal)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    signalled.store(true, Ordering::Relaxed);
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("exits within the drain timeout");
    assert!(status.success(), "{status:?}");
    let (mut answered, mut after_signal) = (0, 0);
    for task in load {
        let (a, s) = task.await.expect("every accepted request was answered");
        answered += a;
        after_signal += s;
    }
    assert!(answered >= 64, "{answered}");
    // Every request the server decided on reached its client: none was cut
    // off between the decision and the answer.
    std::thread::sleep(Duration::from_millis(200));
    let decided = server
        .log_text()
        .lines()
        .filter(|l| l.contains("admission decision"))
        .count();
    assert_eq!(
        decided, answered,
        "decided on the server vs answered to clients"
    );
    eprintln!("{answered} answered, {after_signal} of them after SIGTERM was sent");
}
