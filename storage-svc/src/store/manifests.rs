//! Manifests: stored after their references are checked; tags and the referrers index.

use super::*;
use trow_proto::transport::MAX_MANIFEST_SIZE;

/// A manifest put, checked and parsed: what its stages need to know.
#[derive(Clone, Copy)]
struct ManifestPut<'a> {
    repository: &'a str,
    reference: &'a ManifestReference,
    digest: &'a Digest,
    meta: &'a ManifestMeta,
    parsed: &'a manifest::Parsed,
    content: &'a Bytes,
}

/// The objects of a manifest put, staged before the repository's turn (see
/// [`Backend::stage`]); each is taken when it goes into a batch.
#[derive(Default)]
struct StagedManifest {
    /// The manifest's bytes: staged, or `Existing` when stored already.
    bytes: Option<Put>,
    /// The manifest's record, unless stored and fresh already.
    record: Option<Put>,
    referrer: Option<Put>,
    tag: Option<Put>,
}

impl StagedManifest {
    /// What no batch took, for [`Backend::unstage`].
    fn into_unused(self) -> impl Iterator<Item = Put> {
        [self.bytes, self.record, self.referrer, self.tag]
            .into_iter()
            .flatten()
    }
}

impl<B: Backend> Store<B> {
    /// Stores a manifest once everything it references is in the repository; tags it when
    /// `reference` is a tag. Returns its metadata.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: &str,
        content: Bytes,
    ) -> Result<ManifestMeta> {
        self.store_manifest(repository, reference, content_type, content, false)
            .await
    }

    /// Stores an upstream registry's manifest in a cached repository (under `f/`), whose blobs
    /// and child manifests need not be there yet: the proxy fills them when clients ask.
    pub async fn put_cached_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: &str,
        content: Bytes,
    ) -> Result<ManifestMeta> {
        if !trow_proto::cache::is_cached(repository) {
            return Err(StorageError::Denied(format!(
                "{repository} is not a cached repository"
            )));
        }
        self.store_manifest(repository, reference, content_type, content, true)
            .await
    }

    async fn store_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: &str,
        content: Bytes,
        cached: bool,
    ) -> Result<ManifestMeta> {
        validate_repository(repository)?;
        let reference = parse_reference(reference)?;
        if content.len() > MAX_MANIFEST_SIZE {
            return Err(StorageError::ManifestInvalid(format!(
                "manifest exceeds the {MAX_MANIFEST_SIZE}-byte limit"
            )));
        }
        let digest = match &reference {
            ManifestReference::Digest(d) => {
                let actual = d.of_same_kind(&content);
                if &actual != d {
                    return Err(StorageError::DigestInvalid(format!(
                        "manifest digest is {actual}, not {d}"
                    )));
                }
                actual
            }
            ManifestReference::Tag(_) => Digest::sha256_of(&content),
        };
        let parsed = manifest::parse(&content, content_type)?;
        let meta = ManifestMeta {
            digest: digest.to_string(),
            media_type: parsed.media_type.clone(),
            size: content.len() as u64,
            subject: parsed.subject.as_ref().map(|s| s.to_string()),
            references: Some(parsed.reference_digests()),
        };
        // Before the repository's turn, the writes that need only the bytes (`stage`: on a
        // filesystem, the temp files written and fsync'd), so that concurrent puts to one
        // repository flush them together; in its turn only checks and moves into place.
        let put = ManifestPut {
            repository,
            reference: &reference,
            digest: &digest,
            meta: &meta,
            parsed: &parsed,
            content: &content,
        };
        let mut staged = self.stage_manifest(&put).await?;
        let stored = self.place_manifest(&put, &mut staged, cached).await;
        for put in staged.into_unused() {
            self.backend.unstage(put).await;
        }
        stored?;
        Ok(meta)
    }

    /// What a manifest put writes, staged: the bytes unless stored already, the record unless
    /// stored and fresh, the referrers entry and the tag.
    async fn stage_manifest(&self, put: &ManifestPut<'_>) -> Result<StagedManifest> {
        let ManifestPut {
            repository,
            reference,
            digest,
            meta,
            parsed,
            content,
        } = *put;
        let mut staged = StagedManifest::default();
        let written = async {
            staged.bytes = Some(
                match self
                    .unless_stored(layout::blob(digest), content.clone(), false)
                    .await?
                {
                    new @ Put::Bytes(..) => self.backend.stage(new).await?,
                    existing => existing,
                },
            );
            let json: Bytes = serde_json::to_vec(meta)
                .expect("serialize manifest meta")
                .into();
            let record = layout::manifest(repository, digest);
            if let new @ Put::Bytes(..) = self.unless_stored(record, json, true).await? {
                staged.record = Some(self.backend.stage(new).await?);
            }
            if let Some(subject) = &parsed.subject {
                let descriptor = ReferrerDescriptor {
                    media_type: parsed.media_type.clone(),
                    digest: meta.digest.clone(),
                    size: meta.size,
                    artifact_type: parsed.artifact_type.clone(),
                    annotations: parsed.annotations.clone().into_iter().collect(),
                };
                let json = serde_json::to_vec(&descriptor).expect("serialize descriptor");
                let key = layout::referrer(repository, subject, digest);
                let put = Put::Bytes(key, json.into());
                staged.referrer = Some(self.backend.stage(put).await?);
            }
            if let ManifestReference::Tag(tag) = reference {
                let key = layout::tag(repository, tag);
                let put = Put::Bytes(key, meta.digest.clone().into());
                staged.tag = Some(self.backend.stage(put).await?);
            }
            Result::Ok(())
        }
        .await;
        if let Err(e) = written {
            for put in staged.into_unused() {
                self.backend.unstage(put).await;
            }
            return Err(e);
        }
        Ok(staged)
    }

    /// The repository's turn of a manifest put: checks the references, then moves the staged
    /// objects into place; returns once they are durable and (for a tag) published. Takes from
    /// `staged` what it puts.
    async fn place_manifest(
        &self,
        put: &ManifestPut<'_>,
        staged: &mut StagedManifest,
        cached: bool,
    ) -> Result<()> {
        let ManifestPut {
            repository,
            reference,
            digest,
            meta,
            parsed,
            content,
        } = *put;
        // From the reference checks to the tag move: no delete may interleave.
        let turn = self.repo_lock(repository).await;
        for r in parsed.references.iter().filter(|_| !cached) {
            let found = match r {
                Reference::Blob(d) => self.linked_blob_size(repository, d).await?.is_some(),
                Reference::Manifest(d) => self.manifest_meta(repository, d).await?.is_some(),
            };
            if !found {
                let (Reference::Blob(d) | Reference::Manifest(d)) = r;
                return Err(StorageError::ManifestBlobUnknown(d.to_string()));
            }
        }
        // Content, then the manifest record, then what points at it: a crash in between leaves
        // at worst an unreachable blob. Each step is one batch (`put_all`).
        // Everything that can fail before the staged objects go into a batch: what `staged`
        // still holds is unstaged whatever happens here.
        let mut content_first: Vec<Put> = self.catalog_put(repository).await?.into_iter().collect();
        let record = match staged.record.take() {
            Some(put) => put,
            // Stored, equal and fresh before the turn: kept, unless a delete removed it
            // meanwhile or the wait for the turn made it due for a refresh (see
            // `unless_stored`); a put of the same digest that rewrote it since counts as after
            // this.
            None => {
                let key = layout::manifest(repository, digest);
                match self.backend.modified(&key).await? {
                    Some(t) if !self.needs_refresh(t) => Put::Existing(key),
                    _ => {
                        let json = serde_json::to_vec(meta).expect("serialize manifest meta");
                        Put::Bytes(key, json.into())
                    }
                }
            }
        };
        content_first.extend(staged.bytes.take());
        content_first.push(record);
        self.backend.put_all(content_first).await?;
        self.mark_cataloged(repository);
        // A garbage collection that decided on these bytes before the record was written may
        // have deleted them (see `gc`): they are written again, before anything points here.
        if !self.settle(digest).await? {
            self.backend
                .put(&layout::blob(digest), content.clone())
                .await?;
        }
        let links: Vec<Put> = staged
            .referrer
            .take()
            .into_iter()
            .chain(staged.tag.take())
            .collect();
        // The last flush (the tag's directory) after the turn: concurrent tag moves in one
        // repository flush together. The tag is visible from its rename, as it always was
        // between the rename and its fsync; it is answered and published only once durable.
        let flush = self.backend.put_all_deferred(links).await;
        drop(turn);
        let linked = match flush {
            Ok(flush) => flush.wait().await,
            Err(e) => Err(e),
        };
        if matches!(reference, ManifestReference::Tag(_)) {
            // Also after a failure: the tag may have moved before it. A manifest put by digest
            // changes nothing a cache holds (it caches no absence).
            self.changes.publish(repository).await;
        }
        Ok(linked?)
    }

    /// What a manifest put writes for `key`: nothing new when the object holds exactly these
    /// bytes already (compared whole, so a damaged copy is written again), only made durable
    /// before what comes after it. A `dated` object (a manifest record, whose age makes it a
    /// root of a garbage collection for the grace period, see `gc`) is also written again once
    /// it is older than half the grace period, as a `HEAD` would refresh it.
    async fn unless_stored(&self, key: String, data: Bytes, dated: bool) -> Result<Put> {
        if self.backend.get(&key).await?.as_ref() != Some(&data) {
            return Ok(Put::Bytes(key, data));
        }
        if dated
            && self
                .backend
                .modified(&key)
                .await?
                .is_none_or(|t| self.needs_refresh(t))
        {
            return Ok(Put::Bytes(key, data));
        }
        Ok(Put::Existing(key))
    }

    pub(super) async fn manifest_meta(
        &self,
        repository: &str,
        d: &Digest,
    ) -> Result<Option<ManifestMeta>> {
        let Some(raw) = self.backend.get(&layout::manifest(repository, d)).await? else {
            return Ok(None);
        };
        let meta = serde_json::from_slice(&raw).map_err(|e| {
            StorageError::Io(std::io::Error::other(format!(
                "corrupt manifest record: {e}"
            )))
        })?;
        Ok(Some(meta))
    }

    /// The digest a tag points to.
    pub(super) async fn resolve_tag(&self, repository: &str, tag: &str) -> Result<Option<Digest>> {
        let Some(raw) = self.backend.get(&layout::tag(repository, tag)).await? else {
            return Ok(None);
        };
        let s = std::str::from_utf8(&raw).unwrap_or("");
        Ok(Some(Digest::parse(s.trim())?))
    }

    /// A manifest's metadata by tag or digest.
    pub async fn stat_manifest(&self, repository: &str, reference: &str) -> Result<ManifestMeta> {
        validate_repository(repository)?;
        let unknown = || StorageError::ManifestUnknown(reference.to_string());
        let parsed = lookup_reference(reference)?;
        let by_digest = matches!(parsed, ManifestReference::Digest(_));
        let digest = match parsed {
            ManifestReference::Digest(d) => d,
            ManifestReference::Tag(t) => self
                .resolve_tag(repository, &t)
                .await?
                .ok_or_else(unknown)?,
        };
        let meta = self
            .manifest_meta(repository, &digest)
            .await?
            .ok_or_else(unknown)?;
        if by_digest {
            self.refresh_record(repository, &digest).await?;
        }
        self.note_pull(repository, &digest);
        Ok(meta)
    }

    /// A manifest found by digest may be referenced by an index a client pushes next, instead
    /// of pushed again: its record is written again once per half grace period, so a garbage
    /// collection counts it as just used (see `gc`).
    async fn refresh_record(&self, repository: &str, d: &Digest) -> Result<()> {
        let key = layout::manifest(repository, d);
        if let Some(t) = self.backend.modified(&key).await?
            && self.needs_refresh(t)
        {
            self.mark_used(repository, &key).await;
        }
        Ok(())
    }

    /// A manifest's metadata and bytes by tag or digest.
    #[tracing::instrument(level = "debug", name = "storage.manifest.read", skip(self))]
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(ManifestMeta, Bytes)> {
        let meta = self.stat_manifest(repository, reference).await?;
        let d = Digest::parse(&meta.digest)?;
        let content = self
            .backend
            .get(&layout::blob(&d))
            .await?
            .ok_or_else(|| StorageError::ManifestUnknown(reference.to_string()))?;
        Ok((meta, content))
    }

    /// By tag: removes the tag. By digest: removes the manifest, every tag pointing at it and its
    /// entry in its subject's referrers.
    pub async fn delete_manifest(&self, repository: &str, reference: &str) -> Result<()> {
        validate_repository(repository)?;
        let deleted = {
            let _turn = self.repo_lock(repository).await;
            self.remove_manifest(repository, reference).await
        };
        // Also after a failure part-way: something may have gone.
        if !matches!(deleted, Err(StorageError::ManifestUnknown(_))) {
            self.changes.publish(repository).await;
        }
        deleted
    }

    async fn remove_manifest(&self, repository: &str, reference: &str) -> Result<()> {
        let unknown = || StorageError::ManifestUnknown(reference.to_string());
        match lookup_reference(reference)? {
            ManifestReference::Tag(tag) => {
                self.resolve_tag(repository, &tag)
                    .await?
                    .ok_or_else(unknown)?;
                Ok(self.backend.delete(&layout::tag(repository, &tag)).await?)
            }
            ManifestReference::Digest(d) => {
                let meta = self
                    .manifest_meta(repository, &d)
                    .await?
                    .ok_or_else(unknown)?;
                // Tags as they will be after a crash (a put's tag move may still be unflushed,
                // see `place_manifest`), and their deletes durable before the record's: a crash
                // leaves the manifest untagged, never a tag naming it deleted.
                let tags = layout::tags(repository);
                self.backend.make_durable(&tags, false).await?;
                let mut untagged = false;
                for tag in self.backend.list(&tags).await? {
                    if self.resolve_tag(repository, &tag).await?.as_ref() == Some(&d) {
                        self.backend.delete(&layout::tag(repository, &tag)).await?;
                        untagged = true;
                    }
                }
                if untagged {
                    self.backend.make_durable(&tags, true).await?;
                }
                if let Some(subject) = meta.subject.as_deref().map(Digest::parse).transpose()? {
                    self.backend
                        .delete(&layout::referrer(repository, &subject, &d))
                        .await?;
                }
                Ok(self
                    .backend
                    .delete(&layout::manifest(repository, &d))
                    .await?)
            }
        }
    }
}
