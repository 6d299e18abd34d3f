//! TLS from PEM files that are re-read when they change: the gateway's HTTPS (`--tls`) and the
//! mutual TLS between Trow's services ([`crate::trust`]) share this one copy. Clusters rotate
//! certificates (cert-manager renews them; the kubelet swaps a mounted Secret's files in
//! place), so no file here is read only once.
//!
//! [`watch`] builds a value from some files and keeps it current: a watcher re-reads them every
//! [`CHECK_EVERY`] and swaps a new value in when their bytes changed and build, so connections
//! open at the swap keep their session and new handshakes get the new value. Files that do not
//! build (the cert rewritten before the key, or a bad file) are logged and the last good value
//! kept until the next look.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// How often watched files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// A watched file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {error}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

/// Why certificate, key or CA files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: no PEM certificate in it", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: not a PEM certificate chain: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {} does not fit the certificate in {}: {reason}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{}: not a usable CA bundle: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
}

/// A certificate (chain) and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Parses the `--tls` flag's `CERT,KEY`.
    pub fn parse(s: &str) -> Result<TlsFiles, String> {
        match s.split_once(',') {
            Some((c, k)) if !c.is_empty() && !k.is_empty() && !k.contains(',') => Ok(TlsFiles {
                cert: c.into(),
                key: k.into(),
            }),
            _ => Err(format!(
                "{s:?}: give the certificate and key files as CERT,KEY (PEM)"
            )),
        }
    }
}

/// The one crypto provider Trow's TLS uses (ring, as everywhere in the workspace).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (at least one).
pub fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.into()));
    }
    Ok(chain)
}

/// A certificate chain and the key that signs for it, checked to fit each other.
pub fn certified_key(files: &TlsFiles, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(&files.cert, cert)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::BadKey {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: files.key.clone(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(ck)
}

/// A value built from files, replaced when they change (see the module docs).
pub struct Watched<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Watched<T> {
    /// The value as of the last good files.
    pub fn current(&self) -> Arc<T> {
        self.current.read().expect("watched value lock").clone()
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, ReadError> {
    paths
        .iter()
        .map(|p| {
            std::fs::read(p).map_err(|error| ReadError {
                path: p.clone(),
                error,
            })
        })
        .collect()
}

/// `build` applied to the bytes of `paths` (in order), and the watcher task that applies it
/// again whenever they change, while the returned value lives. Files that do not read or
/// build now are a start-up error. `what` names the value in the logs; errors are logged, so
/// they must never quote a secret.
pub fn watch<T, E, F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    build: F,
) -> Result<Arc<Watched<T>>, E>
where
    T: Send + Sync + 'static,
    E: From<ReadError> + fmt::Display + Send + 'static,
    F: Fn(&[Vec<u8>]) -> Result<T, E> + Send + 'static,
{
    let bytes = read_all(&paths)?;
    let value = build(&bytes)?;
    let watched = Arc::new(Watched {
        current: RwLock::new(Arc::new(value)),
    });
    tokio::spawn(rewatch(what, paths, bytes, build, Arc::downgrade(&watched)));
    Ok(watched)
}

/// Re-reads the files every [`CHECK_EVERY`] until the value is gone.
async fn rewatch<T, E, F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    mut last: Vec<Vec<u8>>,
    build: F,
    watched: Weak<Watched<T>>,
) where
    T: Send + Sync + 'static,
    E: From<ReadError> + fmt::Display + Send + 'static,
    F: Fn(&[Vec<u8>]) -> Result<T, E> + Send + 'static,
{
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if watched.strong_count() == 0 {
            return;
        }
        let read = {
            let paths = paths.clone();
            tokio::task::spawn_blocking(move || read_all(&paths)).await
        };
        let now = match read {
            Ok(Ok(now)) => now,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "{what} files unreadable: keeping the last good ones");
                continue;
            }
            Err(_) => continue,
        };
        if now == last {
            continue;
        }
        let Some(watched) = watched.upgrade() else {
            return;
        };
        match build(&now) {
            Ok(v) => {
                *watched.current.write().expect("watched value lock") = Arc::new(v);
                tracing::info!(files = ?paths, "{what} reloaded");
                last = now;
            }
            Err(e) => {
                // An error, not a warning: a rotation that did not take (a revoked token still
                // accepted, an expiring certificate still served) needs an operator.
                tracing::error!(error = %e, "new {what} files do not load: keeping the last good ones")
            }
        }
    }
}

/// The server's certificate, chosen per handshake from the watched pair.
struct Resolver(Arc<Watched<CertifiedKey>>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// A server TLS config without client certificates, presenting the pair `files` (reloaded
/// while the config lives) and offering `alpn`. A pair that does not load is a start-up error.
pub fn server_config(files: TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let paths = vec![files.cert.clone(), files.key.clone()];
    let pair = watch("TLS certificate", paths, move |b: &[Vec<u8>]| {
        certified_key(&files, &b[0], &b[1])
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(pair)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_cert_comma_key() {
        let f = TlsFiles::parse("/a/tls.crt,/a/tls.key").unwrap();
        assert_eq!(f.cert, PathBuf::from("/a/tls.crt"));
        assert_eq!(f.key, PathBuf::from("/a/tls.key"));
        for bad in ["", "a", "a,", ",b", "a,b,c"] {
            assert!(TlsFiles::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_watched_value_follows_its_files_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let parse = |b: &[Vec<u8>]| -> Result<u32, TlsError> {
            std::str::from_utf8(&b[0])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| TlsError::NoCertificate("n".into()))
        };
        let w = watch("number", vec![path.clone()], parse).unwrap();
        assert_eq!(*w.current(), 1);
        std::fs::write(&path, "not a number").unwrap();
        tokio::time::sleep(CHECK_EVERY * 2).await;
        assert_eq!(*w.current(), 1, "a bad file keeps the last good value");
        std::fs::write(&path, "2").unwrap();
        let start = std::time::Instant::now();
        while *w.current() != 2 {
            assert!(start.elapsed() < CHECK_EVERY * 5, "not reloaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
