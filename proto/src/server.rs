//! What every Trow gRPC server carries besides its own service: the shared transport settings,
//! gRPC health and reflection (v1 and v1alpha) of every Trow contract, so that operators' tools
//! (`grpcurl -plaintext HOST:PORT list`, health probes) work the same on every listener.

use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::transport::{CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};

/// A server with health (SERVING for `S`) and reflection; add service `S` and serve it.
pub async fn with_operator_services<S: NamedService>() -> Router {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<S>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection descriptors are valid");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("reflection descriptors are valid");
    Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
}
