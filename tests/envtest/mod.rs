//! envtest: a real kube-apiserver and etcd for the end-to-end tests, found
//! the way controller-runtime's envtest finds them (`KUBEBUILDER_ASSETS`
//! names a directory holding `kube-apiserver` and `etcd`).
//!
//! One control plane per test binary, started by the first test that asks
//! and shared by all: each test works in namespaces of its own (labelled
//! [`TEST_LABEL`]), so tests run in parallel on it. It is stopped when the
//! test binary exits, whether tests passed or failed: an `atexit` handler
//! kills and reaps every process it started (libtest leaves through
//! `exit` after catching test panics), and each process also gets
//! `PR_SET_PDEATHSIG` from a spawner thread that lives as long as the test
//! binary, so a test binary that is itself killed leaves no orphan either.
//!
//! Without `KUBEBUILDER_ASSETS` (or without kubectl) every e2e test prints
//! why it was skipped and passes, unless `PVC_GUARD_E2E_REQUIRED=1`, as in
//! CI, turns the skip into a failure.

#![allow(dead_code)]

pub mod install;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;

/// The label that scopes each test's webhook configurations to the test's
/// own namespaces.
pub const TEST_LABEL: &str = "e2e.pvc-guard.io/test";

/// How long anything is waited for before a test gives up. Generous: the
/// machines running this are small and shared.
pub const DEADLINE: Duration = Duration::from_secs(90);

pub struct ControlPlane {
    /// Holds the PKI, etcd's data, logs and kubeconfigs; removed at exit.
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// The CA that signed the API server's certificate.
    pub ca_pem: String,
    /// A kubeconfig for the static admin token (`system:masters`).
    pub admin_kubeconfig: PathBuf,
    admin_token: String,
    /// etcd and kube-apiserver, stopped in [`ControlPlane::stop`].
    processes: Mutex<Vec<(&'static str, Child)>>,
}

static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// Why the e2e tests cannot run here, if they cannot (looked up once).
fn skip_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON.get_or_init(find_skip_reason).clone()
}

fn find_skip_reason() -> Option<String> {
    match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(dir) if !dir.is_empty() => {}
        _ => {
            return Some(
                "KUBEBUILDER_ASSETS is not set; point it at a directory holding kube-apiserver and etcd (README.md, \"End-to-end tests\")".into(),
            );
        }
    }
    match Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => None,
        Err(e) => Some(format!("kubectl is not on PATH ({e})")),
    }
}

/// The shared control plane, started on first use; `None` (after printing
/// why) when the e2e tests cannot run here.
pub fn control_plane() -> Option<&'static ControlPlane> {
    if let Some(why) = skip_reason() {
        if std::env::var("PVC_GUARD_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("PVC_GUARD_E2E_REQUIRED=1, but the e2e tests cannot run: {why}");
        }
        // Past libtest's capture, which would hide it for a passing test;
        // libtest names each test's thread after the test.
        let test = std::thread::current().name().unwrap_or("").to_string();
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
        return None;
    }
    let started = CONTROL_PLANE.get_or_init(|| {
        // Registered before anything starts, so nothing outlives the binary.
        // SAFETY: `stop_at_exit` is an `extern "C" fn()` that never unwinds.
        unsafe { libc::atexit(stop_at_exit) };
        ControlPlane::start()
    });
    match started {
        Ok(cp) => Some(cp),
        Err(e) => panic!("the envtest control plane did not start: {e}"),
    }
}

extern "C" fn stop_at_exit() {
    // Nothing may unwind out of an atexit handler.
    let _ = std::panic::catch_unwind(|| {
        install::stop_at_exit();
        if let Some(Ok(cp)) = CONTROL_PLANE.get() {
            cp.stop();
        }
    });
}

/// Spawns `command` from one thread that lives as long as the test binary,
/// with `PR_SET_PDEATHSIG`: the kernel sends that signal when the thread
/// that forked the child ends, and libtest ends a test's thread with the
/// test, so forking from a test thread would kill shared processes early.
pub fn spawn(mut command: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("envtest-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the spawner thread");
        tx
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .send((command, tx))
        .expect("the spawner thread lives as long as the binary");
    rx.recv().expect("the spawner thread answers")
}

/// The directory of the policy report CRDs the control plane is given
/// (`$PVC_GUARD_CRDS`, else the copies in tests/data/crds); `None` when it
/// holds none.
pub fn crds_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PVC_GUARD_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/crds"));
    dir.join("wgpolicyk8s.io_policyreports.yaml")
        .exists()
        .then_some(dir)
}

/// A port nothing listens on right now (the kernel's next ephemeral port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The binaries, runnable: copied to `dir` and made executable when they
/// arrived without their exec bit (a read-only copy of the assets).
fn runnable_assets(assets: &Path, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for name in ["etcd", "kube-apiserver"] {
        let path = assets.join(name);
        let meta = std::fs::metadata(&path)
            .map_err(|e| format!("KUBEBUILDER_ASSETS={}: {name}: {e}", assets.display()))?;
        if meta.permissions().mode() & 0o111 != 0 {
            out.push(path);
            continue;
        }
        let copy = dir.join("bin").join(name);
        std::fs::create_dir_all(copy.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::copy(&path, &copy).map_err(|e| format!("copying {}: {e}", path.display()))?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        out.push(copy);
    }
    Ok((out.remove(0), out.remove(0)))
}

/// A CA, a serving certificate for 127.0.0.1 and localhost, and a
/// service-account signing key, as PEM files in `dir`.
fn write_pki(dir: &Path) -> Result<String, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let e = |e: rcgen::Error| e.to_string();
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "envtest CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(e)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.subject_alt_names = vec![
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
        SanType::DnsName("localhost".try_into().map_err(e)?),
        SanType::DnsName("kubernetes.default.svc".try_into().map_err(e)?),
    ];
    let key = KeyPair::generate().map_err(e)?;
    let cert = params.signed_by(&key, &issuer).map_err(e)?;
    let service_accounts = KeyPair::generate().map_err(e)?;

    let files = [
        ("ca.crt", ca_cert.pem()),
        ("apiserver.crt", cert.pem()),
        ("apiserver.key", key.serialize_pem()),
        ("sa.key", service_accounts.serialize_pem()),
        ("sa.pub", service_accounts.public_key_pem()),
    ];
    for (name, pem) in files {
        std::fs::write(dir.join(name), pem).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(ca_cert.pem())
}

/// A kubeconfig for `url` that authenticates with `token`.
fn kubeconfig(url: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: {user}\n    namespace: default\ncurrent-context: envtest\n"
    )
}

/// Polls `ready` every 100 ms until it says yes, `child` exits, or
/// `deadline` passes.
fn wait_for(
    what: &str,
    child: &mut Child,
    log: &Path,
    deadline: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited ({status}):\n{}", tail(log)));
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "{what} not ready after {deadline:?}:\n{}",
                tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET `http://127.0.0.1:port/path`, the body if it answered.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

/// GET over HTTPS trusting only `ca_pem`, with an optional bearer token:
/// the status and body, or why it failed.
pub fn https_get(url: &str, ca_pem: &str, token: Option<&str>) -> Result<(u16, String), String> {
    https(reqwest::Method::GET, url, ca_pem, token, None)
}

/// An HTTPS request trusting only `ca_pem`, with an optional bearer token
/// and JSON body: the status and body, or why it failed.
pub fn https(
    method: reqwest::Method,
    url: &str,
    ca_pem: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?,
            )
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let mut request = client.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| e.to_string())?;
        Ok((status, body))
    })
}

/// What a kubectl run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with everything kubectl said unless it succeeded.
    pub fn ok(self, what: &str) -> Run {
        assert_eq!(self.code, 0, "{what}: {self}");
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl ControlPlane {
    fn start() -> Result<ControlPlane, String> {
        let assets = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS").unwrap());
        let dir = tempfile::Builder::new()
            .prefix("pvc-guard-envtest-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let started = Self::start_in(&assets, dir.clone());
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn start_in(assets: &Path, dir: PathBuf) -> Result<ControlPlane, String> {
        let (etcd_bin, apiserver_bin) = runnable_assets(assets, &dir)?;
        let ca_pem = write_pki(&dir)?;
        let token = random_hex(16);
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin-uid,\"system:masters\"\n"),
        )
        .map_err(|e| e.to_string())?;

        let cp = ControlPlane {
            url: String::new(),
            ca_pem,
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            admin_token: token.clone(),
            dir,
            processes: Mutex::new(Vec::new()),
        };
        // A port taken between picking and binding: try again with new ones.
        let mut last = String::new();
        for _ in 0..3 {
            match cp.start_processes(&etcd_bin, &apiserver_bin, &token) {
                Ok(url) => {
                    let cp = ControlPlane { url, ..cp };
                    let config = kubeconfig(&cp.url, &cp.ca_pem, "admin", &token);
                    if let Err(e) = std::fs::write(&cp.admin_kubeconfig, config) {
                        cp.stop();
                        return Err(e.to_string());
                    }
                    return Ok(cp);
                }
                Err(e) => {
                    cp.stop_processes();
                    last = e;
                }
            }
        }
        cp.stop();
        Err(last)
    }

    fn start_processes(
        &self,
        etcd: &Path,
        apiserver: &Path,
        token: &str,
    ) -> Result<String, String> {
        let dir = &self.dir;
        let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_log = dir.join("etcd.log");
        let data = dir.join(format!("etcd-{client_port}"));
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = |path: &Path| std::fs::File::create(path).map_err(|e| e.to_string());
        let mut command = Command::new(etcd);
        command
            .arg("--name=envtest")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=envtest={peer}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log(&etcd_log)?)
            .stderr(log(&etcd_log)?);
        let child = spawn(command).map_err(|e| format!("starting {}: {e}", etcd.display()))?;
        self.processes.lock().unwrap().push(("etcd", child));
        self.wait_process("etcd", &etcd_log, || {
            http_get(client_port, "/health").is_some_and(|r| r.contains("\"health\":\"true\""))
        })?;

        let api_log = dir.join("kube-apiserver.log");
        let file = |name: &str| dir.join(name).display().to_string();
        let mut command = Command::new(apiserver);
        command
            .arg(format!("--etcd-servers={client}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--tls-cert-file={}", file("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", file("apiserver.key")))
            .arg(format!("--client-ca-file={}", file("ca.crt")))
            .arg(format!("--token-auth-file={}", file("tokens.csv")))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", file("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                file("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--cert-dir={}", file("apiserver-certs")))
            .stdin(Stdio::null())
            .stdout(log(&api_log)?)
            .stderr(log(&api_log)?);
        let child = spawn(command).map_err(|e| format!("starting {}: {e}", apiserver.display()))?;
        self.processes
            .lock()
            .unwrap()
            .push(("kube-apiserver", child));
        let url = format!("https://127.0.0.1:{api_port}");
        let readyz = format!("{url}/readyz");
        self.wait_process("kube-apiserver", &api_log, || {
            https_get(&readyz, &self.ca_pem, Some(token)).is_ok_and(|(s, b)| s == 200 && b == "ok")
        })?;
        Ok(url)
    }

    fn wait_process(
        &self,
        name: &str,
        log: &Path,
        ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let mut processes = self.processes.lock().unwrap();
        let (_, child) = processes
            .iter_mut()
            .find(|(n, _)| *n == name)
            .expect("started");
        wait_for(name, child, log, DEADLINE, ready)
    }

    fn stop_processes(&self) {
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        // The API server first, so it never sees etcd go away under it.
        while let Some((_, mut child)) = processes.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A temporary directory inside the control plane's, so that whatever a
    /// test leaves (if it is killed) goes with the control plane.
    pub fn tempdir(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(&self.dir).expect("a temporary directory")
    }

    /// Kills and reaps etcd and the API server, and removes their files.
    pub fn stop(&self) {
        self.stop_processes();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// `POST` of `object` (YAML or JSON) to the collection at `path`, as the
    /// admin, with `dryRun=All` when `dry_run`; for the harness's own
    /// probes, where starting kubectl each time would cost more than the
    /// request. The status and the answer.
    pub fn create(&self, path: &str, object: &str, dry_run: bool) -> (u16, serde_json::Value) {
        let object: serde_json::Value =
            serde_yaml_ng::from_str(object).expect("the object is YAML");
        let url = format!(
            "{}{path}{}",
            self.url,
            if dry_run { "?dryRun=All" } else { "" }
        );
        let (status, body) = https(
            reqwest::Method::POST,
            &url,
            &self.ca_pem,
            Some(&self.admin_token),
            Some(&object),
        )
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        )
    }

    /// Runs kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_as(&self.admin_kubeconfig, args, None)
    }

    /// Runs kubectl as the admin with `stdin` (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.kubectl_as(&self.admin_kubeconfig, args, Some(stdin))
    }

    /// Runs kubectl with `kubeconfig`.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Run {
        let mut child = Command::new("kubectl")
            // A wedged API server fails the test instead of hanging it.
            .arg("--request-timeout=60s")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            // Discovery cache beside the control plane, not in $HOME.
            .env("KUBECACHEDIR", self.dir.join("kubectl-cache"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .expect("write kubectl's stdin");
        }
        let out = child.wait_with_output().expect("wait for kubectl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A kubeconfig file that authenticates with `token`.
    pub fn kubeconfig_for(&self, user: &str, token: &str) -> PathBuf {
        let path = self
            .dir
            .join(format!("{user}-{}.kubeconfig", random_hex(4)));
        std::fs::write(&path, kubeconfig(&self.url, &self.ca_pem, user, token))
            .expect("write a kubeconfig");
        path
    }

    /// A kubeconfig acting as the service account `namespace/account`,
    /// with a token minted by `kubectl create token`.
    pub fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> PathBuf {
        let run = self
            .kubectl(&["create", "token", account, "-n", namespace])
            .ok(&format!("kubectl create token {account} -n {namespace}"));
        self.kubeconfig_for(&format!("{namespace}-{account}"), run.stdout.trim())
    }

    /// `kubectl apply` of `objects` (as one List), as the admin.
    pub fn apply(&self, objects: &[serde_json::Value]) -> Run {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.kubectl_stdin(&["apply", "-f", "-"], &list.to_string())
            .ok("kubectl apply")
    }
}

/// Polls `check` every 100 ms until it returns `Ok`, or panics with
/// `what` and the last state `check` described after [`DEADLINE`].
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > DEADLINE => {
                panic!("{what}: still not so after {DEADLINE:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
