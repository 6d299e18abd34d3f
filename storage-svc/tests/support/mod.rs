//! What the store's lifecycle tests (gc, retention, evict) share: pushing blobs, building
//! manifests and indexes, reading back, and checking the store with fsck.
#![allow(dead_code)] // each test crate uses its own part

use bytes::Bytes;
use futures::StreamExt;
use std::time::SystemTime;
use trow_storage::Store;
use trow_storage::backend::Backend;
use trow_storage::digest::Digest;
use trow_storage::error::StorageError;
use trow_storage::store::{Garbage, GcSummary};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Pushes `content` to `repo` as a client does (start, one append, complete).
pub async fn try_push_blob<B: Backend>(
    s: &Store<B>,
    repo: &str,
    content: &[u8],
) -> Result<Digest, StorageError> {
    let d = Digest::sha256_of(content);
    let id = s.start_upload(repo, "").await?;
    let data = Bytes::copy_from_slice(content);
    s.append_upload(repo, &id, Some(0), futures::stream::iter([Ok(data)]))
        .await?;
    s.complete_upload(repo, &id, &d.to_string()).await?;
    Ok(d)
}

pub async fn push_blob<B: Backend>(s: &Store<B>, repo: &str, content: &[u8]) -> Digest {
    try_push_blob(s, repo, content).await.unwrap()
}

/// An OCI image manifest of `config` and `layers`, with `subject` when it is a referrer.
pub fn image_manifest(config: &Digest, layers: &[&Digest], subject: Option<&Digest>) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":1}}"#)
        })
        .collect();
    let subject = subject
        .map(|s| format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{s}","size":1}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[{}]{subject}}}"#,
        layers.join(",")
    )
    .into_bytes()
}

/// An OCI index of `children`.
pub fn index(children: &[&Digest]) -> Vec<u8> {
    let m: Vec<String> = children
        .iter()
        .map(|c| format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{c}","size":1}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        m.join(",")
    )
    .into_bytes()
}

/// A collection, with every item it reported.
pub async fn collect<B: Backend>(s: &Store<B>, dry_run: bool) -> (GcSummary, Vec<Garbage>) {
    let mut items = Vec::new();
    let summary = s
        .collect_garbage(dry_run, &mut |g| items.push(g))
        .await
        .unwrap();
    (summary, items)
}

/// A blob of `repo`, read whole.
pub async fn read_all<B: Backend>(
    s: &Store<B>,
    repo: &str,
    d: &Digest,
) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    let mut st = s.read_blob(repo, &d.to_string(), 0, 0).await?;
    while let Some(c) = st.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

/// Where the filesystem backend keeps a sha256 blob's bytes.
pub fn blob_path(dir: &std::path::Path, d: &Digest) -> std::path::PathBuf {
    dir.join(format!("blobs/sha256/{}/{}", &d.hex[..2], d.hex))
}

/// Fails the test unless fsck finds the store clean.
pub async fn assert_clean(dir: &std::path::Path) {
    let report = trow_storage::fsck::check_dir(dir, SystemTime::now())
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
}

/// A scratch dir on tmpfs when there is one: hundreds of writes cost hundreds of fsyncs.
pub fn scratch() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}
