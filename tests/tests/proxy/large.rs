//! Large blobs: a cold fill moves through bounded buffers whatever the layer's size.

use std::io::Write as _;
use std::path::Path;

use futures::StreamExt;
use sha2::Digest as _;

use crate::support::{Proxy, assert_manifest};
use trow_tests::images::{Image, Rng};
use trow_tests::oci::{
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, client, config_blob, desc, oci_manifest, to_bytes,
};
use trow_tests::upstream::{ProxyConfig, Upstream};
use trow_tests::{Topology, sha256_digest};

/// The large layer: big enough that holding it (or a good part of it) shows in any process's
/// peak RSS, small enough to generate and move in seconds.
const LAYER: u64 = 512 << 20;

/// What each Trow process may hold at its peak while the layer fills and is read.
const PEAK_RSS_LIMIT: u64 = 128 << 20;

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
