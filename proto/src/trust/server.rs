//! The server side of [`super::Trust`]: the connections a listener accepts (mutual TLS
//! handshakes or plain TCP) and the layer that refuses calls without the token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{Bearer, Trust};
use crate::tls::Watched;

/// The path prefix of the gRPC health service, open to callers without the token.
const HEALTH: &str = "/grpc.health.v1.Health/";

/// A TLS handshake must end within this, or the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Trust {
    /// The connections `listener` accepts: TLS handshakes (each in its own task, so a slow
    /// client holds up nobody) with a client certificate the CA signed, or plain TCP.
    pub fn incoming(&self, listener: TcpListener) -> Incoming {
        let tcp = crate::server::tcp_incoming(listener);
        let Some(tls) = self.tls.clone() else {
            return Box::pin(tcp.map(|c| c.map(Conn::Plain)));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut tcp = tcp;
            loop {
                let stream = tokio::select! {
                    _ = tx.closed() => return,
                    next = tcp.next() => match next {
                        Some(Ok(s)) => s,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "accepting a gRPC connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        None => return,
                    },
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().server.clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let peer = stream.peer_addr().ok();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(peer = ?peer, error = %e, "refused a gRPC caller: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::info!(peer = ?peer, "refused a gRPC caller: TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// The layer a server puts before its services: calls without the token are refused.
    pub fn guard(&self) -> Guard {
        Guard {
            token: self.token.clone(),
        }
    }
}

/// The connections a server accepts (see [`Trust::incoming`]).
pub type Incoming = Pin<Box<dyn tokio_stream::Stream<Item = Result<Conn, std::io::Error>> + Send>>;

/// One accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Conn::Plain(s) => s.connect_info(),
            Conn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// The layer that refuses calls without the token (see the module docs); [`Guard::open`]
/// lets every call through.
#[derive(Clone)]
pub struct Guard {
    token: Option<Arc<Watched<Bearer>>>,
}

impl Guard {
    /// A guard that lets every call through.
    pub fn open() -> Guard {
        Guard { token: None }
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            token: self.token.clone(),
        }
    }
}

/// A service behind a [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    token: Option<Arc<Watched<Bearer>>>,
}

impl<S, B> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(t) = &self.token
            && !req.uri().path().starts_with(HEALTH)
            && !t
                .current()
                .admits(req.headers().get(http::header::AUTHORIZATION))
        {
            tracing::warn!(path = %req.uri().path(), "refused a gRPC call without the service token");
            let refused = tonic::Status::unauthenticated(
                "this Trow service requires the shared token (authorization: Bearer ...)",
            );
            return Box::pin(std::future::ready(Ok(refused.into_http())));
        }
        Box::pin(self.inner.call(req))
    }
}
