//! The client side of [`super::Trust`]: channels to a service (mutual TLS through a connector
//! that follows reloaded files) and the interceptor that adds the token to every call.

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;

use super::{Bearer, Configs, Trust, TrustError};
use crate::in_process::Direct;
use crate::tls::Watched;

impl Trust {
    /// What this process's clients attach to every call.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            token: self.token.clone(),
        }
    }

    /// A channel to the service at `url`, connecting lazily and reconnecting by itself:
    /// `https://` with mutual TLS, `http://` without (the other is an error, so a
    /// misconfiguration shows at start-up rather than as refused calls). The server's
    /// certificate must name `tls_name`, or else the URL's host (a pool that connects to the
    /// addresses a name resolves to still checks the name). `tune` sets the endpoint's
    /// transport settings.
    pub fn channel(
        &self,
        url: &str,
        tls_name: Option<&str>,
        tune: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, TrustError> {
        let bad = |reason: String| TrustError::Url {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
        let (Some(scheme), Some(authority), Some(host)) =
            (uri.scheme_str(), uri.authority(), uri.host())
        else {
            return Err(bad("expected http(s)://HOST:PORT".into()));
        };
        let channel = match (scheme, &self.tls) {
            ("http", None) => {
                tune(Endpoint::from_shared(url.to_string()).map_err(|e| bad(e.to_string()))?)
                    .connect_lazy()
            }
            ("https", Some(tls)) => {
                let name = tls_name.unwrap_or(host);
                let name = name.trim_start_matches('[').trim_end_matches(']');
                let server_name = ServerName::try_from(name.to_string())
                    .map_err(|e| bad(format!("{name:?} is not a TLS server name: {e}")))?;
                // tonic's own TLS is not used (it cannot reload): the connector below does TLS,
                // and tonic sees a plain `http://` endpoint, whatever its features.
                let plain = format!("http://{authority}");
                let endpoint = Endpoint::from_shared(plain).map_err(|e| bad(e.to_string()))?;
                tune(endpoint).connect_with_connector_lazy(TlsConnector {
                    configs: tls.clone(),
                    server_name,
                })
            }
            ("https", None) => {
                return Err(bad(
                    "https:// needs --grpc-tls-cert, --grpc-tls-key and --grpc-tls-ca".into(),
                ));
            }
            ("http", Some(_)) => {
                return Err(bad(
                    "gRPC between the services is mutual TLS here (--grpc-tls-*): use https://"
                        .into(),
                ));
            }
            _ => return Err(bad("expected http(s)://HOST:PORT".into())),
        };
        Ok(InterceptedService::new(
            Transport::Connection(channel),
            self.credentials(),
        ))
    }
}

/// A gRPC channel as Trow's clients hold it: a connection or a server in this process, with
/// [`Credentials`] on every call.
pub type Channel = InterceptedService<Transport, Credentials>;

/// A channel to a server in this process, called directly (see [`crate::in_process`]): no
/// token, no TLS, no connection.
pub fn in_process(server: Direct) -> Channel {
    InterceptedService::new(Transport::InProcess(server), Credentials { token: None })
}

/// How a [`Channel`] reaches its server.
#[derive(Clone)]
pub enum Transport {
    /// tonic's HTTP/2 connection (TCP, TLS), made lazily and remade when it breaks.
    Connection(tonic::transport::Channel),
    /// A server in this process.
    InProcess(Direct),
}

impl tower::Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<tonic::body::Body>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Transport::Connection(c) => tower::Service::poll_ready(c, cx).map_err(Into::into),
            Transport::InProcess(s) => tower::Service::poll_ready(s, cx),
        }
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        match self {
            Transport::Connection(c) => {
                let call = tower::Service::call(c, req);
                Box::pin(async move { Ok(call.await?) })
            }
            Transport::InProcess(s) => tower::Service::call(s, req),
        }
    }
}

/// The interceptor every Trow client call goes through: adds the token when there is one, and
/// the caller's trace context when traces are on (an interceptor runs where the call is made,
/// so the current span is the caller's; see [`crate::trace`]).
#[derive(Clone)]
pub struct Credentials {
    token: Option<Arc<Watched<Bearer>>>,
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.token {
            req.metadata_mut()
                .insert("authorization", t.current().value.clone());
        }
        crate::trace::inject_current(req.metadata_mut());
        Ok(req)
    }
}

/// Connects a client channel: TCP to the URI's address, then TLS naming `server_name`, with
/// the certificate and CA current at the time.
#[derive(Clone)]
struct TlsConnector {
    configs: Arc<Watched<Configs>>,
    server_name: ServerName<'static>,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.configs.current().client.clone();
        let name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other("no host in the service URL"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
