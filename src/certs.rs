//! Certificates: a CA and a serving certificate made with rcgen, for the
//! webhook Service (`pvc-guard certs`) or for `serve` on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

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
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now.into();
    ca_params.not_after = until.into();
    let ca_key = KeyPair::generate()?;
    // During a rotation the bundle holds the old CA and the new one: a name
    // of their own (when, and a digest of the key) tells them apart, in
    // `openssl x509 -subject` as in the issuer of the certificate served.
    let issued = ca_params.not_before;
    let key_digest = Sha256::digest(ca_key.public_key_raw());
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(
        DnType::CommonName,
        format!(
            "{common_name} CA {:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z {:02x}{:02x}{:02x}{:02x}",
            issued.year(),
            u8::from(issued.month()),
            issued.day(),
            issued.hour(),
            issued.minute(),
            issued.second(),
            key_digest[0],
            key_digest[1],
            key_digest[2],
            key_digest[3],
        ),
    );
    ca_params.distinguished_name = ca_dn;
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
    /// Overwrite an existing key. The new ca.crt (and caBundle) then holds
    /// the new CA followed by the one it replaces, so the API server trusts
    /// both while the Secret's files are swapped.
    #[arg(long)]
    pub force: bool,
    /// Another DNS name for the serving certificate (repeatable), beside the
    /// Service's own names.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// An IP address for the serving certificate (repeatable), for a webhook
    /// registered by `url` (for example https://127.0.0.1:8443 in a test).
    #[arg(long = "ip", value_name = "ADDRESS")]
    pub ips: Vec<std::net::IpAddr>,
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
/// (`pvc-guard install` renders the overlay with the same component.)
pub fn kustomize_pieces(namespace: &str, bundle_pem: &str) -> (String, String) {
    let ca = b64(bundle_pem.as_bytes());
    let mut patch = String::from(
        "# Written by pvc-guard certs: ca.crt, the CA that signed tls.crt (after --force, followed by the CA it replaced).\n",
    );
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

/// Writes `text` to `path` by way of a new file in the same directory,
/// renamed over `path`. The new file is created exclusively (`O_EXCL` never
/// follows a symlink) with its final mode, so a key is never readable by
/// others, not even for a moment, and a symlink planted at `path` is
/// replaced, never written through.
fn write(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("not a file name"))?;
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(".{name}.{}.{attempt}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        match options.open(&tmp) {
            Ok(file) => break (tmp, file),
            // Left behind by a run that was killed: pick another name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", tmp.display())),
        }
    };
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let _ = private;
    Ok(written?)
}

/// The first certificate of an existing `ca.crt`, the CA that signed the
/// `tls.crt` being replaced. Only a regular file is read, and only its first
/// certificate is kept, so rotations never accumulate old CAs.
fn previous_ca(path: &Path) -> Option<String> {
    if !std::fs::symlink_metadata(path).ok()?.is_file() {
        return None;
    }
    first_certificate(&std::fs::read_to_string(path).ok()?)
}

/// What `read` takes from the first certificate of `pem`, if it parses.
pub fn read_first_certificate<T>(
    pem: &str,
    read: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
) -> Option<T> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(read(&cert))
}

/// The first PEM certificate of a bundle, with a final newline, if it
/// parses: a damaged bundle must not break the one made from it.
pub fn first_certificate(text: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text.find(BEGIN)?;
    let end = start + text[start..].find(END)? + END.len();
    let pem = &text[start..end];
    read_first_certificate(pem, |_| ())?;
    Some(format!("{pem}\n"))
}

pub fn run(args: CertsArgs) -> Result<ExitCode, String> {
    let key_path = args.out.join("tls.key");
    // symlink_metadata: a dangling symlink named tls.key counts as present.
    if std::fs::symlink_metadata(&key_path).is_ok() && !args.force {
        return Err(format!(
            "{} exists; pass --force to replace it",
            key_path.display()
        ));
    }
    if args.days == 0 {
        return Err("--days must be at least 1".into());
    }
    let mut names = service_dns_names(&args.service, &args.namespace);
    names.extend(args.dns.iter().cloned());
    let g = generate(
        &format!("{}.{}.svc", args.service, args.namespace),
        &names,
        &args.ips,
        args.days,
    )
    .map_err(|e| format!("generating certificates: {e}"))?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    // The API server must trust the certificate being served until the
    // kubelet has swapped the Secret's files, and the new one after:
    // the bundle carries both CAs for that while.
    let previous = if args.force {
        previous_ca(&args.out.join("ca.crt"))
    } else {
        None
    };
    let bundle = match &previous {
        Some(old) => format!("{}{old}", g.ca_pem),
        None => g.ca_pem.clone(),
    };
    let (kustomization, patch) = kustomize_pieces(&args.namespace, &bundle);
    let files: [(&str, &str, bool); 5] = [
        ("ca.crt", &bundle, false),
        ("tls.crt", &g.cert_pem, false),
        ("tls.key", &g.key_pem, true),
        ("kustomization.yaml", &kustomization, false),
        ("cabundle-patch.yaml", &patch, false),
    ];
    for (name, text, private) in files {
        let path = args.out.join(name);
        write(&path, text, private).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let ips: Vec<String> = args.ips.iter().map(ToString::to_string).collect();
    eprintln!(
        "wrote ca.crt{}, tls.crt, tls.key and the kustomize component to {} for {}",
        if previous.is_some() {
            " (the new CA, then the previous one)"
        } else {
            ""
        },
        args.out.display(),
        names
            .iter()
            .chain(&ips)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
