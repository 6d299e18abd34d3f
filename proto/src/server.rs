//! What every Trow gRPC server carries besides its own service: the shared transport settings,
//! gRPC health and reflection (v1 and v1alpha) of the contract it serves, so that operators'
//! tools (`grpcurl -plaintext HOST:PORT list`, health probes) work the same on every listener;
//! the [`crate::trust::Guard`] in front of them all; the span of each call, child of the
//! caller's trace ([`crate::trace`]); and how its TCP listener accepts.

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tower::layer::util::{Identity, Stack};

use crate::transport::{CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};

/// The layers every Trow gRPC server runs its services in.
pub type Layers = Stack<crate::trace::ServerLayer, Stack<crate::trust::Guard, Identity>>;

/// Health (SERVING for each of `names`) and reflection of `descriptors` (one of
/// [`crate::descriptors`]): the routes every Trow server starts from. Add the server's own
/// services, then serve them on a listener ([`server`]) or to this process
/// ([`crate::in_process::direct`]). Reflection lists `names`, health and reflection only: a
/// listed service must answer.
pub async fn operator_routes(names: &[&str], descriptors: &'static [u8]) -> Routes {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in names {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in names {
            b = b.with_service_name(*name);
        }
        b.with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection = builder()
        .build_v1()
        .expect("reflection descriptors are valid");
    let reflection_alpha = builder()
        .build_v1alpha()
        .expect("reflection descriptors are valid");
    Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
}

/// A server of `routes` with Trow's transport settings, behind `guard` (which refuses calls
/// without the token, see [`crate::trust`]) and the per-call span.
pub fn server(routes: Routes, guard: crate::trust::Guard) -> Router<Layers> {
    Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .layer(guard)
        .layer(crate::trace::ServerLayer)
        .add_routes(routes)
}

/// The connections a gRPC server's TCP listener accepts, with `TCP_NODELAY` set on each.
/// tonic's `Server::tcp_nodelay` applies only to listeners it binds itself; without it an
/// answer's last segment waits for the client's delayed ACK, about 40 ms per unary call.
pub fn tcp_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
