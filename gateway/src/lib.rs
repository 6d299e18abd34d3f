//! Trow's HTTP gateway: terminates the OCI Distribution API and answers it by calling the
//! storage service over gRPC. It holds no registry state of its own, so any number of gateways
//! can front one storage service.
//!
//! - [`routes`]: one module per OCI resource; handlers parse the request and shape the answer.
//! - [`body`]: blob bytes between HTTP bodies and gRPC streams, in bounded chunks.
//! - [`error`]: the one error type and its mapping to OCI error JSON.
//! - [`server`]: the accept loop, with its connection cap and timeouts for hostile clients.

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use trow_proto::storage::storage_client::StorageClient;
use trow_proto::transport::{CONNECTION_WINDOW, MAX_FRAME_SIZE, MAX_MESSAGE_SIZE, STREAM_WINDOW};

pub mod body;
pub mod error;
pub mod routes;
pub mod server;

pub use server::ServerConfig;

/// What every handler shares: the storage client (cheap to clone; one HTTP/2 connection).
#[derive(Clone)]
pub struct AppState {
    pub storage: StorageClient<Channel>,
}

/// A client for the storage service at `url` (`http://host:port`). It connects lazily and
/// reconnects by itself, so the gateway may start before storage and outlive its restarts.
pub fn storage_client(url: &str) -> Result<StorageClient<Channel>, tonic::transport::Error> {
    let channel = endpoint(Endpoint::from_shared(url.to_string())?).connect_lazy();
    Ok(client(channel))
}

/// A client for a storage service in the same process, reached through in-memory pipes: each
/// connection is a `tokio::io::duplex` pair whose server half goes to `server`, so blob bytes
/// skip the kernel's TCP stack.
pub fn in_process_storage_client(
    server: tokio::sync::mpsc::UnboundedSender<tokio::io::DuplexStream>,
) -> StorageClient<Channel> {
    let connector = tower::service_fn(move |_| {
        let server = server.clone();
        async move {
            let (ours, theirs) = tokio::io::duplex(IN_PROCESS_PIPE);
            server
                .send(theirs)
                .map_err(|_| std::io::Error::other("storage service stopped"))?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(ours))
        }
    });
    let channel = endpoint(Endpoint::from_static("http://storage.in-process"))
        .connect_with_connector_lazy(connector);
    client(channel)
}

/// Bytes an in-process pipe buffers in each direction.
const IN_PROCESS_PIPE: usize = 256 << 10;

fn endpoint(e: Endpoint) -> Endpoint {
    e.connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .http2_keep_alive_interval(Duration::from_secs(30))
}

fn client(channel: Channel) -> StorageClient<Channel> {
    StorageClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// The whole HTTP API with its cross-cutting layers.
pub fn app(state: AppState) -> Router {
    routes::router(state)
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ))
        .layer(TraceLayer::new_for_http())
}

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests finish;
/// `config` sets the connection cap and timeouts (see [`server`]).
pub async fn serve(
    listener: TcpListener,
    storage: StorageClient<Channel>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: ServerConfig,
) -> std::io::Result<()> {
    server::serve(listener, app(AppState { storage }), config, shutdown).await
}
