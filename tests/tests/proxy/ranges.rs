//! Two points of the pull-through cache that pulls of whole images never reach:
//!
//! - `Range` requests on proxied blobs, on each of their three states: being filled (the window
//!   asked for not yet arrived), cold (nothing fetched yet), and cached. Clients resume broken
//!   downloads with ranges, and a range must never start a second fetch of a blob being filled
//!   nor be answered with other bytes; once cached, a proxied blob must answer every `Range`
//!   exactly as the same blob pushed to Trow does (both go through one parser, on different
//!   paths to the bytes).
//! - A multi-platform index is cached alone: its children manifests and their blobs are fetched
//!   only when a client asks for them (a node pulls one platform), the cached index stands before
//!   its children under `f/`, and `trow fsck` accepts it.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::{
    Proxy, assert_blob, assert_cache, assert_manifest, assert_oci_error_status, blobs, get_outcome,
    skopeo_pull_cmd,
};
use trow_tests::clients::{assert_layout_blobs_intact, layout_tag_digest, run};
use trow_tests::images::{self, INDEX_MEDIA_TYPE, read_blob};
use trow_tests::oci::{Reg, Resp, send};
use trow_tests::upstream::{ProxyConfig, Upstream, describe};
use trow_tests::{Topology, sha256_digest};

/// How long a condition polled with [`eventually`] may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds; fails naming `what` after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < PATIENCE, "{what}: not after {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET `url` with `Range: range`.
async fn get_range(reg: &Reg, url: &str, range: &str) -> Resp {
    send(reg.client.get(url).header("Range", range)).await
}

/// A 206 answer with bytes `start..=end` of `data`, as a proxied blob: `Content-Range`,
/// `Content-Length`, the bytes themselves, and `Trow-Cache: cache`.
fn assert_partial(r: &Resp, data: &[u8], start: usize, end: usize, cache: &str) {
    r.assert_status(206);
    r.assert_header(
        "content-range",
        &format!("bytes {start}-{end}/{}", data.len()),
    );
    assert_eq!(r.content_length(), (end - start + 1) as u64, "{r}");
    assert!(
        r.body == data[start..=end],
        "{}: {} bytes that are not bytes {start}-{end} of the blob: {r}",
        r.what,
        r.body.len()
    );
    assert_cache(r, cache);
}

// ---------------------------------------------------------------------------------------------
// Ranges of a blob being filled, of cold blobs, and of a cached blob

pub async fn ranges_on_cold_filling_and_cached_blobs(topology: Topology, ip: &str) {
    const BIG: usize = 8 << 20;
    /// The upstream's rate while the big layer fills: a fill of about four seconds.
    const RATE: u64 = 2 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let img = images::build_image_sized(&tmp.path().join("src"), "1.0", "amd64", BIG);
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/big:1.0");
    let config = ProxyConfig::new([up.entry().alias("up")]);
    let mut p = Proxy::start(topology, &config, tmp.path());
    let reqs = up.requests();
    let repo = "f/up/team/big";
    let big = img.layers[1].clone();
    let data = read_blob(&img.layout, &big);
    let size = data.len();
    assert!(size >= BIG, "the big layer is {size} bytes");
    let url = p.v2(&format!("{repo}/blobs/{big}"));

    // A whole GET in the background starts the fill, throttled upstream.
    up.set_throttle(RATE);
    let started = Instant::now();
    let full = tokio::spawn({
        let url = url.clone();
        async move { get_outcome(&url).await }
    });
    eventually("the upstream GET of the big layer", || async {
        reqs.blob_gets(&big) == 1
    })
    .await;
    assert!(
        !p.storage_has_blob(repo, &big).await && !full.is_finished(),
        "the big layer is not filling: the premise of this test failed"
    );

    // While it fills: a range past the end is refused at once (the size is known).
    let r = get_range(&p.reg, &url, &format!("bytes={size}-")).await;
    assert_oci_error_status(&r, &[416]);
    r.assert_header("content-range", &format!("bytes */{size}"));

    // A window near the end, which the fill has not reached when asked: its bytes, once they
    // arrive. The upstream sends at most RATE bytes a second (plus one 16 KiB write), so the
    // elapsed time bounds what is filled.
    let (a, b) = (size - 300_000, size - 4_097);
    let asked_after = started.elapsed();
    let filled_at_most = RATE as f64 * asked_after.as_secs_f64() + f64::from(64 << 10);
    assert!(
        filled_at_most < a as f64,
        "the window {a}-{b} may be filled already ({asked_after:?} after the GET): the premise \
         of this test failed"
    );
    let r = get_range(&p.reg, &url, &format!("bytes={a}-{b}")).await;
    assert_partial(&r, &data, a, b, "miss");
    r.assert_header("docker-content-digest", &big);
    eprintln!(
        "range {a}-{b} of a {size}-byte fill asked after {asked_after:?}, answered after {:?}",
        started.elapsed()
    );

    // The whole GET ends with the whole blob; the ranges did not fetch it again.
    let whole = full.await.expect("the whole GET");
    let got = whole.body.as_ref().map(|b| (b.len(), sha256_digest(b)));
    assert!(
        whole.status == 200
            && whole.cache.as_deref() == Some("miss")
            && got.as_ref().is_ok_and(|(_, d)| *d == big),
        "the whole GET of the big layer: HTTP {}, Trow-Cache {:?}, body (length, digest) {got:?}",
        whole.status,
        whole.cache
    );
    eprintln!("the whole {size}-byte fill took {:?}", started.elapsed());
    assert_eq!(
        reqs.blob_gets(&big),
        1,
        "GETs of the big layer:\n{}",
        reqs.describe()
    );

    // Cold blobs (the config, the small layer): a range is their first request, and fills them.
    let small = img.layers[0].clone();
    for (d, window) in [(&img.config_digest, (1, 40)), (&small, (1000, 9000))] {
        let bytes = read_blob(&img.layout, d);
        let (a, b) = (window.0, window.1.min(bytes.len() - 2));
        assert!(!p.storage_has_blob(repo, d).await, "{d} is not cold");
        // A HEAD says the size (the upstream's) and leaves the blob cold.
        let r = send(p.reg.client.head(p.v2(&format!("{repo}/blobs/{d}")))).await;
        r.assert_status(200);
        assert_eq!(
            r.content_length(),
            bytes.len() as u64,
            "HEAD of a cold blob: {r}"
        );
        assert_cache(&r, "miss");
        assert!(!p.storage_has_blob(repo, d).await, "a HEAD filled {d}");
        let r = get_range(
            &p.reg,
            &p.v2(&format!("{repo}/blobs/{d}")),
            &format!("bytes={a}-{b}"),
        )
        .await;
        assert_partial(&r, &bytes, a, b, "miss");
        r.assert_header("docker-content-digest", d);
    }
    up.set_throttle(0);
    for d in blobs(&img) {
        eventually(&format!("{d} stored in {repo}"), || {
            p.storage_has_blob(repo, &d)
        })
        .await;
        assert_eq!(reqs.blob_gets(&d), 1, "GETs of {d}:\n{}", reqs.describe());
    }

    // Cached: every range answered as the same blob pushed to Trow answers it, from the cache.
    let local = p.v2(&format!(
        "local/big/blobs/{}",
        p.reg.push_blob("local/big", &data).await
    ));
    let mark = reqs.mark();
    let cases = [
        ("bytes=0-0".to_string(), Some((0, 0))),
        ("bytes=10-".into(), Some((10, size - 1))),
        ("bytes=-100".into(), Some((size - 100, size - 1))),
        (
            format!("bytes={}-{}", size - 50, size + 50),
            Some((size - 50, size - 1)),
        ),
        (format!("bytes={}-", size - 1), Some((size - 1, size - 1))),
        ("bytes=0-".into(), Some((0, size - 1))),
        (format!("bytes={size}-"), None),
        (format!("bytes={}-{}", size + 10, size + 20), None),
        ("bytes=5-1".into(), None),
        ("bytes=-0".into(), None),
    ];
    for (range, expected) in &cases {
        let r = get_range(&p.reg, &url, range).await;
        let l = get_range(&p.reg, &local, range).await;
        match expected {
            Some((start, end)) => assert_partial(&r, &data, *start, *end, "hit"),
            None => {
                assert_oci_error_status(&r, &[416]);
                r.assert_header("content-range", &format!("bytes */{size}"));
            }
        }
        assert_same_answer(&r, &l, range);
        // A HEAD with the same Range: the same status and headers, no body, both ways.
        let head = |u: &str| send(p.reg.client.head(u).header("Range", range.as_str()));
        let (rh, lh) = (head(&url).await, head(&local).await);
        assert!(rh.body.is_empty(), "HEAD {range}: a body: {rh}");
        assert_same_answer(&rh, &lh, &format!("{range} (HEAD)"));
    }
    // Ranges Trow does not serve as ranges (several; another unit): the whole blob, both ways.
    for range in ["bytes=0-1,5-6", "items=0-1"] {
        let r = get_range(&p.reg, &url, range).await;
        assert_blob(&r, &img, &big);
        assert_cache(&r, "hit");
        assert_same_answer(&r, &get_range(&p.reg, &local, range).await, range);
    }
    let asked = reqs.since(mark);
    assert!(
        asked.is_empty(),
        "ranges of a cached blob asked the upstream:\n{}",
        describe(&asked)
    );
    p.stop_and_fsck();
}

/// The proxied answer `r` and the local answer `l` to the same `Range` agree: status, the
/// range and length headers, and the bytes (or the error codes).
fn assert_same_answer(r: &Resp, l: &Resp, range: &str) {
    let same = r.status == l.status
        && r.header("content-range") == l.header("content-range")
        && r.header("content-length") == l.header("content-length")
        && r.content_type() == l.content_type()
        && if (200..300).contains(&r.status) || (r.body.is_empty() && l.body.is_empty()) {
            r.body == l.body
        } else {
            r.error_codes() == l.error_codes()
        };
    assert!(
        same,
        "Range: {range}: the proxied blob and the same blob pushed to Trow answer differently:\n\
         proxied: {r}\nlocal:   {l}"
    );
}

// ---------------------------------------------------------------------------------------------
// An index is cached alone; its children when asked for

pub async fn index_children_are_fetched_when_asked(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let idx = images::build_index(&tmp.path().join("src"), "1.0");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    // The same index twice upstream: one repository pulled one platform at a time, the other
    // whole by skopeo.
    up.push_all(&idx.oci_ref(), "team/multi:1.0");
    up.push_all(&idx.oci_ref(), "team/all:1.0");
    let config = ProxyConfig::new([up.entry().alias("up")]);
    let mut p = Proxy::start(topology, &config, tmp.path());
    let reqs = up.requests();
    let repo = "f/up/team/multi";
    let (amd, arm) = (&idx.images[0], &idx.images[1]);
    assert_eq!(
        (amd.architecture.as_str(), arm.architecture.as_str()),
        ("amd64", "arm64")
    );
    let upstream_gets = |path: &str| {
        let prefix = format!("/v2/team/multi/{path}");
        reqs.count_where(|r| r.method == "GET" && r.path().starts_with(&prefix))
    };

    // The index by tag: the upstream's bytes, cached alone.
    let r = p.get_m(&format!("{repo}/manifests/1.0")).await;
    r.assert_status(200);
    assert!(
        r.body == idx.index_bytes(),
        "other index bytes than the upstream's: {r}"
    );
    r.assert_header("docker-content-digest", &idx.index_digest);
    assert_eq!(r.content_type().as_deref(), Some(INDEX_MEDIA_TYPE), "{r}");
    assert_cache(&r, "miss");
    assert!(p.storage_has_manifest(repo, "1.0").await);
    assert!(p.storage_has_manifest(repo, &idx.index_digest).await);
    for img in &idx.images {
        assert!(
            !p.storage_has_manifest(repo, &img.manifest_digest).await,
            "the {} child was cached with the index",
            img.architecture
        );
        for d in blobs(img) {
            assert!(
                !p.storage_has_blob(repo, &d).await,
                "blob {d} of the {} child was cached with the index",
                img.architecture
            );
        }
    }
    assert_eq!(
        (upstream_gets("manifests/"), upstream_gets("blobs/")),
        (1, 0),
        "an index pull is one manifest GET (the index):\n{}",
        reqs.describe()
    );

    // One child by digest, as a node of that platform asks: stored, alone.
    let r = p
        .get_m(&format!("{repo}/manifests/{}", amd.manifest_digest))
        .await;
    assert_manifest(&r, amd);
    assert_cache(&r, "miss");
    assert!(p.storage_has_manifest(repo, &amd.manifest_digest).await);
    assert!(!p.storage_has_manifest(repo, &arm.manifest_digest).await);
    for d in blobs(amd) {
        assert!(
            !p.storage_has_blob(repo, &d).await,
            "blob {d} was cached with its manifest"
        );
    }
    assert_eq!(upstream_gets("manifests/"), 2, "{}", reqs.describe());

    // Its blobs, when pulled.
    for d in blobs(amd) {
        let r = p.get(&format!("{repo}/blobs/{d}")).await;
        assert_blob(&r, amd, &d);
        assert_cache(&r, "miss");
        eventually(&format!("{d} stored in {repo}"), || {
            p.storage_has_blob(repo, &d)
        })
        .await;
        assert_eq!(reqs.blob_gets(&d), 1, "GETs of {d}:\n{}", reqs.describe());
    }

    // The whole index through the other repository, with skopeo: every child and blob stored.
    let all = "f/up/team/all";
    let out = tmp.path().join("out");
    let mut cmd = skopeo_pull_cmd(&p.image(&format!("{all}:1.0")), &out, "1.0");
    cmd.arg("--all");
    run(&mut cmd);
    assert_eq!(layout_tag_digest(&out, "1.0"), idx.index_digest);
    assert_layout_blobs_intact(&out);
    for img in &idx.images {
        assert!(
            p.storage_has_manifest(all, &img.manifest_digest).await,
            "skopeo --all pulled the {} child, yet it is not cached",
            img.architecture
        );
        for d in blobs(img).iter().chain([&img.manifest_digest]) {
            assert_eq!(
                read_blob(&out, d),
                read_blob(&idx.layout, d),
                "{d} pulled through {all}"
            );
        }
        for d in blobs(img) {
            eventually(&format!("{d} stored in {all}"), || {
                p.storage_has_blob(all, &d)
            })
            .await;
        }
    }
    // The arm64 blobs were never fetched before: once each, through team/all only.
    for d in blobs(arm) {
        assert_eq!(reqs.blob_gets(&d), 1, "GETs of {d}:\n{}", reqs.describe());
        assert_eq!(
            reqs.count("GET", &format!("/v2/team/all/blobs/{d}")),
            1,
            "{}",
            reqs.describe()
        );
    }

    // team/multi holds what was asked of it and nothing more.
    assert!(!p.storage_has_manifest(repo, &arm.manifest_digest).await);
    for d in blobs(arm) {
        assert!(
            !p.storage_has_blob(repo, &d).await,
            "{d} leaked into {repo}"
        );
    }
    let r = p
        .get_m(&format!("{repo}/manifests/{}", idx.index_digest))
        .await;
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), idx.index_digest, "{r}");
    assert_cache(&r, "hit");

    // An index before one of its children, under f/: a consistent store.
    p.stop_and_fsck();
}
