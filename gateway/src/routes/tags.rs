//! `GET /v2/<name>/tags/list` with `n`/`last` pagination and the `Link` header.

use axum::Json;
use axum::response::{IntoResponse, Response};
use trow_proto::storage::ListRequest;

use super::listing::{self, collect, json_strings, streamed_json};
use super::{Req, next_link, page_params};
use crate::error::Result;

pub async fn list(r: Req) -> Result<Response> {
    let (n, last) = page_params(&r.params)?;
    let pages = r
        .state
        .storage
        .clone()
        .list_tags(ListRequest {
            repository: r.repo.clone(),
            limit: listing::limit(n),
            last,
        })
        .await?
        .into_inner();
    let Some(n) = n else {
        let prefix = format!(
            "{{\"name\":{},\"tags\":[",
            serde_json::to_string(&r.repo).expect("a string serializes")
        );
        return Ok(streamed_json(
            prefix,
            pages,
            |p| json_strings(p.names),
            "]}",
        ));
    };
    let (tags, truncated) = collect(pages).await?;
    let tags = if n == 0 { Vec::new() } else { tags };
    let body = Json(serde_json::json!({ "name": r.repo, "tags": tags }));
    match tags.last() {
        Some(last) if truncated => {
            let link = next_link(&format!("/v2/{}/tags/list", r.repo), n, last);
            Ok(([link], body).into_response())
        }
        _ => Ok(body.into_response()),
    }
}
