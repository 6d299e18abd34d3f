//! Changes to tags and manifests, told to the caches that watch them (the gateways').
//!
//! A gateway answers manifest GETs from memory, yet must never answer with a tag's old target,
//! or with a deleted manifest, once the write that changed it returned to its client. So every
//! write that moves or removes a tag or manifest ends with [`Changes::publish`]: the change is
//! queued to every watcher, and `publish` returns once each one applied it, or once the lease
//! that watcher held when the change was queued ran out. A watcher serves from its cache only
//! under a lease (see `Watch` in storage.proto), and a newer lease holds only once the watcher
//! applied every change queued before it was granted, so a watcher that is slow to acknowledge
//! cannot serve stale answers past its lease either. A watcher whose queue is full is dropped,
//! and changes wait out its lease.
//!
//! The cost of a change is one round trip to each gateway (a gateway that hangs delays writes
//! by at most one lease). No lock spans processes: with several storage replicas, a gateway
//! watches each of them and each publishes its own writes.
//!
//! **Across restarts.** A gateway in another process may still hold a lease granted by the
//! storage process that ran before (killed, its host lost: the gateway may not have noticed).
//! Before granting such a lease, the store records until when leases may run
//! (`state/leases`, written at most once per lease); a store opened while that time is ahead
//! waits it out before any change returns. Gateways in the same process die with it, so their
//! leases are never recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::error::Result;
use crate::layout;
use crate::store::Store;

/// How long a lease lasts. Short: a gateway that stops answering delays writes by this much
/// at most; long enough that renewing (four times per lease) costs nothing measurable.
pub const LEASE: Duration = Duration::from_secs(2);

/// Changes queued to one watcher at most. Each is acknowledged within a round trip, so a
/// watcher this far behind is stuck: it is dropped rather than let the queue grow.
const QUEUE: usize = 1024;

/// A change, as a watcher's queue holds it: what was cached of `repository` is stale from
/// change `seq` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub repository: String,
}

/// The changes hub of one store.
pub struct Changes {
    lease: Duration,
    inner: Mutex<Inner>,
    /// What `state/leases` holds (see [`Store::record_remote_lease`]).
    leases_recorded: AtomicU64,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    watchers: HashMap<u64, Arc<Watcher>>,
    /// The latest lease end of the watchers dropped without saying they stopped serving: they
    /// may serve from their caches until then.
    dropped_until: Option<Instant>,
}

struct Watcher {
    tx: mpsc::Sender<Change>,
    /// The last change queued to it.
    queued: AtomicU64,
    /// When its latest lease ends: the arrival of its `Ack` plus the lease, so never before the
    /// end the watcher counts from the moment it sent the `Ack`.
    lease_end: Mutex<Instant>,
    state: watch::Sender<WatcherState>,
    /// Cancelled when the watcher is removed: its stream of events ends.
    ended: CancellationToken,
}

#[derive(Clone, Copy, Default)]
struct WatcherState {
    applied: u64,
    gone: bool,
}

/// One watcher, as its `Watch` call holds it. Dropping it without [`Changes::unwatch`] counts
/// as an unclean end: changes wait out its lease.
pub struct Subscription {
    id: u64,
    watcher: Arc<Watcher>,
    changes: Arc<Changes>,
}

/// Why an acknowledgement was refused.
#[derive(Debug, thiserror::Error)]
#[error("unknown watcher {0}: watch again")]
pub struct UnknownWatcher(pub u64);

impl Default for Changes {
    fn default() -> Self {
        Changes::new(LEASE)
    }
}

impl Changes {
    pub fn new(lease: Duration) -> Changes {
        Changes {
            lease,
            inner: Mutex::new(Inner {
                next_seq: 1,
                ..Inner::default()
            }),
            leases_recorded: AtomicU64::new(0),
        }
    }

    /// Changes wait until `until` at least: leases granted before may run until then.
    pub fn wait_out(&self, until: Instant) {
        let mut inner = self.inner.lock().expect("changes lock");
        inner.dropped_until = inner.dropped_until.max(Some(until));
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// A new watcher, with a random id (its calls name it). It holds no lease until its first
    /// [`Changes::ack`]; changes are queued to it from now on.
    pub fn subscribe(self: &Arc<Self>) -> (Subscription, mpsc::Receiver<Change>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let watcher = Arc::new(Watcher {
            tx,
            queued: AtomicU64::new(0),
            lease_end: Mutex::new(Instant::now()),
            state: watch::Sender::new(WatcherState::default()),
            ended: CancellationToken::new(),
        });
        let mut inner = self.inner.lock().expect("changes lock");
        let id = loop {
            let id = rand_id();
            if !inner.watchers.contains_key(&id) {
                break id;
            }
        };
        inner.watchers.insert(id, watcher.clone());
        let sub = Subscription {
            id,
            watcher,
            changes: self.clone(),
        };
        (sub, rx)
    }

    /// Watcher `id` applied every change up to `applied`, and is granted a lease from now (so
    /// from after it sent this): returns the last change queued to it, which it must apply
    /// before the lease holds.
    pub fn ack(&self, id: u64, applied: u64) -> std::result::Result<u64, UnknownWatcher> {
        let inner = self.inner.lock().expect("changes lock");
        let w = inner.watchers.get(&id).ok_or(UnknownWatcher(id))?;
        w.state.send_if_modified(|s| {
            let newer = applied > s.applied;
            s.applied = s.applied.max(applied);
            newer
        });
        *w.lease_end.lock().expect("lease lock") = Instant::now() + self.lease;
        Ok(w.queued.load(Ordering::Acquire))
    }

    /// Watcher `id` stopped serving from its cache: changes no longer wait for it.
    pub fn unwatch(&self, id: u64) {
        remove(&mut self.inner.lock().expect("changes lock"), id, true);
    }

    /// Tells every watcher that `repository`'s tags or manifests changed, and returns once none
    /// can serve what it cached before the change (see the module docs). Call it after the
    /// change is durable and before answering its writer.
    pub async fn publish(&self, repository: &str) {
        let (seq, waits, dropped_until) = {
            let mut inner = self.inner.lock().expect("changes lock");
            if inner.dropped_until.is_some_and(|t| t <= Instant::now()) {
                inner.dropped_until = None;
            }
            if inner.watchers.is_empty() && inner.dropped_until.is_none() {
                return;
            }
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let mut waits = Vec::with_capacity(inner.watchers.len());
            let mut full = Vec::new();
            for (&id, w) in &inner.watchers {
                let change = Change {
                    seq,
                    repository: repository.to_string(),
                };
                match w.tx.try_send(change) {
                    Ok(()) => {
                        w.queued.store(seq, Ordering::Release);
                        waits.push((w.clone(), *w.lease_end.lock().expect("lease lock")));
                    }
                    Err(_) => full.push(id),
                }
            }
            for id in full {
                tracing::warn!(watcher = id, "a cache watcher fell behind; dropping it");
                remove(&mut inner, id, false);
            }
            (seq, waits, inner.dropped_until)
        };
        for (w, lease_end) in waits {
            let mut state = w.state.subscribe();
            let _ =
                tokio::time::timeout_at(lease_end, state.wait_for(|s| s.applied >= seq || s.gone))
                    .await;
        }
        let later = self.inner.lock().expect("changes lock").dropped_until;
        if let Some(until) = later.max(dropped_until) {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// Milliseconds since the epoch.
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl<B: Backend> Store<B> {
    /// Records that a lease is about to be granted to a gateway in another process (see the
    /// module docs). Writes only when the recorded time would not cover this lease, then for
    /// two leases ahead, so a steady stream of renewals writes once per lease.
    pub async fn record_remote_lease(&self) -> Result<()> {
        let lease = self.changes.lease.as_millis() as u64;
        let recorded = self.changes.leases_recorded.load(Ordering::Acquire);
        let needed = now_millis() + lease;
        if recorded >= needed {
            return Ok(());
        }
        let until = needed + lease;
        self.backend
            .put(layout::LEASES, until.to_string().into())
            .await?;
        self.changes
            .leases_recorded
            .fetch_max(until, Ordering::AcqRel);
        Ok(())
    }

    /// When the store opens: leases the last run granted may still run; changes wait them out.
    pub(super) async fn wait_out_recorded_leases(&self) -> Result<()> {
        let Some(raw) = self.backend.get(layout::LEASES).await? else {
            return Ok(());
        };
        let until = std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let now = now_millis();
        if until > now {
            let left = Duration::from_millis(until - now).min(MAX_RECORDED_WAIT);
            tracing::info!(
                ms = left.as_millis() as u64,
                "gateways may hold leases of the last run; changes wait them out"
            );
            self.changes.wait_out(Instant::now() + left);
        }
        Ok(())
    }
}

/// A recorded lease end further ahead than this is a clock that jumped, not a lease.
const MAX_RECORDED_WAIT: Duration = Duration::from_secs(10);

/// Removes watcher `id`; unless it ended `clean`ly, changes wait out its lease from now on.
fn remove(inner: &mut Inner, id: u64, clean: bool) {
    let Some(w) = inner.watchers.remove(&id) else {
        return;
    };
    if !clean {
        let end = *w.lease_end.lock().expect("lease lock");
        inner.dropped_until = inner.dropped_until.max(Some(end));
    }
    w.state.send_modify(|s| s.gone = true);
    w.ended.cancel();
}

impl Subscription {
    /// The id the watcher's calls name it by.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Resolves when the watcher was removed (by [`Changes::unwatch`], or dropped for falling
    /// behind): its stream of changes ends.
    pub fn ended(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.watcher.ended.clone().cancelled_owned()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        remove(
            &mut self.changes.inner.lock().expect("changes lock"),
            self.id,
            false,
        );
    }
}

/// A watcher id no one guesses by counting: another gateway's acknowledgement must not renew
/// this one's lease.
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub past the wait a fresh store may owe a previous run.
    fn hub(lease: Duration) -> Arc<Changes> {
        Arc::new(Changes::new(lease))
    }

    #[tokio::test]
    async fn publish_without_watchers_returns_at_once() {
        let changes = hub(Duration::from_secs(60));
        tokio::time::timeout(Duration::from_secs(5), changes.publish("a"))
            .await
            .expect("no watcher to wait for");
    }

    #[tokio::test]
    async fn publish_waits_for_the_watcher_to_apply() {
        let changes = hub(Duration::from_secs(60));
        let (sub, mut rx) = changes.subscribe();
        assert_eq!(changes.ack(sub.id(), 0).unwrap(), 0);
        let publishing = tokio::spawn({
            let changes = changes.clone();
            async move { changes.publish("repo/a").await }
        });
        let change = rx.recv().await.expect("a change");
        assert_eq!(change.repository, "repo/a");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !publishing.is_finished(),
            "returned before the watcher applied it"
        );
        // A lease asked for now holds only once the change is applied.
        assert_eq!(changes.ack(sub.id(), 0).unwrap(), change.seq);
        assert!(!publishing.is_finished());
        changes.ack(sub.id(), change.seq).unwrap();
        tokio::time::timeout(Duration::from_secs(5), publishing)
            .await
            .expect("returns once applied")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_watcher_delays_changes_by_its_lease_only() {
        let changes = hub(Duration::from_secs(2));
        let (sub, _rx) = changes.subscribe();
        changes.ack(sub.id(), 0).unwrap();
        let start = Instant::now();
        changes.publish("a").await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(2), "waited {waited:?}");
        assert!(waited < Duration::from_secs(3), "waited {waited:?}");
        // Its lease is over and no new one was granted: the next change does not wait.
        let start = Instant::now();
        changes.publish("a").await;
        assert!(start.elapsed() < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unclean_end_is_waited_out_a_clean_one_is_not() {
        let changes = hub(Duration::from_secs(2));
        let (sub, _rx) = changes.subscribe();
        changes.ack(sub.id(), 0).unwrap();
        drop(sub);
        let start = Instant::now();
        changes.publish("a").await;
        assert!(start.elapsed() >= Duration::from_secs(2));

        let (sub, _rx) = changes.subscribe();
        changes.ack(sub.id(), 0).unwrap();
        changes.unwatch(sub.id());
        assert!(changes.ack(sub.id(), 0).is_err(), "gone for good");
        let start = Instant::now();
        changes.publish("a").await;
        assert!(start.elapsed() < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn leases_of_a_previous_run_are_waited_out() {
        let changes = hub(Duration::from_secs(2));
        changes.wait_out(Instant::now() + Duration::from_secs(3));
        let start = Instant::now();
        changes.publish("a").await;
        assert!(start.elapsed() >= Duration::from_secs(3));
        let start = Instant::now();
        changes.publish("a").await;
        assert!(start.elapsed() < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_that_falls_behind_is_dropped_and_waited_out() {
        let changes = hub(Duration::from_secs(2));
        let (sub, mut rx) = changes.subscribe();
        changes.ack(sub.id(), 0).unwrap();
        let ended = sub.ended();
        // It acknowledges nothing: its queue fills.
        let filler = tokio::spawn({
            let changes = changes.clone();
            async move {
                for _ in 0..=QUEUE {
                    changes.publish("a").await;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(3600), ended)
            .await
            .expect("dropped once its queue is full");
        filler.await.unwrap();
        assert!(changes.ack(sub.id(), 0).is_err(), "dropped");
        drop(sub);
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, QUEUE);
    }
}
