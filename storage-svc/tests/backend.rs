//! The filesystem backend's batch put (`put_all`): what a batch leaves in place, and what a
//! batch that fails leaves (nothing of itself, no temp files).

use bytes::Bytes;
use trow_storage::backend::{Backend, FsBackend, Put};

fn temp_files(root: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(root.join("tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_batch_puts_new_objects_moves_scratch_files_and_keeps_existing_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let b = FsBackend::new(tmp.path()).unwrap();
    b.put("a/old", Bytes::from_static(b"old")).await.unwrap();
    b.put("k/kept", Bytes::from_static(b"kept")).await.unwrap();
    b.put("up/1/data", Bytes::from_static(b"scratch"))
        .await
        .unwrap();
    b.put_all(vec![
        Put::Bytes("a/old".into(), Bytes::from_static(b"new")),
        Put::Existing("k/kept".into()),
        Put::Moved {
            from: "up/1/data".into(),
            to: "blobs/x/y".into(),
        },
        Put::Bytes("deep/new/dirs/z".into(), Bytes::from_static(b"z")),
        // An existing object that is not there is not an error (a collection took it).
        Put::Existing("k/gone".into()),
    ])
    .await
    .unwrap();
    assert_eq!(b.get("a/old").await.unwrap().unwrap(), "new");
    assert_eq!(b.get("k/kept").await.unwrap().unwrap(), "kept");
    assert_eq!(b.get("blobs/x/y").await.unwrap().unwrap(), "scratch");
    assert_eq!(b.get("up/1/data").await.unwrap(), None);
    assert_eq!(b.get("deep/new/dirs/z").await.unwrap().unwrap(), "z");
    assert_eq!(b.get("k/gone").await.unwrap(), None);
    assert!(temp_files(tmp.path()).is_empty());
    // An empty batch is nothing.
    b.put_all(Vec::new()).await.unwrap();
}

#[tokio::test]
async fn a_batch_that_fails_before_its_renames_leaves_nothing_of_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let b = FsBackend::new(tmp.path()).unwrap();
    b.put("a/x", Bytes::from_static(b"before")).await.unwrap();
    // `f` is a file, so nothing can be put under `f/`: the last object fails to stage.
    b.put("f", Bytes::from_static(b"file")).await.unwrap();
    let failed = b
        .put_all(vec![
            Put::Bytes("a/x".into(), Bytes::from_static(b"after")),
            Put::Bytes("a/y".into(), Bytes::from_static(b"y")),
            Put::Bytes("f/z".into(), Bytes::from_static(b"z")),
        ])
        .await;
    assert!(failed.is_err());
    assert_eq!(b.get("a/x").await.unwrap().unwrap(), "before");
    assert_eq!(b.get("a/y").await.unwrap(), None);
    assert!(temp_files(tmp.path()).is_empty());
    // A missing scratch file fails the batch the same way.
    let failed = b
        .put_all(vec![
            Put::Bytes("a/y".into(), Bytes::from_static(b"y")),
            Put::Moved {
                from: "up/none/data".into(),
                to: "blobs/x/none".into(),
            },
        ])
        .await;
    assert!(failed.is_err());
    assert_eq!(b.get("a/y").await.unwrap(), None);
    assert!(temp_files(tmp.path()).is_empty());
}

/// What the default `put_all` (an object store's: puts one after another) does, through a
/// backend that keeps the filesystem's objects but not its batch.
#[derive(Clone)]
struct OneByOne(FsBackend);

impl Backend for OneByOne {
    type Appender = std::fs::File;
    async fn put(&self, key: &str, data: Bytes) -> std::io::Result<()> {
        self.0.put(key, data).await
    }
    async fn get(&self, key: &str) -> std::io::Result<Option<Bytes>> {
        self.0.get(key).await
    }
    async fn size(&self, key: &str) -> std::io::Result<Option<u64>> {
        self.0.size(key).await
    }
    async fn modified(&self, key: &str) -> std::io::Result<Option<std::time::SystemTime>> {
        self.0.modified(key).await
    }
    async fn read(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> std::io::Result<trow_storage::backend::ByteStream> {
        self.0.read(key, offset, len).await
    }
    async fn delete(&self, key: &str) -> std::io::Result<()> {
        self.0.delete(key).await
    }
    async fn delete_all(&self, prefix: &str) -> std::io::Result<()> {
        self.0.delete_all(prefix).await
    }
    async fn list(&self, prefix: &str) -> std::io::Result<Vec<String>> {
        self.0.list(prefix).await
    }
    async fn append(&self, key: &str) -> std::io::Result<std::fs::File> {
        self.0.append(key).await
    }
    async fn commit(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.0.commit(from, to).await
    }
}

#[tokio::test]
async fn the_default_batch_is_the_same_objects_put_one_after_another() {
    let tmp = tempfile::tempdir().unwrap();
    let b = OneByOne(FsBackend::new(tmp.path()).unwrap());
    b.put("k/kept", Bytes::from_static(b"kept")).await.unwrap();
    b.put("up/1/data", Bytes::from_static(b"scratch"))
        .await
        .unwrap();
    b.put_all(vec![
        Put::Existing("k/kept".into()),
        Put::Moved {
            from: "up/1/data".into(),
            to: "blobs/x/y".into(),
        },
        Put::Bytes("t/tag".into(), Bytes::from_static(b"tag")),
    ])
    .await
    .unwrap();
    assert_eq!(b.get("k/kept").await.unwrap().unwrap(), "kept");
    assert_eq!(b.get("blobs/x/y").await.unwrap().unwrap(), "scratch");
    assert_eq!(b.get("up/1/data").await.unwrap(), None);
    assert_eq!(b.get("t/tag").await.unwrap().unwrap(), "tag");
    // A later object fails: the earlier ones are in place (a prefix), nothing after.
    b.put("f", Bytes::from_static(b"file")).await.unwrap();
    assert!(
        b.put_all(vec![
            Put::Bytes("t/one".into(), Bytes::from_static(b"1")),
            Put::Bytes("f/two".into(), Bytes::from_static(b"2")),
            Put::Bytes("t/three".into(), Bytes::from_static(b"3")),
        ])
        .await
        .is_err()
    );
    assert_eq!(b.get("t/one").await.unwrap().unwrap(), "1");
    assert_eq!(b.get("t/three").await.unwrap(), None);
}

#[tokio::test]
async fn staged_objects_wait_in_temp_files_until_a_batch_moves_them() {
    let tmp = tempfile::tempdir().unwrap();
    let b = FsBackend::new(tmp.path()).unwrap();
    b.put("k/kept", Bytes::from_static(b"kept")).await.unwrap();
    let record = b
        .stage(Put::Bytes("r/record".into(), Bytes::from_static(b"record")))
        .await
        .unwrap();
    let tag = b
        .stage(Put::Bytes("t/tag".into(), Bytes::from_static(b"tag")))
        .await
        .unwrap();
    let unused = b
        .stage(Put::Bytes("u/unused".into(), Bytes::from_static(b"u")))
        .await
        .unwrap();
    assert!(matches!(record, Put::Staged { .. }));
    // Staged: written, not in place.
    assert_eq!(temp_files(tmp.path()).len(), 3);
    assert_eq!(b.get("r/record").await.unwrap(), None);
    assert_eq!(b.get("t/tag").await.unwrap(), None);
    b.put_all(vec![Put::Existing("k/kept".into()), record])
        .await
        .unwrap();
    assert_eq!(b.get("r/record").await.unwrap().unwrap(), "record");
    // Deferred: in place (visible) before its flush.
    let flush = b.put_all_deferred(vec![tag]).await.unwrap();
    assert_eq!(b.get("t/tag").await.unwrap().unwrap(), "tag");
    flush.wait().await.unwrap();
    b.unstage(unused).await;
    assert_eq!(b.get("u/unused").await.unwrap(), None);
    assert!(temp_files(tmp.path()).is_empty());
    // A batch that fails removes the staged temp files it did not move.
    b.put("f", Bytes::from_static(b"file")).await.unwrap();
    let staged = b
        .stage(Put::Bytes("a/z".into(), Bytes::from_static(b"z")))
        .await
        .unwrap();
    let failed = b
        .put_all_deferred(vec![
            Put::Bytes("f/x".into(), Bytes::from_static(b"x")),
            staged,
        ])
        .await;
    assert!(failed.is_err());
    assert_eq!(b.get("a/z").await.unwrap(), None);
    assert!(temp_files(tmp.path()).is_empty());
}

#[tokio::test]
async fn without_a_staging_area_a_staged_object_is_put_by_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let b = OneByOne(FsBackend::new(tmp.path()).unwrap());
    let tag = b
        .stage(Put::Bytes("t/tag".into(), Bytes::from_static(b"tag")))
        .await
        .unwrap();
    assert_eq!(tag, Put::Bytes("t/tag".into(), Bytes::from_static(b"tag")));
    assert_eq!(b.get("t/tag").await.unwrap(), None);
    let flush = b.put_all_deferred(vec![tag]).await.unwrap();
    assert_eq!(b.get("t/tag").await.unwrap().unwrap(), "tag");
    flush.wait().await.unwrap();
}

/// A staged scratch file (an upload's data) belongs to its upload, not to the batch: a batch
/// that fails, or an unstage, leaves it where it was.
#[tokio::test]
async fn a_failed_batch_and_an_unstage_leave_a_staged_scratch_file() {
    let tmp = tempfile::tempdir().unwrap();
    let b = FsBackend::new(tmp.path()).unwrap();
    b.put("up/1/data", Bytes::from_static(b"scratch"))
        .await
        .unwrap();
    // `f` is a file, so nothing can be put under `f/`.
    b.put("f", Bytes::from_static(b"file")).await.unwrap();
    let moved = Put::Moved {
        from: "up/1/data".into(),
        to: "blobs/x/y".into(),
    };
    let staged = b.stage(moved.clone()).await.unwrap();
    assert!(matches!(staged, Put::Staged { temp: false, .. }));
    let failed = b
        .put_all(vec![
            Put::Bytes("f/z".into(), Bytes::from_static(b"z")),
            staged.clone(),
        ])
        .await;
    assert!(failed.is_err());
    assert_eq!(b.get("up/1/data").await.unwrap().unwrap(), "scratch");
    b.unstage(staged).await;
    assert_eq!(b.get("up/1/data").await.unwrap().unwrap(), "scratch");
    assert_eq!(b.get("blobs/x/y").await.unwrap(), None);
    assert!(temp_files(tmp.path()).is_empty());
}
