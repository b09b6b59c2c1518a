//! `pvc-guard certs`: the serving certificate verifies for every Service DNS
//! name (and any `--dns`/`--ip`) against the generated CA, tls.key belongs
//! to tls.crt and is a new 0600 file that no link can read, and `--force`
//! bundles the new CA with the one it replaces.

mod common;

use std::sync::Arc;

use common::run_cli;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

fn certs_in(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn the_certificate_verifies_for_each_service_name_and_the_key_matches() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let (code, _, err) = run_cli(
        &[
            "certs",
            "--service",
            "hook",
            "--namespace",
            "guard",
            "--out",
            out.to_str().unwrap(),
            "--days",
            "30",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    let cert = std::fs::read(out.join("tls.crt")).unwrap();
    let key = std::fs::read(out.join("tls.key")).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    for c in certs_in(&ca) {
        roots.add(c).unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        pvc_guard::server::tls::provider(),
    )
    .build()
    .unwrap();
    let chain = certs_in(&cert);
    let now = UnixTime::now();
    for name in [
        "hook",
        "hook.guard",
        "hook.guard.svc",
        "hook.guard.svc.cluster.local",
    ] {
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let wrong = ServerName::try_from("other.guard.svc".to_string()).unwrap();
    assert!(
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &wrong, &[], now)
            .is_err()
    );

    // The key belongs to the certificate; another key does not.
    pvc_guard::server::tls::certified_key(&cert, &key).expect("tls.key matches tls.crt");
    let other = pvc_guard::certs::generate("x", &["x".to_string()], &[], 1).unwrap();
    assert!(pvc_guard::server::tls::certified_key(&cert, other.key_pem.as_bytes()).is_err());
}

fn certs_cli(out: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["certs", "--out", out.to_str().unwrap()];
    args.extend(extra);
    let (code, _, err) = run_cli(&args, None);
    (code, err)
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_key_is_a_new_private_file_never_written_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    std::fs::create_dir(&out).unwrap();

    // A symlink planted at tls.key: refused without --force, replaced (not
    // followed) with it; its target keeps its content and mode.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "not a key\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::os::unix::fs::symlink(&victim, out.join("tls.key")).unwrap();
    let (code, err) = certs_cli(&out, &[]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = certs_cli(&out, &["--force"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not a key\n");
    assert_eq!(mode(&victim), 0o644);
    let key_path = out.join("tls.key");
    assert!(
        std::fs::symlink_metadata(&key_path)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(mode(&key_path), 0o600);

    // A second name for the key file (a hard link, or a descriptor someone
    // opened) sees the old key, never the new one: --force writes a new
    // file, created 0600, and renames it into place.
    let old_key = std::fs::read(&key_path).unwrap();
    let link = dir.path().join("link");
    std::fs::hard_link(&key_path, &link).unwrap();
    let (code, err) = certs_cli(&out, &["--force"]);
    assert_eq!(code, 0, "{err}");
    let new_key = std::fs::read(&key_path).unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(std::fs::read(&link).unwrap(), old_key);
    assert_eq!(mode(&key_path), 0o600);
    let cert = std::fs::read(out.join("tls.crt")).unwrap();
    pvc_guard::server::tls::certified_key(&cert, &new_key).expect("tls.key matches tls.crt");
    // No temporary file is left beside them.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca.crt",
            "cabundle-patch.yaml",
            "kustomization.yaml",
            "tls.crt",
            "tls.key"
        ]
    );
}

#[test]
fn force_bundles_the_new_ca_with_the_previous_one_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let bundle = || certs_in(&std::fs::read(out.join("ca.crt")).unwrap());
    let patched_bundle = || {
        let patch = std::fs::read_to_string(out.join("cabundle-patch.yaml")).unwrap();
        let b64: Vec<&str> = patch
            .lines()
            .filter_map(|l| l.trim().strip_prefix("caBundle: "))
            .collect();
        assert_eq!(b64.len(), 2, "{patch}");
        use base64::Engine;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64[0])
            .unwrap();
        assert_eq!(b64[0], b64[1]);
        assert_eq!(pem, std::fs::read(out.join("ca.crt")).unwrap());
    };

    let (code, err) = certs_cli(&out, &[]);
    assert_eq!(code, 0, "{err}");
    let first = bundle();
    assert_eq!(first.len(), 1);
    patched_bundle();

    let (code, err) = certs_cli(&out, &["--force"]);
    assert_eq!(code, 0, "{err}");
    let second = bundle();
    assert_eq!(second.len(), 2);
    assert_ne!(second[0], first[0]);
    assert_eq!(second[1], first[0], "the previous CA follows the new one");
    // Told apart by name, even when made within the same second.
    let common_name = |c: &CertificateDer<'static>| {
        let (_, cert) = x509_parser::parse_x509_certificate(c).unwrap();
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap()
            .to_string()
    };
    let (new_name, old_name) = (common_name(&second[0]), common_name(&second[1]));
    assert_ne!(new_name, old_name);
    for name in [&new_name, &old_name] {
        assert!(name.starts_with("pvc-guard.pvc-guard.svc CA 20"), "{name}");
    }
    let served = certs_in(&std::fs::read(out.join("tls.crt")).unwrap());
    let (_, served) = x509_parser::parse_x509_certificate(&served[0]).unwrap();
    assert_eq!(
        served
            .issuer()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok()),
        Some(new_name.as_str()),
        "the certificate names the CA that signed it"
    );
    patched_bundle();
    // The new certificate is the new CA's.
    let cert = std::fs::read(out.join("tls.crt")).unwrap();
    let verifies = |ca: &CertificateDer<'static>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            pvc_guard::server::tls::provider(),
        )
        .build()
        .unwrap();
        let chain = certs_in(&cert);
        let name = ServerName::try_from("pvc-guard.pvc-guard.svc".to_string()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .is_ok()
    };
    assert!(verifies(&second[0]));
    assert!(!verifies(&second[1]));

    // Never more than two: the oldest CA goes.
    let (code, err) = certs_cli(&out, &["--force"]);
    assert_eq!(code, 0, "{err}");
    let third = bundle();
    assert_eq!(third.len(), 2);
    assert_eq!(third[1], second[0]);
    patched_bundle();
}

#[test]
fn extra_names_and_addresses_are_in_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let (code, err) = certs_cli(
        &out,
        &[
            "--ip",
            "127.0.0.1",
            "--ip",
            "::1",
            "--dns",
            "webhook.example.test",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_in(&std::fs::read(out.join("ca.crt")).unwrap()) {
        roots.add(c).unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        pvc_guard::server::tls::provider(),
    )
    .build()
    .unwrap();
    let chain = certs_in(&std::fs::read(out.join("tls.crt")).unwrap());
    for name in [
        "127.0.0.1",
        "::1",
        "webhook.example.test",
        "pvc-guard.pvc-guard.svc",
    ] {
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let other = ServerName::try_from("10.0.0.1".to_string()).unwrap();
    assert!(
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &other, &[], UnixTime::now())
            .is_err()
    );
}
