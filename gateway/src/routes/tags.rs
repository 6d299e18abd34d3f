//! `GET /v2/<name>/tags/list` with `n`/`last` pagination and the `Link` header.

use axum::Json;
use axum::response::{IntoResponse, Response};
use trow_proto::storage::ListRequest;

use super::{Req, next_link, page_params};
use crate::error::Result;

pub async fn list(r: Req) -> Result<Response> {
    let (n, last) = page_params(&r.params)?;
    let list = r
        .state
        .storage
        .clone()
        .list_tags(ListRequest {
            repository: r.repo.clone(),
            // n=0 asks for nothing; still ask for one so an unknown repository is reported.
            limit: n.map_or(0, |n| n.max(1)),
            last,
        })
        .await?
        .into_inner();
    let tags = if n == Some(0) { Vec::new() } else { list.names };
    let body = Json(serde_json::json!({ "name": r.repo, "tags": tags }));
    match (n, tags.last()) {
        (Some(n), Some(last)) if list.truncated => {
            let link = next_link(&format!("/v2/{}/tags/list", r.repo), n, last);
            Ok(([link], body).into_response())
        }
        _ => Ok(body.into_response()),
    }
}
