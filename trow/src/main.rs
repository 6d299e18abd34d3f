//! `trow`: the registry in one process by default, or one of its services alone.
//!
//! ```text
//! trow [--bind 0.0.0.0:8000] [--data-dir ./data]        gateway + storage in one process
//! trow storage --listen 0.0.0.0:7000 --data-dir DIR      the storage service alone (gRPC)
//! trow gateway --bind 0.0.0.0:8000 --storage URL         the HTTP gateway alone
//! trow fsck --data-dir DIR                               check a store, read-only
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
    /// Check a store for inconsistencies (read-only). Exit status: 0 clean, 1 problems found,
    /// 2 could not run.
    Fsck(FsckArgs),
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

#[derive(Args)]
struct FsckArgs {
    /// The store to check.
    #[arg(long, env = "TROW_DATA_DIR")]
    data_dir: PathBuf,
}

/// Runs `trow fsck`: every problem on its own line, then a summary; returns the exit status.
async fn fsck(a: FsckArgs) -> i32 {
    match trow_storage::fsck::data_dir_in_use(&a.data_dir) {
        Ok(false) => {}
        Ok(true) => eprintln!(
            "fsck: warning: {} is in use by a running Trow; writes in progress may show as problems",
            a.data_dir.display()
        ),
        Err(e) => eprintln!("fsck: warning: cannot probe the data dir's lock: {e}"),
    }
    match trow_storage::fsck::check_dir(&a.data_dir, std::time::SystemTime::now()).await {
        Ok(report) => {
            for p in &report.problems {
                println!("{p}");
            }
            println!("{}", report.summary());
            if report.is_clean() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("fsck: cannot check {}: {e}", a.data_dir.display());
            2
        }
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    if let Err(e) = run(Cli::parse()).await {
        // Said plainly: this is what an operator sees when Trow cannot start.
        eprintln!("trow: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), trow::Error> {
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
        Some(Command::Fsck(a)) => std::process::exit(fsck(a).await),
    }
}
