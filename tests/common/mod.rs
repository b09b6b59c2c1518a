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
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pvc-guard");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(i) = line.find("listening on https://127.0.0.1:") {
                    let rest = &line[i + "listening on https://127.0.0.1:".len()..];
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
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("pvc-guard did not start: {:?}", log.lock().unwrap()));
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
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
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
