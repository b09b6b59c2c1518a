//! The stack both baselines of benches/load.sh run on, the same as
//! `pvc-guard serve`'s: tokio's multi-thread runtime, rustls with the
//! library's own ServerConfig and certificate store, hyper-util's builder
//! with the HTTP/1.1 and HTTP/2 settings of src/server (chosen by ALPN), an
//! axum router, mimalloc without transparent huge pages. Only the handler
//! differs between the baselines, so their gap to pvc-guard is the handler.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use pvc_guard::server::tls::{self, CertStore};

/// Serves `service` over TLS on the address given as the first argument,
/// else on `default_addr`, until the process is killed.
pub async fn serve(name: &str, default_addr: &str, service: Router) -> anyhow::Result<()> {
    // As src/main.rs: no transparent huge pages, so the RSS figures compare.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default_addr.to_string());
    let generated =
        pvc_guard::certs::generate(name, &["localhost".to_string()], &["127.0.0.1".parse()?], 1)?;
    let (key, not_after) =
        tls::certified_key(generated.cert_pem.as_bytes(), generated.key_pem.as_bytes())?;
    let config = tls::server_config(CertStore::new(key, not_after), None)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(&listen).await?;
    eprintln!("{name} on https://{}", listener.local_addr()?);
    let header_timeout = Duration::from_secs(5);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
            else {
                return;
            };
            // The same HTTP settings as pvc-guard serve.
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let builder = pvc_guard::server::http_builder(header_timeout, h2);
            let hyper_service = hyper_util::service::TowerToHyperService::new(service);
            let _ = builder
                .serve_connection(TokioIo::new(tls), hyper_service)
                .await;
        });
    }
}
