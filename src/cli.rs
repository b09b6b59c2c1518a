//! The command line: `serve`, `check`, `fix`, `convert`, `certs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::admission;
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
    Serve(Box<crate::server::ServeArgs>),
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
