//! The command line. Each offline command reads every input it can,
//! reports what it could not (file, document, reason) and goes on; its exit
//! code is the worst it saw: 0 nothing denied, 1 something denied, 2 bad
//! input or usage.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::admission;
use crate::config::{Config, Mode};
use crate::manifest::{self, Document, Problem};
use crate::model::{Object, Workload};
use crate::mutate::{self, Mutation};
use crate::policy::{Caller, ClusterFacts, Policy, Severity};
use crate::report;

/// `eprintln!` without its panic when stderr is gone (`2>&1 | head`):
/// what was found still decides the exit code.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The version, with the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PVC_GUARD_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "pvc-guard",
    version = VERSION,
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
    /// Run the claim controller: create the claims the webhook's fixes
    /// name, once their workloads are stored.
    Controller(Box<ControllerArgs>),
    /// Judge manifests offline, as the validating webhook judges a CREATE.
    Check(CheckArgs),
    /// Print manifests as the mutating webhook leaves them, plus the claims they need.
    Fix(FixArgs),
    /// Print a StatefulSet equivalent to each Deployment, and how to move its data.
    Convert(ConvertArgs),
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(crate::certs::CertsArgs),
    /// Judge what the cluster already stores (kubeconfig context or in-cluster).
    Audit(AuditArgs),
    /// Print the whole install for `kubectl apply --server-side -f -`: the
    /// shipped manifests with a CA and serving certificate (kept from the
    /// cluster when it has them).
    Install(InstallArgs),
    /// Print what to delete for `kubectl delete -f -`, webhook
    /// configurations first; claims pvc-guard created are kept.
    Uninstall(UninstallArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completion(CompletionArgs),
    /// Print the version and the commit it was built from.
    Version,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

/// `audit`'s formats: the reports' and the controller's policy reports.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuditOutput {
    Text,
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
    /// wgpolicyk8s.io/v1alpha2 PolicyReports (YAML), one per namespace, as
    /// `pvc-guard controller` keeps them.
    Policyreport,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ObjectsOutput {
    /// Multi-document YAML that kubectl reads back unchanged.
    Yaml,
    /// One JSON List.
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FixOutput {
    /// The objects as fixed (unchanged documents as they were), then the claims.
    Yaml,
    /// The same, as one JSON List.
    Json,
    /// A Kustomization whose `patches` carry each fix as a JSON Patch with
    /// its target, then the claims: commit those instead of the objects.
    Patch,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Enforce,
    Warn,
    Audit,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Warn => Mode::Warn,
            ModeArg::Audit => Mode::Audit,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Files, directories (recursively: *.yaml, *.yml, *.json) or - for stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Report format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Output,
    /// Policy config (YAML); its mode, rules and limits apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Judge in this mode instead of the config's.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
}

#[derive(clap::Args, Debug)]
pub struct FixArgs {
    /// Files, directories (recursively: *.yaml, *.yml, *.json) or - for stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// What to print.
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    pub output: FixOutput,
    /// Policy config (YAML); `mutate: false` in it means nothing is fixed.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Judge the fixed objects in this mode instead of the config's.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// With -o patch: write an overlay here instead of printing it:
    /// kustomization.yaml, and the claims in pvc-guard-claims.yaml, which
    /// it lists. Existing files are never overwritten.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// With --out-dir: also list this under the overlay's resources (the
    /// base, relative to DIR, e.g. ../../base); repeatable.
    #[arg(long = "resource", value_name = "PATH", requires = "out_dir")]
    pub resources: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Files, directories (recursively) or - for stdin; each Deployment is converted.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// What to print: YAML with the data-moving steps as comments, or a
    /// JSON List (the steps go to stderr).
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    pub output: ObjectsOutput,
    /// Policy config (YAML): the claim size and class of the templates.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The namespace to judge (default: the context's namespace).
    #[arg(long, short = 'n', conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Judge every namespace.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// Report format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: AuditOutput,
    /// Policy config (YAML) to judge with (not the kubeconfig).
    #[arg(long = "config", value_name = "POLICY_FILE")]
    pub config: Option<PathBuf>,
}

/// `install`'s choice of the validating webhook's failure policy.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicyArg {
    /// Reject workload writes while no pvc-guard replica answers.
    #[value(name = "Fail", alias = "fail")]
    Fail,
    /// Let workload writes through unjudged while no replica answers.
    #[value(name = "Ignore", alias = "ignore")]
    Ignore,
}

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// The namespace to install into: every object's, and wherever the
    /// manifests name it (Service DNS names, webhook exclusions, RBAC
    /// subjects, alert queries).
    #[arg(long, short = 'n', default_value = crate::install::SHIPPED_NAMESPACE)]
    pub namespace: String,
    /// The image of the webhook and the claim controller (default: the
    /// manifests' ghcr.io/pvc-guard/pvc-guard:latest).
    #[arg(long)]
    pub image: Option<String>,
    /// The config's mode (default: as shipped, enforce).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// The validating webhook's failurePolicy (default: as shipped, Fail).
    /// The mutating webhook stays Ignore: a fix it could not make is
    /// caught by the validating webhook.
    #[arg(long, value_enum)]
    pub failure_policy: Option<FailurePolicyArg>,
    /// Add manifests/monitoring: a ServiceMonitor, the alerts and the
    /// Grafana dashboard (needs the Prometheus Operator's CRDs).
    #[arg(long)]
    pub monitoring: bool,
    /// The cert-manager variant: cert-manager issues and renews the
    /// certificate (install it first); nothing is generated and the
    /// cluster is not read.
    #[arg(long, conflicts_with = "rotate_certs")]
    pub cert_manager: bool,
    /// A new CA and certificate even when the cluster has them; the
    /// caBundles trust the new CA and the one it replaces, so running pods
    /// stay trusted during the rollout.
    #[arg(long, conflicts_with = "offline")]
    pub rotate_certs: bool,
    /// Do not read the cluster: a new CA and certificate every time.
    #[arg(long)]
    pub offline: bool,
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// The namespace pvc-guard was installed into.
    #[arg(long, short = 'n', default_value = crate::install::SHIPPED_NAMESPACE)]
    pub namespace: String,
    /// Also the objects of `install --monitoring`.
    #[arg(long)]
    pub monitoring: bool,
    /// The objects of `install --cert-manager` (its Issuers and
    /// Certificates) instead of the generated Secret.
    #[arg(long)]
    pub cert_manager: bool,
    /// Also delete the namespace, with everything in it. Left out by
    /// default: a namespace may hold more than pvc-guard put there.
    #[arg(long)]
    pub delete_namespace: bool,
}

#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Is this process the kubectl plugin, an executable named
/// `kubectl-pvc_guard` that kubectl runs for `kubectl pvc-guard`?
fn plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n.starts_with("kubectl-pvc_guard"))
}

/// The command-line parser. Installed as `kubectl-pvc_guard`, pvc-guard
/// is a kubectl plugin, and its help names it `kubectl pvc-guard`.
pub fn command() -> clap::Command {
    let command = Cli::command();
    if plugin() {
        command
            .name("kubectl pvc-guard")
            .bin_name("kubectl pvc-guard")
    } else {
        command
    }
}

/// A completion script for the executable's own name: `pvc-guard`, or
/// `kubectl-pvc_guard` when installed as the plugin (a name with a space,
/// `kubectl pvc-guard`, is not one a shell completes).
fn completion(shell: clap_complete::Shell) -> String {
    let name = if plugin() {
        "kubectl-pvc_guard"
    } else {
        "pvc-guard"
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), name, &mut script);
    let script = String::from_utf8(script).expect("clap_complete writes UTF-8");
    if shell != clap_complete::Shell::Bash {
        return script;
    }
    // clap_complete spells the state of a hyphenated program's subcommand
    // two ways in bash (`pvc__guard__subcmd__fix` where it is found,
    // `pvc__subcmd__guard__subcmd__fix` where its options are offered), so
    // nothing after a subcommand would complete (clap-rs/clap#6421). One
    // spelling throughout; nothing to replace once clap_complete is fixed.
    script.replace(&name.replace('-', "__subcmd__"), &name.replace('-', "__"))
}

/// Writes to stdout. A reader that went away (`| head`) is not an error:
/// the rest of the output is dropped and the exit code still says what
/// was found.
fn emit(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("writing the output: {e}"))
        }
        _ => Ok(()),
    }
}

/// Parses the process's arguments (exits with usage on a bad one).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
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
        Command::Install(args) => install(args),
        Command::Uninstall(args) => uninstall(args),
        Command::Completion(args) => emit(&completion(args.shell)).map(|()| ExitCode::SUCCESS),
        Command::Version => emit(&format!("pvc-guard {VERSION}\n")).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            say!("pvc-guard: {message}");
            ExitCode::from(2)
        }
    }
}

/// `serve`, refusing the flag that used to run the claim controller in it.
fn serve(args: crate::server::ServeArgs) -> Result<ExitCode, String> {
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
    /// Log lines as text, for a person, or JSON, for a log collector.
    #[arg(long, env = "PVC_GUARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::logging::LogFormat,
    /// Plain HTTP address for GET /healthz, /readyz and /metrics. The
    /// default answers only on this machine; in a pod, listen on 0.0.0.0 so
    /// the kubelet's probes reach it (the shipped Deployment does).
    #[arg(
        long,
        env = "PVC_GUARD_HEALTH_LISTEN",
        default_value = "127.0.0.1:8081",
        value_parser = crate::flags::parse_listen
    )]
    pub health_listen: std::net::SocketAddr,
    /// How often the config file is checked for changes.
    #[arg(long, env = "PVC_GUARD_RELOAD_INTERVAL", value_parser = crate::flags::parse_duration, default_value = "2s")]
    pub reload_interval: std::time::Duration,
}

fn controller(args: ControllerArgs) -> Result<ExitCode, String> {
    let _log = crate::logging::init(args.log_format);
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

/// What the offline commands know of a cluster: the ConfigMaps in the same
/// input, per namespace (a server's config file mounted from one can make
/// it durable). Nothing else: no labels, claims or autoscalers.
struct OfflineFacts {
    by_namespace: HashMap<String, ClusterFacts>,
    none: ClusterFacts,
}

impl OfflineFacts {
    fn new(docs: &[manifest::Document]) -> OfflineFacts {
        let mut by_namespace: HashMap<String, ClusterFacts> = HashMap::new();
        for doc in docs {
            let (kind, namespace, name) = manifest::object_id(&doc.object);
            let Some(data) = doc.object.get("data").and_then(Value::as_object) else {
                continue;
            };
            if kind != "ConfigMap" || doc.object.get("apiVersion") != Some(&json!("v1")) {
                continue;
            }
            let files = data
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
            by_namespace
                .entry(namespace)
                .or_default()
                .config_maps
                .get_or_insert_with(Default::default)
                .insert(name, files);
        }
        OfflineFacts {
            by_namespace,
            none: ClusterFacts::default(),
        }
    }

    fn of(&self, object: &Value) -> &ClusterFacts {
        let (_, namespace, _) = manifest::object_id(object);
        self.by_namespace.get(&namespace).unwrap_or(&self.none)
    }
}

/// Notes about skipped files and unreadable documents, on stderr.
fn note_problems(skipped: &[Problem], unreadable: &[Problem]) {
    for p in skipped {
        say!("note: {}: skipped, {}", p.source, p.reason);
    }
    for p in unreadable {
        say!("error: {}: {}", p.source, p.reason);
    }
}

/// 2 for bad input, else 1 when something is denied, else 0.
fn worst(unreadable: usize, denied: usize) -> ExitCode {
    if unreadable > 0 {
        ExitCode::from(2)
    } else if denied > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The view of a document, or why it cannot be judged.
fn view(doc: &Document) -> Result<Option<Workload>, String> {
    match Object::from_value(&doc.object) {
        Ok(Object::Workload(w)) => Ok(Some(*w)),
        Ok(Object::Other) => Ok(None),
        Err(e) => Err(e.0),
    }
}

/// Findings for one workload as the validating webhook would give them on
/// CREATE, in `mode` (audit mode reports them as warnings: nothing blocks).
fn judge(
    policy: &Policy,
    w: &Workload,
    facts: &ClusterFacts,
    mode: Mode,
) -> Vec<crate::policy::Finding> {
    let mode = if mode == Mode::Audit {
        Mode::Warn
    } else {
        mode
    };
    admission::judge(policy, w, None, facts, mode, Caller::Offline)
        .map(|j| j.findings)
        .unwrap_or_default()
}

fn check(args: CheckArgs) -> Result<ExitCode, String> {
    let policy = load_policy(args.config.as_ref())?;
    let mode = args.mode.map_or(policy.config.mode, Mode::from);
    let loaded = manifest::load(&args.files);
    let offline = OfflineFacts::new(&loaded.documents);
    let mut unreadable = loaded.unreadable;
    let mut entries = Vec::new();
    let mut fixable = 0;
    for doc in &loaded.documents {
        let (kind, namespace, name) = manifest::object_id(&doc.object);
        let findings = match view(doc) {
            Ok(Some(w)) => {
                let facts = offline.of(&doc.object);
                let findings = judge(&policy, &w, facts, mode);
                if w.controller_owner().is_none()
                    && policy.config.mutate
                    && !mutate::mutate_create(&policy, &w, facts).patch.is_empty()
                {
                    fixable += 1;
                }
                findings
            }
            Ok(None) => Vec::new(),
            Err(reason) => {
                unreadable.push(Problem {
                    source: doc.source.clone(),
                    reason,
                });
                continue;
            }
        };
        entries.push(report::Entry {
            source: doc.source.clone(),
            kind,
            namespace,
            name,
            findings,
        });
    }
    note_problems(&loaded.skipped, &unreadable);
    print_report(&entries, &unreadable, args.output, true, false)?;
    let denied = entries.iter().filter(|e| e.decision() == "deny").count();
    if args.output == Output::Text {
        let warned = entries.iter().filter(|e| e.decision() == "warn").count();
        summary(
            entries.len() + unreadable.len(),
            denied,
            warned,
            format!("{fixable} fixable by pvc-guard fix"),
            unreadable.len(),
        );
    }
    Ok(worst(unreadable.len(), denied))
}

/// The closing line of text output, on stderr.
fn summary(objects: usize, denied: usize, warned: usize, fixed: String, unreadable: usize) {
    if objects == 0 {
        say!("no objects in the input");
    } else {
        say!(
            "{objects} objects: {denied} denied, {warned} warned, {fixed}, {unreadable} unreadable"
        );
    }
}

fn print_report(
    entries: &[report::Entry],
    unreadable: &[Problem],
    output: Output,
    files: bool,
    as_table: bool,
) -> Result<(), String> {
    let json = |v: Value| serde_json::to_string_pretty(&v).expect("JSON serializes") + "\n";
    emit(&match output {
        Output::Json => json(report::json(entries, unreadable)),
        Output::Sarif => json(report::sarif(entries, unreadable, files)),
        Output::Text if as_table => report::table(entries),
        Output::Text => report::text(entries),
    })
}

/// The API server's address and credentials as kubectl finds them:
/// `--kubeconfig`, else `$KUBECONFIG`, else ~/.kube/config, else the pod's
/// ServiceAccount; `--context`, else the current context.
async fn kube_config(
    kubeconfig: Option<&PathBuf>,
    context: Option<&String>,
) -> Result<kube::Config, String> {
    let options = kube::config::KubeConfigOptions {
        context: context.cloned(),
        ..Default::default()
    };
    let unusable = |e: &dyn std::fmt::Display| {
        format!("no usable kubeconfig context or in-cluster config: {e}")
    };
    Ok(match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| unusable(&e))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| unusable(&e))?,
        None => kube::Config::infer().await.map_err(|e| unusable(&e))?,
    })
}

fn audit(args: AuditArgs) -> Result<ExitCode, String> {
    let policy = load_policy(args.config.as_ref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let audited = runtime.block_on(async {
        let config = kube_config(args.kubeconfig.as_ref(), args.context.as_ref()).await?;
        let url = config.cluster_url.to_string();
        let namespace = if args.all_namespaces {
            None
        } else {
            Some(
                args.namespace
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone()),
            )
        };
        let client = kube::Client::try_from(config).map_err(|e| format!("kube client: {e}"))?;
        let mut progress = |line: &str| say!("audit: {line}");
        crate::cluster::audit::audit(&client, &policy, namespace.as_deref(), &url, &mut progress)
            .await
            .map_err(|e| crate::cluster::audit::describe_error(&e, &url))
    })?;
    let entries = &audited.entries;
    let output = match args.output {
        AuditOutput::Text => Output::Text,
        AuditOutput::Json => Output::Json,
        AuditOutput::Sarif => Output::Sarif,
        AuditOutput::Policyreport => {
            use crate::report::policy_report::{self, ReportApi, Timestamp};
            let docs = policy_report::documents(
                ReportApi::PolicyReport,
                &audited.subjects,
                Timestamp::now(),
            );
            if docs.is_empty() {
                eprintln!("audit: no workloads to report on");
            }
            emit(&manifest::to_yaml(&docs))?;
            let denied = entries.iter().filter(|e| e.decision() == "deny").count();
            return Ok(worst(0, denied));
        }
    };
    print_report(entries, &[], output, false, true)?;
    let denied = entries.iter().filter(|e| e.decision() == "deny").count();
    Ok(worst(0, denied))
}

/// What one document became under `fix`.
struct Fixed {
    doc: usize,
    mutation: Mutation,
    after: Value,
}

fn fix(args: FixArgs) -> Result<ExitCode, String> {
    if args.out_dir.is_some() && args.output != FixOutput::Patch {
        return Err("--out-dir writes an overlay: it needs -o patch".into());
    }
    let policy = load_policy(args.config.as_ref())?;
    let mode = args.mode.map_or(policy.config.mode, Mode::from);
    let loaded = manifest::load(&args.files);
    let docs = &loaded.documents;
    let offline = OfflineFacts::new(docs);
    let mut unreadable = loaded.unreadable.clone();
    let mut fixed: Vec<Fixed> = Vec::new();
    let (mut denied, mut warned) = (0, 0);
    for (i, doc) in docs.iter().enumerate() {
        let w = match view(doc) {
            Ok(w) => w,
            Err(reason) => {
                unreadable.push(Problem {
                    source: doc.source.clone(),
                    reason,
                });
                // Printed as it came: `fix -f dir > out` must not lose it.
                fixed.push(Fixed {
                    doc: i,
                    mutation: Mutation::default(),
                    after: doc.object.clone(),
                });
                continue;
            }
        };
        // Owned objects are never mutated: their controller would fight it.
        let mutation = match &w {
            Some(w) if w.controller_owner().is_none() && policy.config.mutate => {
                mutate::mutate_create(&policy, w, offline.of(&doc.object))
            }
            _ => Mutation::default(),
        };
        let after = mutation.apply_to(&doc.object).map_err(|e| {
            format!(
                "{}: pvc-guard made a patch it cannot apply: {e}",
                doc.source
            )
        })?;
        let (_, _, name) = manifest::object_id(&doc.object);
        for line in &mutation.unfixed {
            say!("{} {name}: not fixed: {line}", doc.source);
        }
        for line in &mutation.warnings {
            say!("{} {name}: {line}", doc.source);
        }
        if let Some(w) = &w {
            let view_after = if mutation.patch.is_empty() {
                None
            } else {
                match Object::from_value(&after) {
                    Ok(Object::Workload(f)) => Some(*f),
                    _ => None,
                }
            };
            let findings = judge(
                &policy,
                view_after.as_ref().unwrap_or(w),
                offline.of(&doc.object),
                mode,
            );
            if findings.iter().any(|f| f.severity == Severity::Deny) {
                denied += 1;
                for f in findings.iter().filter(|f| f.severity == Severity::Deny) {
                    say!("{}: still denied: {}", doc.source, f.short());
                }
            } else if !findings.is_empty() {
                warned += 1;
            }
        }
        fixed.push(Fixed {
            doc: i,
            mutation,
            after,
        });
    }
    note_problems(&loaded.skipped, &unreadable);
    let claims = claims_needed(docs, &fixed);
    let changed = fixed
        .iter()
        .filter(|f| !f.mutation.patch.is_empty())
        .count();
    match args.output {
        FixOutput::Yaml => emit(&fix_yaml(docs, &fixed, &claims))?,
        FixOutput::Json => {
            let mut objects: Vec<Value> = fixed.iter().map(|f| f.after.clone()).collect();
            objects.extend(claims.into_values());
            emit(&manifest::to_json(&objects))?;
        }
        FixOutput::Patch => match &args.out_dir {
            Some(dir) => write_overlay(dir, &args.resources, docs, &fixed, claims)?,
            None => {
                if !claims.is_empty() {
                    say!(
                        "kustomize reads only the first document of a kustomization.yaml: put the {} claim(s) after it in a file it lists under resources, or use --out-dir",
                        claims.len()
                    );
                }
                emit(&fix_patches(docs, &fixed, &[], claims))?
            }
        },
    }
    if args.output != FixOutput::Json {
        summary(
            docs.len() + loaded.unreadable.len(),
            denied,
            warned,
            format!("{changed} fixed"),
            unreadable.len(),
        );
    }
    Ok(worst(unreadable.len(), denied))
}

/// The claims the fixes name that the input does not already hold.
fn claims_needed(docs: &[Document], fixed: &[Fixed]) -> BTreeMap<(String, String), Value> {
    let given: Vec<(String, String, String)> = docs
        .iter()
        .map(|d| manifest::object_id(&d.object))
        .collect();
    let mut claims = BTreeMap::new();
    for f in fixed {
        let (_, namespace, _) = manifest::object_id(&docs[f.doc].object);
        for (claim, spec) in f.mutation.record.claims() {
            if given
                .iter()
                .any(|(k, n, c)| k == "PersistentVolumeClaim" && *n == namespace && c == claim)
            {
                continue;
            }
            let ns = (!namespace.is_empty()).then_some(namespace.as_str());
            claims
                .entry((namespace.clone(), claim.to_string()))
                .or_insert_with(|| spec.manifest(claim, ns));
        }
    }
    claims
}

/// The input as YAML: a document nothing changed keeps its own text
/// (comments included), a fixed one is written anew below the comments
/// that opened it, then the claims. A file with nothing to fix comes out
/// byte for byte as it went in.
fn fix_yaml(
    docs: &[Document],
    fixed: &[Fixed],
    claims: &BTreeMap<(String, String), Value>,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    for f in fixed {
        let doc = &docs[f.doc];
        parts.push(match (&doc.text, f.mutation.patch.is_empty()) {
            (Some(text), true) => text.clone(),
            (Some(text), false) => {
                manifest::preamble(text).to_string()
                    + &manifest::to_yaml(std::slice::from_ref(&f.after))
            }
            (None, _) => manifest::to_yaml(std::slice::from_ref(&f.after)),
        });
    }
    parts.extend(
        claims
            .values()
            .map(|c| manifest::to_yaml(std::slice::from_ref(c))),
    );
    let mut out = String::new();
    for part in &parts {
        if !out.is_empty() {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            if !manifest::opens_document(part) {
                out.push_str("---\n");
            }
        }
        out.push_str(part);
    }
    out
}

/// The file of an overlay written by `fix -o patch --out-dir` that holds
/// the claims.
const OVERLAY_CLAIMS: &str = "pvc-guard-claims.yaml";

/// `fix -o patch --out-dir`: the Kustomization (listing `resources` and the
/// claims file) and the claims, each in a file of its own, so no claim
/// hides in a second document kustomize never reads. A file already there
/// is someone's work: refused, never overwritten.
fn write_overlay(
    dir: &Path,
    resources: &[String],
    docs: &[Document],
    fixed: &[Fixed],
    claims: BTreeMap<(String, String), Value>,
) -> Result<(), String> {
    let mut listed = resources.to_vec();
    let claims_text = (!claims.is_empty()).then(|| {
        listed.push(OVERLAY_CLAIMS.to_string());
        manifest::to_yaml(&claims.into_values().collect::<Vec<_>>())
    });
    let kustomization = fix_patches(docs, fixed, &listed, BTreeMap::new());
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = vec![("kustomization.yaml", kustomization)];
    if let Some(text) = claims_text {
        files.push((OVERLAY_CLAIMS, text));
    }
    for (name, _) in &files {
        let path = dir.join(name);
        if path.exists() {
            return Err(format!(
                "{} exists: pvc-guard does not overwrite it; remove it or choose another --out-dir",
                path.display()
            ));
        }
    }
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        say!("wrote {}", path.display());
    }
    Ok(())
}

/// A Kustomization listing `resources` and carrying each fix as a JSON
/// Patch with its target, then the claims as documents of their own.
fn fix_patches(
    docs: &[Document],
    fixed: &[Fixed],
    resources: &[String],
    claims: BTreeMap<(String, String), Value>,
) -> String {
    let patches: Vec<Value> = fixed
        .iter()
        .filter(|f| !f.mutation.patch.is_empty())
        .map(|f| {
            let o = &docs[f.doc].object;
            let (kind, namespace, name) = manifest::object_id(o);
            let api_version = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let mut target =
                json!({"group": group, "version": version, "kind": kind, "name": name});
            if !namespace.is_empty() {
                target["namespace"] = json!(namespace);
            }
            let ops: Vec<Value> =
                serde_json::from_slice(&f.mutation.patch_json()).expect("a JSON patch reads back");
            json!({"target": target, "patch": manifest::to_yaml(&[Value::Array(ops)])})
        })
        .collect();
    let mut kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "patches": patches,
    });
    if !resources.is_empty() {
        kustomization["resources"] = json!(resources);
    }
    let mut objects = vec![kustomization];
    objects.extend(claims.into_values());
    manifest::to_yaml(&objects)
}

fn convert(args: ConvertArgs) -> Result<ExitCode, String> {
    let policy = load_policy(args.config.as_ref())?;
    let loaded = manifest::load(&args.files);
    let mut unreadable = loaded.unreadable;
    let mut objects = Vec::new();
    let mut yaml = String::new();
    for doc in &loaded.documents {
        if doc.object.get("kind").and_then(Value::as_str) != Some("Deployment") {
            continue;
        }
        // One Deployment that cannot be converted is reported; the others
        // still are.
        let c = match crate::convert::convert(&policy, &doc.object) {
            Ok(c) => c,
            Err(reason) => {
                unreadable.push(Problem {
                    source: doc.source.clone(),
                    reason,
                });
                continue;
            }
        };
        match args.output {
            ObjectsOutput::Yaml => {
                if !yaml.is_empty() {
                    yaml.push_str("---\n");
                }
                yaml.push_str(&c.steps);
                yaml.push_str(&manifest::to_yaml(&c.objects));
            }
            ObjectsOutput::Json => {
                let _ = std::io::Write::write_all(&mut std::io::stderr(), c.steps.as_bytes());
                objects.extend(c.objects);
            }
        }
    }
    note_problems(&loaded.skipped, &unreadable);
    if objects.is_empty() && yaml.is_empty() {
        return Err(if unreadable.is_empty() {
            "the input holds no Deployment to convert".into()
        } else {
            "no readable Deployment to convert".into()
        });
    }
    match args.output {
        ObjectsOutput::Yaml => emit(&yaml)?,
        ObjectsOutput::Json => emit(&manifest::to_json(&objects))?,
    }
    Ok(worst(unreadable.len(), 0))
}

/// What `install` found of an earlier install: the Secret's certificate
/// and key, and the CA bundle its validating webhook trusts.
struct Found {
    cert_pem: String,
    key_pem: String,
    bundle_pem: Option<String>,
}

/// The certificate of an earlier install in `namespace`, if there is one.
async fn installed_certificate(args: &InstallArgs) -> Result<Option<Found>, String> {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Secret;
    const HINT: &str = "pass --offline to generate a new certificate without reading the cluster";
    let config = kube_config(args.kubeconfig.as_ref(), args.context.as_ref())
        .await
        .map_err(|e| format!("{e}; {HINT}"))?;
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| format!("kube client: {e}; {HINT}"))?;
    let failed = |e: kube::Error| {
        format!(
            "looking for an existing certificate: {}; {HINT}",
            crate::cluster::audit::describe_error(&e, &url)
        )
    };
    // Install labels its namespace pvc-guard.io/ignore=true and restricted
    // Pod Security: never a namespace that holds someone else's workloads.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    if let Some(existing) = namespaces.get_opt(&args.namespace).await.map_err(failed)? {
        let ours = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .is_some_and(|v| v == "pvc-guard");
        if !ours {
            return Err(format!(
                "namespace {} exists and is not pvc-guard's (no label app.kubernetes.io/name=pvc-guard): install would label it pvc-guard.io/ignore=true, taking its workloads out of pvc-guard's reach; choose a namespace of its own with --namespace",
                args.namespace
            ));
        }
    }
    let hooks: kube::Api<ValidatingWebhookConfiguration> = kube::Api::all(client.clone());
    let hook = hooks
        .get_opt(crate::install::WEBHOOK_CONFIGURATION)
        .await
        .map_err(failed)?;
    // The webhook configurations and cluster roles have fixed names: a
    // second install elsewhere would take them from the first.
    if let Some(elsewhere) = hook
        .iter()
        .flat_map(|c| c.webhooks.iter().flatten())
        .filter_map(|w| w.client_config.service.as_ref())
        .map(|s| s.namespace.as_str())
        .find(|ns| *ns != args.namespace)
    {
        return Err(format!(
            "pvc-guard is installed in namespace {elsewhere} (ValidatingWebhookConfiguration {} calls it there): run install with --namespace {elsewhere}, or uninstall that one first",
            crate::install::WEBHOOK_CONFIGURATION
        ));
    }
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, &args.namespace);
    let Some(secret) = secrets
        .get_opt(crate::install::SECRET)
        .await
        .map_err(failed)?
    else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let bundle_pem = hook
        .and_then(|c| {
            c.webhooks?
                .into_iter()
                .find_map(|w| w.client_config.ca_bundle)
        })
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|b| !b.trim().is_empty());
    Ok(Some(Found {
        cert_pem: text("tls.crt"),
        key_pem: text("tls.key"),
        bundle_pem,
    }))
}

fn install(args: InstallArgs) -> Result<ExitCode, String> {
    use crate::install::{Certificates, FailurePolicy, Options, SECRET};
    let options = Options {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        mode: args.mode.map(Mode::from),
        failure_policy: args.failure_policy.map(|p| match p {
            FailurePolicyArg::Fail => FailurePolicy::Fail,
            FailurePolicyArg::Ignore => FailurePolicy::Ignore,
        }),
        monitoring: args.monitoring,
        cert_manager: args.cert_manager,
    };
    // Checked before the cluster is asked anything.
    crate::install::uninstall(&options).map_err(|e| e.to_string())?;
    let ns = &args.namespace;
    let certs = if args.cert_manager {
        None
    } else if args.offline {
        say!("install: --offline: a new CA and serving certificate");
        Some(Certificates::generate(ns).map_err(|e| e.to_string())?)
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the runtime: {e}"))?;
        let found = runtime.block_on(installed_certificate(&args))?;
        Some(match found {
            None => {
                say!(
                    "install: no Secret {ns}/{SECRET} in the cluster: a new CA and serving certificate"
                );
                Certificates::generate(ns)
            }
            Some(found) if args.rotate_certs => {
                say!(
                    "install: --rotate-certs: a new CA and serving certificate; the caBundles trust the new CA and the previous one"
                );
                Certificates::rotate(
                    ns,
                    found.bundle_pem.as_deref().unwrap_or(""),
                    &found.cert_pem,
                )
            }
            Some(found) => {
                let kept = match &found.bundle_pem {
                    Some(bundle) => {
                        Certificates::existing(ns, &found.cert_pem, &found.key_pem, bundle)
                    }
                    None => Err(crate::install::InstallError::Existing {
                        namespace: ns.clone(),
                        reason: format!(
                            "has no CA bundle beside it (ValidatingWebhookConfiguration {} has no caBundle)",
                            crate::install::WEBHOOK_CONFIGURATION
                        ),
                    }),
                };
                if kept.is_ok() {
                    say!(
                        "install: keeping the certificate of Secret {ns}/{SECRET} and the webhooks' caBundle"
                    );
                }
                kept
            }
        }
        .map_err(|e| e.to_string())?)
    };
    // A kept certificate is renewed by nobody: say so while there is time.
    if let Some(days) = certs
        .as_ref()
        .and_then(|c| crate::install::days_left(&c.cert_pem))
        .filter(|d| *d < 30)
    {
        say!(
            "install: warning: the serving certificate expires in {days} days; run install with --rotate-certs"
        );
    }
    let mut objects =
        crate::install::install(&options, certs.as_ref()).map_err(|e| e.to_string())?;
    if args.rotate_certs {
        // The webhook configurations first, trusting the old CA and the new
        // one, then the Secret: the API server trusts the new certificate
        // before any pod can serve it, whatever fails in between.
        let (secrets, rest): (Vec<Value>, Vec<Value>) =
            objects.into_iter().partition(|o| o["kind"] == "Secret");
        objects = rest;
        objects.extend(secrets);
    }
    let header = format!(
        "# pvc-guard {VERSION}: the whole install in namespace {ns}, for\n\
         #   kubectl apply --server-side -f -\n\
         # Run `pvc-guard install` again to upgrade: it keeps the certificate it finds.\n"
    );
    emit(&(header + &manifest::to_yaml(&objects)))?;
    Ok(ExitCode::SUCCESS)
}

fn uninstall(args: UninstallArgs) -> Result<ExitCode, String> {
    let options = crate::install::Options {
        namespace: args.namespace.clone(),
        monitoring: args.monitoring,
        cert_manager: args.cert_manager,
        ..Default::default()
    };
    let mut objects = crate::install::uninstall(&options).map_err(|e| e.to_string())?;
    if !args.delete_namespace {
        objects.retain(|o| o["kind"] != "Namespace");
    }
    let namespace_line = if args.delete_namespace {
        "the Namespace goes last, with everything in it"
    } else {
        "the Namespace stays (--delete-namespace deletes it)"
    };
    let header = format!(
        "# pvc-guard {VERSION}: what `pvc-guard install` created in namespace {}, for\n\
         #   kubectl delete --ignore-not-found -f -\n\
         # The webhook configurations go first, so the API server stops calling\n\
         # the webhook before its server goes; {namespace_line}.\n\
         # PersistentVolumeClaims pvc-guard created for workloads are kept on\n\
         # purpose: they hold the databases' data. List them with\n\
         #   kubectl get pvc -A -l app.kubernetes.io/managed-by=pvc-guard\n",
        args.namespace
    );
    emit(&(header + &manifest::to_yaml(&objects)))?;
    Ok(ExitCode::SUCCESS)
}
