//! `pvc-guard serve`: the HTTPS admission server. The request path is
//! [`admit`]: limits, a place in the evaluation queue, then (on a blocking
//! thread when the body is large) parse, decide (panic-safe), log, count;
//! answer.

pub mod args;
pub mod conn;
mod memory;
pub mod metrics;
pub mod refusals;
pub mod reviews;
pub mod tls;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;
use tracing::{error, info, warn};

use crate::admission::{self, Endpoint, FailureMode};
use crate::config::Config;
use crate::policy::{ClusterFacts, Policy};
pub use args::ServeArgs;
pub use conn::http_builder;
use conn::{Caller, Timeouts};
use metrics::{EndpointLabels, FindingLabels, Metrics, RequestLabels, kind_label};
use refusals::{Refusal, RefusalLog, bounded};
use reviews::Reviews;
use tls::CertStore;

/// Shared by every request.
pub struct App {
    pub policy: ArcSwap<Policy>,
    pub metrics: Metrics,
    pub failure_mode: FailureMode,
    pub max_body: usize,
    /// One permit per byte of request body held in memory.
    pub buffers: Arc<Semaphore>,
    pub max_buffered: usize,
    pub shutting_down: AtomicBool,
    pub cert: Arc<CertStore>,
    /// `--client-ca` is set: /validate and /mutate need a verified client certificate.
    pub require_client_cert: bool,
    /// Watch caches of the cluster, when it runs with one.
    pub cluster: Option<crate::cluster::Caches>,
    pub reviews: Reviews,
    pub refusals: RefusalLog,
}

impl App {
    /// Why the server is not ready, if it is not.
    fn not_ready(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if self.cluster.as_ref().is_some_and(|c| !c.synced()) {
            Some("the cluster caches have not synced yet")
        } else {
            None
        }
    }

    /// Cluster facts for a request's object, from the caches; unknown without them.
    fn facts(&self, request: &admission::Request) -> ClusterFacts {
        self.cluster
            .as_ref()
            .map(|c| c.facts(request.namespace(), request.workload()))
            .unwrap_or_default()
    }

    /// Counts and logs (at a bounded rate) a refusal.
    fn note(&self, why: Refusal, peer: Option<SocketAddr>, detail: &str) {
        self.metrics.reject(why);
        self.refusals.log(why, peer, detail);
    }

    /// Counts and logs a refusal, and answers it with its status and `message`.
    fn refuse(
        &self,
        why: Refusal,
        peer: Option<SocketAddr>,
        message: impl Into<String>,
    ) -> Response {
        let message = message.into();
        self.note(why, peer, &message);
        let mut response = plain(why.status(), message);
        // Saturation passes: a hint for clients that honour it.
        if why.status() == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn plain(status: StatusCode, reason: impl Into<String>) -> Response {
    let mut body = reason.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The whole request path of POST /validate and /mutate.
async fn admit(app: Arc<App>, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let caller = parts.extensions.get::<Caller>().copied();
    let peer = caller.map(|c| c.peer);
    if app.require_client_cert && !caller.is_some_and(|c| c.verified) {
        return app.refuse(
            Refusal::ClientCertificateRequired,
            peer,
            "a client certificate signed by the --client-ca is required",
        );
    }
    if !is_json(&parts.headers) {
        return app.refuse(
            Refusal::UnsupportedMediaType,
            peer,
            "the body must be an AdmissionReview sent as application/json",
        );
    }
    let (bytes, buffered) = match read_body(&app, &parts.headers, body).await {
        Ok(b) => b,
        Err((why, message)) => return app.refuse(why, peer, message),
    };
    // Only a request whose body is in takes a place: a slow sender holds none.
    let Some(place) = app.reviews.enter() else {
        return saturated(&app, peer);
    };
    let body_bytes = bytes.len();
    let inline = body_bytes <= reviews::INLINE_BODY_BYTES;
    let job = {
        let app = app.clone();
        move || {
            let answer = evaluate(&app, endpoint, &bytes, started);
            drop((bytes, buffered));
            memory::after_review(body_bytes);
            answer
        }
    };
    match place.run(inline, job).await {
        Ok(Ok(answer)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            answer,
        )
            .into_response(),
        Ok(Err(bad)) => app.refuse(Refusal::BadRequest, peer, bad.to_string()),
        // The policy's own panics are answered inside; this is parse or to_json.
        Err(_) => {
            app.metrics.panics.inc();
            error!("reading or answering an AdmissionReview panicked");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "pvc-guard hit an internal error reading this request",
            )
        }
    }
}

/// Parse, judge, log and count: all of it grows with the body, so a large
/// body runs it on a blocking thread (`reviews::INLINE_BODY_BYTES`).
fn evaluate(
    app: &App,
    endpoint: Endpoint,
    bytes: &[u8],
    started: Instant,
) -> Result<Vec<u8>, admission::BadRequest> {
    let request = admission::parse(bytes)?;
    let policy = app.policy.load_full();
    let facts = app.facts(&request);
    let verdict = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        admission::review(&policy, endpoint, &request, &facts, app.failure_mode)
    })) {
        Ok(v) => v,
        Err(_) => {
            app.metrics.panics.inc();
            error!(uid = %request.uid, "the policy panicked; answering per the failure mode");
            admission::failure(
                &request.uid,
                "pvc-guard hit an internal error judging this object",
                app.failure_mode,
            )
        }
    };
    let answer = verdict.to_json();
    record(app, endpoint, &request, &verdict, started.elapsed());
    Ok(answer)
}

/// Longest caller-sent string a decision line carries (names are at most
/// 253 bytes; anything longer did not come through the API server).
const MAX_LOGGED: usize = 256;

/// The decision's log line and metrics.
fn record(
    app: &App,
    endpoint: Endpoint,
    request: &admission::Request,
    verdict: &admission::Verdict,
    elapsed: Duration,
) {
    if verdict.error.is_some() {
        app.metrics.policy_errors.inc();
    }
    let r = request;
    let operation = r.operation.as_str();
    let rules: Vec<&'static str> = verdict.rules.iter().map(|r| r.id()).collect();
    let decision = verdict.decision.as_str();
    // Plain &str fields: the text format quotes and escapes them, so a name
    // with a newline cannot forge a line.
    info!(
        uid = bounded(&r.uid, MAX_LOGGED),
        endpoint = endpoint.as_str(),
        kind = bounded(&r.kind, MAX_LOGGED),
        namespace = bounded(r.namespace.as_deref().unwrap_or(""), MAX_LOGGED),
        name = bounded(&r.name, MAX_LOGGED),
        user = bounded(&r.username, MAX_LOGGED),
        operation,
        dry_run = r.dry_run,
        decision,
        mode = verdict.mode.as_str(),
        rules = %rules.join(","),
        error = verdict.error.as_deref().unwrap_or(""),
        latency_us = elapsed.as_micros() as u64,
        "admission decision"
    );
    let kind = kind_label(&r.group, &r.kind);
    let labels = RequestLabels {
        endpoint: endpoint.as_str(),
        kind,
        operation,
        decision,
    };
    app.metrics.requests.get_or_create(&labels).inc();
    for rule in rules {
        let l = FindingLabels {
            endpoint: endpoint.as_str(),
            kind,
            operation,
            decision,
            rule,
        };
        app.metrics.findings.get_or_create(&l).inc();
    }
    app.metrics
        .latency
        .get_or_create(&EndpointLabels {
            endpoint: endpoint.as_str(),
        })
        .observe(elapsed.as_secs_f64());
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// The body, at most `--max-body-bytes`: a larger declared length is
/// refused from the header alone, a longer stream when it crosses the limit.
/// Each chunk takes its bytes from `--max-buffered-bytes` as it arrives;
/// they come back when the permit returned with the body is dropped.
async fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(Bytes, OwnedSemaphorePermit), (Refusal, String)> {
    use http_body_util::BodyExt;
    let too_large = || {
        (
            Refusal::PayloadTooLarge,
            format!("the body is larger than {} bytes", app.max_body),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > app.max_body) {
        return Err(too_large());
    }
    let mut held = app
        .buffers
        .clone()
        .try_acquire_many_owned(0)
        .expect("the semaphore is never closed");
    let mut read = bytes::BytesMut::new();
    let mut charged = 0usize;
    let mut body = http_body_util::Limited::new(body, app.max_body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                (Refusal::BadRequest, format!("reading the body failed: {e}"))
            }
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if chunk.is_empty() {
            continue;
        }
        // At the first bytes the buffer is reserved for the declared length
        // (grown by doubling, a 2.8 MB body held its 2 MiB buffer and the
        // 4 MiB one together while copying), so that much is charged to
        // --max-buffered-bytes then; later bytes only past it. A client
        // that declares a length and sends nothing holds nothing.
        let after = read.len() + chunk.len();
        let need = if read.is_empty() {
            declared.map_or(after, |n| n.max(after))
        } else {
            after
        };
        if need > charged {
            // At most the body limit, which serve keeps under 4 GiB.
            let more = u32::try_from(need - charged)
                .ok()
                .and_then(|n| app.buffers.clone().try_acquire_many_owned(n).ok())
                .ok_or_else(|| {
                    (
                        Refusal::BuffersFull,
                        format!(
                            "pvc-guard is saturated: request bodies in memory reached {} bytes; try again shortly",
                            app.max_buffered
                        ),
                    )
                })?;
            held.merge(more);
            charged = need;
        }
        if read.is_empty() {
            read.reserve(need);
        }
        read.extend_from_slice(&chunk);
    }
    Ok((read.freeze(), held))
}

/// Every evaluation slot and queue place is taken: 503 at once, so the API
/// server applies the webhook's failurePolicy now instead of at its timeout.
fn saturated(app: &App, peer: Option<SocketAddr>) -> Response {
    app.refuse(
        Refusal::QueueFull,
        peer,
        format!(
            "pvc-guard is saturated: {} reviews are running and {} waiting; try again shortly",
            app.reviews.concurrency, app.reviews.queue
        ),
    )
}

async fn validate(State(app): State<Arc<App>>, request: Request) -> Response {
    admit(app, Endpoint::Validate, request).await
}

async fn mutate(State(app): State<Arc<App>>, request: Request) -> Response {
    admit(app, Endpoint::Mutate, request).await
}

async fn healthz() -> Response {
    plain(StatusCode::OK, "ok")
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.not_ready() {
        None => plain(StatusCode::OK, "ready"),
        Some(why) => plain(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    app.metrics.cert_expiry.set(app.cert.not_after());
    let buffered = app.max_buffered - app.buffers.available_permits();
    app.metrics.buffered_bytes.set(buffered as i64);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// Counts and logs refusals made outside the handler (timeouts, unknown paths).
async fn count_refusals(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Caller>().map(|c| c.peer);
    let response = next.run(req).await;
    let (why, detail) = match response.status() {
        StatusCode::REQUEST_TIMEOUT => {
            (Refusal::Timeout, "the request outlasted --request-timeout")
        }
        StatusCode::NOT_FOUND => (Refusal::NotFound, "unknown path"),
        StatusCode::METHOD_NOT_ALLOWED => (Refusal::MethodNotAllowed, "wrong method"),
        _ => return response,
    };
    app.note(why, peer, detail);
    response
}

pub fn router(app: Arc<App>, request_timeout: Duration) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            plain(
                StatusCode::NOT_FOUND,
                "pvc-guard serves POST /validate and /mutate, GET /healthz, /readyz and /metrics",
            )
        })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), count_refusals))
        .with_state(app)
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    let _log = crate::logging::init(args.log_format);
    raise_fd_limit(args.max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime
        .block_on(serve(args))
        .map_err(|e| format!("{e:#}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Each connection is a descriptor: a soft limit below --max-connections
/// would turn connections away at accept (EMFILE) long before the limit.
/// The soft limit is raised to the hard one, as Go's runtime does at start.
fn raise_fd_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write the one struct passed.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        if !got {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        // Room for the listener, the log, the cluster watches and files.
        let needed = max_connections.saturating_add(64) as libc::rlim_t;
        if limit.rlim_cur < needed {
            warn!(
                open_files = limit.rlim_cur,
                max_connections,
                "the open-file limit is below --max-connections plus 64; connections beyond it are refused at accept"
            );
        }
    }
}

/// SIGTERM (the kubelet stopping the pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Watches the certificate and config files and swaps in what changed.
/// A file that fails to load leaves the old one in force.
async fn reload_loop(app: Arc<App>, args: ServeArgs, mut cert_seen: Vec<u8>, config_seen: Vec<u8>) {
    let mut config_file = args
        .config
        .clone()
        .map(|path| crate::config_file::Watched::new(path, config_seen));
    let mut tick = tokio::time::interval(args.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            // The bytes compared are the bytes loaded: each file is read once a tick.
            if let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read(cert), std::fs::read(key)) {
                let seen = [cert_pem.as_slice(), key_pem.as_slice()].concat();
                if seen != cert_seen {
                    match tls::certified_key(&cert_pem, &key_pem) {
                        Ok((ck, not_after)) => {
                            app.cert.swap(ck, not_after);
                            app.metrics.cert_reloads.inc();
                            app.metrics.cert_expiry.set(not_after);
                            info!(cert = %cert.display(), "loaded the changed certificate");
                            cert_seen = seen;
                        }
                        // Mid-rotation the two files may not match yet: try again next tick.
                        Err(e) => {
                            app.metrics.cert_reload_errors.inc();
                            warn!(error = %format!("{e:#}"), "the changed certificate could not be loaded; the old one stays in force");
                        }
                    }
                }
            }
        }
        if let Some(file) = &mut config_file
            && let Some(parsed) = file.changed()
        {
            match parsed {
                Ok(config) => {
                    app.policy.store(Arc::new(Policy::new(config)));
                    app.metrics.config_reloads.inc();
                    app.metrics.config_last_reload_ok.set(1);
                    info!(config = %file.path.display(), "loaded the changed config");
                }
                Err(e) => {
                    app.metrics.config_reload_errors.inc();
                    app.metrics.config_last_reload_ok.set(0);
                    error!(error = %format!("{e:#}"), "the changed config is invalid; the old config stays in force");
                }
            }
        }
    }
}

/// In a pod unless told otherwise.
fn cluster_enabled(args: &ServeArgs) -> bool {
    !args.no_cluster && (args.cluster || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let client = if cluster_enabled(&args) {
        Some(
            kube::Client::try_default()
                .await
                .context("connecting to the API server (--no-cluster runs without it)")?,
        )
    } else {
        None
    };
    serve_on(listener, args, client, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` completes, then drains. `client`
/// talks to the API server for cluster facts (read only: the claim
/// controller is `pvc-guard controller`, a process of its own).
pub async fn serve_on(
    listener: TcpListener,
    args: ServeArgs,
    client: Option<kube::Client>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (config, config_seen) = match &args.config {
        Some(path) => crate::config_file::load(path)?,
        None => (Config::default(), Vec::new()),
    };
    let (cert_key, not_after, cert_seen) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => tls::load_files(cert, key)?,
        _ => {
            let g = crate::certs::generate(
                "pvc-guard",
                &["localhost".to_string()],
                &[
                    "127.0.0.1".parse().expect("an IP"),
                    "::1".parse().expect("an IP"),
                ],
                365,
            )?;
            match &args.write_ca {
                Some(path) => {
                    std::fs::write(path, &g.ca_pem)
                        .with_context(|| format!("writing {}", path.display()))?;
                    info!(ca = %path.display(), "serving a generated self-signed certificate for localhost and 127.0.0.1; its CA is in the file");
                }
                None => info!(
                    "serving a generated self-signed certificate for localhost and 127.0.0.1; pass --write-ca FILE to save its CA, or --tls-cert/--tls-key to serve your own"
                ),
            }
            let (ck, not_after) = tls::certified_key(g.cert_pem.as_bytes(), g.key_pem.as_bytes())?;
            (ck, not_after, Vec::new())
        }
    };
    let store = CertStore::new(cert_key, not_after);
    let tls_config = tls::server_config(store.clone(), args.client_ca.as_ref())?;
    let acceptor = TlsAcceptor::from(Arc::new(tls_config));
    let metrics = Metrics::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    // createClaims says a claim controller runs in the cluster, which
    // silences missing-claim for the claims it will create.
    let cluster = client.as_ref().map(|client| {
        crate::cluster::Caches::start(client, &metrics.cluster, config.create_claims)
    });
    let max_buffered = args
        .max_buffered_bytes
        .unwrap_or(args.max_body_bytes.saturating_mul(4));
    anyhow::ensure!(
        max_buffered >= args.max_body_bytes,
        "--max-buffered-bytes ({max_buffered}) must be at least --max-body-bytes ({}), or no body at the limit could be read",
        args.max_body_bytes
    );
    anyhow::ensure!(
        args.max_body_bytes <= u32::MAX as usize,
        "--max-body-bytes must be under 4 GiB"
    );
    let max_buffered = max_buffered.min(Semaphore::MAX_PERMITS);
    let reviews = Reviews::new(
        args.max_concurrent_reviews
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        args.max_queued_reviews,
        // tokio's multi-thread runtime runs one worker per CPU.
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1),
        metrics.reviews_running.clone(),
        metrics.reviews_waiting.clone(),
    );
    let app = Arc::new(App {
        policy: ArcSwap::from_pointee(Policy::new(config)),
        metrics,
        failure_mode: args.failure_mode,
        max_body: args.max_body_bytes,
        buffers: Arc::new(Semaphore::new(max_buffered)),
        max_buffered,
        shutting_down: AtomicBool::new(false),
        cert: store,
        require_client_cert: args.client_ca.is_some(),
        cluster,
        reviews,
        refusals: RefusalLog::default(),
    });
    app.metrics.cert_expiry.set(not_after);
    let service = router(app.clone(), args.request_timeout);
    info!(
        address = %listener.local_addr()?,
        max_connections = args.max_connections,
        max_concurrent_reviews = app.reviews.concurrency,
        max_queued_reviews = app.reviews.queue,
        "listening on https://{}", listener.local_addr()?
    );
    // Prometheus scrapes this port without the webhook's CA; it serves
    // /metrics and nothing else, and its connections never take a slot of
    // the webhook's.
    let metrics_server = match args.metrics_listen {
        None => None,
        Some(address) => {
            let plain = TcpListener::bind(address)
                .await
                .with_context(|| format!("--metrics-listen {address}"))?;
            info!(address = %plain.local_addr()?, "metrics on http://{}/metrics", plain.local_addr()?);
            let routes = Router::new()
                .route("/metrics", get(metrics_text))
                .with_state(app.clone());
            let limits = crate::plain_http::Limits {
                header_timeout: args.header_timeout,
                ..Default::default()
            };
            Some(tokio::spawn(crate::plain_http::serve(
                plain,
                routes,
                limits,
                std::future::pending(),
            )))
        }
    };
    let reloader = tokio::spawn(reload_loop(
        app.clone(),
        args.clone(),
        cert_seen,
        config_seen,
    ));
    let summarizer = tokio::spawn({
        let app = app.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                app.refusals.summarize();
            }
        }
    });
    let timeouts = Timeouts {
        header: args.header_timeout,
        request: args.request_timeout,
        idle: args.idle_timeout,
        drain: args.drain_timeout,
    };

    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(args.max_connections));
    let signal = shutdown;
    tokio::pin!(signal);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut signal => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, acceptor, service) = (app.clone(), acceptor.clone(), service.clone());
        let (stop, alive) = (stop_rx.clone(), alive_tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _alive = alive;
            conn::serve(app, acceptor, service, stream, peer, timeouts, stop).await;
        });
    }
    // Readiness goes false first, then the listener closes, then in-flight
    // requests finish within the drain timeout.
    app.shutting_down.store(true, Ordering::Relaxed);
    info!(drain_timeout = ?args.drain_timeout, "shutting down: not ready, listener closed, draining connections");
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(args.drain_timeout, alive_rx.recv())
        .await
        .is_err()
    {
        warn!("drain timeout reached; closing the remaining connections");
    }
    reloader.abort();
    summarizer.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    app.refusals.summarize();
    info!("stopped");
    Ok(())
}
