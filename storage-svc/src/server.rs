//! Serving the storage service: the Storage API plus gRPC health and reflection, so operators can
//! probe it with `grpcurl -plaintext HOST:PORT list`.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use trow_proto::storage::storage_server::StorageServer;
use trow_proto::transport::{CONNECTION_WINDOW, MAX_FRAME_SIZE, MAX_MESSAGE_SIZE, STREAM_WINDOW};

use crate::backend::{Backend, FsBackend};
use crate::service::StorageService;
use crate::store::Store;

/// A store on the filesystem under `data_dir`.
pub fn fs_store(data_dir: &Path) -> std::io::Result<Arc<Store<FsBackend>>> {
    Ok(Arc::new(Store::new(FsBackend::new(data_dir)?)))
}

/// Serves `store` on `listener` until `shutdown` resolves, then finishes in-flight calls.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    store: Arc<Store<B>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_incoming(TcpListenerStream::new(listener), store, shutdown).await
}

/// Serves `store` on any stream of connections (TCP, or in-memory pipes for a gateway in the
/// same process) until `shutdown` resolves, then finishes in-flight calls.
pub async fn serve_incoming<B, I, IO, IE>(
    incoming: I,
    store: Arc<Store<B>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    B: Backend,
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<StorageServer<StorageService<B>>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection descriptors are valid");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("reflection descriptors are valid");
    let store_for_janitor = store.clone();
    let storage = StorageServer::new(StorageService::new(store))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);

    let janitor = tokio::spawn(purge_uploads_periodically(store_for_janitor));
    let served = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(storage)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    janitor.abort();
    served
}

/// Uploads untouched this long are abandoned: a client resuming a push does so within minutes.
pub const UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Sweeps abandoned uploads at start-up and then every hour.
async fn purge_uploads_periodically<B: Backend>(store: Arc<Store<B>>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match store.purge_uploads(UPLOAD_MAX_AGE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "deleted abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "sweeping abandoned uploads failed"),
        }
    }
}
