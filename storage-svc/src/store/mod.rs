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

/// An upload in progress. The repository is fixed at start, so checking it needs no lock.
struct Upload {
    repository: String,
    state: tokio::sync::Mutex<UploadState>,
}

/// An upload's live state: the digest computed so far over exactly `size` bytes.
struct UploadState {
    hasher: Hasher,
    size: u64,
    /// Completed or cancelled; a racing request must not touch it any more.
    finished: bool,
}

impl Upload {
    fn new(repository: String, hasher: Hasher, size: u64) -> Arc<Upload> {
        Arc::new(Upload {
            repository,
            state: tokio::sync::Mutex::new(UploadState {
                hasher,
                size,
                finished: false,
            }),
        })
    }
}

type SharedUpload = Arc<Upload>;

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
}

mod blobs;
mod listings;
mod manifests;
mod uploads;
