//! End to end: `pvc-guard install` applied with `kubectl apply
//! --server-side` to a real kube-apiserver (tests/envtest), which
//! validates every object; run again it keeps the certificate, with
//! `--rotate-certs` the caBundles trust the new CA and the old one; a
//! caBundle that no longer verifies the certificate is refused; and
//! `pvc-guard uninstall` fed to `kubectl delete` removes it.
//!
//! Skipped, with the reason printed, without `KUBEBUILDER_ASSETS` or
//! kubectl; `PVC_GUARD_E2E_REQUIRED=1` (CI) makes a skip a failure.

mod common;
mod envtest;

use base64::Engine;
use envtest::ControlPlane;
use serde::Deserialize;
use serde_json::Value;

/// Not the shipped namespace, so the apply also shows that `--namespace`
/// moved the webhooks' exclusion of their own namespace: were it still
/// `pvc-guard`, the second apply of the Deployments would be sent to a
/// webhook that does not run, and fail.
const NAMESPACE: &str = "guard-e2e";

fn parse(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{e}:\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `pvc-guard install --namespace guard-e2e` against the control plane:
/// what it printed, and what it said on stderr.
fn install(cp: &ControlPlane, extra: &[&str]) -> (String, String) {
    let kubeconfig = cp.admin_kubeconfig.to_str().unwrap();
    let mut args = vec![
        "install",
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        kubeconfig,
    ];
    args.extend(extra);
    let (code, out, err) = common::run_cli(&args, None);
    assert_eq!(code, 0, "pvc-guard {}: {err}", args.join(" "));
    (out, err)
}

fn apply(cp: &ControlPlane, text: &str) {
    cp.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=pvc-guard-install",
            "-f",
            "-",
        ],
        text,
    )
    .ok("kubectl apply --server-side the install");
}

/// The caBundle of both webhook configurations (they must agree).
fn bundle_of(configurations: &[&Value]) -> String {
    let bundles: Vec<String> = configurations
        .iter()
        .map(|c| {
            common::base64_text(
                c["webhooks"][0]["clientConfig"]["caBundle"]
                    .as_str()
                    .expect("a caBundle"),
            )
        })
        .collect();
    assert_eq!(
        bundles[0], bundles[1],
        "both webhook configurations trust the same CAs"
    );
    bundles[0].clone()
}

/// The caBundle the install output carries.
fn printed_bundle(text: &str) -> String {
    let objects = parse(text);
    let hooks: Vec<&Value> = [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ]
    .iter()
    .map(|k| {
        objects
            .iter()
            .find(|o| o["kind"] == *k)
            .expect("a webhook configuration")
    })
    .collect();
    bundle_of(&hooks)
}

/// The caBundle the API server stores.
fn stored_bundle(cp: &ControlPlane) -> String {
    let get = |kind: &str| {
        cp.kubectl(&["get", kind, "pvc-guard", "-o", "json"])
            .ok("kubectl get the webhook configuration")
            .json()
    };
    let (v, m) = (
        get("validatingwebhookconfiguration"),
        get("mutatingwebhookconfiguration"),
    );
    bundle_of(&[&v, &m])
}

fn stored_certificate(cp: &ControlPlane) -> String {
    let secret = cp
        .kubectl(&[
            "get",
            "secret",
            "pvc-guard-tls",
            "-n",
            NAMESPACE,
            "-o",
            "json",
        ])
        .ok("kubectl get the Secret")
        .json();
    common::base64_text(secret["data"]["tls.crt"].as_str().unwrap())
}

fn certificates(bundle: &str) -> Vec<String> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----\n")
        .map(str::to_string)
        .collect()
}

#[test]
fn install_applies_upgrades_keeping_the_certificate_rotates_and_uninstalls() {
    let Some(cp) = envtest::control_plane() else {
        return;
    };

    // A fresh cluster: a new CA, and every object accepted by the API server.
    let (first, said) = install(cp, &[]);
    assert!(said.contains("no Secret guard-e2e/pvc-guard-tls"), "{said}");
    apply(cp, &first);
    let stored = cp
        .kubectl_stdin(&["get", "-f", "-", "-o", "name"], &first)
        .ok("every installed object is stored");
    assert_eq!(
        stored.stdout.lines().count(),
        parse(&first).len(),
        "{stored}"
    );
    let ca = stored_bundle(cp);
    assert_eq!(ca, printed_bundle(&first));
    assert_eq!(certificates(&ca).len(), 1);
    let serving = stored_certificate(cp);

    // Again: an upgrade that keeps the CA and the serving certificate.
    let (second, said) = install(cp, &[]);
    assert!(said.contains("keeping the certificate"), "{said}");
    assert_eq!(printed_bundle(&second), ca);
    apply(cp, &second);
    assert_eq!(stored_bundle(cp), ca, "the caBundle is unchanged");
    assert_eq!(
        stored_certificate(cp),
        serving,
        "the serving certificate is unchanged"
    );

    // --rotate-certs: a new CA first, the one it replaces after it.
    let (rotated, _) = install(cp, &["--rotate-certs"]);
    let kinds: Vec<String> = parse(&rotated)
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("").to_string())
        .collect();
    let position = |k: &str| kinds.iter().position(|x| x == k).unwrap();
    assert!(
        position("ValidatingWebhookConfiguration") < position("Secret"),
        "rotating, the webhooks trust the new CA before the Secret holds its certificate: {kinds:?}"
    );
    apply(cp, &rotated);
    let both = stored_bundle(cp);
    let cas = certificates(&both);
    assert_eq!(cas.len(), 2, "{both}");
    assert_ne!(cas[0], ca);
    assert_eq!(cas[1], ca, "the old CA stays trusted during the rollout");
    assert_ne!(stored_certificate(cp), serving, "a new serving certificate");
    // An upgrade after the rotation keeps the bundle of both.
    let (after, _) = install(cp, &[]);
    assert_eq!(printed_bundle(&after), both);

    // A caBundle that no longer verifies the Secret's certificate (changed
    // by hand, say) is not kept silently: install says to rotate.
    let other = pvc_guard::certs::generate("other", &["other".into()], &[], 1).unwrap();
    let patch = serde_json::json!([{
        "op": "replace",
        "path": "/webhooks/0/clientConfig/caBundle",
        "value": base64::engine::general_purpose::STANDARD.encode(&other.ca_pem),
    }]);
    cp.kubectl(&[
        "patch",
        "validatingwebhookconfiguration",
        "pvc-guard",
        "--type=json",
        "-p",
        &patch.to_string(),
    ])
    .ok("kubectl patch the caBundle");
    let kubeconfig = cp.admin_kubeconfig.to_str().unwrap();
    let (code, out, err) = common::run_cli(
        &[
            "install",
            "--namespace",
            NAMESPACE,
            "--kubeconfig",
            kubeconfig,
        ],
        None,
    );
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(
        err.contains("is not one the webhooks' caBundle trusts") && err.contains("--rotate-certs"),
        "{err}"
    );

    // Uninstall: the webhook configurations go (first), then the rest.
    // A second install in another namespace would take the cluster-wide
    // objects from this one: refused.
    cp.kubectl(&["create", "namespace", "guard-e2e-other"])
        .ok("kubectl create namespace");
    cp.kubectl(&[
        "label",
        "namespace",
        "guard-e2e-other",
        "app.kubernetes.io/name=pvc-guard",
    ])
    .ok("kubectl label namespace");
    let (code, _, err) = common::run_cli(
        &[
            "install",
            "--namespace",
            "guard-e2e-other",
            "--kubeconfig",
            kubeconfig,
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pvc-guard is installed in namespace guard-e2e") && err.contains("uninstall"),
        "{err}"
    );
    // A namespace that exists and is not pvc-guard's is never labelled
    // ignore=true by an install.
    cp.kubectl(&["create", "namespace", "e2e-install-apps"])
        .ok("kubectl create namespace");
    let (code, _, err) = common::run_cli(
        &[
            "install",
            "--namespace",
            "e2e-install-apps",
            "--kubeconfig",
            kubeconfig,
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not pvc-guard's"), "{err}");

    let (code, deletions, err) = common::run_cli(
        &["uninstall", "--namespace", NAMESPACE, "--delete-namespace"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    cp.kubectl_stdin(
        &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
        &deletions,
    )
    .ok("kubectl delete the uninstall");
    for kind in [
        "validatingwebhookconfiguration",
        "mutatingwebhookconfiguration",
        "clusterrole",
        "validatingadmissionpolicy",
    ] {
        let name = if kind == "clusterrole" {
            "pvc-guard-cluster-facts"
        } else if kind == "validatingadmissionpolicy" {
            "pvc-guard-exemption-labels"
        } else {
            "pvc-guard"
        };
        let run = cp.kubectl(&["get", kind, name, "--ignore-not-found", "-o", "name"]);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, ""),
            "{kind} {name}: {run}"
        );
    }
    // Without a controller-manager nothing finalizes the Namespace: it is
    // gone or on its way.
    let ns = cp.kubectl(&[
        "get",
        "namespace",
        NAMESPACE,
        "--ignore-not-found",
        "-o",
        "json",
    ]);
    assert_eq!(ns.code, 0, "{ns}");
    if !ns.stdout.trim().is_empty() {
        assert_eq!(ns.json()["status"]["phase"], "Terminating", "{ns}");
    }
}
