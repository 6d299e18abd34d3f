//! Trow's HTTP gateway: terminates the OCI Distribution API and answers it by calling the
//! storage service over gRPC, the proxy service for reads of other registries, and the
//! admission service for Kubernetes' webhooks. It owns no registry state: what it keeps in
//! memory (manifests, tags) storage keeps correct, so any number of gateways can front one
//! storage service.
//!
//! - [`routes`]: one module per OCI resource; handlers parse the request and shape the answer.
//! - [`body`]: uploaded blob bytes from HTTP bodies into gRPC streams, in bounded chunks.
//! - [`error`]: the one error type and its mapping to OCI error JSON.
//! - [`server`]: the accept loop, with its connection cap and timeouts for hostile clients.
//! - [`tls`]: HTTPS from certificate files, reloaded when they change.
//! - [`audit`]: putting requests on record in the audit log (storage's), and reading it.
//! - [`auth`]: who is calling: users, the Docker token protocol, the middleware on `/v2/`.
//! - [`trace`]: the span of each HTTP request, when traces are on.
//! - [`metrics`]: requests by route, durations and bytes; `/metrics` and its own listener.
//! - [`manifest_cache`]: manifests and tags in memory, kept correct by watching storage.

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::Endpoint;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use trow_proto::admission::admission_client::AdmissionClient;
use trow_proto::blob_body::BlobBodyClient;
use trow_proto::proxy::proxy_client::ProxyClient;
use trow_proto::storage::storage_client::StorageClient;
use trow_proto::transport::{CONNECTION_WINDOW, MAX_FRAME_SIZE, MAX_MESSAGE_SIZE, STREAM_WINDOW};
use trow_proto::trust::{Channel, Trust, TrustError};

pub mod audit;
pub mod auth;
pub mod body;
pub mod error;
pub mod manifest_cache;
pub mod metrics;
pub mod proxy_pool;
pub mod routes;
pub mod server;
pub mod tls;
pub mod trace;

pub use server::ServerConfig;

/// The request-header parsers the routes keep to themselves, reachable by the fuzz targets in
/// `fuzz/` (docs/RELIABILITY.md) and nothing else: not part of the gateway's API.
#[doc(hidden)]
pub mod fuzzing {
    use axum::http::{HeaderMap, HeaderValue};

    use crate::error::Result;

    /// `GET /v2/<name>/blobs/<digest>`'s `Range` header against a blob of `size` bytes.
    pub fn parse_range(value: &HeaderValue, size: u64) -> Result<Option<(u64, u64)>> {
        crate::routes::blobs::parse_range(value, size)
    }

    /// The start offset of an upload chunk's `Content-Range` (checked against Content-Length).
    pub fn content_range_of(headers: &HeaderMap) -> Result<Option<u64>> {
        crate::routes::uploads::content_range_of(headers)
    }
}

/// What every handler shares, behind one pointer: axum clones the state for every request at
/// every layer it passes, and cloning the clients, names and lists field by field was about a
/// sixth of a cached manifest GET's CPU.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<AppServices>);

impl AppState {
    pub fn new(services: AppServices) -> AppState {
        AppState(std::sync::Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

/// The service clients (one HTTP/2 connection each, or the services of this process) and the
/// settings the handlers share; see [`AppState`].
pub struct AppServices {
    pub storage: StorageClient<Channel>,
    /// Blob bodies from storage as plain HTTP/2 bodies, on the same channel as `storage`
    /// (see `trow_proto::blob_body`): no gRPC message copies on a pull.
    pub blobs: BlobBodyClient,
    /// Manifests and tags in memory (see [`manifest_cache`]); [`serve`] stops it at the end.
    pub manifests: manifest_cache::ManifestCache,
    /// The pull-through cache's replicas; None when this gateway proxies nothing (`f/` reads
    /// are refused).
    pub proxy: Option<proxy_pool::ProxyPool>,
    /// The name clients use for this registry: `?ns=<hostname>` is an ordinary local read.
    pub hostname: Option<String>,
    /// The admission webhooks' service; None: `/validate-image` and `/mutate-image` answer 404.
    pub admission: Option<AdmissionClient<Channel>>,
    /// Authentication; None: every request is allowed (no users configured).
    pub auth: Option<std::sync::Arc<auth::Auth>>,
    /// What `GET /metrics` on the HTTP port shows (every service this process runs); None: not
    /// served there.
    pub metrics: Option<std::sync::Arc<prometheus_client::registry::Registry>>,
    /// The audit log (the storage service's), where requests are put on record.
    pub audit: audit::Auditor,
}

/// A channel to a service at `url` (`http://host:port`, or `https://` with mutual TLS), as
/// `trust` says (see `trow_proto::trust`). It connects lazily and reconnects by itself, so the
/// gateway may start before the service and outlive its restarts.
pub fn channel(url: &str, trust: &Trust) -> Result<Channel, TrustError> {
    trust.channel(url, None, endpoint)
}

/// A client for the storage service at `url` (see [`channel`]).
pub fn storage_client(url: &str, trust: &Trust) -> Result<StorageClient<Channel>, TrustError> {
    Ok(storage(channel(url, trust)?))
}

/// Trow's transport settings on a client endpoint.
pub(crate) fn endpoint(e: Endpoint) -> Endpoint {
    e.connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .http2_keep_alive_interval(Duration::from_secs(30))
}

/// A storage client on `channel`, with Trow's message size limits; its calls carry the token
/// and the trace context (the channel's interceptor, see `trow_proto::trust`).
pub fn storage(channel: Channel) -> StorageClient<Channel> {
    StorageClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// A proxy client on `channel`, with Trow's message size limits.
pub fn proxy(channel: Channel) -> ProxyClient<Channel> {
    ProxyClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// An admission client on `channel`, with Trow's message size limits.
pub fn admission(channel: Channel) -> AdmissionClient<Channel> {
    AdmissionClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// The whole HTTP API with its cross-cutting layers; the request span only when traces are on.
pub fn app(state: AppState) -> Router {
    let app = routes::router(state)
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ))
        .layer(TraceLayer::new_for_http())
        .layer(metrics::TrackLayer);
    if trow_proto::trace::enabled() {
        app.layer(axum::middleware::from_fn(trace::http_span))
    } else {
        app
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests finish;
/// `config` sets the connection cap and timeouts (see [`server`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: ServerConfig,
) -> std::io::Result<()> {
    let manifests = state.manifests.clone();
    let served = server::serve(listener, app(state), config, shutdown).await;
    manifests.stop().await;
    served
}
