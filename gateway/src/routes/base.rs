//! `GET /v2/`: the API version check every client starts with.

use axum::Json;
use axum::response::IntoResponse;

pub async fn check() -> impl IntoResponse {
    Json(serde_json::json!({}))
}

/// `GET /healthz`: the gateway is up and serving HTTP. Never behind authentication, so the
/// kubelet's probes and load balancers need no credentials; it says nothing about the store.
pub async fn healthz() -> impl IntoResponse {
    "ok\n"
}
