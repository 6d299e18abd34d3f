//! The `trow` command's modes, each wiring the service libraries together: the one-process
//! default runs the same gateway and storage code as the split deployment, talking the same gRPC
//! over in-memory pipes instead of TCP, so both topologies exercise one code path.

use std::net::SocketAddr;
use std::path::Path;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Resolves on SIGTERM or Ctrl-C, and tells every receiver of the returned channel.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: finishing requests in flight");
        let _ = tx.send(true);
    });
    rx
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for {what}: {e}").into())
}

/// Gateway and storage in one process: the default.
pub async fn run_all(
    bind_addr: SocketAddr,
    storage_addr: SocketAddr,
    data_dir: &Path,
    hostname: Option<String>,
    limits: trow_storage::Limits,
    server: trow_gateway::ServerConfig,
) -> Result<(), Error> {
    let stop = shutdown_signal();
    let data = trow_storage::open(data_dir, limits).await?;
    let store = data.store.clone();
    let grpc = bind(storage_addr, "storage gRPC").await?;
    let grpc_addr = grpc.local_addr()?;
    let http = bind(bind_addr, "the HTTP API").await?;
    println!(
        "trow storage: gRPC on {grpc_addr}, data in {}",
        store.backend().root().display()
    );
    println!(
        "trow gateway: OCI registry on http://{}{}",
        http.local_addr()?,
        hostname.map(|h| format!(" (as {h})")).unwrap_or_default()
    );
    // Storage stops only after the gateway has drained, so requests in flight at SIGTERM still
    // reach it.
    // The gateway reaches storage through in-memory pipes (same gRPC code, no TCP stack); the
    // TCP listener serves operators' tools (grpcurl, health probes).
    let janitor = data.spawn_janitor();
    let (gateway_done, storage_stop) = watch::channel(false);
    let (pipes, incoming) = tokio::sync::mpsc::unbounded_channel();
    let incoming =
        tokio_stream::wrappers::UnboundedReceiverStream::new(incoming).map(Ok::<_, std::io::Error>);
    let in_process = tokio::spawn(trow_storage::serve_incoming(
        incoming,
        store.clone(),
        wait(storage_stop.clone()),
    ));
    let storage = tokio::spawn(trow_storage::serve(grpc, store, wait(storage_stop)));
    let client = trow_gateway::in_process_storage_client(pipes);
    let served = trow_gateway::serve(http, client, wait(stop), server).await;
    let _ = gateway_done.send(true);
    in_process.await??;
    storage.await??;
    janitor.abort();
    served?;
    Ok(())
}

/// The storage service alone.
pub async fn run_storage(
    listen: SocketAddr,
    data_dir: &Path,
    limits: trow_storage::Limits,
) -> Result<(), Error> {
    let stop = shutdown_signal();
    let data = trow_storage::open(data_dir, limits).await?;
    let store = data.store.clone();
    let janitor = data.spawn_janitor();
    let grpc = bind(listen, "storage gRPC").await?;
    println!(
        "trow storage: gRPC on {}, data in {}",
        grpc.local_addr()?,
        store.backend().root().display()
    );
    trow_storage::serve(grpc, store, wait(stop)).await?;
    janitor.abort();
    Ok(())
}

/// The HTTP gateway alone.
pub async fn run_gateway(
    bind_addr: SocketAddr,
    storage_url: &str,
    hostname: Option<String>,
    server: trow_gateway::ServerConfig,
) -> Result<(), Error> {
    let stop = shutdown_signal();
    let client = trow_gateway::storage_client(storage_url)
        .map_err(|e| format!("invalid storage URL {storage_url}: {e}"))?;
    let http = bind(bind_addr, "the HTTP API").await?;
    println!(
        "trow gateway: OCI registry on http://{}{}, storage at {storage_url}",
        http.local_addr()?,
        hostname.map(|h| format!(" (as {h})")).unwrap_or_default()
    );
    trow_gateway::serve(http, client, wait(stop), server).await?;
    Ok(())
}
