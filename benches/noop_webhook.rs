//! The baseline for benches/load.sh: a webhook that does nothing, on the
//! same stack as `pvc-guard serve` (tokio multi-thread runtime, rustls with
//! the library's own ServerConfig and certificate store, the same HTTP/1.1
//! and HTTP/2 settings chosen by ALPN, an axum router). It
//! reads the body, because the bytes have to cross the wire either way, but
//! never parses it, and answers one fixed allowed AdmissionReview.
//!
//! Not part of the product: only the load benchmark runs it.
//!
//!     cargo run --release --example noop_webhook -- 127.0.0.1:8444

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use pvc_guard::server::tls::{self, CertStore};

// The allocator of the product binary (src/main.rs): part of the stack.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

async fn answer(_body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], ANSWER)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As src/main.rs: no transparent huge pages, so both RSS figures compare.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8444".to_string());
    let generated = pvc_guard::certs::generate(
        "noop-webhook",
        &["localhost".to_string()],
        &["127.0.0.1".parse()?],
        1,
    )?;
    let (key, not_after) =
        tls::certified_key(generated.cert_pem.as_bytes(), generated.key_pem.as_bytes())?;
    let config = tls::server_config(CertStore::new(key, not_after), None)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let service = Router::new()
        .route("/validate", post(answer))
        .route("/mutate", post(answer));
    let listener = TcpListener::bind(&listen).await?;
    eprintln!("noop webhook on https://{}", listener.local_addr()?);
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
