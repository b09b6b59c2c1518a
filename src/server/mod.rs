//! `pvc-guard serve`: the HTTPS admission server. The request path is
//! [`admit`]: limits, parse, decide (pure, panic-safe), log, count, answer.

pub mod metrics;
pub mod tls;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;
use tracing::{error, info, warn};

use crate::admission::{self, Endpoint, FailureMode};
use crate::cli::{LogFormat, ServeArgs};
use crate::config::Config;
use crate::policy::{ClusterFacts, Policy};
use metrics::{EndpointLabels, FindingLabels, Metrics, RequestLabels};
use tls::CertStore;

/// Shared by every request.
pub struct App {
    pub policy: ArcSwap<Policy>,
    pub metrics: Metrics,
    pub failure_mode: FailureMode,
    pub max_body: usize,
    pub shutting_down: AtomicBool,
    pub cert: Arc<CertStore>,
    /// `--client-ca` is set: /validate and /mutate need a verified client certificate.
    pub require_client_cert: bool,
    /// Watch caches of the cluster, when it runs with one.
    pub cluster: Option<crate::cluster::Caches>,
}

/// Whether the connection presented a client certificate that verified
/// against `--client-ca`; set on each request by the connection task.
#[derive(Clone, Copy)]
struct ClientCertificate(bool);

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
    let headers = parts.headers;
    let verified = parts
        .extensions
        .get::<ClientCertificate>()
        .is_some_and(|c| c.0);
    if app.require_client_cert && !verified {
        app.metrics.reject("client_certificate_required");
        return plain(
            StatusCode::UNAUTHORIZED,
            "a client certificate signed by the --client-ca is required",
        );
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        app.metrics.reject("unsupported_media_type");
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be an AdmissionReview sent as application/json",
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > app.max_body) {
        app.metrics.reject("payload_too_large");
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", app.max_body),
        );
    }
    let bytes = match axum::body::to_bytes(body, app.max_body).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                app.metrics.reject("payload_too_large");
                plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {} bytes", app.max_body),
                )
            } else {
                app.metrics.reject("bad_request");
                plain(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body failed: {e}"),
                )
            };
        }
    };
    let request = match admission::parse(&bytes) {
        Ok(r) => r,
        Err(e) => {
            app.metrics.reject("bad_request");
            return plain(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
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
    if verdict.error.is_some() {
        app.metrics.policy_errors.inc();
    }
    let r = &request;
    let elapsed = started.elapsed();
    let operation = r.operation.as_str();
    let rules: Vec<&'static str> = verdict.rules.iter().map(|r| r.id()).collect();
    info!(
        uid = %r.uid,
        endpoint = endpoint.as_str(),
        kind = %r.kind,
        namespace = r.namespace.as_deref().unwrap_or(""),
        name = %r.name,
        operation,
        dry_run = r.dry_run,
        decision = verdict.decision.as_str(),
        mode = verdict.mode.as_str(),
        rules = %rules.join(","),
        error = verdict.error.as_deref().unwrap_or(""),
        latency_us = elapsed.as_micros() as u64,
        "admission decision"
    );
    let decision = verdict.decision.as_str();
    let labels = RequestLabels {
        endpoint: endpoint.as_str(),
        kind: r.kind.clone(),
        operation,
        decision,
    };
    app.metrics.requests.get_or_create(&labels).inc();
    for rule in rules {
        let l = FindingLabels {
            endpoint: endpoint.as_str(),
            kind: r.kind.clone(),
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
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        verdict.to_json(),
    )
        .into_response()
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

/// Counts refusals made outside the handler (timeouts, unknown paths).
async fn count_refusals(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    match response.status() {
        StatusCode::REQUEST_TIMEOUT => app.metrics.reject("timeout"),
        StatusCode::NOT_FOUND => app.metrics.reject("not_found"),
        StatusCode::METHOD_NOT_ALLOWED => app.metrics.reject("method_not_allowed"),
        _ => {}
    }
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

/// The decision log is written by a thread of its own through a buffer
/// that is flushed whenever its queue runs dry: a request never waits on a
/// write to stderr, and under load many lines share one write (one line per
/// decision was a fifth of a request's CPU when each was its own write).
/// Lines are never dropped: a full queue makes the logger wait instead.
/// The queue is short because its slots are allocated up front (the
/// default 128,000 lines were 4 MiB of idle memory).
/// The guard flushes what is left when `run` returns.
pub fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(1024)
        .thread_name("pvc-guard-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // Colour only for a person at a terminal, never into a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    let _log = init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime
        .block_on(serve(args))
        .map_err(|e| format!("{e:#}"))?;
    Ok(ExitCode::SUCCESS)
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

/// Peeks at the first byte: a TLS handshake starts with 0x16. Plain HTTP
/// gets a readable 400 instead of a TLS alert.
async fn refuse_plain_http(stream: &mut TcpStream, app: &App) -> bool {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] == 0x16 => false,
        Ok(1) if first[0].is_ascii_alphabetic() => {
            app.metrics.reject("plain_http");
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 52\r\n\r\nThis port speaks HTTPS; send the request over TLS.\r\n")
                .await;
            let _ = stream.shutdown().await;
            true
        }
        _ => {
            app.metrics.reject("tls_handshake");
            true
        }
    }
}

/// HTTP/1.1 and HTTP/2 on one connection, as ALPN chose. The header
/// timeout also ends idle HTTP/1.1 keep-alive; HTTP/2 is kept by pings.
/// Public so the benchmarks' no-op webhook serves with exactly this.
pub fn http_builder(
    header_timeout: Duration,
) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    builder
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
    let app = Arc::new(App {
        policy: ArcSwap::from_pointee(Policy::new(config)),
        metrics,
        failure_mode: args.failure_mode,
        max_body: args.max_body_bytes,
        shutting_down: AtomicBool::new(false),
        cert: store,
        require_client_cert: args.client_ca.is_some(),
        cluster,
    });
    app.metrics.cert_expiry.set(not_after);
    let service = router(app.clone(), args.request_timeout);
    info!(address = %listener.local_addr()?, "listening on https://{}", listener.local_addr()?);
    let reloader = tokio::spawn(reload_loop(
        app.clone(),
        args.clone(),
        cert_seen,
        config_seen,
    ));

    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(args.max_connections.max(1)));
    let signal = shutdown;
    tokio::pin!(signal);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut signal => break,
        };
        let (mut stream, _) = tokio::select! {
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
        let (mut stop, alive) = (stop_rx.clone(), alive_tx.clone());
        let header_timeout = args.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _alive = alive;
            let handshake = async {
                if refuse_plain_http(&mut stream, &app).await {
                    return None;
                }
                match acceptor.accept(stream).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        app.metrics.reject("tls_handshake");
                        tracing::debug!(error = %e, "TLS handshake failed");
                        None
                    }
                }
            };
            let Ok(Some(tls)) = tokio::time::timeout(header_timeout, handshake).await else {
                return;
            };
            app.metrics.connections.inc();
            let verified = ClientCertificate(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty()),
            );
            let builder = http_builder(header_timeout);
            let service = tower::ServiceExt::map_request(
                service,
                move |mut r: axum::http::Request<hyper::body::Incoming>| {
                    r.extensions_mut().insert(verified);
                    r
                },
            );
            let hyper_service = hyper_util::service::TowerToHyperService::new(service);
            let conn = builder.serve_connection(TokioIo::new(tls), hyper_service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {},
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            app.metrics.connections.dec();
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
    info!("stopped");
    Ok(())
}
