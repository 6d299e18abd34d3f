//! Blobs: reading, membership (links), mounting and unlinking.

use super::*;

/// The exclusive end of `length` bytes from `offset` (0: to the end) of a `size`-byte blob.
pub(super) fn range_end(size: u64, offset: u64, length: u64) -> Result<u64> {
    let end = if length == 0 {
        size
    } else {
        offset.saturating_add(length)
    };
    // `offset > end`: an offset past the end of an empty blob (end 0) would underflow below.
    if end > size || offset > end || (offset >= size && size > 0) {
        return Err(StorageError::RangeInvalid(format!(
            "bytes {offset}-{end} of a {size}-byte blob"
        )));
    }
    Ok(end)
}

impl<B: Backend> Store<B> {
    /// The size of a blob linked into `repository`. A client that finds it may reference it in
    /// a manifest instead of uploading it: a garbage collection counts it as just used.
    pub async fn stat_blob(&self, repository: &str, digest: &str) -> Result<u64> {
        validate_repository(repository)?;
        let d = Digest::parse(digest)?;
        let link = layout::blob_link(repository, &d);
        let (Some(linked), Some(size)) = self
            .backend
            .modified_and_size(&link, &layout::blob(&d))
            .await?
        else {
            return Err(StorageError::BlobUnknown(digest.to_string()));
        };
        if self.needs_refresh(linked) {
            self.mark_used(repository, &link).await;
        }
        Ok(size)
    }

    /// The size of a blob linked into `repository`, or None. Reads only: callable in the
    /// repository's critical section.
    pub(super) async fn linked_blob_size(
        &self,
        repository: &str,
        d: &Digest,
    ) -> Result<Option<u64>> {
        // Both in one call: a filesystem answers them in one hand-off to its blocking pool.
        let (linked, size) = self
            .backend
            .modified_and_size(&layout::blob_link(repository, d), &layout::blob(d))
            .await?;
        Ok(linked.and(size))
    }

    /// Writes a link or manifest record again so that a garbage collection counts it as just
    /// used (see `gc`). In the repository's critical section, where a collection decides, and
    /// only if it still exists (a collection may have just deleted it). Best effort: a pull
    /// must not fail because a full disk refused it.
    pub(super) async fn mark_used(&self, repository: &str, key: &str) {
        let _turn = self.repo_lock(repository).await;
        let rewrite = async {
            if let Some(bytes) = self.backend.get(key).await? {
                self.backend.put(key, bytes).await?;
            }
            std::io::Result::Ok(())
        };
        if let Err(e) = rewrite.await {
            tracing::warn!(error = %e, %key, "could not mark an object as used");
        }
    }

    /// Streams `length` bytes (0: to the end) of a blob from `offset`. Its span (traces only)
    /// covers opening the blob, not the stream.
    #[tracing::instrument(level = "debug", name = "storage.blob.read", skip(self))]
    pub async fn read_blob(
        &self,
        repository: &str,
        digest: &str,
        offset: u64,
        length: u64,
    ) -> Result<ByteStream> {
        let size = self.stat_blob(repository, digest).await?;
        let end = range_end(size, offset, length)?;
        let d = Digest::parse(digest)?;
        let stream = self
            .backend
            .read(&layout::blob(&d), offset, end - offset)
            .await?;
        self.note_pull(repository, &d);
        Ok(self.reading(repository, &d, stream))
    }

    /// Unlinks a blob from a repository; its bytes stay for other repositories.
    pub async fn delete_blob(&self, repository: &str, digest: &str) -> Result<()> {
        // Not while a manifest put checks that its blobs are linked.
        validate_repository(repository)?;
        let d = Digest::parse(digest)?;
        let _turn = self.repo_lock(repository).await;
        self.linked_blob_size(repository, &d)
            .await?
            .ok_or_else(|| StorageError::BlobUnknown(digest.to_string()))?;
        Ok(self
            .backend
            .delete(&layout::blob_link(repository, &d))
            .await?)
    }

    /// Links a blob of `from` into `repository`.
    pub async fn mount_blob(&self, repository: &str, digest: &str, from: &str) -> Result<u64> {
        validate_repository(repository)?;
        let size = self.stat_blob(from, digest).await?;
        let d = Digest::parse(digest)?;
        self.link_blob(repository, &d).await?;
        Ok(size)
    }

    /// Links a stored blob into a repository. Fails with `BlobUnknown` (and no link) when a
    /// garbage collection deleted the bytes meanwhile (see `gc`).
    pub(super) async fn link_blob(&self, repository: &str, d: &Digest) -> Result<()> {
        self.store_and_link_blob(repository, d, None).await
    }

    /// Links a blob into a repository, after `content` (the blob's bytes going into place, an
    /// upload's commit) in the same batch. Fails with `BlobUnknown` (and no link) when a
    /// garbage collection deleted the bytes meanwhile (see `gc`).
    pub(super) async fn store_and_link_blob(
        &self,
        repository: &str,
        d: &Digest,
        content: Option<Put>,
    ) -> Result<()> {
        let link = layout::blob_link(repository, d);
        let due =
            |written: Option<std::time::SystemTime>| written.is_none_or(|t| self.needs_refresh(t));
        // Before the repository's turn, what needs nothing else (see `Backend::stage`): the
        // content's flush, and the link's when it looks due (it is checked again in the turn);
        // so the blobs of one image, pushed at once, flush together.
        let mut content = match content {
            Some(c) => Some(self.backend.stage(c).await?),
            None => None,
        };
        let mut staged_link = None;
        let staged = async {
            if due(self.backend.modified(&link).await?) {
                let put = Put::Bytes(link.clone(), Bytes::new());
                staged_link = Some(self.backend.stage(put).await?);
            }
            Ok::<(), StorageError>(())
        }
        .await;
        let placed = match staged {
            Err(e) => Err(e),
            Ok(()) => {
                // Not between a collection's decision on this repository and its deletes.
                let _turn = self.repo_lock(repository).await;
                async {
                    let written = self.backend.modified(&link).await?;
                    let mut batch: Vec<Put> = content.take().into_iter().collect();
                    if due(written) {
                        let catalog = self.catalog_put(repository).await?;
                        batch.splice(0..0, catalog);
                        batch.push(
                            staged_link
                                .take()
                                .unwrap_or_else(|| Put::Bytes(link.clone(), Bytes::new())),
                        );
                    }
                    if !batch.is_empty() {
                        self.backend.put_all(batch).await?;
                        self.mark_cataloged(repository);
                    }
                    Ok::<(), StorageError>(())
                }
                .await
            }
        };
        for unused in content.into_iter().chain(staged_link) {
            self.backend.unstage(unused).await;
        }
        placed?;
        if !self.settle(d).await? {
            self.backend.delete(&link).await?;
            return Err(StorageError::BlobUnknown(d.to_string()));
        }
        Ok(())
    }

    /// The catalog entry to write first in a batch of a repository's content, when the
    /// repository may not have one yet (so a crash can leave an empty repository listed but
    /// never a repository unlisted); call [`Store::mark_cataloged`] once the batch is stored.
    pub(super) async fn catalog_put(&self, repository: &str) -> Result<Option<Put>> {
        if self
            .cataloged
            .lock()
            .expect("catalog lock")
            .contains(repository)
        {
            return Ok(None);
        }
        let key = layout::catalog_entry(repository);
        Ok(match self.backend.size(&key).await? {
            Some(_) => None,
            None => Some(Put::Bytes(key, Bytes::new())),
        })
    }

    /// Remembers that a repository's catalog entry is stored, to skip the check next time.
    pub(super) fn mark_cataloged(&self, repository: &str) {
        self.cataloged
            .lock()
            .expect("catalog lock")
            .insert(repository.to_string());
    }

    pub(super) async fn add_to_catalog(&self, repository: &str) -> Result<()> {
        Ok(self
            .backend
            .put(&layout::catalog_entry(repository), Bytes::new())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::range_end;

    #[test]
    fn ranges_inside_the_blob_only() {
        assert_eq!(range_end(10, 0, 0).unwrap(), 10);
        assert_eq!(range_end(10, 2, 3).unwrap(), 5);
        assert_eq!(range_end(0, 0, 0).unwrap(), 0);
        assert!(range_end(10, 10, 0).is_err());
        assert!(range_end(10, 5, 6).is_err());
        assert!(range_end(10, 5, u64::MAX).is_err());
        // Past the end of an empty blob: once an underflow of `end - offset`.
        assert!(range_end(0, 5, 0).is_err());
    }
}
