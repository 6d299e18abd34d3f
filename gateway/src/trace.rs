//! The span of each HTTP request, when traces are on: the root of a pull's trace, or the child
//! of the caller's `traceparent`. Its gRPC calls carry it on to the services
//! ([`trow_proto::trace`]).
//!
//! It names the route by its template (`/v2/{name}/manifests/{reference}`), never the query
//! string (the token endpoint's carries account names) nor any header but `traceparent`.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::borrow::Cow;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::routes::{self, Resource};

/// The middleware: see the module's doc.
pub async fn http_span(req: Request, next: Next) -> Response {
    let route = route(&req);
    let method = req.method().clone();
    let span = tracing::info_span!(
        target: "trow::http",
        "http.server",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // An error here means no OpenTelemetry layer sees the span: nothing to parent.
    let _ = span.set_parent(trow_proto::trace::extract(req.headers()));
    let res = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", res.status().as_u16());
    if res.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    res
}

/// The route's template: the OCI resource under `/v2/` (repository names have slashes, so
/// axum matches those paths with a wildcard), else the path axum matched.
fn route(req: &Request) -> Cow<'static, str> {
    let path = req.uri().path();
    if path.starts_with("/v2/")
        && let Some((_, resource)) = routes::parse(routes::after_v2(path))
    {
        return Cow::Borrowed(match resource {
            Resource::Blob(_) => "/v2/{name}/blobs/{digest}",
            Resource::Uploads => "/v2/{name}/blobs/uploads/",
            Resource::Upload(id) if id.is_empty() => "/v2/{name}/blobs/uploads/",
            Resource::Upload(_) => "/v2/{name}/blobs/uploads/{reference}",
            Resource::Manifest(_) => "/v2/{name}/manifests/{reference}",
            Resource::Tags => "/v2/{name}/tags/list",
            Resource::Referrers(_) => "/v2/{name}/referrers/{digest}",
        });
    }
    match req.extensions().get::<MatchedPath>() {
        Some(m) => Cow::Owned(m.as_str().to_string()),
        None => Cow::Borrowed("unmatched"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn template(uri: &str) -> String {
        route(&Request::get(uri).body(Body::empty()).unwrap()).into_owned()
    }

    #[test]
    fn routes_are_templates_without_names_digests_or_queries() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            template("/v2/f/docker.io/library/alpine/manifests/3.20"),
            "/v2/{name}/manifests/{reference}"
        );
        assert_eq!(
            template(&format!("/v2/a/b/blobs/{d}")),
            "/v2/{name}/blobs/{digest}"
        );
        assert_eq!(
            template("/v2/a/blobs/uploads/"),
            "/v2/{name}/blobs/uploads/"
        );
        assert_eq!(
            template("/v2/a/blobs/uploads/0f1e?_state=secret"),
            "/v2/{name}/blobs/uploads/{reference}"
        );
        assert_eq!(template("/v2/a/tags/list?n=10"), "/v2/{name}/tags/list");
        assert_eq!(
            template(&format!("/v2/a/referrers/{d}")),
            "/v2/{name}/referrers/{digest}"
        );
        // Outside a router nothing matched: no path leaks into the template.
        assert_eq!(template("/v2/token?account=alice"), "unmatched");
    }
}
