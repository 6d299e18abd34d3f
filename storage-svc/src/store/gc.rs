//! Online garbage collection: what no tag, manifest or referrer reaches is deleted while the
//! registry keeps serving pushes and pulls.
//!
//! A collection runs in two phases.
//!
//! 1. **Each repository, in its critical section** (the one a manifest put runs in): first the
//!    repository's retention rule (see [`crate::retention`]) picks the tags it removes; the
//!    roots are the other tags, every record or link written (or refreshed) within the grace
//!    period, and, under a rule with `untagged_older_than`, the untagged manifests (neither
//!    referrers nor referenced by another manifest) written or used within that time; a
//!    live manifest keeps what it references (blobs and child manifests, read from the
//!    references its record keeps), and a manifest with a `subject` lives exactly as long as its
//!    subject. The removed tags go first (in a dry run they are only listed, but the live set
//!    is computed without them either way, so a dry run lists what a collection deletes).
//!    Dead manifest records go (record first, then the referrer entry: a crash leaves at
//!    worst an entry without a record, which the next collection of the repository removes,
//!    and a marker under `gc/repositories/` makes the restart finish the repository first), then
//!    dead links.
//! 2. **Blob bytes**, shared by all repositories, so no repository's section covers them: a
//!    blob that no link and no manifest record names, and that was not written within the grace
//!    period, gets a tombstone (`gc/blobs/<alg>-<hex>`); then every repository's links and
//!    records are listed again, and only the blobs still named by none are deleted; then the
//!    tombstones go.
//!
//! **Why a push in progress never loses what it is about to reference.** Within a repository,
//! whatever a push wrote a moment ago (a blob uploaded or mounted, a child manifest put by
//! digest) is younger than the grace period, and a blob or manifest a client found by `HEAD`
//! has its link or record refreshed when it is older than half of it, so it is a root; a
//! manifest put checks its references in the same critical section as the collection deletes.
//! Across repositories, every writer that makes a blob reachable (a link, a manifest record)
//! first writes that link, then waits while a tombstone of the blob exists, then checks the
//! bytes are still there ([`Store::settle`]). Either the collection's second listing saw the
//! link (the blob is kept), or the link came after that listing, and then the writer finds the
//! tombstone or, once it is gone, the missing bytes: a manifest put writes its bytes again, a
//! mount or an upload fails cleanly (the client uploads again). No in-process lock is involved:
//! on an object store the same rule holds with its read-after-write consistency.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::retention::TagAge;

/// How long a writer waits for a collection's tombstone before it gives up (a collection holds
/// one for one listing of the store).
const TOMBSTONE_WAIT: Duration = Duration::from_secs(60);

/// Something a collection removes (or, in a dry run, would remove).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Garbage {
    /// A manifest record (with its referrer entry).
    Manifest { repository: String, digest: String },
    /// A blob's link into a repository.
    Link { repository: String, digest: String },
    /// A blob's bytes.
    Blob { digest: String, size: u64 },
    /// A tag a retention rule removed; `rule` is the rule's `repositories` prefix.
    Tag {
        repository: String,
        tag: String,
        rule: String,
    },
}

/// What a collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcSummary {
    pub repositories: u64,
    /// Tags removed by retention rules.
    pub tags: u64,
    pub manifests: u64,
    pub links: u64,
    pub blobs: u64,
    /// Bytes of the blobs removed (in a dry run: that would be).
    pub bytes: u64,
    /// Blobs a writer made reachable again while the collection decided on them: kept.
    pub rescued: u64,
    pub elapsed: Duration,
}

/// Dead manifests in the order they may go: none before a dead manifest that references it (an
/// index before its platform manifests), so a crash never leaves a manifest missing a child.
fn parents_first(dead: Vec<(Digest, ManifestMeta)>) -> Vec<(Digest, ManifestMeta)> {
    let mut pending = dead;
    let mut ordered = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let referenced: HashSet<String> = pending
            .iter()
            .flat_map(|(_, m)| m.references.iter().flatten().cloned())
            .collect();
        let (free, held): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(d, _)| !referenced.contains(&d.to_string()));
        if free.is_empty() {
            // A cycle cannot be pushed (a digest cannot reference itself); go in any order.
            ordered.extend(held);
            break;
        }
        ordered.extend(free);
        pending = held;
    }
    ordered
}

/// A repository's records and links as one collection saw them.
pub(super) struct RepositoryState {
    pub(super) records: HashMap<Digest, (ManifestMeta, SystemTime)>,
    pub(super) links: Vec<(Digest, SystemTime)>,
    /// Records of an older version whose references were read from their manifests.
    migrated: Vec<Digest>,
    /// A record could not be read: nothing in the repository may be deleted.
    pub(super) unreadable: bool,
}

impl<B: Backend> Store<B> {
    /// Collects garbage once (see the module docs), reporting every item to `report` as it
    /// goes. A dry run only reports. Collections run one at a time.
    pub async fn collect_garbage(
        &self,
        dry_run: bool,
        report: &mut (dyn FnMut(Garbage) + Send),
    ) -> Result<GcSummary> {
        let started = Instant::now();
        let result = self.collect_garbage_once(dry_run, report).await;
        if !dry_run {
            crate::metrics::gc_done(result.as_ref().map_err(|_| ()), started.elapsed());
        }
        result
    }

    async fn collect_garbage_once(
        &self,
        dry_run: bool,
        report: &mut (dyn FnMut(Garbage) + Send),
    ) -> Result<GcSummary> {
        let _one = self.gc_running.lock().await;
        let started = Instant::now();
        let cutoff = SystemTime::now()
            .checked_sub(self.limits.gc_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut summary = GcSummary::default();
        let mut named: HashSet<Digest> = HashSet::new();
        for repository in self.catalog().await? {
            summary.repositories += 1;
            let kept = self
                .collect_repository(&repository, cutoff, dry_run, report, &mut summary)
                .await?;
            named.extend(kept);
        }
        let mut candidates = Vec::new();
        for d in self.all_blobs().await? {
            if named.contains(&d) {
                continue;
            }
            let key = layout::blob(&d);
            if let Some(t) = self.backend.modified(&key).await?
                && t <= cutoff
            {
                candidates.push(d);
            }
        }
        drop(named);
        if dry_run {
            for d in candidates {
                if let Some(size) = self.backend.size(&layout::blob(&d)).await? {
                    summary.blobs += 1;
                    summary.bytes += size;
                    report(Garbage::Blob {
                        digest: d.to_string(),
                        size,
                    });
                }
            }
        } else {
            self.delete_blobs(candidates, cutoff, report, &mut summary)
                .await?;
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Phase 2: tombstones, a second listing, then the bytes nobody named meanwhile.
    pub(super) async fn delete_blobs(
        &self,
        candidates: Vec<Digest>,
        cutoff: SystemTime,
        report: &mut (dyn FnMut(Garbage) + Send),
        summary: &mut GcSummary,
    ) -> Result<()> {
        if candidates.is_empty() {
            return Ok(());
        }
        for d in &candidates {
            self.backend.put_marker(&layout::gc_tombstone(d)).await?;
        }
        let deleted = async {
            let mut named = HashSet::new();
            for repository in self.catalog().await? {
                self.names_of(&repository, &mut named).await?;
            }
            for d in &candidates {
                let key = layout::blob(d);
                if named.contains(d) {
                    summary.rescued += 1;
                    continue;
                }
                // Written again since it was listed (an upload of the same bytes): not garbage.
                let Some(t) = self.backend.modified(&key).await? else {
                    continue;
                };
                if t > cutoff {
                    summary.rescued += 1;
                    continue;
                }
                let size = self.backend.size(&key).await?.unwrap_or(0);
                self.backend.delete(&key).await?;
                summary.blobs += 1;
                summary.bytes += size;
                report(Garbage::Blob {
                    digest: d.to_string(),
                    size,
                });
            }
            Result::Ok(())
        }
        .await;
        // Even after a failure, and every one even if one fails: a tombstone left behind would
        // hold writers up.
        let mut cleared = Ok(());
        for d in &candidates {
            if let Err(e) = self.backend.delete(&layout::gc_tombstone(d)).await {
                tracing::error!(error = %e, digest = %d, "could not remove a collection's tombstone");
                cleared = Err(e.into());
            }
        }
        deleted.and(cleared)
    }

    /// Phase 1 for one repository, in its critical section; then the caches are told, when
    /// tags or manifests went (or perhaps went: a failure part-way).
    async fn collect_repository(
        &self,
        repository: &str,
        cutoff: SystemTime,
        dry_run: bool,
        report: &mut (dyn FnMut(Garbage) + Send),
        summary: &mut GcSummary,
    ) -> Result<Vec<Digest>> {
        let before = (summary.tags, summary.manifests);
        let collected = {
            let _turn = self.repo_lock(repository).await;
            self.collect_locked(repository, cutoff, dry_run, report, summary)
                .await
        };
        if !dry_run && (collected.is_err() || before != (summary.tags, summary.manifests)) {
            self.changes.publish(repository).await;
        }
        collected
    }

    async fn collect_locked(
        &self,
        repository: &str,
        cutoff: SystemTime,
        dry_run: bool,
        report: &mut (dyn FnMut(Garbage) + Send),
        summary: &mut GcSummary,
    ) -> Result<Vec<Digest>> {
        let mut state = self.repository_state(repository).await?;
        // The cache is bounded by its size and evicted by last pull (see `evict`), not by rules.
        let rule = Some(&self.limits.retention)
            .filter(|_| !trow_proto::cache::is_cached(repository))
            .and_then(|r| r.rule_for(repository));
        // A tag moved by a put whose flush is still to come (it lets the lock go first) or
        // failed is made durable before it decides anything: else a crash could bring back the
        // old tag, naming a manifest this deletes.
        if !dry_run {
            self.backend
                .make_durable(&layout::tags(repository), false)
                .await?;
        }
        let tags = match state.unreadable {
            true => None,
            false => self.tags_in(repository).await?,
        };
        let live = match tags {
            Some(tags) => {
                let removed = rule.map_or_else(Vec::new, |r| {
                    let ages: Vec<TagAge> = tags
                        .iter()
                        .map(|(name, _, moved)| TagAge {
                            name: name.clone(),
                            moved: *moved,
                        })
                        .collect();
                    r.tags_to_remove(&ages)
                });
                let tagged: Vec<Digest> = tags
                    .into_iter()
                    .filter(|(name, _, _)| !removed.contains(name))
                    .map(|(_, d, _)| d)
                    .collect();
                // More roots, never fewer: what the grace period keeps (a push in progress)
                // stays whatever the rule's age.
                let untagged_cutoff = rule
                    .and_then(|r| r.untagged_older_than)
                    .and_then(|age| SystemTime::now().checked_sub(age));
                self.live_in(repository, &mut state, tagged, cutoff, untagged_cutoff)
                    .await?
                    .map(|live| (live, removed))
            }
            None => None,
        };
        let Some((live, removed_tags)) = live else {
            let records = state.records.into_keys();
            return Ok(records
                .chain(state.links.into_iter().map(|(d, _)| d))
                .collect());
        };
        // Tags first: a crash after this leaves manifests untagged, which the next collection
        // finds dead, never a tag naming a deleted manifest.
        let rule_name = rule.map(|r| r.repositories.clone()).unwrap_or_default();
        let untagged = !dry_run && !removed_tags.is_empty();
        for tag in removed_tags {
            if !dry_run {
                self.backend.delete(&layout::tag(repository, &tag)).await?;
                // A scheduled collection lists its items to no one: this is their record.
                tracing::info!(%repository, %tag, rule = %rule_name, "retention rule removed a tag");
            }
            summary.tags += 1;
            report(Garbage::Tag {
                repository: repository.to_string(),
                tag,
                rule: rule_name.clone(),
            });
        }
        // The deletes reach the disk before any record's (no journal orders them).
        if untagged {
            self.backend
                .make_durable(&layout::tags(repository), true)
                .await?;
        }
        // What stays named here: the blobs these records and links name are not garbage.
        let mut kept: Vec<Digest> = state
            .records
            .keys()
            .chain(state.links.iter().map(|(d, _)| d))
            .filter(|d| live.contains(*d))
            .cloned()
            .collect();
        let dead: Vec<(Digest, ManifestMeta)> = state
            .records
            .iter()
            .filter(|(d, _)| !live.contains(*d))
            .map(|(d, (meta, _))| (d.clone(), meta.clone()))
            .collect();
        let dead_links: Vec<Digest> = state
            .links
            .iter()
            .filter(|(d, _)| !live.contains(d))
            .filter_map(|(d, t)| {
                if *t > cutoff {
                    // Uploaded or mounted a moment ago: a push is about to reference it.
                    kept.push(d.clone());
                    return None;
                }
                Some(d.clone())
            })
            .collect();
        if !dry_run {
            // The references learnt are kept (not by a dead record: it goes).
            for d in state.migrated.iter().filter(|d| live.contains(*d)) {
                let json =
                    serde_json::to_vec(&state.records[d].0).expect("serialize manifest meta");
                self.backend
                    .put(&layout::manifest(repository, d), json.into())
                    .await?;
            }
        }
        let marker = layout::gc_marker(repository);
        let deleting = !dry_run && (!dead.is_empty() || !dead_links.is_empty());
        if deleting {
            let since = cutoff
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            self.backend.put(&marker, since.to_string().into()).await?;
        }
        for (d, meta) in parents_first(dead) {
            if !dry_run {
                // The record first: a crash leaves at worst a referrer entry without it, which
                // `drop_dangling_referrers` removes.
                self.backend
                    .delete(&layout::manifest(repository, &d))
                    .await?;
                if let Some(subject) = meta.subject.as_deref().map(Digest::parse).transpose()? {
                    self.backend
                        .delete(&layout::referrer(repository, &subject, &d))
                        .await?;
                }
            }
            summary.manifests += 1;
            report(Garbage::Manifest {
                repository: repository.to_string(),
                digest: d.to_string(),
            });
        }
        for d in dead_links {
            if !dry_run {
                self.backend
                    .delete(&layout::blob_link(repository, &d))
                    .await?;
            }
            summary.links += 1;
            report(Garbage::Link {
                repository: repository.to_string(),
                digest: d.to_string(),
            });
        }
        if !dry_run {
            self.drop_dangling_referrers(repository).await?;
            self.backend.delete(&marker).await?;
        }
        Ok(kept)
    }

    /// Every record and link of a repository, with when each was last written.
    pub(super) async fn repository_state(&self, repository: &str) -> Result<RepositoryState> {
        let mut records = HashMap::new();
        let mut unreadable = false;
        for (d, key) in self.digests_under(&layout::manifests(repository)).await? {
            let Some(t) = self.backend.modified(&key).await? else {
                continue;
            };
            match self.manifest_meta(repository, &d).await {
                Ok(Some(meta)) => {
                    records.insert(d, (meta, t));
                }
                Ok(None) => {}
                // fsck names it; collecting around it could delete what it references.
                Err(StorageError::Io(e)) if e.kind() == std::io::ErrorKind::Other => {
                    tracing::warn!(%repository, digest = %d, error = %e,
                        "unreadable manifest record; collecting nothing in this repository");
                    unreadable = true;
                }
                Err(e) => return Err(e),
            }
        }
        let mut links = Vec::new();
        for (d, key) in self.digests_under(&layout::blob_links(repository)).await? {
            if let Some(t) = self.backend.modified(&key).await? {
                links.push((d, t));
            }
        }
        Ok(RepositoryState {
            records,
            links,
            migrated: Vec::new(),
            unreadable,
        })
    }

    /// A repository's tags: name, the digest it points to, when it was last moved. `None` when
    /// a tag cannot be read: then nothing in the repository is deleted.
    async fn tags_in(&self, repository: &str) -> Result<Option<Vec<(String, Digest, SystemTime)>>> {
        let mut tags = Vec::new();
        for tag in self.backend.list(&layout::tags(repository)).await? {
            let moved = self
                .backend
                .modified(&layout::tag(repository, &tag))
                .await?;
            match (self.resolve_tag(repository, &tag).await, moved) {
                (Ok(Some(d)), Some(moved)) => tags.push((tag, d, moved)),
                (Ok(_), _) => {}
                (Err(_), _) => {
                    tracing::warn!(%repository, %tag, "unreadable tag; collecting nothing in this repository");
                    return Ok(None);
                }
            }
        }
        Ok(Some(tags))
    }

    /// What lives in a repository: the digests of its live manifests and of everything they
    /// reference. The roots are `tagged`, the records written after `cutoff`, and with
    /// `untagged_cutoff` (a retention rule's) the records written after it that are neither
    /// referrers nor referenced by another record: those live by their subject or parent.
    /// `None` when a record's references cannot be read: then nothing in the repository is
    /// deleted.
    async fn live_in(
        &self,
        repository: &str,
        state: &mut RepositoryState,
        tagged: Vec<Digest>,
        cutoff: SystemTime,
        untagged_cutoff: Option<SystemTime>,
    ) -> Result<Option<HashSet<Digest>>> {
        // Records of older versions learn their references once.
        let unknown: Vec<Digest> = state
            .records
            .iter()
            .filter(|(_, (m, _))| m.references.is_none())
            .map(|(d, _)| d.clone())
            .collect();
        for d in unknown {
            let Some(references) = self.read_references(&d, &state.records[&d].0).await? else {
                tracing::warn!(%repository, digest = %d,
                    "cannot read a manifest's references; collecting nothing in this repository");
                return Ok(None);
            };
            let (meta, _) = state.records.get_mut(&d).expect("listed");
            meta.references = Some(references);
            state.migrated.push(d);
        }
        // A cache keeps what it holds, tagged or not (the kubelet pulls by digest), until it
        // is evicted by last pull (see `evict`).
        let cached = trow_proto::cache::is_cached(repository);
        let mut stack = tagged;
        stack.extend(
            state
                .records
                .iter()
                .filter(|(_, (_, t))| cached || *t > cutoff)
                .map(|(d, _)| d.clone()),
        );
        if let Some(untagged_cutoff) = untagged_cutoff {
            let referenced: HashSet<&str> = state
                .records
                .values()
                .flat_map(|(m, _)| m.references.iter().flatten())
                .map(String::as_str)
                .collect();
            stack.extend(
                state
                    .records
                    .iter()
                    .filter(|(d, (m, t))| {
                        *t > untagged_cutoff
                            && m.subject.is_none()
                            && !referenced.contains(d.to_string().as_str())
                    })
                    .map(|(d, _)| d.clone()),
            );
        }
        let mut live = HashSet::new();
        loop {
            while let Some(d) = stack.pop() {
                if !live.insert(d.clone()) {
                    continue;
                }
                if let Some((meta, _)) = state.records.get(&d) {
                    for r in meta.references.iter().flatten() {
                        if let Ok(r) = Digest::parse(r) {
                            stack.push(r);
                        }
                    }
                }
            }
            // A referrer lives as long as its subject.
            for (d, (meta, _)) in &state.records {
                if !live.contains(d)
                    && let Some(subject) = meta.subject.as_deref()
                    && Digest::parse(subject).is_ok_and(|s| live.contains(&s))
                {
                    stack.push(d.clone());
                }
            }
            if stack.is_empty() {
                return Ok(Some(live));
            }
        }
    }

    /// The references of a manifest whose record predates them, from its bytes.
    pub(super) async fn read_references(
        &self,
        d: &Digest,
        meta: &ManifestMeta,
    ) -> Result<Option<Vec<String>>> {
        let Some(content) = self.backend.get(&layout::blob(d)).await? else {
            return Ok(None);
        };
        Ok(manifest::parse(&content, &meta.media_type)
            .ok()
            .map(|p| p.reference_digests()))
    }

    /// Referrer entries whose manifest record is gone (a collection or a delete stopped
    /// between the two). Runs in the repository's critical section, where no manifest put is
    /// between its record and its entry.
    async fn drop_dangling_referrers(&self, repository: &str) -> Result<()> {
        let prefix = format!("{}/_referrers", layout::repository(repository));
        for (subject, _) in self.digests_under(&prefix).await? {
            let dir = layout::referrers(repository, &subject);
            for name in self.backend.list(&dir).await? {
                let Some(d) = layout::dashed_digest(&name).and_then(|s| Digest::parse(&s).ok())
                else {
                    continue;
                };
                if self
                    .backend
                    .size(&layout::manifest(repository, &d))
                    .await?
                    .is_none()
                {
                    self.backend.delete(&format!("{dir}/{name}")).await?;
                }
            }
        }
        Ok(())
    }

    /// Adds the digests a repository's links and manifest records name.
    pub(super) async fn names_of(
        &self,
        repository: &str,
        named: &mut HashSet<Digest>,
    ) -> Result<()> {
        for prefix in [
            layout::manifests(repository),
            layout::blob_links(repository),
        ] {
            for (d, _) in self.digests_under(&prefix).await? {
                named.insert(d);
            }
        }
        Ok(())
    }

    /// `<prefix>/<alg>/<hex>` entries as digests with their keys; others are skipped.
    async fn digests_under(&self, prefix: &str) -> Result<Vec<(Digest, String)>> {
        let mut out = Vec::new();
        for alg in self.backend.list(prefix).await? {
            let dir = format!("{prefix}/{alg}");
            for hex in self.backend.list(&dir).await? {
                if let Ok(d) = Digest::parse(&format!("{alg}:{hex}")) {
                    out.push((d, format!("{dir}/{hex}")));
                }
            }
        }
        Ok(out)
    }

    /// Every stored blob.
    async fn all_blobs(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in self.backend.list("blobs").await? {
            for xx in self.backend.list(&format!("blobs/{alg}")).await? {
                for hex in self.backend.list(&layout::blob_dir(&alg, &xx)).await? {
                    if let Ok(d) = Digest::parse(&format!("{alg}:{hex}")) {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every repository in the catalog index.
    pub(super) async fn catalog(&self) -> Result<Vec<String>> {
        Ok(self
            .backend
            .list(layout::CATALOG)
            .await?
            .iter()
            .map(|e| layout::catalog_name(e))
            .collect())
    }

    /// The writer's half of the rule in the module docs: called after a link or record naming
    /// `d` was written. Waits while a collection holds a tombstone of `d`; then says whether
    /// its bytes are still there.
    pub(super) async fn settle(&self, d: &Digest) -> Result<bool> {
        let (tombstone, blob) = (layout::gc_tombstone(d), layout::blob(d));
        let deadline = Instant::now() + TOMBSTONE_WAIT;
        loop {
            // The tombstone and the bytes in one call (one hand-off to a filesystem's blocking
            // pool); the bytes count only once no tombstone was there.
            let (held, size) = self.backend.modified_and_size(&tombstone, &blob).await?;
            if held.is_none() {
                return Ok(size.is_some());
            }
            if Instant::now() > deadline {
                return Err(StorageError::Io(std::io::Error::other(format!(
                    "a garbage collection held {d} for over {}s",
                    TOMBSTONE_WAIT.as_secs()
                ))));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether a link or record written at `written` should be written again so that a
    /// collection counts it as just used (see the module docs): once per half grace period.
    pub(super) fn needs_refresh(&self, written: SystemTime) -> bool {
        let half = self.limits.gc_grace / 2;
        !half.is_zero() && written.elapsed().is_ok_and(|age| age > half)
    }

    /// Run when the store opens: a collection that stopped (a crash) left tombstones, which
    /// would hold writers up, and perhaps repositories half done, which are finished now.
    pub(super) async fn recover_collection(&self) -> Result<()> {
        for name in self.backend.list(layout::GC_BLOBS).await? {
            self.backend
                .delete(&format!("{}/{name}", layout::GC_BLOBS))
                .await?;
        }
        for entry in self.backend.list(layout::GC_REPOSITORIES).await? {
            let key = format!("{}/{entry}", layout::GC_REPOSITORIES);
            let since = self
                .backend
                .get(&key)
                .await?
                .and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let cutoff = SystemTime::UNIX_EPOCH + Duration::from_secs(since);
            let repository = layout::catalog_name(&entry);
            tracing::info!(%repository, "finishing a garbage collection a crash interrupted");
            let mut summary = GcSummary::default();
            self.collect_repository(&repository, cutoff, false, &mut |_| {}, &mut summary)
                .await?;
            self.backend.delete(&key).await?;
        }
        Ok(())
    }
}
