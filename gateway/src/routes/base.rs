//! `GET /v2/`: the API version check every client starts with.

use axum::Json;
use axum::response::IntoResponse;

pub async fn check() -> impl IntoResponse {
    Json(serde_json::json!({}))
}
