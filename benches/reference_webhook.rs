//! The second baseline for benches/load.sh: the least a real mutating
//! webhook does, as the kube-rs admission example does it. It deserializes
//! the whole AdmissionReview into kube's types (the object as a
//! `DynamicObject`), and answers with a one-operation JSON Patch (a label)
//! built by `AdmissionResponse::with_patch`, on the same stack as
//! `pvc-guard serve` (benches/baseline_stack.rs). pvc-guard's extra cost
//! over this one is its policy and its fix, not the parsing any webhook
//! has to do.
//!
//! Not part of the product: only the load benchmark runs it.
//!
//!     cargo run --release --example reference_webhook -- 127.0.0.1:8445

#[path = "baseline_stack.rs"]
mod baseline_stack;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use json_patch::{AddOperation, Patch, PatchOperation};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::json;

// The allocator of the product binary (src/main.rs): part of the stack.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One label, added to the object's labels or as the whole map: one
/// operation either way, valid against the object it was made for.
fn label(object: &DynamicObject) -> PatchOperation {
    let (path, value) = if object.metadata.labels.is_some() {
        ("/metadata/labels/admission", json!("reviewed"))
    } else {
        ("/metadata/labels", json!({"admission": "reviewed"}))
    };
    PatchOperation::Add(AddOperation {
        path: path.parse().expect("a JSON pointer"),
        value,
    })
}

async fn review(body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut response = AdmissionResponse::from(&request);
    if let Some(object) = &request.object {
        response = match response.with_patch(Patch(vec![label(object)])) {
            Ok(r) => r,
            Err(e) => AdmissionResponse::invalid(e.to_string()),
        };
    }
    match serde_json::to_vec(&response.into_review()) {
        Ok(answer) => ([(header::CONTENT_TYPE, "application/json")], answer).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = Router::new()
        .route("/validate", post(review))
        .route("/mutate", post(review));
    baseline_stack::serve("reference-webhook", "127.0.0.1:8445", service).await
}
