//! The reference webhook's whole answer, without the server: what
//! benches/reference_webhook.rs serves over the load benchmark's stack, and
//! what benches/core.rs counts instructions of beside pvc-guard's core on
//! the same bodies. It deserializes the whole AdmissionReview into kube's
//! types (the object as a `DynamicObject`) and answers with a
//! one-operation JSON Patch (a label) built by
//! `AdmissionResponse::with_patch`, as the kube-rs admission example does.

use json_patch::{AddOperation, Patch, PatchOperation};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::json;

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

/// The AdmissionReview answering `body`, or why it cannot be read.
pub fn answer(body: &[u8]) -> Result<Vec<u8>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string())?;
    let mut response = AdmissionResponse::from(&request);
    if let Some(object) = &request.object {
        response = match response.with_patch(Patch(vec![label(object)])) {
            Ok(r) => r,
            Err(e) => AdmissionResponse::invalid(e.to_string()),
        };
    }
    serde_json::to_vec(&response.into_review()).map_err(|e| e.to_string())
}
