//! `GET /v2/_catalog` with `n`/`last` pagination and the `Link` header. With authentication
//! on, it lists only the repositories the caller may pull.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::Extensions;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use trow_proto::storage::ListRequest;

use super::listing::{self, collect, json_strings, streamed_json};
use super::{next_link, page_params};
use crate::AppState;
use crate::auth::Identity;
use crate::error::Result;

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    extensions: Extensions,
) -> Result<Response> {
    let (n, last) = page_params(&params)?;
    if n == Some(0) {
        return Ok(Json(serde_json::json!({ "repositories": [] })).into_response());
    }
    let who = Identity::of(&extensions).cloned();
    if let Some(auth) = &state.auth {
        let open = match &who {
            Some(who) => auth.may_pull_all(who).await,
            None => false,
        };
        if !open {
            let auth = auth.clone();
            let visible = move |name: &String| match &who {
                Some(who) => auth
                    .rules()
                    .allows(who, name, crate::auth::rules::Action::Pull),
                None => false,
            };
            return filtered(state, visible, n, last).await;
        }
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
    page(names, n, truncated)
}

fn page(names: Vec<String>, n: u32, truncated: bool) -> Result<Response> {
    let body = Json(serde_json::json!({ "repositories": names }));
    match names.last() {
        Some(last) if truncated => Ok(([next_link("/v2/_catalog", n, last)], body).into_response()),
        _ => Ok(body.into_response()),
    }
}

/// The catalog of the names `visible` lets through: what the caller may pull by the rules
/// (RBAC is asked once, for every repository, not per name). Unpaginated, it streams like the
/// open catalog; a page of `n` reads on through storage's listing until it holds `n` names the
/// caller may see, so pages are full and `last` carries on where the caller's view left off.
async fn filtered(
    state: AppState,
    visible: impl Fn(&String) -> bool + Send + 'static,
    n: Option<u32>,
    mut last: String,
) -> Result<Response> {
    let Some(n) = n else {
        let pages = state
            .storage
            .clone()
            .list_repositories(ListRequest {
                repository: String::new(),
                limit: 0,
                last,
            })
            .await?
            .into_inner();
        let prefix = "{\"repositories\":[".to_string();
        return Ok(streamed_json(
            prefix,
            pages,
            move |p| json_strings(p.names.into_iter().filter(|x| visible(x)).collect()),
            "]}",
        ));
    };
    let want = listing::limit(Some(n)) as usize;
    let mut names = Vec::new();
    loop {
        let pages = state
            .storage
            .clone()
            .list_repositories(ListRequest {
                repository: String::new(),
                limit: listing::MAX_PAGE,
                last: last.clone(),
            })
            .await?
            .into_inner();
        let (batch, more) = collect(pages).await?;
        let Some(end) = batch.last().cloned() else {
            return page(names, n, false);
        };
        let mut rest = batch.into_iter().filter(|x| visible(x));
        names.extend(rest.by_ref().take(want - names.len()));
        if names.len() == want {
            return page(names, n, more || rest.next().is_some());
        }
        if !more {
            return page(names, n, false);
        }
        last = end;
    }
}
