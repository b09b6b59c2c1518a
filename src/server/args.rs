//! `pvc-guard serve`'s flags, each also an environment variable
//! `PVC_GUARD_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::admission::FailureMode;
use crate::flags::{parse_duration, parse_listen, parse_size, positive};
use crate::logging::LogFormat;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PVC_GUARD_LISTEN", default_value = "0.0.0.0:8443", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// PEM certificate chain; reloaded when the file changes.
    #[arg(long, env = "PVC_GUARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key; reloaded when the file changes.
    #[arg(long, env = "PVC_GUARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Write the CA of the generated self-signed certificate here.
    #[arg(long, env = "PVC_GUARD_WRITE_CA")]
    pub write_ca: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, env = "PVC_GUARD_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Policy config (YAML); reloaded when the file changes.
    #[arg(long, env = "PVC_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Answer for objects the policy cannot read.
    #[arg(
        long,
        env = "PVC_GUARD_FAILURE_MODE",
        value_parser = parse_failure_mode,
        default_value = "allow"
    )]
    pub failure_mode: FailureMode,
    /// Log lines as text, for a person, or JSON, for a log collector.
    #[arg(long, env = "PVC_GUARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Largest request body accepted, in bytes (the API server's own
    /// request limit is 3 MiB).
    #[arg(long, env = "PVC_GUARD_MAX_BODY_BYTES", default_value = "3Mi", value_parser = parse_size)]
    pub max_body_bytes: usize,
    /// Time allowed for the TLS handshake, then for the first request's
    /// headers; an idle HTTP/1.1 keep-alive connection is closed after it too.
    #[arg(long, env = "PVC_GUARD_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub header_timeout: Duration,
    /// Time allowed for a whole request, body included.
    #[arg(long, env = "PVC_GUARD_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// An HTTP/2 connection with no request in flight for this long is
    /// closed (GOAWAY); the API server reconnects when it next needs one.
    #[arg(long, env = "PVC_GUARD_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "90s")]
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    #[arg(long, env = "PVC_GUARD_MAX_CONNECTIONS", default_value_t = 1024, value_parser = positive)]
    pub max_connections: usize,
    /// Evaluations (parse and policy) running at once, each on a thread of
    /// its own. Default: the number of CPUs the process may use.
    #[arg(long, env = "PVC_GUARD_MAX_CONCURRENT_REVIEWS", value_parser = positive)]
    pub max_concurrent_reviews: Option<usize>,
    /// Bytes of request bodies held in memory at once, over all requests
    /// (being read, waiting, or judged); a body that would go over is
    /// answered 503 at once. Counts bytes received, so a client that
    /// declares a length and sends nothing holds none. Default: 4 times
    /// --max-body-bytes.
    #[arg(long, env = "PVC_GUARD_MAX_BUFFERED_BYTES", value_parser = parse_size)]
    pub max_buffered_bytes: Option<usize>,
    /// Requests that may wait for an evaluation; one more is answered 503
    /// at once, and the API server applies the webhook's failurePolicy.
    /// Room for a burst of writes (a typical review takes well under a
    /// millisecond); a wait never outlasts --request-timeout.
    #[arg(long, env = "PVC_GUARD_MAX_QUEUED_REVIEWS", default_value_t = 64)]
    pub max_queued_reviews: usize,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, env = "PVC_GUARD_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "20s")]
    pub drain_timeout: Duration,
    /// Keep watch caches of namespaces, claims, storage classes and
    /// autoscalers for the policy's cluster facts. Default: on in a pod.
    #[arg(long, env = "PVC_GUARD_CLUSTER", overrides_with = "no_cluster")]
    pub cluster: bool,
    /// Never talk to the API server, even in a pod.
    #[arg(long, env = "PVC_GUARD_NO_CLUSTER", overrides_with = "cluster")]
    pub no_cluster: bool,
    /// Removed: the claim controller is `pvc-guard controller`. Accepted
    /// only to refuse it with that message.
    #[arg(long, env = "PVC_GUARD_CREATE_CLAIMS", hide = true)]
    pub create_claims: bool,
    /// Also serve GET /metrics over plain HTTP at this address (`:9090`),
    /// so Prometheus scrapes without the webhook's CA. Off unless set; the
    /// shipped manifests set it.
    #[arg(long, env = "PVC_GUARD_METRICS_LISTEN", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,
    /// How often certificate and config files are checked for changes.
    #[arg(long, env = "PVC_GUARD_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "2s")]
    pub reload_interval: Duration,
}

/// `allow` (admit, with a warning) or `deny`.
pub fn parse_failure_mode(s: &str) -> Result<FailureMode, String> {
    match s {
        "allow" => Ok(FailureMode::Allow),
        "deny" => Ok(FailureMode::Deny),
        _ => Err(format!("{s:?} is not a failure mode: allow or deny")),
    }
}
