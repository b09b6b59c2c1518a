//! Certificates: a CA and a serving certificate made with rcgen, for the
//! webhook Service (`pvc-guard certs`) or for `serve` on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// PEM texts of a CA and a certificate it signed.
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA and a serving certificate for `dns_names` and `ips`, valid `days`.
pub fn generate(
    common_name: &str,
    dns_names: &[String],
    ips: &[std::net::IpAddr],
    days: u32,
) -> anyhow::Result<Generated> {
    let now = time_now();
    let until = now + std::time::Duration::from_secs(u64::from(days) * 86_400);

    let mut ca_params = CertificateParams::default();
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(DnType::CommonName, format!("{common_name} CA"));
    ca_params.distinguished_name = ca_dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now.into();
    ca_params.not_after = until.into();
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name.to_string());
    params.distinguished_name = dn;
    params.subject_alt_names = dns_names
        .iter()
        .map(|n| Ok(SanType::DnsName(n.clone().try_into()?)))
        .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now.into();
    params.not_after = until.into();
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn time_now() -> std::time::SystemTime {
    // A minute of slack for clocks that are slightly behind.
    std::time::SystemTime::now() - std::time::Duration::from_secs(60)
}

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Name of the webhook Service.
    #[arg(long, default_value = "pvc-guard")]
    pub service: String,
    /// Namespace of the webhook Service.
    #[arg(long, default_value = "pvc-guard")]
    pub namespace: String,
    /// Directory for ca.crt, tls.crt, tls.key and the kustomize pieces.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Overwrite an existing key.
    #[arg(long)]
    pub force: bool,
}

/// The DNS names a Service answers to inside the cluster.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The kustomize component the self-signed overlay includes: the Secret
/// from tls.crt and tls.key, and the caBundle of both webhook configurations.
fn kustomize_pieces(namespace: &str, ca_pem: &str) -> (String, String) {
    let ca = b64(ca_pem.as_bytes());
    let mut patch = String::from("# Written by pvc-guard certs: the CA that signed tls.crt.\n");
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        patch.push_str(&format!(
            "---\napiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: pvc-guard\nwebhooks:\n- name: {}.pvc-guard.io\n  clientConfig:\n    caBundle: {ca}\n",
            if kind.starts_with("Validating") { "validate" } else { "mutate" }
        ));
    }
    let kustomization = format!(
        "# Written by pvc-guard certs; manifests/overlays/self-signed includes it.\n\
         apiVersion: kustomize.config.k8s.io/v1alpha1\n\
         kind: Component\n\
         secretGenerator:\n\
         - name: pvc-guard-tls\n  namespace: {namespace}\n  type: kubernetes.io/tls\n  files:\n  - tls.crt\n  - tls.key\n  options:\n    disableNameSuffixHash: true\n\
         patches:\n- path: cabundle-patch.yaml\n"
    );
    (kustomization, patch)
}

fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let _ = private;
    Ok(())
}

pub fn run(args: CertsArgs) -> Result<ExitCode, String> {
    let key_path = args.out.join("tls.key");
    if key_path.exists() && !args.force {
        return Err(format!(
            "{} exists; pass --force to replace it",
            key_path.display()
        ));
    }
    if args.days == 0 {
        return Err("--days must be at least 1".into());
    }
    let names = service_dns_names(&args.service, &args.namespace);
    let g = generate(
        &format!("{}.{}.svc", args.service, args.namespace),
        &names,
        &[],
        args.days,
    )
    .map_err(|e| format!("generating certificates: {e}"))?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let (kustomization, patch) = kustomize_pieces(&args.namespace, &g.ca_pem);
    let files: [(&str, &str, bool); 5] = [
        ("ca.crt", &g.ca_pem, false),
        ("tls.crt", &g.cert_pem, false),
        ("tls.key", &g.key_pem, true),
        ("kustomization.yaml", &kustomization, false),
        ("cabundle-patch.yaml", &patch, false),
    ];
    for (name, text, private) in files {
        let path = args.out.join(name);
        write(&path, text, private).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    eprintln!(
        "wrote ca.crt, tls.crt, tls.key and the kustomize component to {} for {}",
        args.out.display(),
        names.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
