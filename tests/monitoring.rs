//! Monitoring as shipped (manifests/monitoring): every series an alert or
//! a dashboard panel asks for is one `pvc-guard serve` or `pvc-guard
//! controller` exports, read from their /metrics; and the webhook's plain
//! metrics port serves /metrics and nothing else, under the same clocks
//! as the TLS port.

#[path = "common/api.rs"]
mod api;
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api::ApiServer;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Names a Prometheus server provides itself, not a target.
const PROMETHEUS_BUILTINS: [&str; 1] = ["up"];

/// PromQL's grouping keywords: the `(...)` after one lists labels.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Aggregations (`sum by (x) (...)` puts a keyword between the name and
/// its `(`) and the other keywords; any other identifier followed by `(`
/// is a function.
const KEYWORDS: [&str; 17] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
];

fn monitoring(file: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("manifests/monitoring")
            .join(file),
    )
    .unwrap()
}

/// Every PromQL expression of the alerts and the dashboard, with where it is.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules: Value = serde_yaml_ng::from_str(&monitoring("prometheusrule.yaml")).unwrap();
    for group in rules["spec"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            out.push((
                format!("alert {}", rule["alert"]),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let dashboard: Value = serde_json::from_str(&monitoring("pvc-guard-dashboard.json")).unwrap();
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            panels += 1;
            out.push((
                format!("panel {}", panel["title"]),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(panels > 5, "the dashboard has panels with queries");
    out
}

/// The series names an expression selects: identifiers not followed by
/// `(` (functions), outside `{...}` matchers, `by (...)` lists, strings
/// and `[range]`s. Enough PromQL for what we ship.
fn series_in(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut depth_braces = 0;
    let mut after_grouping = false;
    while i < bytes.len() {
        let c = bytes[i] as char;
        match c {
            '"' | '\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] as char != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' => {
                depth_braces += 1;
                i += 1;
            }
            '}' => {
                depth_braces -= 1;
                i += 1;
            }
            '[' => {
                while i < bytes.len() && bytes[i] != b']' {
                    i += 1;
                }
            }
            '(' if after_grouping => {
                while i < bytes.len() && bytes[i] != b')' {
                    i += 1;
                }
                after_grouping = false;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = expr[i..].trim_start().chars().next();
                if GROUPING.contains(&word) {
                    after_grouping = true;
                } else if depth_braces == 0 && next != Some('(') && !KEYWORDS.contains(&word) {
                    names.insert(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The sample names a /metrics page holds, families without samples yet
/// included (from their `# TYPE` line, with the suffixes their type gives).
fn exported(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            names.insert(name);
        }
    }
    names
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The webhook's plain metrics address, from its log.
fn metrics_address(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = server.log.lock().unwrap().iter().find_map(|line| {
            let at = line.find("metrics on http://")? + "metrics on http://".len();
            Some(line[at..].split('/').next()?.to_string())
        });
        if let Some(address) = found {
            return address;
        }
        assert!(
            Instant::now() < deadline,
            "serve never said where it serves metrics: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pvc-guard controller` in this process against a scripted API server;
/// its /metrics page once the caches synced.
async fn controller_metrics() -> String {
    let api = ApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(pvc_guard::cluster::controller::run(
        api.client(),
        listener,
        pvc_guard::cluster::controller::Options {
            config: None,
            lease_namespace: Some("pvc-guard".into()),
            reload_interval: Duration::from_secs(1),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the controller never got ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, page) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    page
}

#[tokio::test]
async fn every_series_the_alerts_and_the_dashboard_ask_for_is_exported() {
    let server = Server::start(&["--metrics-listen", "127.0.0.1:0"]);
    // One decision with findings, so the per-request families have series.
    let review = read_json("admission/pg-emptydir.create.json");
    let (status, answer) = post(&server.client(false), &server.url("/validate"), &review).await;
    assert_eq!((status, allowed(&answer)), (200, Some(false)), "{answer}");
    let (status, webhook_page) = get(&format!("http://{}/metrics", metrics_address(&server))).await;
    assert_eq!(status, 200);
    let controller_page = controller_metrics().await;
    let webhook = exported(&webhook_page);
    let controller = exported(&controller_page);
    for both in [
        "pvc_guard_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "process_open_fds",
    ] {
        assert!(
            webhook.contains(both),
            "serve exports {both}: {webhook_page}"
        );
        assert!(
            controller.contains(both),
            "the controller exports {both}: {controller_page}"
        );
    }
    assert!(
        webhook_page.contains(&format!(
            "pvc_guard_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{webhook_page}"
    );

    let mut checked = 0;
    for (place, expr) in expressions() {
        let series = series_in(&expr);
        assert!(!series.is_empty(), "{place}: no series found in {expr}");
        for name in series {
            checked += 1;
            assert!(
                PROMETHEUS_BUILTINS.contains(&name.as_str())
                    || webhook.contains(&name)
                    || controller.contains(&name),
                "{place} asks for {name}, which neither serve nor the controller exports ({expr})"
            );
        }
    }
    assert!(checked > 10);
}

#[test]
fn the_expression_reader_finds_series_and_skips_the_rest() {
    let names = |e: &str| series_in(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names("histogram_quantile(0.99, sum by (le, endpoint) (rate(a_bucket{x=\"y\"}[5m])))"),
        ["a_bucket"]
    );
    assert_eq!(
        names("absent(up{namespace=\"pvc-guard\"} == 1) or min(b) - time() < 14 * 24"),
        ["b", "up"]
    );
    assert_eq!(names("sum(rate(c_total[5m])) > 0"), ["c_total"]);
}

#[tokio::test]
async fn the_metrics_port_serves_metrics_only_and_closes_silent_connections() {
    let server = Server::start(&["--metrics-listen", "127.0.0.1:0", "--header-timeout", "1s"]);
    let address = metrics_address(&server);
    for path in ["/validate", "/mutate", "/healthz", "/"] {
        let (status, _) = get(&format!("http://{address}{path}")).await;
        assert_eq!(status, 404, "{path} is not served on the metrics port");
    }
    let posted = reqwest::Client::new()
        .post(format!("http://{address}/validate"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 404);

    // A connection that sends nothing is closed by the header timeout, and
    // connections past the cap are closed at once, while a scrape on a
    // fresh connection still answers once the silent ones are gone.
    let mut silent = Vec::new();
    for _ in 0..pvc_guard::plain_http::MAX_CONNECTIONS + 8 {
        silent.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let started = Instant::now();
    for stream in &mut silent {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("every silent connection is closed");
        assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer");
    }
    eprintln!("silent connections closed after {:?}", started.elapsed());
    drop(silent);
    let (status, page) = get(&format!("http://{address}/metrics")).await;
    assert_eq!(status, 200);
    assert!(page.contains("pvc_guard_build_info"));

    // A head that never ends is cut off the same way.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut rest))
        .await
        .expect("an unfinished head is cut off")
        .ok();
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "no answer to an unfinished head"
    );
}
