//! Hostile input over real HTTPS: every bad request gets its defined answer
//! within a bounded time, the server stays up, and a well-behaved client
//! running beside the bad ones is served throughout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> Value {
    read_json(&format!("admission/{name}.json"))
}

/// A client posting a valid review in a loop until stopped, over one
/// HTTP/2 connection: every answer must be right while the bad inputs run.
struct Canary {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    /// The slowest answer so far, in microseconds.
    slowest_us: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Canary {
    fn start(server: &Server) -> Canary {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let slowest_us = Arc::new(AtomicU64::new(0));
        let (client, url) = (server.client(true), server.url("/validate"));
        let (flag, count, slowest) = (stop.clone(), answered.clone(), slowest_us.clone());
        let task = tokio::spawn(async move {
            let review = fixture("pg-no-volume.create");
            while !flag.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let (s, body) = post(&client, &url, &review).await;
                assert_eq!((s, allowed(&body)), (200, Some(false)), "{body}");
                slowest.fetch_max(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
                count.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Canary {
            stop,
            answered,
            slowest_us,
            task,
        }
    }

    /// Waits (bounded) until the canary has been answered once, so its
    /// connection is open before the bad clients arrive.
    async fn served(&self) {
        let deadline = Instant::now() + LIMIT;
        while self.answered.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the canary was never served");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the canary: how many answers it got, and the slowest.
    async fn finish(self) -> (usize, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .expect("the canary's answers were all right");
        let answered = self.answered.load(Ordering::Relaxed);
        assert!(answered > 0, "the canary was never served");
        let slowest = Duration::from_micros(self.slowest_us.load(Ordering::Relaxed));
        (answered, slowest)
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

    let (answered, _) = canary.finish().await;
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

/// How a connection that says nothing after its handshake ended.
enum Silent {
    /// The server closed it this long after the handshake.
    Closed(Duration),
    /// The server gave up on the handshake itself (busy with the others).
    HandshakeRefused,
    /// Still open after the limit.
    Held,
}

#[derive(Default)]
struct SilentOutcomes {
    closed: usize,
    refused: usize,
    longest: Duration,
}

impl SilentOutcomes {
    fn add(&mut self, outcome: Silent) {
        match outcome {
            Silent::Closed(after) => {
                self.closed += 1;
                self.longest = self.longest.max(after);
            }
            Silent::HandshakeRefused => self.refused += 1,
            Silent::Held => panic!("a silent connection was still open after {LIMIT:?}"),
        }
    }
}

/// Opens a TLS connection with `connector`, then reads until the server
/// closes it, sending nothing.
async fn hold_silently(connector: tokio_rustls::TlsConnector, port: u16) -> Silent {
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return Silent::HandshakeRefused;
    };
    let handshake = connector.connect("localhost".try_into().unwrap(), tcp);
    let Ok(Ok(mut tls)) = tokio::time::timeout(LIMIT, handshake).await else {
        return Silent::HandshakeRefused;
    };
    let handshaken = Instant::now();
    // An HTTP/2 server sends its SETTINGS first; anything until the close.
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(LIMIT, async {
        for _ in 0..1000 {
            if matches!(tls.read(&mut buf).await, Ok(0) | Err(_)) {
                return;
            }
        }
    })
    .await;
    match closed {
        Ok(()) => Silent::Closed(handshaken.elapsed()),
        Err(_) => Silent::Held,
    }
}

/// Connections that complete the TLS handshake and then send nothing used
/// to keep their slot for good (hyper-util's auto builder waited for the
/// first bytes without a timer): 1,024 of them locked every other client
/// out. Each is now closed after the header timeout, whatever ALPN it
/// chose, while a connected client is served throughout and a new one
/// gets a slot as theirs come free.
#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_cannot_hold_every_slot() {
    // One descriptor per silent connection on this side, plus room to spare.
    let silent = raise_fd_limit().saturating_sub(256).min(1024) as usize;
    assert!(silent >= 64, "too few open files allowed for this test");
    let max_connections = silent.to_string();
    let server = Server::start(&[
        "--header-timeout",
        "2s",
        "--max-connections",
        &max_connections,
    ]);
    let canary = Canary::start(&server);
    canary.served().await;
    let prober = server.client(true);
    assert_eq!(get_text(&prober, &server.url("/healthz")).await, "ok\n");

    let alpns: [&[&[u8]]; 3] = [&[b"h2"], &[b"http/1.1"], &[]];
    let connectors: Vec<_> = alpns
        .iter()
        .map(|a| tokio_rustls::TlsConnector::from(tls_client_config_alpn(&server.ca_pem, None, a)))
        .collect();
    let mut holders = tokio::task::JoinSet::new();
    for i in 0..silent {
        holders.spawn(hold_silently(connectors[i % 3].clone(), server.port));
    }
    // And a few stuck half way through the handshake: a ClientHello's first bytes.
    for _ in 0..16 {
        let port = server.port;
        holders.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let _ = s.write_all(&tls10_client_hello()[..20]).await;
            let started = Instant::now();
            let mut buf = [0u8; 64];
            match tokio::time::timeout(LIMIT, s.read(&mut buf)).await {
                Ok(_) => Silent::Closed(started.elapsed()),
                Err(_) => Silent::Held,
            }
        });
    }

    // While they are held, probes on a connection opened before answer
    // quickly; a client arriving once every slot is taken is served as
    // soon as the silent ones' time is up.
    let open_connections = |metrics: &str| -> usize {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("pvc_guard_open_connections "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut most_open = 0;
    for _ in 0..60 {
        let metrics = get_text(&prober, &server.url("/metrics")).await;
        most_open = most_open.max(open_connections(&metrics));
        // The half handshakes hold slots but are not open TLS connections.
        if most_open + 16 >= silent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slots_full_on_arrival = most_open + 16 >= silent;
    let arriving = Instant::now();
    let r = tokio::time::timeout(
        LIMIT,
        server.client(false).get(server.url("/healthz")).send(),
    )
    .await
    .expect("a new client is served while silent connections come and go")
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let new_client_wait = arriving.elapsed();
    let mut outcomes = SilentOutcomes::default();
    let mut slowest_probe = Duration::ZERO;
    for _ in 0..200 {
        if holders.is_empty() {
            break;
        }
        let asked = Instant::now();
        let metrics = tokio::time::timeout(LIMIT, get_text(&prober, &server.url("/metrics")))
            .await
            .expect("/metrics answers");
        let healthz = tokio::time::timeout(LIMIT, get_text(&prober, &server.url("/healthz")))
            .await
            .expect("/healthz answers");
        assert_eq!(healthz, "ok\n");
        slowest_probe = slowest_probe.max(asked.elapsed());
        most_open = most_open.max(open_connections(&metrics));
        while let Some(done) = holders.try_join_next() {
            outcomes.add(done.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while let Some(done) = holders.join_next().await {
        outcomes.add(done.unwrap());
    }
    let SilentOutcomes {
        closed,
        refused,
        longest,
    } = outcomes;
    assert_eq!(closed + refused, silent + 16);
    assert!(
        slowest_probe < Duration::from_secs(2),
        "probes took {slowest_probe:?}"
    );
    let (answered, slowest_canary) = canary.finish().await;
    // Looser than the probes': its reviews share 2 cores with 2,048
    // debug-build TLS handshakes (this process's and the server's).
    assert!(
        slowest_canary < Duration::from_secs(5),
        "the canary waited {slowest_canary:?}"
    );
    let metrics = get_text(&prober, &server.url("/metrics")).await;
    assert!(metrics.contains("reason=\"header_timeout\""), "{metrics}");
    eprintln!(
        "{silent} silent connections and 16 half handshakes: {closed} closed by the server (the last {longest:?} after its handshake), {refused} refused during the handshake; \
         at most {most_open} connections open at once; canary answered {answered} times, slowest {slowest_canary:?}; \
         slowest /healthz + /metrics {slowest_probe:?}; a new client waited {new_client_wait:?} (every slot taken when it came: {slots_full_on_arrival})"
    );
}

/// An HTTP/2 connection over TLS with ALPN h2, and a task that ends when
/// the server closes it.
async fn h2_connection(
    server: &Server,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tls =
        tokio_rustls::TlsConnector::from(tls_client_config_alpn(&server.ca_pem, None, &[b"h2"]))
            .connect(
                "localhost".try_into().unwrap(),
                tokio::net::TcpStream::connect(("127.0.0.1", server.port))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let closed = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, closed)
}

async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
) -> u16 {
    let request = axum::http::Request::get(format!("https://localhost{path}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let answer = tokio::time::timeout(LIMIT, send.send_request(request))
        .await
        .expect("answered")
        .expect("the connection is open");
    answer.status().as_u16()
}

/// The API server keeps its HTTP/2 connection to a webhook and reuses it,
/// so one in use stays open; one left idle used to stay forever too (kept
/// by pings). Now it is closed after --idle-timeout, and one that only sent
/// the preface and SETTINGS after the header timeout.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed_and_a_used_one_is_kept() {
    let server = Server::start(&["--idle-timeout", "2s", "--header-timeout", "2s"]);
    let (mut idle, idle_closed) = h2_connection(&server).await;
    assert_eq!(h2_get(&mut idle, "/healthz").await, 200);
    let (_preface_only, preface_closed) = h2_connection(&server).await;
    let (mut used, used_closed) = h2_connection(&server).await;
    // Three idle timeouts' worth of requests 300 ms apart.
    for _ in 0..20 {
        assert_eq!(h2_get(&mut used, "/healthz").await, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!used_closed.is_finished(), "a connection in use was closed");
    tokio::time::timeout(LIMIT, idle_closed)
        .await
        .expect("the idle connection is closed within the limit")
        .unwrap();
    tokio::time::timeout(LIMIT, preface_closed)
        .await
        .expect("a connection that sent only the preface is closed within the limit")
        .unwrap();
    // Left alone, the used one goes the same way.
    tokio::time::timeout(LIMIT, used_closed)
        .await
        .expect("the used connection is closed once idle")
        .unwrap();
}

/// The body limit is the API server's own, 3 MiB: a review of exactly that
/// size is answered, one byte more is refused whether declared or streamed;
/// a body sent a byte at a time runs into the request timeout.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_3_mib_get_413_and_slow_bodies_408() {
    const LIMIT_BYTES: usize = 3 * 1024 * 1024;
    let server = Server::start(&["--request-timeout", "2s"]);
    let json = "application/json";
    let mut exactly = review_bytes(&fixture("pg-no-volume.create"));
    exactly.resize(LIMIT_BYTES, b' ');
    let r = server
        .client(true)
        .post(server.url("/validate"))
        .header("content-type", json)
        .body(exactly)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let out = raw_exchange(
        &server,
        &post_head("/validate", json, LIMIT_BYTES + 1),
        &vec![b' '; 1 << 16],
        LIMIT,
    )
    .await
    .expect("answered");
    assert_eq!(status_of(&out), Some(413), "{out}");
    assert!(out.contains(&LIMIT_BYTES.to_string()), "{out}");

    let chunks = (0..3)
        .map(|_| vec![b' '; 1 << 20])
        .chain([vec![b' '; 1]])
        .map(Ok::<_, std::io::Error>);
    let r = server
        .client(true)
        .post(server.url("/mutate"))
        .header("content-type", json)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);

    // Headers, then the body a byte every 200 ms.
    let body = review_bytes(&fixture("pg-no-volume.create"));
    let tls = tls_connect(&server).await;
    let (mut read, mut write) = tokio::io::split(tls);
    write
        .write_all(post_head("/validate", json, body.len()).as_bytes())
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for byte in body.iter().take(100) {
            if write.write_all(&[*byte]).await.is_err() || write.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, read.read_to_end(&mut out))
        .await
        .expect("a trickling body is cut off within the limit");
    trickle.abort();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&out), Some(408), "{out}");
}

/// A pg review with 60,000 environment variables: under 3 MiB, admissible,
/// and measurably slow to parse and judge.
fn heavy_review() -> Vec<u8> {
    let mut review = fixture("pg-no-volume.create");
    let env: Vec<Value> = (0..60_000)
        .map(|i| json!({"name": format!("V{i}"), "value": "/var/lib/app/data.db"}))
        .collect();
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env);
    let bytes = review_bytes(&review);
    assert!(bytes.len() < 3 * 1024 * 1024, "{}", bytes.len());
    bytes
}

/// Evaluations used to run on the async workers, where no timeout could
/// stop them and probes waited behind them. Now one runs at a time here,
/// one more may wait, and the rest are answered 503 at once, while
/// /healthz and /metrics answer as usual.
#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_queue_answers_at_once_and_probes_still_answer() {
    // Room in memory for all twelve bodies: this is about the queue.
    let server = Server::start(&[
        "--max-concurrent-reviews",
        "1",
        "--max-queued-reviews",
        "1",
        "--max-buffered-bytes",
        "67108864",
    ]);
    let prober = server.client(true);
    assert_eq!(get_text(&prober, &server.url("/healthz")).await, "ok\n");
    let heavy = Arc::new(heavy_review());
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (client, url, body) = (server.client(false), server.url("/validate"), heavy.clone());
        requests.spawn(async move {
            let sent = Instant::now();
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let text = r.text().await.unwrap();
            (status, retry_after, text, sent.elapsed())
        });
    }
    let (mut slowest_probe, mut saw_running) = (Duration::ZERO, false);
    let mut results = Vec::new();
    for _ in 0..300 {
        if requests.is_empty() {
            break;
        }
        let asked = Instant::now();
        let healthz = tokio::time::timeout(LIMIT, get_text(&prober, &server.url("/healthz")))
            .await
            .expect("/healthz answers");
        let metrics = tokio::time::timeout(LIMIT, get_text(&prober, &server.url("/metrics")))
            .await
            .expect("/metrics answers");
        slowest_probe = slowest_probe.max(asked.elapsed());
        assert_eq!(healthz, "ok\n");
        saw_running |= metrics.contains("pvc_guard_reviews_running 1");
        while let Some(done) = requests.try_join_next() {
            results.push(done.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Some(done) = requests.join_next().await {
        results.push(done.unwrap());
    }
    assert_eq!(results.len(), 12);
    let mut refused = 0;
    for (status, retry_after, text, took) in &results {
        match status {
            200 => assert_eq!(
                allowed(&serde_json::from_str(text).unwrap()),
                Some(false),
                "{text}"
            ),
            503 => {
                refused += 1;
                assert!(text.contains("saturated"), "{text}");
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert!(*took < Duration::from_secs(2), "a 503 took {took:?}");
            }
            other => panic!("{other}: {text}"),
        }
    }
    assert!(refused > 0 && refused < 12, "{refused} of 12 refused");
    assert!(slowest_probe < Duration::from_secs(2), "{slowest_probe:?}");
    assert!(saw_running, "/metrics never showed an evaluation running");
    let metrics = get_text(&prober, &server.url("/metrics")).await;
    assert!(metrics.contains("pvc_guard_reviews_running 0"), "{metrics}");
    assert!(metrics.contains("pvc_guard_reviews_waiting 0"), "{metrics}");
    assert!(
        metrics.contains(&format!("reason=\"queue_full\"}} {refused}")),
        "{metrics}"
    );
    let slowest_200 = results
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| r.3)
        .max()
        .unwrap();
    eprintln!(
        "12 heavy reviews ({} bytes) at once: {} answered (the last after {slowest_200:?}), {refused} refused at once; slowest /healthz + /metrics {slowest_probe:?}",
        heavy.len(),
        12 - refused
    );
}

/// `request.kind` was a metric label: 20,000 made-up kinds grew /metrics
/// to 42 MB. Labels now come from fixed sets, an unknown kind is `other`.
#[tokio::test(flavor = "multi_thread")]
async fn made_up_kinds_do_not_grow_the_metrics() {
    use futures_util::StreamExt;
    let server = Server::start(&[]);
    let client = server.client(true);
    let rss_before = rss_kb(server.pid());
    let base = fixture("nginx-stateless.create");
    let answered = futures_util::stream::iter(0..5_000)
        .map(|i| {
            let mut review = base.clone();
            let kind = format!("MadeUpKind{i:05}");
            review["request"]["kind"]["kind"] = json!(kind);
            review["request"]["object"]["kind"] = json!(kind);
            let (client, url) = (client.clone(), server.url("/validate"));
            async move {
                let (status, body) = post(&client, &url, &review).await;
                assert_eq!((status, allowed(&body)), (200, Some(true)), "{body}");
            }
        })
        .buffer_unordered(16)
        .count()
        .await;
    assert_eq!(answered, 5_000);
    let metrics = get_text(&client, &server.url("/metrics")).await;
    assert!(
        metrics.len() < 64 * 1024,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert!(!metrics.contains("MadeUpKind"), "{metrics}");
    assert!(
        metrics.contains(r#"pvc_guard_admission_requests_total{endpoint="validate",kind="other",operation="CREATE",decision="allow"} 5000"#),
        "{metrics}"
    );
    eprintln!(
        "after 5,000 made-up kinds: /metrics {} bytes, RSS {:?} kB before, {:?} kB after",
        metrics.len(),
        rss_before,
        rss_kb(server.pid())
    );
}

/// The lines of a JSON log.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// A decision line names the requesting user; a refusal names the peer;
/// a flood of bad requests is a few lines a second, with a count of those
/// not logged one by one, and every refusal accounted for.
#[tokio::test(flavor = "multi_thread")]
async fn logs_name_the_user_and_the_peer_and_a_flood_is_a_few_lines() {
    let server = Server::start(&["--log-format", "json"]);
    let mut review = fixture("pg-no-volume.create");
    review["request"]["userInfo"]["username"] = json!("alice@example.com");
    let (status, _) = post(&server.client(true), &server.url("/validate"), &review).await;
    assert_eq!(status, 200);

    let mut tls = tls_connect(&server).await;
    let peer = tls.get_ref().0.local_addr().unwrap().to_string();
    tls.write_all(post_head("/validate", "application/json", 5).as_bytes())
        .await
        .unwrap();
    tls.write_all(b"{nope").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, tls.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&out)), Some(400));

    // 1,000 malformed bodies over 4 kept-alive connections.
    let flood_started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, url) = (server.client(false), server.url("/validate"));
        senders.spawn(async move {
            for _ in 0..250 {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{nope")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 400);
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }
    let flood_took = flood_started.elapsed();
    let sent = 1_001u64;

    // Suppressed lines are summed up once a second: wait until they add up.
    let deadline = Instant::now() + LIMIT;
    let (logged, suppressed, lines) = loop {
        let lines = json_lines(&server.log_text());
        let refused: Vec<&Value> = lines
            .iter()
            .filter(|l| l["message"] == "refused" && l["reason"] == "bad_request")
            .collect();
        let suppressed: u64 = lines
            .iter()
            .filter(|l| l["reason"] == "bad_request")
            .filter_map(|l| l["suppressed"].as_u64())
            .sum();
        if refused.len() as u64 + suppressed >= sent || Instant::now() > deadline {
            break (refused.len() as u64, suppressed, lines);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(logged + suppressed, sent, "every refusal is accounted for");
    let windows = flood_took.as_secs() + 2;
    assert!(
        logged <= 5 * windows,
        "{logged} lines for a flood of {flood_took:?}"
    );
    assert!(suppressed > 0);
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "refused" && l["peer"] == json!(peer)),
        "no refusal names the peer {peer}: {}",
        server.log_text()
    );
    let decision = lines
        .iter()
        .find(|l| l["message"] == "admission decision")
        .expect("a decision line");
    assert_eq!(decision["user"], "alice@example.com", "{decision}");
    eprintln!(
        "{sent} bad requests in {flood_took:?}: {logged} refusal lines, {suppressed} counted in summaries"
    );
}

/// Sends `head` and then `sent` bytes of its body, and stops there; returns
/// what the server answers within the limit.
async fn stall_after(port: u16, ca_pem: String, head: String, sent: usize) -> String {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(tls_client_config(&ca_pem, None))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut read, mut write) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
        for chunk in vec![b' '; sent].chunks(64 * 1024) {
            if write.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = write.flush().await;
        // Keep the connection open, silent, until the reader is done.
        write
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, read.read_to_end(&mut out)).await;
    writer.abort();
    String::from_utf8_lossy(&out).into_owned()
}

/// Bodies were read into memory before any bound applied, so clients
/// sending large bodies together could hold memory without limit. Bytes
/// received now come out of --max-buffered-bytes: a body that would go
/// over is answered 503 at once, small reviews are still answered, and the
/// bytes come back when the stalled requests time out.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_in_memory_are_bounded_by_max_buffered_bytes() {
    const MIB: usize = 1024 * 1024;
    let server = Server::start(&[
        "--max-body-bytes",
        "1048576",
        // Two bodies of 1 MiB and a quarter for reviews of ordinary size.
        "--max-buffered-bytes",
        "2359296",
        "--request-timeout",
        "4s",
    ]);
    let head = post_head("/validate", "application/json", MIB);
    let mut stalled = tokio::task::JoinSet::new();
    // One sends most of its body, one a single byte: at its first bytes a
    // body is charged the length it declares, for which the buffer is
    // reserved then.
    for sent in [800 * 1024, 1] {
        stalled.spawn(stall_after(
            server.port,
            server.ca_pem.clone(),
            head.clone(),
            sent,
        ));
    }
    let prober = server.client(true);
    let mut held = 0;
    for _ in 0..100 {
        let metrics = get_text(&prober, &server.url("/metrics")).await;
        held = metrics
            .lines()
            .find_map(|l| l.strip_prefix("pvc_guard_request_body_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0usize);
        if held >= 2 * MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        held,
        2 * MIB,
        "the stalled bodies are charged their declared lengths"
    );
    let third = stall_after(server.port, server.ca_pem.clone(), head, 800 * 1024).await;
    assert_eq!(status_of(&third), Some(503), "{third}");
    assert!(third.contains("saturated"), "{third}");
    // A review of ordinary size still fits.
    let (status, body) = post(
        &server.client(true),
        &server.url("/validate"),
        &fixture("pg-no-volume.create"),
    )
    .await;
    assert_eq!((status, allowed(&body)), (200, Some(false)), "{body}");
    while let Some(out) = stalled.join_next().await {
        let out = out.unwrap();
        assert_eq!(status_of(&out), Some(408), "{out}");
    }
    // With the stalled bytes given back, a body near the limit is read again.
    let mut large = review_bytes(&fixture("pg-no-volume.create"));
    large.resize(MIB - 1024, b' ');
    let r = server
        .client(true)
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(large)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let metrics = get_text(&server.client(false), &server.url("/metrics")).await;
    assert!(metrics.contains("reason=\"buffers_full\"} 1"), "{metrics}");
}
