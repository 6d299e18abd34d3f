//! The audit log over HTTP, behind the same guard as `/v2/` (scope `registry:audit:*`):
//!
//! - `GET /audit/v1/events?repository=&user=&action=&since=&until=&limit=&cursor=`: one page of
//!   events, newest first; `next` (and a `Link: <...>; rel="next"` header) continue it.
//! - `GET /audit/v1/pulls?repository=&user=&since=&until=[&upstream=check]`: per image (repository
//!   and the reference it was pulled by) how often it was pulled, when last, by whom; with
//!   `upstream=check`, whether each cached `f/` tag is behind its upstream.
//!
//! `since`/`until`: RFC 3339 (`2026-01-02T03:04:05Z`) or seconds since the epoch. `user=` with an
//! empty value asks for anonymous events. Bad parameters are a 400 with OCI error JSON.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};
use trow_proto::audit::{Event, ImagePulls, PullsRequest, QueryRequest};

use crate::AppState;
use crate::error::{Error, OciCode, Result};

fn bad(message: String) -> Error {
    Error::new(OciCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A time parameter in ms since the epoch (0 when absent).
fn time_param(params: &HashMap<String, String>, name: &str) -> Result<i64> {
    let Some(v) = params.get(name).filter(|v| !v.is_empty()) else {
        return Ok(0);
    };
    if let Ok(secs) = v.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    let t = humantime::parse_rfc3339_weak(v).map_err(|_| {
        bad(format!(
            "invalid {name}={v}: RFC 3339 (2026-01-02T03:04:05Z) or seconds since the epoch"
        ))
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

const ACTIONS: [&str; 9] = [
    "push",
    "pull",
    "pull_blobs",
    "delete",
    "refused",
    "proxy_fetch",
    "stale",
    "evict",
    "admission",
];

/// Only the parameters each endpoint knows: a typo must not silently widen a query.
fn check_known(params: &HashMap<String, String>, known: &[&str]) -> Result<()> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(format!(
            "unknown parameter {k}; known: {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

#[derive(Serialize)]
struct EventJson {
    time: String,
    user: String,
    client: String,
    user_agent: String,
    action: String,
    repository: String,
    reference: String,
    digest: String,
    bytes: u64,
    outcome: String,
    status: u32,
    detail: String,
    count: u64,
    source: String,
}

impl From<Event> for EventJson {
    fn from(e: Event) -> Self {
        EventJson {
            time: rfc3339(e.time_ms),
            user: e.user,
            client: e.client,
            user_agent: e.user_agent,
            action: e.action,
            repository: e.repository,
            reference: e.reference,
            digest: e.digest,
            bytes: e.bytes,
            outcome: e.outcome,
            status: e.status,
            detail: e.detail,
            count: e.count,
            source: e.source,
        }
    }
}

pub async fn events(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response> {
    check_known(
        &params,
        &[
            "repository",
            "user",
            "action",
            "since",
            "until",
            "limit",
            "cursor",
        ],
    )?;
    let action = params.get("action").cloned().unwrap_or_default();
    if !action.is_empty() && !ACTIONS.contains(&action.as_str()) {
        return Err(bad(format!(
            "unknown action={action}; one of {}",
            ACTIONS.join(", ")
        )));
    }
    let limit = match params.get("limit").map(String::as_str) {
        None | Some("") => 0,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| bad(format!("invalid limit={s}: 1 to 1000")))?,
    };
    let request = QueryRequest {
        repository: params.get("repository").cloned().unwrap_or_default(),
        user: params.get("user").cloned(),
        action,
        since_ms: time_param(&params, "since")?,
        until_ms: time_param(&params, "until")?,
        limit,
        cursor: params.get("cursor").cloned().unwrap_or_default(),
    };
    let reply = state
        .audit
        .client()
        .query(request)
        .await
        .map_err(|s| match s.code() {
            tonic::Code::InvalidArgument => bad("invalid cursor".into()),
            _ => Error::from(s),
        })?
        .into_inner();
    let next = (!reply.next_cursor.is_empty()).then_some(reply.next_cursor);
    let link = next_cursor_link(&params, next.clone());
    let body = serde_json::json!({
        "events": reply.events.into_iter().map(EventJson::from).collect::<Vec<_>>(),
        "next": next,
    });
    let mut resp = axum::Json(body).into_response();
    if let Some(link) = link {
        resp.headers_mut()
            .insert(header::LINK, crate::routes::hv(link));
    }
    Ok(resp)
}

/// The `Link` to the next page: the same query with the next cursor.
fn next_cursor_link(params: &HashMap<String, String>, next: Option<String>) -> Option<String> {
    let next = next?;
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut q: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "cursor")
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    q.sort();
    q.push(format!("cursor={}", enc(&next)));
    Some(format!("</audit/v1/events?{}>; rel=\"next\"", q.join("&")))
}

#[derive(Serialize)]
struct UserJson {
    user: String,
    pulls: u64,
    last_pull: String,
}

#[derive(Serialize)]
struct ImageJson {
    repository: String,
    reference: String,
    digest: String,
    pulls: u64,
    last_pull: String,
    users: Vec<UserJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    behind: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_digest: Option<String>,
}

impl From<ImagePulls> for ImageJson {
    fn from(i: ImagePulls) -> Self {
        ImageJson {
            repository: i.repository,
            reference: i.reference,
            digest: i.digest,
            pulls: i.count,
            last_pull: rfc3339(i.last_ms),
            users: i
                .users
                .into_iter()
                .map(|u| UserJson {
                    user: u.user,
                    pulls: u.count,
                    last_pull: rfc3339(u.last_ms),
                })
                .collect(),
            behind: None,
            upstream_digest: None,
        }
    }
}

pub async fn pulls(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response> {
    check_known(
        &params,
        &["repository", "user", "since", "until", "upstream"],
    )?;
    let check = match params.get("upstream").map(String::as_str) {
        None | Some("") => false,
        Some("check") => true,
        Some(v) => return Err(bad(format!("invalid upstream={v}: only `check`"))),
    };
    let request = PullsRequest {
        repository: params.get("repository").cloned().unwrap_or_default(),
        user: params.get("user").cloned(),
        since_ms: time_param(&params, "since")?,
        until_ms: time_param(&params, "until")?,
    };
    let reply = state.audit.client().pulls(request).await?.into_inner();
    let mut images: Vec<ImageJson> = reply.images.into_iter().map(ImageJson::from).collect();
    if check {
        for image in &mut images {
            let (behind, upstream) = behind(&state, &image.repository, &image.reference).await;
            image.behind = Some(behind);
            image.upstream_digest = upstream;
        }
    }
    Ok(axum::Json(serde_json::json!({ "images": images })).into_response())
}

/// Whether a cached `f/` tag is behind its upstream: `true`, `false`, or `"unknown"` (not a
/// cached tag, no proxy, the upstream did not answer).
async fn behind(
    state: &AppState,
    repository: &str,
    reference: &str,
) -> (serde_json::Value, Option<String>) {
    let unknown = (serde_json::Value::from("unknown"), None);
    if !trow_proto::cache::is_cached(repository) || reference.contains(':') {
        return unknown;
    }
    let Some(pool) = &state.proxy else {
        return unknown;
    };
    let request = trow_proto::proxy::CheckTagRequest {
        repository: repository.to_string(),
        tag: reference.to_string(),
    };
    match pool
        .call(|mut c| {
            let r = request.clone();
            async move { c.check_tag(r).await }
        })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            if r.upstream_digest.is_empty() || r.cached_digest.is_empty() {
                return (
                    serde_json::Value::from("unknown"),
                    Some(r.upstream_digest).filter(|d| !d.is_empty()),
                );
            }
            (
                serde_json::Value::from(r.upstream_digest != r.cached_digest),
                Some(r.upstream_digest),
            )
        }
        Err(s) => {
            tracing::debug!(code = ?s.code(), message = s.message(), "checking a cached tag failed");
            unknown
        }
    }
}
