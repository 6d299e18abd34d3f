//! The flags of trust between Trow's services, the same on every mode that serves or calls gRPC
//! (`trow`, `trow storage|proxy|admission|gateway`, `trow gc`). What they do is
//! `trow_proto::trust`'s; this only reads them.

use std::path::PathBuf;
use trow_proto::trust::{MutualTlsFiles, Trust, TrustError};

/// Mutual TLS and the shared token on gRPC between the services. Without any, gRPC is open to
/// whoever reaches its ports (as the one-process default's loopback listeners need).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GrpcTrustArgs {
    /// Mutual TLS on gRPC: this process's certificate (PEM chain), presented as a server and as
    /// a client; re-read when it changes. Needs --grpc-tls-key and --grpc-tls-ca; service URLs
    /// are then https://.
    #[arg(
        long,
        env = "TROW_GRPC_TLS_CERT",
        requires_all = ["grpc_tls_key", "grpc_tls_ca"]
    )]
    pub grpc_tls_cert: Option<PathBuf>,
    /// Mutual TLS on gRPC: the certificate's private key (PEM).
    #[arg(long, env = "TROW_GRPC_TLS_KEY", requires_all = ["grpc_tls_cert", "grpc_tls_ca"])]
    pub grpc_tls_key: Option<PathBuf>,
    /// Mutual TLS on gRPC: the CA (PEM) that signs every service's certificate; servers refuse
    /// clients without a certificate it signed, clients refuse servers without one.
    #[arg(long, env = "TROW_GRPC_TLS_CA", requires_all = ["grpc_tls_cert", "grpc_tls_key"])]
    pub grpc_tls_ca: Option<PathBuf>,
    /// A shared token (at least 16 printable characters) in this file: clients send it on every
    /// gRPC call, servers refuse calls without it (health checks stay open). Several tokens,
    /// one per line, for rotation: servers accept each, clients send the first. Re-read when
    /// it changes; never logged.
    #[arg(long, env = "TROW_GRPC_TOKEN_FILE")]
    pub grpc_token_file: Option<PathBuf>,
}

impl GrpcTrustArgs {
    /// Loads the files and starts watching them; files that do not load stop the start-up.
    pub fn load(&self) -> Result<Trust, TrustError> {
        let tls = match (&self.grpc_tls_cert, &self.grpc_tls_key, &self.grpc_tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(MutualTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            // clap requires all three together.
            _ => None,
        };
        Trust::load(tls, self.grpc_token_file.clone())
    }
}
