//! Fills: blobs of upstream registries cached while clients read them.
//!
//! A fill is an upload with two extras: it is found by `repository@digest` rather than by id, so
//! every proxy replica that wants the blob finds the one fill in progress, and its bytes can be
//! read while they arrive. The first caller of [`Store::begin_fill`] fetches; all callers read
//! through [`Store::read_fill`], which follows the upload's progress and, once it completes,
//! the committed blob. The digest is verified on completion as for any push, so readers of a
//! fill whose bytes were wrong get an error and nothing is stored.
//!
//! A fill that makes no progress for [`Limits::fill_timeout`] is stalled (its filler died or its
//! upstream hung): readers waiting on it fail, so that their proxy asks again, and the next
//! `begin_fill` preempts the stalled append and hands the fill, with the bytes already stored,
//! to the new caller.
//!
//! A fill failed, and its bytes are deleted at once, when its digest does not match, when its
//! filler cancels it (the upstream announced too much, or ended short of what it announced), or
//! when more bytes come than were announced. A fill whose filler stopped appending (its
//! upstream broke off, its proxy died) stays for a take-over; once it has not moved for twice
//! the fill timeout (readers find it stalled after one, and the next of them takes it over)
//! with no append running, nobody will: [`Store::drop_failed_fills`] deletes it. A fill whose
//! append is still running (a slow upstream) is only stalled, never dropped.

use std::time::{Duration, Instant};

use super::blobs::range_end;
use super::*;

/// What a caller of [`Store::begin_fill`] is to do.
#[derive(Debug, PartialEq, Eq)]
pub enum FillRole {
    /// The blob is stored and linked: read it.
    Present,
    /// Fetch the blob from the upstream, from `offset` on, and append it to upload `upload_id`.
    Filler { upload_id: String, offset: u64 },
    /// Another caller fetches it: read it with [`Store::read_fill`].
    Follower,
}

fn fill_key(repository: &str, d: &Digest) -> String {
    format!("{repository}@{d}")
}

impl<B: Backend> Store<B> {
    /// Joins or starts the fill of a blob of a cached repository (see the module docs).
    pub async fn begin_fill(&self, repository: &str, digest: &str) -> Result<FillRole> {
        validate_repository(repository)?;
        if !trow_proto::cache::is_cached(repository) {
            return Err(StorageError::Denied(format!(
                "{repository} is not a cached repository"
            )));
        }
        let d = Digest::parse(digest)?;
        if self.linked_blob_size(repository, &d).await?.is_some() {
            return Ok(FillRole::Present);
        }
        let key = fill_key(repository, &d);
        let existing = self.fills.lock().expect("fills lock").get(&key).cloned();
        if let Some((id, upload)) = existing {
            if upload.progress.borrow().at.elapsed() < self.limits.fill_timeout {
                return Ok(FillRole::Follower);
            }
            return Ok(self.take_over(id, &upload).await);
        }
        let (id, upload) = {
            let mut fills = self.fills.lock().expect("fills lock");
            if fills.contains_key(&key) {
                // Another caller started it between the two looks.
                return Ok(FillRole::Follower);
            }
            let (id, upload) = self.reserve_upload(repository, d.algorithm, Some(key.clone()))?;
            fills.insert(key, (id.clone(), upload.clone()));
            (id, upload)
        };
        // Not cataloged yet: a fill that fails leaves no repository behind (completing it links
        // the blob, which catalogs the repository).
        self.write_upload(&id, &upload).await?;
        Ok(FillRole::Filler {
            upload_id: id,
            offset: 0,
        })
    }

    /// Hands a stalled fill to a new filler: the append in progress, if any, is stopped (keeping
    /// its bytes) and the fill counts as moving again, so others follow the new filler.
    async fn take_over(&self, id: String, upload: &Upload) -> FillRole {
        upload.takeovers.send_modify(|n| *n += 1);
        let stopped = tokio::time::timeout(self.limits.fill_timeout, upload.hasher.lock()).await;
        if stopped.is_err() || upload.closed.load(Ordering::Acquire) {
            // The old append will not let go, or the fill just ended: follow what comes of it.
            return FillRole::Follower;
        }
        drop(stopped);
        upload.progress.send_modify(|p| p.at = Instant::now());
        tracing::info!(upload = %id, "a stalled fill was taken over");
        FillRole::Filler {
            offset: upload.size.load(Ordering::Acquire),
            upload_id: id,
        }
    }

    /// Deletes the fills nobody took over (see the module docs); returns how many went.
    pub async fn drop_failed_fills(&self) -> Result<usize> {
        let grace = self.limits.fill_timeout * 2;
        let fills: Vec<(String, SharedUpload)> = self
            .fills
            .lock()
            .expect("fills lock")
            .values()
            .cloned()
            .collect();
        let mut dropped = 0;
        for (id, upload) in fills {
            if upload.progress.borrow().at.elapsed() < grace {
                continue;
            }
            // An append in progress holds the digest state: its filler is alive.
            let Ok(idle) = upload.hasher.try_lock() else {
                continue;
            };
            // A take-over moves the fill while holding that lock: look again.
            if upload.progress.borrow().at.elapsed() < grace {
                continue;
            }
            let Some(_closing) = self.close(&id, &upload) else {
                continue;
            };
            drop(idle);
            tracing::info!(upload = %id, size = upload.size.load(Ordering::Acquire),
                "removing a fill that stopped and was not taken over");
            self.discard(&id).await?;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Records the whole size of a fill's blob, which its readers announce to their clients.
    pub fn announce_fill_size(&self, repository: &str, id: &str, size: u64) -> Result<()> {
        let upload = self.upload(repository, id)?;
        if upload.fill.is_none() {
            return Err(StorageError::UploadInvalid(
                "only a fill has an announced size".into(),
            ));
        }
        upload.progress.send_modify(|p| p.total = Some(size));
        Ok(())
    }

    /// A blob of `repository`, stored or being filled: its whole size, and `length` bytes (0:
    /// to the end) from `offset`, streamed as they arrive.
    pub async fn read_fill(
        self: &Arc<Self>,
        repository: &str,
        digest: &str,
        offset: u64,
        length: u64,
    ) -> Result<(u64, FillStream)> {
        validate_repository(repository)?;
        let d = Digest::parse(digest)?;
        let key = fill_key(repository, &d);
        self.note_pull(repository, &d);
        let fill = self.fills.lock().expect("fills lock").get(&key).cloned();
        let Some((id, upload)) = fill else {
            return self.read_stored(repository, digest, offset, length).await;
        };
        let mut progress = upload.progress.subscribe();
        let timeout = self.limits.fill_timeout;
        let size = loop {
            let p = *progress.borrow_and_update();
            match (p.phase, p.total) {
                (Phase::Done, _) => {
                    return self.read_stored(repository, digest, offset, length).await;
                }
                (Phase::Failed, _) => return Err(StorageError::FillFailed(digest.to_string())),
                (Phase::Open, Some(total)) => break total,
                (Phase::Open, None) => wait_for_progress(&mut progress, timeout, digest).await?,
            }
        };
        let end = range_end(size, offset, length)?;
        let reader = FillReader {
            store: self.clone(),
            upload,
            progress,
            data_key: layout::upload_data(&id),
            blob_key: layout::blob(&d),
            digest: digest.to_string(),
            pos: offset,
            end,
            current: None,
            timeout,
            verified: false,
        };
        // Never evicted under a reader that follows the fill to its end (see `evict`).
        let guard = self.read_guard(repository, &d);
        let stream = futures::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Some(Ok(chunk)) => Some((Ok(chunk), Some(reader))),
                Some(Err(e)) => Some((Err(e), None)),
                None => None,
            }
        })
        .map(move |chunk| {
            let _held = &guard;
            chunk
        });
        Ok((size, Box::pin(stream)))
    }

    async fn read_stored(
        &self,
        repository: &str,
        digest: &str,
        offset: u64,
        length: u64,
    ) -> Result<(u64, FillStream)> {
        let size = self.stat_blob(repository, digest).await?;
        let stream = self.read_blob(repository, digest, offset, length).await?;
        Ok((
            size,
            Box::pin(stream.map(|c| c.map_err(StorageError::from))),
        ))
    }
}

/// A fill's bytes as they arrive.
pub type FillStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Waits for a fill to move; a fill that stays still for `timeout` is stalled.
async fn wait_for_progress(
    progress: &mut watch::Receiver<Progress>,
    timeout: Duration,
    digest: &str,
) -> Result<()> {
    match tokio::time::timeout(timeout, progress.changed()).await {
        Ok(_) => Ok(()),
        Err(_) => Err(StorageError::FillStalled(digest.to_string())),
    }
}

/// Follows one fill: reads the scratch bytes up to what was written, waits for more, and reads
/// the committed blob once the fill completed (the scratch file is renamed into place then).
struct FillReader<B> {
    store: Arc<Store<B>>,
    upload: SharedUpload,
    progress: watch::Receiver<Progress>,
    data_key: String,
    blob_key: String,
    digest: String,
    pos: u64,
    end: u64,
    current: Option<ByteStream>,
    timeout: Duration,
    /// Reading the committed blob, whose digest was verified.
    verified: bool,
}

impl<B: Backend> FillReader<B> {
    /// Waits until the fill completed (its digest matched) or failed.
    async fn wait_for_verdict(&mut self) -> Result<()> {
        loop {
            match self.progress.borrow_and_update().phase {
                Phase::Done => return Ok(()),
                Phase::Failed => return Err(StorageError::FillFailed(self.digest.clone())),
                Phase::Open => {}
            }
            wait_for_progress(&mut self.progress, self.timeout, &self.digest).await?;
        }
    }

    /// Hands out a chunk read at `pos`, cut at the end of the read. The last bytes go out only
    /// once the digest held: a client never receives all of a blob whose bytes were wrong.
    async fn hand_out(&mut self, chunk: Bytes) -> Result<Bytes> {
        let take = chunk.len().min((self.end - self.pos) as usize);
        self.pos += take as u64;
        if self.pos == self.end && !self.verified {
            self.wait_for_verdict().await?;
        }
        Ok(chunk.slice(..take))
    }

    async fn next(&mut self) -> Option<Result<Bytes>> {
        loop {
            if self.pos >= self.end {
                return None;
            }
            if let Some(stream) = &mut self.current {
                match stream.next().await {
                    Some(Ok(chunk)) => return Some(self.hand_out(chunk).await),
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => {
                        self.current = None;
                        continue;
                    }
                }
            }
            let p = *self.progress.borrow_and_update();
            let backend = &self.store.backend;
            let opened = match p.phase {
                Phase::Done => {
                    self.verified = true;
                    backend
                        .read(&self.blob_key, self.pos, self.end - self.pos)
                        .await
                }
                Phase::Failed => return Some(Err(StorageError::FillFailed(self.digest.clone()))),
                Phase::Open if self.pos < p.written.min(self.end) => {
                    if let Some(chunk) = self.upload.recent_at(self.pos, p.written.min(self.end)) {
                        return Some(self.hand_out(chunk).await);
                    }
                    let n = p.written.min(self.end) - self.pos;
                    backend.read(&self.data_key, self.pos, n).await
                }
                Phase::Open => {
                    let waited =
                        wait_for_progress(&mut self.progress, self.timeout, &self.digest).await;
                    if let Err(e) = waited {
                        return Some(Err(e));
                    }
                    continue;
                }
            };
            match opened {
                Ok(stream) => self.current = Some(stream),
                // Completed between the look and the open: the bytes moved to the blob, and the
                // progress says so next.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && p.phase == Phase::Open => {
                    if let Err(e) =
                        wait_for_progress(&mut self.progress, self.timeout, &self.digest).await
                    {
                        return Some(Err(e));
                    }
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}
