//! Uploads: scratch bytes hashed as they arrive, verified and committed atomically.
//!
//! An upload's life: `start` writes its scratch file and then its record (the record makes it
//! live); appends add to the scratch file, one at a time; `complete` or `cancel` close it in
//! memory, delete the record (from then on not even a restart can revive the id), then commit or
//! delete the bytes. Appends never create the scratch file, so a late append cannot resurrect it.

use super::*;

/// Every this many bytes appended, the backend is asked to start writing them back
/// ([`Backend::write_behind`]): the commit then flushes at most about this much.
const WRITE_BEHIND: u64 = 8 << 20;

/// Chunks of at least this many bytes are hashed on another thread while they are written
/// (see `write_chunk`).
const PARALLEL_HASH: usize = 64 << 10;

/// Blobs up to this size are committed in one batch with their link, in the repository's
/// critical section; a larger blob's flush would hold the repository's other writers (its
/// other layers completing) for longer than a second round of flushes costs, so it is committed
/// alone first.
const BATCHED_COMMIT_MAX: u64 = 4 << 20;

impl<B: Backend> Store<B> {
    /// Opens an upload session; returns its id.
    pub async fn start_upload(&self, repository: &str, algorithm: &str) -> Result<String> {
        validate_repository(repository)?;
        let algorithm = Algorithm::parse(algorithm)?;
        self.check_room_for_push(repository).await?;
        let (id, upload) = self.reserve_upload(repository, algorithm, None)?;
        self.write_upload(&id, &upload).await?;
        Ok(id)
    }

    /// Makes a new upload live in memory (counted against the limit): the first half of a start.
    pub(super) fn reserve_upload(
        &self,
        repository: &str,
        algorithm: Algorithm,
        fill: Option<String>,
    ) -> Result<(String, SharedUpload)> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let upload = Arc::new(Upload::with_fill(
            repository.to_string(),
            algorithm,
            0,
            Some(Hasher::new(algorithm)),
            fill,
        ));
        // Reserve the slot first, so concurrent starts cannot overshoot the limit.
        let mut uploads = self.uploads.lock().expect("uploads lock");
        if uploads.len() >= self.limits.max_uploads {
            return Err(StorageError::TooManyUploads(self.limits.max_uploads));
        }
        uploads.insert(id.clone(), upload.clone());
        Ok((id, upload))
    }

    /// Writes a reserved upload's scratch file, then its record (which makes it survive a
    /// restart): the second half of a start. On failure the upload is gone.
    pub(super) async fn write_upload(&self, id: &str, upload: &Upload) -> Result<()> {
        let record = UploadRecord {
            repository: upload.repository.clone(),
            algorithm: upload.algorithm.name().to_string(),
            fill: upload.fill.is_some(),
        };
        let json = serde_json::to_vec(&record).expect("serialize upload record");
        // Not flushed: the bytes appended to an upload are made durable only by its commit, so
        // after a power loss an upload is lost (its bytes may be) whether or not its record
        // survived; a kill leaves both, and a restart drops a directory without both.
        let written = async {
            self.backend
                .put_unsynced(&layout::upload_data(id), Bytes::new())
                .await?;
            self.backend
                .put_unsynced(&layout::upload_repository(id), json.into())
                .await
        }
        .await;
        if let Err(e) = written {
            self.forget_upload(id);
            let _ = self.backend.delete_all(&layout::upload_dir(id)).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// A live upload of `repository`.
    pub(super) fn upload(&self, repository: &str, id: &str) -> Result<SharedUpload> {
        validate_repository(repository)?;
        let unknown = || StorageError::UploadUnknown(id.to_string());
        let upload = self
            .uploads
            .lock()
            .expect("uploads lock")
            .get(id)
            .cloned()
            .ok_or_else(unknown)?;
        if upload.repository != repository || upload.closed.load(Ordering::Acquire) {
            return Err(unknown());
        }
        Ok(upload)
    }

    /// The upload's digest state, rebuilt from its scratch bytes on first use after a restart.
    async fn loaded_hasher(&self, id: &str, upload: &Upload) -> Result<HasherGuard> {
        let mut hasher = upload
            .hasher
            .clone()
            .try_lock_owned()
            .map_err(|_| StorageError::UploadBusy(id.to_string()))?;
        if upload.closed.load(Ordering::Acquire) {
            return Err(StorageError::UploadUnknown(id.to_string()));
        }
        if hasher.is_none() {
            let (h, size) = self
                .hash_object(&layout::upload_data(id), upload.algorithm)
                .await?;
            upload.size.store(size, Ordering::Release);
            *hasher = Some(h);
        }
        Ok(hasher)
    }

    /// Hashes a stored object from its bytes.
    async fn hash_object(&self, key: &str, algorithm: Algorithm) -> Result<(Hasher, u64)> {
        let mut hasher = Hasher::new(algorithm);
        let mut size = 0;
        let mut stream = self.backend.read(key, 0, 0).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok((hasher, size))
    }

    /// Drops an upload from the live set (and from the fills); readers of a fill that did not
    /// complete learn that it failed.
    fn forget_upload(&self, id: &str) {
        let Some(upload) = self.uploads.lock().expect("uploads lock").remove(id) else {
            return;
        };
        upload.finish(Phase::Failed);
        if let Some(key) = &upload.fill {
            let mut fills = self.fills.lock().expect("fills lock");
            if fills.get(key).is_some_and(|(fill_id, _)| fill_id == id) {
                fills.remove(key);
            }
        }
    }

    /// Closes an upload for good: no request finds it any more. It stays in the live set (so
    /// the janitor leaves its files alone) until the returned guard, held while its bytes are
    /// committed or deleted, drops. None if it was already closed.
    pub(super) fn close<'a>(&'a self, id: &'a str, upload: &Upload) -> Option<impl Drop + 'a> {
        if upload.closed.swap(true, Ordering::AcqRel) {
            return None;
        }
        upload.cancel.cancel();
        Some(scopeguard(move || self.forget_upload(id)))
    }

    /// Drops a closed upload's bytes: the record first, so a crash in between leaves an orphan
    /// the janitor removes rather than an upload that comes back.
    pub(super) async fn discard(&self, id: &str) -> Result<()> {
        self.backend.delete(&layout::upload_repository(id)).await?;
        Ok(self.backend.delete_all(&layout::upload_dir(id)).await?)
    }

    /// Appends a stream of bytes to an upload, hashing them on the way. `offset`, when given,
    /// must equal the upload's current size. Returns the new size.
    ///
    /// A stream that fails (the client went away or stalled) keeps what arrived before: the upload
    /// stays resumable at its new size. A failed write here (a full disk) cancels the upload, so
    /// its scratch bytes are freed at once; so do bytes past a fill's announced size (its upstream
    /// sent more than it said: the fill can only be wrong).
    #[tracing::instrument(level = "debug", name = "storage.blob.write", skip(self, data))]
    pub async fn append_upload<S>(
        &self,
        repository: &str,
        id: &str,
        offset: Option<u64>,
        data: S,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Send,
    {
        let upload = self.upload(repository, id)?;
        self.check_room_for_push(repository).await?;
        let guard = self.loaded_hasher(id, &upload).await?;
        let start = upload.size.load(Ordering::Acquire);
        if let Some(offset) = offset
            && offset != start
        {
            return Err(StorageError::UploadOffset {
                size: start,
                offset,
            });
        }
        let mut takeovers = upload.takeovers.subscribe();
        takeovers.mark_unchanged();
        let announced = || upload.fill.as_ref().and(upload.progress.borrow().total);
        let file = match self.backend.append(&layout::upload_data(id)).await {
            Ok(file) => file,
            Err(e) => return self.append_failed(id, &upload, Some(guard), e).await,
        };
        let mut data = std::pin::pin!(data);
        // The digest state and the file: here between chunks, or with the chunk being written.
        let mut idle = Some((guard, file));
        let mut writing: Option<ChunkWrite<B::Appender>> = None;
        // Bytes handed to writes so far (`upload.size` counts those that finished).
        let mut queued = start;
        let mut overflowed = false;
        let mut ended = Ok(());
        loop {
            let chunk = tokio::select! {
                c = data.next() => c,
                _ = upload.cancel.cancelled() => {
                    ended = Err(StorageError::UploadUnknown(id.to_string()));
                    break;
                }
                // Another filler took this fill over: stop, keeping what was written.
                _ = takeovers.changed() => {
                    ended = Err(StorageError::UploadBusy(id.to_string()));
                    break;
                }
            };
            let chunk = match chunk {
                None => break,
                Some(Err(e)) => {
                    ended = Err(e);
                    break;
                }
                Some(Ok(chunk)) => chunk,
            };
            if let Some(total) = announced()
                && queued + chunk.len() as u64 > total
            {
                overflowed = true;
                ended = Err(StorageError::UploadInvalid(format!(
                    "more bytes than the {total} announced for the fill"
                )));
                break;
            }
            // The previous chunk was written and hashed while this one arrived; this one goes
            // once that is done (the digest takes the chunks in order).
            if let Some(w) = writing.take() {
                match self.written(w).await {
                    Ok(done) => idle = Some(done),
                    Err((guard, e)) => return self.append_failed(id, &upload, guard, e).await,
                }
            }
            let (guard, file) = idle.take().expect("no write in progress");
            queued += chunk.len() as u64;
            writing = Some(write_chunk(upload.clone(), guard, file, chunk));
        }
        if let Some(w) = writing.take() {
            match self.written(w).await {
                Ok(done) => idle = Some(done),
                Err((guard, e)) => return self.append_failed(id, &upload, guard, e).await,
            }
        }
        let (guard, _file) = idle.take().expect("no write in progress");
        if overflowed {
            drop(guard);
            if let Some(_closing) = self.close(id, &upload) {
                self.discard(id).await?;
            }
        }
        ended.map(|()| upload.size.load(Ordering::Acquire))
    }

    /// Waits for a chunk's write; starts writing the file back at every [`WRITE_BEHIND`]
    /// bytes. Gives the digest state and the file back, or what is left of them on failure.
    async fn written(
        &self,
        w: ChunkWrite<B::Appender>,
    ) -> std::result::Result<(HasherGuard, B::Appender), (Option<HasherGuard>, std::io::Error)>
    {
        let w = match w.await {
            Ok(Ok(w)) => w,
            Ok(Err(failed)) => return Err(failed),
            // The write panicked: its digest state is gone with it.
            Err(e) => return Err((None, std::io::Error::other(e))),
        };
        if w.before / WRITE_BEHIND != w.after / WRITE_BEHIND {
            self.backend.write_behind(&w.file).await;
        }
        Ok((w.guard, w.file))
    }

    /// A write failed: the bytes on disk may now differ from what was hashed, and the disk may
    /// be full, so the upload is over and its space is given back now.
    async fn append_failed(
        &self,
        id: &str,
        upload: &Upload,
        guard: Option<HasherGuard>,
        e: std::io::Error,
    ) -> Result<u64> {
        drop(guard);
        if let Some(_closing) = self.close(id, upload) {
            let _ = self.discard(id).await;
        }
        Err(e.into())
    }

    /// How many bytes an upload holds. Never waits for an append in progress.
    pub async fn upload_status(&self, repository: &str, id: &str) -> Result<u64> {
        Ok(self.upload(repository, id)?.size.load(Ordering::Acquire))
    }

    /// Verifies the upload's digest, makes the blob durable and visible, links it into the
    /// repository. A wrong or malformed digest discards the upload and stores nothing.
    #[tracing::instrument(level = "debug", name = "storage.blob.commit", skip(self))]
    pub async fn complete_upload(&self, repository: &str, id: &str, digest: &str) -> Result<u64> {
        let upload = self.upload(repository, id)?;
        let guard = self.loaded_hasher(id, &upload).await?;
        let hasher = guard.as_ref().expect("loaded").clone();
        let size = upload.size.load(Ordering::Acquire);
        let Some(_closing) = self.close(id, &upload) else {
            return Err(StorageError::UploadUnknown(id.to_string()));
        };
        drop(guard);
        let data = layout::upload_data(id);
        let verified = async {
            let claimed = Digest::parse(digest)?;
            let computed = if hasher.algorithm() == claimed.algorithm {
                hasher.finish()
            } else {
                self.hash_object(&data, claimed.algorithm).await?.0.finish()
            };
            if computed != claimed {
                return Err(StorageError::DigestInvalid(format!(
                    "upload digest is {computed}, not {claimed}"
                )));
            }
            Ok(claimed)
        }
        .await;
        let claimed = match verified {
            Ok(d) => d,
            Err(e) => {
                self.discard(id).await?;
                return Err(e);
            }
        };
        self.backend.delete(&layout::upload_repository(id)).await?;
        // Not over bytes a garbage collection is deciding on (see `gc`): it might delete them.
        self.settle(&claimed).await?;
        // Even over an existing blob: the rename is atomic, and it repairs a damaged copy. A
        // small blob goes in one batch with its link (bytes first).
        let commit = Put::Moved {
            from: data,
            to: layout::blob(&claimed),
        };
        let linked = if size <= BATCHED_COMMIT_MAX {
            self.store_and_link_blob(repository, &claimed, Some(commit))
                .await
        } else {
            match self.backend.put_all(vec![commit]).await {
                Ok(()) => self.link_blob(repository, &claimed).await,
                Err(e) => Err(e.into()),
            }
        };
        if let Err(e) = linked {
            upload.finish(Phase::Failed);
            return Err(match e {
                StorageError::BlobUnknown(_) => StorageError::UploadInvalid(
                    "the blob was collected as garbage while the upload completed; upload it again"
                        .into(),
                ),
                e => e,
            });
        }
        upload.finish(Phase::Done);
        self.backend.delete_all(&layout::upload_dir(id)).await?;
        if upload.fill.is_some() {
            self.cached_bytes_added(size);
        }
        self.check_space_after_write().await;
        Ok(size)
    }

    /// Drops an upload and its bytes, stopping an append in progress.
    pub async fn cancel_upload(&self, repository: &str, id: &str) -> Result<()> {
        let upload = self.upload(repository, id)?;
        let Some(_closing) = self.close(id, &upload) else {
            return Err(StorageError::UploadUnknown(id.to_string()));
        };
        // Wait for a stopped append to let go of the scratch file.
        let _ = upload.hasher.lock().await;
        self.discard(id).await
    }

    /// Deletes uploads nobody has written to for `max_age` (abandoned pushes), and any upload
    /// directory that is not a live upload (crash leftovers), so scratch bytes don't fill the
    /// disk. Returns how many went.
    pub async fn purge_uploads(&self, max_age: std::time::Duration) -> Result<usize> {
        let Some(cutoff) = std::time::SystemTime::now().checked_sub(max_age) else {
            return Ok(0);
        };
        let mut purged = 0;
        for id in self.backend.list(layout::UPLOADS).await? {
            let live = self.uploads.lock().expect("uploads lock").get(&id).cloned();
            let Some(upload) = live else {
                // Not live: a crash cut its start or its end.
                self.discard(&id).await?;
                purged += 1;
                continue;
            };
            // An append in progress holds the digest state: that upload is alive.
            let Ok(_idle) = upload.hasher.try_lock() else {
                continue;
            };
            let data = self.backend.modified(&layout::upload_data(&id)).await?;
            let record = self
                .backend
                .modified(&layout::upload_repository(&id))
                .await?;
            if data.max(record).is_none_or(|t| t < cutoff)
                && let Some(_closing) = self.close(&id, &upload)
            {
                self.discard(&id).await?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Loads the uploads a previous run left in progress, so they can be resumed; removes upload
    /// directories a crash left incomplete.
    pub(super) async fn load_uploads(&self) -> Result<()> {
        for id in self.backend.list(layout::UPLOADS).await? {
            let record = self.backend.get(&layout::upload_repository(&id)).await?;
            let size = self.backend.size(&layout::upload_data(&id)).await?;
            let parsed = record
                .as_deref()
                .and_then(|r| serde_json::from_slice::<UploadRecord>(r).ok())
                .and_then(|r| Some((Algorithm::parse(&r.algorithm).ok()?, r.repository)));
            let fill = record
                .as_deref()
                .and_then(|r| serde_json::from_slice::<UploadRecord>(r).ok())
                .is_some_and(|r| r.fill);
            match (validate_upload_id(&id), parsed, size) {
                // A fill's filler and readers were in the process that stopped: the next
                // reader starts a new fill.
                _ if fill => {
                    tracing::info!(upload = %id, "removing a fill the last run left unfinished");
                    self.discard(&id).await?;
                }
                (Ok(()), Some((algorithm, repository)), Some(size)) => {
                    let upload = Upload::new(repository, algorithm, size, None);
                    self.uploads
                        .lock()
                        .expect("uploads lock")
                        .insert(id, Arc::new(upload));
                }
                _ => {
                    tracing::info!(upload = %id, "removing an incomplete upload left by a crash");
                    self.discard(&id).await?;
                }
            }
        }
        Ok(())
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}

/// The digest state of an upload, held by its one append or completion.
type HasherGuard = tokio::sync::OwnedMutexGuard<Option<Hasher>>;

/// A chunk being written and hashed on the blocking pool.
type ChunkWrite<A> =
    tokio::task::JoinHandle<std::result::Result<Written<A>, (Option<HasherGuard>, std::io::Error)>>;

/// What a chunk's write gives back: the digest state, the file, and the upload's size before
/// and after the chunk.
struct Written<A> {
    guard: HasherGuard,
    file: A,
    before: u64,
    after: u64,
}

/// Writes a chunk and hashes it on the blocking pool, where the bytes go from the chunk to the
/// file with no copy in between, and the digest is computed off the runtime's threads while the
/// next chunk arrives. A chunk of [`PARALLEL_HASH`] bytes or more is hashed by a second
/// blocking task while the first writes it (hashing and writing each take about as long as the
/// other; in series they capped a push at about half the disk's rate); a smaller one is hashed
/// after its write in the same task, as a second hand-off would cost more than it saves. The
/// upload's size and its readers' progress move only once both are done, and the write owns
/// the digest state until then: if the append is dropped meanwhile (its client went away), the
/// write still finishes with the file, the digest and the size in step, and only then can
/// another append or the completion start.
fn write_chunk<A: std::io::Write + Send + 'static>(
    upload: SharedUpload,
    mut guard: HasherGuard,
    mut file: A,
    chunk: Bytes,
) -> ChunkWrite<A> {
    if chunk.len() < PARALLEL_HASH {
        return tokio::task::spawn_blocking(move || {
            if let Err(e) = file.write_all(&chunk) {
                return Err((Some(guard), e));
            }
            guard.as_mut().expect("loaded").update(&chunk);
            Ok(advance(&upload, guard, file, &chunk))
        });
    }
    let bytes = chunk.clone();
    let write = tokio::task::spawn_blocking(move || file.write_all(&bytes).map(|()| file));
    let hash = tokio::task::spawn_blocking(move || {
        guard.as_mut().expect("loaded").update(&chunk);
        (guard, chunk)
    });
    // Two tasks side by side, neither waiting on the other's thread: a blocking thread that
    // waited for a hash could, with every thread of the pool doing the same, wait forever.
    tokio::spawn(async move {
        let (written, hashed) = tokio::join!(write, hash);
        let Ok((guard, chunk)) = hashed else {
            // The hash panicked: the digest state went with it.
            return Err((None, std::io::Error::other("hashing a chunk panicked")));
        };
        match written {
            Ok(Ok(file)) => Ok(advance(&upload, guard, file, &chunk)),
            Ok(Err(e)) => Err((Some(guard), e)),
            Err(panicked) => Err((Some(guard), std::io::Error::other(panicked))),
        }
    })
}

/// A chunk is in the file and in the digest: the upload's size and its readers move past it.
fn advance<A>(upload: &Upload, guard: HasherGuard, file: A, chunk: &Bytes) -> Written<A> {
    let len = chunk.len() as u64;
    let before = upload.size.fetch_add(len, Ordering::AcqRel);
    upload.keep_recent(before, chunk);
    // Every byte up to here is in the file: readers of a fill may read it.
    upload.progress.send_modify(|p| {
        p.written = before + len;
        p.at = std::time::Instant::now();
    });
    Written {
        guard,
        file,
        before,
        after: before + len,
    }
}
