//! Eviction against a real filesystem store: the least recently pulled cached images go first,
//! across the whole cache; shared blobs count once; pushed content is never evicted; an image
//! being read is not evicted; last-pull times survive a restart.

use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use trow_storage::backend::FsBackend;
use trow_storage::digest::Digest;
use trow_storage::store::{FillRole, Garbage};
use trow_storage::{Limits, Store};

mod support;
use support::*;

async fn open(dir: &std::path::Path, max: Option<u64>) -> Arc<Store<FsBackend>> {
    let limits = Limits {
        gc_every: Duration::ZERO,
        cache_max_size: max,
        pull_guard: Duration::ZERO,
        ..Limits::default()
    };
    Arc::new(
        Store::open(FsBackend::new(dir).unwrap(), limits)
            .await
            .unwrap(),
    )
}

/// Fills a blob of a cached repository as the proxy does.
async fn fill(s: &Store<FsBackend>, repo: &str, content: &[u8]) -> Digest {
    let d = Digest::sha256_of(content);
    match s.begin_fill(repo, &d.to_string()).await.unwrap() {
        FillRole::Present => {}
        FillRole::Filler { upload_id, .. } => {
            let data = Bytes::copy_from_slice(content);
            s.append_upload(repo, &upload_id, Some(0), futures::stream::iter([Ok(data)]))
                .await
                .unwrap();
            s.complete_upload(repo, &upload_id, &d.to_string())
                .await
                .unwrap();
        }
        FillRole::Follower => panic!("nobody else fills"),
    }
    d
}

/// A cached image: its manifest stored, its blobs filled. Returns (manifest digest, blobs).
async fn cache_image(
    s: &Store<FsBackend>,
    repo: &str,
    tag: &str,
    parts: &[&[u8]],
) -> (Digest, Vec<Digest>) {
    let mut blobs = Vec::new();
    for p in parts {
        blobs.push(fill(s, repo, p).await);
    }
    let layers: Vec<&Digest> = blobs[1..].iter().collect();
    let m = image_manifest(&blobs[0], &layers, None);
    let meta = s
        .put_cached_manifest(repo, tag, OCI_MANIFEST, Bytes::from(m))
        .await
        .unwrap();
    (Digest::parse(&meta.digest).unwrap(), blobs)
}

/// More images than any candidate window (the original Trow looked at 500), pulled in the
/// reverse of the order they were cached: the least recently pulled is the newest, and it is
/// the one evicted. The pull times come from the file the last run saved.
#[tokio::test]
async fn the_least_recently_pulled_image_goes_first_across_the_whole_cache() {
    let tmp = scratch();
    const N: usize = 520;
    let mut images = Vec::new();
    {
        let s = open(tmp.path(), None).await;
        for i in 0..N {
            let repo = format!("f/up.example/r{}", i % 7);
            let layer = format!("layer {i} ").repeat(100);
            let (m, blobs) = cache_image(
                &s,
                &repo,
                "t",
                &[format!("cfg {i}").as_bytes(), layer.as_bytes()],
            )
            .await;
            images.push((repo, m, blobs));
        }
    }
    // As if the last run had saved these: image i pulled i seconds before the others, so the
    // last cached is the least recently pulled.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut saved = String::new();
    for (i, (repo, m, blobs)) in images.iter().enumerate() {
        for d in std::iter::once(m).chain(blobs) {
            saved.push_str(&format!("{} {repo}@{d}\n", now - 600_000 - i as u64 * 1000));
        }
    }
    std::fs::create_dir_all(tmp.path().join("state")).unwrap();
    std::fs::write(tmp.path().join("state/pulls"), saved).unwrap();

    let s = open(tmp.path(), None).await;
    let all = s.evict(u64::MAX, 0, &mut |_| {}).await.unwrap();
    assert_eq!(all.images, 0, "within bounds: nothing goes");
    // One layer's worth (plus a little) too many.
    let max = all.cached - 1000;
    let mut evicted = Vec::new();
    let summary = s.evict(max, 0, &mut |g| evicted.push(g)).await.unwrap();
    let (repo, m, blobs) = &images[N - 1];
    assert_eq!(summary.images, 1, "{summary:?}");
    assert!(
        evicted.contains(&Garbage::Manifest {
            repository: repo.clone(),
            digest: m.to_string()
        }),
        "{evicted:?}"
    );
    for d in std::iter::once(m).chain(blobs) {
        assert!(
            !blob_path(tmp.path(), d).exists(),
            "{d} of the evicted image is still stored"
        );
    }
    assert!(s.get_manifest(repo, &m.to_string()).await.is_err());
    for (repo, m, blobs) in &images[..N - 1] {
        s.get_manifest(repo, &m.to_string()).await.unwrap();
        for d in blobs {
            s.stat_blob(repo, &d.to_string()).await.unwrap();
        }
    }
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn shared_blobs_count_once_and_pushed_content_is_never_evicted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), None).await;
    let shared = vec![7u8; 10_000];
    let pushed_layer = vec![8u8; 20_000];
    let (a, a_blobs) = cache_image(&s, "f/up/a", "1", &[b"cfg a", &pushed_layer, &shared]).await;
    let (b, _) = cache_image(&s, "f/up/b", "1", &[b"cfg b", &shared]).await;
    // The same layer pushed to a repository of its own.
    let id = s.start_upload("mine", "").await.unwrap();
    s.append_upload(
        "mine",
        &id,
        Some(0),
        futures::stream::iter([Ok(Bytes::from(pushed_layer.clone()))]),
    )
    .await
    .unwrap();
    let pushed_d = Digest::sha256_of(&pushed_layer);
    s.complete_upload("mine", &id, &pushed_d.to_string())
        .await
        .unwrap();
    assert_eq!(pushed_d, a_blobs[1]);

    let summary = s.evict(u64::MAX, 0, &mut |_| {}).await.unwrap();
    let manifests: u64 = [&a, &b]
        .iter()
        .map(|d| std::fs::metadata(blob_path(tmp.path(), d)).unwrap().len())
        .sum();
    assert_eq!(
        summary.cached,
        5 + 5 + shared.len() as u64 + manifests,
        "the shared layer once, the pushed one not at all"
    );
    // Evict everything the cache holds.
    let summary = s.evict(0, 0, &mut |_| {}).await.unwrap();
    assert_eq!(summary.images, 2);
    assert_eq!(summary.bytes, 5 + 5 + shared.len() as u64 + manifests);
    assert!(blob_path(tmp.path(), &pushed_d).exists());
    let mut read = s
        .read_blob("mine", &pushed_d.to_string(), 0, 0)
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(c) = read.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, pushed_layer);
    assert_clean(tmp.path()).await;
}

#[tokio::test]
async fn pull_times_survive_a_restart_and_an_image_being_read_is_not_evicted() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new);
    {
        let s = open(tmp.path(), None).await;
        old = cache_image(&s, "f/up/old", "1", &[b"cfg old", &[1u8; 5000]]).await;
        new = cache_image(&s, "f/up/new", "1", &[b"cfg new", &[2u8; 5000]]).await;
        // Pulled in the other order than cached.
        s.stat_manifest("f/up/new", "1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.stat_manifest("f/up/old", "1").await.unwrap();
        s.save_pulls().await.unwrap();
    }
    // After a restart, the saved order holds: `new` was pulled less recently.
    let s = open(tmp.path(), None).await;
    let cached = s.evict(u64::MAX, 0, &mut |_| {}).await.unwrap().cached;
    let summary = s.evict(cached - 1, 0, &mut |_| {}).await.unwrap();
    assert_eq!(summary.images, 1, "{summary:?}");
    assert!(s.stat_manifest("f/up/new", "1").await.is_err());
    assert!(!blob_path(tmp.path(), &new.1[1]).exists());

    // A client reads `old`'s layer: evicting everything leaves it.
    let third = cache_image(&s, "f/up/third", "1", &[b"cfg third", &[3u8; 5000]]).await;
    let mut reading = s
        .read_blob("f/up/old", &old.1[1].to_string(), 0, 0)
        .await
        .unwrap();
    let summary = s.evict(0, 0, &mut |_| {}).await.unwrap();
    assert_eq!((summary.images, summary.busy), (1, 1), "{summary:?}");
    assert!(s.stat_manifest("f/up/third", "1").await.is_err());
    let mut got = Vec::new();
    while let Some(c) = reading.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, vec![1u8; 5000]);
    drop(reading);
    // Read to the end and dropped: now it can go.
    let summary = s.evict(0, 0, &mut |_| {}).await.unwrap();
    assert_eq!(summary.images, 1, "{summary:?}");
    assert!(!blob_path(tmp.path(), &old.1[1]).exists());
    let _ = third;
    assert_clean(tmp.path()).await;
}

/// Without a restart in between, the order is that of the pulls (in memory), and the order
/// comes from the last pull, not from when the image was cached.
#[tokio::test]
async fn a_pull_makes_an_image_recent_again() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), None).await;
    let a = cache_image(&s, "f/up/a", "1", &[b"cfg a", &[1u8; 5000]]).await;
    let b = cache_image(&s, "f/up/b", "1", &[b"cfg b", &[2u8; 5000]]).await;
    s.stat_manifest("f/up/a", "1").await.unwrap();
    s.stat_manifest("f/up/b", "1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // a is pulled again: b is now the least recently pulled.
    let mut r = s
        .read_blob("f/up/a", &a.1[1].to_string(), 0, 0)
        .await
        .unwrap();
    while r.next().await.is_some() {}
    drop(r);
    let cached = s.evict(u64::MAX, 0, &mut |_| {}).await.unwrap().cached;
    let summary = s.evict(cached - 1, 0, &mut |_| {}).await.unwrap();
    assert_eq!(summary.images, 1);
    assert!(s.stat_manifest("f/up/b", "1").await.is_err());
    s.stat_manifest("f/up/a", "1").await.unwrap();
    let _ = b;
    assert_clean(tmp.path()).await;
}

/// A client may fetch a manifest's bytes as a blob, which links them: evicting the image
/// frees them too, rather than leaving bytes that still count against the disk.
#[tokio::test]
async fn an_evicted_image_takes_its_manifest_bytes_fetched_as_a_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), None).await;
    let (m, blobs) = cache_image(&s, "f/up/m", "1", &[b"cfg m", &[4u8; 3000]]).await;
    let (_, bytes) = s.get_manifest("f/up/m", "1").await.unwrap();
    assert_eq!(fill(&s, "f/up/m", &bytes).await, m);
    let summary = s.evict(0, 0, &mut |_| {}).await.unwrap();
    assert_eq!(summary.images, 1, "{summary:?}");
    for d in std::iter::once(&m).chain(&blobs) {
        assert!(!blob_path(tmp.path(), d).exists(), "{d} is still stored");
    }
    assert!(s.stat_blob("f/up/m", &m.to_string()).await.is_err());
    assert_clean(tmp.path()).await;
}

/// Links belong to one repository: evicting an image drops its repository's link to a layer
/// another cached repository shares, whose bytes stay until that one goes too.
#[tokio::test]
async fn a_layer_shared_across_cached_repositories_goes_with_the_last_image() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), None).await;
    let shared = vec![9u8; 8000];
    let a = cache_image(&s, "f/up/a", "1", &[b"cfg a", &shared]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.stat_manifest("f/up/a", "1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = cache_image(&s, "f/up/b", "1", &[b"cfg b", &shared]).await;
    s.stat_manifest("f/up/b", "1").await.unwrap();
    let cached = s.evict(u64::MAX, 0, &mut |_| {}).await.unwrap().cached;
    let summary = s.evict(cached - 1, 0, &mut |_| {}).await.unwrap();
    assert_eq!(summary.images, 1, "{summary:?}");
    assert!(
        s.stat_blob("f/up/a", &a.1[1].to_string()).await.is_err(),
        "f/up/a's link stays"
    );
    assert!(
        blob_path(tmp.path(), &shared_digest(&shared)).exists(),
        "b still needs the bytes"
    );
    s.stat_blob("f/up/b", &b.1[1].to_string()).await.unwrap();
    let summary = s.evict(0, 0, &mut |_| {}).await.unwrap();
    assert_eq!(summary.images, 1, "{summary:?}");
    assert!(!blob_path(tmp.path(), &shared_digest(&shared)).exists());
    assert_clean(tmp.path()).await;
}

fn shared_digest(content: &[u8]) -> Digest {
    Digest::sha256_of(content)
}

/// An index cached with a tag on one of its platform manifests too: evicting the index takes
/// that tag with the manifest, leaving no tag pointing at nothing.
#[tokio::test]
async fn evicting_an_index_takes_the_tags_of_its_platform_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), None).await;
    let repo = "f/up/multi";
    let (child, _) = cache_image(&s, repo, "v1-amd64", &[b"cfg amd64", &[5u8; 4000]]).await;
    s.put_cached_manifest(repo, "v1", OCI_INDEX, Bytes::from(index(&[&child])))
        .await
        .unwrap();
    let summary = s.evict(0, 0, &mut |_| {}).await.unwrap();
    assert_eq!(
        summary.images, 1,
        "one image: the index with its platform manifest"
    );
    for tag in ["v1", "v1-amd64"] {
        assert!(
            s.stat_manifest(repo, tag).await.is_err(),
            "{tag} still resolves"
        );
    }
    assert_clean(tmp.path()).await;
}
