//! Calling a gRPC server in this process directly, with no connection in between.
//!
//! In one process the gateway, proxy and admission reach their peers through a [`Direct`]
//! server: the client's encoded request goes to the server's routes as an HTTP request whose
//! body is the client's own, and the server's response body comes back as it is. The same
//! generated clients, codecs, services, statuses and per-call spans run as between processes;
//! what is left out is HTTP/2 and the pipe under it, which copied every byte twice more per
//! hop (into the pipe and out of it), framed it, and woke the other side for each frame: a
//! cold pull through the cache crosses two such hops, a push one.
//!
//! What a connection gave that this keeps: a call whose caller goes away ends (dropping the
//! call drops the server's future and streams, as a stream reset does); a streamed answer is
//! produced only as fast as the caller reads it (no window to fill, so no bytes are held for a
//! stalled reader). No token is checked: nothing outside the process can reach these servers.

use std::convert::Infallible;
use tonic::body::Body;
use tonic::service::Routes;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt};

/// A server in this process, as a client's transport calls it.
pub type Direct = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// `routes` (a server's services with health and reflection, see [`crate::server`]) as a
/// server callers in this process reach directly, with the same per-call span as over a
/// connection.
pub fn direct(routes: Routes) -> Direct {
    let service = tower::ServiceBuilder::new()
        .layer(crate::trace::ServerLayer)
        .service(routes.prepare());
    let service =
        ServiceExt::<http::Request<Body>>::map_err(service, |never: Infallible| -> BoxError {
            match never {}
        });
    BoxCloneSyncService::new(service)
}
