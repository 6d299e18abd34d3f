//! The registry's storage logic: blobs, uploads, manifests, tags and referrers on top of a
//! [`Backend`], laid out by [`layout`](crate::layout).
//!
//! Invariants kept here:
//! - a blob is visible only after its digest was verified and its bytes made durable;
//! - a repository sees only the blobs and manifests linked into it;
//! - every write is ordered so that a crash between two steps leaves a consistent store
//!   (content first, then the links that make it reachable).

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

use crate::backend::{Backend, ByteStream};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Result, StorageError};
use crate::layout;
use crate::manifest::{self, Reference};
use crate::names::{validate_repository, validate_tag};

/// What the store records about a manifest in a repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestMeta {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// A referrer, as the referrers API lists it (an OCI descriptor).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What an upload's `repository` file holds, so an upload survives a restart of the service.
#[derive(Serialize, Deserialize)]
struct UploadRecord {
    repository: String,
    algorithm: String,
}

/// An upload's live state: the digest computed so far over exactly `size` bytes.
struct UploadState {
    repository: String,
    hasher: Hasher,
    size: u64,
    /// Completed or cancelled; a racing request must not touch it any more.
    finished: bool,
}

type SharedUpload = Arc<tokio::sync::Mutex<UploadState>>;

/// A tag or a digest, as manifests are addressed.
enum ManifestReference {
    Tag(String),
    Digest(Digest),
}

fn parse_reference(reference: &str) -> Result<ManifestReference> {
    if reference.contains(':') {
        Digest::parse(reference).map(ManifestReference::Digest)
    } else {
        validate_tag(reference)?;
        Ok(ManifestReference::Tag(reference.to_string()))
    }
}

/// A reference being looked up: a tag that could never have been pushed is simply unknown.
fn lookup_reference(reference: &str) -> Result<ManifestReference> {
    parse_reference(reference).map_err(|e| match e {
        StorageError::TagInvalid(t) => StorageError::ManifestUnknown(t),
        other => other,
    })
}

/// Upload ids are UUIDs; checking the shape keeps them safe as path components.
fn validate_upload_id(id: &str) -> Result<()> {
    match uuid::Uuid::try_parse(id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(()),
        _ => Err(StorageError::UploadUnknown(id.to_string())),
    }
}

pub struct Store<B> {
    backend: B,
    uploads: Mutex<HashMap<String, SharedUpload>>,
}

impl<B: Backend> Store<B> {
    pub fn new(backend: B) -> Store<B> {
        Store {
            backend,
            uploads: Mutex::new(HashMap::new()),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    // ---- blobs ----

    /// The size of a blob linked into `repository`.
    pub async fn stat_blob(&self, repository: &str, digest: &str) -> Result<u64> {
        validate_repository(repository)?;
        let d = Digest::parse(digest)?;
        self.linked_blob_size(repository, &d)
            .await?
            .ok_or_else(|| StorageError::BlobUnknown(digest.to_string()))
    }

    async fn linked_blob_size(&self, repository: &str, d: &Digest) -> Result<Option<u64>> {
        if self
            .backend
            .size(&layout::blob_link(repository, d))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        Ok(self.backend.size(&layout::blob(d)).await?)
    }

    /// Streams `length` bytes (0: to the end) of a blob from `offset`.
    pub async fn read_blob(
        &self,
        repository: &str,
        digest: &str,
        offset: u64,
        length: u64,
    ) -> Result<ByteStream> {
        let size = self.stat_blob(repository, digest).await?;
        let end = if length == 0 {
            size
        } else {
            offset.saturating_add(length)
        };
        if end > size || (offset >= size && size > 0) {
            return Err(StorageError::RangeInvalid(format!(
                "bytes {offset}-{end} of a {size}-byte blob"
            )));
        }
        let d = Digest::parse(digest)?;
        Ok(self
            .backend
            .read(&layout::blob(&d), offset, end - offset)
            .await?)
    }

    /// Unlinks a blob from a repository; its bytes stay for other repositories.
    pub async fn delete_blob(&self, repository: &str, digest: &str) -> Result<()> {
        self.stat_blob(repository, digest).await?;
        let d = Digest::parse(digest)?;
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

    async fn link_blob(&self, repository: &str, d: &Digest) -> Result<()> {
        let link = layout::blob_link(repository, d);
        if self.backend.size(&link).await?.is_none() {
            self.backend.put(&link, Bytes::new()).await?;
        }
        Ok(())
    }

    // ---- uploads ----

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
        let state = UploadState {
            repository: repository.to_string(),
            hasher: Hasher::new(algorithm),
            size: 0,
            finished: false,
        };
        self.uploads
            .lock()
            .expect("uploads lock")
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(state)));
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
                let (hasher, size) = self
                    .hash_object(&layout::upload_data(id), algorithm)
                    .await?;
                let state = UploadState {
                    repository: record.repository,
                    hasher,
                    size,
                    finished: false,
                };
                let mut map = self.uploads.lock().expect("uploads lock");
                map.entry(id.to_string())
                    .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(state)))
                    .clone()
            }
        };
        if shared.lock().await.repository != repository {
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
        let mut state = shared.lock().await;
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
        let state = shared.lock().await;
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
        let mut state = shared.lock().await;
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
        let mut state = shared.lock().await;
        if state.finished {
            return Err(StorageError::UploadUnknown(id.to_string()));
        }
        state.finished = true;
        drop(state);
        self.forget_upload(id);
        Ok(self.backend.delete_all(&layout::upload_dir(id)).await?)
    }

    // ---- manifests ----

    /// Stores a manifest once everything it references is in the repository; tags it when
    /// `reference` is a tag. Returns its metadata.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        content_type: &str,
        content: Bytes,
    ) -> Result<ManifestMeta> {
        validate_repository(repository)?;
        let reference = parse_reference(reference)?;
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
        for r in &parsed.references {
            let found = match r {
                Reference::Blob(d) => self.linked_blob_size(repository, d).await?.is_some(),
                Reference::Manifest(d) => self.manifest_meta(repository, d).await?.is_some(),
            };
            if !found {
                let (Reference::Blob(d) | Reference::Manifest(d)) = r;
                return Err(StorageError::ManifestBlobUnknown(d.to_string()));
            }
        }

        let meta = ManifestMeta {
            digest: digest.to_string(),
            media_type: parsed.media_type.clone(),
            size: content.len() as u64,
            subject: parsed.subject.as_ref().map(|s| s.to_string()),
        };
        // Content, then the manifest link, then what points at it: a crash in between leaves
        // at worst an unreachable blob.
        let blob = layout::blob(&digest);
        if self.backend.size(&blob).await? != Some(meta.size) {
            self.backend.put(&blob, content).await?;
        }
        let json = serde_json::to_vec(&meta).expect("serialize manifest meta");
        self.backend
            .put(&layout::manifest(repository, &digest), json.into())
            .await?;
        if let Some(subject) = &parsed.subject {
            let descriptor = ReferrerDescriptor {
                media_type: parsed.media_type,
                digest: meta.digest.clone(),
                size: meta.size,
                artifact_type: parsed.artifact_type,
                annotations: parsed.annotations.into_iter().collect(),
            };
            let json = serde_json::to_vec(&descriptor).expect("serialize descriptor");
            self.backend
                .put(&layout::referrer(repository, subject, &digest), json.into())
                .await?;
        }
        if let ManifestReference::Tag(tag) = &reference {
            self.backend
                .put(&layout::tag(repository, tag), meta.digest.clone().into())
                .await?;
        }
        Ok(meta)
    }

    async fn manifest_meta(&self, repository: &str, d: &Digest) -> Result<Option<ManifestMeta>> {
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
    async fn resolve_tag(&self, repository: &str, tag: &str) -> Result<Option<Digest>> {
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
        let digest = match lookup_reference(reference)? {
            ManifestReference::Digest(d) => d,
            ManifestReference::Tag(t) => self
                .resolve_tag(repository, &t)
                .await?
                .ok_or_else(unknown)?,
        };
        self.manifest_meta(repository, &digest)
            .await?
            .ok_or_else(unknown)
    }

    /// A manifest's metadata and bytes by tag or digest.
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
                for tag in self.backend.list(&layout::tags(repository)).await? {
                    if self.resolve_tag(repository, &tag).await?.as_ref() == Some(&d) {
                        self.backend.delete(&layout::tag(repository, &tag)).await?;
                    }
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

    // ---- listings ----

    async fn repository_exists(&self, repository: &str) -> Result<bool> {
        let children = self.backend.list(&layout::repository(repository)).await?;
        Ok(children
            .iter()
            .any(|c| layout::REPO_MARKERS.contains(&c.as_str())))
    }

    /// Tags of a repository after `last`, at most `limit` (0: all); and whether more follow.
    pub async fn list_tags(
        &self,
        repository: &str,
        limit: u32,
        last: &str,
    ) -> Result<(Vec<String>, bool)> {
        validate_repository(repository)?;
        if !self.repository_exists(repository).await? {
            return Err(StorageError::NameUnknown(repository.to_string()));
        }
        let tags = self.backend.list(&layout::tags(repository)).await?;
        Ok(paginate(tags, limit, last))
    }

    /// Repository names after `last`, at most `limit` (0: all); and whether more follow.
    pub async fn list_repositories(&self, limit: u32, last: &str) -> Result<(Vec<String>, bool)> {
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(name) = pending.pop() {
            let key = if name.is_empty() {
                layout::REPOSITORIES.to_string()
            } else {
                layout::repository(&name)
            };
            let children = self.backend.list(&key).await?;
            if children
                .iter()
                .any(|c| layout::REPO_MARKERS.contains(&c.as_str()))
            {
                found.push(name.clone());
            }
            for c in children.into_iter().filter(|c| !c.starts_with('_')) {
                pending.push(if name.is_empty() {
                    c
                } else {
                    format!("{name}/{c}")
                });
            }
        }
        found.sort();
        Ok(paginate(found, limit, last))
    }

    /// Referrers of `subject` in a repository, optionally only those of one artifact type.
    pub async fn list_referrers(
        &self,
        repository: &str,
        subject: &str,
        artifact_type: &str,
    ) -> Result<Vec<ReferrerDescriptor>> {
        validate_repository(repository)?;
        let subject = Digest::parse(subject)?;
        let dir = layout::referrers(repository, &subject);
        let mut out = Vec::new();
        for name in self.backend.list(&dir).await? {
            let Some(raw) = self.backend.get(&format!("{dir}/{name}")).await? else {
                continue;
            };
            let Ok(d) = serde_json::from_slice::<ReferrerDescriptor>(&raw) else {
                tracing::warn!(%name, "skipping unreadable referrer record");
                continue;
            };
            if artifact_type.is_empty() || d.artifact_type.as_deref() == Some(artifact_type) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// Names after `last`, at most `limit` of them (0: no limit), and whether any remain.
fn paginate(names: Vec<String>, limit: u32, last: &str) -> (Vec<String>, bool) {
    let mut rest: Vec<String> = names
        .into_iter()
        .filter(|n| last.is_empty() || n.as_str() > last)
        .collect();
    if limit == 0 || rest.len() <= limit as usize {
        return (rest, false);
    }
    rest.truncate(limit as usize);
    (rest, true)
}
