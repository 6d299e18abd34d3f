//! The middleware that puts the registry's answers on record. It wraps the auth guard, so it
//! sees refusals too, and reads the caller's identity from the answer (the guard passes it
//! on), so no handler knows about the audit log.
//!
//! What becomes an event (waited for before the answer goes out, so an answered request is on
//! record):
//! - `GET` of a manifest: `pull` (HEAD is a probe, not a pull); `PUT`: `push`; `DELETE` of a
//!   manifest or blob: `delete`; each with its outcome (`ok`, `error`) and status;
//! - any 401 or 403: `refused`, naming the user the credentials claimed (never a secret), except
//!   the version check `/v2/` without credentials: that is how clients discover authentication;
//! - `GET` of a blob: counted into its image pull's `pull_blobs` summary (see [`super`]).
//!
//! Uploads are not events one by one: a push is on record with its manifest.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use trow_proto::audit::Event;

use super::{Auditor, Who, now_ms, who::claimed_user};
use crate::auth::Identity;
use crate::routes::{DOCKER_CONTENT_DIGEST, Resource, after_v2, parse_request_path};

pub async fn record(State(auditor): State<Auditor>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let ns = crate::auth::layer::ns_of(req.uri());
    let mut who = Who::of(
        None,
        req.extensions().get::<ConnectInfo<SocketAddr>>(),
        req.headers(),
        &auditor.trusted_proxies,
    );
    let claimed = claimed_user(req.headers());
    let has_credentials = req.headers().contains_key(header::AUTHORIZATION);
    let sent_bytes = content_length(req.headers());
    let time_ms = now_ms();
    let resp = next.run(req).await;
    let status = resp.status();
    if let Some(Identity {
        user: Some(user), ..
    }) = Identity::of(resp.extensions())
    {
        who.user = user.clone();
    }
    let digest: String = resp
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .into();
    let cache = resp
        .headers()
        .get(crate::routes::proxied::TROW_CACHE)
        .and_then(|v| v.to_str().ok())
        .map(|c| format!("cache: {c}"))
        .unwrap_or_default();
    let received_bytes = content_length(resp.headers());
    let event = |action: &str, repository: String, reference: String| Event {
        time_ms,
        user: who.user.clone(),
        client: who.client.clone(),
        user_agent: who.user_agent.clone(),
        action: action.into(),
        repository,
        reference,
        digest: digest.clone(),
        outcome: if status.is_success() { "ok" } else { "error" }.into(),
        status: status.as_u16().into(),
        source: "gateway".into(),
        ..Event::default()
    };
    // A `?ns=` read of another registry is on record under the cache's name, as `f/` reads are.
    let target = parse_request_path(after_v2(&path)).map(|(repo, r)| {
        match crate::auth::layer::cache_name(&repo, ns.as_deref(), auditor.hostname.as_deref()) {
            Some(cached) if !trow_proto::cache::is_cached(&repo) => (cached, r),
            _ => (repo, r),
        }
    });
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let version_check = path == "/v2" || path == "/v2/";
        if (version_check && !has_credentials) || !auditor.admit_refusal(&who) {
            return resp;
        }
        let (repository, reference) = match &target {
            Some((repo, r)) => (repo.clone(), reference_of(r)),
            None => (String::new(), String::new()),
        };
        let mut e = event("refused", repository, reference);
        e.outcome = "refused".into();
        e.detail = format!("{method} {}", what(&path, target.as_ref().map(|(_, r)| r)));
        // A name in credentials that did not prove it is a claim, not a user: kept apart, so
        // nobody can put refusals on record under someone else's name.
        if let (true, Some(claimed)) = (e.user.is_empty(), claimed) {
            e.detail
                .push_str(&format!(" (credentials named {claimed:?})"));
        }
        auditor.record(e).await;
        return resp;
    }
    let Some((repository, resource)) = target else {
        return resp;
    };
    let action = match (&resource, &method) {
        (Resource::Manifest(_), &Method::GET) => "pull",
        (Resource::Manifest(_), &Method::PUT) => "push",
        (Resource::Manifest(_) | Resource::Blob(_), &Method::DELETE) => "delete",
        (Resource::Blob(_), &Method::GET) if status.is_success() => {
            auditor.blob_pulled(&who, &repository, received_bytes);
            return resp;
        }
        _ => return resp,
    };
    let mut e = event(action, repository, reference_of(&resource));
    e.bytes = match action {
        "push" => sent_bytes,
        "pull" => received_bytes,
        _ => 0,
    };
    if let Resource::Blob(d) = &resource {
        e.digest = d.clone();
    }
    e.detail = cache;
    auditor.record(e).await;
    resp
}

fn content_length(headers: &axum::http::HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn reference_of(r: &Resource) -> String {
    match r {
        Resource::Manifest(rf) | Resource::Blob(rf) | Resource::Referrers(rf) => rf.clone(),
        Resource::Upload(_) | Resource::Uploads | Resource::Tags => String::new(),
    }
}

/// What a refused request addressed, in a word.
fn what(path: &str, resource: Option<&Resource>) -> &'static str {
    match resource {
        Some(Resource::Manifest(_)) => "manifest",
        Some(Resource::Blob(_)) => "blob",
        Some(Resource::Uploads | Resource::Upload(_)) => "upload",
        Some(Resource::Tags) => "tags",
        Some(Resource::Referrers(_)) => "referrers",
        None if path.starts_with("/v2/token") => "token",
        None if path.starts_with("/v2/_catalog") => "catalog",
        None if path.starts_with("/audit/") => "audit",
        None => "registry",
    }
}
