//! What a crash or a client going away must not undo, through a filesystem store whose backend
//! logs what it is asked: tags made durable before a DELETE, a collection or an eviction
//! decides on them and before the records they named go (ext4 without a journal keeps no order
//! of its own); a manifest put that runs to its end when its request is dropped mid-way; a
//! record that became due while a put waited for its turn written again.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tonic::Request;
use trow_proto::storage::{self as pb, storage_server::Storage};
use trow_storage::backend::{Backend, ByteStream, Flush, FsBackend, Put};
use trow_storage::digest::Digest;
use trow_storage::service::StorageService;
use trow_storage::store::FillRole;
use trow_storage::{Limits, Store};

mod support;
use support::*;

/// The filesystem backend, logging the calls the tests look at ("durable <prefix> <deleted>",
/// "delete <key>", "stage <key>"); with a gate, `put_all_deferred` (a tag's move) and the delete
/// of a tag wait for a permit.
struct Logged {
    fs: FsBackend,
    log: Arc<Mutex<Vec<String>>>,
    gate: Option<Arc<Semaphore>>,
}

impl Logged {
    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
}

impl Backend for Logged {
    type Appender = <FsBackend as Backend>::Appender;
    async fn make_durable(&self, prefix: &str, deleted: bool) -> std::io::Result<()> {
        self.note(format!("durable {prefix} {deleted}"));
        self.fs.make_durable(prefix, deleted).await
    }
    async fn put(&self, key: &str, data: Bytes) -> std::io::Result<()> {
        self.fs.put(key, data).await
    }
    async fn put_all(&self, objects: Vec<Put>) -> std::io::Result<()> {
        self.fs.put_all(objects).await
    }
    async fn put_all_deferred(&self, objects: Vec<Put>) -> std::io::Result<Flush> {
        if let Some(gate) = &self.gate {
            self.note("deferred".into());
            gate.acquire().await.unwrap().forget();
        }
        self.fs.put_all_deferred(objects).await
    }
    async fn stage(&self, object: Put) -> std::io::Result<Put> {
        self.note(format!("stage {}", object.key()));
        self.fs.stage(object).await
    }
    async fn unstage(&self, staged: Put) {
        self.fs.unstage(staged).await
    }
    async fn put_unsynced(&self, key: &str, data: Bytes) -> std::io::Result<()> {
        self.fs.put_unsynced(key, data).await
    }
    async fn put_marker(&self, key: &str) -> std::io::Result<()> {
        self.fs.put_marker(key).await
    }
    async fn get(&self, key: &str) -> std::io::Result<Option<Bytes>> {
        self.fs.get(key).await
    }
    async fn size(&self, key: &str) -> std::io::Result<Option<u64>> {
        self.fs.size(key).await
    }
    async fn modified(&self, key: &str) -> std::io::Result<Option<SystemTime>> {
        self.fs.modified(key).await
    }
    async fn read(&self, key: &str, offset: u64, len: u64) -> std::io::Result<ByteStream> {
        self.fs.read(key, offset, len).await
    }
    async fn delete(&self, key: &str) -> std::io::Result<()> {
        self.note(format!("delete {key}"));
        if let Some(gate) = self.gate.as_ref().filter(|_| key.contains("/_tags/")) {
            gate.acquire().await.unwrap().forget();
        }
        self.fs.delete(key).await
    }
    async fn delete_all(&self, prefix: &str) -> std::io::Result<()> {
        self.fs.delete_all(prefix).await
    }
    async fn list(&self, prefix: &str) -> std::io::Result<Vec<String>> {
        self.fs.list(prefix).await
    }
    async fn append(&self, key: &str) -> std::io::Result<Self::Appender> {
        self.fs.append(key).await
    }
    async fn commit(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.fs.commit(from, to).await
    }
}

type Log = Arc<Mutex<Vec<String>>>;

async fn open(
    dir: &std::path::Path,
    retention: &str,
    gate: Option<Arc<Semaphore>>,
) -> (Arc<Store<Logged>>, Log) {
    open_with_grace(dir, retention, gate, Duration::ZERO).await
}

async fn open_with_grace(
    dir: &std::path::Path,
    retention: &str,
    gate: Option<Arc<Semaphore>>,
    grace: Duration,
) -> (Arc<Store<Logged>>, Log) {
    let log = Log::default();
    let limits = Limits {
        gc_grace: grace,
        gc_every: Duration::ZERO,
        retention: serde_yaml::from_str(retention).unwrap(),
        ..Limits::default()
    };
    let backend = Logged {
        fs: FsBackend::new(dir).unwrap(),
        log: log.clone(),
        gate,
    };
    (Arc::new(Store::open(backend, limits).await.unwrap()), log)
}

/// An image of its own config and layer, pushed under `reference`: its digest.
async fn push<B: Backend>(s: &Store<B>, repo: &str, reference: &str, own: &str) -> Digest {
    let cfg = push_blob(s, repo, format!("cfg-{own}").as_bytes()).await;
    let layer = push_blob(s, repo, format!("layer-{own}").as_bytes()).await;
    let m = image_manifest(&cfg, &[&layer], None);
    let meta = s
        .put_manifest(repo, reference, OCI_MANIFEST, Bytes::from(m))
        .await
        .unwrap();
    Digest::parse(&meta.digest).unwrap()
}

/// Where `line` is in the log (the first time), failing when it is not there.
fn at(log: &[String], line: &str) -> usize {
    log.iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no {line:?} in {log:#?}"))
}

#[tokio::test]
async fn a_delete_by_digest_makes_the_tags_durable_before_deciding_and_before_the_record_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, log) = open(tmp.path(), "[]", None).await;
    let d = push(&s, "r", "v1", "1").await;
    log.lock().unwrap().clear();
    s.delete_manifest("r", &d.to_string()).await.unwrap();
    let log = log.lock().unwrap().clone();
    let tags = trow_storage::layout::tags("r");
    let tag = trow_storage::layout::tag("r", "v1");
    let record = trow_storage::layout::manifest("r", &d);
    let before = at(&log, &format!("durable {tags} false"));
    let deleted = at(&log, &format!("delete {tag}"));
    let after = at(&log, &format!("durable {tags} true"));
    let gone = at(&log, &format!("delete {record}"));
    assert!(
        before < deleted && deleted < after && after < gone,
        "{log:#?}"
    );
    assert!(tmp.path().join(&tags).is_dir());
    assert!(!tmp.path().join(&record).exists());
}

#[tokio::test]
async fn a_collection_makes_the_tags_durable_before_deciding_and_its_tag_deletes_before_records_go()
{
    let tmp = tempfile::tempdir().unwrap();
    let (s, log) = open(tmp.path(), "- repositories: \"\"\n  keep_last: 1\n", None).await;
    let old = push(&s, "r", "old", "1").await;
    // Tag moves are ordered by their files' times: the second one is the newer.
    tokio::time::sleep(Duration::from_millis(20)).await;
    push(&s, "r", "new", "2").await;
    log.lock().unwrap().clear();
    let (summary, _) = collect(&s, false).await;
    assert_eq!((summary.tags, summary.manifests), (1, 1), "{summary:?}");
    let log = log.lock().unwrap().clone();
    let tags = trow_storage::layout::tags("r");
    let before = at(&log, &format!("durable {tags} false"));
    let deleted = at(
        &log,
        &format!("delete {}", trow_storage::layout::tag("r", "old")),
    );
    let after = at(&log, &format!("durable {tags} true"));
    let gone = at(
        &log,
        &format!("delete {}", trow_storage::layout::manifest("r", &old)),
    );
    assert!(
        before < deleted && deleted < after && after < gone,
        "{log:#?}"
    );
}

/// A client that goes away while its manifest put waits for the tag's move: the put runs on,
/// so the tag moves, is published to the caches, and no staged temp file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_put_whose_request_is_dropped_mid_way_still_moves_publishes_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (s, log) = open(tmp.path(), "[]", Some(gate.clone())).await;
    let cfg = push_blob(&*s, "r", b"cfg").await;
    let layer = push_blob(&*s, "r", b"layer").await;
    let m = image_manifest(&cfg, &[&layer], None);
    let d = Digest::sha256_of(&m);
    let (_watcher, mut changes) = s.changes().subscribe();
    let service = Arc::new(StorageService::new(s.clone()));
    let request = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .put_manifest(Request::new(pb::PutManifestRequest {
                    repository: "r".into(),
                    reference: "v1".into(),
                    content_type: OCI_MANIFEST.into(),
                    content: Bytes::from(m),
                    ..Default::default()
                }))
                .await
        })
    };
    // The put holds staged files and waits for its tag's move: the client goes away.
    logged(&log, "deferred").await;
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    gate.add_permits(1);
    let change = tokio::time::timeout(Duration::from_secs(30), changes.recv())
        .await
        .expect("the put was published")
        .unwrap();
    assert_eq!(change.repository, "r");
    assert_eq!(
        s.stat_manifest("r", "v1").await.unwrap().digest,
        d.to_string()
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A client that goes away while its DELETE of a tag waits for the tag's removal: the delete
/// runs on and is published, so no gateway's cache keeps serving the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_request_is_dropped_mid_way_still_removes_and_publishes() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(1));
    let (s, log) = open(tmp.path(), "[]", Some(gate.clone())).await;
    push(&*s, "r", "v1", "a").await;
    let (_watcher, mut changes) = s.changes().subscribe();
    let service = Arc::new(StorageService::new(s.clone()));
    let request = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .delete_manifest(Request::new(pb::ManifestRef {
                    repository: "r".into(),
                    reference: "v1".into(),
                }))
                .await
        })
    };
    logged(&log, "delete repositories/r/_tags/v1").await;
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    gate.add_permits(1);
    let change = tokio::time::timeout(Duration::from_secs(30), changes.recv())
        .await
        .expect("the delete was published")
        .unwrap();
    assert_eq!(change.repository, "r");
    assert!(s.stat_manifest("r", "v1").await.is_err());
}

/// Waits until the log has `line`.
async fn logged(log: &Log, line: &str) {
    while !log.lock().unwrap().iter().any(|l| l == line) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A put that found the manifest's record fresh before the repository's turn, but whose wait
/// for the turn made it due for a refresh, writes it again (it is a collection's root only
/// while young, see `gc`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_became_due_while_a_put_waited_for_its_turn_is_written_again() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let hour = Duration::from_secs(3600);
    let (s, log) = open_with_grace(tmp.path(), "[]", Some(gate.clone()), 2 * hour).await;
    let cfg = push_blob(&*s, "r", b"cfg").await;
    let layer = push_blob(&*s, "r", b"layer").await;
    let m = Bytes::from(image_manifest(&cfg, &[&layer], None));
    let d = Digest::sha256_of(&m);
    let put = |tag: &'static str| {
        let (s, m) = (s.clone(), m.clone());
        tokio::spawn(async move { s.put_manifest("r", tag, OCI_MANIFEST, m).await })
    };
    // The first put holds the repository's turn at its tag's move, its record written.
    let first = put("v1");
    logged(&log, "deferred").await;
    // The second finds the record fresh, stages its tag and waits for the turn.
    let second = put("v2");
    logged(
        &log,
        &format!("stage {}", trow_storage::layout::tag("r", "v2")),
    )
    .await;
    let record = tmp.path().join(trow_storage::layout::manifest("r", &d));
    let old = SystemTime::now() - 2 * hour;
    std::fs::File::options()
        .write(true)
        .open(&record)
        .unwrap()
        .set_modified(old)
        .unwrap();
    gate.add_permits(2);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    let written = std::fs::metadata(&record).unwrap().modified().unwrap();
    assert!(written > old + hour, "{written:?} vs {old:?}");
}

/// An eviction deletes the tags on the images it evicts the same way: the tags made durable
/// before it reads them, and its tag deletes before the first record goes.
#[tokio::test]
async fn an_eviction_makes_the_tags_durable_before_reading_and_its_tag_deletes_before_records_go() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::default();
    let limits = Limits {
        gc_every: Duration::ZERO,
        pull_guard: Duration::ZERO,
        ..Limits::default()
    };
    let backend = Logged {
        fs: FsBackend::new(tmp.path()).unwrap(),
        log: log.clone(),
        gate: None,
    };
    let s = Store::open(backend, limits).await.unwrap();
    let repo = "f/example.com/app";
    let mut blobs = Vec::new();
    for content in [&b"cfg"[..], b"layer"] {
        let d = Digest::sha256_of(content);
        match s.begin_fill(repo, &d.to_string()).await.unwrap() {
            FillRole::Filler { upload_id, .. } => {
                let data = Bytes::copy_from_slice(content);
                s.append_upload(repo, &upload_id, Some(0), futures::stream::iter([Ok(data)]))
                    .await
                    .unwrap();
                s.complete_upload(repo, &upload_id, &d.to_string())
                    .await
                    .unwrap();
            }
            _ => panic!("a new blob is filled by its first reader"),
        }
        blobs.push(d);
    }
    let m = image_manifest(&blobs[0], &[&blobs[1]], None);
    let meta = s
        .put_cached_manifest(repo, "v1", OCI_MANIFEST, Bytes::from(m))
        .await
        .unwrap();
    let d = Digest::parse(&meta.digest).unwrap();
    log.lock().unwrap().clear();
    let summary = s.evict(0, 0, &mut |_| {}).await.unwrap();
    assert!(summary.images >= 1, "{summary:?}");
    let log = log.lock().unwrap().clone();
    let tags = trow_storage::layout::tags(repo);
    let before = at(&log, &format!("durable {tags} false"));
    let deleted = at(
        &log,
        &format!("delete {}", trow_storage::layout::tag(repo, "v1")),
    );
    let after = at(&log, &format!("durable {tags} true"));
    let gone = at(
        &log,
        &format!("delete {}", trow_storage::layout::manifest(repo, &d)),
    );
    assert!(
        before < deleted && deleted < after && after < gone,
        "{log:#?}"
    );
}
