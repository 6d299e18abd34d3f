//! HTTPS for the gateway (`--tls=CERT,KEY`): the Kubernetes API server calls webhooks only over
//! TLS, and clusters rotate certificates (cert-manager renews them; the kubelet swaps the
//! mounted Secret's files in place).
//!
//! The certificate is chosen per handshake from the pair `trow_proto::tls` watches (the one
//! copy of certificate loading and reloading, shared with the mutual TLS between Trow's
//! services): connections open at a swap keep their session, new handshakes get the new
//! certificate, and a pair that does not parse is logged and the old one kept.

use rustls::ServerConfig;
use std::sync::Arc;

pub use trow_proto::tls::{CHECK_EVERY, TlsError, TlsFiles};

/// A TLS config serving `files` (HTTP/2 and HTTP/1.1), reloaded while the config lives. A pair
/// that does not load is a start-up error.
pub fn server_config(files: TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    trow_proto::tls::server_config(files, &[b"h2", b"http/1.1"])
}
