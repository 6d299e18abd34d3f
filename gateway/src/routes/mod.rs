//! The OCI Distribution HTTP API, one module per resource.
//!
//! Repository names contain slashes, so `/v2/<name>/<resource>/<ref>` cannot be matched by
//! axum's path patterns; [`parse`] reads the path from the right instead (references, digests
//! and upload ids never contain `/`) and [`dispatch`] hands the request to the resource's
//! handler by method.

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use percent_encoding::percent_decode_str;
use std::collections::HashMap;

use crate::AppState;
use crate::error::{Error, OciCode, Result};

pub mod admission;
pub mod audit;
pub mod base;
pub mod blobs;
pub mod catalog;
pub mod listing;
pub mod manifests;
pub mod proxied;
pub mod referrers;
pub mod tags;
pub mod token;
pub mod uploads;

#[cfg(test)]
mod props;

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// Query parameters, percent-decoded.
pub type Params = Query<HashMap<String, String>>;

/// What a `/v2/<name>/...` path addresses.
#[derive(Debug, PartialEq, Eq)]
pub enum Resource {
    Blob(String),
    Uploads,
    Upload(String),
    Manifest(String),
    Tags,
    Referrers(String),
}

/// Splits the path after `/v2/` into repository name and resource.
pub fn parse(path: &str) -> Option<(String, Resource)> {
    let segs: Vec<&str> = path.split('/').collect();
    let n = segs.len();
    let name = |k: usize| (n > k).then(|| segs[..n - k].join("/"));
    let last = percent_decode_str(segs[n - 1])
        .decode_utf8()
        .ok()?
        .into_owned();
    let before = |k: usize| (n > k).then(|| segs[n - 1 - k]);
    let (repo, res) = match (before(2), before(1), last.as_str()) {
        (Some("blobs"), Some("uploads"), _) => (name(3)?, Resource::Upload(last)),
        (_, Some("blobs"), "uploads") => (name(2)?, Resource::Uploads),
        (_, Some("tags"), "list") => (name(2)?, Resource::Tags),
        (_, Some("blobs"), _) => (name(2)?, Resource::Blob(last)),
        (_, Some("manifests"), _) => (name(2)?, Resource::Manifest(last)),
        (_, Some("referrers"), _) => (name(2)?, Resource::Referrers(last)),
        _ => return None,
    };
    (!repo.is_empty()).then_some((repo, res))
}

/// The part of a request path after `/v2/`, as [`dispatch`] reads it; the auth layer reads it
/// with this too, so both agree on the repository a request addresses.
pub fn after_v2(path: &str) -> &str {
    path.trim_start_matches("/v2/")
}

/// The repository and resource of a request path after `/v2/`; `/v2/<name>/blobs/uploads/`
/// ends in a slash, and is `.../uploads`.
pub fn parse_request_path(path: &str) -> Option<(String, Resource)> {
    match path.strip_suffix('/') {
        Some(p) if p.ends_with("/blobs/uploads") => parse(p),
        _ => parse(path),
    }
}

/// The routes. With authentication configured, every `/v2/` route but the token endpoint, and
/// the audit API (`/audit/v1/`), are behind [`crate::auth::layer::Guard`]; the webhooks never
/// are (the API server calls them). Every `/v2/` answer goes by the audit log's middleware
/// ([`crate::audit::layer`]).
pub fn router(state: AppState) -> Router {
    let v2 = Router::new()
        .route("/v2", get(base::check))
        .route("/v2/", get(base::check))
        .route("/v2/_catalog", get(catalog::list))
        .route("/v2/{*path}", any(dispatch))
        .route("/audit/v1/events", get(audit::events))
        .route("/audit/v1/pulls", get(audit::pulls));
    // Behind the same guard as the API when users are configured (any login may scrape it;
    // anonymous pull does not extend to it); `--metrics-listen` serves it without.
    let v2 = match &state.metrics {
        Some(registry) => v2.route(
            "/metrics",
            get(crate::metrics::handler).with_state(registry.clone()),
        ),
        None => v2,
    };
    let on_record =
        || axum::middleware::from_fn_with_state(state.audit.clone(), crate::audit::layer::record);
    // The audit log outside the guard, so refusals are on record too. One `route_layer` for
    // both: each adds a boxed route around every handler, and every request clones the boxes
    // it passes (with the handler's state).
    let v2 = match &state.auth {
        Some(auth) => v2.route_layer(
            tower::ServiceBuilder::new()
                .layer(on_record())
                .layer(crate::auth::layer::GuardLayer(auth.clone())),
        ),
        None => v2.route_layer(on_record()),
    };
    let token = Router::new()
        .route("/v2/token", get(token::issue))
        .route_layer(on_record());
    Router::new()
        .merge(v2)
        .merge(token)
        .route("/healthz", get(base::healthz))
        .route("/validate-image", post(admission::validate))
        .route("/mutate-image", post(admission::mutate))
        .fallback(|| async { Error::new(OciCode::NameUnknown, "no such endpoint") })
        .with_state(state)
}

/// Everything a handler may need from a request.
pub struct Req {
    pub state: AppState,
    pub repo: String,
    pub params: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Body,
    /// Who is calling; None when authentication is off.
    pub identity: Option<crate::auth::Identity>,
}

impl Req {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    /// Whether the caller may pull from `repository` (a mount's source): always, without
    /// authentication. (Not a borrow of the whole request across the await: its body is not
    /// `Sync`.)
    pub fn may_pull(&self, repository: &str) -> impl Future<Output = bool> + Send + 'static {
        let auth = self.state.auth.clone();
        let who = self.identity.clone();
        let repository = repository.to_string();
        async move {
            match (auth, who) {
                (None, _) => true,
                (Some(auth), Some(who)) => {
                    auth.may(&who, &repository, crate::auth::rules::Action::Pull)
                        .await
                }
                (Some(_), None) => false,
            }
        }
    }
}

async fn dispatch(State(state): State<AppState>, Query(params): Params, req: Request) -> Response {
    let method = req.method().clone();
    let path = after_v2(req.uri().path()).to_string();
    let Some((repo, resource)) = parse_request_path(&path) else {
        return Error::new(
            OciCode::NameUnknown,
            format!("no such endpoint: /v2/{path}"),
        )
        .with_status(axum::http::StatusCode::NOT_FOUND)
        .into_response();
    };
    let (mut parts, body) = req.into_parts();
    let identity = parts.extensions.remove::<crate::auth::Identity>();
    let upstream = proxied::Upstream::of(
        &repo,
        params.get("ns").map(String::as_str),
        state.hostname.as_deref(),
    );
    let r = Req {
        state,
        repo,
        params,
        headers: parts.headers,
        body,
        identity,
    };
    let m = &method;
    let cached = trow_proto::cache::is_cached(&r.repo);
    // A `?ns=` read through the cache, which the metrics cannot tell from the path.
    let ns_route = (upstream.is_some() && !cached).then(|| metrics_route(&resource));
    let result = match (resource, upstream) {
        (Resource::Manifest(rf), Some(up)) if m == Method::GET => {
            proxied::manifest(r, up, rf, false).await
        }
        (Resource::Manifest(rf), Some(up)) if m == Method::HEAD => {
            proxied::manifest(r, up, rf, true).await
        }
        (Resource::Blob(d), Some(up)) if m == Method::GET => proxied::blob(r, up, d, false).await,
        (Resource::Blob(d), Some(up)) if m == Method::HEAD => proxied::blob(r, up, d, true).await,
        (Resource::Tags, Some(up)) if m == Method::GET => proxied::tags(r, up).await,
        // The cache's referrers are what its manifests say; read them here.
        (Resource::Referrers(d), None) if m == Method::GET => referrers::list(r, d).await,
        (Resource::Referrers(d), Some(up)) if m == Method::GET && !up.ns => {
            referrers::list(r, d).await
        }
        // `?ns=<other registry>` names another registry's repository: nothing but the reads
        // above may touch the local repository of the same name (the auth guard judged the
        // cache's name, not it).
        (_, Some(up)) if up.ns => Err(proxied::not_through_ns()),
        (_, _) if cached => Err(proxied::denied()),
        (resource, _) => local(r, m, resource).await,
    };
    let mut resp = match result {
        Ok(resp) => resp,
        // HEAD answers carry no body, errors included.
        Err(e) if m == Method::HEAD => {
            let mut resp = e.into_response();
            *resp.body_mut() = Body::empty();
            resp.headers_mut().remove(header::CONTENT_LENGTH);
            resp
        }
        Err(e) => e.into_response(),
    };
    if let Some(route) = ns_route {
        crate::metrics::proxied(&mut resp, route);
    }
    resp
}

/// The metrics' route template of a resource.
fn metrics_route(resource: &Resource) -> crate::metrics::Route {
    use crate::metrics::Route;
    match resource {
        Resource::Blob(_) => Route::Blobs,
        Resource::Uploads | Resource::Upload(_) => Route::Uploads,
        Resource::Manifest(_) => Route::Manifests,
        Resource::Tags => Route::Tags,
        Resource::Referrers(_) => Route::Referrers,
    }
}

/// A request for this registry's own repositories.
async fn local(r: Req, m: &Method, resource: Resource) -> Result<Response> {
    match resource {
        Resource::Blob(d) if m == Method::GET => blobs::get(r, d, false).await,
        Resource::Blob(d) if m == Method::HEAD => blobs::get(r, d, true).await,
        Resource::Blob(d) if m == Method::DELETE => blobs::delete(r, d).await,
        Resource::Uploads if m == Method::POST => uploads::start(r).await,
        Resource::Upload(id) if m == Method::GET => uploads::status(r, id).await,
        Resource::Upload(id) if m == Method::PATCH => uploads::patch(r, id).await,
        Resource::Upload(id) if m == Method::PUT => uploads::put(r, id).await,
        Resource::Upload(id) if m == Method::DELETE => uploads::cancel(r, id).await,
        Resource::Manifest(rf) if m == Method::GET => manifests::get(r, rf, false).await,
        Resource::Manifest(rf) if m == Method::HEAD => manifests::get(r, rf, true).await,
        Resource::Manifest(rf) if m == Method::PUT => manifests::put(r, rf).await,
        Resource::Manifest(rf) if m == Method::DELETE => manifests::delete(r, rf).await,
        Resource::Tags if m == Method::GET => tags::list(r).await,
        Resource::Referrers(d) if m == Method::GET => referrers::list(r, d).await,
        _ => Err(Error::new(
            OciCode::Unsupported,
            format!("{m} not allowed here"),
        )),
    }
}

/// An answer with only a status: deletes and cancels.
pub fn empty(status: axum::http::StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    if status != axum::http::StatusCode::NO_CONTENT {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    resp
}

/// A header value from a string built by us (digests, paths, numbers): always valid.
pub fn hv(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).expect("header value from registry data")
}

/// `n` and `last` of a listing request. `n` absent means no limit.
pub fn page_params(params: &HashMap<String, String>) -> Result<(Option<u32>, String)> {
    let n = match params.get("n").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(s.parse::<u32>().map_err(|_| {
            Error::new(OciCode::Unsupported, format!("invalid n={s}"))
                .with_status(axum::http::StatusCode::BAD_REQUEST)
        })?),
    };
    Ok((n, params.get("last").cloned().unwrap_or_default()))
}

/// The `Link` header pointing at the next page of a listing.
pub fn next_link(path: &str, n: u32, last: &str) -> (HeaderName, HeaderValue) {
    let last = percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC);
    (
        header::LINK,
        hv(format!("<{path}?n={n}&last={last}>; rel=\"next\"")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_from_the_right() {
        let p = |s: &str| parse(s).unwrap();
        assert_eq!(
            p("a/b/blobs/sha256:x"),
            ("a/b".into(), Resource::Blob("sha256:x".into()))
        );
        assert_eq!(p("a/blobs/uploads"), ("a".into(), Resource::Uploads));
        assert_eq!(
            p("a/blobs/uploads/123"),
            ("a".into(), Resource::Upload("123".into()))
        );
        assert_eq!(
            p("manifests/x/manifests/latest"),
            ("manifests/x".into(), Resource::Manifest("latest".into()))
        );
        assert_eq!(p("a/tags/list"), ("a".into(), Resource::Tags));
        assert_eq!(
            p("a/referrers/sha256%3Ax"),
            ("a".into(), Resource::Referrers("sha256:x".into()))
        );
        assert_eq!(
            p("blobs/uploads/blobs/sha256:x"),
            ("blobs/uploads".into(), Resource::Blob("sha256:x".into()))
        );
        assert!(parse("manifests/latest").is_none());
        assert_eq!(
            parse_request_path(after_v2("/v2//v2/a/blobs/uploads/")),
            Some(("a".into(), Resource::Uploads))
        );
        assert!(parse("a/unknown/x").is_none());
    }
}
