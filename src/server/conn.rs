//! One connection from accept to close: plain HTTP refused readably, the
//! TLS handshake within the header timeout, HTTP/1.1 or HTTP/2 as ALPN
//! chose, and a watchdog that closes connections that say nothing.
//!
//! Every stage has a clock. hyper-util's auto builder sniffs the first
//! bytes to tell HTTP/1.1 from HTTP/2 and waits for them with no timer, so
//! 1,024 silent connections held every slot; choosing the protocol from
//! ALPN instead lets hyper's HTTP/1.1 header timer run from the first byte,
//! and the watchdog covers HTTP/2, whose handshake has no timer of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::App;
use super::metrics::Held;
use super::refusals::Refusal;

/// Who is calling, set on every request by its connection.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub peer: SocketAddr,
    /// Presented a client certificate that verified against `--client-ca`.
    pub verified: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// The TLS handshake, then the first request's headers.
    pub header: Duration,
    pub request: Duration,
    /// No request in flight for this long closes an HTTP/2 connection.
    pub idle: Duration,
    /// In-flight requests' time to finish on shutdown.
    pub drain: Duration,
}

/// HTTP/2 when ALPN chose `h2`, else HTTP/1.1: RFC 9113 has HTTP/2 over
/// TLS negotiated by ALPN only, so a client that offers no ALPN (Python's
/// http.client, many probes) speaks HTTP/1.1. The header timeout bounds
/// the wait for each HTTP/1.1 request head, including the first and the
/// wait on an idle keep-alive connection. Public so the benchmarks' no-op
/// webhook serves with exactly this.
pub fn http_builder(
    header_timeout: Duration,
    h2: bool,
) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    // Pings every 30 s, unanswered for 20 s: a peer that vanished without a
    // FIN is noticed within a minute even while a request is in flight.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    }
}

/// Serves one accepted TCP connection until it closes, is found idle, or
/// the server stops.
pub async fn serve(
    app: Arc<App>,
    acceptor: TlsAcceptor,
    router: Router,
    stream: TcpStream,
    peer: SocketAddr,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let Some(tls) = handshake(&app, acceptor, stream, peer, timeouts.header).await else {
        return;
    };
    let _open = Held::new(&app.metrics.connections);
    let (_, session) = tls.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let caller = Caller {
        peer,
        verified: session.peer_certificates().is_some_and(|c| !c.is_empty()),
    };
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    let service = tower::ServiceBuilder::new()
        .map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
            r.extensions_mut().insert(caller);
            r
        })
        .map_future(move |answer| {
            let in_flight = tracked.begin();
            async move {
                let answer = answer.await;
                drop(in_flight);
                answer
            }
        })
        .service(router);
    let builder = http_builder(timeouts.header, h2);
    let conn = builder.serve_connection(
        TokioIo::new(tls),
        hyper_util::service::TowerToHyperService::new(service),
    );
    tokio::pin!(conn);
    let grace = tokio::select! {
        ended = conn.as_mut() => {
            // hyper's HTTP/1.1 header timer: silent, or a head too slow.
            let timed_out = ended.as_ref().err().and_then(|e| e.downcast_ref::<hyper::Error>()).is_some_and(hyper::Error::is_timeout);
            if timed_out && activity.requests() == 0 {
                app.note(Refusal::HeaderTimeout, Some(peer), "no request within the header timeout");
            }
            return;
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => timeouts.drain,
        served = activity.idle(timeouts.header, timeouts.idle) => {
            if !served {
                // Nothing to finish; hyper would not act on a graceful
                // shutdown before the HTTP/2 preface anyway.
                app.note(Refusal::HeaderTimeout, Some(peer), "no request within the header timeout");
                return;
            }
            // A request that raced the decision may still finish.
            timeouts.request
        }
    };
    // Graceful: HTTP/2 gets GOAWAY and in-flight streams finish.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, conn).await;
}

/// The TLS handshake within `limit`, or None (counted and logged).
async fn handshake(
    app: &App,
    acceptor: TlsAcceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
    limit: Duration,
) -> Option<TlsStream<TcpStream>> {
    let attempt = async {
        if refuse_plain_http(&mut stream, app, peer).await {
            return None;
        }
        match acceptor.accept(stream).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                app.note(Refusal::TlsHandshake, Some(peer), &e.to_string());
                None
            }
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(tls) => tls,
        Err(_) => {
            app.note(
                Refusal::TlsHandshake,
                Some(peer),
                "no TLS handshake within the header timeout",
            );
            None
        }
    }
}

/// Peeks at the first byte: a TLS handshake starts with 0x16. Plain HTTP
/// gets a readable 400 instead of a TLS alert.
async fn refuse_plain_http(stream: &mut TcpStream, app: &App, peer: SocketAddr) -> bool {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] == 0x16 => false,
        Ok(1) if first[0].is_ascii_alphabetic() => {
            app.note(Refusal::PlainHttp, Some(peer), "plain HTTP on the TLS port");
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 52\r\n\r\nThis port speaks HTTPS; send the request over TLS.\r\n")
                .await;
            let _ = stream.shutdown().await;
            true
        }
        _ => {
            app.note(
                Refusal::TlsHandshake,
                Some(peer),
                "the first byte is not a TLS handshake",
            );
            true
        }
    }
}

/// Requests in flight on one connection, and since when there has been none.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds from `opened` to the end of the last request.
    quiet_since_ms: AtomicU64,
    /// Wakes the watchdog when a request ends.
    ended: Notify,
}

/// One request in flight until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.quiet_since_ms
            .store(a.opened.elapsed().as_millis() as u64, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
        a.ended.notify_one();
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            quiet_since_ms: AtomicU64::new(0),
            ended: Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Completes once no request has been in flight for `first` (before
    /// any request) or `between` (after one); true if any was served.
    /// HTTP/2 pings and settings are not requests: a peer that sends only
    /// those is idle.
    async fn idle(&self, first: Duration, between: Duration) -> bool {
        loop {
            let limit = if self.requests() == 0 { first } else { between };
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                // A request that ends between the load and the wait leaves
                // its notification stored, so none is missed.
                self.ended.notified().await;
                continue;
            }
            let quiet_since =
                self.opened + Duration::from_millis(self.quiet_since_ms.load(Ordering::SeqCst));
            let deadline = quiet_since + limit;
            if Instant::now() >= deadline && self.in_flight.load(Ordering::SeqCst) == 0 {
                return self.requests() > 0;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_after_its_limit_without_requests() {
        let a = Arc::new(Activity::new());
        let started = Instant::now();
        assert!(
            !a.idle(Duration::from_secs(5), Duration::from_secs(90))
                .await
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_the_connection_and_its_end_restarts_the_clock() {
        let a = Arc::new(Activity::new());
        let request = a.begin();
        let idle = a.idle(Duration::from_secs(5), Duration::from_secs(90));
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_secs(200), idle.as_mut())
                .await
                .is_err(),
            "idle while a request is in flight"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(request);
        let ended = Instant::now();
        assert!(idle.await);
        assert_eq!(ended.elapsed(), Duration::from_secs(90));
    }
}
