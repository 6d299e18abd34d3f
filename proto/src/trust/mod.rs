//! Who may call a Trow gRPC service. In the split deployment the storage service's write API is
//! a TCP port: without this, anything that reaches it could bypass the gateway. Two ways, alone
//! or together, both off by default (in one process the services call each other directly):
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
//! its [`Trust::guard`] layer (`server`), a client its [`Trust::channel`] (`client`; its
//! interceptor, [`Credentials`], carries the token). Servers called in this process
//! ([`in_process`], see [`crate::in_process`]) check nothing: nothing outside the process can
//! reach them.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use crate::tls::{self, ReadError, TlsError, TlsFiles, Watched};

mod client;
mod server;

pub use client::{Channel, Credentials, Transport, in_process};
pub use server::{Conn, Guard, Guarded, Incoming};

/// Shortest token accepted: a guessable shared secret protects nothing.
pub const MIN_TOKEN_LEN: usize = 16;

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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;
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
