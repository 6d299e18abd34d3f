//! Manifests and tags in memory, so a manifest GET (what every node pulling an image asks
//! first, thousands of times a second in a rollout) is answered without a call to storage.
//!
//! **Never stale after a write returned.** The storage service tells every gateway of each
//! change to a repository's tags or manifests, and the write answers its client only once every
//! gateway dropped what it cached of that repository (the `Watch` call; see
//! `trow_storage::store::changes`). A gateway answers from its cache only while it holds a lease
//! from storage, renewed four times per lease: one that lost storage, or hangs, stops serving
//! from memory by the time storage stops waiting for it. A tag moved or a manifest deleted
//! through any gateway is therefore seen by every other one as soon as the write returned.
//!
//! **No stale insert.** An answer read from storage is cached only if no change arrived (the
//! `epoch` did not move) between the read's start and its insert: a change published while
//! the read was on its way cannot be undone by it.
//!
//! **Lookups by digest** are answered from memory only for a while after storage last
//! answered one ([`Hello::digest_fresh_ms`](trow_proto::storage::WatchHello)): storage's
//! answer refreshes the manifest's record, which keeps it from a garbage collection while a
//! client pushes the index that references it.
//!
//! Bounded in bytes (least recently used out first); nothing absent is cached.

use bytes::Bytes;
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use trow_proto::storage::storage_client::StorageClient;
use trow_proto::storage::{
    AckRequest, ManifestInfo, WatchEvent, WatchRequest, Watcher, watch_event::Kind as Event,
};
use trow_proto::trust::Channel;

/// The cache's size when not configured: thousands of typical manifests (a few KiB each).
pub const DEFAULT_SIZE: usize = 8 << 20;

/// Of the lease storage grants, the part the gateway uses: room for clocks that run at slightly
/// different rates.
const LEASE_USED: f64 = 0.9;

/// How long to wait before watching again after the watch failed, doubling up to the maximum.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How long stopping waits for the watch to close cleanly, so storage need not wait out the
/// lease of a gateway that went away.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// A manifest as the cache holds it.
pub struct Cached {
    pub info: ManifestInfo,
    pub content: Bytes,
}

/// What [`ManifestCache::lookup`] found.
pub enum Lookup {
    Hit(Arc<Cached>),
    /// Ask storage; give its answer to [`ManifestCache::insert`] with this ticket.
    Miss(Ticket),
}

/// When a miss went to storage: its answer is cached only if nothing changed since.
pub struct Ticket {
    epoch: u64,
}

/// The gateway's cache of manifests and tags; cheap to clone (one cache, shared).
#[derive(Clone)]
pub struct ManifestCache {
    shared: Arc<Shared>,
}

struct Shared {
    max_bytes: usize,
    state: Mutex<State>,
    stop: CancellationToken,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Hash, PartialEq, Eq, Clone)]
enum Key {
    Tag {
        repository: Arc<str>,
        tag: Box<str>,
    },
    Manifest {
        repository: Arc<str>,
        digest: Box<str>,
    },
}

enum Entry {
    Tag {
        digest: Box<str>,
    },
    Manifest {
        manifest: Arc<Cached>,
        /// When storage last answered a lookup of it by digest.
        confirmed: Option<Instant>,
    },
}

struct State {
    /// Moves with every change applied and every (re)connection: see the module docs.
    epoch: u64,
    /// Answers come from memory only before this (the lease); None: not now.
    serving_until: Option<Instant>,
    /// See the module docs; None: no limit.
    digest_fresh: Option<Duration>,
    entries: LruCache<Key, Entry>,
    /// The keys of each repository, so that a change drops them all.
    by_repository: HashMap<Arc<str>, HashSet<Key>>,
    bytes: usize,
}

impl State {
    fn serving(&self, now: Instant) -> bool {
        self.serving_until.is_some_and(|t| now < t)
    }

    fn clear(&mut self) {
        self.epoch += 1;
        if self.serving_until.is_none() {
            METRICS.lease_end.set(0.0);
        }
        self.entries.clear();
        self.by_repository.clear();
        self.bytes = 0;
        METRICS.bytes.set(0);
    }

    fn drop_repository(&mut self, repository: &str) {
        self.epoch += 1;
        if let Some(keys) = self.by_repository.remove(repository) {
            for k in keys {
                if let Some(e) = self.entries.pop(&k) {
                    self.bytes -= cost(&k, &e);
                }
            }
        }
        METRICS.bytes.set(self.bytes as i64);
    }

    fn put(&mut self, key: Key, entry: Entry, max_bytes: usize) {
        let size = cost(&key, &entry);
        if size > max_bytes / 8 {
            return;
        }
        let repository = match &key {
            Key::Tag { repository, .. } | Key::Manifest { repository, .. } => repository.clone(),
        };
        if let Some(old) = self.entries.put(key.clone(), entry) {
            self.bytes -= cost(&key, &old);
        }
        self.bytes += size;
        self.by_repository
            .entry(repository)
            .or_default()
            .insert(key);
        while self.bytes > max_bytes {
            let Some((k, e)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= cost(&k, &e);
            let repository = match &k {
                Key::Tag { repository, .. } | Key::Manifest { repository, .. } => repository,
            };
            if let Some(keys) = self.by_repository.get_mut(repository) {
                keys.remove(&k);
                if keys.is_empty() {
                    self.by_repository.remove(repository);
                }
            }
        }
        METRICS.bytes.set(self.bytes as i64);
    }
}

/// An entry's share of the bound: its bytes and about what the maps spend on it.
fn cost(key: &Key, entry: &Entry) -> usize {
    const OVERHEAD: usize = 192;
    let key = match key {
        Key::Tag { repository, tag } => repository.len() + tag.len(),
        Key::Manifest { repository, digest } => repository.len() + digest.len(),
    };
    let entry = match entry {
        Entry::Tag { digest } => digest.len(),
        Entry::Manifest { manifest, .. } => {
            manifest.content.len()
                + manifest.info.digest.len()
                + manifest.info.media_type.len()
                + manifest.info.subject.len()
        }
    };
    // The key is held twice: in the LRU and in its repository's set.
    2 * key + entry + OVERHEAD
}

fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

impl ManifestCache {
    /// A cache that never answers: every lookup is a miss and nothing is kept.
    pub fn off() -> ManifestCache {
        ManifestCache::new(0)
    }

    fn new(max_bytes: usize) -> ManifestCache {
        ManifestCache {
            shared: Arc::new(Shared {
                max_bytes,
                state: Mutex::new(State {
                    epoch: 0,
                    serving_until: None,
                    digest_fresh: None,
                    entries: LruCache::unbounded(),
                    by_repository: HashMap::new(),
                    bytes: 0,
                }),
                stop: CancellationToken::new(),
                watcher: Mutex::new(None),
            }),
        }
    }

    /// A cache of at most `max_bytes` (0: off) kept correct by watching `storage`; it serves
    /// from memory once storage granted the first lease. Call [`ManifestCache::stop`] when
    /// the gateway stops.
    pub fn start(storage: StorageClient<Channel>, max_bytes: usize) -> ManifestCache {
        let cache = ManifestCache::new(max_bytes);
        if max_bytes > 0 {
            let task = tokio::spawn(watch(cache.shared.clone(), storage));
            *cache.shared.watcher.lock().expect("cache lock") = Some(task);
        }
        cache
    }

    /// Whether the cache may keep anything (a size was given).
    pub fn is_on(&self) -> bool {
        self.shared.max_bytes > 0
    }

    /// Stops serving from memory and tells storage so, then closes the watch.
    pub async fn stop(&self) {
        self.shared.stop.cancel();
        let task = self.shared.watcher.lock().expect("cache lock").take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(STOP_WAIT, task).await;
        }
    }

    /// A manifest by tag or digest, from memory when the cache may answer.
    pub fn lookup(&self, repository: &str, reference: &str) -> Lookup {
        let mut state = self.shared.state.lock().expect("cache lock");
        let ticket = Ticket { epoch: state.epoch };
        let now = Instant::now();
        if self.shared.max_bytes == 0 || !state.serving(now) {
            METRICS.lookups(false).inc();
            return Lookup::Miss(ticket);
        }
        let repository: Arc<str> = Arc::from(repository);
        let digest: Box<str> = if is_digest(reference) {
            reference.into()
        } else {
            let key = Key::Tag {
                repository: repository.clone(),
                tag: reference.into(),
            };
            match state.entries.get(&key) {
                Some(Entry::Tag { digest }) => digest.clone(),
                _ => {
                    METRICS.lookups(false).inc();
                    return Lookup::Miss(ticket);
                }
            }
        };
        let by_digest = is_digest(reference);
        let fresh = state.digest_fresh;
        let key = Key::Manifest { repository, digest };
        match state.entries.get(&key) {
            Some(Entry::Manifest {
                manifest,
                confirmed,
            }) if !by_digest || fresh.is_none_or(|f| confirmed.is_some_and(|t| now - t < f)) => {
                METRICS.lookups(true).inc();
                Lookup::Hit(manifest.clone())
            }
            _ => {
                METRICS.lookups(false).inc();
                Lookup::Miss(ticket)
            }
        }
    }

    /// Keeps storage's answer to a lookup that missed, unless something changed since.
    pub fn insert(&self, ticket: Ticket, repository: &str, reference: &str, manifest: Arc<Cached>) {
        if self.shared.max_bytes == 0 {
            return;
        }
        let mut state = self.shared.state.lock().expect("cache lock");
        if state.epoch != ticket.epoch {
            return;
        }
        let repository: Arc<str> = Arc::from(repository);
        let digest: Box<str> = manifest.info.digest.as_str().into();
        let key = Key::Manifest {
            repository: repository.clone(),
            digest: digest.clone(),
        };
        let by_digest = is_digest(reference);
        let confirmed = match state.entries.peek(&key) {
            _ if by_digest => Some(Instant::now()),
            Some(Entry::Manifest { confirmed, .. }) => *confirmed,
            _ => None,
        };
        let max = self.shared.max_bytes;
        state.put(
            key,
            Entry::Manifest {
                manifest,
                confirmed,
            },
            max,
        );
        if !by_digest {
            let key = Key::Tag {
                repository,
                tag: reference.into(),
            };
            state.put(key, Entry::Tag { digest }, max);
        }
    }
}

/// Watches storage for as long as the gateway runs, again after every failure.
async fn watch(shared: Arc<Shared>, mut storage: StorageClient<Channel>) {
    let mut retry = RETRY_FIRST;
    loop {
        let started = tokio::select! {
            r = storage.watch(WatchRequest {}) => r,
            _ = shared.stop.cancelled() => return,
        };
        match started {
            Ok(events) => {
                if follow(&shared, &mut storage, events.into_inner()).await {
                    retry = RETRY_FIRST;
                }
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                // A storage service older than the cache: answer everything from storage.
                tracing::info!("storage cannot be watched; manifests are not cached");
                return;
            }
            Err(status) => tracing::debug!(error = %status, "watching storage failed"),
        }
        {
            let mut state = shared.state.lock().expect("cache lock");
            state.serving_until = None;
            state.clear();
        }
        if shared.stop.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shared.stop.cancelled() => return,
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// One watch, until it breaks or the gateway stops; whether a lease was ever granted on it.
async fn follow(
    shared: &Shared,
    storage: &mut StorageClient<Channel>,
    mut events: tonic::Streaming<WatchEvent>,
) -> bool {
    let hello = match events.next().await {
        Some(Ok(WatchEvent {
            kind: Some(Event::Hello(h)),
        })) => h,
        _ => return false,
    };
    let lease = Duration::from_millis(u64::from(hello.lease_ms)).mul_f64(LEASE_USED);
    if lease.is_zero() {
        return false;
    }
    {
        let mut state = shared.state.lock().expect("cache lock");
        state.clear();
        state.digest_fresh =
            (hello.digest_fresh_ms > 0).then(|| Duration::from_millis(hello.digest_fresh_ms));
    }
    let watcher = hello.watcher;
    // Every change up to this one is dropped from the cache.
    let mut applied = 0u64;
    let mut granted = false;
    // Renewed four times per lease, and after every change applied.
    let mut next_renew = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_renew) => {}
            event = events.next() => match event {
                Some(Ok(WatchEvent { kind: Some(Event::Changed(c)) })) => {
                    shared.state.lock().expect("cache lock").drop_repository(&c.repository);
                    applied = applied.max(c.seq);
                }
                Some(Ok(_)) => continue,
                _ => return granted,
            },
            _ = shared.stop.cancelled() => {
                // Not serving from memory any more; then storage is told so.
                {
                    let mut state = shared.state.lock().expect("cache lock");
                    state.serving_until = None;
                    state.clear();
                }
                let bye = storage.unwatch(Watcher { watcher });
                let _ = tokio::time::timeout(STOP_WAIT, bye).await;
                return granted;
            }
        }
        // Acknowledge what was applied, and renew the lease. A lease counts from its sending.
        let sent = Instant::now();
        next_renew = tokio::time::Instant::now() + lease / 4;
        let ack = storage.ack(AckRequest { watcher, applied });
        let through = match tokio::time::timeout(lease, ack).await {
            Ok(Ok(l)) => l.into_inner().through,
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => return granted,
            // Storage is slow or away: the lease runs out by itself; the stream tells if the
            // watch is over.
            _ => continue,
        };
        // Changes queued before the grant come first; the next acknowledgement, right after
        // they are applied, brings the lease then.
        if applied >= through {
            granted = true;
            let mut state = shared.state.lock().expect("cache lock");
            state.serving_until = state.serving_until.max(Some(sent + lease));
            if let Some(until) = state.serving_until {
                let left = until.saturating_duration_since(Instant::now());
                let end = std::time::SystemTime::now() + left;
                let secs = end
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                METRICS.lease_end.set(secs);
            }
        }
    }
}

struct CacheMetrics {
    lookups: Family<ResultLabel, Counter>,
    hit: Counter,
    miss: Counter,
    bytes: Gauge,
    lease_end: Gauge<f64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

impl CacheMetrics {
    fn lookups(&self, hit: bool) -> &Counter {
        if hit { &self.hit } else { &self.miss }
    }
}

static METRICS: LazyLock<CacheMetrics> = LazyLock::new(|| {
    let lookups = Family::<ResultLabel, Counter>::default();
    let hit = lookups.get_or_create_owned(&ResultLabel { result: "hit" });
    let miss = lookups.get_or_create_owned(&ResultLabel { result: "miss" });
    CacheMetrics {
        lookups,
        hit,
        miss,
        bytes: Gauge::default(),
        lease_end: Gauge::default(),
    }
});

/// Registers the cache's metrics in `registry`.
pub fn register(registry: &mut Registry) {
    let m = &*METRICS;
    registry.register(
        "trow_manifest_cache_lookups",
        "Local manifest GET and HEAD requests, by whether the gateway's cache answered them",
        m.lookups.clone(),
    );
    registry.register_with_unit(
        "trow_manifest_cache_lease_end",
        "When the gateway's lease to answer from its cache ends (Unix time; 0: none). A cache \
         that cannot reach storage stops answering then",
        Unit::Seconds,
        m.lease_end.clone(),
    );
    registry.register_with_unit(
        "trow_manifest_cache_size",
        "Bytes the gateway's manifest cache holds (its bound: --manifest-cache-size)",
        Unit::Bytes,
        m.bytes.clone(),
    );
}
