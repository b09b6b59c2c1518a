//! The conventions people bring from kubectl and other CLIs, through the
//! real binary: `audit` with `--kubeconfig`, `--context`, `-n` (default:
//! the context's namespace) and `-A` against a real API server, its errors
//! in one line; the kubectl plugin; listen addresses, durations and sizes
//! as Kubernetes users write them; help on every flag; completion scripts
//! that complete; the version with its commit; a closed pipe that changes
//! no exit code. "Item N" is the item of issue 16 a test holds the CLI to.

mod common;
mod envtest;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

/// A postgres Deployment with no volume in `namespace`: denied.
fn database(namespace: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("{namespace}-db"), "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "postgres", "image": "postgres:16.4"}]},
            },
        },
    })
}

/// `pvc-guard audit ARGS` with `envs` and no kubeconfig of the user's.
fn audit(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("audit")
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home.path())
        .envs(envs.iter().copied());
    run_command(command, None)
}

/// Namespaces of the objects in an `audit -o json` report.
fn namespaces(out: &str) -> BTreeSet<String> {
    let report: Vec<Value> = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    report
        .iter()
        .map(|e| e["namespace"].as_str().unwrap().to_string())
        .collect()
}

/// Item 7, against a real kube-apiserver: the namespace is `-n`, else the
/// context's (`--context` picks one, from `--kubeconfig` or
/// `$KUBECONFIG`), else `default`; `-A` is every namespace; a denial is
/// judged as `check` judges the same manifest; an API error is one line
/// with the server's URL and the API server's own message (as kubectl
/// prints it).
#[test]
fn audit_follows_kubectl_conventions_against_a_real_api_server() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };
    let spaces = ["team-a", "team-b", "default"];
    for ns in &spaces[..2] {
        cp.kubectl(&["create", "namespace", ns])
            .ok("create namespace");
    }
    let objects: Vec<Value> = spaces.iter().map(|ns| database(ns)).collect();
    cp.apply(&objects);

    // Two contexts on the admin's cluster and user: one with a namespace,
    // one without; the first is current.
    let admin: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&cp.admin_kubeconfig).unwrap()).unwrap();
    let cluster = admin["clusters"][0]["name"].clone();
    let user = admin["users"][0]["name"].clone();
    let mut config = admin.clone();
    config["contexts"] = json!([
        {"name": "team-a", "context": {"cluster": cluster, "user": user, "namespace": "team-a"}},
        {"name": "plain", "context": {"cluster": cluster, "user": user}},
    ]);
    config["current-context"] = json!("team-a");
    let dir = cp.tempdir();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, config.to_string()).unwrap();
    let k = kubeconfig.to_str().unwrap();

    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    for (args, envs, want) in [
        (vec!["--kubeconfig", k], vec![], set(&["team-a"])),
        (
            vec!["--kubeconfig", k, "-n", "team-b"],
            vec![],
            set(&["team-b"]),
        ),
        (
            vec!["--kubeconfig", k, "--context", "plain"],
            vec![],
            set(&["default"]),
        ),
        (
            vec!["--context", "plain"],
            vec![("KUBECONFIG", k)],
            set(&["default"]),
        ),
        (vec![], vec![("KUBECONFIG", k)], set(&["team-a"])),
        (vec!["--kubeconfig", k, "-A"], vec![], set(&spaces)),
    ] {
        let mut all = args.clone();
        all.extend(["-o", "json"]);
        let (code, out, err) = audit(&all, &envs);
        assert_eq!(
            code, 1,
            "{args:?} {envs:?}: the databases are denied: {err}"
        );
        assert_eq!(namespaces(&out), want, "{args:?} {envs:?}: {err}");
    }

    // The denial is what `check` says of the same manifest.
    let (_, out, _) = audit(&["--kubeconfig", k, "-o", "json"], &[]);
    let audited: Vec<Value> = serde_json::from_str(&out).unwrap();
    let (_, checked, _) = run_cli(
        &["check", "-o", "json", "-f", "-"],
        Some(&database("team-a").to_string()),
    );
    let checked: Vec<Value> = serde_json::from_str(&checked).unwrap();
    let rules = |e: &Value| {
        e["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| format!("{} {}", f["severity"], f["rule"]))
            .collect::<BTreeSet<_>>()
    };
    let deployment = audited.iter().find(|e| e["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["decision"], checked[0]["decision"]);
    assert_eq!(rules(deployment), rules(&checked[0]));

    // A user who may read nothing in team-a: one line with the server and
    // the API server's message, as kubectl shows it.
    cp.kubectl(&["create", "serviceaccount", "auditor", "-n", "team-a"])
        .ok("create serviceaccount");
    let reader = cp.service_account_kubeconfig("team-a", "auditor");
    let r = reader.to_str().unwrap();
    let (code, out, err) = audit(&["--kubeconfig", r, "-n", "team-a"], &[]);
    assert_eq!(code, 2, "{out}{err}");
    let kubectl = cp.kubectl_as(
        &reader,
        &["get", "persistentvolumeclaims", "-n", "team-a"],
        None,
    );
    let said = kubectl
        .stderr
        .trim()
        .strip_prefix("Error from server (Forbidden): ")
        .unwrap_or_else(|| panic!("kubectl: {kubectl}"));
    let last = err.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "pvc-guard: the API server at {}/ answered 403 Forbidden: {said}",
            cp.url
        ),
        "{err}"
    );
}

/// A kubeconfig for `server` that trusts `ca_pem`.
fn kubeconfig_for(dir: &Path, server: &str, ca_pem: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "shop"}}],
        "current-context": "c",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Item 7: an API server that cannot be reached, or whose certificate the
/// kubeconfig's CA did not sign, is one line naming the server and why;
/// a context or kubeconfig that does not exist is named.
#[test]
fn audit_says_in_one_line_why_it_cannot_reach_the_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let other_ca = pvc_guard::certs::generate("other", &["localhost".into()], &[], 1).unwrap();
    let refused = kubeconfig_for(
        dir.path(),
        &format!("https://127.0.0.1:{closed}"),
        &other_ca.ca_pem,
    );
    let (code, out, err) = audit(&["--kubeconfig", &refused], &[]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "pvc-guard: cannot talk to the API server at https://127.0.0.1:{closed}/: "
        )) && err.contains("Connection refused"),
        "{err}"
    );

    // A TLS server whose certificate another CA signed: pvc-guard's own.
    let server = Server::start(&["--no-cluster"]);
    let tls_dir = tempfile::tempdir().unwrap();
    let untrusted = kubeconfig_for(
        tls_dir.path(),
        &format!("https://127.0.0.1:{}", server.port),
        &other_ca.ca_pem,
    );
    let (code, _, err) = audit(&["--kubeconfig", &untrusted], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "the API server at https://127.0.0.1:{}/",
            server.port
        )) && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    let (code, _, err) = audit(&["--kubeconfig", &refused, "--context", "nope"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("nope"), "{err}");
    let absent = dir.path().join("absent");
    let (code, _, err) = audit(&["--kubeconfig", absent.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains(absent.to_str().unwrap()), "{err}");
    let (code, _, err) = audit(&["-n", "x", "-A"], &[]);
    assert_eq!(code, 2, "-n and -A exclude each other: {err}");
}

/// Item 7: installed as `kubectl-pvc_guard`, pvc-guard is `kubectl
/// pvc-guard`: kubectl finds and runs it, its help and usage errors name
/// it so, its exit codes come through, and its completion script works.
#[test]
fn installed_as_kubectl_pvc_guard_it_is_a_kubectl_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-pvc_guard");
    std::os::unix::fs::symlink(BIN, &plugin).unwrap();
    let run = |program: &Path, args: &[&str]| {
        let mut command = Command::new(program);
        command.args(args);
        command.env(
            "PATH",
            format!(
                "{}:{}",
                dir.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        run_command(command, None)
    };
    let (_, help, _) = run(&plugin, &["--help"]);
    assert!(
        help.contains("Usage: kubectl pvc-guard <COMMAND>"),
        "{help}"
    );
    let (_, help, _) = run(&plugin, &["check", "--help"]);
    assert!(help.contains("Usage: kubectl pvc-guard check "), "{help}");
    let (code, _, err) = run(&plugin, &["check"]);
    assert_eq!(code, 2);
    assert!(err.contains("Usage: kubectl pvc-guard check "), "{err}");
    let (code, script, err) = run(&plugin, &["completion", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(script.contains(" kubectl-pvc_guard\n"), "{script}");

    if !kubectl_or_skip() {
        return;
    }
    let kubectl = Path::new("kubectl");
    let fixture = data("manifests/pg18-old-mount.yaml");
    let fixture = fixture.to_str().unwrap();
    for args in [
        vec!["--help"],
        vec!["version"],
        vec!["check", "-f", fixture],
        vec!["check"],
    ] {
        let direct = run(&plugin, &args);
        let mut through = vec!["pvc-guard"];
        through.extend(&args);
        assert_eq!(run(kubectl, &through), direct, "kubectl pvc-guard {args:?}");
    }
    let (code, _, _) = run(kubectl, &["pvc-guard", "check", "-f", fixture]);
    assert_eq!(code, 1, "the exit code comes through kubectl");
}

type Log = std::io::Lines<BufReader<std::process::ChildStderr>>;

/// `pvc-guard serve ARGS` until it says where it listens: the process, the
/// address it printed, and the rest of its log.
fn serve_until_listening(args: &[&str]) -> (std::process::Child, String, Log) {
    let mut all = vec!["serve", "--no-cluster"];
    all.extend(args);
    let mut child = Server::command(&all, &[]).spawn().unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in log.by_ref() {
        let line = line.unwrap();
        if let Some(at) = line.find("listening on https://") {
            let address = line[at + "listening on https://".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            return (child, address, log);
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve did not listen: {seen:?}");
}

/// Item 8: `--listen` as `:port` (every IPv4 interface) or `host:port`
/// with a name; durations as Go writes them; sizes with units; bad values
/// refused with the flag and the value named.
#[tokio::test(flavor = "multi_thread")]
async fn listen_addresses_durations_and_sizes_as_kubernetes_users_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_s = ca.to_str().unwrap();
    let (mut child, address, _) = serve_until_listening(&["--listen", ":0", "--write-ca", ca_s]);
    let port = address
        .strip_prefix("0.0.0.0:")
        .unwrap_or_else(|| panic!("{address}"));
    let client = client_for(&[&std::fs::read_to_string(&ca).unwrap()], false);
    let health = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let _ = child.kill();
    let _ = child.wait();

    let ca2 = dir.path().join("ca2.pem");
    let (mut child, address, log) = serve_until_listening(&[
        "--listen",
        "localhost:0",
        "--write-ca",
        ca2.to_str().unwrap(),
        "--drain-timeout",
        "1m30s",
        "--max-body-bytes",
        "8Ki",
        "--request-timeout",
        "1m",
        "--reload-interval",
        "500ms",
    ]);
    let (host, port) = address.rsplit_once(':').unwrap();
    assert!(
        host.trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .unwrap()
            .is_loopback(),
        "{address}"
    );
    let url = format!("https://localhost:{port}/validate");
    let client = client_for(&[&std::fs::read_to_string(&ca2).unwrap()], false);
    let body = |n: usize| {
        let mut review = read_json("admission/mariadb-pod.create.json");
        review["request"]["object"]["metadata"]["annotations"] = json!({"pad": "x".repeat(n)});
        review
    };
    let size = serde_json::to_vec(&body(0)).unwrap().len();
    let (status, _) = post(&client, &url, &body(8192 - size - 100)).await;
    assert_eq!(status, 200, "under 8Ki");
    let (status, _) = post(&client, &url, &body(8192)).await;
    assert_eq!(status, 413, "over 8Ki");
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    child.wait().unwrap();
    let rest: Vec<String> = log.map(Result::unwrap).collect();
    assert!(
        rest.iter().any(|l| l.contains("drain_timeout=90s")),
        "1m30s is 90s: {rest:?}"
    );

    for (flag, value) in [
        ("--listen", "8443"),
        ("--listen", "no-such-host.invalid:8443"),
        ("--drain-timeout", "5x"),
        ("--drain-timeout", "1m30"),
        ("--drain-timeout", "-5s"),
        ("--max-body-bytes", "3Xi"),
        ("--max-body-bytes", "1.5Mi"),
        ("--max-body-bytes", "0"),
    ] {
        // `--flag=value`, so that a value with a leading `-` is a value.
        let (code, _, err) = run_cli(&["serve", &format!("{flag}={value}")], None);
        assert_eq!(code, 2, "{flag} {value}");
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag} ")),
            "{flag} {value}: {err}"
        );
    }
    let (code, _, err) = run_cli(&["controller", "--reload-interval", "2 s"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'--reload-interval "), "{err}");
}

/// The subcommands `pvc-guard --help` lists.
fn subcommands() -> Vec<String> {
    let (_, help, _) = run_cli(&["--help"], None);
    let section = help.split("Commands:\n").nth(1).unwrap();
    let section = section.split("\n\n").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|c| c != "help")
        .collect()
}

/// The entries of a help text's sections (`Options:`, `Arguments:`,
/// `Commands:`): each flag, argument or command with its description, the
/// `[env: ...]`, `[default: ...]` and `[possible values: ...]` notes taken
/// out.
fn help_entries(help: &str) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut in_section = false;
    for line in help.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_section = matches!(line, "Options:" | "Arguments:" | "Commands:");
            continue;
        }
        if !in_section || line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent <= 6 {
            // `  -f, --filename <FILES>...  Files, ...` or a command.
            let trimmed = line.trim_start();
            let (name, text) = match trimmed.find("  ") {
                Some(at) => (&trimmed[..at], trimmed[at..].trim()),
                None => (trimmed, ""),
            };
            entries.push((name.to_string(), text.to_string()));
        } else if let Some(last) = entries.last_mut() {
            last.1.push(' ');
            last.1.push_str(line.trim());
        }
    }
    entries
        .into_iter()
        .map(|(name, text)| (name, without_notes(&text)))
        .collect()
}

/// The text without its bracketed notes.
fn without_notes(text: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// Item 8: every command, flag and argument has help text, in the short
/// (`-h`) and the long (`--help`) layout.
#[test]
fn every_command_flag_and_argument_has_help_text() {
    let commands = subcommands();
    for c in [
        "serve",
        "controller",
        "check",
        "fix",
        "convert",
        "certs",
        "audit",
        "install",
        "uninstall",
        "completion",
        "version",
    ] {
        assert!(commands.iter().any(|x| x == c), "{c} in {commands:?}");
    }
    let (_, top, _) = run_cli(&["--help"], None);
    for (name, text) in help_entries(&top) {
        assert!(!text.is_empty(), "pvc-guard {name} has no help text");
    }
    let mut seen = 0;
    for command in &commands {
        for flag in ["-h", "--help"] {
            let (code, help, err) = run_cli(&[command, flag], None);
            assert_eq!(code, 0, "{command} {flag}: {err}");
            let entries = help_entries(&help);
            assert!(
                !entries.is_empty() || command == "version",
                "{command}: {help}"
            );
            for (name, text) in entries {
                assert!(
                    !text.is_empty(),
                    "pvc-guard {command} {name} has no help text:\n{help}"
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 80, "{seen} entries");
}

/// What bash offers for `words`, the last one being completed, from the
/// script `pvc-guard completion bash` prints.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\n\
         f=$(complete -p pvc-guard | sed -E 's/.*-F ([^ ]+).*/\\1/')\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE='{line}'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         \"$f\" pvc-guard '{}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let mut command = Command::new("bash");
    command.args(["--norc", "-c", &program]);
    let (code, out, err) = run_command(command, None);
    assert_eq!(code, 0, "{err}");
    out.lines().map(str::to_string).collect()
}

/// The possible values `pvc-guard SUBCOMMAND -h` lists for `flag` (the
/// short help lists them on the flag's line).
fn possible_values(subcommand: &str, flag: &str) -> Vec<String> {
    let (_, help, _) = run_cli(&[subcommand, "-h"], None);
    let at = help.find(&format!("{flag} <")).unwrap();
    let rest = &help[at..];
    let list = rest.split("[possible values: ").nth(1).unwrap();
    list[..list.find(']').unwrap()]
        .split(", ")
        .map(str::to_string)
        .collect()
}

/// Item 8: `pvc-guard completion SHELL` prints a script for bash, zsh,
/// fish, elvish and PowerShell; bash's completes subcommands, their flags
/// and the flags' values; zsh's and fish's parse in those shells.
#[test]
fn completion_scripts_complete_subcommands_flags_and_values() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, script, err) = run_cli(&["completion", shell], None);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(script.contains("pvc-guard"), "{shell}");
        std::fs::write(dir.path().join(shell), &script).unwrap();
    }
    let bash = dir.path().join("bash");
    assert_eq!(bash_complete(&bash, &["pvc-guard", "ch"]), ["check"]);
    let mut flags = bash_complete(&bash, &["pvc-guard", "fix", "--"]);
    flags.sort();
    for flag in ["--filename", "--output", "--config", "--mode", "--help"] {
        assert!(flags.iter().any(|f| f == flag), "{flag} in {flags:?}");
    }
    assert_eq!(
        bash_complete(&bash, &["pvc-guard", "fix", "-o", ""]),
        possible_values("fix", "--output")
    );
    assert_eq!(
        bash_complete(&bash, &["pvc-guard", "audit", "--output", "s"]),
        ["sarif"]
    );
    let shells = bash_complete(&bash, &["pvc-guard", "completion", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|s| s == shell), "{shells:?}");
    }

    for (shell, args) in [("zsh", vec!["-n"]), ("fish", vec!["--no-execute"])] {
        let mut command = Command::new(shell);
        command.args(&args).arg(dir.path().join(shell));
        match command.output() {
            Ok(out) => assert!(
                out.status.success(),
                "{shell}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(_) => eprintln!("{shell} is not installed: its script is not parsed"),
        }
    }
}

/// Item 8: `pvc-guard version` and `--version` print the version and the
/// commit the binary was built from.
#[test]
fn version_names_the_commit_it_was_built_from() {
    let (code, version, _) = run_cli(&["version"], None);
    assert_eq!(code, 0);
    let (code, flag, _) = run_cli(&["--version"], None);
    assert_eq!(code, 0);
    assert_eq!(version, flag);
    assert!(
        version.starts_with(&format!("pvc-guard {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match git {
        Ok(out) if out.status.success() => {
            let commit = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                version,
                format!(
                    "pvc-guard {} (commit {})\n",
                    env!("CARGO_PKG_VERSION"),
                    commit.trim()
                )
            );
        }
        _ => eprintln!("not a git checkout: the commit is not compared"),
    }
}

/// A pipe whose reader is already gone.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

/// A reader that goes away (`| head`, a `kubectl apply` that fails) or a
/// closed stderr (`2>&1 | head`) changes nothing in what pvc-guard
/// decides: no panic, the same exit code, the rest of the output as usual.
#[test]
fn a_closed_stdout_or_stderr_changes_no_exit_code() {
    let corpus = data("corpus/17-aks-store-all-in-one.yaml");
    let pg18 = data("manifests/pg18-old-mount.yaml");
    let emptydir = data("manifests/pg-emptydir.yaml");
    for args in [
        vec![
            "check",
            "-f",
            corpus.to_str().unwrap(),
            pg18.to_str().unwrap(),
        ],
        vec!["check", "-o", "sarif", "-f", pg18.to_str().unwrap()],
        vec![
            "fix",
            "-f",
            pg18.to_str().unwrap(),
            corpus.to_str().unwrap(),
        ],
        vec!["fix", "-o", "patch", "-f", emptydir.to_str().unwrap()],
        vec!["convert", "-f", emptydir.to_str().unwrap()],
        vec!["completion", "bash"],
        vec!["version"],
    ] {
        let (code, out, err) = run_cli(&args, None);
        assert!(!out.is_empty(), "{args:?}");

        let no_reader = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&no_reader.stderr);
        assert_eq!(no_reader.status.code(), Some(code), "{args:?}: {said}");
        assert_eq!(said, err, "{args:?}: stderr as usual");

        let no_stderr = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(closed_pipe())
            .output()
            .unwrap();
        assert_eq!(no_stderr.status.code(), Some(code), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&no_stderr.stdout), out, "{args:?}");
    }
}
