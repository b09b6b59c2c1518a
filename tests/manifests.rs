//! The deployment: manifests/ (the base), its overlays and examples/,
//! rendered with `kubectl kustomize` as `kubectl apply -k` would render them,
//! and checked against what `pvc-guard serve` and `pvc-guard controller`
//! expect (ports, paths, flags, the API calls each ServiceAccount makes)
//! and against the invariants of DESIGN.md "Deployment (manifests/)".
//!
//! The rendering tests print a message and pass when kubectl is not
//! installed; everything else runs everywhere.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use common::copy_dir;
use serde::Deserialize;
use serde_json::{Value, json};

const NAMESPACE: &str = "pvc-guard";
const SERVICE: &str = "pvc-guard";
/// The claim controller's Deployment and ServiceAccount.
const CONTROLLER: &str = "pvc-guard-controller";
/// Where the shipped controller Deployment serves its probes.
const HEALTH_PORT: i64 = 8081;
/// The policy that guards the exemption labels.
const EXEMPTION_POLICY: &str = "pvc-guard-exemption-labels";
const EXEMPTION_LABELS: [&str; 3] = [
    "pvc-guard.io/ignore",
    "pvc-guard.io/mode",
    "pvc-guard.io/mutate",
];
const SECRET: &str = "pvc-guard-tls";
/// Where `pvc-guard serve` listens unless --listen says otherwise.
const LISTEN_PORT: i64 = 8443;
/// The default of `serve --drain-timeout`, in seconds.
const DRAIN_TIMEOUT_SECS: i64 = 20;

/// One webhook configuration and what its single webhook must say.
struct Hook {
    kind: &'static str,
    name: &'static str,
    path: &'static str,
    failure_policy: &'static str,
    mutating: bool,
}

const HOOKS: [Hook; 2] = [
    Hook {
        kind: "ValidatingWebhookConfiguration",
        name: "validate.pvc-guard.io",
        path: "/validate",
        failure_policy: "Fail",
        mutating: false,
    },
    Hook {
        kind: "MutatingWebhookConfiguration",
        name: "mutate.pvc-guard.io",
        path: "/mutate",
        failure_policy: "Ignore",
        mutating: true,
    },
];

/// The workload kinds pvc-guard judges, as (API group, resource).
const WORKLOAD_RESOURCES: [(&str, &str); 8] = [
    ("", "pods"),
    ("", "replicationcontrollers"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pvc_guard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pvc-guard"))
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `kubectl kustomize DIR` (relative to the crate root), or `None` when
/// kubectl is not installed. Any other failure fails the test.
fn kustomize_text(dir: &Path) -> Option<String> {
    let output = match Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .current_dir(root())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!(
                "kubectl is not installed: skipping the rendering of {}",
                dir.display()
            );
            return None;
        }
        Err(e) => panic!("running kubectl kustomize {}: {e}", dir.display()),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        describe(&output)
    );
    Some(String::from_utf8(output.stdout).expect("kubectl prints UTF-8"))
}

fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    kustomize_text(dir).map(|text| parse_documents(&text))
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("kubectl kustomize prints valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The elements of an array, or nothing when `v` is not one.
fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn strings(v: &Value) -> Vec<String> {
    items(v)
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn objects<'a, 'k>(
    docs: &'a [Value],
    kind: &'k str,
) -> impl Iterator<Item = &'a Value> + use<'a, 'k> {
    docs.iter().filter(move |d| d["kind"] == kind)
}

/// The one object of `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objects(docs, kind)
        .filter(|d| d["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} {name}, found {}",
        found.len()
    );
    found[0]
}

/// `--flag value` or `--flag=value`.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_string)
        }
    })
}

/// Does a label selector (matchLabels, matchExpressions) select `labels`?
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |key: &str| labels.get(key).and_then(Value::as_str).map(str::to_string);
    let by_labels = selector["matchLabels"].as_object().is_none_or(|m| {
        m.iter()
            .all(|(k, v)| label(k.as_str()).as_deref() == v.as_str())
    });
    let by_expressions = items(&selector["matchExpressions"]).all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values = strings(&e["values"]);
        let value = label(key);
        match e["operator"].as_str().unwrap_or_default() {
            "In" => value.is_some_and(|v| values.contains(&v)),
            "NotIn" => value.is_none_or(|v| !values.contains(&v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown selector operator {other:?}"),
        }
    });
    by_labels && by_expressions
}

fn deployment(docs: &[Value]) -> &Value {
    find(docs, "Deployment", "pvc-guard")
}

fn pod_spec(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]
}

fn webhook_container(deployment: &Value) -> &Value {
    items(&pod_spec(deployment)["containers"])
        .find(|c| c["name"] == "pvc-guard")
        .expect("the Deployment has a container named pvc-guard")
}

/// The claim controller's Deployment and its one container.
fn controller(docs: &[Value]) -> (&Value, &Value) {
    let d = find(docs, "Deployment", CONTROLLER);
    let containers: Vec<&Value> = items(&pod_spec(d)["containers"]).collect();
    assert_eq!(containers.len(), 1, "the controller runs one container");
    (d, containers[0])
}

/// A probe's or Service's port (a number or a container port's name) as a number.
fn resolve_port(container: &Value, port: &Value) -> i64 {
    match port {
        Value::Number(n) => n.as_i64().expect("a port is an integer"),
        Value::String(name) => items(&container["ports"])
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("the container has no port named {name:?}")),
        other => panic!("{other} is not a port"),
    }
}

/// The volume a file path of the container lies on.
fn volume_for<'a>(pod: &'a Value, container: &'a Value, path: &str) -> &'a Value {
    let mount = items(&container["volumeMounts"])
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|dir| path.starts_with(&format!("{}/", dir.trim_end_matches('/'))))
        })
        .unwrap_or_else(|| panic!("{path} lies on no volumeMount of the container"));
    items(&pod["volumes"])
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume named {} in the pod", mount["name"]))
}

/// The policy config the ConfigMap ships, as the Deployment mounts it.
fn shipped_config(docs: &[Value]) -> String {
    let d = deployment(docs);
    let container = webhook_container(d);
    let args = strings(&container["args"]);
    let path = flag_value(&args, "--config").expect("serve is given --config");
    let volume = volume_for(pod_spec(d), container, &path);
    let name = volume["configMap"]["name"]
        .as_str()
        .expect("--config lies on a ConfigMap volume");
    let file = Path::new(&path)
        .file_name()
        .and_then(|f| f.to_str())
        .expect("a file name");
    let config_map = find(docs, "ConfigMap", name);
    config_map["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {name} has no key {file}"))
        .to_string()
}

/// Both webhook configurations, their single webhook each, and the Service
/// they call.
fn check_webhooks(docs: &[Value]) {
    let expected_resources: BTreeSet<(String, String)> = WORKLOAD_RESOURCES
        .iter()
        .map(|(g, r)| (g.to_string(), r.to_string()))
        .collect();
    for hook in &HOOKS {
        let config = find(docs, hook.kind, "pvc-guard");
        let webhooks: Vec<&Value> = items(&config["webhooks"]).collect();
        assert_eq!(webhooks.len(), 1, "{} pvc-guard has one webhook", hook.kind);
        let w = webhooks[0];
        let ctx = format!("{} webhook {}", hook.kind, hook.name);
        assert_eq!(w["name"], hook.name, "{ctx}: name");
        assert_eq!(w["sideEffects"], "None", "{ctx}: sideEffects");
        assert_eq!(
            w["admissionReviewVersions"],
            json!(["v1"]),
            "{ctx}: admissionReviewVersions"
        );
        let timeout = w["timeoutSeconds"]
            .as_i64()
            .unwrap_or_else(|| panic!("{ctx}: timeoutSeconds is set"));
        assert!(
            (1..=5).contains(&timeout),
            "{ctx}: timeoutSeconds {timeout} is not between 1 and 5"
        );
        assert_eq!(
            w["failurePolicy"], hook.failure_policy,
            "{ctx}: failurePolicy"
        );
        assert_eq!(w["matchPolicy"], "Equivalent", "{ctx}: matchPolicy");
        if hook.mutating {
            assert_eq!(
                w["reinvocationPolicy"], "IfNeeded",
                "{ctx}: reinvocationPolicy"
            );
        } else {
            assert!(
                w.get("reinvocationPolicy").is_none(),
                "{ctx}: reinvocationPolicy is for mutating webhooks"
            );
        }

        // Every namespace but the excluded ones: only NotIn / DoesNotExist
        // expressions, so a namespace without pvc-guard labels is covered.
        let selector = &w["namespaceSelector"];
        assert!(
            selector.get("matchLabels").is_none(),
            "{ctx}: namespaceSelector has no matchLabels (opt-in)"
        );
        let expressions: Vec<&Value> = items(&selector["matchExpressions"]).collect();
        for e in &expressions {
            assert!(
                e["operator"] == "NotIn" || e["operator"] == "DoesNotExist",
                "{ctx}: namespaceSelector expression {e} would leave unlabelled namespaces out"
            );
        }
        let not_in = |key: &str| -> Vec<String> {
            expressions
                .iter()
                .filter(|e| e["key"] == key && e["operator"] == "NotIn")
                .flat_map(|e| strings(&e["values"]))
                .collect()
        };
        let excluded = not_in("kubernetes.io/metadata.name");
        for ns in ["kube-system", "kube-node-lease", "kube-public", NAMESPACE] {
            assert!(
                excluded.iter().any(|n| n == ns),
                "{ctx}: namespaceSelector does not exclude {ns} (kubernetes.io/metadata.name NotIn): {excluded:?}"
            );
        }
        assert_eq!(
            not_in("pvc-guard.io/ignore"),
            ["true"],
            "{ctx}: pvc-guard.io/ignore NotIn [\"true\"]"
        );

        let conditions: Vec<&Value> = items(&w["matchConditions"]).collect();
        assert!(!conditions.is_empty(), "{ctx}: matchConditions");
        for c in &conditions {
            assert!(
                c["name"].as_str().is_some_and(|n| !n.is_empty()),
                "{ctx}: matchCondition without a name"
            );
            assert!(
                c["expression"].as_str().is_some_and(|e| !e.is_empty()),
                "{ctx}: matchCondition without an expression"
            );
        }
        assert!(
            conditions.iter().any(|c| {
                let e = c["expression"].as_str().unwrap_or_default();
                e.contains("ownerReferences") && e.contains("controller")
            }),
            "{ctx}: no matchCondition skips objects with a controller ownerReference"
        );
        // Anyone can write an ownerReference: the skip holds only for the
        // control plane's controllers (tests/e2e.rs shows it against a real
        // API server).
        for c in &conditions {
            let e = c["expression"].as_str().unwrap_or_default();
            if e.contains("ownerReferences") {
                for caller in [
                    "request.userInfo.username == 'system:kube-controller-manager'",
                    "request.userInfo.username.startsWith('system:serviceaccount:kube-system:')",
                ] {
                    assert!(
                        e.contains(caller),
                        "{ctx}: matchCondition {} skips owned objects whoever writes them: {e}",
                        c["name"]
                    );
                }
            }
        }

        let client = &w["clientConfig"];
        assert!(
            client.get("url").is_none(),
            "{ctx}: clientConfig calls the Service, not a URL"
        );
        let service = &client["service"];
        assert_eq!(service["name"], SERVICE, "{ctx}: clientConfig.service.name");
        assert_eq!(
            service["namespace"], NAMESPACE,
            "{ctx}: clientConfig.service.namespace"
        );
        assert_eq!(
            service["path"], hook.path,
            "{ctx}: clientConfig.service.path"
        );
        assert_eq!(
            service["port"].as_i64(),
            Some(443),
            "{ctx}: clientConfig.service.port"
        );

        let mut resources = BTreeSet::new();
        for rule in items(&w["rules"]) {
            let operations: BTreeSet<String> = strings(&rule["operations"]).into_iter().collect();
            let expected_operations: BTreeSet<String> =
                ["CREATE", "UPDATE"].map(str::to_string).into();
            assert_eq!(
                operations, expected_operations,
                "{ctx}: rule {rule} operations"
            );
            assert_eq!(rule["scope"], "Namespaced", "{ctx}: rule {rule} scope");
            assert!(
                strings(&rule["apiVersions"]).iter().any(|v| v == "v1"),
                "{ctx}: rule {rule} apiVersions"
            );
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    resources.insert((group.clone(), resource));
                }
            }
        }
        assert_eq!(
            resources, expected_resources,
            "{ctx}: the rules cover exactly the workload kinds"
        );
    }

    // The Service maps the webhooks' port 443 to where serve listens.
    let service = find(docs, "Service", SERVICE);
    assert_eq!(
        service["metadata"]["namespace"], NAMESPACE,
        "Service namespace"
    );
    let d = deployment(docs);
    let container = webhook_container(d);
    let port = items(&service["spec"]["ports"])
        .find(|p| p["port"].as_i64() == Some(443))
        .expect("the Service exposes port 443");
    let target = match &port["targetPort"] {
        Value::Null => 443,
        target => resolve_port(container, target),
    };
    assert_eq!(
        target, LISTEN_PORT,
        "the Service's port 443 reaches container port {target}, not {LISTEN_PORT}"
    );
    assert_eq!(
        port["targetPort"], "https",
        "the Service targets the container port by its name"
    );
    assert_eq!(
        resolve_port(container, &json!("https")),
        LISTEN_PORT,
        "container port https"
    );
    let args = strings(&container["args"]);
    if let Some(listen) = flag_value(&args, "--listen") {
        assert!(
            listen.ends_with(&format!(":{LISTEN_PORT}")),
            "--listen {listen} is not port {LISTEN_PORT}"
        );
    }
    for env in items(&container["env"]).filter(|e| e["name"] == "PVC_GUARD_LISTEN") {
        let listen = env["value"].as_str().unwrap_or_default();
        assert!(
            listen.ends_with(&format!(":{LISTEN_PORT}")),
            "PVC_GUARD_LISTEN {listen} is not port {LISTEN_PORT}"
        );
    }
    assert!(
        selects(
            &json!({"matchLabels": service["spec"]["selector"]}),
            &d["spec"]["template"]["metadata"]["labels"]
        ),
        "the Service selects the webhook's pods"
    );
}

/// The container runs unprivileged, as the restricted Pod Security
/// Standard asks; its user id.
fn check_security(pod: &Value, container: &Value, who: &str) -> Option<i64> {
    // The container's own fields, else the pod's.
    let sc = &container["securityContext"];
    let psc = &pod["securityContext"];
    let effective = |field: &str| -> Value {
        sc.get(field)
            .or_else(|| psc.get(field))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        effective("runAsNonRoot"),
        json!(true),
        "{who}: runAsNonRoot"
    );
    let uid = effective("runAsUser").as_i64();
    assert!(
        uid.is_some_and(|u| u != 0),
        "{who}: runAsUser is set and not root: {uid:?}"
    );
    assert_eq!(
        effective("seccompProfile")["type"],
        "RuntimeDefault",
        "{who}: seccompProfile"
    );
    assert_eq!(
        sc["readOnlyRootFilesystem"],
        json!(true),
        "{who}: readOnlyRootFilesystem"
    );
    assert_eq!(
        sc["allowPrivilegeEscalation"],
        json!(false),
        "{who}: allowPrivilegeEscalation"
    );
    assert_ne!(sc["privileged"], json!(true), "{who}: not privileged");
    assert!(
        items(&sc["capabilities"]["drop"]).any(|c| c == "ALL"),
        "{who}: capabilities drop ALL"
    );
    assert!(
        items(&sc["capabilities"]["add"]).next().is_none(),
        "{who}: no capabilities added"
    );
    uid
}

/// The Deployment, its ServiceAccount, PodDisruptionBudget and namespace.
fn check_deployment(docs: &[Value]) {
    find(docs, "Namespace", NAMESPACE);
    let cluster_scoped = [
        "Namespace",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        if !cluster_scoped.contains(&kind) {
            assert_eq!(
                d["metadata"]["namespace"], NAMESPACE,
                "{kind} {} is in namespace {NAMESPACE}",
                d["metadata"]["name"]
            );
        }
    }

    let d = deployment(docs);
    let pod = pod_spec(d);
    let container = webhook_container(d);
    assert_eq!(d["spec"]["replicas"].as_i64(), Some(2), "two replicas");

    // The image's ENTRYPOINT is `pvc-guard serve`; args alone would be
    // appended to it and pass `serve` twice.
    let command = strings(&container["command"]);
    let args = strings(&container["args"]);
    assert_eq!(
        command,
        ["/usr/local/bin/pvc-guard"],
        "command is the binary alone"
    );
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "args start with serve: {args:?}"
    );

    // The certificate comes from the Secret, the config from the ConfigMap.
    for flag in ["--tls-cert", "--tls-key"] {
        let path = flag_value(&args, flag).unwrap_or_else(|| panic!("serve is given {flag}"));
        let volume = volume_for(pod, container, &path);
        assert_eq!(
            volume["secret"]["secretName"], SECRET,
            "{flag} {path} lies on the Secret {SECRET}"
        );
    }
    let config = shipped_config(docs);
    assert!(!config.trim().is_empty(), "the shipped config is not empty");
    assert_eq!(
        flag_value(&args, "--log-format").as_deref(),
        Some("json"),
        "the webhook logs JSON in the cluster"
    );

    let uid = check_security(pod, container, "the webhook");

    // The image runs as the same user.
    let dockerfile = fs::read_to_string(root().join("Dockerfile")).expect("the Dockerfile");
    let image_user = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .expect("the Dockerfile sets USER");
    let image_uid: i64 = image_user
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("USER is numeric");
    assert_eq!(
        uid,
        Some(image_uid),
        "the Deployment's runAsUser is the image's USER"
    );
    assert!(
        dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/pvc-guard", "serve"]"#),
        "the image's ENTRYPOINT is the binary the command names, with serve"
    );
    assert!(
        dockerfile.contains(&format!("EXPOSE {LISTEN_PORT}")),
        "the image exposes {LISTEN_PORT}"
    );
    assert!(
        dockerfile.contains("--locked"),
        "the image builds with --locked"
    );

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} path");
        assert_eq!(get["scheme"], "HTTPS", "{probe} scheme");
        assert_eq!(
            resolve_port(container, &get["port"]),
            LISTEN_PORT,
            "{probe} port"
        );
    }

    let resources = &container["resources"];
    for (section, resource) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(
            !resources[section][resource].is_null(),
            "resources.{section}.{resource} is set"
        );
    }

    // Never two replicas on one node: required, not preferred, and for
    // the webhook's own pods.
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    let anti = &pod["affinity"]["podAntiAffinity"];
    assert!(
        items(&anti["requiredDuringSchedulingIgnoredDuringExecution"]).any(|t| {
            t["topologyKey"] == "kubernetes.io/hostname" && selects(&t["labelSelector"], labels)
        }),
        "required pod anti-affinity keeps the replicas on different nodes: {anti}"
    );
    // A surge pod would find no node on a two-node cluster.
    let rolling = &d["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        rolling["maxSurge"].as_i64(),
        Some(0),
        "the rollout replaces one replica at a time: {rolling}"
    );
    assert_eq!(rolling["maxUnavailable"].as_i64(), Some(1), "{rolling}");
    assert!(
        pod["priorityClassName"].is_string(),
        "a priorityClassName is set"
    );
    if flag_value(&args, "--drain-timeout").is_none() {
        let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
        assert!(
            grace > DRAIN_TIMEOUT_SECS,
            "terminationGracePeriodSeconds {grace} leaves no room for the drain"
        );
    }

    // The token is mounted for the cluster caches, and RBAC grants exactly
    // what they call: reads only.
    let account = pod["serviceAccountName"]
        .as_str()
        .expect("a serviceAccountName");
    assert_eq!(account, "pvc-guard", "the webhook's own ServiceAccount");
    let service_account = find(docs, "ServiceAccount", account);
    assert_ne!(pod["automountServiceAccountToken"], json!(false));
    assert_ne!(
        service_account["automountServiceAccountToken"],
        json!(false)
    );
    let grants = granted(docs, account);
    assert_eq!(
        grants,
        webhook_grants(),
        "RBAC grows by exactly what the webhook calls"
    );
    let writes: Vec<&String> = grants
        .iter()
        .filter(|g| !(g.ends_with(" list") || g.ends_with(" watch")))
        .collect();
    assert!(
        writes.is_empty(),
        "the webhook's token only reads: {writes:?}"
    );
    assert!(
        shipped_config(docs).contains("createClaims: true"),
        "the webhook is told the claim controller runs, so it does not warn about claims it will create"
    );

    let pdb = objects(docs, "PodDisruptionBudget")
        .find(|p| {
            p["metadata"]["namespace"] == NAMESPACE && selects(&p["spec"]["selector"], labels)
        })
        .expect("a PodDisruptionBudget selects the webhook's pods");
    assert_eq!(
        pdb["spec"]["minAvailable"].as_i64(),
        Some(1),
        "the PodDisruptionBudget keeps one replica"
    );
}

/// Every (namespace or "*", apiGroup, resource, resourceName or "*", verb)
/// that the roles bound to `account` grant.
fn granted(docs: &[Value], account: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for binding in objects(docs, "RoleBinding").chain(objects(docs, "ClusterRoleBinding")) {
        let bound = items(&binding["subjects"]).any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == NAMESPACE
        });
        if !bound {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let role = find(
            docs,
            role_kind,
            binding["roleRef"]["name"].as_str().unwrap(),
        );
        let scope = if role_kind == "Role" { NAMESPACE } else { "*" };
        for rule in items(&role["rules"]) {
            let names = strings(&rule["resourceNames"]);
            let names = if names.is_empty() {
                vec!["*".to_string()]
            } else {
                names
            };
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for name in &names {
                        for verb in strings(&rule["verbs"]) {
                            out.insert(format!("{scope} {group}/{resource} {name} {verb}"));
                        }
                    }
                }
            }
        }
    }
    out
}

/// What the webhook's caches call (src/cluster/mod.rs, `Caches::start`):
/// list and watch of four collections.
fn webhook_grants() -> std::collections::BTreeSet<String> {
    let mut want = std::collections::BTreeSet::new();
    for resource in [
        "/namespaces",
        "/persistentvolumeclaims",
        "storage.k8s.io/storageclasses",
        "autoscaling/horizontalpodautoscalers",
    ] {
        for verb in ["list", "watch"] {
            want.insert(format!("* {resource} * {verb}"));
        }
    }
    want
}

/// What the claim controller calls (src/cluster/claims.rs, reports.rs,
/// events.rs): list and watch of namespaces, claims and autoscalers
/// (`Stores`), list and watch of the metadata of every workload kind and a
/// get of each without a controller owner, create claims, its Lease, and
/// list, server-side apply (patch, and create when the apply creates) and
/// delete of its reports, create and patch of events. tests/cluster.rs checks the requests it makes against
/// these grants.
fn controller_grants() -> std::collections::BTreeSet<String> {
    let mut want = std::collections::BTreeSet::new();
    for resource in [
        "/namespaces",
        "/persistentvolumeclaims",
        "autoscaling/horizontalpodautoscalers",
    ] {
        for verb in ["list", "watch"] {
            want.insert(format!("* {resource} * {verb}"));
        }
    }
    for (group, resource) in WORKLOAD_RESOURCES {
        for verb in ["list", "watch", "get"] {
            want.insert(format!("* {group}/{resource} * {verb}"));
        }
    }
    want.insert("* /persistentvolumeclaims * create".into());
    for resource in ["wgpolicyk8s.io/policyreports", "openreports.io/reports"] {
        for verb in ["list", "create", "patch", "delete"] {
            want.insert(format!("* {resource} * {verb}"));
        }
    }
    for verb in ["create", "patch"] {
        want.insert(format!("* events.k8s.io/events * {verb}"));
    }
    want.insert(format!("{NAMESPACE} coordination.k8s.io/leases * create"));
    for verb in ["get", "patch"] {
        want.insert(format!(
            "{NAMESPACE} coordination.k8s.io/leases pvc-guard-claim-controller {verb}"
        ));
    }
    want
}

/// The claim controller's Deployment: `pvc-guard controller` with the
/// shipped config, its own ServiceAccount and exactly the grants it calls,
/// probes on the plain HTTP port it listens on, the Lease's identity and
/// namespace from the pod.
fn check_controller(docs: &[Value]) {
    let (d, container) = controller(docs);
    let pod = pod_spec(d);
    let args = strings(&container["args"]);
    assert_eq!(
        strings(&container["command"]),
        ["/usr/local/bin/pvc-guard"],
        "command is the binary alone"
    );
    assert_eq!(
        args.first().map(String::as_str),
        Some("controller"),
        "{args:?}"
    );
    assert_eq!(
        flag_value(&args, "--log-format").as_deref(),
        Some("json"),
        "the controller logs JSON in the cluster"
    );
    // The same config file as the webhook, from the same ConfigMap.
    let path = flag_value(&args, "--config").expect("the controller is given --config");
    let volume = volume_for(pod, container, &path);
    let webhook = deployment(docs);
    let webhook_path =
        flag_value(&strings(&webhook_container(webhook)["args"]), "--config").unwrap();
    assert_eq!(
        volume["configMap"]["name"],
        volume_for(pod_spec(webhook), webhook_container(webhook), &webhook_path)["configMap"]["name"],
        "the controller reads the webhook's config"
    );
    // The kubelet probes the pod's address, on the port the flag names.
    let listen = flag_value(&args, "--health-listen").expect("--health-listen");
    assert_eq!(
        listen,
        format!("0.0.0.0:{HEALTH_PORT}"),
        "the probes reach the pod's address"
    );
    assert_eq!(resolve_port(container, &json!("health")), HEALTH_PORT);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "controller {probe} path");
        assert_ne!(get["scheme"], "HTTPS", "controller {probe}: plain HTTP");
        assert_eq!(
            resolve_port(container, &get["port"]),
            HEALTH_PORT,
            "controller {probe} port"
        );
    }
    check_security(pod, container, "the controller");
    let resources = &container["resources"];
    assert!(!resources["limits"]["memory"].is_null(), "a memory limit");
    let env = container["env"].as_array().expect("env");
    let from_field = |name: &str, field: &str| {
        env.iter()
            .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == field)
    };
    assert!(
        from_field("POD_NAME", "metadata.name"),
        "the Lease holder identity is the pod's name"
    );
    assert!(
        from_field("PVC_GUARD_LEASE_NAMESPACE", "metadata.namespace"),
        "the Lease lives in the pod's namespace"
    );

    let account = pod["serviceAccountName"]
        .as_str()
        .expect("a ServiceAccount");
    assert_eq!(account, CONTROLLER, "the controller's own ServiceAccount");
    find(docs, "ServiceAccount", account);
    assert_eq!(
        granted(docs, account),
        controller_grants(),
        "RBAC grows by exactly what the claim controller calls"
    );
    // Only this account creates claims or reads workloads.
    let others: Vec<String> = objects(docs, "ServiceAccount")
        .filter_map(|a| a["metadata"]["name"].as_str())
        .filter(|a| *a != CONTROLLER)
        .flat_map(|a| granted(docs, a))
        .filter(|g| g.contains(" create") || g.contains("/pods ") || g.contains("/deployments "))
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

/// Each Deployment's pods are selected by a NetworkPolicy that admits
/// only the ports its process listens on.
fn check_network_policies(docs: &[Value]) {
    let (controller, controller_container) = controller(docs);
    let webhook = deployment(docs);
    let args = strings(&webhook_container(webhook)["args"]);
    let metrics_port: i64 = flag_value(&args, "--metrics-listen")
        .and_then(|a| a.rsplit(':').next()?.parse().ok())
        .expect("the webhook serves /metrics over plain HTTP (--metrics-listen)");
    for (d, container, listens, name) in [
        (
            webhook,
            webhook_container(webhook),
            vec![LISTEN_PORT, metrics_port],
            "the webhook",
        ),
        (
            controller,
            controller_container,
            vec![HEALTH_PORT],
            "the controller",
        ),
    ] {
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let policies: Vec<&Value> = objects(docs, "NetworkPolicy")
            .filter(|p| selects(&p["spec"]["podSelector"], labels))
            .collect();
        assert_eq!(
            policies.len(),
            1,
            "{name}: one NetworkPolicy selects its pods"
        );
        let spec = &policies[0]["spec"];
        assert!(
            strings(&spec["policyTypes"]).contains(&"Ingress".to_string()),
            "{name}: the policy restricts ingress"
        );
        let rules: Vec<&Value> = items(&spec["ingress"]).collect();
        assert!(!rules.is_empty(), "{name}: some ingress is admitted");
        for rule in rules {
            let ports: Vec<&Value> = items(&rule["ports"]).collect();
            assert!(
                !ports.is_empty(),
                "{name}: an ingress rule without ports admits every port: {rule}"
            );
            for p in ports {
                let admitted = resolve_port(container, &p["port"]);
                assert!(
                    listens.contains(&admitted),
                    "{name}: only the ports it listens on ({listens:?}) are admitted, not {admitted}: {p}"
                );
                assert_eq!(p["protocol"], "TCP", "{name}: {p}");
            }
        }
    }
}

/// The exemption labels are guarded in process: a paramless
/// ValidatingAdmissionPolicy over the namespace's labels and the caller's
/// groups, bound to deny.
fn check_exemption_policy(docs: &[Value]) {
    let policy = find(docs, "ValidatingAdmissionPolicy", EXEMPTION_POLICY);
    assert_eq!(
        policy["apiVersion"], "admissionregistration.k8s.io/v1",
        "the GA API"
    );
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    assert!(spec.get("paramKind").is_none(), "no parameters to install");
    let rules: Vec<&Value> = items(&spec["matchConstraints"]["resourceRules"]).collect();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(strings(&rules[0]["resources"]), ["namespaces"]);
    assert_eq!(strings(&rules[0]["apiGroups"]), [""]);
    let operations: BTreeSet<String> = strings(&rules[0]["operations"]).into_iter().collect();
    assert_eq!(
        operations,
        ["CREATE", "UPDATE"].map(str::to_string).into(),
        "labels are set on create and changed or removed on update"
    );
    // The group list comes first, so the documented patch finds it.
    let groups = &spec["variables"][0];
    assert_eq!(groups["name"], "exemptionGroups");
    assert!(
        groups["expression"]
            .as_str()
            .is_some_and(|e| e.contains("'system:masters'")),
        "{groups}"
    );
    let expressions: String = items(&spec["variables"])
        .chain(items(&spec["validations"]))
        .filter_map(|v| v["expression"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for label in EXEMPTION_LABELS {
        assert!(expressions.contains(&format!("'{label}'")), "{label}");
    }
    assert!(expressions.contains("request.userInfo.groups"));
    assert!(expressions.contains("oldObject"), "removing a label counts");
    let binding = find(docs, "ValidatingAdmissionPolicyBinding", EXEMPTION_POLICY);
    assert_eq!(binding["spec"]["policyName"], EXEMPTION_POLICY);
    assert_eq!(strings(&binding["spec"]["validationActions"]), ["Deny"]);
    assert!(binding["spec"].get("paramRef").is_none());
}

#[test]
fn base_holds_the_invariants() {
    let Some(docs) = kustomize(Path::new("manifests")) else {
        return;
    };
    check_webhooks(&docs);
    check_deployment(&docs);
    check_controller(&docs);
    check_network_policies(&docs);
    check_exemption_policy(&docs);
    for hook in &HOOKS {
        let config = find(&docs, hook.kind, "pvc-guard");
        for w in items(&config["webhooks"]) {
            assert!(
                w["clientConfig"].get("caBundle").is_none(),
                "the base carries no caBundle: an overlay supplies it"
            );
        }
    }
    assert_eq!(
        objects(&docs, "Secret").count(),
        0,
        "the base holds no certificate: an overlay supplies it"
    );
}

#[test]
fn cert_manager_overlay_injects_the_ca() {
    let Some(docs) = kustomize(Path::new("manifests/overlays/cert-manager")) else {
        return;
    };
    check_webhooks(&docs);
    check_deployment(&docs);
    check_controller(&docs);
    check_network_policies(&docs);
    check_exemption_policy(&docs);

    let certificate = find(&docs, "Certificate", "pvc-guard");
    assert_eq!(certificate["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        certificate["spec"]["secretName"], SECRET,
        "the Certificate writes the Secret the Deployment mounts"
    );
    let dns_names = strings(&certificate["spec"]["dnsNames"]);
    for name in [
        SERVICE.to_string(),
        format!("{SERVICE}.{NAMESPACE}"),
        format!("{SERVICE}.{NAMESPACE}.svc"),
        format!("{SERVICE}.{NAMESPACE}.svc.cluster.local"),
    ] {
        assert!(
            dns_names.contains(&name),
            "the Certificate names {name}: {dns_names:?}"
        );
    }
    let issuer = &certificate["spec"]["issuerRef"];
    let issuer_kind = issuer["kind"].as_str().unwrap_or("Issuer");
    let issuer_name = issuer["name"].as_str().expect("issuerRef.name");
    if issuer_kind == "Issuer" {
        let issuer = find(&docs, "Issuer", issuer_name);
        assert_eq!(
            issuer["metadata"]["namespace"], NAMESPACE,
            "the Issuer is in the Certificate's namespace"
        );
    }

    let inject_from = format!(
        "{NAMESPACE}/{}",
        certificate["metadata"]["name"].as_str().unwrap_or_default()
    );
    for hook in &HOOKS {
        let config = find(&docs, hook.kind, "pvc-guard");
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            inject_from.as_str(),
            "{} carries cert-manager.io/inject-ca-from",
            hook.kind
        );
    }
}

fn certs(out: &Path, force: bool) -> Output {
    let mut command = pvc_guard();
    command
        .args([
            "certs",
            "--service",
            SERVICE,
            "--namespace",
            NAMESPACE,
            "--out",
        ])
        .arg(out);
    if force {
        command.arg("--force");
    }
    command.output().expect("pvc-guard runs")
}

fn decode(text: &str) -> Vec<u8> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .expect("valid base64")
}

/// The self-signed overlay as rendered from what `pvc-guard certs` wrote.
fn check_self_signed(docs: &[Value], certs_dir: &Path) {
    check_webhooks(docs);
    check_deployment(docs);
    check_controller(docs);
    check_network_policies(docs);
    check_exemption_policy(docs);
    let read =
        |name: &str| fs::read(certs_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ca = read("ca.crt");
    for hook in &HOOKS {
        let config = find(docs, hook.kind, "pvc-guard");
        for w in items(&config["webhooks"]) {
            let bundle = w["clientConfig"]["caBundle"]
                .as_str()
                .unwrap_or_else(|| panic!("{} webhook {} has a caBundle", hook.kind, w["name"]));
            assert_eq!(
                decode(bundle),
                ca,
                "{} webhook {}: caBundle is ca.crt",
                hook.kind,
                w["name"]
            );
        }
    }
    let secret = find(docs, "Secret", SECRET);
    assert_eq!(
        secret["metadata"]["namespace"], NAMESPACE,
        "Secret namespace"
    );
    assert_eq!(secret["type"], "kubernetes.io/tls", "Secret type");
    for file in ["tls.crt", "tls.key"] {
        let data = secret["data"][file]
            .as_str()
            .unwrap_or_else(|| panic!("the Secret holds {file}"));
        assert_eq!(
            decode(data),
            read(file),
            "the Secret's {file} is the file pvc-guard certs wrote"
        );
    }
}

#[test]
fn self_signed_overlay_reads_what_pvc_guard_certs_writes() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    copy_dir(&root().join("manifests"), &tmp.path().join("manifests"));
    let certs_dir = tmp.path().join("certs");
    let overlay = tmp
        .path()
        .join("manifests")
        .join("overlays")
        .join("self-signed");

    let first = certs(&certs_dir, false);
    assert!(
        first.status.success(),
        "pvc-guard certs: {}",
        describe(&first)
    );
    for file in [
        "ca.crt",
        "tls.crt",
        "tls.key",
        "kustomization.yaml",
        "cabundle-patch.yaml",
    ] {
        assert!(
            certs_dir.join(file).is_file(),
            "pvc-guard certs wrote {file}"
        );
    }
    let key = fs::read(certs_dir.join("tls.key")).expect("tls.key");

    let rendered = kustomize(&overlay);
    if let Some(docs) = &rendered {
        check_self_signed(docs, &certs_dir);
    }

    let again = certs(&certs_dir, false);
    assert_eq!(
        again.status.code(),
        Some(2),
        "pvc-guard certs without --force over an existing key: {}",
        describe(&again)
    );
    assert_eq!(
        fs::read(certs_dir.join("tls.key")).expect("tls.key"),
        key,
        "tls.key is left unchanged"
    );

    let forced = certs(&certs_dir, true);
    assert!(
        forced.status.success(),
        "pvc-guard certs --force: {}",
        describe(&forced)
    );
    assert_ne!(
        fs::read(certs_dir.join("tls.key")).expect("tls.key"),
        key,
        "--force writes a new key"
    );

    if rendered.is_some() {
        let docs = kustomize(&overlay).expect("kubectl was installed a moment ago");
        check_self_signed(&docs, &certs_dir);
    }
}

#[test]
fn the_exemption_groups_change_with_the_documented_kustomize_patch() {
    // The patch as manifests/base/kustomization.yaml shows it, commented.
    let base = fs::read_to_string(root().join("manifests/base/kustomization.yaml")).unwrap();
    let documented: Vec<&str> = base
        .lines()
        .skip_while(|l| l.trim() != "# patches:")
        .map_while(|l| l.strip_prefix("# "))
        .collect();
    assert!(
        documented.len() > 3,
        "kustomization.yaml documents the patch"
    );
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&root().join("manifests"), &tmp.path().join("manifests"));
    let overlay = tmp.path().join("overlay");
    fs::create_dir_all(&overlay).unwrap();
    fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../manifests/base\n{}\n",
            documented.join("\n")
        ),
    )
    .unwrap();
    let Some(docs) = kustomize(&overlay) else {
        return;
    };
    let policy = find(&docs, "ValidatingAdmissionPolicy", EXEMPTION_POLICY);
    assert_eq!(
        policy["spec"]["variables"][0]["expression"],
        "['system:masters', 'platform-admins']"
    );
    check_exemption_policy(&docs);
}

#[test]
fn pvc_guard_check_passes_on_the_rendered_manifests() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    for (name, dir) in [
        ("base", "manifests"),
        ("cert-manager", "manifests/overlays/cert-manager"),
    ] {
        let Some(text) = kustomize_text(Path::new(dir)) else {
            return;
        };
        let rendered = tmp.path().join(format!("{name}.yaml"));
        fs::write(&rendered, &text).expect("writing the rendered manifests");
        let output = pvc_guard()
            .arg("check")
            .arg("-f")
            .arg(&rendered)
            .output()
            .expect("pvc-guard runs");
        assert_eq!(
            output.status.code(),
            Some(0),
            "pvc-guard check -f <{dir} rendered>: {}",
            describe(&output)
        );

        // The config the ConfigMap ships is one the server accepts.
        let config = tmp.path().join(format!("{name}-config.yaml"));
        fs::write(&config, shipped_config(&parse_documents(&text))).expect("writing the config");
        let output = pvc_guard()
            .arg("check")
            .arg("--config")
            .arg(&config)
            .arg("-f")
            .arg(&rendered)
            .output()
            .expect("pvc-guard runs");
        assert_eq!(
            output.status.code(),
            Some(0),
            "pvc-guard check --config <shipped config>: {}",
            describe(&output)
        );
    }
}

#[test]
fn examples_are_judged_as_their_comments_say() {
    // (file, exit code of `pvc-guard check`, a deny rule it must report)
    let cases = [
        ("namespace.yaml", 0, None),
        ("postgres-emptydir.yaml", 1, Some("ephemeral-data-path")),
        ("postgres-no-volume.yaml", 1, Some("ephemeral-data-path")),
        ("postgres-statefulset.yaml", 0, None),
        ("redis-cache.yaml", 0, None),
        ("opt-out.yaml", 0, None),
    ];
    for (file, code, deny_rule) in cases {
        let path = root().join("examples").join(file);
        let output = pvc_guard()
            .args(["check", "-o", "json", "-f"])
            .arg(&path)
            .output()
            .expect("pvc-guard runs");
        assert_eq!(
            output.status.code(),
            Some(code),
            "pvc-guard check -f examples/{file}: {}",
            describe(&output)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "examples/{file}: the JSON report: {e}\n{}",
                describe(&output)
            )
        });
        let findings: Vec<&Value> = items(&report)
            .flat_map(|entry| items(&entry["findings"]))
            .collect();
        match deny_rule {
            Some(rule) => assert!(
                findings
                    .iter()
                    .any(|f| f["rule"] == rule && f["severity"] == "deny"),
                "examples/{file} is denied for {rule}: {findings:?}"
            ),
            None => assert!(
                findings.iter().all(|f| f["severity"] != "deny"),
                "examples/{file} has no deny finding: {findings:?}"
            ),
        }
    }
    // The good examples draw no ephemeral-data-path finding at all.
    for file in [
        "postgres-statefulset.yaml",
        "redis-cache.yaml",
        "opt-out.yaml",
    ] {
        let output = pvc_guard()
            .args(["check", "-o", "json", "-f"])
            .arg(root().join("examples").join(file))
            .output()
            .expect("pvc-guard runs");
        let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
        assert!(
            items(&report)
                .flat_map(|entry| items(&entry["findings"]))
                .all(|f| f["rule"] != "ephemeral-data-path"),
            "examples/{file} draws no ephemeral-data-path finding: {}",
            describe(&output)
        );
    }
}

/// The monitoring component as its kustomization.yaml says to include it:
/// an overlay of the base with `components: [../../monitoring]`.
#[test]
fn the_monitoring_component_scrapes_both_metrics_ports() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&root().join("manifests"), &tmp.path().join("manifests"));
    let overlay = tmp.path().join("manifests/overlays/mine");
    fs::create_dir_all(&overlay).unwrap();
    fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../../base\ncomponents:\n- ../../monitoring\n",
    )
    .unwrap();
    let Some(docs) = kustomize(&overlay) else {
        return;
    };
    let monitor = find(&docs, "ServiceMonitor", "pvc-guard");
    assert_eq!(monitor["metadata"]["namespace"], NAMESPACE);
    let endpoints: Vec<&Value> = items(&monitor["spec"]["endpoints"]).collect();
    assert_eq!(endpoints.len(), 1, "{monitor}");
    let port_name = endpoints[0]["port"].as_str().expect("a named port");
    assert_eq!(endpoints[0]["path"], "/metrics");
    assert_eq!(
        endpoints[0]["scheme"], "http",
        "the metrics ports are plain HTTP"
    );
    let selected: Vec<&Value> = objects(&docs, "Service")
        .filter(|s| selects(&monitor["spec"]["selector"], &s["metadata"]["labels"]))
        .collect();
    let names: BTreeSet<&str> = selected
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["pvc-guard-metrics", "pvc-guard-controller-metrics"]),
        "the ServiceMonitor selects the two metrics Services and not the webhook's"
    );

    // Each selected Service's named port reaches the port that process
    // serves /metrics on over plain HTTP.
    let webhook = deployment(&docs);
    let webhook_args = strings(&webhook_container(webhook)["args"]);
    let metrics_port: i64 = flag_value(&webhook_args, "--metrics-listen")
        .and_then(|a| a.rsplit(':').next()?.parse().ok())
        .expect("the webhook sets --metrics-listen");
    let (controller_deployment, controller_container) = controller(&docs);
    for service in selected {
        let port = items(&service["spec"]["ports"])
            .find(|p| p["name"] == port_name)
            .unwrap_or_else(|| panic!("{service} has no port named {port_name}"));
        let (d, container, expected) = if selects(
            &json!({"matchLabels": service["spec"]["selector"]}),
            &pod_spec_labels(webhook),
        ) {
            (webhook, webhook_container(webhook), metrics_port)
        } else {
            (controller_deployment, controller_container, HEALTH_PORT)
        };
        assert!(
            selects(
                &json!({"matchLabels": service["spec"]["selector"]}),
                &pod_spec_labels(d)
            ),
            "{service} selects the pods of {}",
            d["metadata"]["name"]
        );
        assert_eq!(
            resolve_port(container, &port["targetPort"]),
            expected,
            "{service}"
        );
    }

    let rules = find(&docs, "PrometheusRule", "pvc-guard");
    assert_eq!(rules["metadata"]["namespace"], NAMESPACE);
    let alerts: Vec<&Value> = items(&rules["spec"]["groups"])
        .flat_map(|g| items(&g["rules"]))
        .collect();
    assert!(alerts.len() >= 5, "{rules}");
    for alert in alerts {
        assert!(
            alert["alert"].is_string() && alert["expr"].is_string(),
            "{alert}"
        );
        assert!(alert["labels"]["severity"].is_string(), "{alert}");
        assert!(alert["annotations"]["summary"].is_string(), "{alert}");
    }

    let dashboard = find(&docs, "ConfigMap", "pvc-guard-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], NAMESPACE);
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json_text = dashboard["data"]["pvc-guard-dashboard.json"]
        .as_str()
        .expect("the dashboard's JSON");
    let parsed: Value = serde_json::from_str(json_text).expect("the dashboard is JSON");
    assert!(items(&parsed["panels"]).next().is_some(), "{parsed}");
}

fn pod_spec_labels(deployment: &Value) -> Value {
    deployment["spec"]["template"]["metadata"]["labels"].clone()
}
