//! Eviction: a cache within its size (`registry_proxies.max_size`) and a disk that keeps room
//! for pushes (`--min-free-space`).
//!
//! The unit is a cached image: a manifest of a repository under `f/` that no other manifest
//! there references, with everything it reaches (an index's platform manifests, their blobs).
//! Its last pull is the latest pull of any of those (see `pulls`). Eviction reads the whole
//! cache, every time, and orders all images by last pull: the oldest are evicted first,
//! however many there are (no candidate window). A blob counts once however many images or
//! repositories share it, and only while no pushed repository names it: pushed content is
//! never evicted and does not count against the cache.
//!
//! An image is never evicted while a stream reads any of its blobs, nor within
//! `Limits::pull_guard` of its last pull (its client may be between two blobs): eviction never
//! breaks a pull in progress. What an evicted image's blobs held is freed with the same
//! tombstones as a garbage collection (see `gc`), so a push or fill that names one of them
//! meanwhile keeps it.

use std::time::{Duration, Instant, SystemTime};

use super::gc::Garbage;
use super::pulls::pull_key;
use super::*;
use crate::backend::Space;

/// What an eviction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvictSummary {
    /// Bytes the cache held before.
    pub cached: u64,
    /// Images evicted.
    pub images: u64,
    /// Blobs deleted, and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Images skipped because a pull of them is in progress.
    pub busy: u64,
    /// Bytes the volume was short of its reserve when the pass began (0: no disk pressure).
    pub short: u64,
    pub elapsed: Duration,
}

/// A cached image as one eviction pass sees it.
struct Image {
    repository: String,
    root: Digest,
    /// Its manifests (the root first) and blobs.
    records: Vec<Digest>,
    blobs: Vec<Digest>,
    last_pull: SystemTime,
    busy: bool,
}

/// The cache's size as last counted is unknown.
const UNCOUNTED: u64 = u64::MAX;

/// The free space a volume keeps by default, at most (5% of it on a smaller one).
const DEFAULT_RESERVE: u64 = 256 << 20;

impl<B: Backend> Store<B> {
    /// A fill of `size` bytes completed: the cache grew. Wakes the evictor when that takes it
    /// past its size.
    pub(super) fn cached_bytes_added(&self, size: u64) {
        self.cache_filled.fetch_add(size, Ordering::AcqRel);
        let before = self
            .cache_estimate
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != UNCOUNTED).then(|| n.saturating_add(size))
            });
        let over = match (before, self.limits.cache_max_size) {
            (Ok(n), Some(max)) => n.saturating_add(size) > max,
            (Err(_), Some(_)) => true,
            (_, None) => false,
        };
        if over {
            self.evict_wanted.notify_one();
        }
    }

    /// The free space the volume keeps (see `Limits::min_free_space`).
    fn reserve(&self, space: Space) -> u64 {
        self.limits
            .min_free_space
            .unwrap_or((space.total / 20).min(DEFAULT_RESERVE))
    }

    /// Refuses a push (an upload starting or appending) while the volume is under half its
    /// reserve: it would fail half-written. The cache is asked to give space back.
    pub(super) async fn check_room_for_push(&self, repository: &str) -> Result<()> {
        if trow_proto::cache::is_cached(repository) {
            return Ok(());
        }
        let Some(space) = self.backend.space().await? else {
            return Ok(());
        };
        let reserve = self.reserve(space) / 2;
        if space.free < reserve {
            self.evict_wanted.notify_one();
            return Err(StorageError::SpaceLow {
                free: space.free,
                reserve,
            });
        }
        Ok(())
    }

    /// A blob was stored: wakes the evictor when the volume went under its reserve, so the
    /// cache gives space back before pushes are refused.
    pub(super) async fn check_space_after_write(&self) {
        if let Ok(Some(space)) = self.backend.space().await
            && space.free < self.reserve(space)
        {
            self.evict_wanted.notify_one();
        }
    }

    /// Waits until a fill takes the cache past its size, or `period` passes.
    pub async fn eviction_wanted(&self, period: Duration) {
        let _ = tokio::time::timeout(period, self.evict_wanted.notified()).await;
    }

    /// Evicts what the limits ask for, if anything: the cache past `cache_max_size`, or the
    /// volume under `min_free_space` (then the cache gives back the difference). Counting the
    /// cache reads it whole, so it is skipped when the last count plus fills since is within
    /// bounds and the volume has room.
    pub async fn evict_if_needed(&self) -> Result<Option<EvictSummary>> {
        let max = self.limits.cache_max_size.unwrap_or(u64::MAX);
        let space = self.backend.space().await?;
        let short = space.map_or(0, |s| self.reserve(s).saturating_sub(s.free));
        let estimate = self.cache_estimate.load(Ordering::Acquire);
        let counted = estimate != UNCOUNTED;
        if short == 0 && (counted || self.limits.cache_max_size.is_none()) && estimate <= max {
            return Ok(None);
        }
        if short > 0 {
            tracing::warn!(free = ?space.map(|s| s.free), short,
                "the data volume is short of free space: evicting cached images");
        }
        let mut evicted = Vec::new();
        let summary = self
            .evict(max, short, &mut |g| {
                if let Garbage::Manifest { repository, digest } = g {
                    evicted.push(trow_proto::audit::Event {
                        time_ms: crate::audit::now_ms(),
                        action: crate::audit::action::EVICT.into(),
                        repository,
                        digest,
                        outcome: "ok".into(),
                        source: "storage".into(),
                        ..Default::default()
                    });
                }
            })
            .await?;
        if let Some(log) = self.audit() {
            log.record_detached(evicted);
        }
        Ok(Some(summary))
    }

    /// Evicts the least recently pulled cached images until the cache holds at most `max`
    /// bytes and, when `also_free` is not zero, at least `also_free` bytes were freed (disk
    /// pressure). Reports each evicted image's root manifest and each freed blob.
    pub async fn evict(
        &self,
        max: u64,
        also_free: u64,
        report: &mut (dyn FnMut(Garbage) + Send),
    ) -> Result<EvictSummary> {
        let _one = self.gc_running.lock().await;
        let started = Instant::now();
        let scanned_at = SystemTime::now();
        // Fills that complete while this pass runs are not in its count; they are added after.
        let filled_before = self.cache_filled.load(Ordering::Acquire);
        let mut summary = EvictSummary {
            short: also_free,
            ..EvictSummary::default()
        };
        let mut pushed = HashSet::new();
        let mut images = Vec::new();
        for repository in self.catalog().await? {
            if trow_proto::cache::is_cached(&repository) {
                images.extend(self.cached_images(&repository).await?);
            } else {
                self.names_of(&repository, &mut pushed).await?;
            }
        }
        // How many images name each blob, and the bytes of those the cache alone holds.
        let mut named: HashMap<Digest, usize> = HashMap::new();
        for image in &images {
            for d in image.records.iter().chain(&image.blobs) {
                *named.entry(d.clone()).or_default() += 1;
            }
        }
        let mut sizes: HashMap<Digest, u64> = HashMap::new();
        for d in named.keys().filter(|d| !pushed.contains(*d)) {
            if let Some(size) = self.backend.size(&layout::blob(d)).await? {
                sizes.insert(d.clone(), size);
            }
        }
        summary.cached = sizes.values().sum();
        let target = max.min(summary.cached.saturating_sub(also_free));
        if summary.cached <= target {
            self.set_cache_estimate(summary.cached, filled_before);
            summary.elapsed = started.elapsed();
            return Ok(summary);
        }

        // Choose, oldest pull first, until what the chosen alone name is enough.
        images.sort_by_key(|i| i.last_pull);
        let mut freed = 0u64;
        let mut chosen = vec![false; images.len()];
        for (n, image) in images.iter().enumerate() {
            if summary.cached - freed <= target {
                break;
            }
            if image.busy {
                summary.busy += 1;
                continue;
            }
            chosen[n] = true;
            for d in image.records.iter().chain(&image.blobs) {
                let left = named.get_mut(d).expect("counted");
                *left -= 1;
                if *left == 0 {
                    freed += sizes.get(d).copied().unwrap_or(0);
                }
            }
        }
        // Then evict, one repository at a time, in its critical section.
        let mut by_repository: HashMap<&str, Vec<(&Image, bool)>> = HashMap::new();
        for (image, chosen) in images.iter().zip(chosen) {
            by_repository
                .entry(&image.repository)
                .or_default()
                .push((image, chosen));
        }
        let mut candidates = Vec::new();
        let mut gone = HashSet::new();
        for (repository, images) in by_repository {
            if !images.iter().any(|(_, chosen)| *chosen) {
                continue;
            }
            let evicted = self
                .evict_from(repository, &images, scanned_at, report)
                .await?;
            for (image, deleted) in evicted {
                summary.images += 1;
                candidates.extend(deleted.iter().cloned());
                gone.extend(deleted.iter().map(|d| pull_key(&image.repository, d)));
            }
        }
        // Bytes no repository links any more go, under the collection's tombstones.
        candidates.retain(|d| sizes.contains_key(d));
        candidates.sort_by_key(|d| d.to_string());
        candidates.dedup();
        let mut gc = GcSummary::default();
        self.delete_blobs(candidates, scanned_at, report, &mut gc)
            .await?;
        summary.blobs = gc.blobs;
        summary.bytes = gc.bytes;
        self.set_cache_estimate(summary.cached.saturating_sub(gc.bytes), filled_before);
        self.forget_pulls(|k| !gone.contains(k));
        summary.elapsed = started.elapsed();
        tracing::info!(
            cached = summary.cached,
            images = summary.images,
            bytes = summary.bytes,
            busy = summary.busy,
            "evicted the least recently pulled cached images"
        );
        crate::metrics::evicted(&summary);
        Ok(summary)
    }

    /// Records what a pass counted, plus what was filled since it began (`filled_before`),
    /// and wakes the evictor again when that is still over the cache's size.
    fn set_cache_estimate(&self, counted: u64, filled_before: u64) {
        let since = self
            .cache_filled
            .load(Ordering::Acquire)
            .saturating_sub(filled_before);
        let estimate = counted.saturating_add(since);
        self.cache_estimate.store(estimate, Ordering::Release);
        if self.limits.cache_max_size.is_some_and(|max| estimate > max) {
            self.evict_wanted.notify_one();
        }
    }

    /// The images of a cached repository, each with its last pull.
    async fn cached_images(&self, repository: &str) -> Result<Vec<Image>> {
        let state = self.repository_state(repository).await?;
        if state.unreadable {
            // fsck names the record; evicting around it could delete what it references.
            return Ok(Vec::new());
        }
        let mut references: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for (d, (meta, _)) in &state.records {
            let refs = match &meta.references {
                Some(r) => r.clone(),
                None => self.read_references(d, meta).await?.unwrap_or_default(),
            };
            references.insert(
                d.clone(),
                refs.iter().filter_map(|r| Digest::parse(r).ok()).collect(),
            );
        }
        let children: HashSet<&Digest> = references.values().flatten().collect();
        let linked: HashMap<&Digest, SystemTime> =
            state.links.iter().map(|(d, t)| (d, *t)).collect();
        let guard = self.limits.pull_guard;
        let mut images = Vec::new();
        for root in state.records.keys().filter(|d| !children.contains(d)) {
            let (mut records, mut blobs) = (Vec::new(), Vec::new());
            let mut stack = vec![root.clone()];
            let mut seen = HashSet::new();
            while let Some(d) = stack.pop() {
                if !seen.insert(d.clone()) {
                    continue;
                }
                if linked.contains_key(&d) {
                    // A manifest's bytes may be linked too (fetched as a blob): they go with it.
                    blobs.push(d.clone());
                }
                if let Some(refs) = references.get(&d) {
                    records.push(d);
                    stack.extend(refs.iter().cloned());
                }
            }
            // Never pulled since the store kept track: as old as when it was cached.
            let mut last_pull = SystemTime::UNIX_EPOCH;
            let mut busy = false;
            for d in records.iter().chain(&blobs) {
                let written = state
                    .records
                    .get(d)
                    .map(|(_, t)| *t)
                    .or_else(|| linked.get(d).copied());
                let pulled = self.last_pull(repository, d).or(written);
                last_pull = last_pull.max(pulled.unwrap_or(SystemTime::UNIX_EPOCH));
                busy |= self.being_read(repository, d);
            }
            busy |=
                last_pull.elapsed().is_ok_and(|age| age < guard) || last_pull > SystemTime::now();
            images.push(Image {
                repository: repository.to_string(),
                root: root.clone(),
                records,
                blobs,
                last_pull,
                busy,
            });
        }
        Ok(images)
    }

    /// Evicts the chosen images of one repository in its critical section: an image pulled or
    /// read since the pass read the cache stays (and keeps everything it names). Deletes the
    /// records and links no image left in the repository names, and every tag pointing at a
    /// deleted record. Returns the images evicted, each with the digests deleted.
    /// Then the caches are told, when something went (or perhaps went: a failure part-way).
    async fn evict_from<'a>(
        &self,
        repository: &str,
        images: &[(&'a Image, bool)],
        scanned_at: SystemTime,
        report: &mut (dyn FnMut(Garbage) + Send),
    ) -> Result<Vec<(&'a Image, Vec<Digest>)>> {
        let evicted = {
            let _turn = self.repo_lock(repository).await;
            self.evict_locked(repository, images, scanned_at, report)
                .await
        };
        if !evicted.as_ref().is_ok_and(|e| e.is_empty()) {
            self.changes.publish(repository).await;
        }
        evicted
    }

    async fn evict_locked<'a>(
        &self,
        repository: &str,
        images: &[(&'a Image, bool)],
        scanned_at: SystemTime,
        report: &mut (dyn FnMut(Garbage) + Send),
    ) -> Result<Vec<(&'a Image, Vec<Digest>)>> {
        let mut evicted = Vec::new();
        let mut staying = Vec::new();
        for (image, chosen) in images {
            if *chosen && self.still_evictable(image, scanned_at).await? {
                evicted.push(*image);
            } else {
                staying.push(*image);
            }
        }
        if evicted.is_empty() {
            return Ok(Vec::new());
        }
        let kept: HashSet<&Digest> = staying
            .iter()
            .flat_map(|i| i.records.iter().chain(&i.blobs))
            .collect();
        let records: HashSet<&Digest> = evicted
            .iter()
            .flat_map(|i| &i.records)
            .filter(|d| !kept.contains(d))
            .collect();
        let links: HashSet<&Digest> = evicted
            .iter()
            .flat_map(|i| &i.blobs)
            .filter(|d| !kept.contains(d))
            .collect();
        // As a collection does: a marker, so that a crash between a record and its referrer
        // entry is finished at the next start.
        let marker = layout::gc_marker(repository);
        let since = scanned_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.backend.put(&marker, since.to_string().into()).await?;
        // Tags first: a crash leaves untagged records, never a tag naming a deleted one. So
        // the tags as a crash would leave them (a put's tag move may not be flushed yet), and
        // their deletes durable before any record's (see `Backend::make_durable`).
        let tags = layout::tags(repository);
        self.backend.make_durable(&tags, false).await?;
        let mut untagged = false;
        for tag in self.backend.list(&tags).await? {
            let target = self.resolve_tag(repository, &tag).await.ok().flatten();
            if target.as_ref().is_some_and(|d| records.contains(d)) {
                self.backend.delete(&layout::tag(repository, &tag)).await?;
                untagged = true;
            }
        }
        if untagged {
            self.backend.make_durable(&tags, true).await?;
        }
        for d in &records {
            let meta = self.manifest_meta(repository, d).await.ok().flatten();
            self.backend
                .delete(&layout::manifest(repository, d))
                .await?;
            if let Some(subject) = meta
                .and_then(|m| m.subject)
                .and_then(|s| Digest::parse(&s).ok())
            {
                self.backend
                    .delete(&layout::referrer(repository, &subject, d))
                    .await?;
            }
        }
        for d in &links {
            self.backend
                .delete(&layout::blob_link(repository, d))
                .await?;
        }
        self.backend.delete(&marker).await?;
        Ok(evicted
            .into_iter()
            .map(|image| {
                report(Garbage::Manifest {
                    repository: repository.to_string(),
                    digest: image.root.to_string(),
                });
                let deleted = image
                    .records
                    .iter()
                    .chain(&image.blobs)
                    .filter(|d| records.contains(d) || links.contains(d))
                    .cloned()
                    .collect();
                (image, deleted)
            })
            .collect())
    }

    /// Whether a chosen image may still go: nobody pulled or read any of it since the pass
    /// chose it, and its root record was not written again.
    async fn still_evictable(&self, image: &Image, scanned_at: SystemTime) -> Result<bool> {
        for d in image.records.iter().chain(&image.blobs) {
            let again = self
                .last_pull(&image.repository, d)
                .is_some_and(|t| t > image.last_pull);
            if again || self.being_read(&image.repository, d) {
                return Ok(false);
            }
        }
        let root = layout::manifest(&image.repository, &image.root);
        Ok(self
            .backend
            .modified(&root)
            .await?
            .is_some_and(|t| t <= scanned_at))
    }
}
