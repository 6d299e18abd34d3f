//! HTTPS for the gateway (`--tls=CERT,KEY`): the Kubernetes API server calls webhooks only over
//! TLS, and clusters rotate certificates (cert-manager renews them; the kubelet swaps the
//! mounted Secret's files in place).
//!
//! The certificate is chosen per handshake by [`Reloading`], which holds the last good pair;
//! a watcher re-reads both files every [`CHECK_EVERY`] and swaps the pair in when their bytes
//! changed and parse, so connections open at the swap keep their session and new handshakes
//! get the new certificate. A pair that does not parse (the cert rewritten before the key, or
//! a bad file) is logged and the old one kept until the next look.

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// How often the files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why a certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
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
}

/// The certificate and key files.
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

    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|error| TlsError::Read {
                path: p.into(),
                error,
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }
}

/// The server's certificate, replaced when its files change (see the module docs).
#[derive(Debug)]
pub struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("cert lock").clone())
    }
}

fn certified_key(files: &TlsFiles, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::BadKey {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
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

/// A TLS config serving `files`, and the watcher task that reloads them while the config lives.
/// A pair that does not load is a start-up error.
pub fn server_config(files: TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = files.read()?;
    let loaded = certified_key(&files, &cert, &key)?;
    let resolver = Arc::new(Reloading {
        current: RwLock::new(Arc::new(loaded)),
    });
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(watch(files, (cert, key), Arc::downgrade(&resolver)));
    Ok(Arc::new(config))
}

/// Re-reads the files every [`CHECK_EVERY`] until the server's config is gone.
async fn watch(files: TlsFiles, mut last: (Vec<u8>, Vec<u8>), resolver: Weak<Reloading>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        let read = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || files.read()).await
        };
        let now = match read {
            Ok(Ok(now)) => now,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "TLS files unreadable: serving the last certificate");
                continue;
            }
            Err(_) => continue,
        };
        if now == last {
            continue;
        }
        match certified_key(&files, &now.0, &now.1) {
            Ok(ck) => {
                *resolver.current.write().expect("cert lock") = Arc::new(ck);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                last = now;
            }
            Err(e) => {
                tracing::warn!(error = %e, "new TLS files do not load: serving the last certificate")
            }
        }
    }
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
}
