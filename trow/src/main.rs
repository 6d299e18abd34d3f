//! `trow`: the registry in one process by default, or one of its services alone.
//!
//! ```text
//! trow [--bind 0.0.0.0:8000] [--data-dir ./data]        gateway + storage in one process
//! trow storage --listen 0.0.0.0:7000 --data-dir DIR      the storage service alone (gRPC)
//! trow gateway --bind 0.0.0.0:8000 --storage URL         the HTTP gateway alone
//! ```

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "trow",
    version,
    about = "Image management and caching for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    all: AllInOne,
}

#[derive(Subcommand)]
enum Command {
    /// Run only the storage service (gRPC), for the split deployment.
    Storage(StorageArgs),
    /// Run only the HTTP gateway, calling a storage service over gRPC.
    Gateway(GatewayArgs),
}

/// The one-process default.
#[derive(Args)]
struct AllInOne {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TROW_BIND", default_value = "0.0.0.0:8000")]
    bind: SocketAddr,
    /// Where images are stored.
    #[arg(long, env = "TROW_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Where the in-process storage service also listens for gRPC tools (grpcurl, probes);
    /// port 0: any free port on loopback. The gateway reaches storage in memory.
    #[arg(long, env = "TROW_STORAGE_LISTEN", default_value = "127.0.0.1:0")]
    storage_listen: SocketAddr,
    /// The name clients use to reach this registry (used in logs for now).
    #[arg(long, env = "TROW_HOSTNAME")]
    hostname: Option<String>,
    #[command(flatten)]
    limits: StorageLimits,
}

/// Limits of the storage service.
#[derive(Args)]
struct StorageLimits {
    /// Upload sessions open at once at most; beyond, pushes are told TOOMANYREQUESTS (429).
    #[arg(long, env = "TROW_MAX_UPLOADS", default_value_t = trow_storage::Limits::default().max_uploads)]
    max_uploads: usize,
}

impl From<StorageLimits> for trow_storage::Limits {
    fn from(l: StorageLimits) -> Self {
        trow_storage::Limits {
            max_uploads: l.max_uploads,
        }
    }
}

#[derive(Args)]
struct StorageArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "TROW_STORAGE_LISTEN", default_value = "0.0.0.0:7000")]
    listen: SocketAddr,
    /// Where images are stored.
    #[arg(long, env = "TROW_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[command(flatten)]
    limits: StorageLimits,
}

#[derive(Args)]
struct GatewayArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TROW_BIND", default_value = "0.0.0.0:8000")]
    bind: SocketAddr,
    /// URL of the storage service, e.g. http://trow-storage:7000.
    #[arg(long, env = "TROW_STORAGE_URL")]
    storage: String,
    /// The name clients use to reach this registry (used in logs for now).
    #[arg(long, env = "TROW_HOSTNAME")]
    hostname: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        None => {
            trow::run_all(
                cli.all.bind,
                cli.all.storage_listen,
                &cli.all.data_dir,
                cli.all.hostname,
                cli.all.limits.into(),
            )
            .await
        }
        Some(Command::Storage(a)) => {
            trow::run_storage(a.listen, &a.data_dir, a.limits.into()).await
        }
        Some(Command::Gateway(a)) => trow::run_gateway(a.bind, &a.storage, a.hostname).await,
    }
}
