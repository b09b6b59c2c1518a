//! TLS: rustls with a certificate resolver whose key can be swapped while
//! connections run, so a Secret rotated on disk needs no restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate every new handshake presents; swapped on reload.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    /// Expiry of the leaf certificate, seconds since the epoch.
    not_after: std::sync::atomic::AtomicI64,
}

impl CertStore {
    pub fn new(key: CertifiedKey, not_after: i64) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(key),
            not_after: std::sync::atomic::AtomicI64::new(not_after),
        })
    }

    pub fn swap(&self, key: CertifiedKey, not_after: i64) {
        self.current.store(Arc::new(key));
        self.not_after
            .store(not_after, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn not_after(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Parses a PEM chain and key into a signing key, and reads the leaf's expiry.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<(CertifiedKey, i64)> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .context("reading the certificate PEM")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the certificate file holds no certificate"
    );
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("reading the key PEM")?
        .context("the key file holds no private key")?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .context("loading the private key")?;
    let (_, leaf) =
        x509_parser::parse_x509_certificate(&certs[0]).context("parsing the certificate")?;
    let not_after = leaf.validity().not_after.timestamp();
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .context("the private key does not match the certificate")?;
    Ok((ck, not_after))
}

pub fn load_files(cert: &Path, key: &Path) -> anyhow::Result<(CertifiedKey, i64, Vec<u8>)> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let (ck, not_after) = certified_key(&cert_pem, &key_pem)?;
    let mut fingerprint = cert_pem;
    fingerprint.extend_from_slice(&key_pem);
    Ok((ck, not_after, fingerprint))
}

/// TLS 1.2 and 1.3 only, ALPN h2 and http/1.1, optional client certificates.
pub fn server_config(
    store: Arc<CertStore>,
    client_ca: Option<&PathBuf>,
) -> anyhow::Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                roots.add(cert.context("reading the client CA PEM")?)?;
            }
            anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
            // A presented certificate must verify, but none is also let through
            // the handshake: kubelet probes carry no certificate, and the
            // admission endpoints refuse such connections themselves.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
