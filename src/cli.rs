//! The command line: `serve`, `controller`, `check`, `fix`, `convert`,
//! `certs`, `audit`.

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
use crate::model::Object;
use crate::mutate::{self, Mutation};
use crate::policy::{Caller, ClusterFacts, Policy};
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
    /// Run the claim controller: create the claims the webhook's fixes
    /// name, once their workloads are stored.
    Controller(Box<ControllerArgs>),
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
        value_parser = parse_failure_mode,
        default_value = "allow"
    )]
    pub failure_mode: FailureMode,
    #[arg(long, env = "PVC_GUARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "PVC_GUARD_MAX_BODY_BYTES", default_value_t = 6 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time allowed for the TLS handshake and request headers.
    #[arg(long, env = "PVC_GUARD_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub header_timeout: Duration,
    /// Time allowed for a whole request, body included.
    #[arg(long, env = "PVC_GUARD_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the accept queue.
    #[arg(long, env = "PVC_GUARD_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
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
    Ok(Duration::from_secs_f64(secs))
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
        Command::Serve(args) => serve(*args),
        Command::Controller(args) => controller(*args),
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

/// `serve`, refusing the flag that used to run the claim controller in it.
fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    if args.create_claims {
        return Err(
            "--create-claims (PVC_GUARD_CREATE_CLAIMS) was removed: the claim controller runs as `pvc-guard controller`, in a Deployment and with a ServiceAccount of its own (manifests/base/controller.yaml); `createClaims: true` in the config tells the webhook that it runs".into(),
        );
    }
    crate::server::run(args)
}

/// Flags of `pvc-guard controller`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Policy config (YAML): the claim limits and namespace exclusions the
    /// controller applies; reloaded when the file changes.
    #[arg(long, env = "PVC_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Namespace of the Lease the replicas compete for, where no claim is
    /// ever created (default: the kubeconfig's namespace, in a pod its own).
    #[arg(long, env = "PVC_GUARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    #[arg(long, env = "PVC_GUARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Plain HTTP address for GET /healthz, /readyz and /metrics. The
    /// default answers only on this machine; in a pod, listen on 0.0.0.0 so
    /// the kubelet's probes reach it (the shipped Deployment does).
    #[arg(
        long,
        env = "PVC_GUARD_HEALTH_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub health_listen: SocketAddr,
    /// How often the config file is checked for changes.
    #[arg(long, env = "PVC_GUARD_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "2s")]
    pub reload_interval: Duration,
}

fn controller(args: ControllerArgs) -> Result<ExitCode, String> {
    let _log = crate::server::init_logging(args.log_format);
    // One thread: the controller waits on the API server, it does not compute.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    // A bad config is reported before anything else is tried.
    if let Some(path) = &args.config {
        crate::config_file::load(path).map_err(|e| format!("{e:#}"))?;
    }
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.health_listen)
            .await
            .map_err(|e| format!("--health-listen {}: {e}", args.health_listen))?;
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("connecting to the API server (a kubeconfig context, or in a pod its ServiceAccount): {e}")
        })?;
        let options = crate::cluster::controller::Options {
            config: args.config,
            lease_namespace: args.lease_namespace,
            reload_interval: args.reload_interval,
        };
        crate::cluster::controller::run(
            client,
            listener,
            options,
            crate::server::shutdown_signal(),
        )
        .await
        .map_err(|e| format!("{e:#}"))
    })?;
    Ok(ExitCode::SUCCESS)
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
        let findings = match Object::from_value(&doc.object) {
            Ok(Object::Workload(w)) => {
                admission::judge(&policy, &w, None, &facts, Mode::Enforce, Caller::Offline)
                    .map(|j| j.findings)
                    .unwrap_or_default()
            }
            Ok(Object::Other) => Vec::new(),
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
        let m = match Object::from_value(&doc.object) {
            // Owned objects are never mutated: their controller would fight it.
            Ok(Object::Workload(w)) if w.controller_owner().is_none() => {
                mutate::mutate_create(&policy, &w, &facts)
            }
            Ok(_) => Mutation::default(),
            Err(e) => return Err(format!("{}: {e}", doc.source)),
        };
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
                .any(|(k, n, c)| k == "PersistentVolumeClaim" && *n == namespace && c == claim)
            {
                continue;
            }
            claims
                .entry((namespace.clone(), claim.to_string()))
                .or_insert_with(|| spec.manifest(claim, ns));
        }
        let fixed = m.apply_to(&doc.object).map_err(|e| {
            format!(
                "{}: pvc-guard made a patch it cannot apply: {e}",
                doc.source
            )
        })?;
        objects.push(fixed);
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
