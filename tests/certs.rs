//! `pvc-guard certs`: the serving certificate verifies for every Service DNS
//! name against the generated CA, and tls.key belongs to tls.crt.

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
