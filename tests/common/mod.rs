//! Shared test harness: the real `pvc-guard` binary serving HTTPS on
//! 127.0.0.1 with a generated CA, and a reqwest client that trusts it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pvc-guard");

pub fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// `object` as the mutating webhook leaves it on CREATE, without cluster facts.
pub fn fixed(policy: &pvc_guard::policy::Policy, object: &Value) -> Value {
    let w = match pvc_guard::model::Object::from_value(object).unwrap() {
        pvc_guard::model::Object::Workload(w) => w,
        pvc_guard::model::Object::Other => panic!("not a workload: {object}"),
    };
    pvc_guard::mutate::mutate_create(policy, &w, &Default::default())
        .apply_to(object)
        .unwrap()
}

pub fn read_json(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(data(path)).unwrap()).unwrap()
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub ca_pem: String,
    pub dir: tempfile::TempDir,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `pvc-guard serve` on an ephemeral port with the generated certificate.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        let ca_s = ca.to_str().unwrap().to_string();
        let has_cert = extra.contains(&"--tls-cert");
        if !has_cert {
            args.extend(["--write-ca", &ca_s]);
        }
        args.extend(extra);
        Self::spawn(&args, dir, if has_cert { None } else { Some(ca) })
    }

    pub fn spawn(args: &[&str], dir: tempfile::TempDir, ca: Option<PathBuf>) -> Server {
        Self::spawn_env(args, &[], dir, ca)
    }

    /// Like [`Server::spawn`], with `envs` set for the process.
    pub fn spawn_env(
        args: &[&str],
        envs: &[(&str, String)],
        dir: tempfile::TempDir,
        ca: Option<PathBuf>,
    ) -> Server {
        let child = Self::command(args, envs).spawn().expect("start pvc-guard");
        Self::attach(child, dir, ca)
    }

    /// The command [`Server::spawn_env`] runs, for a caller that spawns it
    /// another way and hands the child to [`Server::attach`].
    pub fn command(args: &[&str], envs: &[(&str, String)]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            // Standalone even when the tests themselves run in a pod.
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Follows a started `pvc-guard serve` or `pvc-guard controller`
    /// (stderr piped) until it says where it listens on 127.0.0.1.
    pub fn attach(mut child: Child, dir: tempfile::TempDir, ca: Option<PathBuf>) -> Server {
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let at = [
                    "listening on https://127.0.0.1:",
                    "listening on http://127.0.0.1:",
                ]
                .iter()
                .find_map(|prefix| line.find(prefix).map(|i| i + prefix.len()));
                if !sent && let Some(at) = at {
                    let rest = &line[at..];
                    let port: u16 = rest
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                        .parse()
                        .unwrap();
                    let _ = tx.send(port);
                    sent = true;
                }
                log2.lock().unwrap().push(line);
            }
        });
        let Ok(port) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pvc-guard did not start: {:?}", log.lock().unwrap());
        };
        let ca_pem = ca
            .map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap_or_default();
        Server {
            child,
            port,
            ca_pem,
            dir,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn client(&self, http2: bool) -> reqwest::Client {
        client_for(&[&self.ca_pem], http2)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as the kubelet does to stop a pod.
    pub fn sigterm(&self) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_for(cas: &[&str], http2: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(20));
    for ca in cas {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    b = if http2 {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    };
    b.build().unwrap()
}

/// GETs `url` and returns the body (metrics, probes).
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// POSTs an AdmissionReview and returns the status and the parsed body.
pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The JSON patch of an AdmissionResponse, decoded, if any.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    use base64::Engine;
    let p = response.pointer("/response/patch")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// `response.allowed` of an AdmissionReview answer.
pub fn allowed(response: &Value) -> Option<bool> {
    response
        .pointer("/response/allowed")
        .and_then(Value::as_bool)
}

pub fn warnings(response: &Value) -> Vec<String> {
    response
        .pointer("/response/warnings")
        .and_then(Value::as_array)
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn run_cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    run_cli_with(args, &[], stdin)
}

/// Runs the CLI with `envs` set and no stdin.
pub fn run_cli_env(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    run_cli_with(args, envs, None)
}

fn run_cli_with(
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: Option<&str>,
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            si.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A rustls client config that trusts `ca_pem`, optionally presenting a
/// client certificate (PEM chain, PEM key), offering ALPN http/1.1.
pub fn tls_client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Arc<rustls::ClientConfig> {
    tls_client_config_alpn(ca_pem, identity, &[b"http/1.1"])
}

/// Like [`tls_client_config`], offering `alpn` (none when empty).
pub fn tls_client_config_alpn(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                rustls_pemfile::certs(&mut chain.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                rustls_pemfile::private_key(&mut key.as_bytes())
                    .unwrap()
                    .unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the server speaking HTTP/1.1, for requests a
/// well-behaved client cannot send.
pub async fn tls_connect(server: &Server) -> TlsStream {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(tls_client_config(&server.ca_pem, None))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// A TLS connection offering `alpn` (none when empty), or the error.
pub async fn tls_connect_alpn(server: &Server, alpn: &[&[u8]]) -> std::io::Result<TlsStream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await?;
    tokio_rustls::TlsConnector::from(tls_client_config_alpn(&server.ca_pem, None, alpn))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

/// Raises this process's open-file soft limit to its hard limit and
/// returns the soft limit now in force.
pub fn raise_fd_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

/// Resident memory of a process, in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Sends `head` and `body` as they are and reads until the server closes,
/// or `limit` passes (None then).
pub async fn raw_exchange(
    server: &Server,
    head: &str,
    body: &[u8],
    limit: Duration,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(server).await;
    tls.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before the whole body is written.
    let _ = tls.write_all(body).await;
    let _ = tls.flush().await;
    let mut out = Vec::new();
    match tokio::time::timeout(limit, tls.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// An HTTP/1.1 POST head with `Connection: close`.
pub fn post_head(path: &str, content_type: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

/// The status code of a raw HTTP/1.1 response.
pub fn status_of(response: &str) -> Option<u16> {
    response.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The JSON body of a raw HTTP/1.1 response.
pub fn json_body_of(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

/// Is kubectl installed? Without it a test that needs it prints why and
/// passes, as the manifest tests do, unless `PVC_GUARD_E2E_REQUIRED=1`
/// (CI, which installs kubectl) makes that a failure.
pub fn kubectl_or_skip() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip("kubectl is not installed");
    }
    found
}

/// Says that the running test is skipped and why, unless
/// `PVC_GUARD_E2E_REQUIRED=1` (CI, where everything a test needs is
/// installed) makes that a failure.
pub fn skip(why: &str) {
    if std::env::var("PVC_GUARD_E2E_REQUIRED").as_deref() == Ok("1") {
        panic!("PVC_GUARD_E2E_REQUIRED=1, but {why}");
    }
    // libtest names each test's thread after the test.
    let test = std::thread::current().name().unwrap_or("").to_string();
    // Past libtest's capture, which would hide it for a passing test.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: {why}\n").as_bytes(),
    );
}

/// Runs `command` with `stdin`, returning the exit code, stdout and stderr.
pub fn run_command(mut command: Command, stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            si.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Copies the tree `from` into `to`, files and directories alike.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        }
    }
}

/// (Kind/name, result, rule) of each result of a policy report, in its order.
pub fn report_results(report: &Value) -> Vec<(String, String, String)> {
    report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = &r["resources"][0];
            (
                format!(
                    "{}/{}",
                    s["kind"].as_str().unwrap(),
                    s["name"].as_str().unwrap()
                ),
                r["result"].as_str().unwrap().to_string(),
                r["rule"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The text a base64 field (a Secret's data, a caBundle) holds.
pub fn base64_text(b64: &str) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}
