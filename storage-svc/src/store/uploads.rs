//! Uploads: scratch bytes hashed as they arrive, verified and committed atomically.

use super::*;

impl<B: Backend> Store<B> {
    /// Opens an upload session; returns its id.
    pub async fn start_upload(&self, repository: &str, algorithm: &str) -> Result<String> {
        validate_repository(repository)?;
        let algorithm = Algorithm::parse(algorithm)?;
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let record = UploadRecord {
            repository: repository.to_string(),
            algorithm: algorithm.name().to_string(),
        };
        let json = serde_json::to_vec(&record).expect("serialize upload record");
        self.backend
            .put(&layout::upload_repository(&id), json.into())
            .await?;
        // Create the scratch file now so an empty upload has data to complete.
        let mut f = self.backend.append(&layout::upload_data(&id)).await?;
        f.flush().await?;
        let upload = Upload::new(repository.to_string(), Hasher::new(algorithm), 0);
        self.uploads
            .lock()
            .expect("uploads lock")
            .insert(id.clone(), upload);
        Ok(id)
    }

    /// The live state of an upload of `repository`, rebuilt from the scratch bytes when the
    /// service restarted since the upload began.
    async fn upload(&self, repository: &str, id: &str) -> Result<SharedUpload> {
        validate_repository(repository)?;
        validate_upload_id(id)?;
        let unknown = || StorageError::UploadUnknown(id.to_string());
        let cached = self.uploads.lock().expect("uploads lock").get(id).cloned();
        let shared = match cached {
            Some(s) => s,
            None => {
                let record = self
                    .backend
                    .get(&layout::upload_repository(id))
                    .await?
                    .ok_or_else(unknown)?;
                let record: UploadRecord =
                    serde_json::from_slice(&record).map_err(|_| unknown())?;
                let algorithm = Algorithm::parse(&record.algorithm)?;
                // Missing scratch bytes: a crash between writing the record and the data file.
                let (hasher, size) = self
                    .hash_object(&layout::upload_data(id), algorithm)
                    .await
                    .map_err(|e| match e {
                        StorageError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                            unknown()
                        }
                        other => other,
                    })?;
                let upload = Upload::new(record.repository, hasher, size);
                let mut map = self.uploads.lock().expect("uploads lock");
                map.entry(id.to_string()).or_insert(upload).clone()
            }
        };
        if shared.repository != repository {
            return Err(unknown());
        }
        Ok(shared)
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

    fn forget_upload(&self, id: &str) {
        self.uploads.lock().expect("uploads lock").remove(id);
    }

    /// Appends a stream of bytes to an upload, hashing them on the way. `offset`, when given,
    /// must equal the upload's current size. Returns the new size.
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
        let shared = self.upload(repository, id).await?;
        let mut state = shared.state.lock().await;
        if state.finished {
            return Err(StorageError::UploadUnknown(id.to_string()));
        }
        if let Some(offset) = offset
            && offset != state.size
        {
            return Err(StorageError::UploadOffset {
                size: state.size,
                offset,
            });
        }
        let mut file = self.backend.append(&layout::upload_data(id)).await?;
        let mut data = std::pin::pin!(data);
        let mut outcome = Ok(());
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            if let Err(e) = file.write_all(&chunk).await {
                outcome = Err(e.into());
                break;
            }
            state.hasher.update(&chunk);
            state.size += chunk.len() as u64;
        }
        if let Err(e) = file.flush().await
            && outcome.is_ok()
        {
            outcome = Err(e.into());
        }
        match outcome {
            Ok(()) => Ok(state.size),
            Err(e) => {
                // A failed write may have left bytes the hasher did not see: the next request
                // rebuilds the state from the bytes on disk.
                state.finished = true;
                drop(state);
                self.forget_upload(id);
                Err(e)
            }
        }
    }

    /// How many bytes an upload holds.
    pub async fn upload_status(&self, repository: &str, id: &str) -> Result<u64> {
        let shared = self.upload(repository, id).await?;
        let state = shared.state.lock().await;
        if state.finished {
            return Err(StorageError::UploadUnknown(id.to_string()));
        }
        Ok(state.size)
    }

    /// Verifies the upload's digest, makes the blob durable and visible, links it into the
    /// repository. A wrong digest discards the upload and stores nothing.
    pub async fn complete_upload(&self, repository: &str, id: &str, digest: &str) -> Result<u64> {
        let claimed = Digest::parse(digest)?;
        let shared = self.upload(repository, id).await?;
        let mut state = shared.state.lock().await;
        if state.finished {
            return Err(StorageError::UploadUnknown(id.to_string()));
        }
        state.finished = true;
        let data = layout::upload_data(id);
        let computed = if state.hasher.algorithm() == claimed.algorithm {
            state.hasher.clone().finish()
        } else {
            self.hash_object(&data, claimed.algorithm).await?.0.finish()
        };
        let size = state.size;
        drop(state);
        self.forget_upload(id);

        if computed != claimed {
            self.backend.delete_all(&layout::upload_dir(id)).await?;
            return Err(StorageError::DigestInvalid(format!(
                "upload digest is {computed}, not {claimed}"
            )));
        }
        let blob = layout::blob(&claimed);
        if self.backend.size(&blob).await? == Some(size) {
            // Content-addressed: the same bytes are already durable.
        } else {
            self.backend.commit(&data, &blob).await?;
        }
        self.link_blob(repository, &claimed).await?;
        self.backend.delete_all(&layout::upload_dir(id)).await?;
        Ok(size)
    }

    /// Drops an upload and its bytes.
    pub async fn cancel_upload(&self, repository: &str, id: &str) -> Result<()> {
        let shared = self.upload(repository, id).await?;
        let mut state = shared.state.lock().await;
        if state.finished {
            return Err(StorageError::UploadUnknown(id.to_string()));
        }
        state.finished = true;
        drop(state);
        self.forget_upload(id);
        Ok(self.backend.delete_all(&layout::upload_dir(id)).await?)
    }

    /// Deletes uploads nobody has written to for `max_age` (abandoned pushes, or pushes cut by
    /// a crash), so their scratch bytes don't fill the disk. Returns how many went.
    pub async fn purge_uploads(&self, max_age: std::time::Duration) -> Result<usize> {
        let Some(cutoff) = std::time::SystemTime::now().checked_sub(max_age) else {
            return Ok(0);
        };
        let mut purged = 0;
        for id in self.backend.list(layout::UPLOADS).await? {
            let cached = self.uploads.lock().expect("uploads lock").get(&id).cloned();
            // An append in progress holds the lock: that upload is alive.
            let mut guard = match &cached {
                Some(u) => match u.state.try_lock() {
                    Ok(g) => Some(g),
                    Err(_) => continue,
                },
                None => None,
            };
            let data = self.backend.modified(&layout::upload_data(&id)).await?;
            let record = self
                .backend
                .modified(&layout::upload_repository(&id))
                .await?;
            let last = data.max(record);
            if last.is_none_or(|t| t < cutoff) {
                if let Some(state) = guard.as_mut() {
                    state.finished = true;
                }
                self.backend.delete_all(&layout::upload_dir(&id)).await?;
                self.forget_upload(&id);
                purged += 1;
            }
        }
        Ok(purged)
    }
}
