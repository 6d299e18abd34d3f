//! What the fault tests share: hang-guarded clients, a large blob made as it is sent, downloads
//! read part way and resumed, and checks of what a data dir and a pulled layout hold.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use trow_tests::Trow;
use trow_tests::clients::{assert_layout_blobs_intact, layout_tag_digest, run, skopeo};
use trow_tests::images::{Image, Rng, read_blob};
use trow_tests::oci::{Reg, Resp, error_chain, send, with_query};

pub const MIB: u64 = 1 << 20;

/// How long a request may take before the test calls it a hang: far above any answer that
/// needs no waiting, far below "forever".
const HANG_GUARD: Duration = Duration::from_secs(10);

/// The same, for whole downloads of large blobs and for restarts.
pub const LONG_GUARD: Duration = Duration::from_secs(120);

/// A client whose every request fails after [`HANG_GUARD`].
pub fn guarded() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(HANG_GUARD)
        .build()
        .expect("http client")
}

/// `skopeo copy` between two references, plain HTTP on both sides.
pub fn skopeo_copy(src: &str, dest: &str) {
    run(&mut skopeo([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--retry-times=0",
        src,
        dest,
    ]));
}

/// A layout pulled from a registry holds `img`: its manifest under `tag`, and every blob byte
/// for byte.
pub fn assert_pulled(layout: &Path, tag: &str, img: &Image) {
    assert_eq!(layout_tag_digest(layout, tag), img.manifest_digest);
    assert_layout_blobs_intact(layout);
    let mut digests = vec![img.manifest_digest.clone(), img.config_digest.clone()];
    digests.extend(img.layers.iter().cloned());
    for d in &digests {
        assert!(
            read_blob(layout, d) == read_blob(&img.layout, d),
            "blob {d} pulled into {} differs from the one pushed",
            layout.display()
        );
    }
}

/// The entries of `data_dir/uploads` (upload scratch and records), for leftover checks.
pub fn uploads(data_dir: &Path) -> Vec<String> {
    match std::fs::read_dir(data_dir.join("uploads")) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}/uploads: {e}", data_dir.display()),
    }
}

/// Waits until `data_dir/uploads` is empty: a completed upload's directory is removed just after
/// its blob becomes visible. Fails with what is left after [`HANG_GUARD`].
pub async fn wait_no_uploads(data_dir: &Path) {
    let start = std::time::Instant::now();
    loop {
        let left = uploads(data_dir);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "uploads left in {}: {left:?}",
            data_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` (e.g. `-STOP`, `-CONT`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let st = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {signal} {pid}");
}

pub fn trow(reg: &mut Reg) -> &mut Trow {
    reg.trow.as_mut().expect("a Trow the test started")
}

/// Asserts a prompt `503` with an OCI error body (`UNKNOWN`: the spec has no code for an
/// unavailable service) saying storage is unavailable; a `HEAD` answer has the status only.
pub fn assert_storage_unavailable(r: &Resp, head: bool) {
    if head {
        r.assert_status(503);
        return;
    }
    r.assert_error(503, "UNKNOWN");
    let message = r.json()["errors"][0]["message"].to_string();
    assert!(
        message.contains("unavailable"),
        "{}: the message should say storage is unavailable: {r}",
        r.what
    );
}

/// The large blob's size: far more than any buffer between storage and the client holds.
pub const BIG: u64 = 256 * MIB;

/// Deterministic large content, made as it is sent: MiB `i` is one random MiB stamped with `i`.
#[derive(Clone)]
pub struct BigBlob {
    block: Arc<Vec<u8>>,
    chunks: u64,
    pub digest: String,
}

impl BigBlob {
    pub fn new(size: u64) -> BigBlob {
        let mut b = BigBlob {
            block: Arc::new(Rng::new().bytes(MIB as usize)),
            chunks: size / MIB,
            digest: String::new(),
        };
        let mut h = Sha256::new();
        for i in 0..b.chunks {
            h.update(b.chunk(i));
        }
        b.digest = format!("sha256:{}", hex::encode(h.finalize()));
        b
    }

    pub fn size(&self) -> u64 {
        self.chunks * MIB
    }

    fn chunk(&self, i: u64) -> Vec<u8> {
        let mut c = self.block.as_ref().clone();
        c[..8].copy_from_slice(&i.to_le_bytes());
        c
    }

    pub fn body(&self) -> reqwest::Body {
        self.body_from(0, None)
    }

    /// The bytes from `offset` on, as a streamed body. With `pause`, once `PAUSE_AFTER` bytes
    /// went out it reports on the first channel and waits for the second before the rest.
    pub fn body_from(&self, offset: u64, pause: Option<Pause>) -> reqwest::Body {
        let me = self.clone();
        let chunks = futures::stream::unfold((offset, pause), move |(at, mut pause)| {
            let me = me.clone();
            async move {
                if at == me.size() {
                    return None;
                }
                if at >= PAUSE_AFTER
                    && let Some((reached, resume)) = pause.take()
                {
                    let _ = reached.send(());
                    let _ = resume.await;
                }
                let chunk = me.chunk(at / MIB)[(at % MIB) as usize..].to_vec();
                let next = at + chunk.len() as u64;
                Some((Ok::<_, std::io::Error>(chunk), (next, pause)))
            }
        });
        reqwest::Body::wrap_stream(chunks)
    }
}

/// Where a paused body stops.
pub const PAUSE_AFTER: u64 = 16 * MIB;

/// The channels of a paused body: it reports on the first, then waits for the second.
pub type Pause = (oneshot::Sender<()>, oneshot::Receiver<()>);

/// Pushes `big` to `repo` in one streamed PATCH and a closing PUT.
pub async fn push_big(reg: &Reg, repo: &str, big: &BigBlob) {
    let loc = reg.upload_location(repo).await;
    let r = send(
        reg.client
            .patch(&loc)
            .header("Content-Type", "application/octet-stream")
            .body(big.body()),
    )
    .await;
    r.assert_status(202);
    let loc = reg.abs(&r.must_header("location"));
    let r = send(
        reg.client
            .put(with_query(&loc, &format!("digest={}", big.digest))),
    )
    .await;
    r.assert_status(201);
}

/// A download read part way: the bytes so far, hashed, and the rest of the body.
pub struct Partial {
    hasher: Sha256,
    got: u64,
    rest: futures::stream::BoxStream<'static, Result<Vec<u8>, String>>,
}

/// A response body as a stream of chunks or the error (its chain) that cut it.
fn body(r: reqwest::Response) -> futures::stream::BoxStream<'static, Result<Vec<u8>, String>> {
    r.bytes_stream()
        .map(|c| c.map(|b| b.to_vec()).map_err(|e| error_chain(&e)))
        .boxed()
}

impl Partial {
    /// GETs `url` (expecting `status`) and reads at least `at_least` bytes of it.
    pub async fn start(c: &reqwest::Client, url: &str, status: u16, at_least: u64) -> Partial {
        let r = c
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(r.status().as_u16(), status, "GET {url}: {r:?}");
        let mut p = Partial {
            hasher: Sha256::new(),
            got: 0,
            rest: body(r),
        };
        while p.got < at_least {
            let chunk = p
                .rest
                .next()
                .await
                .unwrap_or_else(|| panic!("GET {url}: the body ended at {}", p.got))
                .unwrap_or_else(|e| panic!("GET {url}: the body broke at {}: {e}", p.got));
            p.take(&chunk);
        }
        p
    }

    fn take(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.got += chunk.len() as u64;
    }

    /// Reads what is left of the body until it ends; returns the error that cut it, if any.
    async fn drain(&mut self) -> Option<String> {
        while let Some(chunk) = self.rest.next().await {
            match chunk {
                Ok(c) => self.take(&c),
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// Reads the rest after its server died: the body must end (with an error) and not whole.
    pub async fn drain_cut(&mut self, size: u64, what: &str) {
        let cut = tokio::time::timeout(LONG_GUARD, self.drain())
            .await
            .unwrap_or_else(|_| panic!("{what}: the body did not end after the kill"));
        assert!(
            cut.is_some() && self.got < size,
            "{what}: a body of {size} bytes whose server was killed ended at {} with {cut:?}",
            self.got
        );
        eprintln!("{what}: cut at {} of {size}: {cut:?}", self.got);
    }

    /// GETs `url` with `Range: bytes=<got>-` and reads it to the end into the same hash; asserts
    /// a 206 for the rest of a `size`-byte blob and that the whole is `digest`.
    pub async fn resume(mut self, c: &reqwest::Client, url: &str, size: u64, digest: &str) {
        let from = self.got;
        let r = c
            .get(url)
            .header("Range", format!("bytes={from}-"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} from {from}: {e}"));
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "GET {url}: {r:?}");
        let range = r
            .headers()
            .get("content-range")
            .map(|v| v.to_str().unwrap());
        assert_eq!(
            range,
            Some(format!("bytes {from}-{}/{size}", size - 1).as_str()),
            "{r:?}"
        );
        self.rest = body(r);
        self.finish(size, digest, &format!("GET {url} from {from}"))
            .await;
    }

    /// Reads the rest to its end; asserts that all the bytes read are the `size` bytes of
    /// `digest`.
    pub async fn finish(mut self, size: u64, digest: &str, what: &str) {
        let cut = tokio::time::timeout(LONG_GUARD, self.drain())
            .await
            .unwrap_or_else(|_| panic!("{what}: no end"));
        assert_eq!(cut, None, "{what}");
        assert_eq!(self.got, size, "{what}: the whole blob");
        assert_eq!(
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            digest,
            "{what}: not the blob's bytes"
        );
    }
}
