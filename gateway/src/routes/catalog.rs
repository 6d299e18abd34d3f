//! `GET /v2/_catalog` with `n`/`last` pagination and the `Link` header.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use trow_proto::storage::ListRequest;

use super::{next_link, page_params};
use crate::AppState;
use crate::error::Result;

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response> {
    let (n, last) = page_params(&params)?;
    if n == Some(0) {
        return Ok(Json(serde_json::json!({ "repositories": [] })).into_response());
    }
    let list = state
        .storage
        .clone()
        .list_repositories(ListRequest {
            repository: String::new(),
            limit: n.unwrap_or(0),
            last,
        })
        .await?
        .into_inner();
    let body = Json(serde_json::json!({ "repositories": list.names }));
    match (n, list.names.last()) {
        (Some(n), Some(last)) if list.truncated => {
            Ok(([next_link("/v2/_catalog", n, last)], body).into_response())
        }
        _ => Ok(body.into_response()),
    }
}
