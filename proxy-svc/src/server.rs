//! Serving the proxy service: the Proxy API plus gRPC health and reflection, as every Trow
//! service does (`grpcurl -plaintext HOST:PORT list`).

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use trow_proto::proxy::proxy_server::{Proxy, ProxyServer};
use trow_proto::transport::MAX_MESSAGE_SIZE;
use trow_proto::trust::{Guard, Trust};

use crate::service::ProxyService;

/// Serves `service` on `listener`, to the callers `trust` admits, until `shutdown` resolves, then finishes in-flight calls.
pub async fn serve(
    listener: TcpListener,
    service: Arc<ProxyService>,
    shutdown: impl Future<Output = ()> + Send,
    trust: &Trust,
) -> Result<(), tonic::transport::Error> {
    serve_incoming(trust.incoming(listener), service, shutdown, trust.guard()).await
}

/// Serves `service` on any stream of connections (TCP, or in-memory pipes in one process,
/// with [`Guard::open`]).
pub async fn serve_incoming<I, IO, IE>(
    incoming: I,
    service: Arc<ProxyService>,
    shutdown: impl Future<Output = ()> + Send,
    guard: Guard,
) -> Result<(), tonic::transport::Error>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let proxy = ProxyServer::new(Shared(service))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    trow_proto::server::with_operator_services::<ProxyServer<Shared>>(
        trow_proto::descriptors::PROXY,
        guard,
    )
    .await
    .add_service(proxy)
    .serve_with_incoming_shutdown(incoming, shutdown)
    .await
}

/// One service behind any number of listeners (the TCP one and the in-process pipes).
pub struct Shared(pub Arc<ProxyService>);

#[tonic::async_trait]
impl Proxy for Shared {
    async fn get_manifest(
        &self,
        r: tonic::Request<trow_proto::proxy::ManifestRequest>,
    ) -> Result<tonic::Response<trow_proto::proxy::Manifest>, tonic::Status> {
        self.0.get_manifest(r).await
    }

    async fn stat_blob(
        &self,
        r: tonic::Request<trow_proto::proxy::BlobRequest>,
    ) -> Result<tonic::Response<trow_proto::proxy::BlobHeader>, tonic::Status> {
        self.0.stat_blob(r).await
    }

    async fn open_blob(
        &self,
        r: tonic::Request<trow_proto::proxy::BlobRequest>,
    ) -> Result<tonic::Response<trow_proto::proxy::BlobSource>, tonic::Status> {
        self.0.open_blob(r).await
    }

    async fn list_tags(
        &self,
        r: tonic::Request<trow_proto::proxy::TagsRequest>,
    ) -> Result<tonic::Response<trow_proto::proxy::TagList>, tonic::Status> {
        self.0.list_tags(r).await
    }

    async fn warm(
        &self,
        r: tonic::Request<trow_proto::proxy::WarmRequest>,
    ) -> Result<tonic::Response<trow_proto::proxy::WarmReply>, tonic::Status> {
        self.0.warm(r).await
    }

    async fn check_tag(
        &self,
        r: tonic::Request<trow_proto::proxy::CheckTagRequest>,
    ) -> Result<tonic::Response<trow_proto::proxy::CheckTagReply>, tonic::Status> {
        self.0.check_tag(r).await
    }
}
