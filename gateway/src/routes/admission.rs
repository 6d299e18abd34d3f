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
    let who = crate::audit::Who::of(
        None,
        req.extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>(),
        req.headers(),
        &[],
    );
    let audit = state.audit.clone();
    let Some(mut client) = state.admission.clone() else {
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
    let review = Review {
        json,
        decision: None,
    };
    let answered = match hook {
        Webhook::Validate => client.validate(review).await,
        Webhook::Mutate => client.mutate(review).await,
    };
    match answered {
        Ok(r) => {
            let r = r.into_inner();
            if let Some(d) = r.decision {
                record(&audit, who, hook, d).await;
            }
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from(r.json),
            )
                .into_response()
        }
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

/// Puts an admission decision on record (the caller is the API server: no user).
async fn record(
    audit: &crate::audit::Auditor,
    who: crate::audit::Who,
    hook: Webhook,
    d: trow_proto::admission::Decision,
) {
    let hook = match hook {
        Webhook::Validate => "validate",
        Webhook::Mutate => "mutate",
    };
    let dry_run = if d.dry_run { " (dry run)" } else { "" };
    let detail = match d.detail.as_str() {
        "" => format!("{hook}{dry_run}"),
        detail => format!("{hook}{dry_run}: {detail}"),
    };
    audit
        .record(trow_proto::audit::Event {
            time_ms: crate::audit::now_ms(),
            client: who.client,
            user_agent: who.user_agent,
            action: "admission".into(),
            reference: d.object,
            outcome: if d.allowed { "allowed" } else { "denied" }.into(),
            status: 200,
            detail: detail.chars().take(1000).collect(),
            source: "gateway".into(),
            ..Default::default()
        })
        .await;
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
