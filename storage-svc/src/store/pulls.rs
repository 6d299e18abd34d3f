//! When cached content was last pulled, and which of it is being read right now: what eviction
//! (see `evict`) orders and protects by.
//!
//! A pull costs a map update in memory, not a disk write: the map is saved to `state/pulls`
//! now and then ([`Store::save_pulls`]: by the janitor, and when the service stops) and loaded
//! when the store opens, so last-pull times survive restarts; a crash loses at most the pulls
//! since the last save, which then count as older than they were.

use std::time::{Duration, SystemTime};

use super::*;

/// Milliseconds since the epoch, as the pull times are kept.
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

pub(super) fn pull_key(repository: &str, d: &Digest) -> String {
    format!("{repository}@{d}")
}

/// Last pulls (milliseconds since the epoch) and open reads of cached content, by
/// `repository@digest`. Saved as lines of `<millis> <repository>@<digest>`.
#[derive(Default)]
pub(super) struct Pulls {
    last: Mutex<HashMap<String, u64>>,
    /// Changed since the last save.
    dirty: AtomicBool,
    /// Streams reading a cached blob now: never evicted under them.
    reading: Arc<Mutex<HashMap<String, usize>>>,
}

/// Held by a stream reading a cached blob; the count drops with it.
struct Reading {
    reading: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut reading = self.reading.lock().expect("reading lock");
        if let Some(n) = reading.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                reading.remove(&self.key);
            }
        }
    }
}

impl<B: Backend> Store<B> {
    /// Notes a pull of a manifest or blob of a cached repository (others are never evicted).
    pub(super) fn note_pull(&self, repository: &str, d: &Digest) {
        if !trow_proto::cache::is_cached(repository) {
            return;
        }
        self.pulls
            .last
            .lock()
            .expect("pulls lock")
            .insert(pull_key(repository, d), now_millis());
        self.pulls.dirty.store(true, Ordering::Release);
    }

    /// A cached blob's stream, counted as read until it drops.
    pub(super) fn reading(&self, repository: &str, d: &Digest, stream: ByteStream) -> ByteStream {
        match self.read_guard(repository, d) {
            None => stream,
            Some(guard) => Box::pin(stream.map(move |chunk| {
                let _held = &guard;
                chunk
            })),
        }
    }

    /// Counts a read of a cached blob until the value drops (None: not cached content).
    pub(super) fn read_guard(
        &self,
        repository: &str,
        d: &Digest,
    ) -> Option<impl Drop + Send + 'static> {
        if !trow_proto::cache::is_cached(repository) {
            return None;
        }
        let key = pull_key(repository, d);
        *self
            .pulls
            .reading
            .lock()
            .expect("reading lock")
            .entry(key.clone())
            .or_default() += 1;
        Some(Reading {
            reading: self.pulls.reading.clone(),
            key,
        })
    }

    /// Whether a stream reads `repository@d` now.
    pub(super) fn being_read(&self, repository: &str, d: &Digest) -> bool {
        self.pulls
            .reading
            .lock()
            .expect("reading lock")
            .contains_key(&pull_key(repository, d))
    }

    /// When `repository@d` was last pulled, if it was since the store kept track.
    pub(super) fn last_pull(&self, repository: &str, d: &Digest) -> Option<SystemTime> {
        let millis = *self
            .pulls
            .last
            .lock()
            .expect("pulls lock")
            .get(&pull_key(repository, d))?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(millis))
    }

    /// Drops the pull times of content that is gone.
    pub(super) fn forget_pulls(&self, keep: impl Fn(&str) -> bool) {
        let mut last = self.pulls.last.lock().expect("pulls lock");
        let before = last.len();
        last.retain(|k, _| keep(k));
        if last.len() != before {
            self.pulls.dirty.store(true, Ordering::Release);
        }
    }

    /// Saves the pull times if they changed since the last save: one small write per period,
    /// however many pulls.
    pub async fn save_pulls(&self) -> Result<()> {
        if !self.pulls.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let text: String = {
            let last = self.pulls.last.lock().expect("pulls lock");
            last.iter().map(|(k, t)| format!("{t} {k}\n")).collect()
        };
        if let Err(e) = self.backend.put(layout::PULLS, text.into()).await {
            self.pulls.dirty.store(true, Ordering::Release);
            return Err(e.into());
        }
        Ok(())
    }

    /// Loads the pull times the last run saved; unreadable lines are skipped.
    pub(super) async fn load_pulls(&self) -> Result<()> {
        let Some(raw) = self.backend.get(layout::PULLS).await? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&raw);
        let mut last = self.pulls.last.lock().expect("pulls lock");
        for line in text.lines() {
            if let Some((t, k)) = line.split_once(' ')
                && let Ok(t) = t.parse::<u64>()
            {
                last.insert(k.to_string(), t);
            }
        }
        Ok(())
    }
}
