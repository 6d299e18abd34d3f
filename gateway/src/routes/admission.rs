//! Kubernetes admission webhooks: `POST /validate-image` and `POST /mutate-image`.
//!
//! The API server's AdmissionReview goes to the admission service as it came (the gateway
//! knows no Kubernetes types); its answer comes back as it was built. These endpoints speak to
//! the API server, not to registry clients, so their errors are Kubernetes `Status` objects
//! (`{"kind":"Status","code":400,"reason":"BadRequest","message":...}`), which the API server
//! shows in the `kubectl` error, rather than OCI error JSON.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;
use trow_proto::admission::Review;

use crate::AppState;

/// Larger than any review the API server sends: an object is at most 1.5 MiB in etcd, and a
/// review of an UPDATE carries two. Below the gRPC message limit (8 MiB).
const MAX_REVIEW_SIZE: usize = 6 << 20;

/// Which webhook a request calls.
#[derive(Clone, Copy, Debug)]
pub enum Webhook {
    Validate,
    Mutate,
}

pub async fn validate(State(state): State<AppState>, req: Request) -> Response {
    review(state, req, Webhook::Validate).await
}

pub async fn mutate(State(state): State<AppState>, req: Request) -> Response {
    review(state, req, Webhook::Mutate).await
}

async fn review(state: AppState, req: Request, hook: Webhook) -> Response {
    let Some(mut client) = state.admission else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "this gateway has no admission service",
        );
    };
    let json = match axum::body::to_bytes(req.into_body(), MAX_REVIEW_SIZE).await {
        Ok(b) => b,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("cannot read the AdmissionReview (at most {MAX_REVIEW_SIZE} bytes): {e}"),
            );
        }
    };
    let review = Review { json };
    let answered = match hook {
        Webhook::Validate => client.validate(review).await,
        Webhook::Mutate => client.mutate(review).await,
    };
    match answered {
        Ok(r) => (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(r.into_inner().json),
        )
            .into_response(),
        Err(s) if s.code() == Code::InvalidArgument => {
            status(StatusCode::BAD_REQUEST, "BadRequest", s.message())
        }
        Err(s) => {
            tracing::error!(webhook = ?hook, status = %s, "admission service call failed");
            status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the admission service is unavailable",
            )
        }
    }
}

/// A Kubernetes `Status` (meta/v1) failure.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}
