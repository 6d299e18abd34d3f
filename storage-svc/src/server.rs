//! Serving the storage service: the Storage API plus gRPC health and reflection, so operators can
//! probe it with `grpcurl -plaintext HOST:PORT list`.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use trow_proto::audit::audit_server::AuditServer;
use trow_proto::blob_body::BlobBodyServer;
use trow_proto::in_process::Direct;
use trow_proto::storage::storage_server::StorageServer;
use trow_proto::transport::MAX_MESSAGE_SIZE;
use trow_proto::trust::Trust;

use crate::audit::service::AuditService;
use crate::backend::{Backend, FsBackend};
use crate::error::StorageError;
use crate::service::{BlobBytes, StorageService};
use crate::store::{Limits, Store};

/// A store on the filesystem, opened for serving: this process holds the data dir's lock
/// until the value drops.
pub struct DataDir {
    pub store: Arc<Store<FsBackend>>,
    /// An exclusive `flock` on `<data dir>/.lock`: two storage processes on one data dir would
    /// each believe they own its uploads and sweep the other's scratch files.
    _lock: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data dir {0} is in use by another Trow storage process")]
    InUse(String),
    #[error("cannot use data dir {0}: {1}")]
    Io(String, std::io::Error),
    #[error("cannot open the store in {0}: {1}")]
    Store(String, StorageError),
}

/// Locks `data_dir` (creating it if missing) and opens the store in it.
pub async fn open(data_dir: &Path, limits: Limits) -> Result<DataDir, OpenError> {
    let shown = data_dir.display().to_string();
    let io = |e| OpenError::Io(shown.clone(), e);
    let backend = FsBackend::new(data_dir).map_err(io)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(backend.root().join(crate::layout::LOCK))
        .map_err(io)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::InUse(shown)),
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    match backend.remove_legacy_temp_files() {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed temp files left by an older Trow"),
        Err(e) => return Err(io(e)),
    }
    let audit_dir = backend.root().join(crate::layout::AUDIT);
    let audit = crate::audit::AuditLog::open(&audit_dir, limits.audit).map_err(io)?;
    let store = Store::open(backend, limits)
        .await
        .map_err(|e| OpenError::Store(shown.clone(), e))?;
    store.set_audit(audit);
    Ok(DataDir {
        store: Arc::new(store),
        _lock: lock,
    })
}

impl DataDir {
    /// Starts the periodic sweeps of abandoned uploads and leftovers, of failed fills, the
    /// scheduled garbage collection, the evictor and the saving of last-pull times (once
    /// per store, however many listeners serve it). They stop when the returned handle is
    /// aborted.
    pub fn spawn_janitor(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            tokio::join!(
                sweep_periodically(store.clone()),
                drop_failed_fills_periodically(store.clone()),
                collect_garbage_periodically(store.clone()),
                evict_when_needed(store.clone()),
                save_pulls_periodically(store)
            );
        })
    }
}

/// Serves `store` on `listener`, to the callers `trust` admits, until `shutdown` resolves,
/// then finishes in-flight calls.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    store: Arc<Store<B>>,
    shutdown: impl Future<Output = ()> + Send,
    trust: &Trust,
) -> Result<(), tonic::transport::Error> {
    let (stop, shutdown) = stop_on(shutdown);
    // The connections come from other processes (see `store::changes`).
    trow_proto::server::server(routes(store, stop, true).await, trust.guard())
        .serve_with_incoming_shutdown(trust.incoming(listener), shutdown)
        .await
}

/// `store` for callers in this process, called directly (see `trow_proto::in_process`); its
/// long-lived `Watch` streams end when `shutdown` resolves.
pub async fn in_process<B: Backend>(
    store: Arc<Store<B>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Direct {
    let (stop, shutdown) = stop_on(shutdown);
    tokio::spawn(shutdown);
    trow_proto::in_process::direct(routes(store, stop, false).await)
}

/// A token cancelled once `shutdown` resolves, and the future that does it.
fn stop_on(
    shutdown: impl Future<Output = ()> + Send,
) -> (CancellationToken, impl Future<Output = ()> + Send) {
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    (stop, async move {
        shutdown.await;
        cancel.cancel();
    })
}

/// The Storage API, blob bodies and (when the store has one) the audit log, with health and
/// reflection. `remote`: the callers are other processes (see `store::changes`).
async fn routes<B: Backend>(store: Arc<Store<B>>, stop: CancellationToken, remote: bool) -> Routes {
    // The audit log lives in the data dir, so the storage process serves it (when the store
    // was opened with one: a data dir, not a test's bare store).
    let audit = store.audit().cloned().map(|log| {
        AuditServer::new(AuditService::new(log))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    });
    let blob_bodies = BlobBodyServer::new(Arc::new(BlobBytes(store.clone())));
    let storage = StorageServer::new(StorageService::with_stop(store, stop, remote))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let names: &[&str] = match audit {
        Some(_) => &[STORAGE_NAME, AUDIT_NAME],
        None => &[STORAGE_NAME],
    };
    let routes = trow_proto::server::operator_routes(names, trow_proto::descriptors::STORAGE)
        .await
        .add_service(storage)
        .add_service(blob_bodies);
    match audit {
        Some(audit) => routes.add_service(audit),
        None => routes,
    }
}

const STORAGE_NAME: &str = <StorageServer<StorageService<FsBackend>> as NamedService>::NAME;
const AUDIT_NAME: &str = <AuditServer<AuditService> as NamedService>::NAME;

pub use crate::store::{TMP_MAX_AGE, UPLOAD_MAX_AGE};

/// How often the janitor sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Drops fills that stopped and were not taken over (see `store::fills`), once per fill timeout:
/// their bytes are gone within three fill timeouts of the last byte, not a day later.
async fn drop_failed_fills_periodically<B: Backend>(store: Arc<Store<B>>) {
    let period = store.limits().fill_timeout.max(Duration::from_millis(100));
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match store.drop_failed_fills().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed failed fills"),
            Err(e) => tracing::warn!(error = %e, "removing failed fills failed"),
        }
    }
}

/// Sweeps abandoned uploads and stale temp files every hour (the store already swept at open).
async fn sweep_periodically<B: Backend>(store: Arc<Store<B>>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        match store.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "swept abandoned uploads and leftovers"),
            Err(e) => tracing::warn!(error = %e, "sweeping abandoned uploads failed"),
        }
    }
}

/// Collects garbage every `gc_every` (never when zero), the first time one period after start.
async fn collect_garbage_periodically<B: Backend>(store: Arc<Store<B>>) {
    let period = store.limits().gc_every;
    if period.is_zero() {
        return;
    }
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        if let Err(e) = store.collect_garbage(false, &mut |_| {}).await {
            tracing::warn!(error = %e, "scheduled garbage collection failed");
        }
    }
}

/// How often the evictor looks at the volume's free space when no fill wakes it.
const EVICT_CHECK_EVERY: Duration = Duration::from_secs(30);

/// How long the evictor rests after a pass that found nothing to evict.
const EVICT_IDLE: Duration = Duration::from_secs(5);

/// Evicts cached images when a fill takes the cache past its size or the volume runs short of
/// free space (see `store::evict`).
async fn evict_when_needed<B: Backend>(store: Arc<Store<B>>) {
    loop {
        match store.evict_if_needed().await {
            // Over the bound with nothing evictable (the volume full of pushed content, or
            // every cached image being pulled): reading the cache again at once would not
            // change that.
            Ok(Some(s)) if s.images == 0 && (s.short > 0 || s.busy > 0) => {
                tokio::time::sleep(EVICT_IDLE).await
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "eviction failed"),
        }
        store.eviction_wanted(EVICT_CHECK_EVERY).await;
    }
}

/// How often last-pull times are saved (when they changed): a crash loses at most this much.
const SAVE_PULLS_EVERY: Duration = Duration::from_secs(60);

async fn save_pulls_periodically<B: Backend>(store: Arc<Store<B>>) {
    let mut every = tokio::time::interval(SAVE_PULLS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        if let Err(e) = store.save_pulls().await {
            tracing::warn!(error = %e, "saving last-pull times failed");
        }
    }
}
