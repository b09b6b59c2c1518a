//! `pvc-guard controller`: the claim controller as a process of its own,
//! with its own Deployment and ServiceAccount, so that the webhook's token
//! only reads and the one token that creates claims is held by a pod that
//! serves nothing but its probes. It keeps the namespaces, claims and
//! autoscalers caches, competes for the Lease (the leader creates claims,
//! keeps the policy reports and publishes events), reloads the config file
//! when it changes, and answers plain HTTP on the health address:
//! /healthz, /readyz (the caches have synced) and /metrics.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::claims::{self, Election, Refusal, Stores};
use super::metrics::{ControllerMetrics, RefusalLabels};
use crate::config::Config;
use crate::config_file;

/// What `pvc-guard controller` is told besides where to listen.
#[derive(Debug, Clone)]
pub struct Options {
    /// The policy config; its claim limits and namespace exclusions are
    /// applied as the file changes.
    pub config: Option<PathBuf>,
    /// Where the Lease lives, and the namespace never given claims;
    /// default: the client's namespace (the pod's, in a cluster).
    pub lease_namespace: Option<String>,
    pub reload_interval: Duration,
}

struct Health {
    stores: Stores,
    registry: Registry,
    shutting_down: AtomicBool,
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    if health.shutting_down.load(Ordering::Relaxed) {
        plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if !health.stores.synced() {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the namespaces, claims and autoscalers caches have not synced yet",
        )
    } else {
        plain(StatusCode::OK, "ready")
    }
}

async fn metrics_text(State(health): State<Arc<Health>>) -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &health.registry).is_err() {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { plain(StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            plain(
                StatusCode::NOT_FOUND,
                "pvc-guard controller serves GET /healthz, /readyz and /metrics",
            )
        })
        .with_state(health)
}

/// Applies the config file whenever it changes; a refused file leaves the
/// previous config in force.
async fn reload(
    mut file: config_file::Watched,
    every: Duration,
    config: watch::Sender<Arc<Config>>,
    metrics: ControllerMetrics,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match file.changed() {
            None => {}
            Some(Ok(changed)) => {
                config.send_replace(Arc::new(changed));
                metrics.config_reloads.inc();
                metrics.config_last_reload_ok.set(1);
                info!(config = %file.path.display(), "loaded the changed config");
            }
            Some(Err(e)) => {
                metrics.config_reload_errors.inc();
                metrics.config_last_reload_ok.set(0);
                error!(error = %format!("{e:#}"), "the changed config is invalid; the old config stays in force");
            }
        }
    }
}

/// Runs the controller with `client`, answering probes on `listener`,
/// until `shutdown` completes; then hands the Lease back. An error: the
/// config file cannot be read at start, or the controller stopped on its own.
pub async fn run(
    client: kube::Client,
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (config, seen) = match &options.config {
        Some(path) => config_file::load(path)?,
        None => (Config::default(), Vec::new()),
    };
    if !config.create_claims {
        warn!(
            "createClaims is false in the config: the webhook reading this config warns that recorded claims are missing although this controller creates them; set createClaims: true where a claim controller runs"
        );
    }
    let metrics = ControllerMetrics::default();
    // Every reason is a series from the start, so a rate can be taken of it.
    for reason in Refusal::ALL {
        let _ = metrics.claims_refused.get_or_create(&RefusalLabels {
            reason: reason.as_str(),
        });
    }
    metrics.config_last_reload_ok.set(1);
    let mut registry = crate::telemetry::registry();
    metrics.register(registry.sub_registry_with_prefix("pvc_guard"));
    let stores = Stores::start(&client, &metrics.cluster);
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let reloader = options.config.clone().map(|path| {
        tokio::spawn(reload(
            config_file::Watched::new(path, seen),
            options.reload_interval,
            config_tx,
            metrics.clone(),
        ))
    });

    let health = Arc::new(Health {
        stores: stores.clone(),
        registry,
        shutting_down: AtomicBool::new(false),
    });
    let address = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop_serving = stop_rx.clone();
    let server = tokio::spawn(crate::plain_http::serve(
        listener,
        router(health.clone()),
        crate::plain_http::Limits::default(),
        async move {
            let _ = stop_serving.wait_for(|s| *s).await;
        },
    ));
    info!("listening on http://{address} (GET /healthz, /readyz, /metrics)");

    let election = Election {
        lease_namespace: options
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string()),
        identity: claims::lease_identity(),
    };
    info!(lease_namespace = %election.lease_namespace, identity = %election.identity, "claim controller: competing for the Lease {}", claims::LEASE_NAME);
    let mut controller = tokio::spawn(claims::run_elected(
        client,
        stores,
        config_rx,
        metrics,
        election,
        super::reports::Options::default(),
        stop_rx,
    ));
    let ended = tokio::select! {
        _ = shutdown => None,
        ended = &mut controller => Some(ended),
    };
    health.shutting_down.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    if let Some(ended) = ended {
        let _ = server.await;
        anyhow::bail!("the claim controller stopped on its own: {ended:?}");
    }
    info!("shutting down: handing the Lease back");
    if tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .is_err()
    {
        warn!("the claim controller did not stop within 10 s");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    info!("stopped");
    Ok(())
}
