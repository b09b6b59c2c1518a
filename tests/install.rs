//! `pvc-guard install` and `uninstall` through the binary, offline: the
//! output is what `kubectl kustomize` renders of the overlay it stands for
//! (certificate data aside), in apply order, moved whole to another
//! namespace by `--namespace`, with a certificate the webhook can serve
//! and the caBundles trust; and it says to use `--offline` when it cannot
//! read the cluster. tests/e2e_install.rs applies it to a real API server.
//!
//! The comparisons with `kubectl kustomize` print `SKIPPED <test>:` and
//! pass without kubectl (unless `PVC_GUARD_E2E_REQUIRED=1`, as in CI).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::{BIN, Server, copy_dir, kubectl_or_skip, run_cli, run_command};
use pvc_guard::manifest::object_id;
use serde::Deserialize;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{e}:\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `pvc-guard ARGS`, which must succeed: its objects.
fn pvc_guard(args: &[&str]) -> Vec<Value> {
    let (code, out, err) = run_cli(args, None);
    assert_eq!(code, 0, "pvc-guard {}: {err}", args.join(" "));
    parse(&out)
}

fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8(out.stdout).unwrap())
}

/// Each CEL `expression` with its whitespace runs made one space: go-yaml
/// (kustomize) reads the line break before a more-indented line of a
/// folded (`>-`) scalar as two, libyaml (serde_yaml_ng) as one, as the YAML
/// spec says; whitespace means nothing to CEL.
fn cel_spaces(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                match item {
                    Value::String(s) if k == "expression" => {
                        *s = s.split_whitespace().collect::<Vec<_>>().join(" ");
                    }
                    _ => cel_spaces(item),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(cel_spaces),
        _ => {}
    }
}

/// The objects by kind, namespace and name, with the generated
/// certificate data (the Secret's, the caBundles) blanked out.
fn comparable(objects: &[Value]) -> BTreeMap<(String, String, String), Value> {
    let mut out = BTreeMap::new();
    for o in objects {
        let mut o = o.clone();
        cel_spaces(&mut o);
        if o["kind"] == "Secret"
            && let Some(data) = o.get_mut("data").and_then(Value::as_object_mut)
        {
            for v in data.values_mut() {
                *v = json!("<generated>");
            }
        }
        if let Some(hooks) = o.get_mut("webhooks").and_then(Value::as_array_mut) {
            for h in hooks {
                if let Some(b) = h.pointer_mut("/clientConfig/caBundle") {
                    *b = json!("<generated>");
                }
            }
        }
        assert!(out.insert(object_id(&o), o).is_none(), "one object per key");
    }
    out
}

fn assert_same(what: &str, ours: &[Value], theirs: &[Value]) {
    let (ours, theirs) = (comparable(ours), comparable(theirs));
    let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{what}: only in pvc-guard install: {only_ours:?}; only in kubectl kustomize: {only_theirs:?}"
    );
    for (k, o) in &ours {
        assert_eq!(
            o,
            &theirs[k],
            "{what}: {k:?} differs\n--- pvc-guard install\n{}\n--- kubectl kustomize\n{}",
            serde_json::to_string_pretty(o).unwrap(),
            serde_json::to_string_pretty(&theirs[k]).unwrap()
        );
    }
}

/// One source: the binary carries manifests/ as it is in the repository.
#[test]
fn the_binary_embeds_every_file_of_manifests_as_it_is() {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut on_disk = BTreeMap::new();
    let dir = root().join("manifests");
    walk(&dir, &dir, &mut on_disk);
    let embedded: BTreeMap<String, String> = pvc_guard::install::MANIFESTS
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    assert_eq!(embedded, on_disk);
}

/// Each variant of `install --offline` is `kubectl kustomize` of the
/// overlay it names (the self-signed one after `pvc-guard certs`), with
/// the monitoring component when asked, certificate data aside.
#[test]
fn install_prints_what_kubectl_kustomize_renders_of_the_overlay() {
    if !kubectl_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("manifests"), &dir.path().join("manifests"));
    let out = dir.path().join("certs");
    let (code, _, err) = run_cli(&["certs", "--out", out.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    for (overlay, flag) in [
        ("self-signed", None),
        ("cert-manager", Some("--cert-manager")),
    ] {
        for monitoring in [false, true] {
            let overlay_dir = dir.path().join("manifests/overlays").join(overlay);
            let theirs = if monitoring {
                let top = dir.path().join(format!("top-{overlay}"));
                std::fs::create_dir_all(&top).unwrap();
                std::fs::write(
                    top.join("kustomization.yaml"),
                    format!(
                        "resources:\n- ../manifests/overlays/{overlay}\ncomponents:\n- ../manifests/monitoring\n"
                    ),
                )
                .unwrap();
                kustomize(&top)
            } else {
                kustomize(&overlay_dir)
            };
            let mut args = vec!["install", "--offline"];
            args.extend(flag);
            if monitoring {
                args.push("--monitoring");
            }
            let ours = pvc_guard(&args);
            assert_same(&args.join(" "), &ours, &theirs);
        }
    }
}

/// The Namespace comes first and the webhook configurations last, so the
/// API server calls the webhook only once all it calls exists; uninstall
/// is the reverse, and says why claims stay.
#[test]
fn install_and_uninstall_put_objects_in_apply_and_delete_order() {
    for variant in [vec![], vec!["--cert-manager", "--monitoring"]] {
        let mut args = vec!["install", "--offline"];
        args.extend(variant.iter().copied());
        let objects = pvc_guard(&args);
        assert_eq!(objects[0]["kind"], "Namespace", "{args:?}");
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds[kinds.len() - 2..],
            [
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration"
            ],
            "{kinds:?}"
        );
        assert!(!kinds.contains(&"CustomResourceDefinition"), "{kinds:?}");
        let secret = kinds.iter().position(|k| *k == "Secret");
        let deployment = kinds.iter().position(|k| *k == "Deployment").unwrap();
        assert!(secret.is_none_or(|s| s < deployment), "{kinds:?}");

        // The namespace stays unless asked for: it may hold more than
        // pvc-guard put there.
        let mut args = vec!["uninstall"];
        args.extend(variant.iter().copied());
        let (code, out, err) = run_cli(&args, None);
        assert_eq!(code, 0, "{err}");
        assert!(
            parse(&out).iter().all(|o| o["kind"] != "Namespace"),
            "{out}"
        );
        assert!(out.contains("--delete-namespace deletes it"), "{out}");
        args.push("--delete-namespace");
        let (code, out, err) = run_cli(&args, None);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("PersistentVolumeClaims pvc-guard created")
                && out.contains("app.kubernetes.io/managed-by=pvc-guard"),
            "{out}"
        );
        let deleted = parse(&out);
        let order: Vec<&str> = deleted
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            order[..2],
            [
                "ValidatingWebhookConfiguration",
                "MutatingWebhookConfiguration"
            ]
        );
        assert_eq!(order.last(), Some(&"Namespace"));
        // What install creates, each once, as kind and name alone.
        let mut installed: Vec<_> = objects.iter().map(object_id).collect();
        let mut listed: Vec<_> = deleted.iter().map(object_id).collect();
        installed.sort();
        listed.sort();
        assert_eq!(installed, listed);
        for d in &deleted {
            assert!(d.get("spec").is_none() && d.get("data").is_none(), "{d}");
        }
    }
}

/// Strings anywhere in `v` with their JSON pointers.
fn strings(v: &Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((at, s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                strings(
                    item,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
}

/// `--namespace` moves everything: no object stays in pvc-guard, and
/// every place the namespace is written inside a string follows.
#[test]
fn namespace_moves_every_object_and_every_mention() {
    for variant in [vec!["--monitoring"], vec!["--cert-manager", "--monitoring"]] {
        let mut shipped_args = vec!["install", "--offline"];
        shipped_args.extend(variant.iter().copied());
        let mut moved_args = shipped_args.clone();
        moved_args.extend(["--namespace", "team-guard"]);
        let shipped = comparable(&pvc_guard(&shipped_args));
        let moved = comparable(&pvc_guard(&moved_args));
        assert_eq!(shipped.len(), moved.len());
        let mut changed = Vec::new();
        for ((kind, ns, name), o) in &shipped {
            let new_ns = if ns.is_empty() { "" } else { "team-guard" };
            let new_name = if kind == "Namespace" {
                "team-guard"
            } else {
                name
            };
            let m = moved
                .get(&(kind.clone(), new_ns.to_string(), new_name.to_string()))
                .unwrap_or_else(|| panic!("{kind} {name} is not in team-guard"));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            strings(o, String::new(), &mut a);
            strings(m, String::new(), &mut b);
            assert_eq!(a.len(), b.len(), "{kind} {name}");
            for ((path, before), (path2, after)) in a.iter().zip(&b) {
                assert_eq!(path, path2);
                if before != after {
                    changed.push(format!("{kind}/{name}{path}"));
                }
            }
        }
        for o in moved.values() {
            let mut all = Vec::new();
            strings(o, String::new(), &mut all);
            for (path, s) in all {
                for stale in [
                    "pvc-guard.pvc-guard",
                    "namespace=\"pvc-guard\"",
                    "namespace=\\\"pvc-guard\\\"",
                ] {
                    assert!(!s.contains(stale), "{} {path}: {s}", object_id(o).2);
                }
                if path.ends_with("/namespace") || path.contains("/matchNames/") {
                    assert_ne!(s, "pvc-guard", "{:?} {path}", object_id(o));
                }
            }
        }
        let expect: &[&str] = &[
            "ValidatingWebhookConfiguration/pvc-guard/webhooks/0/clientConfig/service/namespace",
            "ValidatingWebhookConfiguration/pvc-guard/webhooks/0/namespaceSelector/matchExpressions/0/values/3",
            "MutatingWebhookConfiguration/pvc-guard/webhooks/0/clientConfig/service/namespace",
            "MutatingWebhookConfiguration/pvc-guard/webhooks/0/namespaceSelector/matchExpressions/0/values/3",
            "ClusterRoleBinding/pvc-guard-cluster-facts/subjects/0/namespace",
            "ClusterRoleBinding/pvc-guard-claim-controller/subjects/0/namespace",
            "RoleBinding/pvc-guard-claim-controller-lease/subjects/0/namespace",
            "ServiceMonitor/pvc-guard/spec/namespaceSelector/matchNames/0",
            "PrometheusRule/pvc-guard/spec/groups/0/rules/0/expr",
            "ConfigMap/pvc-guard-dashboard/data/pvc-guard-dashboard.json",
        ];
        for e in expect {
            assert!(
                changed.iter().any(|c| c == e),
                "{variant:?}: {e} not moved: {changed:#?}"
            );
        }
        if variant.contains(&"--cert-manager") {
            for e in [
                "ValidatingWebhookConfiguration/pvc-guard/metadata/annotations/cert-manager.io~1inject-ca-from",
                "Certificate/pvc-guard/spec/commonName",
                "Certificate/pvc-guard/spec/dnsNames/1",
                "Certificate/pvc-guard/spec/dnsNames/3",
            ] {
                assert!(
                    changed.iter().any(|c| c == e),
                    "{e} not moved: {changed:#?}"
                );
            }
        }
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The Secret's certificate, served by `pvc-guard serve`, is trusted by a
/// client that trusts only the caBundle, for the Service's DNS name in
/// the chosen namespace; both webhook configurations carry that bundle.
#[tokio::test]
async fn the_generated_certificate_is_served_and_trusted_for_the_service_name() {
    let objects = pvc_guard(&["install", "--offline", "-n", "team-guard"]);
    let secret = find(&objects, "Secret", "pvc-guard-tls");
    assert_eq!(secret["metadata"]["namespace"], "team-guard");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let bundles: Vec<&Value> = [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ]
    .iter()
    .map(|k| &find(&objects, k, "pvc-guard")["webhooks"][0]["clientConfig"]["caBundle"])
    .collect();
    assert_eq!(bundles[0], bundles[1]);
    let bundle = common::base64_text(bundles[0].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(
        &cert,
        common::base64_text(secret["data"]["tls.crt"].as_str().unwrap()),
    )
    .unwrap();
    std::fs::write(
        &key,
        common::base64_text(secret["data"]["tls.key"].as_str().unwrap()),
    )
    .unwrap();
    let server = Server::start(&[
        "--no-cluster",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    for host in [
        "pvc-guard.team-guard.svc",
        "pvc-guard.team-guard.svc.cluster.local",
    ] {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(bundle.as_bytes()).unwrap())
            .resolve(host, ([127, 0, 0, 1], server.port).into())
            .build()
            .unwrap();
        let response = client
            .get(format!("https://{host}:{}/healthz", server.port))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(response.status(), 200, "{host}");
    }
    // A second offline install is a new CA.
    let again = pvc_guard(&["install", "--offline", "-n", "team-guard"]);
    assert_ne!(
        find(&again, "ValidatingWebhookConfiguration", "pvc-guard")["webhooks"][0]["clientConfig"]
            ["caBundle"],
        *bundles[0]
    );
}

/// `--image`, `--mode` and `--failure-policy` change what they name and
/// nothing else.
#[test]
fn image_mode_and_failure_policy_flags() {
    let shipped = comparable(&pvc_guard(&["install", "--offline"]));
    let args = [
        "install",
        "--offline",
        "--image",
        "registry.example/pvc-guard:0.1.0",
        "--mode",
        "warn",
        "--failure-policy",
        "Ignore",
    ];
    let changed = comparable(&pvc_guard(&args));
    let mut differ = Vec::new();
    for (k, o) in &shipped {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        strings(o, String::new(), &mut a);
        strings(&changed[k], String::new(), &mut b);
        for ((path, before), (_, after)) in a.iter().zip(&b) {
            if before != after {
                differ.push((format!("{}/{}{path}", k.0, k.2), after.clone()));
            }
        }
    }
    let image = "registry.example/pvc-guard:0.1.0".to_string();
    let config = changed[&(
        "ConfigMap".into(),
        "pvc-guard".into(),
        "pvc-guard-config".into(),
    )]["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        config.contains("\nmode: warn\n") && !config.contains("mode: enforce"),
        "{config}"
    );
    assert_eq!(
        differ,
        vec![
            (
                "ConfigMap/pvc-guard-config/data/config.yaml".to_string(),
                config
            ),
            (
                "Deployment/pvc-guard/spec/template/spec/containers/0/image".to_string(),
                image.clone()
            ),
            (
                "Deployment/pvc-guard-controller/spec/template/spec/containers/0/image".to_string(),
                image
            ),
            (
                "ValidatingWebhookConfiguration/pvc-guard/webhooks/0/failurePolicy".to_string(),
                "Ignore".to_string()
            ),
        ]
    );
}

/// A bad flag value is a usage error in one line, not a panic.
#[test]
fn bad_flags_are_errors() {
    for (args, says) in [
        (
            vec!["install", "--offline", "-n", "Not_A_Namespace"],
            "--namespace",
        ),
        (
            vec!["install", "--offline", "--image", "has space"],
            "--image",
        ),
        (
            vec!["install", "--offline", "--rotate-certs"],
            "--rotate-certs",
        ),
        (
            vec!["install", "--cert-manager", "--rotate-certs"],
            "--rotate-certs",
        ),
        (
            vec!["install", "--offline", "--failure-policy", "Sometimes"],
            "--failure-policy",
        ),
        (vec!["uninstall", "-n", "a.b"], "--namespace"),
        (
            vec!["install", "--offline", "-n", "kube-system"],
            "a namespace of its own",
        ),
        (
            vec!["install", "--offline", "-n", "default"],
            "a namespace of its own",
        ),
        (
            vec!["uninstall", "-n", "kube-public", "--delete-namespace"],
            "a namespace of its own",
        ),
    ] {
        let (code, out, err) = run_cli(&args, None);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Without `--offline`, an API server that cannot be reached (or no
/// kubeconfig at all) is an error that says to use `--offline`.
#[test]
fn an_unreachable_cluster_is_an_error_suggesting_offline() {
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ca = pvc_guard::certs::generate("other", &["localhost".into()], &[], 1).unwrap();
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": format!("https://127.0.0.1:{closed}"),
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(&ca.ca_pem),
        }}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    });
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, config.to_string()).unwrap();
    for args in [
        vec!["install", "--kubeconfig", kubeconfig.to_str().unwrap()],
        vec!["install", "--rotate-certs"],
    ] {
        let mut command = Command::new(BIN);
        command
            .args(&args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", dir.path());
        let (code, out, err) = run_command(command, None);
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}: {err}");
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.starts_with("pvc-guard: ") && last.contains("--offline"),
            "{args:?}: {err}"
        );
    }
}
