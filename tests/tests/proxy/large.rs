//! Large blobs and fills that fail: a cold fill moves through bounded buffers whatever the
//! layer's size, a fill whose upstream broke off gives its disk space back once nobody takes it
//! over, and a blob announced over `registry_proxies.max_blob_size` is refused before anything
//! is stored.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::Digest as _;

use crate::support::{Proxy, assert_manifest, assert_oci_error_status, error_message};
use trow_tests::images::{Image, Rng};
use trow_tests::oci::{
    ACCEPT_ALL, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, client, config_blob, desc, oci_manifest,
    to_bytes,
};
use trow_tests::upstream::{ProxyConfig, Reply, Scripted, Upstream};
use trow_tests::{Flags, Topology, sha256_digest};

/// The large layer: big enough that holding it (or a good part of it) shows in any process's
/// peak RSS, small enough to generate and move in seconds.
const LAYER: u64 = 512 << 20;

/// What each Trow process may hold at its peak while the layer fills and is read.
const PEAK_RSS_LIMIT: u64 = 128 << 20;

/// How long a test waits for something that should happen promptly (not a speed assertion: it
/// only stops a test that would otherwise wait forever).
const PATIENCE: Duration = Duration::from_secs(60);

/// Writes an OCI layout in `dir` with one image tagged `tag`: a config and one layer of `size`
/// pseudo-random bytes (a random 1 MiB block with each MiB numbered, so no two MiB are alike),
/// hashed while written, never held whole.
fn large_image(dir: &Path, tag: &str, size: u64) -> Image {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("create layout");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let mut rng = Rng::new();
    let block = rng.bytes(1 << 20);
    let scratch = blobs.join("layer.partial");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&scratch).expect("create layer"));
    let mut hasher = sha2::Sha256::new();
    let mut chunk = block.clone();
    let mut written = 0;
    let mut n: u64 = 0;
    while written < size {
        chunk[..8].copy_from_slice(&n.to_le_bytes());
        let take = (size - written).min(chunk.len() as u64) as usize;
        hasher.update(&chunk[..take]);
        file.write_all(&chunk[..take]).expect("write layer");
        written += take as u64;
        n += 1;
    }
    file.flush().expect("flush layer");
    let layer = format!("sha256:{}", hex::encode(hasher.finalize()));
    std::fs::rename(&scratch, blobs.join(&layer[7..])).expect("name the layer");
    let write = |data: &[u8]| {
        let d = sha256_digest(data);
        std::fs::write(blobs.join(&d[7..]), data).expect("write blob");
        d
    };
    let config = config_blob(&format!("large {}", rng.next_u64()));
    let config_digest = write(&config);
    let manifest = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, &config_digest, config.len()),
        &[desc(OCI_LAYER, &layer, size as usize)],
    ));
    let manifest_digest = write(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), to_bytes(&index)).expect("write index.json");
    Image {
        layout: dir.to_path_buf(),
        tag: tag.to_string(),
        manifest_digest,
        config_digest,
        layers: vec![layer],
        architecture: "amd64".to_string(),
    }
}

/// GETs `url` and hashes the body as it streams: (status, `Trow-Cache`, bytes, digest).
async fn stream_digest(url: &str) -> (u16, String, u64, String) {
    let r = client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("trow-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut hasher = sha2::Sha256::new();
    let mut n = 0;
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("GET {url}: body broke off after {n}: {e}"));
        hasher.update(&chunk);
        n += chunk.len() as u64;
    }
    (
        status,
        cache,
        n,
        format!("sha256:{}", hex::encode(hasher.finalize())),
    )
}

/// Asserts every process of `p` peaked under [`PEAK_RSS_LIMIT`]; prints what each peaked at.
fn assert_peak_rss(p: &Proxy, what: &str) {
    for (name, proc_) in p.trow().processes() {
        let peak = proc_.peak_rss();
        eprintln!("{what}: {name} peaked at {} MiB", peak >> 20);
        assert!(
            peak < PEAK_RSS_LIMIT,
            "{what}: {name} peaked at {} MiB (the limit is {} MiB)",
            peak >> 20,
            PEAK_RSS_LIMIT >> 20
        );
    }
}

pub async fn a_large_layer_fills_in_bounded_memory(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = large_image(&tmp.path().join("src"), "1.0", LAYER);
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "big/model:1.0");
    let mut p = Proxy::start(
        topology,
        &ProxyConfig::new([up.entry().alias("up")]),
        tmp.path(),
    );
    let repo = "f/up/big/model";
    assert_manifest(&p.get_m(&format!("{repo}/manifests/1.0")).await, &img);
    let layer = &img.layers[0];

    // Cold: the fill and this read run together, the upstream as fast as loopback allows.
    let url = p.v2(&format!("{repo}/blobs/{layer}"));
    let (status, cache, n, digest) = stream_digest(&url).await;
    assert_eq!((status, cache.as_str()), (200, "miss"), "GET {url}");
    assert_eq!(n, LAYER, "GET {url}: bytes");
    assert_eq!(&digest, layer, "GET {url}: the bytes are not the layer's");
    assert_peak_rss(&p, "a cold fill of a 512 MiB layer");

    // It was stored whole, once.
    assert!(p.storage_has_blob(repo, layer).await);
    let (status, cache, _, digest) = stream_digest(&url).await;
    assert_eq!((status, cache.as_str(), &digest), (200, "hit", layer));
    assert_eq!(
        up.requests().blob_gets(layer),
        1,
        "{}",
        up.requests().describe()
    );
    p.stop_and_fsck();
}

/// A scripted upstream of one image whose layer is announced as `announced` bytes; it sends
/// `sent` bytes of it and breaks the connection off. Returns the server and the layer's digest.
fn breaking_upstream(listen: &str, repo: &str, announced: u64, sent: usize) -> (Scripted, String) {
    let mut rng = Rng::new();
    let layer_bytes = rng.bytes(sent);
    // A digest nothing can match: the blob is announced far bigger than what exists.
    let layer = sha256_digest(&rng.bytes(64));
    let config = config_blob(&format!("breaking {}", rng.next_u64()));
    let config_digest = sha256_digest(&config);
    let manifest = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, &config_digest, config.len()),
        &[desc(OCI_LAYER, &layer, announced as usize)],
    ));
    let manifest_digest = sha256_digest(&manifest);
    let (m, c, l) = (manifest, config, layer.clone());
    let (manifests, blobs) = (
        format!("/v2/{repo}/manifests/"),
        format!("/v2/{repo}/blobs/"),
    );
    let server = Scripted::start(listen, move |r| {
        let path = r.path();
        if path == "/v2/" {
            Reply::ok("application/json", b"{}".to_vec())
        } else if path.starts_with(&manifests) {
            Reply::ok(OCI_MANIFEST, m.clone()).header("Docker-Content-Digest", &manifest_digest)
        } else if path == format!("{blobs}{config_digest}") {
            Reply::ok("application/octet-stream", c.clone())
        } else if path == format!("{blobs}{l}") {
            Reply::ok("application/octet-stream", layer_bytes.clone()).announce(announced)
        } else {
            Reply::oci_error(404, "NAME_UNKNOWN")
        }
    });
    (server, layer)
}

/// The upload directories in Trow's data dir (a fill's scratch bytes live in one).
fn uploads(data_dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(data_dir.join("uploads")) {
        Ok(dir) => dir.map(|e| e.expect("read uploads/").path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}/uploads: {e}", data_dir.display()),
    }
}

/// Bytes under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| bytes_under(&e.path())).sum())
        .unwrap_or(0)
}

pub async fn a_broken_off_fill_frees_its_bytes(topology: Topology, ip: &str) {
    const SENT: usize = 24 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let repo_up = "big/model";
    let (up, layer) = breaking_upstream(&format!("{ip}:0"), repo_up, 1 << 40, SENT);
    let authority = up.addr_string();
    let config = ProxyConfig::new([trow_tests::upstream::Entry::insecure(&authority).alias("up")])
        .max_blob_size("2TiB");
    // A short fill timeout, so that the stall, the take-overs and the give-up take seconds.
    let mut p = Proxy::start_with(
        topology,
        &config,
        tmp.path(),
        Flags::storage(&["--fill-timeout", "1s"]),
    );
    let data_dir = p.trow().data_dir.clone();
    let url = p.v2(&format!("f/up/{repo_up}/blobs/{layer}"));

    // The client gets the announced size and the bytes that came, then the download fails
    // (the gateway picks the stalled fill up again a few times first).
    let r = client()
        .get(&url)
        .header("Accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    assert_eq!(r.content_length(), Some(1 << 40), "GET {url}");
    let mut body = r.bytes_stream();
    let mut got = 0;
    let mut stored_while_filling = 0;
    let failed = loop {
        match body.next().await {
            Some(Ok(chunk)) => {
                got += chunk.len();
                stored_while_filling =
                    stored_while_filling.max(bytes_under(&data_dir.join("uploads")));
            }
            Some(Err(e)) => break e.to_string(),
            None => panic!("GET {url}: the body ended cleanly after {got} of 1 TiB"),
        }
    };
    assert!(
        stored_while_filling > 0,
        "the fill's bytes never showed in uploads/: the premise of this test failed"
    );

    // Nobody takes the fill over any more: its bytes go, promptly.
    let start = Instant::now();
    loop {
        let left = uploads(&data_dir);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "a failed fill's scratch is still in uploads/ after {PATIENCE:?}: {left:?} \
             ({} bytes)",
            bytes_under(&data_dir.join("uploads"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every byte the upstream sent was stored (and served) before the fill failed: a take-over
    // would have resumed after them.
    assert_eq!(got, SENT, "GET {url}: bytes before the failure ({failed})");
    assert!(!p.storage_has_blob(&format!("f/up/{repo_up}"), &layer).await);
    p.stop_and_fsck();
}

pub async fn a_blob_over_max_blob_size_is_refused(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let repo_up = "big/model";
    let (up, layer) = breaking_upstream(&format!("{ip}:0"), repo_up, 2 << 30, 1 << 20);
    let authority = up.addr_string();
    let config = ProxyConfig::new([trow_tests::upstream::Entry::insecure(&authority).alias("up")])
        .max_blob_size("1GiB");
    let mut p = Proxy::start(topology, &config, tmp.path());
    let data_dir = p.trow().data_dir.clone();
    let blob = format!("f/up/{repo_up}/blobs/{layer}");

    // A GET: refused with an error naming the upstream and the cap, and nothing was stored,
    // not even an empty upload.
    let r = p.get(&blob).await;
    assert_oci_error_status(&r, &[502]);
    let message = error_message(&r);
    for part in [authority.as_str(), "max_blob_size", "1 GiB", "2147483648"] {
        assert!(
            message.contains(part),
            "the error should name {part:?}: {r}"
        );
    }
    assert_eq!(uploads(&data_dir), Vec::<PathBuf>::new());
    assert!(!p.storage_has_blob(&format!("f/up/{repo_up}"), &layer).await);
    // A HEAD is refused too, and a second GET asks the upstream again (nothing is remembered).
    let head = p.reg.head(&p.v2(&blob)).await;
    head.assert_status(502);
    let r = p.get(&blob).await;
    assert_oci_error_status(&r, &[502]);
    assert_eq!(
        up.requests.blob_gets(&layer),
        2,
        "{}",
        up.requests.describe()
    );
    assert_eq!(uploads(&data_dir), Vec::<PathBuf>::new());
    p.stop_and_fsck();
}
