//! The second baseline for benches/load.sh: the least a real mutating
//! webhook does, as the kube-rs admission example does it
//! (benches/reference_answer.rs), on the same stack as `pvc-guard serve`
//! (benches/baseline_stack.rs). pvc-guard's extra cost
//! over this one is its policy and its fix, not the parsing any webhook
//! has to do.
//!
//! Not part of the product: only the load benchmark runs it.
//!
//!     cargo run --release --example reference_webhook -- 127.0.0.1:8445

#[path = "baseline_stack.rs"]
mod baseline_stack;
#[path = "reference_answer.rs"]
mod reference_answer;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

// The allocator of the product binary (src/main.rs): part of the stack.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn review(body: Bytes) -> Response {
    match reference_answer::answer(&body) {
        Ok(answer) => ([(header::CONTENT_TYPE, "application/json")], answer).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = Router::new()
        .route("/validate", post(review))
        .route("/mutate", post(review));
    baseline_stack::serve("reference-webhook", "127.0.0.1:8445", service).await
}
