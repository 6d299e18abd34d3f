//! The store under racing and unlucky callers: finished uploads stay finished, status and cancel
//! never wait for a stalled append, leftovers are removed at open, limits hold, a tag never
//! outlives its manifest.

use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use trow_storage::backend::FsBackend;
use trow_storage::digest::Digest;
use trow_storage::error::StorageError;
use trow_storage::{Limits, Store};

async fn open(dir: &std::path::Path) -> Store<FsBackend> {
    Store::open(FsBackend::new(dir).unwrap(), Limits::default())
        .await
        .unwrap()
}

fn data(parts: Vec<Vec<u8>>) -> impl futures::Stream<Item = Result<Bytes, StorageError>> {
    futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))))
}

fn unknown<T: std::fmt::Debug>(r: Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::UploadUnknown(_)))
}

#[tokio::test]
async fn a_completed_upload_never_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = s.start_upload("r", "").await.unwrap();
    s.append_upload("r", &id, None, data(vec![b"abc".to_vec()]))
        .await
        .unwrap();
    let d = Digest::sha256_of(b"abc").to_string();
    s.complete_upload("r", &id, &d).await.unwrap();
    // Not in this store, not after a restart, and appends don't recreate its scratch file.
    for s in [s, open(tmp.path()).await] {
        assert!(unknown(s.upload_status("r", &id).await));
        assert!(unknown(
            s.append_upload("r", &id, None, data(vec![b"x".to_vec()]))
                .await
        ));
        assert!(unknown(s.complete_upload("r", &id, &d).await));
    }
    assert!(!tmp.path().join("uploads").join(&id).exists());
}

#[tokio::test]
async fn a_malformed_digest_ends_the_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = s.start_upload("r", "").await.unwrap();
    assert!(matches!(
        s.complete_upload("r", &id, "not-a-digest").await,
        Err(StorageError::DigestInvalid(_))
    ));
    assert!(unknown(s.upload_status("r", &id).await));
    assert!(!tmp.path().join("uploads").join(&id).exists());
}

#[tokio::test]
async fn status_and_cancel_do_not_wait_for_a_stalled_append() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Arc::new(open(tmp.path()).await);
    let id = s.start_upload("r", "").await.unwrap();
    // An append whose client sent 5 bytes and then stalled for good.
    let stalled =
        futures::stream::iter([Ok(Bytes::from_static(b"12345"))]).chain(futures::stream::pending());
    let appending = {
        let (s, id) = (s.clone(), id.clone());
        tokio::spawn(async move { s.append_upload("r", &id, None, stalled).await })
    };
    let status = async {
        loop {
            if s.upload_status("r", &id).await.unwrap() == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), status)
        .await
        .expect("status answered during the append");
    // A second writer is told at once that the upload is busy.
    let busy = s
        .complete_upload("r", &id, &Digest::sha256_of(b"12345").to_string())
        .await;
    assert!(matches!(busy, Err(StorageError::UploadBusy(_))), "{busy:?}");
    tokio::time::timeout(Duration::from_secs(5), s.cancel_upload("r", &id))
        .await
        .expect("cancel does not wait for the client")
        .unwrap();
    assert!(unknown(appending.await.unwrap()));
    assert!(!tmp.path().join("uploads").join(&id).exists());
}

#[tokio::test]
async fn a_broken_append_keeps_what_arrived() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = s.start_upload("r", "").await.unwrap();
    let broken = futures::stream::iter([
        Ok(Bytes::from_static(b"hello ")),
        Err(StorageError::UploadInvalid("client went away".into())),
    ]);
    assert!(s.append_upload("r", &id, None, broken).await.is_err());
    assert_eq!(s.upload_status("r", &id).await.unwrap(), 6);
    s.append_upload("r", &id, Some(6), data(vec![b"world".to_vec()]))
        .await
        .unwrap();
    let d = Digest::sha256_of(b"hello world").to_string();
    assert_eq!(s.complete_upload("r", &id, &d).await.unwrap(), 11);
}

#[tokio::test]
async fn open_removes_crash_leftovers_and_keeps_live_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let live = {
        let s = open(tmp.path()).await;
        let id = s.start_upload("r", "").await.unwrap();
        s.append_upload("r", &id, None, data(vec![b"abc".to_vec()]))
            .await
            .unwrap();
        id
    };
    let root = tmp.path();
    std::fs::write(root.join("tmp/0f0e0d0c-half-written"), b"x").unwrap();
    // A start cut by a crash: scratch bytes without the record.
    let orphan = root.join("uploads/6b1c0b0e-0000-4000-8000-000000000000");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("data"), b"partial").unwrap();

    let s = open(root).await;
    assert!(!orphan.exists());
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert_eq!(s.upload_status("r", &live).await.unwrap(), 3);
    s.append_upload("r", &live, Some(3), data(vec![b"def".to_vec()]))
        .await
        .unwrap();
    let d = Digest::sha256_of(b"abcdef").to_string();
    s.complete_upload("r", &live, &d).await.unwrap();
}

#[tokio::test]
async fn open_uploads_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(
        FsBackend::new(tmp.path()).unwrap(),
        Limits {
            max_uploads: 2,
            ..Limits::default()
        },
    )
    .await
    .unwrap();
    let a = s.start_upload("r", "").await.unwrap();
    s.start_upload("r", "").await.unwrap();
    assert!(matches!(
        s.start_upload("r", "").await,
        Err(StorageError::TooManyUploads(2))
    ));
    s.cancel_upload("r", &a).await.unwrap();
    s.start_upload("r", "").await.unwrap();
}

#[tokio::test]
async fn manifests_over_the_limit_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let big = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{{"x":"{}"}}}}"#,
        "a".repeat(5 << 20)
    );
    let r = s
        .put_manifest("r", "t", "", Bytes::from(big.into_bytes()))
        .await;
    assert!(matches!(r, Err(StorageError::ManifestInvalid(_))), "{r:?}");
}

#[tokio::test]
async fn the_catalog_is_built_for_an_old_store_and_kept_after() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A store written before the catalog index: repositories only.
    for name in ["a/b/c", "a/b", "z"] {
        std::fs::create_dir_all(root.join("repositories").join(name).join("_tags")).unwrap();
    }
    let s = open(root).await;
    let (names, _) = s.list_repositories(0, "").await.unwrap();
    assert_eq!(names, ["a/b", "a/b/c", "z"]);
    let d = Digest::sha256_of(b"{}").to_string();
    let id = s.start_upload("a-b/c", "").await.unwrap();
    s.append_upload("a-b/c", &id, None, data(vec![b"{}".to_vec()]))
        .await
        .unwrap();
    s.complete_upload("a-b/c", &id, &d).await.unwrap();
    // Lexical order of the names, not of their escaped entries.
    let (names, more) = s.list_repositories(2, "a/b").await.unwrap();
    assert_eq!((names, more), (vec!["a/b/c".into(), "z".into()], false));
    let (names, more) = s.list_repositories(1, "").await.unwrap();
    assert_eq!((names, more), (vec!["a-b/c".to_string()], true));
}

/// One manifest, pushed by digest.
async fn push_manifest(s: &Store<FsBackend>, repo: &str) -> String {
    let config = b"{}".to_vec();
    let cd = Digest::sha256_of(&config).to_string();
    let id = s.start_upload(repo, "").await.unwrap();
    s.append_upload(repo, &id, None, data(vec![config.clone()]))
        .await
        .unwrap();
    s.complete_upload(repo, &id, &cd).await.unwrap();
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":2}},"layers":[]}}"#
    );
    let md = Digest::sha256_of(m.as_bytes()).to_string();
    s.put_manifest(repo, &md, "", Bytes::from(m)).await.unwrap();
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_never_outlives_its_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Arc::new(open(tmp.path()).await);
    for round in 0..30 {
        let md = push_manifest(&s, "race").await;
        let (content, tag) = (
            s.get_manifest("race", &md).await.unwrap().1,
            format!("t{round}"),
        );
        let tagging = {
            let (s, tag) = (s.clone(), tag.clone());
            tokio::spawn(async move { s.put_manifest("race", &tag, "", content).await })
        };
        let deleting = {
            let (s, md) = (s.clone(), md.clone());
            tokio::spawn(async move { s.delete_manifest("race", &md).await })
        };
        // Both may succeed: the delete came first (the tag put the manifest back) or last (the
        // tag went with it). Either way a listed tag resolves.
        tagging.await.unwrap().unwrap();
        deleting.await.unwrap().unwrap();
        let resolved = s.get_manifest("race", &tag).await;
        let (tags, _) = s.list_tags("race", 0, "").await.unwrap();
        assert_eq!(
            tags.contains(&tag),
            resolved.is_ok(),
            "round {round}: tag listed={} but resolves={resolved:?}",
            tags.contains(&tag)
        );
    }
}

#[tokio::test]
async fn open_drops_catalog_entries_a_crash_left_without_content() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    {
        let s = open(root).await;
        push_manifest(&s, "kept").await;
    }
    // The entry is written before a repository's first content; the crash came in between.
    std::fs::write(root.join("catalog/never+filled"), b"").unwrap();
    let s = open(root).await;
    assert_eq!(s.list_repositories(0, "").await.unwrap().0, ["kept"]);
}

#[tokio::test]
async fn temp_files_of_the_first_layout_are_removed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tags = root.join("repositories/r/_tags");
    std::fs::create_dir_all(&tags).unwrap();
    std::fs::write(tags.join(".tmp-0f0e"), b"half").unwrap();
    let backend = FsBackend::new(root).unwrap();
    assert_eq!(backend.remove_legacy_temp_files().unwrap(), 1);
    assert!(!tags.join(".tmp-0f0e").exists());
    // The store now has tmp/: it was never written the old way, so no more walks.
    std::fs::write(tags.join(".tmp-0f0f"), b"half").unwrap();
    assert_eq!(backend.remove_legacy_temp_files().unwrap(), 0);
}

#[tokio::test]
async fn open_deletes_uploads_abandoned_for_a_day() {
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        let s = open(tmp.path()).await;
        s.start_upload("r", "").await.unwrap()
    };
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(48 * 3600);
    for f in ["data", "repository"] {
        let p = tmp.path().join("uploads").join(&id).join(f);
        std::fs::File::options()
            .append(true)
            .open(&p)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    let s = open(tmp.path()).await;
    assert!(unknown(s.upload_status("r", &id).await));
    assert!(!tmp.path().join("uploads").join(&id).exists());
}

/// Downloads whose readers stall must not hold the blocking threads every disk operation needs:
/// with more stalled streams than the pool has threads, a push still completes.
#[test]
fn stalled_downloads_do_not_hold_the_blocking_pool() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let s = open(tmp.path()).await;
        let big = vec![7u8; 4 << 20];
        let d = Digest::sha256_of(&big).to_string();
        let id = s.start_upload("r", "").await.unwrap();
        s.append_upload("r", &id, None, data(vec![big]))
            .await
            .unwrap();
        s.complete_upload("r", &id, &d).await.unwrap();
        // Twelve readers that take nothing: each stream is one chunk ahead and stays there.
        let mut stalled = Vec::new();
        for _ in 0..12 {
            stalled.push(s.read_blob("r", &d, 0, 0).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let push = async {
            let id = s.start_upload("r", "").await.unwrap();
            s.append_upload("r", &id, None, data(vec![b"x".to_vec()]))
                .await
                .unwrap();
            s.complete_upload("r", &id, &Digest::sha256_of(b"x").to_string())
                .await
                .unwrap();
        };
        tokio::time::timeout(Duration::from_secs(10), push)
            .await
            .expect("a push beside stalled downloads finishes");
        drop(stalled);
    });
}
