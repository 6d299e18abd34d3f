//! The registry's storage logic: blobs, uploads, manifests, tags and referrers on top of a
//! [`Backend`], laid out by [`layout`](crate::layout).
//!
//! Invariants kept here:
//! - a blob is visible only after its digest was verified and its bytes made durable;
//! - a repository sees only the blobs and manifests linked into it;
//! - every write is ordered so that a crash between two steps leaves a consistent store
//!   (content first, then the links that make it reachable).

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, ByteStream, Put};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Result, StorageError};
use crate::layout;
use crate::manifest::{self, Reference};
use crate::names::{validate_repository, validate_tag};

/// What the store records about a manifest in a repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestMeta {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Every blob and child manifest the manifest references, so that garbage collection follows
    /// references without parsing every manifest. `None` in records written before they were
    /// kept: the collection parses those once and fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<String>>,
}

/// A referrer, as the referrers API lists it (an OCI descriptor).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What an upload's `repository` file holds, so an upload survives a restart of the service.
#[derive(Serialize, Deserialize)]
struct UploadRecord {
    repository: String,
    algorithm: String,
    /// A proxy's fill (see `fills`): not resumed after a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    fill: bool,
}

/// An upload in progress. Everything but the digest state is readable without waiting for an
/// append in progress, so status requests and cancels never queue behind a slow client.
struct Upload {
    repository: String,
    algorithm: Algorithm,
    /// Bytes appended and hashed so far.
    size: AtomicU64,
    /// Completed, cancelled or failed: the id is dead.
    closed: AtomicBool,
    /// Stops an append in progress when the upload is cancelled.
    cancel: CancellationToken,
    /// The digest over exactly `size` bytes; `None` until first needed after a restart, when it
    /// is rebuilt from the scratch bytes. Held by the one append or completion in progress, and
    /// by each chunk's write on the blocking pool (so it is shared: a write whose append was
    /// dropped finishes, and keeps the digest, size and file in step, before anyone else starts).
    hasher: Arc<tokio::sync::Mutex<Option<Hasher>>>,
    /// The key in [`Store::fills`] when this upload is a fill.
    fill: Option<String>,
    /// What readers of a fill wait on: bytes written, the announced size, the outcome.
    progress: watch::Sender<Progress>,
    /// Bumped when another filler takes the fill over: the append in progress stops.
    takeovers: watch::Sender<u64>,
    /// A fill's newest chunks, as they were written, by offset: its readers mostly follow the
    /// filler closely, and take them from here rather than read them back from the file (a
    /// blocking-pool round trip and a copy per read). At most [`RECENT`] bytes.
    recent: Mutex<std::collections::VecDeque<(u64, Bytes)>>,
}

/// How many of a fill's newest bytes its readers are served from memory.
const RECENT: usize = 2 << 20;

/// How far an upload got, as readers of a fill see it.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// Bytes appended and readable.
    written: u64,
    /// The blob's whole size, once the filler announced it.
    total: Option<u64>,
    phase: Phase,
    /// The last time the fill moved (or was taken over): a fill still for the fill timeout is
    /// stalled.
    at: std::time::Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// Committed and linked: read the blob.
    Done,
    /// Cancelled or failed: nothing was stored.
    Failed,
}

impl Upload {
    fn new(repository: String, algorithm: Algorithm, size: u64, hasher: Option<Hasher>) -> Upload {
        Upload::with_fill(repository, algorithm, size, hasher, None)
    }

    fn with_fill(
        repository: String,
        algorithm: Algorithm,
        size: u64,
        hasher: Option<Hasher>,
        fill: Option<String>,
    ) -> Upload {
        Upload {
            repository,
            algorithm,
            size: AtomicU64::new(size),
            closed: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            hasher: Arc::new(tokio::sync::Mutex::new(hasher)),
            fill,
            progress: watch::Sender::new(Progress {
                written: size,
                total: None,
                phase: Phase::Open,
                at: std::time::Instant::now(),
            }),
            takeovers: watch::Sender::new(0),
            recent: Mutex::default(),
        }
    }

    /// Keeps a fill's chunk, just written at `offset`, for its readers; the oldest go.
    fn keep_recent(&self, offset: u64, chunk: &Bytes) {
        if self.fill.is_none() {
            return;
        }
        let mut recent = self.recent.lock().expect("recent lock");
        recent.push_back((offset, chunk.clone()));
        let mut held: usize = recent.iter().map(|(_, c)| c.len()).sum();
        while held > RECENT
            && let Some((_, old)) = recent.pop_front()
        {
            held -= old.len();
        }
    }

    /// The bytes from `pos` up to `end` (or up to the end of the chunk holding `pos`) when they
    /// are among the newest chunks kept.
    fn recent_at(&self, pos: u64, end: u64) -> Option<Bytes> {
        let recent = self.recent.lock().expect("recent lock");
        let (at, chunk) = recent
            .iter()
            .find(|(at, c)| *at <= pos && pos < at + c.len() as u64)?;
        let from = (pos - at) as usize;
        let to = (end.min(at + chunk.len() as u64) - at) as usize;
        Some(chunk.slice(from..to))
    }

    /// Ends the upload's progress for its readers (a completed upload says `Done` first).
    fn finish(&self, phase: Phase) {
        self.recent.lock().expect("recent lock").clear();
        self.progress.send_if_modified(|p| {
            let open = p.phase == Phase::Open;
            if open {
                p.phase = phase;
            }
            open
        });
    }
}

type SharedUpload = Arc<Upload>;

/// A tag or a digest, as manifests are addressed.
enum ManifestReference {
    Tag(String),
    Digest(Digest),
}

fn parse_reference(reference: &str) -> Result<ManifestReference> {
    if reference.contains(':') {
        Digest::parse(reference).map(ManifestReference::Digest)
    } else {
        validate_tag(reference)?;
        Ok(ManifestReference::Tag(reference.to_string()))
    }
}

/// A reference being looked up: a tag that could never have been pushed is simply unknown.
fn lookup_reference(reference: &str) -> Result<ManifestReference> {
    parse_reference(reference).map_err(|e| match e {
        StorageError::TagInvalid(t) => StorageError::ManifestUnknown(t),
        other => other,
    })
}

/// Upload ids are UUIDs; checking the shape keeps them safe as path components.
fn validate_upload_id(id: &str) -> Result<()> {
    match uuid::Uuid::try_parse(id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(()),
        _ => Err(StorageError::UploadUnknown(id.to_string())),
    }
}

/// Limits that keep one store's resource use bounded.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open upload sessions at most; more are refused (TOOMANYREQUESTS) rather than letting
    /// abandoned sessions pile up scratch files.
    pub max_uploads: usize,
    /// A fill that makes no progress this long is stalled: its readers give up and the next
    /// caller of `begin_fill` takes it over. One whose filler stopped and that nobody took over
    /// for twice this long failed, and is deleted (see `fills`).
    pub fill_timeout: std::time::Duration,
    /// Garbage collection keeps whatever was written or used more recently than this: a push
    /// in progress references it in a moment (see `gc`).
    pub gc_grace: std::time::Duration,
    /// How often the storage service collects garbage by itself; zero: only on demand.
    pub gc_every: std::time::Duration,
    /// The cache's bytes at most (`registry_proxies.max_size`); `None`: no bound (see `evict`).
    pub cache_max_size: Option<u64>,
    /// Free space the data volume keeps: below it the cache evicts, and below half of it
    /// pushes are refused before they write rather than failing half-written. `None`: 5% of
    /// the volume, at most 256 MiB.
    pub min_free_space: Option<u64>,
    /// A cached image pulled this recently is never evicted: its pull may be in progress.
    pub pull_guard: std::time::Duration,
    /// Which tags and untagged manifests each repository keeps, applied by every collection.
    pub retention: crate::retention::Retention,
    /// How the audit log is kept (its size, rotation and syncing).
    pub audit: crate::audit::AuditConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uploads: 1024,
            fill_timeout: std::time::Duration::from_secs(10),
            gc_grace: std::time::Duration::from_secs(3600),
            gc_every: std::time::Duration::from_secs(3600),
            cache_max_size: None,
            min_free_space: None,
            pull_guard: std::time::Duration::from_secs(60),
            retention: Default::default(),
            audit: Default::default(),
        }
    }
}

/// Writers to one repository's manifests, tags and links take turns: the number of stripes bounds
/// the locks' memory whatever the number of repositories.
const REPO_LOCK_STRIPES: usize = 64;

pub struct Store<B> {
    backend: B,
    limits: Limits,
    /// Every live upload. Filled from the data dir when the store opens and kept exact after, so
    /// an id that is not here is over for good: nothing can bring a finished upload back.
    uploads: Mutex<HashMap<String, SharedUpload>>,
    /// One critical section per repository for the read-check-write sequences of manifests, tags
    /// and blob links (see [`Store::repo_lock`]).
    repo_locks: Vec<tokio::sync::Mutex<()>>,
    /// Repositories known to have their catalog entry, to skip the check on every write.
    cataloged: Mutex<HashSet<String>>,
    /// Fills in progress by `repository@digest`: the one upload each blob is filled through.
    fills: Mutex<HashMap<String, (String, SharedUpload)>>,
    /// Held by the one garbage collection or eviction running.
    gc_running: tokio::sync::Mutex<()>,
    /// Last pulls and open reads of cached content (see `pulls`).
    pulls: pulls::Pulls,
    /// The cache's bytes as last counted, plus fills since; `u64::MAX` until first counted.
    cache_estimate: AtomicU64,
    /// Bytes filled into the cache since the store opened: what an eviction pass adds to its
    /// count for the fills that completed while it ran.
    cache_filled: AtomicU64,
    /// Wakes the evictor: a fill took the cache past its size.
    evict_wanted: tokio::sync::Notify,
    /// The audit log, once the data dir opened it; storage's own events (evictions) go there.
    audit: std::sync::OnceLock<crate::audit::AuditLog>,
    /// Tag and manifest changes, told to the gateways' caches (see `changes`).
    changes: Arc<changes::Changes>,
}

impl<B: Backend> Store<B> {
    /// Opens the store on `backend`: reloads the uploads in progress, removes what a crash left
    /// behind, and builds the catalog index of a store written before it existed.
    ///
    /// Call it only while no other process writes to the backend (the data dir lock).
    pub async fn open(backend: B, limits: Limits) -> Result<Store<B>> {
        let store = Store {
            backend,
            limits,
            uploads: Mutex::new(HashMap::new()),
            repo_locks: (0..REPO_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            cataloged: Mutex::new(HashSet::new()),
            fills: Mutex::new(HashMap::new()),
            gc_running: tokio::sync::Mutex::new(()),
            pulls: Default::default(),
            cache_estimate: AtomicU64::new(u64::MAX),
            cache_filled: AtomicU64::new(0),
            evict_wanted: tokio::sync::Notify::new(),
            audit: std::sync::OnceLock::new(),
            changes: Default::default(),
        };
        store.recover().await?;
        Ok(store)
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Where the caches of tags and manifests watch for changes (see `changes`).
    pub fn changes(&self) -> &Arc<changes::Changes> {
        &self.changes
    }

    /// How long a cache may answer a lookup by digest after the store last answered one: a
    /// quarter of the grace period, so the record's refresh (every half of it) still happens
    /// well before a collection could count it unused. `None`: no grace period, no limit.
    pub fn digest_freshness(&self) -> Option<std::time::Duration> {
        let quarter = self.limits.gc_grace / 4;
        (!quarter.is_zero()).then_some(quarter)
    }

    /// Gives the store its audit log (once; later calls are ignored).
    pub fn set_audit(&self, log: crate::audit::AuditLog) {
        let _ = self.audit.set(log);
    }

    /// The audit log, when the store has one (a data dir opened for serving).
    pub fn audit(&self) -> Option<&crate::audit::AuditLog> {
        self.audit.get()
    }

    /// The critical section of a repository's manifest, tag and link writes: each sequence of
    /// checks and writes (a manifest put checking its references, then moving a tag; a delete by
    /// digest removing the tags that point at it) runs alone, so no tag can be left pointing at a
    /// deleted manifest. On an object store this becomes a conditional write (`If-Match` on the
    /// objects read) retried on conflict; the sequences stay the same.
    async fn repo_lock(&self, repository: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        repository.hash(&mut h);
        self.repo_locks[(h.finish() as usize) % REPO_LOCK_STRIPES]
            .lock()
            .await
    }
}

mod blobs;
pub mod changes;
mod evict;
mod fills;
mod gc;
mod pulls;
pub use evict::EvictSummary;
pub use fills::{FillRole, FillStream};
pub use gc::{Garbage, GcSummary};
mod janitor;
pub use janitor::{TMP_MAX_AGE, UPLOAD_MAX_AGE};
mod listings;
mod manifests;
mod uploads;
