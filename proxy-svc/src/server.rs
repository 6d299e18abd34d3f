//! Serving the proxy service: the Proxy API plus gRPC health and reflection, as every Trow
//! service does (`grpcurl -plaintext HOST:PORT list`).

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;
use trow_proto::in_process::Direct;
use trow_proto::proxy::proxy_server::{Proxy, ProxyServer};
use trow_proto::transport::MAX_MESSAGE_SIZE;
use trow_proto::trust::Trust;

use crate::service::ProxyService;

/// Serves `service` on `listener`, to the callers `trust` admits, until `shutdown` resolves, then finishes in-flight calls.
pub async fn serve(
    listener: TcpListener,
    service: Arc<ProxyService>,
    shutdown: impl Future<Output = ()> + Send,
    trust: &Trust,
) -> Result<(), tonic::transport::Error> {
    trow_proto::server::server(routes(service).await, trust.guard())
        .serve_with_incoming_shutdown(trust.incoming(listener), shutdown)
        .await
}

/// `service` for callers in this process, called directly (see `trow_proto::in_process`).
pub async fn in_process(service: Arc<ProxyService>) -> Direct {
    trow_proto::in_process::direct(routes(service).await)
}

/// The Proxy API with health and reflection.
async fn routes(service: Arc<ProxyService>) -> Routes {
    let proxy = ProxyServer::new(Shared(service))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    trow_proto::server::operator_routes(
        &[<ProxyServer<Shared> as NamedService>::NAME],
        trow_proto::descriptors::PROXY,
    )
    .await
    .add_service(proxy)
}

/// One service behind any number of listeners (the TCP one and callers in this process).
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
