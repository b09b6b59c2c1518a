//! `pvc-guard install` and `uninstall`: the objects of a whole install,
//! rendered from the manifests/ built into the binary (build.rs) with the
//! overlay's own kustomization, so what is printed is what `kubectl
//! apply -k` of the overlay would apply, with a certificate made here.
//!
//! Pure: the caller looks up an existing certificate in the cluster and
//! hands it in.

pub mod kustomize;

use serde_json::{Value, json};

use crate::config::{Config, Mode};
use kustomize::Files;

/// Every file under manifests/ (path relative to it, text), as built in.
pub const MANIFESTS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/manifests.rs"));

/// The namespace manifests/ names, which `--namespace` replaces.
pub const SHIPPED_NAMESPACE: &str = "pvc-guard";
/// The webhook Service, whose DNS names the serving certificate carries.
pub const SERVICE: &str = "pvc-guard";
/// The Secret the webhook's Deployment mounts.
pub const SECRET: &str = "pvc-guard-tls";
/// The webhook configurations' name (both kinds).
pub const WEBHOOK_CONFIGURATION: &str = "pvc-guard";
/// The image placeholder of manifests/, which `--image` replaces.
pub const IMAGE: &str = "ghcr.io/pvc-guard/pvc-guard";
const CONFIG_MAP: &str = "pvc-guard-config";
/// Validity of a generated certificate, as `pvc-guard certs` defaults to.
const DAYS: u32 = 365;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("rendering the embedded manifests: {0}")]
    Kustomize(#[from] kustomize::KustomizeError),
    #[error(
        "--namespace {0:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
    )]
    Namespace(String),
    #[error(
        "--namespace {0}: pvc-guard needs a namespace of its own (install labels it pvc-guard.io/ignore=true and restricted Pod Security, and uninstall --delete-namespace deletes it), not default or a kube-* namespace"
    )]
    SharedNamespace(String),
    #[error("--image {0:?} is not an image reference")]
    Image(String),
    #[error("the embedded manifests have no {0}")]
    Shape(String),
    #[error("generating the certificates: {0}")]
    Generate(String),
    #[error(
        "the certificate in Secret {namespace}/{SECRET} {reason}; pass --rotate-certs to replace it"
    )]
    Existing { namespace: String, reason: String },
}

type Result<T> = std::result::Result<T, InstallError>;

/// The webhook's failure policy (`failurePolicy` of the validating webhook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

/// What to install.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    /// Replaces the placeholder image of both Deployments.
    pub image: Option<String>,
    /// The config's `mode`.
    pub mode: Option<Mode>,
    /// The validating webhook's `failurePolicy`.
    pub failure_policy: Option<FailurePolicy>,
    /// Adds the manifests/monitoring component.
    pub monitoring: bool,
    /// The cert-manager overlay instead of the self-signed one.
    pub cert_manager: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            namespace: SHIPPED_NAMESPACE.into(),
            image: None,
            mode: None,
            failure_policy: None,
            monitoring: false,
            cert_manager: false,
        }
    }
}

/// The serving certificate and key for the Secret, and the bundle the
/// webhook configurations trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificates {
    pub cert_pem: String,
    pub key_pem: String,
    pub bundle_pem: String,
}

impl Certificates {
    /// A new CA and serving certificate for the Service in `namespace`.
    pub fn generate(namespace: &str) -> Result<Certificates> {
        let g = crate::certs::generate(
            &format!("{SERVICE}.{namespace}.svc"),
            &crate::certs::service_dns_names(SERVICE, namespace),
            &[],
            DAYS,
        )
        .map_err(|e| InstallError::Generate(e.to_string()))?;
        Ok(Certificates {
            cert_pem: g.cert_pem,
            key_pem: g.key_pem,
            bundle_pem: g.ca_pem,
        })
    }

    /// New ones, trusted next to the CA that signed the certificate being
    /// replaced, `serving_pem` (the CA of `previous_bundle` whose name is
    /// its issuer; the first when none is, or it cannot be read): the API
    /// server must trust the old certificate until the kubelet has updated
    /// the mounted Secret, and the new one after. Only that one previous
    /// CA is kept, so bundles never grow, as with `pvc-guard certs --force`.
    pub fn rotate(
        namespace: &str,
        previous_bundle: &str,
        serving_pem: &str,
    ) -> Result<Certificates> {
        let mut new = Certificates::generate(namespace)?;
        use crate::certs::{first_certificate, read_first_certificate};
        let issuer = read_first_certificate(serving_pem, |c| c.issuer().as_raw().to_vec());
        let signer = issuer.and_then(|issuer| {
            previous_bundle
                .split_inclusive("-----END CERTIFICATE-----")
                .filter_map(first_certificate)
                .find(|pem| {
                    read_first_certificate(pem, |ca| ca.subject().as_raw() == issuer.as_slice())
                        .unwrap_or(false)
                })
        });
        if let Some(old) = signer.or_else(|| first_certificate(previous_bundle)) {
            new.bundle_pem.push_str(&old);
        }
        Ok(new)
    }

    /// The ones a cluster already has, checked to still be of use as the
    /// API server will use them: the key is the certificate's, and the
    /// bundle verifies the certificate, now, for the Service's name in
    /// `namespace`.
    pub fn existing(
        namespace: &str,
        cert_pem: &str,
        key_pem: &str,
        bundle_pem: &str,
    ) -> Result<Certificates> {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
        let refuse = |reason: String| InstallError::Existing {
            namespace: namespace.to_string(),
            reason,
        };
        let cert: CertificateDer<'static> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(|c| c.ok())
            .ok_or_else(|| refuse("is not a PEM certificate".into()))?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| refuse("has no readable tls.key".into()))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key, &provider)
            .map_err(|e| refuse(format!("does not go with its tls.key ({e})")))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut bundle_pem.as_bytes()).flatten() {
            // A CA the store refuses simply verifies nothing.
            let _ = roots.add(ca);
        }
        if roots.is_empty() {
            return Err(refuse(
                "has no readable CA bundle beside it in the webhook configuration".into(),
            ));
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .map_err(|e| refuse(format!("cannot be checked ({e})")))?;
        let host = format!("{SERVICE}.{namespace}.svc");
        let name = ServerName::try_from(host.clone())
            .map_err(|e| refuse(format!("cannot be checked for {host} ({e})")))?;
        verifier
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .map_err(|e| {
                refuse(format!(
                    "is not one the webhooks' caBundle trusts for {host} now ({e})"
                ))
            })?;
        Ok(Certificates {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            bundle_pem: bundle_pem.to_string(),
        })
    }
}

/// Whole days until the certificate of `cert_pem` expires (negative once
/// it has), if it can be read.
pub fn days_left(cert_pem: &str) -> Option<i64> {
    let not_after =
        crate::certs::read_first_certificate(cert_pem, |c| c.validity().not_after.timestamp())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some((not_after - now) / 86_400)
}

/// The embedded manifests under `manifests/`, and beside them the
/// `certs/` component `pvc-guard certs` would write for `certs`, which the
/// self-signed overlay includes.
fn files(certs: Option<&Certificates>) -> Files {
    let mut files = Files::new();
    for (path, text) in MANIFESTS {
        files.insert(format!("manifests/{path}"), *text);
    }
    let empty = Certificates {
        cert_pem: String::new(),
        key_pem: String::new(),
        bundle_pem: String::new(),
    };
    let certs = certs.unwrap_or(&empty);
    // Rendered for the shipped namespace, like every other object:
    // `--namespace` is applied to the whole rendering afterwards.
    let (kustomization, patch) =
        crate::certs::kustomize_pieces(SHIPPED_NAMESPACE, &certs.bundle_pem);
    files.insert("certs/kustomization.yaml", kustomization);
    files.insert("certs/cabundle-patch.yaml", patch);
    files.insert("certs/tls.crt", certs.cert_pem.clone());
    files.insert("certs/tls.key", certs.key_pem.clone());
    files
}

/// The overlay (and component) `options` select, rendered as kustomize
/// would, then adjusted by the options; in no particular order.
fn render(options: &Options, certs: Option<&Certificates>) -> Result<Vec<Value>> {
    if !crate::k8s::is_dns_label(&options.namespace) {
        return Err(InstallError::Namespace(options.namespace.clone()));
    }
    if options.namespace == "default" || options.namespace.starts_with("kube-") {
        return Err(InstallError::SharedNamespace(options.namespace.clone()));
    }
    let mut files = files(certs);
    let overlay = if options.cert_manager {
        "manifests/overlays/cert-manager"
    } else {
        "manifests/overlays/self-signed"
    };
    let mut root = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- {overlay}\n"
    );
    if options.monitoring {
        root.push_str("components:\n- manifests/monitoring\n");
    }
    files.insert("kustomization.yaml", root);
    let mut objects = kustomize::build(&files, "")?;
    set_namespace(&mut objects, SHIPPED_NAMESPACE, &options.namespace);
    if let Some(image) = &options.image {
        set_image(&mut objects, image)?;
    }
    if let Some(mode) = options.mode {
        set_mode(&mut objects, mode)?;
    }
    if let Some(policy) = options.failure_policy {
        set_failure_policy(&mut objects, policy)?;
    }
    Ok(objects)
}

/// Where a kind goes in an install: the Namespace first, what the pods
/// mount and run as before the Deployments, and the webhook
/// configurations last, so the API server starts calling the webhook only
/// once everything it calls has been created.
fn rank(kind: &str) -> usize {
    const FIRST: &[&str] = &[
        "Namespace",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ];
    const LAST: &[&str] = &[
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    if let Some(i) = FIRST.iter().position(|k| *k == kind) {
        i
    } else if let Some(i) = LAST.iter().position(|k| *k == kind) {
        FIRST.len() + 1 + i
    } else {
        // Issuers, Certificates, ServiceMonitors, PrometheusRules.
        FIRST.len()
    }
}

fn kind(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// Every object of the install, in the order to apply them. Without
/// `certs` (for the self-signed overlay) the Secret and the caBundles are
/// left empty: only the cert-manager variant needs none.
pub fn install(options: &Options, certs: Option<&Certificates>) -> Result<Vec<Value>> {
    let mut objects = render(options, certs)?;
    objects.sort_by_key(|o| rank(kind(o)));
    Ok(objects)
}

/// What `uninstall` deletes: each object of the install as apiVersion,
/// kind and name (and namespace), webhook configurations first, so the API
/// server stops calling the webhook before its server goes, and the
/// Namespace last.
pub fn uninstall(options: &Options) -> Result<Vec<Value>> {
    let mut objects = render(options, None)?;
    objects.sort_by_key(|o| std::cmp::Reverse(rank(kind(o))));
    Ok(objects
        .iter()
        .map(|o| {
            let mut metadata = json!({"name": o["metadata"]["name"]});
            if let Some(ns) = o["metadata"].get("namespace") {
                metadata["namespace"] = ns.clone();
            }
            json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": metadata})
        })
        .collect())
}

/// `name` with its namespace part (`svc.NS`, `svc.NS.svc...`) renamed.
fn rename_dns(name: &str, old: &str, new: &str) -> String {
    let mut parts: Vec<&str> = name.split('.').collect();
    if parts.len() >= 2 && parts[1] == old {
        parts[1] = new;
    }
    parts.join(".")
}

fn rename(v: &mut Value, old: &str, new: &str) {
    if v.as_str() == Some(old) {
        *v = Value::String(new.to_string());
    }
}

fn each<'a>(v: &'a mut Value, pointer: &str) -> impl Iterator<Item = &'a mut Value> {
    v.pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Moves the install from namespace `old` to `new`: every object's
/// namespace, and each place the namespace is written inside another
/// field: the webhooks' Service and their exclusion of their own
/// namespace, RBAC subjects, cert-manager's CA injection and certificate
/// names, the ServiceMonitor's namespace and `namespace="..."` in the
/// alert and dashboard queries.
pub fn set_namespace(objects: &mut [Value], old: &str, new: &str) {
    if old == new {
        return;
    }
    for o in objects.iter_mut() {
        if let Some(ns) = o.pointer_mut("/metadata/namespace") {
            rename(ns, old, new);
        }
        let k = kind(o).to_string();
        if k == "Namespace"
            && let Some(name) = o.pointer_mut("/metadata/name")
        {
            rename(name, old, new);
        }
        for hook in each(o, "/webhooks") {
            if let Some(ns) = hook.pointer_mut("/clientConfig/service/namespace") {
                rename(ns, old, new);
            }
            for e in each(hook, "/namespaceSelector/matchExpressions") {
                if e["key"] == "kubernetes.io/metadata.name" {
                    for v in each(e, "/values") {
                        rename(v, old, new);
                    }
                }
            }
        }
        for s in each(o, "/subjects") {
            if let Some(ns) = s.get_mut("namespace") {
                rename(ns, old, new);
            }
        }
        if let Some(Value::String(from)) =
            o.pointer_mut("/metadata/annotations/cert-manager.io~1inject-ca-from")
            && let Some(name) = from.strip_prefix(&format!("{old}/"))
        {
            *from = format!("{new}/{name}");
        }
        if k == "Certificate" {
            if let Some(Value::String(cn)) = o.pointer_mut("/spec/commonName") {
                *cn = rename_dns(cn, old, new);
            }
            for d in each(o, "/spec/dnsNames") {
                if let Value::String(name) = d {
                    *name = rename_dns(name, old, new);
                }
            }
        }
        for n in each(o, "/spec/namespaceSelector/matchNames") {
            rename(n, old, new);
        }
        replace_in_strings(
            o,
            &[
                (
                    format!("namespace=\"{old}\""),
                    format!("namespace=\"{new}\""),
                ),
                (
                    format!("namespace=\\\"{old}\\\""),
                    format!("namespace=\\\"{new}\\\""),
                ),
            ],
        );
    }
}

fn replace_in_strings(v: &mut Value, pairs: &[(String, String)]) {
    match v {
        Value::String(s) => {
            for (from, to) in pairs {
                if s.contains(from.as_str()) {
                    *s = s.replace(from.as_str(), to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| replace_in_strings(i, pairs)),
        Value::Object(map) => map.values_mut().for_each(|i| replace_in_strings(i, pairs)),
        _ => {}
    }
}

fn set_image(objects: &mut [Value], image: &str) -> Result<()> {
    let (name, _, _) = kustomize::split_image(image);
    if name.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InstallError::Image(image.to_string()));
    }
    let mut replaced = 0;
    for o in objects.iter_mut() {
        kustomize::for_each_container_image(o, &mut |current| {
            if kustomize::split_image(current).0 == IMAGE {
                *current = image.to_string();
                replaced += 1;
            }
        });
    }
    if replaced == 0 {
        return Err(InstallError::Shape(format!("container running {IMAGE}")));
    }
    Ok(())
}

/// The `mode:` line of the shipped config replaced, its comments kept.
fn set_mode(objects: &mut [Value], mode: Mode) -> Result<()> {
    let shape = || InstallError::Shape(format!("ConfigMap {CONFIG_MAP} with one top-level mode"));
    let text = objects
        .iter_mut()
        .find(|o| kind(o) == "ConfigMap" && o["metadata"]["name"] == CONFIG_MAP)
        .and_then(|o| o.pointer_mut("/data/config.yaml"))
        .ok_or_else(shape)?;
    let Value::String(config) = text else {
        return Err(shape());
    };
    let lines: Vec<&str> = config.split_inclusive('\n').collect();
    let at: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("mode:"))
        .collect();
    let [at] = at[..] else {
        return Err(shape());
    };
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i == at {
            out.push_str(&format!("mode: {}\n", mode.as_str()));
        } else {
            out.push_str(line);
        }
    }
    // The config is read back as `serve` reads it, so a change of its
    // layout cannot turn this into a config that says something else.
    match Config::from_yaml(&out) {
        Ok(c) if c.mode == mode => {
            *config = out;
            Ok(())
        }
        _ => Err(shape()),
    }
}

fn set_failure_policy(objects: &mut [Value], policy: FailurePolicy) -> Result<()> {
    let mut set = 0;
    for o in objects
        .iter_mut()
        .filter(|o| kind(o) == "ValidatingWebhookConfiguration")
    {
        for hook in each(o, "/webhooks") {
            hook["failurePolicy"] = json!(policy.as_str());
            set += 1;
        }
    }
    if set == 0 {
        return Err(InstallError::Shape("validating webhook".into()));
    }
    Ok(())
}

/// The CA bundle the validating webhook of `configuration` (a
/// ValidatingWebhookConfiguration as the API returns it) trusts, as PEM.
pub fn ca_bundle_of(configuration: &Value) -> Option<String> {
    use base64::Engine;
    let hooks = configuration.get("webhooks")?.as_array()?;
    let b64 = hooks
        .iter()
        .find_map(|h| h.pointer("/clientConfig/caBundle").and_then(Value::as_str))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_move_to_the_new_namespace() {
        assert_eq!(
            rename_dns("pvc-guard.pvc-guard.svc.cluster.local", "pvc-guard", "x"),
            "pvc-guard.x.svc.cluster.local"
        );
        assert_eq!(rename_dns("pvc-guard", "pvc-guard", "x"), "pvc-guard");
    }

    #[test]
    fn a_bad_namespace_or_image_is_an_error_not_a_panic() {
        for ns in ["", "Upper", "a_b", &"a".repeat(64), "-a"] {
            let o = Options {
                namespace: ns.to_string(),
                ..Options::default()
            };
            assert!(
                matches!(uninstall(&o), Err(InstallError::Namespace(_))),
                "{ns}"
            );
        }
        for image in ["", "a b", ":tag"] {
            let o = Options {
                image: Some(image.into()),
                ..Options::default()
            };
            assert!(
                matches!(install(&o, None), Err(InstallError::Image(_))),
                "{image:?}"
            );
        }
    }

    #[test]
    fn existing_certificates_must_fit_the_namespace() {
        let c = Certificates::generate("team").unwrap();
        assert!(Certificates::existing("team", &c.cert_pem, &c.key_pem, &c.bundle_pem).is_ok());
        let e = Certificates::existing("other", &c.cert_pem, &c.key_pem, &c.bundle_pem)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not valid for name \"pvc-guard.other.svc\"")
                && e.contains("--rotate-certs"),
            "{e}"
        );
        assert!(Certificates::existing("team", "garbage", &c.key_pem, &c.bundle_pem).is_err());
        assert!(Certificates::existing("team", &c.cert_pem, &c.key_pem, "").is_err());
        // Another install's key, or a bundle that did not sign it.
        let other = Certificates::generate("team").unwrap();
        let e = Certificates::existing("team", &c.cert_pem, &other.key_pem, &c.bundle_pem)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not go with its tls.key"), "{e}");
        let e = Certificates::existing("team", &c.cert_pem, &c.key_pem, &other.bundle_pem)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is not one the webhooks' caBundle trusts"),
            "{e}"
        );
        assert!(matches!(days_left(&c.cert_pem), Some(364 | 365)));
        let r = Certificates::rotate("team", &c.bundle_pem, &c.cert_pem).unwrap();
        assert!(r.bundle_pem.ends_with(&c.bundle_pem));
        assert_eq!(r.bundle_pem.matches("BEGIN CERTIFICATE").count(), 2);
        // Rotating again drops the oldest.
        let r2 = Certificates::rotate("team", &r.bundle_pem, &r.cert_pem).unwrap();
        assert_eq!(r2.bundle_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(!r2.bundle_pem.contains(&c.bundle_pem));
        // The CA kept is the one that signed the serving certificate, not
        // the bundle's first: a bundle of [other, c] serving c's keeps c.
        let mixed = format!("{}{}", other.bundle_pem, c.bundle_pem);
        let r3 = Certificates::rotate("team", &mixed, &c.cert_pem).unwrap();
        assert!(r3.bundle_pem.ends_with(&c.bundle_pem), "{}", r3.bundle_pem);
        assert!(!r3.bundle_pem.contains(&other.bundle_pem));
    }
}
