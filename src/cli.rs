//! The command line: `serve`, `check`, `fix`, `convert`, `certs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::admission::{self, FailureMode};
use crate::config::{Config, Mode};
use crate::manifest;
use crate::mutate;
use crate::policy::{ClusterFacts, Policy};
use crate::report;

#[derive(Parser, Debug)]
#[command(
    name = "pvc-guard",
    version,
    about = "Keeps Kubernetes databases off storage that dies with the pod"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the admission webhook over HTTPS (POST /validate, /mutate).
    Serve(Box<ServeArgs>),
    /// Evaluate manifests offline, as on CREATE in enforce mode.
    Check(CheckArgs),
    /// Print manifests as the mutating webhook would leave them, plus the claims they need.
    Fix(FixArgs),
    /// Print a StatefulSet equivalent to a Deployment, and how to move its data.
    Convert(ConvertArgs),
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(crate::certs::CertsArgs),
    /// Judge what the cluster already stores (kubeconfig context or in-cluster).
    Audit(AuditArgs),
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only this namespace (default: all namespaces).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Output,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PVC_GUARD_LISTEN", default_value = "0.0.0.0:8443")]
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
        value_enum,
        default_value = "allow"
    )]
    pub failure_mode: FailureMode,
    #[arg(long, env = "PVC_GUARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Largest request body accepted, in bytes (the API server's own
    /// request limit is 3 MiB).
    #[arg(long, env = "PVC_GUARD_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
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
    #[arg(long, env = "PVC_GUARD_MAX_BUFFERED_BYTES", value_parser = positive)]
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
    /// Run the claim controller (also `createClaims: true` in the config).
    #[arg(long, env = "PVC_GUARD_CREATE_CLAIMS")]
    pub create_claims: bool,
    /// Namespace of the claim controller's Lease (default: the pod's namespace).
    #[arg(long, env = "PVC_GUARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How often certificate and config files are checked for changes.
    #[arg(long, env = "PVC_GUARD_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "2s")]
    pub reload_interval: Duration,
}

fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number above 0")),
    }
}

/// `500ms`, `5s`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 5s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?} is not a duration such as 5s or 500ms")),
    };
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s:?} is not a duration such as 5s or 500ms"))
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Files, directories (recursively) or - for stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Output,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct FixArgs {
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    #[arg(short = 'f', long = "filename", required = true)]
    pub file: PathBuf,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Reads `--config FILE`, or the built-in policy.
pub fn load_policy(path: Option<&PathBuf>) -> Result<Policy, String> {
    let config = match path {
        None => Config::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Config::from_yaml(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
    };
    Ok(Policy::new(config))
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => crate::server::run(*args),
        Command::Check(args) => check(args),
        Command::Fix(args) => fix(args),
        Command::Convert(args) => convert(args),
        Command::Certs(args) => crate::certs::run(args),
        Command::Audit(args) => audit(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("pvc-guard: {message}");
            ExitCode::from(2)
        }
    }
}

fn object_name(o: &Value) -> (String, String, String) {
    let s = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

fn check(args: CheckArgs) -> Result<ExitCode, String> {
    let policy = load_policy(args.config.as_ref())?;
    let docs = manifest::load(&args.files)?;
    let facts = ClusterFacts::default();
    let mut entries = Vec::new();
    for doc in &docs {
        let (kind, namespace, name) = object_name(&doc.object);
        let findings = match admission::judge(&policy, &doc.object, None, &facts, Mode::Enforce) {
            Ok(Some((findings, _))) => findings,
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", doc.source)),
        };
        entries.push(report::Entry {
            source: doc.source.clone(),
            kind,
            namespace,
            name,
            findings,
        });
    }
    print_report(&entries, args.output, true, false);
    Ok(exit_for(&entries))
}

fn print_report(entries: &[report::Entry], output: Output, files: bool, as_table: bool) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report::json(entries)).expect("JSON serializes")
        ),
        Output::Sarif => println!(
            "{}",
            serde_json::to_string_pretty(&report::sarif(entries, files)).expect("JSON serializes")
        ),
        Output::Text if as_table => print!("{}", report::table(entries)),
        Output::Text => print!("{}", report::text(entries)),
    }
}

/// 1 when something would be denied.
fn exit_for(entries: &[report::Entry]) -> ExitCode {
    if report::any_deny(entries) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn audit(args: AuditArgs) -> Result<ExitCode, String> {
    let policy = load_policy(args.config.as_ref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let entries = runtime.block_on(async {
        let config = kube::Config::infer()
            .await
            .map_err(|e| format!("no kubeconfig context or in-cluster config: {e}"))?;
        let source = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| format!("kube client: {e}"))?;
        let mut progress = |line: &str| eprintln!("audit: {line}");
        crate::cluster::audit::audit(
            &client,
            &policy,
            args.namespace.as_deref(),
            &source,
            &mut progress,
        )
        .await
        .map_err(|e| format!("listing from the API server: {e}"))
    })?;
    print_report(&entries, args.output, false, true);
    Ok(exit_for(&entries))
}

fn fix(args: FixArgs) -> Result<ExitCode, String> {
    let policy = load_policy(args.config.as_ref())?;
    let docs = manifest::load(&args.files)?;
    let facts = ClusterFacts::default();
    let mut objects = Vec::new();
    let mut claims: BTreeMap<(String, String), Value> = BTreeMap::new();
    // Claims the input already holds are not printed twice.
    let given: Vec<(String, String, String)> =
        docs.iter().map(|d| object_name(&d.object)).collect();
    for doc in &docs {
        let m = mutate::mutate_create(&policy, &doc.object, &facts)
            .map_err(|e| format!("{}: {e}", doc.source))?;
        let (_, namespace, name) = object_name(&doc.object);
        for line in &m.unfixed {
            eprintln!("{} {name}: not fixed: {line}", doc.source);
        }
        for line in &m.warnings {
            eprintln!("{} {name}: {line}", doc.source);
        }
        for (claim, spec) in m.record.claims() {
            let ns = (!namespace.is_empty()).then_some(namespace.as_str());
            if given
                .iter()
                .any(|(k, n, c)| k == "PersistentVolumeClaim" && *n == namespace && *c == claim)
            {
                continue;
            }
            claims
                .entry((namespace.clone(), claim.clone()))
                .or_insert_with(|| spec.manifest(&claim, ns));
        }
        objects.push(m.fixed.unwrap_or_else(|| doc.object.clone()));
    }
    objects.extend(claims.into_values());
    print!("{}", manifest::to_yaml(&objects));
    Ok(ExitCode::SUCCESS)
}

fn convert(args: ConvertArgs) -> Result<ExitCode, String> {
    let policy = load_policy(args.config.as_ref())?;
    let docs = manifest::load(std::slice::from_ref(&args.file))?;
    let mut out = String::new();
    let mut converted = 0;
    for doc in &docs {
        if doc.object.get("kind").and_then(Value::as_str) != Some("Deployment") {
            continue;
        }
        let c = crate::convert::convert(&policy, &doc.object)
            .map_err(|e| format!("{}: {e}", doc.source))?;
        if converted > 0 {
            out.push_str("---\n");
        }
        out.push_str(&c);
        converted += 1;
    }
    if converted == 0 {
        return Err(format!("{}: no Deployment to convert", args.file.display()));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
