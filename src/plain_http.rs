//! The plain-HTTP ports (the webhook's `--metrics-listen`, the claim
//! controller's probes and metrics) with the same clocks as the TLS port:
//! a slow or silent client holds one of a few connection slots for at most
//! `header_timeout` waiting for a request head and `lifetime` overall, so
//! it can neither exhaust file descriptors nor starve kubelet's probes.
//! `axum::serve` has neither limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; scrapers and probes need a handful.
pub const MAX_CONNECTIONS: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From accept (and between keep-alive requests) to a complete head.
    pub header_timeout: Duration,
    /// A connection's whole life, however busy: a client that stops
    /// reading a response cannot hold its slot past it.
    pub lifetime: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            lifetime: Duration::from_secs(60),
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `stop` completes. A connection
/// beyond `max_connections` is closed at once; the ones in flight keep
/// their own clocks.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.lifetime, conn).await;
        });
    }
}
