//! Requests and connections turned away before (or instead of) a decision:
//! one fixed set of reasons, each counted in `/metrics` and logged with the
//! peer's address at a bounded rate, so a flood of bad requests costs a few
//! log lines a second rather than one line each.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tracing::warn;

/// Why something was refused. The metric label and the log field are
/// [`Refusal::as_str`]; nothing a caller sends becomes a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    BadRequest,
    PayloadTooLarge,
    Timeout,
    UnsupportedMediaType,
    ClientCertificateRequired,
    /// Every evaluation slot and queue place is taken.
    QueueFull,
    /// Request bodies in memory reached --max-buffered-bytes.
    BuffersFull,
    NotFound,
    MethodNotAllowed,
    /// No ClientHello, a failed handshake, or one that took too long.
    TlsHandshake,
    PlainHttp,
    /// A connection that sent no complete request within the header timeout.
    HeaderTimeout,
}

impl Refusal {
    pub const ALL: [Refusal; 12] = [
        Refusal::BadRequest,
        Refusal::PayloadTooLarge,
        Refusal::Timeout,
        Refusal::UnsupportedMediaType,
        Refusal::ClientCertificateRequired,
        Refusal::QueueFull,
        Refusal::BuffersFull,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TlsHandshake,
        Refusal::PlainHttp,
        Refusal::HeaderTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::PayloadTooLarge => "payload_too_large",
            Refusal::Timeout => "timeout",
            Refusal::UnsupportedMediaType => "unsupported_media_type",
            Refusal::ClientCertificateRequired => "client_certificate_required",
            Refusal::QueueFull => "queue_full",
            Refusal::BuffersFull => "buffers_full",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::PlainHttp => "plain_http",
            Refusal::HeaderTimeout => "header_timeout",
        }
    }

    /// The HTTP status of an HTTP refusal.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::BadRequest | Refusal::PlainHttp => StatusCode::BAD_REQUEST,
            Refusal::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Timeout | Refusal::HeaderTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::ClientCertificateRequired => StatusCode::UNAUTHORIZED,
            Refusal::QueueFull | Refusal::BuffersFull => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::TlsHandshake => StatusCode::BAD_REQUEST,
        }
    }

    fn index(self) -> usize {
        Refusal::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every refusal is in ALL")
    }
}

/// Log lines per reason per second; the rest are counted and summed up
/// once a second by [`RefusalLog::summarize`].
pub const LINES_PER_SECOND: u32 = 5;

/// The longest detail a refusal line carries: details can quote what a
/// caller sent (a parse error's position, a TLS alert).
const MAX_DETAIL: usize = 200;

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// A fixed window per reason: at most [`LINES_PER_SECOND`] lines, then
/// counting only.
pub struct RefusalLog {
    windows: [Mutex<Window>; Refusal::ALL.len()],
}

impl Default for RefusalLog {
    fn default() -> Self {
        let now = Instant::now();
        RefusalLog {
            windows: std::array::from_fn(|_| {
                Mutex::new(Window {
                    started: now,
                    logged: 0,
                    suppressed: 0,
                })
            }),
        }
    }
}

impl RefusalLog {
    /// Logs the refusal unless its reason already used this second's lines.
    pub fn log(&self, why: Refusal, peer: Option<SocketAddr>, detail: &str) {
        {
            let mut w = self.windows[why.index()]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if now.duration_since(w.started) >= Duration::from_secs(1) {
                w.started = now;
                w.logged = 0;
            }
            if w.logged >= LINES_PER_SECOND {
                w.suppressed += 1;
                return;
            }
            w.logged += 1;
        }
        let peer = peer.map(|p| p.to_string());
        warn!(
            reason = why.as_str(),
            peer = peer.as_deref().unwrap_or("unknown"),
            detail = bounded(detail, MAX_DETAIL),
            "refused"
        );
    }

    /// One line per reason whose lines were suppressed since the last call;
    /// called once a second.
    pub fn summarize(&self) {
        for why in Refusal::ALL {
            let suppressed = {
                let mut w = self.windows[why.index()]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                std::mem::take(&mut w.suppressed)
            };
            if suppressed > 0 {
                warn!(
                    reason = why.as_str(),
                    suppressed,
                    "refusals not logged one by one (at most {LINES_PER_SECOND} lines a second per reason)"
                );
            }
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_at_a_character_boundary() {
        assert_eq!(bounded("abc", 5), "abc");
        assert_eq!(bounded("abcdef", 3), "abc");
        assert_eq!(bounded("aé", 2), "a");
    }

    #[test]
    fn a_window_logs_a_bounded_number_of_lines_and_counts_the_rest() {
        let log = RefusalLog::default();
        for _ in 0..100 {
            log.log(Refusal::BadRequest, None, "x");
        }
        let w = log.windows[Refusal::BadRequest.index()].lock().unwrap();
        assert_eq!(w.logged, LINES_PER_SECOND);
        assert_eq!(w.suppressed, 100 - u64::from(LINES_PER_SECOND));
    }
}
