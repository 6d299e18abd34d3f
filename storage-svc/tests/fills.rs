//! Fills: one filler per blob however many callers, readers that follow the bytes as they
//! arrive, nothing stored (and the last bytes withheld) when the digest is wrong, stalled fills
//! taken over from the bytes already stored, failed fills deleted.

use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use trow_storage::backend::FsBackend;
use trow_storage::digest::Digest;
use trow_storage::error::StorageError;
use trow_storage::store::FillRole;
use trow_storage::{Limits, Store};

const REPO: &str = "f/up.example/team/app";

async fn open(dir: &std::path::Path, fill_timeout: Duration) -> Arc<Store<FsBackend>> {
    let limits = Limits {
        fill_timeout,
        ..Limits::default()
    };
    Arc::new(
        Store::open(FsBackend::new(dir).unwrap(), limits)
            .await
            .unwrap(),
    )
}

fn filler(role: FillRole) -> (String, u64) {
    match role {
        FillRole::Filler { upload_id, offset } => (upload_id, offset),
        other => panic!("expected to fill, got {other:?}"),
    }
}

/// Announces a fill of `size` bytes to `id` and starts its append on a stream fed by hand
/// through the returned sender.
fn append_by_hand(
    s: &Arc<Store<FsBackend>>,
    id: &str,
    size: u64,
) -> (
    tokio::sync::mpsc::UnboundedSender<Bytes>,
    tokio::task::JoinHandle<Result<u64, StorageError>>,
) {
    s.announce_fill_size(REPO, id, size).unwrap();
    let (tx, stream) = fed();
    let (s, id) = (s.clone(), id.to_string());
    let append = tokio::spawn(async move { s.append_upload(REPO, &id, Some(0), stream).await });
    (tx, append)
}

/// A stream of `parts` fed by hand, so a test decides when each part arrives.
fn fed() -> (
    tokio::sync::mpsc::UnboundedSender<Bytes>,
    impl futures::Stream<Item = Result<Bytes, StorageError>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok);
    (tx, stream)
}

async fn collect(mut s: trow_storage::store::FillStream) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

#[tokio::test]
async fn one_filler_and_readers_that_follow_the_bytes_as_they_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::from_secs(10)).await;
    let blob = vec![5u8; 3 << 20];
    let d = Digest::sha256_of(&blob).to_string();

    let (id, offset) = filler(s.begin_fill(REPO, &d).await.unwrap());
    assert_eq!(offset, 0);
    for _ in 0..5 {
        assert_eq!(s.begin_fill(REPO, &d).await.unwrap(), FillRole::Follower);
    }
    let (tx, append) = append_by_hand(&s, &id, blob.len() as u64);
    tx.send(Bytes::copy_from_slice(&blob[..1 << 20])).unwrap();

    // A reader gets the first bytes while the rest has not arrived.
    let (size, mut reader) = s.read_fill(REPO, &d, 0, 0).await.unwrap();
    assert_eq!(size, blob.len() as u64);
    let first = tokio::time::timeout(Duration::from_secs(5), reader.next())
        .await
        .expect("the first bytes come before the fill completes")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], &blob[..first.len()]);
    // A ranged reader of the part being filled.
    let ranged = {
        let s = s.clone();
        let d = d.clone();
        tokio::spawn(async move {
            let (_, r) = s.read_fill(REPO, &d, 2 << 20, 1000).await.unwrap();
            collect(r).await
        })
    };

    tx.send(Bytes::copy_from_slice(&blob[1 << 20..])).unwrap();
    drop(tx);
    assert_eq!(append.await.unwrap().unwrap(), blob.len() as u64);
    s.complete_upload(REPO, &id, &d).await.unwrap();

    let mut got = first.to_vec();
    got.extend(collect(reader).await.unwrap());
    assert_eq!(got, blob);
    assert_eq!(
        ranged.await.unwrap().unwrap(),
        blob[2 << 20..(2 << 20) + 1000]
    );
    assert_eq!(s.begin_fill(REPO, &d).await.unwrap(), FillRole::Present);
    assert_eq!(s.stat_blob(REPO, &d).await.unwrap(), blob.len() as u64);
}

/// Readers at every distance from the filler, some close enough to be served the newest chunks
/// from memory, some far behind (read back from the file), some ranged across chunk edges, get
/// exactly the blob's bytes, whatever sizes the chunks came in.
#[tokio::test]
async fn readers_near_and_far_behind_the_filler_get_exact_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::from_secs(10)).await;
    // Every byte differs from its neighbours, so a chunk served at the wrong offset shows.
    let blob: Vec<u8> = (0..(6u32 << 20) + 12_345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let d = Digest::sha256_of(&blob).to_string();
    let (id, _) = filler(s.begin_fill(REPO, &d).await.unwrap());
    let (tx, append) = append_by_hand(&s, &id, blob.len() as u64);
    let read = |offset: u64, length: u64| {
        let s = s.clone();
        let d = d.clone();
        tokio::spawn(async move {
            let (_, r) = s.read_fill(REPO, &d, offset, length).await.unwrap();
            collect(r).await.unwrap()
        })
    };
    let mut readers = vec![(0, 0, read(0, 0)), (777, 300_001, read(777, 300_001))];
    let sizes = [
        1usize,
        100 << 10,
        256 << 10,
        7_000,
        256 << 10,
        300 << 10,
        64 << 10,
    ];
    let mut at = 0;
    let mut i = 0;
    while at < blob.len() {
        let n = sizes[i % sizes.len()].min(blob.len() - at);
        tx.send(Bytes::copy_from_slice(&blob[at..at + n])).unwrap();
        at += n;
        i += 1;
        if i % 9 == 0 {
            // Let the writes and the readers move, then start readers near the end of what was
            // sent (mostly in memory) and at the start (from the file).
            tokio::time::sleep(Duration::from_millis(5)).await;
            let near = (at as u64).saturating_sub(100_000);
            readers.push((near, 0, read(near, 0)));
            readers.push((13, 0, read(13, 0)));
            let length = (1u64 << 20).min(blob.len() as u64 - near);
            readers.push((near, length, read(near, length)));
        }
    }
    drop(tx);
    assert_eq!(append.await.unwrap().unwrap(), blob.len() as u64);
    s.complete_upload(REPO, &id, &d).await.unwrap();
    for (offset, length, reader) in readers {
        let got = reader.await.unwrap();
        let end = if length == 0 {
            blob.len()
        } else {
            (offset + length) as usize
        };
        assert!(
            got == blob[offset as usize..end],
            "reader from {offset} ({length} bytes) got {} wrong bytes",
            got.len()
        );
    }
}

#[tokio::test]
async fn wrong_bytes_are_never_stored_nor_given_out_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::from_secs(10)).await;
    let claimed = Digest::sha256_of(b"the real layer").to_string();
    let lie = b"something else!".to_vec();

    let (id, _) = filler(s.begin_fill(REPO, &claimed).await.unwrap());
    s.announce_fill_size(REPO, &id, lie.len() as u64).unwrap();
    let (_, reader) = s.read_fill(REPO, &claimed, 0, 0).await.unwrap();
    let reading = tokio::spawn(collect(reader));
    s.append_upload(
        REPO,
        &id,
        Some(0),
        futures::stream::iter([Ok(Bytes::from(lie.clone()))]),
    )
    .await
    .unwrap();
    assert!(matches!(
        s.complete_upload(REPO, &id, &claimed).await,
        Err(StorageError::DigestInvalid(_))
    ));
    assert!(
        matches!(reading.await.unwrap(), Err(StorageError::FillFailed(_))),
        "the reader must fail rather than end with every byte of a wrong blob"
    );
    assert!(matches!(
        s.stat_blob(REPO, &claimed).await,
        Err(StorageError::BlobUnknown(_))
    ));
    // The next caller starts over; the failed fill left no repository behind.
    filler(s.begin_fill(REPO, &claimed).await.unwrap());
    let report = trow_storage::fsck::check_dir(tmp.path(), std::time::SystemTime::now())
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_stalled_fill_is_taken_over_from_the_bytes_already_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::from_millis(500)).await;
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256_of(&blob).to_string();

    let (id, _) = filler(s.begin_fill(REPO, &d).await.unwrap());
    // The first filler sends 70,000 bytes, then hangs with its append open.
    let (tx, stalled) = append_by_hand(&s, &id, blob.len() as u64);
    tx.send(Bytes::copy_from_slice(&blob[..70_000])).unwrap();
    let (_, reader) = s.read_fill(REPO, &d, 0, 0).await.unwrap();
    let first_reader = tokio::spawn(collect(reader));
    assert!(
        matches!(
            first_reader.await.unwrap(),
            Err(StorageError::FillStalled(_))
        ),
        "a reader of a stalled fill gives up, so that its proxy asks again"
    );

    let (same, offset) = filler(s.begin_fill(REPO, &d).await.unwrap());
    assert_eq!((same.as_str(), offset), (id.as_str(), 70_000));
    assert!(
        matches!(stalled.await.unwrap(), Err(StorageError::UploadBusy(_))),
        "the stalled append is stopped"
    );
    // The old filler's late bytes go nowhere.
    let _ = tx.send(Bytes::from_static(b"late"));
    assert_eq!(s.begin_fill(REPO, &d).await.unwrap(), FillRole::Follower);
    let (_, reader) = s.read_fill(REPO, &d, 0, 0).await.unwrap();
    let second_reader = tokio::spawn(collect(reader));
    s.append_upload(
        REPO,
        &id,
        Some(offset),
        futures::stream::iter([Ok(Bytes::copy_from_slice(&blob[70_000..]))]),
    )
    .await
    .unwrap();
    s.complete_upload(REPO, &id, &d).await.unwrap();
    assert_eq!(second_reader.await.unwrap().unwrap(), blob);
    let report = trow_storage::fsck::check_dir(tmp.path(), std::time::SystemTime::now())
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[tokio::test]
async fn fills_and_cached_manifests_only_in_the_cache_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::from_secs(10)).await;
    let d = Digest::sha256_of(b"x").to_string();
    assert!(matches!(
        s.begin_fill("team/app", &d).await,
        Err(StorageError::Denied(_))
    ));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":1}},"layers":[]}}"#
    );
    let content = Bytes::from(manifest);
    assert!(matches!(
        s.put_cached_manifest("team/app", "1", "", content.clone())
            .await,
        Err(StorageError::Denied(_))
    ));
    // In the cache, the manifest stands before its blobs do; fsck accepts that there.
    s.put_cached_manifest(REPO, "1", "", content).await.unwrap();
    assert!(s.stat_manifest(REPO, "1").await.unwrap().size > 0);
    let report = trow_storage::fsck::check_dir(tmp.path(), std::time::SystemTime::now())
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_fill_left_by_a_stopped_process_is_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Digest::sha256_of(b"abc").to_string();
    let id = {
        let s = open(tmp.path(), Duration::from_secs(10)).await;
        let (id, _) = filler(s.begin_fill(REPO, &d).await.unwrap());
        s.append_upload(
            REPO,
            &id,
            Some(0),
            futures::stream::iter([Ok(Bytes::from_static(b"ab"))]),
        )
        .await
        .unwrap();
        id
    };
    let s = open(tmp.path(), Duration::from_secs(10)).await;
    assert!(!tmp.path().join("uploads").join(&id).exists());
    filler(s.begin_fill(REPO, &d).await.unwrap());
}

/// The scratch directories in `dir`'s `uploads/`.
fn upload_dirs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("uploads")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn bytes_past_the_announced_size_fail_the_fill_and_free_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), Duration::from_secs(10)).await;
    let blob = vec![7u8; 100_000];
    let d = Digest::sha256_of(&blob).to_string();
    let (id, _) = filler(s.begin_fill(REPO, &d).await.unwrap());
    s.announce_fill_size(REPO, &id, 60_000).unwrap();
    let (_, reader) = s.read_fill(REPO, &d, 0, 0).await.unwrap();
    let reader = tokio::spawn(collect(reader));
    let parts = [
        Ok(Bytes::copy_from_slice(&blob[..50_000])),
        Ok(Bytes::copy_from_slice(&blob[50_000..])),
    ];
    let appended = s
        .append_upload(REPO, &id, Some(0), futures::stream::iter(parts))
        .await;
    assert!(
        matches!(appended, Err(StorageError::UploadInvalid(_))),
        "{appended:?}"
    );
    assert!(matches!(
        reader.await.unwrap(),
        Err(StorageError::FillFailed(_))
    ));
    assert_eq!(
        upload_dirs(tmp.path()),
        0,
        "the failed fill's bytes are still in uploads/"
    );
    // The next caller starts over.
    filler(s.begin_fill(REPO, &d).await.unwrap());
}

#[tokio::test]
async fn a_stopped_fill_nobody_takes_over_is_dropped_a_running_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(300);
    let s = open(tmp.path(), timeout).await;
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256_of(&blob).to_string();

    // A filler whose append is still open (a slow upstream) is only stalled.
    let (id, _) = filler(s.begin_fill(REPO, &d).await.unwrap());
    let (tx, running) = append_by_hand(&s, &id, blob.len() as u64);
    tx.send(Bytes::copy_from_slice(&blob[..70_000])).unwrap();
    tokio::time::sleep(timeout * 3).await;
    assert_eq!(s.drop_failed_fills().await.unwrap(), 0);
    assert_eq!(s.upload_status(REPO, &id).await.unwrap(), 70_000);

    // Its upstream breaks off: the append ends, the bytes stay for a take-over...
    drop(tx);
    running.await.unwrap().unwrap();
    let (same, offset) = filler(s.begin_fill(REPO, &d).await.unwrap());
    assert_eq!((same.as_str(), offset), (id.as_str(), 70_000));
    assert_eq!(s.drop_failed_fills().await.unwrap(), 0, "just taken over");
    // ...and once nobody moved it for twice the fill timeout, they go.
    tokio::time::sleep(timeout * 2).await;
    assert_eq!(s.drop_failed_fills().await.unwrap(), 1);
    assert_eq!(upload_dirs(tmp.path()), 0);
    assert!(s.upload_status(REPO, &id).await.is_err());
    filler(s.begin_fill(REPO, &d).await.unwrap());
}
