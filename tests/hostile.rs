//! Hostile input over real HTTPS: every bad request gets its defined answer
//! within a bounded time, the server stays up, and a well-behaved client
//! running beside the bad ones is served throughout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> Value {
    read_json(&format!("admission/{name}.json"))
}

/// A client posting a valid review in a loop until stopped: every answer
/// must be right while the bad inputs run.
struct Canary {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Canary {
    fn start(server: &Server) -> Canary {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, url, flag) = (server.client(true), server.url("/validate"), stop.clone());
        let task = tokio::spawn(async move {
            let review = fixture("pg-no-volume.create");
            let mut answered = 0;
            while !flag.load(Ordering::Relaxed) {
                let (s, body) = post(&client, &url, &review).await;
                assert_eq!((s, allowed(&body)), (200, Some(false)), "{body}");
                answered += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answered
        });
        Canary { stop, task }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let answered = self
            .task
            .await
            .expect("the canary's answers were all right");
        assert!(answered > 0, "the canary was never served");
        answered
    }
}

/// Sends one raw HTTP/1.1 request and returns the whole response, which
/// must come within the limit.
async fn exchange(server: &Server, path: &str, content_type: &str, body: &[u8]) -> String {
    raw_exchange(
        server,
        &post_head(path, content_type, body.len()),
        body,
        LIMIT,
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "no answer within {LIMIT:?} to {:?}",
            &body[..body.len().min(80)]
        )
    })
}

fn review_bytes(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_gets_its_defined_answer_while_others_are_served() {
    let server = Server::start(&["--request-timeout", "2s", "--header-timeout", "2s"]);
    let canary = Canary::start(&server);
    let json = "application/json";

    // Rejected before the policy: 400 with a reason, 415, 413.
    let pg = fixture("pg-no-volume.create");
    let mut v1beta1 = pg.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut unknown_version = pg.clone();
    unknown_version["apiVersion"] = json!("admission.k8s.io/v2alpha9");
    let mut no_request = pg.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut no_uid = pg.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut number_uid = pg.clone();
    number_uid["request"]["uid"] = json!(42);
    let mut number_namespace = pg.clone();
    number_namespace["request"]["namespace"] = json!(7);
    let mut non_utf8 = review_bytes(&pg);
    let at = non_utf8.windows(8).position(|w| w == b"postgres").unwrap();
    non_utf8[at] = 0xff;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!(
        "{{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{{\"uid\":\"u\",\"object\":{}1{}}}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            json,
            b"{\"apiVersion\": ".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "JSON array",
            json,
            b"[1,2]".to_vec(),
            400,
            "not a JSON object",
        ),
        ("empty body", json, Vec::new(), 400, "not valid JSON"),
        // Nesting is skipped without recursion, so depth costs no stack:
        // these are refused for what they lack, not for how deep they go.
        (
            "nested 10,000 deep",
            json,
            deep.into_bytes(),
            400,
            "not a JSON object",
        ),
        (
            "object nested 10,000 deep",
            json,
            deep_object.into_bytes(),
            400,
            "operation must be one of",
        ),
        ("v1beta1", json, review_bytes(&v1beta1), 400, "v1beta1"),
        (
            "unknown apiVersion",
            json,
            review_bytes(&unknown_version),
            400,
            "v2alpha9",
        ),
        (
            "missing request",
            json,
            review_bytes(&no_request),
            400,
            "no request",
        ),
        ("missing uid", json, review_bytes(&no_uid), 400, "no uid"),
        ("number uid", json, review_bytes(&number_uid), 400, "no uid"),
        (
            "number namespace",
            json,
            review_bytes(&number_namespace),
            400,
            "malformed",
        ),
        ("non-UTF-8 bytes", json, non_utf8, 400, "not valid JSON"),
        (
            "text/plain",
            "text/plain",
            review_bytes(&pg),
            415,
            "application/json",
        ),
        (
            "form",
            "application/x-www-form-urlencoded",
            b"a=b".to_vec(),
            415,
            "application/json",
        ),
    ];
    for (name, content_type, body, status, reason) in cases {
        for path in ["/validate", "/mutate"] {
            let out = exchange(&server, path, content_type, &body).await;
            assert_eq!(status_of(&out), Some(status), "{name} {path}: {out}");
            assert!(out.contains(reason), "{name} {path}: {out}");
        }
    }

    // Well-formed reviews the policy cannot fully read: 200, the request's
    // uid, and the failure mode's answer (allow with a warning) or a normal one.
    let mut null_object = pg.clone();
    null_object["request"]["object"] = Value::Null;
    let mut spec_null = pg.clone();
    spec_null["request"]["object"]["spec"] = Value::Null;
    let mut null_image = pg.clone();
    null_image["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        Value::Null;
    let mut number_image = pg.clone();
    number_image["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!(16);
    let mut string_containers = pg.clone();
    string_containers["request"]["object"]["spec"]["template"]["spec"]["containers"] =
        json!("postgres");
    let mut unknown_kind = fixture("nginx-stateless.create");
    unknown_kind["request"]["object"]["kind"] = json!("Widget");
    unknown_kind["request"]["kind"]["kind"] = json!("Widget");
    for (name, review, warned) in [
        ("object null", &null_object, false),
        ("spec null", &spec_null, true),
        ("null image", &null_image, false),
        ("number image", &number_image, false),
        ("containers a string", &string_containers, true),
        ("unknown kind", &unknown_kind, false),
    ] {
        for path in ["/validate", "/mutate"] {
            let out = exchange(&server, path, json, &review_bytes(review)).await;
            assert_eq!(status_of(&out), Some(200), "{name} {path}: {out}");
            let answer = json_body_of(&out);
            assert_eq!(
                answer.pointer("/response/uid"),
                review.pointer("/request/uid"),
                "{name}"
            );
            assert_eq!(allowed(&answer), Some(true), "{name} {path}: {answer}");
            if warned {
                assert!(!warnings(&answer).is_empty(), "{name} {path}: {answer}");
            }
        }
    }

    // Duplicate keys: the last one wins, as in Go's encoding/json.
    let text = String::from_utf8(review_bytes(&pg)).unwrap();
    let uid = pg["request"]["uid"].as_str().unwrap();
    let duplicated = text.replacen(
        &format!("\"uid\":\"{uid}\""),
        &format!("\"uid\":\"first\",\"uid\":\"{uid}\""),
        1,
    );
    assert_ne!(duplicated, text);
    let out = exchange(&server, "/validate", json, duplicated.as_bytes()).await;
    let answer = json_body_of(&out);
    assert_eq!(answer.pointer("/response/uid"), Some(&json!(uid)));
    assert_eq!(allowed(&answer), Some(false));

    // A body that stops half way: the request timeout answers 408...
    let body = review_bytes(&pg);
    let half = &body[..body.len() / 2];
    let out = raw_exchange(
        &server,
        &post_head("/validate", json, body.len()),
        half,
        LIMIT,
    )
    .await
    .expect("a stalled body is answered within the request timeout");
    assert_eq!(status_of(&out), Some(408), "{out}");
    // ...and a client that gives up half way gets a 400 or a closed connection.
    let mut tls = tls_connect(&server).await;
    tls.write_all(post_head("/validate", json, body.len()).as_bytes())
        .await
        .unwrap();
    tls.write_all(half).await.unwrap();
    tls.shutdown().await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(LIMIT, tls.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "a truncated body left the connection hanging");
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || status_of(&out) == Some(400), "{out}");

    // 50 MiB, declared: refused from the header alone.
    let out = raw_exchange(
        &server,
        &post_head("/validate", json, 50 << 20),
        &vec![b' '; 1 << 20],
        LIMIT,
    )
    .await
    .expect("answered");
    assert_eq!(status_of(&out), Some(413), "{out}");
    // 50 MiB streamed without a length over HTTP/2: refused at the limit.
    let chunks = (0..50).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1 << 20]));
    let big = server
        .client(true)
        .post(server.url("/mutate"))
        .header("content-type", json)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);

    let r = server
        .client(false)
        .get(server.url("/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let answered = canary.finish().await;
    let metrics = get_text(&server.client(false), &server.url("/metrics")).await;
    for reason in [
        "bad_request",
        "unsupported_media_type",
        "payload_too_large",
        "timeout",
        "not_found",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted: {metrics}"
        );
    }
    // object null, spec null and containers-a-string, on both endpoints.
    assert!(
        metrics.contains("pvc_guard_policy_unreadable_objects_total 6"),
        "{metrics}"
    );
    eprintln!("canary answered {answered} requests meanwhile");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_silent_clients_are_cut_off_and_others_are_served() {
    let server = Server::start(&[
        "--header-timeout",
        "1s",
        "--request-timeout",
        "2s",
        "--max-connections",
        "24",
    ]);
    let canary = Canary::start(&server);
    let mut holders = Vec::new();
    // Silent TCP connections that never start TLS.
    for _ in 0..8 {
        holders.push(tokio::spawn({
            let port = server.port;
            async move {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let mut buf = [0u8; 64];
                tokio::time::timeout(LIMIT, s.read(&mut buf))
                    .await
                    .expect("a silent connection is closed by the header timeout")
                    .map(|n| n == 0)
                    .unwrap_or(true)
            }
        }));
    }
    // Slowloris: TLS, then a header line a byte at a time, never finished.
    for _ in 0..12 {
        let tls = tls_connect(&server).await;
        holders.push(tokio::spawn(async move {
            let mut tls = tls;
            let started = std::time::Instant::now();
            for byte in b"POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
                    return true;
                }
                if started.elapsed() > LIMIT {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                // The server may answer 408 before closing.
                let mut buf = [0u8; 256];
                if let Ok(r) =
                    tokio::time::timeout(Duration::from_millis(1), tls.read(&mut buf)).await
                {
                    return match r {
                        Ok(0) | Err(_) => true,
                        Ok(n) => String::from_utf8_lossy(&buf[..n]).contains(" 408 "),
                    };
                }
            }
            unreachable!()
        }));
    }
    // A TLS 1.0-only ClientHello gets an alert and a closed connection.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    s.write_all(&tls10_client_hello()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out))
        .await
        .expect("a TLS 1.0 hello is refused promptly")
        .ok();
    assert!(
        out.is_empty() || out[0] == 0x15,
        "expected a TLS alert record, got {out:?}"
    );
    // Plain HTTP still gets its readable 400.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(LIMIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&out), Some(400), "{out}");

    for h in holders {
        assert!(h.await.unwrap(), "a slow client was never cut off");
    }
    // With every slot freed, new clients are served at once.
    let (s, _) = post(
        &server.client(false),
        &server.url("/validate"),
        &fixture("nginx-stateless.create"),
    )
    .await;
    assert_eq!(s, 200);
    canary.finish().await;
    let metrics = get_text(&server.client(false), &server.url("/metrics")).await;
    assert!(metrics.contains("reason=\"tls_handshake\""), "{metrics}");
    assert!(metrics.contains("reason=\"plain_http\""), "{metrics}");
}

/// A ClientHello offering TLS 1.0 and one TLS 1.0 cipher suite only.
fn tls10_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x01]; // client_version TLS 1.0
    hello.extend([7u8; 32]); // random
    hello.push(0); // session id
    hello.extend([0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    hello.extend([0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend((hello.len() as u16).to_be_bytes());
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// A CA and a client certificate it signed for ClientAuth.
fn client_identity(name: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name.push(DnType::CommonName, name);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ca_admits_only_callers_with_a_certificate_it_signed() {
    let (ca, cert, key) = client_identity("kube-apiserver");
    let (_, stranger_cert, stranger_key) = client_identity("stranger");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let server = Server::start(&["--client-ca", ca_file.to_str().unwrap()]);
    let with = |identity: Option<(&str, &str)>| {
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls((*tls_client_config(&server.ca_pem, identity)).clone())
            .timeout(Duration::from_secs(10));
        b = b.http1_only();
        b.build().unwrap()
    };
    let review = fixture("pg-no-volume.create");
    let (s, body) = post(
        &with(Some((&cert, &key))),
        &server.url("/validate"),
        &review,
    )
    .await;
    assert_eq!((s, allowed(&body)), (200, Some(false)), "{body}");

    // No certificate: probes still work, admission is refused.
    let anonymous = with(None);
    let r = anonymous.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for path in ["/validate", "/mutate"] {
        let (s, body) = post(&anonymous, &server.url(path), &review).await;
        assert_eq!(s, 401, "{path}: {body}");
        assert!(body.to_string().contains("client certificate"), "{body}");
    }
    // A certificate from another CA fails the handshake.
    let stranger = with(Some((&stranger_cert, &stranger_key)));
    let err = stranger
        .get(server.url("/healthz"))
        .send()
        .await
        .expect_err("a certificate the client CA did not sign is refused");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    let metrics = get_text(&with(Some((&cert, &key))), &server.url("/metrics")).await;
    assert!(
        metrics.contains("reason=\"client_certificate_required\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_flags_can_come_from_pvc_guard_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "mode: warn\n").unwrap();
    let envs = [
        ("PVC_GUARD_LISTEN", "127.0.0.1:0".to_string()),
        ("PVC_GUARD_WRITE_CA", ca.display().to_string()),
        ("PVC_GUARD_CONFIG", config.display().to_string()),
        ("PVC_GUARD_FAILURE_MODE", "deny".to_string()),
        ("PVC_GUARD_LOG_FORMAT", "json".to_string()),
        ("PVC_GUARD_MAX_BODY_BYTES", "4096".to_string()),
        ("PVC_GUARD_RELOAD_INTERVAL", "100ms".to_string()),
    ];
    let server = Server::spawn_env(&["serve"], &envs, dir, Some(ca));
    let client = server.client(false);
    // Config from the file the variable names: warn mode admits.
    let (_, body) = post(
        &client,
        &server.url("/validate"),
        &fixture("pg-no-volume.create"),
    )
    .await;
    assert_eq!(allowed(&body), Some(true), "{body}");
    assert!(!warnings(&body).is_empty());
    // Failure mode deny.
    let mut spec_null = fixture("pg-no-volume.create");
    spec_null["request"]["object"]["spec"] = Value::Null;
    let (_, body) = post(&client, &server.url("/validate"), &spec_null).await;
    assert_eq!(allowed(&body), Some(false), "{body}");
    // Body limit.
    let r = client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(vec![b' '; 8192])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // Reload interval: a config change is seen within a second.
    std::fs::write(server.dir.path().join("config.yaml"), "mode: enforce\n").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, body) = post(
        &client,
        &server.url("/validate"),
        &fixture("pg-no-volume.create"),
    )
    .await;
    assert_eq!(allowed(&body), Some(false), "{body}");
    // JSON logs: every line parses, and decisions carry their fields.
    let log = server.log_text();
    let decision = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .find(|l| l["message"] == "admission decision")
        .expect("a decision line");
    assert_eq!(decision["decision"], "warn", "{decision}");
    assert!(decision["uid"].is_string(), "{decision}");
    // A flag on the command line wins over its variable.
    let (code, _, err) = run_cli_env(
        &["serve", "--listen", "not-an-address"],
        &[("PVC_GUARD_LISTEN", "127.0.0.1:0")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not-an-address"), "{err}");
    let (code, _, err) = run_cli_env(&["serve"], &[("PVC_GUARD_FAILURE_MODE", "maybe")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("maybe"), "{err}");
}

/// hyper's header timeout also runs while an HTTP/1.1 connection waits for
/// its next request, so idle keep-alive connections give their slot back.
/// (The API server speaks HTTP/2 to webhooks; those connections stay, kept
/// by pings.) A client must be ready to reconnect, as Go's transport is.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http1_connection_is_released_after_the_header_timeout() {
    let server = Server::start(&["--header-timeout", "1s"]);
    let mut tls = tls_connect(&server).await;
    let head = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    tls.write_all(head.as_bytes()).await.unwrap();
    let n = tokio::time::timeout(LIMIT, tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), Some(200));
    // Nothing more is sent: the server closes the connection on its own.
    let closed = tokio::time::timeout(LIMIT, tls.read(&mut buf))
        .await
        .expect("the idle connection is closed within the limit");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}
