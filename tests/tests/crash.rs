//! Crash safety: SIGKILL the process that owns the bytes while a large blob upload is in flight,
//! start it again, and check that nothing half-written became visible, that what was stored
//! before is intact, and that the push can simply be redone.
//!
//! Against Trow the split topology is used and only the storage process dies; the gateway stays
//! up and must reconnect. The `distribution` variant (ignored by default) runs the same scenario
//! against CNCF distribution, killing the whole registry, to validate the test itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Client, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use trow_tests::clients::LogsOnPanic;
use trow_tests::images::Rng;
use trow_tests::{Distribution, Topology, Trow, sha256_digest};

const MIB: usize = 1024 * 1024;
/// The large blob: 64 chunks of 1 MiB.
const BIG_CHUNKS: u64 = 64;
/// The crash comes after this many chunks were handed to the connection.
const CRASH_AFTER: u64 = 16;
const REPO: &str = "crash/test";

/// A registry whose byte-owning process can be killed and restarted on the same data.
trait Crashable {
    fn url(&self) -> String;
    /// The directory holding content-addressed blob files.
    fn blob_store(&self) -> PathBuf;
    /// SIGKILL the process that writes the bytes.
    fn crash(&mut self);
    /// Start it again on the same port and data.
    fn restart(&mut self);
}

impl Crashable for Trow {
    fn url(&self) -> String {
        self.url.clone()
    }
    fn blob_store(&self) -> PathBuf {
        let blobs = self.data_dir.join("blobs");
        if blobs.is_dir() {
            blobs
        } else {
            self.data_dir.clone()
        }
    }
    fn crash(&mut self) {
        self.kill_storage();
    }
    fn restart(&mut self) {
        self.restart_storage();
    }
}

impl Crashable for Distribution {
    fn url(&self) -> String {
        self.url.clone()
    }
    fn blob_store(&self) -> PathBuf {
        self.root.join("docker/registry/v2/blobs")
    }
    fn crash(&mut self) {
        self.kill9();
    }
    fn restart(&mut self) {
        Distribution::restart(self);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_killed_during_large_upload() {
    let mut t = Trow::start(Topology::Split);
    let _logs = LogsOnPanic::trow(&t);
    scenario(&mut t).await;
    trow_tests::fsck::stop_and_fsck(&mut t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reference run against CNCF distribution"]
async fn distribution_killed_during_large_upload() {
    let mut d = Distribution::start();
    let _logs = LogsOnPanic::distribution(&d);
    scenario(&mut d).await;
}

/// Deterministic large content: chunk `i` is a random 1 MiB block (fixed per seed) stamped with
/// `i`, so every chunk differs and the digest is known before anything is sent.
#[derive(Clone)]
struct BigBlob {
    block: Arc<Vec<u8>>,
    chunks: u64,
    digest: String,
}

impl BigBlob {
    fn new(chunks: u64) -> BigBlob {
        let block = Arc::new(Rng::new().bytes(MIB));
        let mut b = BigBlob {
            block,
            chunks,
            digest: String::new(),
        };
        let mut h = Sha256::new();
        for i in 0..chunks {
            h.update(b.chunk(i));
        }
        b.digest = format!("sha256:{}", hex::encode(h.finalize()));
        b
    }

    fn size(&self) -> u64 {
        self.chunks * MIB as u64
    }

    fn chunk(&self, i: u64) -> Vec<u8> {
        let mut c = self.block.as_ref().clone();
        c[..8].copy_from_slice(&i.to_le_bytes());
        c
    }

    /// A streaming request body. With `pause`, after `CRASH_AFTER` chunks it reports on the first
    /// channel and waits for the second before sending the rest.
    fn body(&self, pause: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>) -> reqwest::Body {
        let me = self.clone();
        let stream = futures::stream::unfold((0u64, pause), move |(i, mut pause)| {
            let me = me.clone();
            async move {
                if i == me.chunks {
                    return None;
                }
                if i == CRASH_AFTER
                    && let Some((reached, resume)) = pause.take()
                {
                    let _ = reached.send(());
                    let _ = resume.await;
                }
                Some((Ok::<_, std::io::Error>(me.chunk(i)), (i + 1, pause)))
            }
        });
        reqwest::Body::wrap_stream(stream)
    }
}

fn client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

/// Resolves an upload `Location` header against the API root.
fn location(base: &str, resp: &Response) -> String {
    let loc = resp
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location in {resp:?}"))
        .to_str()
        .expect("ascii Location")
        .to_string();
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc
    } else {
        format!("{base}{loc}")
    }
}

fn with_digest(loc: &str, digest: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={digest}")
}

async fn describe(what: &str, resp: Response) -> String {
    let status = resp.status();
    let headers = format!("{:?}", resp.headers());
    let body = resp.text().await.unwrap_or_default();
    format!("{what}: {status}\nheaders: {headers}\nbody: {body}")
}

/// POST to open an upload session; returns its location.
async fn start_upload(c: &Client, base: &str) -> String {
    let url = format!("{base}/v2/{REPO}/blobs/uploads/");
    let resp = c.post(&url).send().await.expect("POST uploads");
    if resp.status() != StatusCode::ACCEPTED {
        panic!("{}", describe(&format!("POST {url}"), resp).await);
    }
    location(base, &resp)
}

/// POST + PUT with the whole blob; returns its digest.
async fn push_blob(c: &Client, base: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let loc = start_upload(c, base).await;
    let url = with_digest(&loc, &digest);
    let resp = c
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("PUT blob");
    if resp.status() != StatusCode::CREATED {
        panic!("{}", describe(&format!("PUT {url}"), resp).await);
    }
    digest
}

/// GETs `path` (under `/v2/REPO/`) and returns status and body.
async fn get(c: &Client, base: &str, path: &str) -> reqwest::Result<(StatusCode, Vec<u8>)> {
    let resp = c
        .get(format!("{base}/v2/{REPO}/{path}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await?;
    let status = resp.status();
    Ok((status, resp.bytes().await?.to_vec()))
}

async fn head_blob(c: &Client, base: &str, digest: &str) -> Response {
    c.head(format!("{base}/v2/{REPO}/blobs/{digest}"))
        .send()
        .await
        .expect("HEAD blob")
}

/// Uploads `big` in one streamed PATCH and a closing PUT; asserts it is then served intact.
async fn push_big(c: &Client, base: &str, big: &BigBlob) {
    let loc = start_upload(c, base).await;
    let resp = c
        .patch(&loc)
        .header("content-type", "application/octet-stream")
        .body(big.body(None))
        .send()
        .await
        .expect("PATCH big blob");
    if resp.status() != StatusCode::ACCEPTED {
        panic!("{}", describe(&format!("PATCH {loc}"), resp).await);
    }
    let loc = location(base, &resp);
    let url = with_digest(&loc, &big.digest);
    let resp = c.put(&url).send().await.expect("PUT close upload");
    if resp.status() != StatusCode::CREATED {
        panic!("{}", describe(&format!("PUT {url}"), resp).await);
    }
    let resp = head_blob(c, base, &big.digest).await;
    assert_eq!(resp.status(), StatusCode::OK, "HEAD after redo: {resp:?}");
    assert_eq!(
        resp.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(big.size().to_string().as_str()),
        "{resp:?}"
    );
    let resp = c
        .get(format!("{base}/v2/{REPO}/blobs/{}", big.digest))
        .send()
        .await
        .expect("GET big blob");
    assert_eq!(resp.status(), StatusCode::OK, "GET after redo: {resp:?}");
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("read big blob");
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    assert_eq!(n, big.size(), "GET returned a different length");
    assert_eq!(format!("sha256:{}", hex::encode(h.finalize())), big.digest);
}

/// How a request interrupted by the crash ended, for messages.
enum Interrupted {
    Transport(String),
    Status(StatusCode, String),
}

/// Sends `big` as the body of `method url`, SIGKILLs the byte owner after `CRASH_AFTER` MiB went
/// out, and returns how the request ended. A success answer is a lie (the bytes never all
/// arrived) and fails the test.
async fn crash_during(
    target: &mut dyn Crashable,
    c: &Client,
    method: reqwest::Method,
    url: &str,
    big: &BigBlob,
) -> Interrupted {
    let (reached_tx, reached_rx) = oneshot::channel();
    let (resume_tx, resume_rx) = oneshot::channel();
    let req = c
        .request(method.clone(), url)
        .header("content-type", "application/octet-stream")
        .body(big.body(Some((reached_tx, resume_rx))));
    let in_flight = tokio::spawn(async move {
        match req.send().await {
            Err(e) => Interrupted::Transport(format!("{e:?}")),
            Ok(resp) => {
                let status = resp.status();
                Interrupted::Status(status, describe("", resp).await)
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), reached_rx)
        .await
        .expect("upload never reached the crash point")
        .expect("body stream dropped before the crash point");
    // Let the first MiBs cross the connection and reach the storage side.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| target.crash());
    let _ = resume_tx.send(());
    let outcome = tokio::time::timeout(Duration::from_secs(60), in_flight)
        .await
        .unwrap_or_else(|_| {
            panic!("{method} {url}: no answer 60s after the storage process was killed")
        })
        .expect("request task");
    if let Interrupted::Status(status, text) = &outcome {
        assert!(
            !status.is_success(),
            "{method} {url} answered {status} although the byte owner was killed mid-body: {text}"
        );
    }
    outcome
}

/// Every content-addressed file under `store` whose name is a sha256 digest (`<hex>`,
/// `sha256:<hex>`, or distribution's `<hex>/data`), with that digest.
fn content_addressed_files(store: &Path) -> Vec<(String, PathBuf)> {
    fn is_hex64(s: &str) -> bool {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
    let mut found = Vec::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let hex = name
                .strip_prefix("sha256:")
                .or_else(|| name.strip_prefix("sha256-"))
                .unwrap_or(&name)
                .to_string();
            let parent = p
                .parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if is_hex64(&hex) {
                found.push((format!("sha256:{hex}"), p));
            } else if name == "data" && is_hex64(&parent) {
                found.push((format!("sha256:{parent}"), p));
            }
        }
    }
    found
}

fn file_digest(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = f.read(&mut buf).expect("read blob file");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn listing(dir: &Path) -> String {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out.join("\n")
}

/// Every content-addressed file holds exactly the bytes its name promises, none is named
/// after one of `absent`, and each of `present` has one.
fn assert_blob_store(store: &Path, absent: &[&str], present: &[String]) {
    let files = content_addressed_files(store);
    assert!(
        !files.is_empty(),
        "no content-addressed blob files (named <sha256 hex>) under {}; the crash test cannot \
         check the store. Files:\n{}",
        store.display(),
        listing(store)
    );
    let all = listing(store);
    let strays: Vec<&str> = all
        .lines()
        .filter(|l| Path::new(l).is_file() && !files.iter().any(|(_, p)| p == Path::new(l)))
        .collect();
    if !strays.is_empty() {
        eprintln!("note: files in the blob store that are not content-addressed: {strays:?}");
    }
    for (digest, path) in &files {
        assert!(
            !absent.contains(&digest.as_str()),
            "{} exists, but that upload was interrupted by the crash",
            path.display()
        );
        let actual = file_digest(path);
        assert_eq!(
            &actual,
            digest,
            "{} does not hold the bytes its name promises (corrupt after crash)",
            path.display()
        );
    }
    for d in present {
        assert!(
            files.iter().any(|(f, _)| f == d),
            "{d} has no file under {}:\n{}",
            store.display(),
            listing(store)
        );
    }
}

async fn scenario(target: &mut dyn Crashable) {
    let base = target.url();
    let c = client();

    // Before the crash: three blobs, a config, and a manifest tagged v1.
    let mut rng = Rng::new();
    let blobs: Vec<Vec<u8>> = (0..3).map(|i| rng.bytes(1000 + i * 70_000)).collect();
    let mut digests = Vec::new();
    for b in &blobs {
        digests.push(push_blob(&c, &base, b).await);
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"comment":"{:x}"}}"#,
        rng.next_u64()
    );
    let config_digest = push_blob(&c, &base, config.as_bytes()).await;
    let layers: Vec<serde_json::Value> = blobs
        .iter()
        .zip(&digests)
        .map(|(b, d)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d,
                "size": b.len(),
            })
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
    }))
    .unwrap();
    let manifest_digest = sha256_digest(&manifest);
    let url = format!("{base}/v2/{REPO}/manifests/v1");
    let resp = c
        .put(&url)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    if resp.status() != StatusCode::CREATED {
        panic!("{}", describe(&format!("PUT {url}"), resp).await);
    }

    // Crash 1: during a streamed PATCH.
    let big = BigBlob::new(BIG_CHUNKS);
    let loc = start_upload(&c, &base).await;
    let outcome = crash_during(target, &c, reqwest::Method::PATCH, &loc, &big).await;
    let how = match &outcome {
        Interrupted::Transport(e) => format!("transport error {e}"),
        Interrupted::Status(s, t) => format!("{s} {t}"),
    };
    eprintln!("PATCH interrupted by the crash ended with: {how}");
    tokio::task::block_in_place(|| target.restart());
    wait_until_served(&c, &base, &digests[0], &blobs[0]).await;

    let resp = head_blob(&c, &base, &big.digest).await;
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "HEAD of the interrupted blob (PATCH ended with: {how}): {resp:?}"
    );
    // Closing the interrupted session must not produce the blob: its bytes never all arrived.
    let url = with_digest(&loc, &big.digest);
    let resp = c.put(&url).send().await.expect("PUT interrupted upload");
    let status = resp.status();
    assert!(
        !status.is_success(),
        "{}",
        describe(
            &format!("closing the interrupted upload PUT {url} must fail"),
            resp
        )
        .await
    );
    let resp = head_blob(&c, &base, &big.digest).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{resp:?}");

    let mut present = digests.clone();
    present.push(config_digest.clone());
    assert_blob_store(&target.blob_store(), &[&big.digest], &present);
    assert_intact(&c, &base, &blobs, &digests, &manifest, &manifest_digest).await;

    // The push can be redone.
    push_big(&c, &base, &big).await;

    // Crash 2: during a monolithic streamed PUT ?digest=.
    let big2 = BigBlob::new(BIG_CHUNKS);
    let loc = start_upload(&c, &base).await;
    let url = with_digest(&loc, &big2.digest);
    match crash_during(target, &c, reqwest::Method::PUT, &url, &big2).await {
        Interrupted::Transport(e) => eprintln!("PUT interrupted by the crash: transport error {e}"),
        Interrupted::Status(s, t) => eprintln!("PUT interrupted by the crash: {s} {t}"),
    }
    tokio::task::block_in_place(|| target.restart());
    wait_until_served(&c, &base, &digests[0], &blobs[0]).await;
    let resp = head_blob(&c, &base, &big2.digest).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{resp:?}");
    present.push(big.digest.clone());
    assert_blob_store(&target.blob_store(), &[&big2.digest], &present);
    assert_intact(&c, &base, &blobs, &digests, &manifest, &manifest_digest).await;
    push_big(&c, &base, &big2).await;
}

/// After a restart, waits (up to 30 s) until the registry serves a blob stored before the crash.
async fn wait_until_served(c: &Client, base: &str, digest: &str, expected: &[u8]) {
    let start = Instant::now();
    loop {
        let last = get(c, base, &format!("blobs/{digest}")).await;
        if let Ok((StatusCode::OK, body)) = &last {
            assert_eq!(body, expected, "{digest} changed across the crash");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not serving {digest} 30s after the restart; last answer: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_intact(
    c: &Client,
    base: &str,
    blobs: &[Vec<u8>],
    digests: &[String],
    manifest: &[u8],
    manifest_digest: &str,
) {
    for (b, d) in blobs.iter().zip(digests) {
        let (status, body) = get(c, base, &format!("blobs/{d}")).await.expect("GET blob");
        assert_eq!(status, StatusCode::OK, "GET blob {d}");
        assert!(body == *b, "blob {d} changed across the crash");
    }
    for reference in ["v1", manifest_digest] {
        let (status, body) = get(c, base, &format!("manifests/{reference}"))
            .await
            .expect("GET manifest");
        assert_eq!(status, StatusCode::OK, "GET manifest {reference}");
        assert!(
            body == manifest,
            "manifest {reference} changed across the crash: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// The storage process killed (SIGKILL) while four clients push: each round uploads a small
/// unique layer (its commit and link are one batch) and puts a manifest referencing it to a new
/// tag (content, record, tag: batches in that order). After a restart the store checks clean,
/// every push answered 201 reads back byte-identical, and every tag the store has, answered or
/// not, names a manifest that reads back whole with its layer: a kill at any point left a
/// prefix of each batch, never a tag before its record or a record before its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_killed_during_manifest_puts() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut t = Trow::start_with(
        Topology::Split,
        trow_tests::Flags {
            ip: Some("127.0.0.189".into()),
            ..Default::default()
        },
    );
    let _logs = LogsOnPanic::trow(&t);
    let url = t.url.clone();
    let repo = "crash/tags";
    let c = Client::new();
    let config = b"{}".to_vec();
    let config_digest = sha256_digest(&config);
    let r = c
        .post(format!(
            "{url}/v2/{repo}/blobs/uploads/?digest={config_digest}"
        ))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (c, url, stop, answered) = (c.clone(), url.clone(), stop.clone(), answered.clone());
            let config_digest = config_digest.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let layer = format!("layer {w}-{i}").into_bytes();
                    let ld = sha256_digest(&layer);
                    let manifest = serde_json::to_vec(&serde_json::json!({
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": config_digest, "size": 2},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                    "digest": ld, "size": layer.len()}],
                    }))
                    .unwrap();
                    let tag = format!("w{w}-{i}");
                    let pushed = async {
                        let r = c
                            .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={ld}"))
                            .body(layer.clone())
                            .send()
                            .await
                            .ok()?;
                        (r.status() == StatusCode::CREATED).then_some(())?;
                        let r = c
                            .put(format!("{url}/v2/{repo}/manifests/{tag}"))
                            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                            .body(manifest.clone())
                            .send()
                            .await
                            .ok()?;
                        (r.status() == StatusCode::CREATED).then_some(())
                    };
                    if pushed.await.is_some() {
                        answered.fetch_add(1, Ordering::Relaxed);
                        acked.push((tag, manifest, layer));
                    } else if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                acked
            })
        })
        .collect();
    // Killed in the middle of the pushes: once some were answered, while the writers go on.
    let acked = kill_storage_mid_way(&mut t, &answered, 40, &stop, writers).await;

    let get = |path: String| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let r = c
                .get(format!("{url}/v2/{repo}/{path}"))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap();
            (r.status(), r.bytes().await.unwrap().to_vec())
        }
    };
    for (tag, manifest, layer) in &acked {
        assert_eq!(
            get(format!("manifests/{tag}")).await,
            (StatusCode::OK, manifest.clone())
        );
        let ld = sha256_digest(layer);
        assert_eq!(
            get(format!("blobs/{ld}")).await,
            (StatusCode::OK, layer.clone())
        );
    }
    let (status, list) = get("tags/list".into()).await;
    assert_eq!(status, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    let tags = list["tags"].as_array().unwrap();
    assert!(tags.len() >= acked.len());
    for tag in tags {
        let (status, body) = get(format!("manifests/{}", tag.as_str().unwrap())).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "tag {tag} is dangling after the crash"
        );
        let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let ld = m["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(get(format!("blobs/{ld}")).await.0, StatusCode::OK);
    }
    trow_tests::fsck::stop_and_fsck(&mut t);
}

/// Many concurrent tag moves in one repository, the case whose flushes overlap (the tags'
/// temp files are written before the repository's turn, their directory fsync'd after it):
/// one stored manifest tagged again and again, a second one racing it on one shared tag, and
/// storage killed mid-way. After the restart the store is consistent, every acknowledged tag
/// reads back as what was put, the shared tag names one of the two manifests, and no tag
/// dangles.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_killed_during_concurrent_tag_moves_in_one_repository() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut t = Trow::start_with(
        Topology::Split,
        trow_tests::Flags {
            ip: Some("127.0.0.195".into()),
            ..Default::default()
        },
    );
    let _logs = LogsOnPanic::trow(&t);
    let url = t.url.clone();
    let repo = "crash/retag";
    let c = Client::new();
    let mut manifests = Vec::new();
    for name in ["one", "two"] {
        let config = format!("{{\"name\":\"{name}\"}}").into_bytes();
        let cd = sha256_digest(&config);
        let r = c
            .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={cd}"))
            .body(config.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd, "size": config.len()},
            "layers": [],
        }))
        .unwrap();
        let r = c
            .put(format!("{url}/v2/{repo}/manifests/{name}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            describe("put", r).await
        );
        manifests.push(manifest);
    }
    let manifests = Arc::new(manifests);

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (c, url, stop, answered) = (c.clone(), url.clone(), stop.clone(), answered.clone());
            let manifests = manifests.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Every fourth put moves the shared tag, to either manifest.
                    let (tag, m) = if i % 4 == 3 {
                        ("shared".to_string(), (w + i) % 2)
                    } else {
                        (format!("w{w}-{i}"), w % 2)
                    };
                    let r = c
                        .put(format!("{url}/v2/{repo}/manifests/{tag}"))
                        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                        .body(manifests[m].clone())
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status() == StatusCode::CREATED) {
                        answered.fetch_add(1, Ordering::Relaxed);
                        acked.push((tag, m));
                    } else if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                acked
            })
        })
        .collect();
    let acked = kill_storage_mid_way(&mut t, &answered, 100, &stop, writers).await;

    let get = |tag: String| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c
                .get(format!("{url}/v2/{repo}/manifests/{tag}"))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap();
            (r.status(), r.bytes().await.unwrap().to_vec())
        }
    };
    let shared_acked = acked.iter().any(|(tag, _)| tag == "shared");
    for (tag, m) in acked.iter().filter(|(tag, _)| tag != "shared") {
        assert_eq!(
            get(tag.clone()).await,
            (StatusCode::OK, manifests[*m].clone()),
            "acknowledged tag {tag}"
        );
    }
    let (status, body) = get("shared".into()).await;
    if shared_acked {
        assert_eq!(status, StatusCode::OK, "the shared tag was acknowledged");
    }
    if status == StatusCode::OK {
        assert!(
            manifests.contains(&body),
            "the shared tag names a manifest put"
        );
    }
    let r = c
        .get(format!("{url}/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = r.json().await.unwrap();
    let tags = list["tags"].as_array().unwrap();
    assert!(tags.len() >= acked.iter().filter(|(t, _)| t != "shared").count());
    for tag in tags {
        let (status, body) = get(tag.as_str().unwrap().to_string()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "tag {tag} is dangling after the crash"
        );
        assert!(manifests.contains(&body), "tag {tag} names a manifest put");
    }
    trow_tests::fsck::stop_and_fsck(&mut t);
}

/// Once `at` writes were answered, kills storage (-9) while the writers go on, stops them, gathers
/// what each had acknowledged, restarts storage and checks the store.
async fn kill_storage_mid_way<T>(
    t: &mut Trow,
    answered: &std::sync::atomic::AtomicUsize,
    at: usize,
    stop: &std::sync::atomic::AtomicBool,
    writers: Vec<tokio::task::JoinHandle<Vec<T>>>,
) -> Vec<T> {
    use std::sync::atomic::Ordering;
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::Relaxed) < at {
        assert!(Instant::now() < deadline, "the writes never got going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::task::block_in_place(|| t.kill_storage());
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("a writer hung after the kill")
                .unwrap(),
        );
    }
    tokio::task::block_in_place(|| t.restart_storage());
    trow_tests::fsck::fsck(&t.data_dir);
    acked
}
