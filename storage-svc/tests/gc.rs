//! Garbage collection against a real filesystem store: what goes, what stays, dry runs, old
//! records, a crash in the middle, and collections racing pushes.

use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use trow_storage::backend::{Backend, ByteStream, FsBackend};
use trow_storage::digest::Digest;
use trow_storage::error::StorageError;
use trow_storage::store::Garbage;
use trow_storage::{Limits, Store};

mod support;
use support::*;

async fn open(dir: &std::path::Path, grace: Duration) -> Arc<Store<FsBackend>> {
    let limits = Limits {
        gc_grace: grace,
        gc_every: Duration::ZERO,
        ..Limits::default()
    };
    Arc::new(
        Store::open(FsBackend::new(dir).unwrap(), limits)
            .await
            .unwrap(),
    )
}

/// Pushes an image of a config and one layer per name: (manifest digest, blob digests).
async fn push_image<B: Backend>(
    s: &Store<B>,
    repo: &str,
    tag: &str,
    parts: &[&str],
) -> Result<(Digest, Vec<Digest>), StorageError> {
    let mut blobs = Vec::new();
    for p in parts {
        blobs.push(try_push_blob(s, repo, p.as_bytes()).await?);
    }
    let layers: Vec<&Digest> = blobs[1..].iter().collect();
    let m = image_manifest(&blobs[0], &layers, None);
    let meta = s
        .put_manifest(repo, tag, OCI_MANIFEST, Bytes::from(m))
        .await?;
    Ok((Digest::parse(&meta.digest).unwrap(), blobs))
}

#[tokio::test]
async fn a_deleted_image_frees_its_bytes_and_shared_blobs_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::ZERO).await;
    let (keep, keep_blobs) = push_image(&s, "team/app", "v1", &["cfg-1", "base", "app-1"])
        .await
        .unwrap();
    let (gone, gone_blobs) = push_image(&s, "team/app", "v2", &["cfg-2", "base", "app-2"])
        .await
        .unwrap();
    s.delete_manifest("team/app", &gone.to_string())
        .await
        .unwrap();

    // A dry run lists, and deletes nothing.
    let (dry, listed) = collect(&s, true).await;
    // The record went with the DELETE; its bytes and two blobs are left.
    assert_eq!(
        (dry.manifests, dry.links, dry.blobs),
        (0, 2, 3),
        "{listed:#?}"
    );
    assert!(blob_path(tmp.path(), &gone_blobs[0]).exists());

    let (done, items) = collect(&s, false).await;
    assert_eq!(
        items, listed,
        "a dry run lists exactly what a collection deletes"
    );
    assert_eq!((done.manifests, done.links, done.blobs), (0, 2, 3));
    assert_eq!(
        done.bytes,
        ("cfg-2".len() + "app-2".len()) as u64 + {
            let m = image_manifest(&gone_blobs[0], &[&gone_blobs[1], &gone_blobs[2]], None);
            m.len() as u64
        }
    );
    for d in [&gone, &gone_blobs[0], &gone_blobs[2]] {
        assert!(!blob_path(tmp.path(), d).exists(), "{d} should be gone");
    }
    // The tagged image, with the layer both shared, is whole.
    let (meta, _) = s.get_manifest("team/app", "v1").await.unwrap();
    assert_eq!(meta.digest, keep.to_string());
    for (d, content) in keep_blobs.iter().zip(["cfg-1", "base", "app-1"]) {
        assert_eq!(
            read_all(&s, "team/app", d).await.unwrap(),
            content.as_bytes()
        );
    }
    // Nothing is left to collect.
    let (again, _) = collect(&s, false).await;
    assert_eq!((again.manifests, again.links, again.blobs), (0, 0, 0));
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn the_grace_period_keeps_what_a_push_in_progress_uploaded() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::from_secs(3600)).await;
    // Layers uploaded, manifest not yet pushed.
    let a = try_push_blob(&s, "team/app", b"layer-a").await.unwrap();
    let cfg = try_push_blob(&s, "team/app", b"cfg").await.unwrap();
    // A child manifest pushed by digest, its index not yet.
    let child = image_manifest(&cfg, &[&a], None);
    let child_d = Digest::sha256_of(&child);
    s.put_manifest(
        "team/app",
        &child_d.to_string(),
        OCI_MANIFEST,
        Bytes::from(child),
    )
    .await
    .unwrap();
    let (summary, items) = collect(&s, false).await;
    assert!(items.is_empty(), "{items:#?}");
    assert_eq!(summary.blobs, 0);
    // The push goes on as if nothing happened.
    s.put_manifest(
        "team/app",
        "multi",
        OCI_INDEX,
        Bytes::from(index(&[&child_d])),
    )
    .await
    .unwrap();
    assert_eq!(read_all(&s, "team/app", &a).await.unwrap(), b"layer-a");

    // With no grace, the same leftovers of an abandoned push go.
    let tmp2 = tempfile::tempdir().unwrap();
    let s2 = open(tmp2.path(), Duration::ZERO).await;
    let b = try_push_blob(&s2, "team/app", b"layer-b").await.unwrap();
    let (summary, _) = collect(&s2, false).await;
    assert_eq!((summary.links, summary.blobs), (1, 1));
    assert!(!blob_path(tmp2.path(), &b).exists());
    assert_clean(tmp.path()).await;
    assert_clean(tmp2.path()).await;
}

/// A client that finds a blob or a manifest by `HEAD` may reference it instead of pushing it:
/// finding it marks it as used, so a collection within the grace period keeps it.
#[tokio::test]
async fn what_a_client_finds_counts_as_just_used() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::from_secs(4)).await;
    let found = try_push_blob(&s, "r", b"found by HEAD").await.unwrap();
    let ignored = try_push_blob(&s, "r", b"never asked for").await.unwrap();
    let cfg = try_push_blob(&s, "r", b"cfg").await.unwrap();
    let child = image_manifest(&cfg, &[&found], None);
    let child_d = Digest::sha256_of(&child);
    s.put_manifest("r", &child_d.to_string(), OCI_MANIFEST, Bytes::from(child))
        .await
        .unwrap();
    // Past half the grace period, the client looks: HEAD of the blob and of the manifest.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.stat_blob("r", &found.to_string()).await.unwrap();
    s.stat_manifest("r", &child_d.to_string()).await.unwrap();
    // Past the grace period since they were written, within it since they were found.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (_, items) = collect(&s, false).await;
    assert!(
        items.contains(&Garbage::Link {
            repository: "r".into(),
            digest: ignored.to_string()
        }),
        "{items:#?}"
    );
    // The index the client pushes next finds its child, and the child its blobs.
    s.put_manifest("r", "multi", OCI_INDEX, Bytes::from(index(&[&child_d])))
        .await
        .unwrap();
    assert_eq!(read_all(&s, "r", &found).await.unwrap(), b"found by HEAD");
    assert_clean(tmp.path()).await;
}

/// One unreadable record (fsck names it) stops the collection from deleting in its
/// repository, where it could not tell what the record keeps alive, and only there.
#[tokio::test]
async fn an_unreadable_record_keeps_its_repository_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::ZERO).await;
    let (bad, _) = push_image(&s, "bad", "v1", &["cfg", "layer"])
        .await
        .unwrap();
    let orphan = try_push_blob(&s, "bad", b"orphan").await.unwrap();
    try_push_blob(&s, "good", b"orphan elsewhere")
        .await
        .unwrap();
    std::fs::write(
        tmp.path()
            .join(format!("repositories/bad/_manifests/sha256/{}", bad.hex)),
        b"{",
    )
    .unwrap();
    let (summary, items) = collect(&s, false).await;
    assert_eq!((summary.links, summary.blobs), (1, 1), "{items:#?}");
    assert!(blob_path(tmp.path(), &orphan).exists());
    assert!(
        items
            .iter()
            .all(|g| !matches!(g, Garbage::Link { repository, .. } if repository == "bad"))
    );
}

#[tokio::test]
async fn an_index_keeps_its_children_and_referrers_live_as_long_as_their_subject() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::ZERO).await;
    let cfg = try_push_blob(&s, "r", b"cfg").await.unwrap();
    let l1 = try_push_blob(&s, "r", b"amd64").await.unwrap();
    let l2 = try_push_blob(&s, "r", b"arm64").await.unwrap();
    let m1 = image_manifest(&cfg, &[&l1], None);
    let m2 = image_manifest(&cfg, &[&l2], None);
    let (d1, d2) = (Digest::sha256_of(&m1), Digest::sha256_of(&m2));
    for (d, m) in [(&d1, m1), (&d2, m2)] {
        s.put_manifest("r", &d.to_string(), OCI_MANIFEST, Bytes::from(m))
            .await
            .unwrap();
    }
    let idx = s
        .put_manifest("r", "latest", OCI_INDEX, Bytes::from(index(&[&d1, &d2])))
        .await
        .unwrap();
    let idx_d = Digest::parse(&idx.digest).unwrap();
    // A signature of the index, untagged: it lives as long as the index does.
    let sig_cfg = try_push_blob(&s, "r", b"sig-cfg").await.unwrap();
    let sig = image_manifest(&sig_cfg, &[], Some(&idx_d));
    let sig_d = Digest::sha256_of(&sig);
    s.put_manifest("r", &sig_d.to_string(), OCI_MANIFEST, Bytes::from(sig))
        .await
        .unwrap();

    let (summary, items) = collect(&s, false).await;
    assert_eq!(
        (summary.manifests, summary.links, summary.blobs),
        (0, 0, 0),
        "{items:#?}"
    );
    assert_eq!(
        s.list_referrers("r", &idx.digest, "").await.unwrap().len(),
        1
    );

    // Untagged, the index goes, and with it its children, their layers and its signature.
    s.delete_manifest("r", "latest").await.unwrap();
    let (summary, items) = collect(&s, false).await;
    assert_eq!((summary.manifests, summary.links), (4, 4), "{items:#?}");
    // Four manifests' bytes and four blobs.
    assert_eq!(summary.blobs, 8, "{items:#?}");
    assert!(
        s.list_referrers("r", &idx.digest, "")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.stat_manifest("r", &d1.to_string()).await,
        Err(StorageError::ManifestUnknown(_))
    ));
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn records_written_before_references_were_kept_are_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::ZERO).await;
    let (m, blobs) = push_image(&s, "old/app", "v1", &["c", "l"]).await.unwrap();
    let (gone, _) = push_image(&s, "old/app", "v2", &["c2", "l2"])
        .await
        .unwrap();
    s.delete_manifest("old/app", "v2").await.unwrap();
    drop(s);
    // Rewrite both records as an older Trow wrote them: without `references`.
    for d in [&m, &gone] {
        let path = tmp
            .path()
            .join(format!("repositories/old/app/_manifests/sha256/{}", d.hex));
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("references").unwrap();
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    }
    let s = open(tmp.path(), Duration::ZERO).await;
    let (summary, _) = collect(&s, false).await;
    assert_eq!((summary.manifests, summary.links, summary.blobs), (1, 2, 3));
    for d in &blobs {
        assert!(read_all(&s, "old/app", d).await.is_ok());
    }
    let record = std::fs::read(
        tmp.path()
            .join(format!("repositories/old/app/_manifests/sha256/{}", m.hex)),
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(json["references"].as_array().unwrap().len(), 2, "{json}");
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn a_collection_a_crash_interrupted_is_finished_at_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(tmp.path(), Duration::ZERO).await;
        let cfg = try_push_blob(&s, "r", b"cfg").await.unwrap();
        let subject = push_image(&s, "r", "v1", &["c1", "l1"]).await.unwrap().0;
        let sig = image_manifest(&cfg, &[], Some(&subject));
        let sig_d = Digest::sha256_of(&sig);
        s.put_manifest("r", &sig_d.to_string(), OCI_MANIFEST, Bytes::from(sig))
            .await
            .unwrap();
        s.delete_manifest("r", &subject.to_string()).await.unwrap();
        // The crash: the collection had put its marker and deleted the signature's record,
        // not yet its referrer entry, nor the tombstone it held on a blob.
        std::fs::create_dir_all(tmp.path().join("gc/repositories")).unwrap();
        std::fs::write(tmp.path().join("gc/repositories/r"), "0").unwrap();
        std::fs::remove_file(
            tmp.path()
                .join(format!("repositories/r/_manifests/sha256/{}", sig_d.hex)),
        )
        .unwrap();
        std::fs::create_dir_all(tmp.path().join("gc/blobs")).unwrap();
        std::fs::write(tmp.path().join(format!("gc/blobs/sha256-{}", cfg.hex)), "").unwrap();
    }
    let s = open(tmp.path(), Duration::ZERO).await;
    assert!(!tmp.path().join("gc/repositories/r").exists());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("gc/blobs"))
            .unwrap()
            .count(),
        0
    );
    assert_clean(tmp.path()).await;
    // A push of the tombstoned blob does not wait for a collection that is gone.
    tokio::time::timeout(Duration::from_secs(5), try_push_blob(&s, "r2", b"cfg"))
        .await
        .unwrap()
        .unwrap();
}

/// A filesystem whose blob deletes take a while: a collection's window between its second
/// listing and its deletes, where a push may link a blob it is about to delete, is held wide
/// open, so the race is not left to luck.
struct SlowBlobDeletes(FsBackend, Duration);

impl Backend for SlowBlobDeletes {
    type Appender = <FsBackend as Backend>::Appender;
    async fn put(&self, key: &str, data: Bytes) -> std::io::Result<()> {
        self.0.put(key, data).await
    }
    async fn get(&self, key: &str) -> std::io::Result<Option<Bytes>> {
        self.0.get(key).await
    }
    async fn size(&self, key: &str) -> std::io::Result<Option<u64>> {
        self.0.size(key).await
    }
    async fn modified(&self, key: &str) -> std::io::Result<Option<SystemTime>> {
        self.0.modified(key).await
    }
    async fn read(&self, key: &str, offset: u64, len: u64) -> std::io::Result<ByteStream> {
        self.0.read(key, offset, len).await
    }
    async fn delete(&self, key: &str) -> std::io::Result<()> {
        if key.starts_with("blobs/") {
            tokio::time::sleep(self.1).await;
        }
        self.0.delete(key).await
    }
    async fn delete_all(&self, prefix: &str) -> std::io::Result<()> {
        self.0.delete_all(prefix).await
    }
    async fn list(&self, prefix: &str) -> std::io::Result<Vec<String>> {
        self.0.list(prefix).await
    }
    async fn append(&self, key: &str) -> std::io::Result<Self::Appender> {
        self.0.append(key).await
    }
    async fn commit(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.0.commit(from, to).await
    }
}

/// A store with no grace period on [`SlowBlobDeletes`].
async fn open_slow(dir: &std::path::Path, delay: Duration) -> Arc<Store<SlowBlobDeletes>> {
    let limits = Limits {
        gc_grace: Duration::ZERO,
        gc_every: Duration::ZERO,
        ..Limits::default()
    };
    let backend = SlowBlobDeletes(FsBackend::new(dir).unwrap(), delay);
    Arc::new(Store::open(backend, limits).await.unwrap())
}

/// The window the tombstones close: an upload of bytes that are garbage, its data sent before
/// the collection began (so the committed file looks old), completes while the collection is
/// deleting. Without the rule, the new link would point at deleted bytes.
#[tokio::test]
async fn an_upload_completing_while_its_bytes_are_collected_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open_slow(tmp.path(), Duration::from_millis(300)).await;
    let (m, blobs) = push_image(&s, "a", "v1", &["cfg", "shared-layer"])
        .await
        .unwrap();
    s.delete_manifest("a", &m.to_string()).await.unwrap();
    let x = blobs[1].clone();
    let id = s.start_upload("b", "").await.unwrap();
    s.append_upload(
        "b",
        &id,
        Some(0),
        futures::stream::iter([Ok(Bytes::from_static(b"shared-layer"))]),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let gc = {
        let s = s.clone();
        tokio::spawn(async move { s.collect_garbage(false, &mut |_| {}).await.unwrap() })
    };
    let tombstone = tmp.path().join(format!("gc/blobs/sha256-{}", x.hex));
    let seen = async {
        while !tombstone.exists() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.complete_upload("b", &id, &x.to_string()).await.unwrap();
    let summary = gc.await.unwrap();
    assert!(summary.blobs >= 1, "{summary:?}");
    assert_eq!(read_all(&s, "b", &x).await.unwrap(), b"shared-layer");
    assert_clean(tmp.path()).await;
}

/// An image pushed and kept: repository, tag, and each blob with its content.
type Pushed = (String, String, Vec<(Digest, String)>);

/// The harshest race: no grace period, collections back to back while pushes share blobs with
/// garbage (uploads of the same bytes, mounts, manifests). A push may fail cleanly; whatever
/// succeeded must read back whole, and the store must check clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_racing_pushes_never_lose_what_a_push_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open_slow(tmp.path(), Duration::from_millis(20)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0u32;
            let mut blobs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let summary = s.collect_garbage(false, &mut |_| {}).await.unwrap();
                blobs += summary.blobs;
                runs += 1;
            }
            (runs, blobs)
        })
    };
    let mut pushers = Vec::new();
    for p in 0..4u32 {
        let s = s.clone();
        pushers.push(tokio::spawn(async move {
            let mut kept: Vec<Pushed> = Vec::new();
            let (mut ok, mut failed) = (0u32, 0u32);
            for i in 0..40u32 {
                let repo = format!("race/{}", (p + i) % 3);
                // Shared with other pushers' images, which are deleted as soon as pushed.
                let parts = [
                    format!("cfg-{}", i % 5),
                    format!("base-{}", i % 2),
                    format!("layer-{p}-{i}"),
                ];
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                let tag = format!("t{p}-{i}");
                let outcome = async {
                    // Sometimes the base comes by a mount from another repository.
                    if i % 3 == 0 {
                        let d = Digest::sha256_of(parts[1].as_bytes()).to_string();
                        let _ = s
                            .mount_blob(&repo, &d, &format!("race/{}", (p + i + 1) % 3))
                            .await;
                    }
                    push_image(&s, &repo, &tag, &refs).await
                }
                .await;
                match outcome {
                    Ok((m, blobs)) => {
                        ok += 1;
                        if i % 2 == 0 {
                            // Garbage for the next collection.
                            s.delete_manifest(&repo, &m.to_string()).await.unwrap();
                        } else {
                            let contents = blobs.into_iter().zip(parts.iter().cloned()).collect();
                            kept.push((repo, tag, contents));
                        }
                    }
                    Err(
                        StorageError::ManifestBlobUnknown(_)
                        | StorageError::UploadInvalid(_)
                        | StorageError::BlobUnknown(_),
                    ) => failed += 1,
                    Err(e) => panic!("push failed with {e}"),
                }
            }
            (kept, ok, failed)
        }));
    }
    let mut kept = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for p in pushers {
        let (k, o, f) = p.await.unwrap();
        kept.extend(k);
        ok += o;
        failed += f;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, collected) = gc.await.unwrap();
    eprintln!(
        "{runs} collections ({collected} blobs freed) raced {ok} pushes ({failed} failed cleanly)"
    );
    assert!(runs >= 3, "only {runs} collections ran");
    for (repo, tag, contents) in &kept {
        s.get_manifest(repo, tag).await.unwrap();
        for (d, content) in contents {
            assert_eq!(
                read_all(&s, repo, d).await.unwrap(),
                content.as_bytes(),
                "{repo}:{tag} lost {d}"
            );
        }
    }
    // A last collection frees every deleted image; the kept ones stay whole.
    collect(&s, false).await;
    let mut live = HashSet::new();
    for (repo, tag, contents) in &kept {
        let (meta, _) = s.get_manifest(repo, tag).await.unwrap();
        live.insert(meta.digest);
        for (d, content) in contents {
            assert_eq!(read_all(&s, repo, d).await.unwrap(), content.as_bytes());
        }
    }
    assert_clean(tmp.path()).await;
}
