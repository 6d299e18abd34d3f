//! What every Trow gRPC server carries besides its own service: the shared transport settings,
//! gRPC health and reflection (v1 and v1alpha) of the contract it serves, so that operators'
//! tools (`grpcurl -plaintext HOST:PORT list`, health probes) work the same on every listener;
//! the [`crate::trust::Guard`] in front of them all; the span of each call, child of the
//! caller's trace ([`crate::trace`]); and how its TCP listener accepts.

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tower::layer::util::{Identity, Stack};

use crate::transport::{CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};

/// The layers every Trow gRPC server runs its services in.
pub type Layers = Stack<crate::trace::ServerLayer, Stack<crate::trust::Guard, Identity>>;

/// A server with health (SERVING for `S`) and reflection of `descriptors` (one of
/// [`crate::descriptors`]); add service `S` and serve it. Reflection lists `S`, health and
/// reflection only: a listed service must answer. `guard` refuses calls without the token
/// (see [`crate::trust`]).
pub async fn with_operator_services<S: NamedService>(
    descriptors: &'static [u8],
    guard: crate::trust::Guard,
) -> Router<Layers> {
    with_operator_services_of(&[S::NAME], descriptors, guard).await
}

/// As [`with_operator_services`], for a server of several services (`names`, each SERVING and
/// listed by reflection): storage also serves the audit log.
pub async fn with_operator_services_of(
    names: &[&str],
    descriptors: &'static [u8],
    guard: crate::trust::Guard,
) -> Router<Layers> {
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
    Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .layer(guard)
        .layer(crate::trace::ServerLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
}

/// The connections a gRPC server's TCP listener accepts, with `TCP_NODELAY` set on each.
/// tonic's `Server::tcp_nodelay` applies only to listeners it binds itself; without it an
/// answer's last segment waits for the client's delayed ACK, about 40 ms per unary call.
pub fn tcp_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
