//! Prometheus metrics of the HTTP API, and the `/metrics` endpoint every Trow mode serves.
//!
//! Requests are labelled by a *route template* ([`Route`]: `manifests`, `blobs`, ...), never by
//! the path: repository names and digests would make one time series per image. The
//! [`Track`] layer counts each request once its answer is ready (`trow_http_requests_total`),
//! and times it until its body's last byte went out or the client went away
//! (`trow_http_request_duration_seconds`): a blob pull's duration is the whole download, not
//! the time to its headers. Bytes are counted as they cross, in both directions.
//!
//! Cost on the hot path (a local manifest GET runs at thousands per second): the histogram and
//! byte counters of each route and method are resolved once and kept in `OnceLock` slots, so a
//! request takes them without a lock or a hash; only the status counter is a (read-locked)
//! family lookup. The response body is wrapped once (one small allocation).
//!
//! The other services keep their own metrics in their crates (`trow_storage::metrics`,
//! `trow_proxy::metrics`, `trow_admission::metrics`); the `trow` command puts those a process
//! runs into one [`Registry`], which [`render`] writes for `/metrics` on the HTTP port and
//! [`serve`] on a listener of its own (`--metrics-listen`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

/// What a request addresses, as a bounded label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/v2/`, the version check.
    Base,
    Catalog,
    Token,
    Manifests,
    Blobs,
    Uploads,
    Tags,
    Referrers,
    /// Reads through the pull-through cache (`/v2/f/<registry>/...`, `?ns=<registry>`).
    ProxiedManifests,
    ProxiedBlobs,
    ProxiedTags,
    ValidateImage,
    MutateImage,
    Metrics,
    /// Anything else (404s of unknown paths).
    Unknown,
}

const ROUTES: usize = Route::Unknown as usize + 1;

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Token => "token",
            Route::Manifests => "manifests",
            Route::Blobs => "blobs",
            Route::Uploads => "uploads",
            Route::Tags => "tags",
            Route::Referrers => "referrers",
            Route::ProxiedManifests => "proxied_manifests",
            Route::ProxiedBlobs => "proxied_blobs",
            Route::ProxiedTags => "proxied_tags",
            Route::ValidateImage => "validate_image",
            Route::MutateImage => "mutate_image",
            Route::Metrics => "metrics",
            Route::Unknown => "unknown",
        }
    }

    /// The route of a path, read without allocating. Reads under `f/` are proxied; a `?ns=`
    /// read cannot be told from the path, so the dispatcher marks its answer (see [`proxied`]).
    pub fn of_path(path: &str) -> Route {
        match path {
            "/v2" | "/v2/" => return Route::Base,
            "/v2/_catalog" => return Route::Catalog,
            "/v2/token" => return Route::Token,
            "/validate-image" => return Route::ValidateImage,
            "/mutate-image" => return Route::MutateImage,
            "/metrics" => return Route::Metrics,
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Route::Unknown;
        };
        let mut segs = rest.rsplit('/');
        let last = segs.next().unwrap_or("");
        let before = segs.next();
        let before2 = segs.next();
        let route = match (before2, before, last) {
            (Some("blobs"), Some("uploads"), _) => Route::Uploads,
            (_, Some("blobs"), "uploads") => Route::Uploads,
            (_, Some("tags"), "list") => Route::Tags,
            (_, Some("blobs"), _) => Route::Blobs,
            (_, Some("manifests"), _) => Route::Manifests,
            (_, Some("referrers"), _) => Route::Referrers,
            _ => return Route::Unknown,
        };
        if rest.starts_with("f/") {
            route.proxied()
        } else {
            route
        }
    }

    /// The same resource read through the cache.
    pub fn proxied(self) -> Route {
        match self {
            Route::Manifests => Route::ProxiedManifests,
            Route::Blobs => Route::ProxiedBlobs,
            Route::Tags => Route::ProxiedTags,
            r => r,
        }
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, e: &mut LabelValueEncoder) -> std::fmt::Result {
        e.write_str(self.as_str())
    }
}

/// A request method, as a bounded label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Get,
    Head,
    Put,
    Post,
    Patch,
    Delete,
    Other,
}

const METHODS: usize = HttpMethod::Other as usize + 1;

impl HttpMethod {
    fn of(m: &Method) -> HttpMethod {
        match *m {
            Method::GET => HttpMethod::Get,
            Method::HEAD => HttpMethod::Head,
            Method::PUT => HttpMethod::Put,
            Method::POST => HttpMethod::Post,
            Method::PATCH => HttpMethod::Patch,
            Method::DELETE => HttpMethod::Delete,
            _ => HttpMethod::Other,
        }
    }
}

impl EncodeLabelValue for HttpMethod {
    fn encode(&self, e: &mut LabelValueEncoder) -> std::fmt::Result {
        e.write_str(match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Put => "PUT",
            HttpMethod::Post => "POST",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Other => "OTHER",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: HttpMethod,
    status: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteMethod {
    route: Route,
    method: HttpMethod,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: Route,
}

/// Request durations: from a cached manifest (about a millisecond) to a long blob transfer.
fn duration_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 120.0, 300.0,
    ])
}

/// The gateway's metrics.
struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteMethod, Histogram, fn() -> Histogram>,
    received: Family<RouteLabel, Counter>,
    sent: Family<RouteLabel, Counter>,
    /// Pre-resolved handles, filled on first use so only routes in use show.
    duration_slots: [[OnceLock<Histogram>; METHODS]; ROUTES],
    received_slots: [OnceLock<Counter>; ROUTES],
    sent_slots: [OnceLock<Counter>; ROUTES],
}

static HTTP: LazyLock<HttpMetrics> = LazyLock::new(|| HttpMetrics {
    requests: Family::default(),
    durations: Family::new_with_constructor(duration_histogram),
    received: Family::default(),
    sent: Family::default(),
    duration_slots: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
    received_slots: std::array::from_fn(|_| OnceLock::new()),
    sent_slots: std::array::from_fn(|_| OnceLock::new()),
});

impl HttpMetrics {
    fn duration(&self, route: Route, method: HttpMethod) -> &Histogram {
        self.duration_slots[route as usize][method as usize].get_or_init(|| {
            self.durations
                .get_or_create_owned(&RouteMethod { route, method })
        })
    }

    fn received(&self, route: Route) -> &Counter {
        self.received_slots[route as usize]
            .get_or_init(|| self.received.get_or_create_owned(&RouteLabel { route }))
    }

    fn sent(&self, route: Route) -> &Counter {
        self.sent_slots[route as usize]
            .get_or_init(|| self.sent.get_or_create_owned(&RouteLabel { route }))
    }
}

/// Registers the gateway's metrics in `registry`.
pub fn register(registry: &mut Registry) {
    crate::manifest_cache::register(registry);
    let m = &*HTTP;
    registry.register(
        "trow_http_requests",
        "HTTP requests answered, by route template, method and status",
        m.requests.clone(),
    );
    registry.register_with_unit(
        "trow_http_request_duration",
        "Time from a request's arrival to the last byte of its answer (or the client leaving), \
         by route template and method",
        Unit::Seconds,
        m.durations.clone(),
    );
    registry.register_with_unit(
        "trow_http_received",
        "Request body bytes received, by route template",
        Unit::Bytes,
        m.received.clone(),
    );
    registry.register_with_unit(
        "trow_http_sent",
        "Response body bytes sent, by route template",
        Unit::Bytes,
        m.sent.clone(),
    );
}

/// Marks an answer as a read through the cache, for the requests [`Route::of_path`] cannot
/// tell (`?ns=<registry>`).
pub fn proxied(resp: &mut Response<Body>, route: Route) {
    resp.extensions_mut().insert(route.proxied());
}

/// The layer that counts and times every request (see the module docs).
#[derive(Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

#[derive(Clone)]
pub struct Track<S> {
    inner: S,
}

impl<S> tower::Service<Request<Body>> for Track<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        let method = HttpMethod::of(req.method());
        let route = Route::of_path(req.uri().path());
        // Bodies come with uploads and manifest puts: only those are wrapped.
        let req = if http_body::Body::is_end_stream(req.body()) {
            req
        } else {
            let counter = HTTP.received(route).clone();
            req.map(|inner| Body::new(Received { inner, counter }))
        };
        TrackFuture {
            inner: self.inner.call(req),
            start,
            method,
            route,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        method: HttpMethod,
        route: Route,
    }
}

impl<F> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(resp) = ready!(this.inner.poll(cx));
        let route = resp
            .extensions()
            .get::<Route>()
            .copied()
            .unwrap_or(*this.route);
        let method = *this.method;
        HTTP.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: resp.status().as_u16(),
            })
            .inc();
        let (counter, duration, start) =
            (HTTP.sent(route), HTTP.duration(route, method), *this.start);
        Poll::Ready(Ok(resp.map(|inner| {
            Body::new(Sent {
                inner: Received {
                    inner,
                    counter: counter.clone(),
                },
                duration,
                start,
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// A body that counts its bytes (a request's, or inside [`Sent`] a response's).
    struct Received {
        #[pin]
        inner: Body,
        counter: Counter,
    }
}

impl http_body::Body for Received {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            this.counter.inc_by(data.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes (as [`Received`] does) and, when it is dropped
    /// (sent, or abandoned by the client), observes the request's duration.
    struct Sent {
        #[pin]
        inner: Received,
        duration: &'static Histogram,
        start: Instant,
    }

    impl PinnedDrop for Sent {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.duration.observe(this.start.elapsed().as_secs_f64());
        }
    }
}

impl http_body::Body for Sent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The Prometheus text format's content type (version 0.0.4, which `promtool check metrics`
/// and every Prometheus read).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 << 10);
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// The `/metrics` answer.
pub async fn handler(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        render(&registry),
    )
}

/// Serves `GET /metrics` alone on `listener` until `shutdown` resolves: the endpoint of
/// `--metrics-listen`, for every mode (a split storage, proxy or admission service has no
/// other HTTP port). Plain HTTP without authentication: it is meant for an address only the
/// cluster's Prometheus reaches.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(handler))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics here\n") })
        .with_state(registry);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_from_the_right() {
        let r = Route::of_path;
        assert_eq!(r("/v2/"), Route::Base);
        assert_eq!(r("/v2/a/b/manifests/latest"), Route::Manifests);
        assert_eq!(r("/v2/manifests/x/blobs/sha256:1"), Route::Blobs);
        assert_eq!(r("/v2/a/blobs/uploads/"), Route::Uploads);
        assert_eq!(r("/v2/a/blobs/uploads/123"), Route::Uploads);
        assert_eq!(r("/v2/a/tags/list"), Route::Tags);
        assert_eq!(r("/v2/a/referrers/sha256:1"), Route::Referrers);
        assert_eq!(
            r("/v2/f/docker.io/library/x/manifests/1"),
            Route::ProxiedManifests
        );
        assert_eq!(r("/v2/f/q.io/x/blobs/sha256:1"), Route::ProxiedBlobs);
        assert_eq!(r("/v2/a/unknown"), Route::Unknown);
        assert_eq!(r("/etc/passwd"), Route::Unknown);
        assert_eq!(r("/metrics"), Route::Metrics);
    }

    #[test]
    fn the_text_format_names_counters_and_units_conventionally() {
        let mut registry = Registry::default();
        register(&mut registry);
        HTTP.requests
            .get_or_create(&RequestLabels {
                route: Route::Manifests,
                method: HttpMethod::Get,
                status: 200,
            })
            .inc();
        HTTP.duration(Route::Manifests, HttpMethod::Get)
            .observe(0.01);
        let text = render(&registry);
        assert!(
            text.contains("# TYPE trow_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"trow_http_requests_total{route="manifests",method="GET",status="200"}"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE trow_http_request_duration_seconds histogram"),
            "{text}"
        );
    }
}
