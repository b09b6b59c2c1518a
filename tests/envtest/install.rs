//! pvc-guard installed as a user installs it: `pvc-guard certs`, the
//! self-signed overlay rendered by `kubectl kustomize` and applied, and the
//! server run as the rendered Deployment says (its args, env, mounted
//! Secret and ConfigMap, its ServiceAccount's token), as a process on
//! 127.0.0.1 instead of a pod.
//!
//! What differs from a cluster, and why:
//! - the webhook configurations call `url: https://127.0.0.1:PORT/...` (no
//!   Service can be reached here), with the overlay's caBundle; the serving
//!   certificate carries 127.0.0.1 (`pvc-guard certs --ip 127.0.0.1`);
//! - each test registers its own copy of the two webhook configurations,
//!   named after the test and calling its own server, whose
//!   namespaceSelector gets one more requirement, [`TEST_LABEL`] In [test]:
//!   every shipped field stays as rendered, and tests can stop, restart and
//!   count their servers without touching each other's requests;
//! - the Deployments, Service and PodDisruptionBudget are applied but
//!   nothing runs them (no scheduler or kubelet): the webhook's pods and the
//!   claim controller's are processes started from them here;
//! - the NetworkPolicies are stored but nothing enforces them (no network
//!   plugin); the ValidatingAdmissionPolicy is enforced, by the API server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ControlPlane, Run, TEST_LABEL, control_plane, eventually, https_get};
use crate::common::{BIN, Server, copy_dir};

/// The repository's manifests/ copied beside a certs/ that `pvc-guard
/// certs` wrote, laid out as in the repository, so the self-signed overlay
/// (which includes ../../../certs) renders from them.
pub struct Layout {
    pub root: tempfile::TempDir,
}

impl Layout {
    pub fn new(cp: &ControlPlane) -> Layout {
        let root = cp.tempdir();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests"),
            &root.path().join("manifests"),
        );
        let layout = Layout { root };
        layout.certs(false);
        layout
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.root.path().join("certs")
    }

    /// `pvc-guard certs --out certs --ip 127.0.0.1`, and `--force` to rotate.
    pub fn certs(&self, force: bool) {
        let out = self.certs_dir();
        let mut args = vec!["certs", "--out", out.to_str().unwrap(), "--ip", "127.0.0.1"];
        if force {
            args.push("--force");
        }
        let (code, _, err) = crate::common::run_cli(&args, None);
        assert_eq!(code, 0, "pvc-guard {}: {err}", args.join(" "));
    }

    /// `kubectl kustomize manifests/overlays/self-signed`.
    pub fn render(&self, cp: &ControlPlane) -> Vec<Value> {
        let overlay = self.root.path().join("manifests/overlays/self-signed");
        let run = cp
            .kubectl(&["kustomize", overlay.to_str().unwrap()])
            .ok("kubectl kustomize the self-signed overlay");
        serde_yaml_ng::Deserializer::from_str(&run.stdout)
            .map(|doc| Value::deserialize(doc).expect("kustomize prints YAML"))
            .filter(|v| !v.is_null())
            .collect()
    }
}

const WEBHOOK_KINDS: [&str; 2] = [
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
];

/// The one object of `kind` named `name` in rendered manifests.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the rendered manifests hold no {kind} {name}"))
}

/// Base64 as kustomize prints it (long values are folded across lines).
fn decode(b64: &str) -> Vec<u8> {
    let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .expect("base64")
}

/// The CA bundle the rendered webhook configurations trust.
pub fn ca_bundle(docs: &[Value]) -> String {
    let hook = &find(docs, WEBHOOK_KINDS[0], "pvc-guard")["webhooks"][0];
    String::from_utf8(decode(
        hook["clientConfig"]["caBundle"].as_str().expect("caBundle"),
    ))
    .expect("PEM")
}

/// The rendered webhook configurations, renamed `name`, calling
/// `https://127.0.0.1:port` at the shipped paths, and scoped to the
/// namespaces labelled [`TEST_LABEL`]=`test`. Nothing else changes.
pub fn webhook_configurations(docs: &[Value], name: &str, port: u16, test: &str) -> Vec<Value> {
    WEBHOOK_KINDS
        .iter()
        .map(|kind| {
            let mut config = find(docs, kind, "pvc-guard").clone();
            config["metadata"]["name"] = json!(name);
            for hook in config["webhooks"].as_array_mut().unwrap() {
                let client = &mut hook["clientConfig"];
                let path = client["service"]["path"]
                    .as_str()
                    .expect("a path")
                    .to_string();
                let bundle = client["caBundle"].clone();
                *client = json!({
                    "url": format!("https://127.0.0.1:{port}{path}"),
                    "caBundle": bundle,
                });
                hook["namespaceSelector"]["matchExpressions"]
                    .as_array_mut()
                    .expect("the shipped namespaceSelector has matchExpressions")
                    .push(json!({"key": TEST_LABEL, "operator": "In", "values": [test]}));
            }
            config
        })
        .collect()
}

/// What a pod's process is, by its subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `pvc-guard serve`: HTTPS on `--listen`.
    Webhook,
    /// `pvc-guard controller`: plain HTTP on `--health-listen`.
    Controller,
}

/// A process started as the rendered Deployment's pod would be: the
/// container's command line with the mount paths moved to local copies of
/// its Secret and ConfigMap volumes, its env (the downward API filled in),
/// a kubeconfig holding a token of its ServiceAccount, and its address on
/// 127.0.0.1 (`--listen 127.0.0.1:PORT --cluster` for the webhook,
/// `--health-listen 127.0.0.1:PORT` for the controller).
pub struct Pod {
    cp: &'static ControlPlane,
    pub name: String,
    pub port: u16,
    pub role: Role,
    /// The bundle that verifies its certificate (the webhooks' caBundle).
    pub ca_pem: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Volume name to local mount directory.
    mounts: BTreeMap<String, PathBuf>,
    /// Holds the mounted volumes; removed when the pod is dropped.
    volumes: tempfile::TempDir,
    generation: u32,
    server: Option<Server>,
}

impl Pod {
    /// Starts a pod of Deployment `deployment` in `docs`, named `name`, and
    /// waits until /readyz says its cluster caches have synced.
    pub fn start(cp: &'static ControlPlane, docs: &[Value], deployment: &str, name: &str) -> Pod {
        let d = find(docs, "Deployment", deployment);
        let namespace = d["metadata"]["namespace"].as_str().unwrap();
        let spec = &d["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let volumes = cp.tempdir();
        let role = match container["args"][0].as_str() {
            Some("serve") => Role::Webhook,
            Some("controller") => Role::Controller,
            other => panic!("the harness runs serve and controller, not {other:?}"),
        };
        let mut pod = Pod {
            cp,
            name: name.to_string(),
            port: 0,
            role,
            ca_pem: ca_bundle(docs),
            args: Vec::new(),
            envs: Vec::new(),
            mounts: BTreeMap::new(),
            volumes,
            generation: 0,
            server: None,
        };
        let mut mount_paths = Vec::new();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = mount["name"].as_str().unwrap();
            let dir = pod.volumes.path().join(volume);
            std::fs::create_dir_all(&dir).unwrap();
            pod.mounts.insert(volume.to_string(), dir.clone());
            mount_paths.push((mount["mountPath"].as_str().unwrap().to_string(), dir));
        }
        pod.project(docs, spec);

        // The command is the image's pvc-guard binary, which is ours here.
        assert_eq!(
            container["command"]
                .as_array()
                .map(|c| c.len() == 1 && c[0].as_str().is_some_and(|b| b.ends_with("/pvc-guard"))),
            Some(true),
            "the Deployment's command changed: {}",
            container["command"]
        );
        let mut args = container["args"].as_array().expect("args").iter();
        while let Some(arg) = args.next() {
            let arg = arg.as_str().unwrap();
            // Its address is the harness's to choose.
            if (role == Role::Controller && arg == "--health-listen")
                || (role == Role::Webhook && arg == "--metrics-listen")
            {
                args.next();
                continue;
            }
            let local = mount_paths.iter().find_map(|(path, dir)| {
                arg.strip_prefix(path.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(|rest| dir.join(rest).display().to_string())
            });
            pod.args.push(local.unwrap_or_else(|| arg.to_string()));
        }
        assert!(
            !pod.args.iter().any(|a| a == "--listen"
                || a == "--no-cluster"
                || a.starts_with("--health-listen")
                || a.starts_with("--metrics-listen")),
            "the Deployment's args changed: the harness sets the address and needs the cluster"
        );
        for env in container["env"].as_array().into_iter().flatten() {
            let value = match (
                env.get("value"),
                env.pointer("/valueFrom/fieldRef/fieldPath"),
            ) {
                (Some(v), _) => v.as_str().unwrap().to_string(),
                (None, Some(field)) if field == "metadata.name" => name.to_string(),
                (None, Some(field)) if field == "metadata.namespace" => namespace.to_string(),
                _ => panic!("the harness cannot fill in env {env}"),
            };
            pod.envs
                .push((env["name"].as_str().unwrap().to_string(), value));
        }
        let account = spec["serviceAccountName"]
            .as_str()
            .expect("a ServiceAccount");
        let kubeconfig = cp.service_account_kubeconfig(namespace, account);
        pod.envs
            .push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        pod.run(0);
        pod
    }

    /// Writes the Secret and ConfigMap volumes as the kubelet does: the
    /// files are symlinks through `..data` to a directory per version, and
    /// a new version is swapped in by renaming one symlink, so a reader
    /// never sees a new tls.crt beside an old tls.key.
    fn project(&mut self, docs: &[Value], spec: &Value) {
        self.generation += 1;
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            let Some(dir) = self.mounts.get(volume["name"].as_str().unwrap()) else {
                continue;
            };
            let files: BTreeMap<String, Vec<u8>> = if let Some(s) = volume.get("secret") {
                let secret = find(docs, "Secret", s["secretName"].as_str().unwrap());
                secret["data"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), decode(v.as_str().unwrap())))
                    .collect()
            } else if let Some(c) = volume.get("configMap") {
                let map = find(docs, "ConfigMap", c["name"].as_str().unwrap());
                map["data"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
                    .collect()
            } else {
                panic!("the harness cannot mount volume {volume}");
            };
            let version = format!("..{}", self.generation);
            std::fs::create_dir(dir.join(&version)).unwrap();
            for (name, bytes) in &files {
                std::fs::write(dir.join(&version).join(name), bytes).unwrap();
            }
            let next = dir.join("..data_tmp");
            std::os::unix::fs::symlink(&version, &next).unwrap();
            std::fs::rename(&next, dir.join("..data")).unwrap();
            for name in files.keys() {
                let link = dir.join(name);
                if std::fs::symlink_metadata(&link).is_err() {
                    std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
                }
            }
            if self.generation > 1 {
                let _ = std::fs::remove_dir_all(dir.join(format!("..{}", self.generation - 1)));
            }
        }
    }

    /// Replaces the mounted Secret and ConfigMap files with those in
    /// `docs`, as the kubelet does after `kubectl apply`.
    pub fn update_volumes(&mut self, docs: &[Value], deployment: &str) {
        let spec = find(docs, "Deployment", deployment)["spec"]["template"]["spec"].clone();
        self.project(docs, &spec);
        self.ca_pem = ca_bundle(docs);
    }

    fn run(&mut self, port: u16) {
        let listen = format!("127.0.0.1:{port}");
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        match self.role {
            // Every replica's metrics on a port of its own, on 127.0.0.1.
            Role::Webhook => args.extend([
                "--listen",
                &listen,
                "--cluster",
                "--metrics-listen",
                "127.0.0.1:0",
            ]),
            Role::Controller => args.extend(["--health-listen", &listen]),
        }
        let envs: Vec<(&str, String)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let child = super::spawn(Server::command(&args, &envs)).expect("start pvc-guard");
        let server = Server::attach(child, self.cp.tempdir(), None);
        self.port = server.port;
        self.server = Some(server);
        eventually(
            &format!("{} /readyz answers 200", self.name),
            || match self.get("/readyz") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}\n{}", self.log())),
            },
        );
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = match self.role {
            Role::Webhook => "https",
            Role::Controller => "http",
        };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// GET `path` from the process: the status and body, or why not.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        match self.role {
            Role::Webhook => https_get(&self.url(path), &self.ca_pem, None),
            Role::Controller => {
                let raw = super::http_get(self.port, path)
                    .ok_or_else(|| format!("{}: no answer", self.url(path)))?;
                let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("not HTTP: {head}"))?;
                Ok((status, body.to_string()))
            }
        }
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        self.server
            .as_ref()
            .map(Server::log_text)
            .unwrap_or_default()
    }

    /// Kills the process, as a crashed or evicted pod.
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// Starts the process again on the same port, as the same pod.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "stop it first");
        self.run(self.port);
    }

    /// The /metrics text.
    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            Ok((200, text)) => text,
            other => panic!("{} /metrics: {other:?}", self.name),
        }
    }

    /// The sum of the samples of metric `name` whose labels include `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// AdmissionReviews answered, per endpoint (validate, mutate).
    pub fn admission_requests(&self) -> (u64, u64) {
        let text = self.metrics();
        let n = |endpoint| {
            metric_sum(
                &text,
                "pvc_guard_admission_requests_total",
                &[("endpoint", endpoint)],
            ) as u64
        };
        (n("validate"), n("mutate"))
    }
}

/// The sum of the samples of `name` (Prometheus text) with all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// pvc-guard installed in the shared control plane: the rendered
/// self-signed overlay applied (less the webhook configurations, which each
/// test registers for itself) and the claim controller running, as a pod
/// of its own Deployment with its own ServiceAccount's token.
pub struct Install {
    pub cp: &'static ControlPlane,
    pub layout: Layout,
    pub docs: Vec<Value>,
    /// Where the policy report CRDs installed came from; `None`: not installed.
    pub crds: Option<PathBuf>,
    controller: Mutex<Option<Pod>>,
}

static INSTALL: OnceLock<Install> = OnceLock::new();

/// The shared install, made on first use; `None` when the e2e tests are
/// skipped here.
pub fn install() -> Option<&'static Install> {
    let cp = control_plane()?;
    Some(INSTALL.get_or_init(|| Install::new(cp)))
}

/// Stops the claim controller; the control plane is stopped after it.
pub(super) fn stop_at_exit() {
    if let Some(install) = INSTALL.get() {
        let pod = install
            .controller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(pod);
    }
}

impl Install {
    fn new(cp: &'static ControlPlane) -> Install {
        let layout = Layout::new(cp);
        let docs = layout.render(cp);
        let rest: Vec<Value> = docs
            .iter()
            .filter(|d| !WEBHOOK_KINDS.iter().any(|k| d["kind"] == *k))
            .cloned()
            .collect();
        cp.apply(&rest);
        // The policy report CRDs, before the controller starts, so it finds
        // them at once (it looks them up again only every minute).
        let crds = super::crds_dir();
        if let Some(dir) = &crds {
            let mut args = vec!["apply".to_string()];
            for file in [
                "wgpolicyk8s.io_policyreports.yaml",
                "wgpolicyk8s.io_clusterpolicyreports.yaml",
                "openreports.io_reports.yaml",
                "openreports.io_clusterreports.yaml",
            ] {
                args.push("-f".into());
                args.push(dir.join(file).display().to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cp.kubectl(&args).ok("kubectl apply the policy report CRDs");
            cp.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/policyreports.wgpolicyk8s.io",
                "crd/reports.openreports.io",
            ])
            .ok("the policy report CRDs are served");
        }
        let install = Install {
            cp,
            layout,
            docs,
            crds,
            controller: Mutex::new(None),
        };
        // Started before any webhook pod, so it holds the claim
        // controller's Lease while the tests run.
        let controller = install.start_controller();
        *install.controller.lock().unwrap() = Some(controller);
        install
    }

    /// The webhook server, as a pod of the shipped webhook Deployment with
    /// its ServiceAccount's token.
    pub fn start_webhook(&self, name: &str) -> Pod {
        Pod::start(self.cp, &self.docs, "pvc-guard", name)
    }

    /// The claim controller: a pod of the shipped `pvc-guard-controller`
    /// Deployment (`pvc-guard controller`), the only one of its kind, so it
    /// holds the Lease.
    pub fn start_controller(&self) -> Pod {
        Pod::start(
            self.cp,
            &self.docs,
            "pvc-guard-controller",
            "pvc-guard-controller-0",
        )
    }

    /// Runs `inspect` on the claim controller (its log, its metrics).
    pub fn with_controller<T>(&self, inspect: impl FnOnce(&Pod) -> T) -> T {
        let controller = self.controller.lock().unwrap_or_else(|e| e.into_inner());
        inspect(controller.as_ref().expect("the claim controller runs"))
    }

    /// The shipped config.yaml, as a file, for the CLI's `--config`.
    pub fn config_file(&self) -> PathBuf {
        let path = self.layout.root.path().join("config.yaml");
        if !path.exists() {
            let map = find(&self.docs, "ConfigMap", "pvc-guard-config");
            std::fs::write(&path, map["data"]["config.yaml"].as_str().unwrap()).unwrap();
        }
        path
    }
}

/// One test's world: its namespaces, its webhook server, and the two
/// webhook configurations that send its namespaces' requests there.
pub struct Scenario {
    pub cp: &'static ControlPlane,
    pub install: &'static Install,
    pub id: String,
    /// The rendered manifests its webhook runs from and registers with.
    pub docs: Vec<Value>,
    pub webhook: Pod,
}

/// A namespace of a scenario: its name's suffix and its labels.
pub type NamespaceSpec<'a> = (&'a str, &'a [(&'a str, &'a str)]);

impl Scenario {
    /// Creates namespaces `e2e-{id}-{suffix}` (labelled [`TEST_LABEL`]=`id`
    /// and as given, each with a `default` ServiceAccount), starts a webhook
    /// server, registers the webhook configurations and waits until the
    /// API server calls them for the first namespace. `None`: skipped.
    pub fn start(id: &str, namespaces: &[NamespaceSpec]) -> Option<Scenario> {
        let install = install()?;
        Some(Self::start_with(
            install,
            id,
            namespaces,
            install.docs.clone(),
        ))
    }

    /// Like [`Scenario::start`], from manifests rendered elsewhere (another
    /// certificate).
    pub fn start_with(
        install: &'static Install,
        id: &str,
        namespaces: &[NamespaceSpec],
        docs: Vec<Value>,
    ) -> Scenario {
        let cp = install.cp;
        let mut objects = Vec::new();
        for (suffix, labels) in namespaces {
            let name = format!("e2e-{id}-{suffix}");
            let mut l: BTreeMap<&str, &str> = labels.iter().copied().collect();
            l.entry(TEST_LABEL).or_insert(id);
            objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": l}}));
            objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name}}));
        }
        // Before the server starts, so its first list holds their labels.
        cp.apply(&objects);
        let webhook = Pod::start(cp, &docs, "pvc-guard", &format!("pvc-guard-webhook-{id}"));
        let scenario = Scenario {
            cp,
            install,
            id: id.to_string(),
            docs,
            webhook,
        };
        scenario.register(&scenario.docs, id);
        scenario.wait_called(&scenario.ns(namespaces[0].0));
        scenario
    }

    pub fn ns(&self, suffix: &str) -> String {
        format!("e2e-{}-{suffix}", self.id)
    }

    /// Applies a copy of the webhook configurations in `docs` that calls
    /// this scenario's server for the namespaces labelled
    /// [`TEST_LABEL`]=`label`, named after the label.
    pub fn register(&self, docs: &[Value], label: &str) {
        self.cp.apply(&webhook_configurations(
            docs,
            &format!("pvc-guard-e2e-{label}"),
            self.webhook.port,
            label,
        ));
    }

    /// Waits until a dry-run create in `namespace` reaches both webhooks
    /// (a new configuration takes about a second to take effect).
    pub fn wait_called(&self, namespace: &str) {
        let (v0, m0) = self.webhook.admission_requests();
        let deployment = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: probe, namespace: {namespace}}}\nspec:\n  selector: {{matchLabels: {{app: probe}}}}\n  template:\n    metadata: {{labels: {{app: probe}}}}\n    spec:\n      containers: [{{name: web, image: nginx:1.27}}]\n"
        );
        let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments");
        eventually(
            &format!("{namespace}: the API server calls both webhooks"),
            || {
                let (status, answer) = self.cp.create(&path, &deployment, true);
                let (v, m) = self.webhook.admission_requests();
                if v > v0 && m > m0 {
                    Ok(())
                } else {
                    Err(format!(
                        "validate {v0}->{v}, mutate {m0}->{m}; {status} {answer}"
                    ))
                }
            },
        );
    }

    /// AdmissionReviews this scenario's server answered, both endpoints.
    pub fn requests(&self) -> u64 {
        let (v, m) = self.webhook.admission_requests();
        v + m
    }

    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.cp.kubectl(args)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.cp.kubectl_stdin(args, stdin)
    }
}

/// `pvc-guard` CLI run with `KUBECONFIG`, for `audit`.
pub fn pvc_guard_with_kubeconfig(kubeconfig: &Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run pvc-guard");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
