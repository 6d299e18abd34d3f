//! `GET /v2/_catalog` with `n`/`last` pagination and the `Link` header.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use trow_proto::storage::ListRequest;

use super::listing::{self, collect, json_strings, streamed_json};
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
    let pages = state
        .storage
        .clone()
        .list_repositories(ListRequest {
            repository: String::new(),
            limit: listing::limit(n),
            last,
        })
        .await?
        .into_inner();
    let Some(n) = n else {
        let prefix = "{\"repositories\":[".to_string();
        return Ok(streamed_json(
            prefix,
            pages,
            |p| json_strings(p.names),
            "]}",
        ));
    };
    let (names, truncated) = collect(pages).await?;
    let body = Json(serde_json::json!({ "repositories": names }));
    match names.last() {
        Some(last) if truncated => Ok(([next_link("/v2/_catalog", n, last)], body).into_response()),
        _ => Ok(body.into_response()),
    }
}
