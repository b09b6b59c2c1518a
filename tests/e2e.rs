//! End to end: pvc-guard installed from manifests/ into a real
//! kube-apiserver (tests/envtest), driven with kubectl as a user drives it.
//!
//! Skipped, with the reason printed, without `KUBEBUILDER_ASSETS` or
//! kubectl; `PVC_GUARD_E2E_REQUIRED=1` (CI) makes a skip a failure.

mod common;
mod envtest;

use envtest::install::Scenario;
use serde_json::Value;

/// A postgres Deployment with no volume: the mutating webhook fixes it.
fn postgres_no_volume(namespace: &str, name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: postgres
        image: postgres:16.4
        env:
        - {{name: POSTGRES_PASSWORD, value: not-a-secret}}
"#
    )
}

/// A postgres DaemonSet with no volume: denied (a DaemonSet is never fixed).
fn postgres_daemonset(namespace: &str, name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
  namespace: {namespace}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: postgres
        image: postgres:16.4
"#
    )
}

/// A postgres Deployment on a hostPath: allowed with a warning.
fn postgres_host_path(namespace: &str, name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: postgres
        image: postgres:16.4
        volumeMounts:
        - {{name: data, mountPath: /var/lib/postgresql/data}}
      volumes:
      - name: data
        hostPath: {{path: /srv/{name}}}
"#
    )
}

fn volumes(object: &Value) -> &Vec<Value> {
    object
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no volumes in {object}"))
}

/// The claim the pod template mounts at `path` in container 0, if any.
fn claim_at(object: &Value, path: &str) -> Option<String> {
    let container = object.pointer("/spec/template/spec/containers/0")?;
    let mount = container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["mountPath"] == path)?;
    volumes(object)
        .iter()
        .find(|v| v["name"] == mount["name"])?
        .pointer("/persistentVolumeClaim/claimName")?
        .as_str()
        .map(str::to_string)
}

/// The lines kubectl printed for the admission warnings.
fn warning_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("Warning: "))
        .collect()
}

#[test]
fn dry_run_denies_warns_and_fixes_and_stores_nothing() {
    let Some(t) = Scenario::start("dryrun", &[("apps", &[])]) else {
        return;
    };
    let ns = t.ns("apps");
    let dry = ["apply", "--dry-run=server", "-o", "json", "-f", "-"];

    let denied = t.kubectl_stdin(&dry, &postgres_daemonset(&ns, "replicated-db"));
    assert_eq!(denied.code, 1, "{denied}");
    assert!(
        denied.stderr.contains(
            "admission webhook \"validate.pvc-guard.io\" denied the request: [ephemeral-data-path]"
        ),
        "{denied}"
    );

    let warned = t.kubectl_stdin(&dry, &postgres_host_path(&ns, "node-db"));
    assert_eq!(warned.code, 0, "{warned}");
    let lines = warning_lines(&warned.stderr);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Warning: [node-local-data-path]")),
        "{warned}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Warning: [database-in-deployment]")),
        "{warned}"
    );
    let object = warned.json();
    assert_eq!(
        object.pointer("/spec/template/spec/volumes/0/hostPath/path"),
        Some(&Value::from("/srv/node-db")),
        "a warning changes nothing: {object}"
    );

    let fixed = t.kubectl_stdin(&dry, &postgres_no_volume(&ns, "orders-db"));
    assert_eq!(fixed.code, 0, "{fixed}");
    let object = fixed.json();
    assert_eq!(
        claim_at(&object, "/var/lib/postgresql/data").as_deref(),
        Some("orders-db-postgres-data"),
        "{object}"
    );
    assert_eq!(
        object.pointer("/spec/strategy/type"),
        Some(&Value::from("Recreate"))
    );
    let record = object
        .pointer("/metadata/annotations/pvc-guard.io~1mutated")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no pvc-guard.io/mutated record: {object}"));
    let record: Value = serde_json::from_str(record).unwrap();
    assert!(
        record["rules"]
            .as_array()
            .unwrap()
            .contains(&Value::from("ephemeral-data-path")),
        "{record}"
    );
    assert!(
        !warning_lines(&fixed.stderr).is_empty(),
        "each change is announced: {fixed}"
    );

    let stored = t
        .kubectl(&[
            "get",
            "deployments,daemonsets,persistentvolumeclaims",
            "-n",
            &ns,
            "-o",
            "name",
        ])
        .ok("list what is stored");
    assert_eq!(stored.stdout.trim(), "", "a dry run stores nothing");
}

/// The stored object, as JSON.
fn get(t: &Scenario, kind: &str, namespace: &str, name: &str) -> Value {
    t.kubectl(&["get", kind, name, "-n", namespace, "-o", "json"])
        .ok(&format!("kubectl get {kind} {namespace}/{name}"))
        .json()
}

#[test]
fn a_created_database_is_fixed_and_gets_its_claim_from_the_controller() {
    let Some(t) = Scenario::start("create", &[("shop", &[])]) else {
        return;
    };
    let ns = t.ns("shop");
    let created = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &postgres_no_volume(&ns, "orders-db"),
        )
        .ok("kubectl create");
    assert!(
        !warning_lines(&created.stderr).is_empty(),
        "kubectl shows what was changed: {created}"
    );

    let stored = get(&t, "deployment", &ns, "orders-db");
    assert_eq!(
        claim_at(&stored, "/var/lib/postgresql/data").as_deref(),
        Some("orders-db-postgres-data"),
        "{stored}"
    );
    assert_eq!(
        stored.pointer("/spec/strategy/type"),
        Some(&Value::from("Recreate"))
    );
    assert!(
        stored.pointer("/spec/strategy/rollingUpdate").is_none(),
        "{stored}"
    );
    let record = stored
        .pointer("/metadata/annotations/pvc-guard.io~1mutated")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no record: {stored}"));
    assert!(record.contains("orders-db-postgres-data"), "{record}");

    // The claim controller creates the claim once the Deployment is stored.
    let claim = envtest::eventually(
        "the claim controller creates orders-db-postgres-data",
        || {
            let run = t.kubectl(&[
                "get",
                "pvc",
                "orders-db-postgres-data",
                "-n",
                &ns,
                "-o",
                "json",
            ]);
            if run.code == 0 {
                Ok(run.json())
            } else {
                Err(run.to_string())
            }
        },
    );
    assert!(
        claim.pointer("/metadata/ownerReferences").is_none(),
        "deleting the Deployment must never delete the data: {claim}"
    );
    assert_eq!(
        claim.pointer("/metadata/annotations/pvc-guard.io~1created-for"),
        Some(&Value::from("Deployment/orders-db")),
        "{claim}"
    );
    // Made by `pvc-guard controller` with its own token: the webhook's
    // cannot create a claim at all.
    let create = ["create", "persistentvolumeclaims", "-n", &ns];
    assert_eq!(can_i(&t, WEBHOOK_ACCOUNT, &create), "no");
    assert_eq!(can_i(&t, CONTROLLER_ACCOUNT, &create), "yes");
    assert!(
        t.install.with_controller(|c| controller_logged(c, |l| {
            l["message"] == "created claim"
                && l["namespace"] == ns.as_str()
                && l["claim"] == "orders-db-postgres-data"
        })),
        "the claim controller says it created the claim"
    );
    assert_eq!(
        claim.pointer("/metadata/labels/app.kubernetes.io~1managed-by"),
        Some(&Value::from("pvc-guard")),
        "{claim}"
    );
    assert_eq!(
        claim.pointer("/spec/resources/requests/storage"),
        Some(&Value::from("10Gi")),
        "{claim}"
    );
    assert_eq!(
        claim.pointer("/spec/accessModes"),
        Some(&serde_json::json!(["ReadWriteOnce"])),
        "{claim}"
    );
    let listed = t.kubectl(&["get", "pvc", "-n", &ns]).ok("kubectl get pvc");
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with("orders-db-postgres-data ")),
        "{listed}"
    );
}

const WEBHOOK_ACCOUNT: &str = "system:serviceaccount:pvc-guard:pvc-guard";
const CONTROLLER_ACCOUNT: &str = "system:serviceaccount:pvc-guard:pvc-guard-controller";

/// `kubectl auth can-i ARGS --as=ACCOUNT`: "yes" or "no".
fn can_i(t: &Scenario, account: &str, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend(args);
    let who = format!("--as={account}");
    all.push(&who);
    let run = t.kubectl(&all);
    // can-i exits 1 for "no"; anything else is a failure of kubectl.
    assert!(run.code == 0 || run.stdout.trim() == "no", "{run}");
    run.stdout.trim().to_string()
}

/// Some line of the claim controller's JSON log satisfies `matches`.
fn controller_logged(controller: &envtest::install::Pod, matches: impl Fn(&Value) -> bool) -> bool {
    controller
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|l| matches(&l))
}

#[test]
fn re_applying_the_original_manifest_keeps_the_claim_mount() {
    let Some(t) = Scenario::start("gitops", &[("apps", &[])]) else {
        return;
    };
    let ns = t.ns("apps");
    let data = "/var/lib/postgresql/data";
    let restores = || {
        t.webhook.metric(
            "pvc_guard_admission_requests_total",
            &[
                ("endpoint", "mutate"),
                ("operation", "UPDATE"),
                ("decision", "patch"),
            ],
        )
    };

    // kubectl apply, then the same file again, then kubectl replace of it
    // (what a GitOps tool syncing with replace does).
    let original = postgres_no_volume(&ns, "orders-db");
    t.kubectl_stdin(&["apply", "-f", "-"], &original)
        .ok("first apply");
    let claim = claim_at(&get(&t, "deployment", &ns, "orders-db"), data);
    assert_eq!(claim.as_deref(), Some("orders-db-postgres-data"));
    t.kubectl_stdin(&["apply", "-f", "-"], &original)
        .ok("second apply");
    assert_eq!(
        claim_at(&get(&t, "deployment", &ns, "orders-db"), data),
        claim
    );

    let before = restores();
    let replaced = t
        .kubectl_stdin(&["replace", "-f", "-"], &original)
        .ok("replace");
    let stored = get(&t, "deployment", &ns, "orders-db");
    assert_eq!(
        claim_at(&stored, data),
        claim,
        "the original has no claim volume; the webhook puts it back: {replaced}\n{stored}"
    );
    assert_eq!(restores(), before + 1.0, "the UPDATE was patched");

    // Server-side apply, as Flux and Argo CD's server-side mode do.
    let original = postgres_no_volume(&ns, "ledger-db");
    let ssa = [
        "apply",
        "--server-side",
        "--field-manager=gitops",
        "-f",
        "-",
    ];
    t.kubectl_stdin(&ssa, &original)
        .ok("first server-side apply");
    let claim = claim_at(&get(&t, "deployment", &ns, "ledger-db"), data);
    assert_eq!(claim.as_deref(), Some("ledger-db-postgres-data"));
    let again = t
        .kubectl_stdin(&ssa, &original)
        .ok("second server-side apply");
    let stored = get(&t, "deployment", &ns, "ledger-db");
    assert_eq!(claim_at(&stored, data), claim, "{again}\n{stored}");
}

/// The index of the volume named `name` in a stored Deployment.
fn volume_index(object: &Value, name: &str) -> usize {
    volumes(object)
        .iter()
        .position(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}: {object}"))
}

#[test]
fn a_claim_a_person_swaps_in_is_kept_over_the_record() {
    let Some(t) = Scenario::start("restored", &[("apps", &[])]) else {
        return;
    };
    let ns = t.ns("apps");
    let data = "/var/lib/postgresql/data";
    let patched = || {
        t.webhook.metric(
            "pvc_guard_admission_requests_total",
            &[
                ("endpoint", "mutate"),
                ("operation", "UPDATE"),
                ("decision", "patch"),
            ],
        )
    };
    t.kubectl_stdin(&["apply", "-f", "-"], &postgres_no_volume(&ns, "orders-db"))
        .ok("create");
    let stored = get(&t, "deployment", &ns, "orders-db");
    assert_eq!(
        claim_at(&stored, data).as_deref(),
        Some("orders-db-postgres-data")
    );
    // The operator restored a backup into orders-db-v2 and points the pod
    // at it: the record still names the old claim, and the person wins.
    let before = patched();
    let i = volume_index(&stored, "pvc-guard-postgres");
    let swap = format!(
        r#"[{{"op":"replace","path":"/spec/template/spec/volumes/{i}/persistentVolumeClaim/claimName","value":"orders-db-v2"}}]"#
    );
    let run = t
        .kubectl(&[
            "-n",
            &ns,
            "patch",
            "deployment",
            "orders-db",
            "--type",
            "json",
            "-p",
            &swap,
        ])
        .ok("swap the claim");
    assert!(
        run.stderr.contains("no longer matches"),
        "kubectl shows the warning: {run}"
    );
    let after = get(&t, "deployment", &ns, "orders-db");
    assert_eq!(
        claim_at(&after, data).as_deref(),
        Some("orders-db-v2"),
        "{after}"
    );
    assert_eq!(patched(), before, "nothing was put back");
}

#[test]
fn excluded_and_ignored_namespaces_never_reach_the_webhook() {
    let Some(install) = envtest::install::install() else {
        return;
    };
    // The namespaceSelector alone must keep these out: label them as this
    // test's, so only the shipped expressions stand between them and it.
    for ns in ["kube-system", "pvc-guard"] {
        install
            .cp
            .kubectl(&[
                "label",
                "namespace",
                ns,
                &format!("{}=exclusions", envtest::TEST_LABEL),
                "--overwrite",
            ])
            .ok("label");
    }
    let t = Scenario::start_with(
        install,
        "exclusions",
        &[
            ("covered", &[]),
            ("ignored", &[("pvc-guard.io/ignore", "true")]),
        ],
        install.docs.clone(),
    );
    let dry = ["create", "--dry-run=server", "-o", "json", "-f", "-"];
    let before = t.requests();
    for ns in [
        "kube-system".to_string(),
        "pvc-guard".to_string(),
        t.ns("ignored"),
    ] {
        let run = t
            .kubectl_stdin(&dry, &postgres_no_volume(&ns, "orders-db"))
            .ok(&ns);
        assert!(
            run.json()
                .pointer("/metadata/annotations/pvc-guard.io~1mutated")
                .is_none(),
            "{ns}: {run}"
        );
        assert_eq!(t.requests(), before, "{ns} reached the webhook");
    }
    // The same request where the webhooks apply reaches both.
    let covered = t
        .kubectl_stdin(&dry, &postgres_no_volume(&t.ns("covered"), "orders-db"))
        .ok("covered");
    assert!(
        covered
            .json()
            .pointer("/metadata/annotations/pvc-guard.io~1mutated")
            .is_some(),
        "{covered}"
    );
    assert_eq!(t.requests(), before + 2);
}

#[test]
fn namespace_labels_set_the_mode_and_the_mutation() {
    let Some(t) = Scenario::start(
        "modes",
        &[
            ("enforce", &[]),
            ("warn", &[("pvc-guard.io/mode", "warn")]),
            ("audit", &[("pvc-guard.io/mode", "audit")]),
            ("no-fix", &[("pvc-guard.io/mutate", "false")]),
        ],
    ) else {
        return;
    };
    let dry = ["create", "--dry-run=server", "-o", "json", "-f", "-"];
    let denied = "denied the request: [ephemeral-data-path]";

    let enforce = t.kubectl_stdin(&dry, &postgres_daemonset(&t.ns("enforce"), "db"));
    assert_eq!(enforce.code, 1, "{enforce}");
    assert!(enforce.stderr.contains(denied), "{enforce}");

    let warn = t
        .kubectl_stdin(&dry, &postgres_daemonset(&t.ns("warn"), "db"))
        .ok("warn");
    assert!(
        warning_lines(&warn.stderr)
            .iter()
            .any(|l| l.starts_with("Warning: [ephemeral-data-path]")),
        "{warn}"
    );

    let before = t.requests();
    let audit = t
        .kubectl_stdin(&dry, &postgres_daemonset(&t.ns("audit"), "db"))
        .ok("audit");
    assert_eq!(warning_lines(&audit.stderr), Vec::<&str>::new(), "{audit}");
    assert_eq!(
        t.requests(),
        before + 2,
        "audit mode is still judged, silently"
    );

    // No fix where mutation is off, so the validator denies what it would fix.
    let no_fix = t.kubectl_stdin(&dry, &postgres_no_volume(&t.ns("no-fix"), "orders-db"));
    assert_eq!(no_fix.code, 1, "{no_fix}");
    assert!(no_fix.stderr.contains(denied), "{no_fix}");
}

/// postgres:16 on an emptyDir in a Pod, whose controller is a (made-up)
/// ReplicaSet when `owned`, as a ReplicaSet controller writes it.
fn postgres_pod(namespace: &str, name: &str, owned: bool) -> String {
    let owner = if owned {
        "  ownerReferences:\n  - apiVersion: apps/v1\n    kind: ReplicaSet\n    name: orders-db-5d4f8b\n    uid: 0b7e7c3e-9d55-4d4e-9a53-2f4b8d1c6a10\n    controller: true\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
{owner}spec:
  containers:
  - name: postgres
    image: postgres:16
    volumeMounts:
    - {{name: data, mountPath: /var/lib/postgresql/data}}
  volumes:
  - {{name: data, emptyDir: {{}}}}
"#
    )
}

/// A Role that lets the replica-set controller's identities (and an
/// impostor of the same name in `namespace`) create Pods there.
fn pod_writers(namespace: &str) -> Vec<Value> {
    vec![
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "replicaset-controller", "namespace": "kube-system"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "replicaset-controller", "namespace": namespace}}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pod-writer", "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "pod-writer", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-writer"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "replicaset-controller", "namespace": "kube-system"},
            {"kind": "ServiceAccount", "name": "replicaset-controller", "namespace": namespace},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-controller-manager"},
        ]}),
    ]
}

#[test]
fn match_conditions_skip_owned_objects_only_for_the_control_plane() {
    let Some(t) = Scenario::start("owners", &[("apps", &[])]) else {
        return;
    };
    let ns = t.ns("apps");
    t.cp.apply(&pod_writers(&ns));
    let controller =
        t.cp.service_account_kubeconfig("kube-system", "replicaset-controller");
    let impostor =
        t.cp.service_account_kubeconfig(&ns, "replicaset-controller");
    let create = ["create", "-f", "-"];

    // The control plane's controllers writing owned objects: skipped.
    let before = t.requests();
    t.cp.kubectl_as(
        &controller,
        &create,
        Some(&postgres_pod(&ns, "by-controller", true)),
    )
    .ok("the replicaset-controller service account creates an owned Pod");
    t.kubectl_stdin(
        &["create", "--as=system:kube-controller-manager", "-f", "-"],
        &postgres_pod(&ns, "by-controller-manager", true),
    )
    .ok("system:kube-controller-manager creates an owned Pod");
    assert_eq!(
        t.requests(),
        before,
        "matchConditions skip the controllers' writes"
    );
    get(&t, "pod", &ns, "by-controller");

    // Anyone else claiming an owner is sent to the webhook. The mutating
    // webhook is called first, whatever the validating one answers later.
    let mutate_calls = || t.webhook.admission_requests().1;
    let reaches = |who: &str, kubeconfig: &std::path::Path, pod: &str| {
        let before = mutate_calls();
        let run = t.cp.kubectl_as(kubeconfig, &create, Some(pod));
        assert_eq!(mutate_calls(), before + 1, "{who}: {run}");
    };
    reaches(
        "the admin's owned Pod",
        &t.cp.admin_kubeconfig,
        &postgres_pod(&ns, "by-admin", true),
    );
    reaches(
        "a service account of the controller's name outside kube-system",
        &impostor,
        &postgres_pod(&ns, "by-impostor", true),
    );
    reaches(
        "the controller's Pod without an owner",
        &controller,
        &postgres_pod(&ns, "unowned", false),
    );
}

#[test]
fn an_owned_pod_written_by_a_user_is_judged_in_full() {
    let Some(t) = Scenario::start("owners-user", &[("apps", &[])]) else {
        return;
    };
    let ns = t.ns("apps");
    let run = t.kubectl_stdin(&["create", "-f", "-"], &postgres_pod(&ns, "by-admin", true));
    assert_eq!(run.code, 1, "claiming an owner skips nothing: {run}");
    assert!(
        run.stderr.contains(
            "admission webhook \"validate.pvc-guard.io\" denied the request: [ephemeral-data-path]"
        ),
        "{run}"
    );
}

#[test]
fn failure_policies_fail_closed_for_validation_and_open_for_mutation() {
    let Some(mut t) = Scenario::start("failure", &[("apps", &[])]) else {
        return;
    };
    let ns = t.ns("apps");
    t.webhook.stop();
    let down = t.kubectl_stdin(
        &["create", "-f", "-"],
        &postgres_no_volume(&ns, "orders-db"),
    );
    assert_eq!(down.code, 1, "{down}");
    // The mutating webhook is called first; had its failure not been
    // ignored, the error would name it.
    assert!(
        down.stderr
            .contains("failed calling webhook \"validate.pvc-guard.io\""),
        "{down}"
    );
    assert!(!down.stderr.contains("mutate.pvc-guard.io"), "{down}");
    let stored = t.kubectl(&["get", "deployment", "orders-db", "-n", &ns]);
    assert_eq!(stored.code, 1, "nothing was stored: {stored}");

    t.webhook.restart();
    t.kubectl_stdin(
        &["create", "-f", "-"],
        &postgres_no_volume(&ns, "orders-db"),
    )
    .ok("create once pvc-guard is back");
    assert_eq!(
        claim_at(
            &get(&t, "deployment", &ns, "orders-db"),
            "/var/lib/postgresql/data"
        )
        .as_deref(),
        Some("orders-db-postgres-data")
    );
}

/// The PEM certificates in `pem`, in order.
fn certificates(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter_map(|c| c.find("-----BEGIN").map(|i| c[i..].to_string()))
        .collect()
}

#[test]
fn certificate_rotation_fails_no_request() {
    let Some(install) = envtest::install::install() else {
        return;
    };
    let layout = envtest::install::Layout::new(install.cp);
    let old_docs = layout.render(install.cp);
    let mut t = Scenario::start_with(
        install,
        "rotation",
        &[
            ("apps", &[]),
            ("canary", &[(envtest::TEST_LABEL, "rotation-canary")]),
        ],
        old_docs.clone(),
    );
    let ns = t.ns("apps");
    let old_ca = envtest::install::ca_bundle(&old_docs);

    // Creates through the API server, both webhooks checked on each: a
    // mutating call that failed would be ignored, so the fix must be there.
    /// Ends the create loop when the test ends, also by a failed assertion.
    struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_guard = Stop(stop.clone());
    let results = std::sync::Arc::new(std::sync::Mutex::new((0usize, Vec::<String>::new())));
    let looping = {
        let (stop, results, cp, ns) = (stop.clone(), results.clone(), t.cp, ns.clone());
        let path = format!("/apis/apps/v1/namespaces/{ns}/deployments");
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let (status, answer) =
                    cp.create(&path, &postgres_no_volume(&ns, &format!("db-{n}")), true);
                let fixed = status == 201
                    && answer
                        .pointer("/metadata/annotations/pvc-guard.io~1mutated")
                        .is_some();
                let mut r = results.lock().unwrap();
                if fixed {
                    r.0 += 1;
                } else {
                    r.1.push(format!("{status} {answer}"));
                }
                drop(r);
                // A steady trickle, not a flood: the machine is small.
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    // A failed create ends the test at once rather than at a deadline.
    let no_failures = || {
        let r = results.lock().unwrap();
        assert!(r.1.is_empty(), "creates failed: {:#?}", r.1);
    };
    let passed = |more: usize| {
        let target = results.lock().unwrap().0 + more;
        envtest::eventually(&format!("{more} more creates pass"), || {
            no_failures();
            let r = results.lock().unwrap();
            if r.0 >= target {
                Ok(())
            } else {
                Err(format!("{} passed, failures: {:?}", r.0, r.1))
            }
        });
    };
    passed(3);

    // pvc-guard certs --force, then the overlay applied: the bundle trusts
    // the new CA and the old one, while the server still serves the old
    // certificate.
    layout.certs(true);
    let new_docs = layout.render(install.cp);
    let bundle = certificates(&envtest::install::ca_bundle(&new_docs));
    assert_eq!(bundle.len(), 2, "{bundle:?}");
    assert_eq!(
        bundle[1],
        certificates(&old_ca)[0],
        "the previous CA follows the new one"
    );
    t.register(&new_docs, "rotation");
    // A canary registered after the new bundle, with a rule set of its own
    // namespace: once the API server calls it, it has read the new bundle
    // too (each kind's configurations arrive in the order they were written).
    t.register(&new_docs, "rotation-canary");
    let canary = t.ns("canary");
    envtest::eventually("the API server calls the canary configurations", || {
        no_failures();
        let (fixed, answer) = t.cp.create(
            &format!("/apis/apps/v1/namespaces/{canary}/deployments"),
            &postgres_no_volume(&canary, "canary"),
            true,
        );
        let (denied, reason) = t.cp.create(
            &format!("/apis/apps/v1/namespaces/{canary}/daemonsets"),
            &postgres_daemonset(&canary, "canary"),
            true,
        );
        let mutated = fixed == 201
            && answer
                .pointer("/metadata/annotations/pvc-guard.io~1mutated")
                .is_some();
        let denied = denied == 403
            && reason["message"]
                .as_str()
                .is_some_and(|m| m.contains("denied the request: [ephemeral-data-path]"));
        if mutated && denied {
            Ok(())
        } else {
            Err(format!("{answer}\n{reason}"))
        }
    });
    passed(3);

    // The kubelet swaps the Secret's files; the server reloads them.
    let reloads =
        |pod: &envtest::install::Pod| pod.metric("pvc_guard_certificate_reloads_total", &[]);
    let before = reloads(&t.webhook);
    t.webhook.update_volumes(&new_docs, "pvc-guard");
    envtest::eventually("the server loads the new certificate", || {
        if reloads(&t.webhook) > before {
            Ok(())
        } else {
            Err(t.webhook.log())
        }
    });
    // It now serves a certificate of the new CA, which the old one does not verify.
    let new_ca_only = &bundle[0];
    let metrics = t.webhook.url("/metrics");
    envtest::https_get(&metrics, new_ca_only, None)
        .expect("the new CA verifies the served certificate");
    assert!(
        envtest::https_get(&metrics, &old_ca, None).is_err(),
        "the old CA no longer does"
    );
    passed(3);

    drop(stop_guard);
    looping.join().unwrap();
    let (ok, failed) = std::mem::take(&mut *results.lock().unwrap());
    assert!(
        failed.is_empty(),
        "{} of {} creates failed: {failed:#?}",
        failed.len(),
        ok + failed.len()
    );
}

#[test]
fn audit_reports_what_was_stored_unjudged() {
    let Some(t) = Scenario::start(
        "audit",
        &[
            ("audited", &[("pvc-guard.io/mode", "audit")]),
            ("ignored", &[("pvc-guard.io/ignore", "true")]),
        ],
    ) else {
        return;
    };
    let (audited, ignored) = (t.ns("audited"), t.ns("ignored"));
    // Two replicas: nothing to fix, denied in enforce, stored in audit mode.
    let replicated =
        postgres_no_volume(&audited, "orders-db").replace("replicas: 1", "replicas: 2");
    t.kubectl_stdin(&["create", "-f", "-"], &replicated)
        .ok("stored in audit mode");
    let unjudged = t
        .kubectl_stdin(
            &["create", "-o", "json", "-f", "-"],
            &postgres_no_volume(&ignored, "orders-db"),
        )
        .ok("stored in an ignored namespace");
    assert!(
        unjudged
            .json()
            .pointer("/metadata/annotations/pvc-guard.io~1mutated")
            .is_none(),
        "{unjudged}"
    );

    let config = t.install.config_file();
    let audit = |ns: &str, output: &str| {
        envtest::install::pvc_guard_with_kubeconfig(
            &t.cp.admin_kubeconfig,
            &[
                "audit",
                "-n",
                ns,
                "-o",
                output,
                "--config",
                config.to_str().unwrap(),
            ],
        )
    };
    let json_entries = |run: &envtest::Run| -> Vec<Value> {
        run.json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "orders-db")
            .cloned()
            .collect()
    };

    // While the namespace is labelled audit, audit reports warnings.
    let warned = audit(&audited, "json");
    assert_eq!(warned.code, 0, "{warned}");
    let entries = json_entries(&warned);
    assert_eq!(entries.len(), 1, "{warned}");
    assert_eq!(entries[0]["decision"], "warn", "{warned}");
    // The ignored namespace is out of scope for audit as for the webhook.
    let skipped = audit(&ignored, "json");
    assert_eq!(skipped.code, 0, "{skipped}");
    assert_eq!(json_entries(&skipped), Vec::<Value>::new(), "{skipped}");

    // Once both namespaces are back under enforce, audit finds the denials.
    t.kubectl(&["label", "namespace", &audited, "pvc-guard.io/mode-"])
        .ok("unlabel");
    t.kubectl(&["label", "namespace", &ignored, "pvc-guard.io/ignore-"])
        .ok("unlabel");
    for ns in [&audited, &ignored] {
        let text = audit(ns, "text");
        assert_eq!(text.code, 1, "{text}");
        assert!(text.stdout.contains("[ephemeral-data-path]"), "{text}");
        assert!(text.stdout.contains(&format!("{ns}/orders-db")), "{text}");

        let json = audit(ns, "json");
        assert_eq!(json.code, 1, "{json}");
        let entries = json_entries(&json);
        assert_eq!(entries.len(), 1, "{json}");
        assert_eq!(entries[0]["decision"], "deny", "{json}");
        assert_eq!(entries[0]["kind"], "Deployment", "{json}");
        assert!(
            entries[0]["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["rule"] == "ephemeral-data-path"),
            "{json}"
        );

        let sarif = audit(ns, "sarif");
        assert_eq!(sarif.code, 1, "{sarif}");
        let log = sarif.json();
        assert_eq!(log["version"], "2.1.0");
        assert!(
            log.pointer("/runs/0/results")
                .and_then(Value::as_array)
                .is_some_and(|r| r
                    .iter()
                    .any(|r| r["ruleId"] == "ephemeral-data-path" && r["level"] == "error")),
            "{sarif}"
        );
    }
}

/// A Deployment of nginx in `namespace` carrying a hand-written
/// `pvc-guard.io/mutated` record that names claim `claim` of `size`,
/// `class` and `mode`; its pod mounts that claim only when `mounted`.
fn forged(
    namespace: &str,
    name: &str,
    claim: &str,
    (size, class, mode): (&str, &str, &str),
    mounted: bool,
) -> String {
    let record = serde_json::json!({"rules": ["ephemeral-data-path"], "changes": [
        {"change": "claimVolume", "volume": "data", "claim": claim,
         "size": size, "storageClass": class, "accessMode": mode}]});
    let mut object = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace,
            "annotations": {"pvc-guard.io/mutated": record.to_string()}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
    if mounted {
        let pod = &mut object["spec"]["template"]["spec"];
        pod["volumes"] =
            serde_json::json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
        pod["containers"][0]["volumeMounts"] =
            serde_json::json!([{"name": "data", "mountPath": "/usr/share/nginx/html"}]);
    }
    object.to_string()
}

#[test]
fn a_forged_record_creates_no_claim() {
    let Some(t) = Scenario::start(
        "forged",
        &[
            ("judged", &[]),
            ("ignored", &[("pvc-guard.io/ignore", "true")]),
        ],
    ) else {
        return;
    };
    let (judged, ignored) = (t.ns("judged"), t.ns("ignored"));
    let factory = ("1Ei", "premium-rwx", "ReadWriteMany");
    // (namespace, workload, claim, why the controller refuses it)
    let cases = [
        // Through both webhooks: what the record names is checked against
        // what the stored pod mounts and the config's limits.
        (
            &judged,
            "unmounted-db",
            "never-mounted",
            ("1Gi", "standard", "ReadWriteOnce"),
            false,
            "not-mounted",
        ),
        (
            &judged,
            "huge-db",
            "huge-claim",
            ("1Ei", "standard", "ReadWriteOnce"),
            true,
            "size",
        ),
        (
            &judged,
            "shared-db",
            "shared-claim",
            ("10Gi", "premium-rwx", "ReadWriteMany"),
            true,
            "access-mode",
        ),
        // Where the webhook never looks, the claim factory of issue 15: a
        // record of 1Ei, premium-rwx, ReadWriteMany that nothing mounts.
        (
            &ignored,
            "forged-db",
            "forged-1ei",
            factory,
            false,
            "ignored-namespace",
        ),
    ];
    for (ns, name, claim, spec, mounted, _) in &cases {
        let created = t
            .kubectl_stdin(
                &["create", "-o", "json", "-f", "-"],
                &forged(ns, name, claim, *spec, *mounted),
            )
            .ok(&format!("create {ns}/{name}"));
        let record = created.json()["metadata"]["annotations"]["pvc-guard.io/mutated"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            record.contains(claim),
            "the forged record is stored as written: {created}"
        );
    }
    let exists = |ns: &str, claim: &str| {
        t.kubectl(&["get", "persistentvolumeclaim", claim, "-n", ns])
            .code
            == 0
    };
    // Decided: the controller said why it refuses, or made the claim.
    for (ns, name, claim, spec, _, reason) in &cases {
        let workload = format!("Deployment/{name}");
        envtest::eventually(&format!("the controller decides {ns}/{name}"), || {
            let said = t.install.with_controller(|c| {
                controller_logged(c, |l| {
                    l["namespace"] == ns.as_str()
                        && l["workload"] == workload.as_str()
                        && l["reason"] == *reason
                        && l["claim"].as_str().is_some_and(|c| c.contains(claim))
                })
            });
            if said || exists(ns, claim) {
                Ok(())
            } else {
                Err(t.install.with_controller(|c| c.log()))
            }
        });
        assert!(
            !exists(ns, claim),
            "the controller created {ns}/{claim} ({spec:?}) for a forged record"
        );
        let counted = t
            .install
            .with_controller(|c| c.metric("pvc_guard_claims_refused_total", &[("reason", reason)]));
        assert!(counted >= 1.0, "{reason} is counted");
    }
    // Nothing else was created in either namespace.
    for ns in [&judged, &ignored] {
        let claims = t
            .kubectl(&["get", "persistentvolumeclaims", "-n", ns, "-o", "name"])
            .ok("list claims");
        assert_eq!(claims.stdout.trim(), "", "{ns}: {claims}");
    }
}

#[test]
fn the_webhook_token_only_reads_and_its_caches_still_sync() {
    // Started with the webhook ServiceAccount's token, the server is ready
    // only once its caches have synced.
    let Some(t) = Scenario::start(
        "readonly",
        &[("enforce", &[]), ("warn", &[("pvc-guard.io/mode", "warn")])],
    ) else {
        return;
    };
    // A fact from the namespaces cache changes the answer.
    let dry = ["create", "--dry-run=server", "-f", "-"];
    let denied = t.kubectl_stdin(&dry, &postgres_daemonset(&t.ns("enforce"), "db"));
    assert_eq!(denied.code, 1, "{denied}");
    let warned = t
        .kubectl_stdin(&dry, &postgres_daemonset(&t.ns("warn"), "db"))
        .ok("warn mode from the namespace label");
    assert!(!warning_lines(&warned.stderr).is_empty(), "{warned}");

    // Everything the token may do, here and in pvc-guard's own namespace:
    // list and watch, and only what every authenticated user may.
    for ns in [t.ns("enforce"), "pvc-guard".to_string()] {
        let who = format!("--as={WEBHOOK_ACCOUNT}");
        let rules = t
            .kubectl(&["auth", "can-i", "--list", "-n", &ns, &who])
            .ok("kubectl auth can-i --list");
        let mut reads = Vec::new();
        for line in rules.stdout.lines().skip(1) {
            let resource = line.split_whitespace().next().unwrap_or("");
            let verbs = line
                .rsplit_once('[')
                .map_or("", |(_, v)| v.trim_end_matches(']'));
            if line.starts_with(' ') || resource.starts_with("selfsubject") {
                continue; // non-resource URLs; the reviews every user may create
            }
            assert!(
                verbs
                    .split_whitespace()
                    .all(|v| v == "list" || v == "watch"),
                "{ns}: the webhook's token may {verbs} {resource}:\n{rules}"
            );
            reads.push(resource.to_string());
        }
        reads.sort();
        assert_eq!(
            reads,
            [
                "horizontalpodautoscalers.autoscaling",
                "namespaces",
                "persistentvolumeclaims",
                "storageclasses.storage.k8s.io",
            ],
            "{ns}: {rules}"
        );
    }
    for (verb, resource) in [
        ("create", "persistentvolumeclaims"),
        ("get", "pods"),
        ("list", "deployments"),
        ("create", "leases"),
        ("get", "secrets"),
    ] {
        assert_eq!(
            can_i(&t, WEBHOOK_ACCOUNT, &[verb, resource, "-n", "pvc-guard"]),
            "no",
            "{verb} {resource}"
        );
    }
}

#[test]
fn exemption_labels_are_set_only_by_the_named_groups() {
    let Some(install) = envtest::install::install() else {
        return;
    };
    let cp = install.cp;
    let target = "e2e-exempt-target";
    let created_by_dev = "e2e-exempt-created";
    let editors = "e2e:namespace-editors";
    cp.apply(&[
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target}}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "e2e-namespace-editor"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"],
                "verbs": ["get", "list", "create", "update", "patch"]}]}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "e2e-namespace-editor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-namespace-editor"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": editors}]}),
    ]);
    let dev = ["--as=e2e-dev".to_string(), format!("--as-group={editors}")];
    let lead = [
        "--as=e2e-lead".to_string(),
        format!("--as-group={editors}"),
        "--as-group=pvc-guard:exemption-admins".to_string(),
    ];
    let label = |who: &[String], change: &str, dry: bool| {
        let mut args: Vec<&str> = vec!["label", "namespace", target, change, "--overwrite"];
        if dry {
            args.push("--dry-run=server");
        }
        args.extend(who.iter().map(String::as_str));
        cp.kubectl(&args)
    };
    let denied = |run: &envtest::Run| {
        run.code == 1
            && run.stderr.contains("pvc-guard-exemption-labels")
            && run.stderr.contains("may set, change or remove")
    };
    // The API server loads a new policy within a second or so.
    envtest::eventually("the policy denies a developer's exemption", || {
        let run = label(&dev, "pvc-guard.io/ignore=true", true);
        if denied(&run) {
            Ok(())
        } else {
            Err(run.to_string())
        }
    });
    let labels = || -> Value {
        cp.kubectl(&["get", "namespace", target, "-o", "json"])
            .ok("get namespace")
            .json()["metadata"]["labels"]
            .clone()
    };
    for change in [
        "pvc-guard.io/ignore=true",
        "pvc-guard.io/mode=audit",
        "pvc-guard.io/mutate=false",
    ] {
        let run = label(&dev, change, false);
        assert!(denied(&run), "{change}: {run}");
    }
    assert_eq!(
        labels(),
        serde_json::json!({"kubernetes.io/metadata.name": target}),
        "nothing was set"
    );
    // Other labels are the developers' to set.
    label(&dev, "team=payments", false).ok("an ordinary label");
    // Created with an exemption label: denied; without: allowed.
    let namespace = |labels: Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": created_by_dev, "labels": labels}})
        .to_string()
    };
    let mut create = vec!["create", "-f", "-"];
    create.extend(dev.iter().map(String::as_str));
    let run = cp.kubectl_stdin(
        &create,
        &namespace(serde_json::json!({"pvc-guard.io/ignore": "true"})),
    );
    assert!(denied(&run), "{run}");
    cp.kubectl_stdin(&create, &namespace(serde_json::json!({"team": "payments"})))
        .ok("a namespace without exemption labels");

    // A member of the named group may; then a developer can neither change
    // nor remove it, and system:masters can.
    label(&lead, "pvc-guard.io/ignore=true", false).ok("the exemption admins' group");
    for change in ["pvc-guard.io/ignore=false", "pvc-guard.io/ignore-"] {
        let run = label(&dev, change, false);
        assert!(denied(&run), "{change}: {run}");
    }
    assert_eq!(labels()["pvc-guard.io/ignore"], "true");
    cp.kubectl(&["label", "namespace", target, "pvc-guard.io/ignore-"])
        .ok("system:masters removes it");
    assert!(labels().get("pvc-guard.io/ignore").is_none());
    label(&dev, "team=ledger", false).ok("ordinary labels stay the developers'");
}

/// The policy report CRDs are installed, or (after saying why) the test is
/// skipped; `PVC_GUARD_E2E_REQUIRED=1` makes that a failure.
fn reports_installed(t: &Scenario) -> bool {
    if t.install.crds.is_some() {
        return true;
    }
    common::skip("no policy report CRDs in $PVC_GUARD_CRDS");
    false
}

/// The report `pvc-guard` of `resource` (policyreport, reports.openreports.io)
/// in `namespace`, once `ready` holds for its results.
fn report_when(
    t: &Scenario,
    resource: &str,
    namespace: &str,
    what: &str,
    ready: impl Fn(&[(String, String, String)]) -> bool,
) -> Value {
    envtest::eventually(what, || {
        let run = t.kubectl(&["get", resource, "pvc-guard", "-n", namespace, "-o", "json"]);
        if run.code != 0 {
            // What the controller said about reports, if anything.
            let said: Vec<String> = t.install.with_controller(|c| {
                c.log()
                    .lines()
                    .filter(|l| l.contains("report") || l.contains("ERROR"))
                    .map(str::to_string)
                    .collect()
            });
            return Err(format!("{run}\n--- controller\n{}", said.join("\n")));
        }
        let report = run.json();
        let results = common::report_results(&report);
        if ready(&results) {
            Ok(report)
        } else {
            Err(format!("{results:?}"))
        }
    })
}

fn has(results: &[(String, String, String)], workload: &str, result: &str, rule: &str) -> bool {
    results
        .iter()
        .any(|(w, r, rule_id)| w == workload && r == result && rule_id == rule)
}

/// The events about `kind/name` in `namespace`: (type, reason, note).
fn events_about(
    t: &Scenario,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    let selector = format!("regarding.kind={kind},regarding.name={name}");
    let run = t
        .kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            namespace,
            "--field-selector",
            &selector,
            "-o",
            "json",
        ])
        .ok("kubectl get events");
    run.json()["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
                e["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// postgres:16.4 with its data on claim `claim`, rolled out by Recreate:
/// nothing pvc-guard denies.
fn postgres_on_claim(namespace: &str, name: &str, claim: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: 1
  strategy: {{type: Recreate}}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: postgres
        image: postgres:16.4
        volumeMounts:
        - {{name: data, mountPath: /var/lib/postgresql/data, subPath: pgdata}}
      volumes:
      - name: data
        persistentVolumeClaim: {{claimName: {claim}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {claim}
  namespace: {namespace}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
"#
    )
}

#[test]
fn policy_reports_show_every_stored_workload_and_follow_the_cluster() {
    let Some(t) = Scenario::start(
        "reports",
        &[(
            "audit",
            &[
                ("pvc-guard.io/mode", "audit"),
                ("pvc-guard.io/mutate", "false"),
            ],
        )],
    ) else {
        return;
    };
    if !reports_installed(&t) {
        return;
    }
    let ns = t.ns("audit");
    // Stored while the namespace only audits (and fixes nothing): what
    // enforce mode would deny is in the cluster.
    t.kubectl_stdin(
        &["create", "-f", "-"],
        &postgres_no_volume(&ns, "orders-db"),
    )
    .ok("create orders-db");
    t.kubectl_stdin(
        &["create", "-f", "-"],
        &postgres_daemonset(&ns, "replicated-db"),
    )
    .ok("create replicated-db");
    t.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "-n",
        &ns,
    ])
    .ok("create web");
    let scratch = postgres_no_volume(&ns, "scratch-db").replace(
        "  namespace:",
        "  annotations: {pvc-guard.io/allow-ephemeral: \"a scratch copy, restored from backup every night\"}\n  namespace:",
    );
    t.kubectl_stdin(&["create", "-f", "-"], &scratch)
        .ok("create scratch-db");

    let report = report_when(&t, "policyreport", &ns, "every workload is reported", |r| {
        has(r, "Deployment/orders-db", "fail", "ephemeral-data-path")
            && has(r, "DaemonSet/replicated-db", "fail", "ephemeral-data-path")
            && has(r, "Deployment/web", "pass", "")
            && has(r, "Deployment/scratch-db", "skip", "ephemeral-data-path")
    });
    let results = common::report_results(&report);
    assert!(
        !results
            .iter()
            .any(|(w, r, _)| w == "Deployment/web" && r != "pass"),
        "{results:?}"
    );
    assert!(
        !has(
            &results,
            "Deployment/scratch-db",
            "fail",
            "ephemeral-data-path"
        ),
        "{results:?}"
    );
    let uid = report["metadata"]["uid"].as_str().unwrap().to_string();
    let fail = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["result"] == "fail" && r["resources"][0]["name"] == "orders-db")
        .unwrap();
    assert_eq!(fail["properties"]["mode"], "audit", "{fail}");
    assert_eq!(fail["source"], "pvc-guard");
    assert!(
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["result"] == "skip"
                && r["properties"]["reason"] == "a scratch copy, restored from backup every night"),
        "{report}"
    );
    let listed = t
        .kubectl(&["get", "policyreport", "-n", &ns])
        .ok("kubectl get policyreport");
    eprintln!("$ kubectl get policyreport -n {ns}\n{}", listed.stdout);
    let yaml = t
        .kubectl(&["get", "policyreport", "pvc-guard", "-n", &ns, "-o", "yaml"])
        .ok("kubectl get policyreport -o yaml");
    eprintln!(
        "$ kubectl get policyreport pvc-guard -n {ns} -o yaml\n{}",
        yaml.stdout
    );
    let header: Vec<&str> = listed
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PASS", "FAIL", "WARN", "ERROR", "SKIP", "AGE"]
    );
    let row: Vec<&str> = listed
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    let summary = &report["summary"];
    assert_eq!(row[0], "pvc-guard");
    assert_eq!(row[1], summary["pass"].to_string(), "{}", listed.stdout);
    assert_eq!(row[2], summary["fail"].to_string(), "{}", listed.stdout);
    assert_eq!(summary["fail"], 2, "{summary}");
    // The openreports.io Report, where its CRD is installed: the same results.
    let open = report_when(
        &t,
        "reports.openreports.io",
        &ns,
        "the Report is written too",
        |r| r == results.as_slice(),
    );
    assert_eq!(open["source"], "pvc-guard");

    // An Event on the workload, where `kubectl describe` shows it.
    envtest::eventually("orders-db's PolicyViolation event", || {
        let events = events_about(&t, &ns, "Deployment", "orders-db");
        events
            .iter()
            .any(|(ty, reason, note)| {
                ty == "Warning"
                    && reason == "PolicyViolation"
                    && note.contains("fail ephemeral-data-path")
            })
            .then_some(())
            .ok_or_else(|| format!("{events:?}"))
    });
    let described = t
        .kubectl(&["describe", "deployment", "orders-db", "-n", &ns])
        .ok("kubectl describe");
    let events = &described.stdout[described.stdout.find("Events:").expect("an Events section")..];
    eprintln!("$ kubectl describe deployment orders-db -n {ns}\n...\n{events}");
    assert!(events.contains("PolicyViolation"), "{events}");
    assert!(events.contains("pvc-guard.io/controller"), "{events}");

    // Fixed: its failure goes; deleted: its results go; the same report.
    let fixed = postgres_on_claim(&ns, "orders-db", "orders-db-data");
    let (deployment, claim) = fixed.split_once("---").unwrap();
    t.kubectl_stdin(&["replace", "-f", "-"], deployment)
        .ok("replace orders-db");
    t.kubectl_stdin(&["create", "-f", "-"], claim)
        .ok("create orders-db-data");
    t.kubectl(&["delete", "daemonset", "replicated-db", "-n", &ns])
        .ok("delete replicated-db");
    let after = report_when(
        &t,
        "policyreport",
        &ns,
        "the fixed and the deleted are gone",
        |r| {
            !r.iter().any(|(w, result, _)| {
                (w == "Deployment/orders-db" && result == "fail") || w == "DaemonSet/replicated-db"
            }) && r.iter().any(|(w, _, _)| w == "Deployment/orders-db")
        },
    );
    assert_eq!(
        after["metadata"]["uid"],
        uid.as_str(),
        "updated in place, never recreated"
    );
    assert_eq!(after["summary"]["fail"], 0, "{after}");
    envtest::eventually("an event says what is left of orders-db's findings", || {
        let events = events_about(&t, &ns, "Deployment", "orders-db");
        events
            .iter()
            .any(|(_, reason, note)| reason == "PolicyViolation" && !note.contains("fail "))
            .then_some(())
            .ok_or_else(|| format!("{events:?}"))
    });
}

#[test]
fn claim_events_show_on_the_deployment_with_the_api_servers_reason() {
    let Some(t) = Scenario::start("claimevents", &[("shop", &[]), ("quota", &[])]) else {
        return;
    };
    let (shop, quota) = (t.ns("shop"), t.ns("quota"));
    // A quota that allows no claim. The quota's usage is the controller
    // manager's to write, and none runs here: the admin writes it.
    t.kubectl(&[
        "create",
        "quota",
        "no-claims",
        "--hard=persistentvolumeclaims=0",
        "-n",
        &quota,
    ])
    .ok("create quota");
    t.kubectl(&[
        "patch",
        "resourcequota",
        "no-claims",
        "-n",
        &quota,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"hard":{"persistentvolumeclaims":"0"},"used":{"persistentvolumeclaims":"0"}}}"#,
    ])
    .ok("set the quota's usage");
    for ns in [&shop, &quota] {
        t.kubectl_stdin(&["create", "-f", "-"], &postgres_no_volume(ns, "orders-db"))
            .ok("create orders-db");
    }
    let created = envtest::eventually("the ClaimCreated event", || {
        let events = events_about(&t, &shop, "Deployment", "orders-db");
        events
            .iter()
            .find(|(ty, reason, _)| ty == "Normal" && reason == "ClaimCreated")
            .cloned()
            .ok_or_else(|| format!("{events:?}"))
    });
    assert!(
        created
            .2
            .contains("orders-db-postgres-data (10Gi, ReadWriteOnce"),
        "{created:?}"
    );
    let refused = envtest::eventually("the ClaimCreateFailed event", || {
        let events = events_about(&t, &quota, "Deployment", "orders-db");
        events
            .iter()
            .find(|(ty, reason, _)| ty == "Warning" && reason == "ClaimCreateFailed")
            .cloned()
            .ok_or_else(|| format!("{events:?}"))
    });
    assert!(
        refused.2.contains("Forbidden (403)") && refused.2.contains("exceeded quota: no-claims"),
        "the API server's reason: {refused:?}"
    );
    for ns in [&shop, &quota] {
        let described = t
            .kubectl(&["describe", "deployment", "orders-db", "-n", ns])
            .ok("kubectl describe");
        let events =
            &described.stdout[described.stdout.find("Events:").expect("an Events section")..];
        eprintln!("$ kubectl describe deployment orders-db -n {ns}\n...\n{events}");
        let reason = if ns == &shop {
            "ClaimCreated"
        } else {
            "ClaimCreateFailed"
        };
        assert!(events.contains(reason), "{events}");
    }
    let claim = t.kubectl(&["get", "pvc", "orders-db-postgres-data", "-n", &quota]);
    assert_ne!(claim.code, 0, "the quota refused it: {claim}");
}
