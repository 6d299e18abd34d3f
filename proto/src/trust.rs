//! Who may call a Trow gRPC service. In the split deployment the storage service's write API is
//! a TCP port: without this, anything that reaches it could bypass the gateway. Two ways, alone
//! or together, both off by default (the one-process default talks over in-memory pipes):
//!
//! - **Mutual TLS** (`--grpc-tls-cert`, `--grpc-tls-key`, `--grpc-tls-ca`): every server
//!   presents the certificate and requires a client certificate the CA signed; every client
//!   presents the same certificate and checks the server's against the CA and the URL's host.
//!   The three files are watched ([`crate::tls::watch`]): a new pair or CA applies to new
//!   connections. Clients name such services with `https://` URLs.
//! - **A shared token** (`--grpc-token-file`): clients send `authorization: Bearer <token>` on
//!   every call; servers compare it in constant time and answer UNAUTHENTICATED without it.
//!   The file is watched too. `grpc.health.v1.Health` stays open to callers without the token:
//!   the kubelet's gRPC probes cannot send one. Reflection and the service itself need it.
//!
//! [`Trust`] holds both for a process; a server takes its [`Trust::incoming`] connections and
//! its [`Trust::guard`] layer, a client its [`Trust::channel`] (whose interceptor,
//! [`Credentials`], carries the token). A process's in-memory pipes use [`Guard::open`] and
//! [`in_process`]: nothing outside the process can reach them.

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::tls::{self, ReadError, TlsError, TlsFiles, Watched};

/// The path prefix of the gRPC health service, open to callers without the token.
const HEALTH: &str = "/grpc.health.v1.Health/";

/// Shortest token accepted: a guessable shared secret protects nothing.
pub const MIN_TOKEN_LEN: usize = 16;

/// A TLS handshake must end within this, or the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of mutual TLS: this process's certificate (chain) and key, and the CA that
/// signs its peers' certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutualTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Why the trust settings could not be loaded, or a URL does not fit them.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Never quotes the token.
    #[error("the gRPC token in {}: {reason}", path.display())]
    Token { path: PathBuf, reason: &'static str },
    #[error("invalid service URL {url}: {reason}")]
    Url { url: String, reason: String },
}

/// The TLS configs both roles use, built together from one certificate, key and CA.
struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// `authorization: Bearer <token>`, as a client sends it and as a server expects it.
/// The file may hold several tokens, one per line: servers accept each, clients send the
/// first. Rotating without refused calls: add the new token as a second line everywhere, then
/// make it the first, then remove the old one.
struct Bearer {
    value: AsciiMetadataValue,
    accepted: Vec<AsciiMetadataValue>,
}

impl Bearer {
    fn admits(&self, header: Option<&http::HeaderValue>) -> bool {
        let Some(h) = header else { return false };
        // Every accepted token is compared, so the time taken says nothing of which matched.
        self.accepted
            .iter()
            .fold(subtle::Choice::from(0), |any, t| {
                any | h.as_bytes().ct_eq(t.as_encoded_bytes())
            })
            .into()
    }
}

/// The trust settings of one process: mutual TLS, a token, both, or neither. Cheap to clone.
#[derive(Clone, Default)]
pub struct Trust {
    tls: Option<Arc<Watched<Configs>>>,
    token: Option<Arc<Watched<Bearer>>>,
}

impl Trust {
    /// No trust: servers accept any caller, clients connect in plain text (`http://`).
    pub fn none() -> Trust {
        Trust::default()
    }

    /// Loads the files and starts watching them (needs a Tokio runtime). Files that do not load
    /// are a start-up error.
    pub fn load(
        tls: Option<MutualTlsFiles>,
        token_file: Option<PathBuf>,
    ) -> Result<Trust, TrustError> {
        let tls = tls
            .map(|f| {
                let paths = vec![f.cert.clone(), f.key.clone(), f.ca.clone()];
                tls::watch(
                    "gRPC TLS certificate and CA",
                    paths,
                    move |b: &[Vec<u8>]| configs(&f, b),
                )
            })
            .transpose()?;
        let token = token_file
            .map(|path| {
                let p = path.clone();
                tls::watch("gRPC token", vec![path], move |b: &[Vec<u8>]| {
                    bearer(&p, &b[0])
                })
            })
            .transpose()?;
        Ok(Trust { tls, token })
    }

    /// Whether connections are mutual TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether calls need the token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// What a server requires of its callers, for the start-up log (never the token).
    pub fn describe(&self) -> &'static str {
        match (self.is_tls(), self.has_token()) {
            (true, true) => "mutual TLS and the shared token",
            (true, false) => "mutual TLS",
            (false, true) => "the shared token (health checks stay open)",
            (false, false) => "nothing: anyone who reaches the port may call it",
        }
    }

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
        Ok(InterceptedService::new(channel, self.credentials()))
    }
}

/// A gRPC channel as Trow's clients hold it: tonic's, with [`Credentials`] on every call.
pub type Channel = InterceptedService<tonic::transport::Channel, Credentials>;

/// A channel through this process's in-memory pipes: no token, no TLS (see the module docs).
pub fn in_process(channel: tonic::transport::Channel) -> Channel {
    InterceptedService::new(channel, Credentials { token: None })
}

fn configs(files: &MutualTlsFiles, bytes: &[Vec<u8>]) -> Result<Configs, TlsError> {
    let pair = TlsFiles {
        cert: files.cert.clone(),
        key: files.key.clone(),
    };
    let certified = Arc::new(tls::certified_key(&pair, &bytes[0], &bytes[1])?);
    let bad_ca = |reason: String| TlsError::BadCa {
        path: files.ca.clone(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&bytes[2]) {
        roots
            .add(c.map_err(|e| bad_ca(e.to_string()))?)
            .map_err(|e| bad_ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad_ca("no PEM certificate in it".into()));
    }
    let roots = Arc::new(roots);
    let provider = tls::provider();
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| bad_ca(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_client_cert_verifier(clients)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone())));
    server.alpn_protocols = vec![b"h2".to_vec()];
    let servers =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| bad_ca(e.to_string()))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_webpki_verifier(servers)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Configs {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

fn bearer(path: &std::path::Path, bytes: &[u8]) -> Result<Bearer, TrustError> {
    let bad = |reason| TrustError::Token {
        path: path.into(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not text"))?;
    let mut accepted = Vec::new();
    for token in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "only printable ASCII without spaces can travel in a header (base64 is fine)",
            ));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(bad("a token is shorter than 16 characters"));
        }
        let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| bad("not a valid header value"))?;
        value.set_sensitive(true);
        accepted.push(value);
    }
    let Some(value) = accepted.first().cloned() else {
        return Err(bad("the file is empty"));
    };
    Ok(Bearer { value, accepted })
}

/// The interceptor every Trow client call goes through: adds the token when there is one.
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
        Ok(req)
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

/// The layer that refuses calls without the token (see the module docs); [`Guard::open`]
/// lets every call through.
#[derive(Clone)]
pub struct Guard {
    token: Option<Arc<Watched<Bearer>>>,
}

impl Guard {
    /// A guard that lets every call through: for in-memory pipes.
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

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    fn trust_with_token(token: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, token).unwrap();
        (dir, path)
    }

    async fn call(guard: &Guard, path: &str, auth: Option<&str>) -> Option<tonic::Code> {
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut svc = guard.layer(inner);
        let mut req = http::Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = svc
            .ready()
            .await
            .unwrap()
            .call(req.body(()).unwrap())
            .await
            .unwrap();
        tonic::Status::from_header_map(resp.headers()).map(|s| s.code())
    }

    #[tokio::test]
    async fn the_guard_wants_the_token_but_for_health() {
        let (_d, path) = trust_with_token("0123456789abcdef-secret\n");
        let trust = Trust::load(None, Some(path)).unwrap();
        let g = trust.guard();
        let put = "/trow.storage.v1.Storage/PutManifest";
        let unauth = Some(tonic::Code::Unauthenticated);
        assert_eq!(call(&g, put, None).await, unauth);
        assert_eq!(call(&g, put, Some("Bearer wrong")).await, unauth);
        assert_eq!(
            call(&g, put, Some("Bearer 0123456789abcdef-secre")).await,
            unauth
        );
        assert_eq!(call(&g, put, Some("0123456789abcdef-secret")).await, unauth);
        assert_eq!(
            call(&g, put, Some("Bearer 0123456789abcdef-secret")).await,
            None
        );
        let reflect = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(call(&g, reflect, None).await, unauth);
        assert_eq!(call(&g, "/grpc.health.v1.Health/Check", None).await, None);
        assert_eq!(call(&Guard::open(), put, None).await, None);
        // The client side sends exactly what the server expects.
        let mut creds = trust.credentials();
        let req = creds.call(tonic::Request::new(())).unwrap();
        let sent = req
            .metadata()
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(call(&g, put, Some(sent)).await, None);
    }

    #[tokio::test]
    async fn a_second_line_is_accepted_too_for_rotation() {
        let (_d, path) = trust_with_token("new-token-0123456789\nold-token-0123456789\n");
        let trust = Trust::load(None, Some(path)).unwrap();
        let g = trust.guard();
        let put = "/trow.storage.v1.Storage/PutManifest";
        assert_eq!(
            call(&g, put, Some("Bearer old-token-0123456789")).await,
            None
        );
        assert_eq!(
            call(&g, put, Some("Bearer new-token-0123456789")).await,
            None
        );
        assert_eq!(
            call(&g, put, Some("Bearer other-token-0123456789")).await,
            Some(tonic::Code::Unauthenticated)
        );
        let req = trust.credentials().call(tonic::Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer new-token-0123456789",
            "clients send the first line"
        );
    }

    #[tokio::test]
    async fn weak_or_unsendable_tokens_stop_the_start_up_without_quoting_them() {
        for bad in [
            "",
            "  \n",
            "tiny1",
            "has a space in the middle",
            "caf\u{e9}-0123456789abcdef",
        ] {
            let (_d, path) = trust_with_token(bad);
            let e = Trust::load(None, Some(path)).err().expect(bad).to_string();
            assert!(bad.trim().is_empty() || !e.contains(bad.trim()), "{e}");
        }
    }

    /// A CA and a leaf certificate it signed, as PEM: (ca, cert, key).
    fn pki() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["trow-storage".to_string()]).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    fn files(dir: &std::path::Path, ca: &str, cert: &str, key: &str) -> MutualTlsFiles {
        let f = MutualTlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
        };
        std::fs::write(&f.cert, cert).unwrap();
        std::fs::write(&f.key, key).unwrap();
        std::fs::write(&f.ca, ca).unwrap();
        f
    }

    #[tokio::test]
    async fn tls_files_that_do_not_fit_stop_the_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pki();
        let trust = Trust::load(Some(files(dir.path(), &ca, &cert, &key)), None).unwrap();
        assert!(trust.is_tls() && !trust.has_token());
        assert!(
            trust
                .channel("https://trow-storage:7000", None, |e| e)
                .is_ok()
        );
        let e = trust
            .channel("http://trow-storage:7000", None, |e| e)
            .err()
            .unwrap();
        assert!(e.to_string().contains("use https://"), "{e}");

        let (_, _, other_key) = pki();
        let e = Trust::load(Some(files(dir.path(), &ca, &cert, &other_key)), None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("does not fit"), "{e}");
        let e = Trust::load(Some(files(dir.path(), "", &cert, &key)), None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("ca.crt"), "{e}");
    }

    #[tokio::test]
    async fn urls_must_fit_the_trust() {
        let none = Trust::none();
        assert!(none.channel("http://127.0.0.1:7000", None, |e| e).is_ok());
        let e = none
            .channel("https://127.0.0.1:7000", None, |e| e)
            .err()
            .unwrap();
        assert!(e.to_string().contains("--grpc-tls-cert"), "{e}");
        assert!(none.channel("127.0.0.1:7000", None, |e| e).is_err());
    }
}
