//! The first baseline for benches/load.sh: a webhook that does nothing, on
//! the same stack as `pvc-guard serve` (benches/baseline_stack.rs). It
//! reads the body, because the bytes have to cross the wire either way, but
//! never parses it, and answers one fixed allowed AdmissionReview.
//!
//! Not part of the product: only the load benchmark runs it.
//!
//!     cargo run --release --example noop_webhook -- 127.0.0.1:8444

#[path = "baseline_stack.rs"]
mod baseline_stack;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;

// The allocator of the product binary (src/main.rs): part of the stack.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

async fn answer(_body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], ANSWER)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = Router::new()
        .route("/validate", post(answer))
        .route("/mutate", post(answer));
    baseline_stack::serve("noop-webhook", "127.0.0.1:8444", service).await
}
