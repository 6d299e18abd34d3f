//! A cache within its size, and a disk that keeps room for pushes: real upstream, real clients,
//! real processes, restarts in between.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Proxy, assert_layout_holds, skopeo_pull};
use trow_tests::images::{Image, build_image_sized};
use trow_tests::oci::{Reg, bytes, send, with_query};
use trow_tests::tmpfs::Tmpfs;
use trow_tests::upstream::{ProxyConfig, Upstream};
use trow_tests::{Flags, Topology, Trow, sha256_digest};

/// How long a test waits for something that should happen promptly (not a speed assertion).
const PATIENCE: Duration = Duration::from_secs(30);

fn blob_file(data: &Path, digest: &str) -> std::path::PathBuf {
    data.join(format!("blobs/sha256/{}/{}", &digest[7..9], &digest[7..]))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The big layer of an image built with `build_image_sized` (its largest blob).
fn big_layer(layout: &Path, img: &Image) -> String {
    img.layers
        .iter()
        .max_by_key(|d| {
            std::fs::metadata(blob_file(layout, d))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .unwrap()
        .clone()
}

/// Stops every process of `trow` gracefully (SIGTERM), as an operator's rollout does.
fn stop(trow: &mut Trow) {
    let grace = Duration::from_secs(10);
    assert!(trow.main.terminate(grace).is_some());
    for p in trow.proxies.iter_mut() {
        assert!(p.terminate(grace).is_some());
    }
    if let Some(s) = trow.storage.as_mut() {
        assert!(s.terminate(grace).is_some());
    }
}

/// Three images of about 1 MiB each and a cache of 2.5 MiB. `a` is cached, then `b`, then `a`
/// is pulled again; Trow is restarted; `c` is pulled: the cache is over its size, and `b`, the
/// least recently pulled (as remembered across the restart; by the time it was cached it
/// would be `a`), is evicted. The others pull from the cache without asking the upstream; `b`
/// is fetched again.
pub async fn the_least_recently_pulled_image_is_evicted(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let imgs: Vec<Image> = ["a", "b", "c"]
        .iter()
        .map(|t| build_image_sized(&src, t, "amd64", 1 << 20))
        .collect();
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    for img in &imgs {
        up.push(&img.oci_ref(), &format!("team/{}:1", img.tag));
    }
    let config = ProxyConfig::new([up.entry().alias("up")]).max_size("2500KiB");
    let config_file = config.write(&tmp.path().join("config.yml"));
    let flags = || Flags {
        config_file: Some(config_file.clone()),
        ..Flags::storage(&["--pull-guard", "0s"])
    };
    let data = tmp.path().join("data");
    let reqs = up.requests();
    let layer_gets = |img: &Image| {
        let big = big_layer(&src, img);
        reqs.count_where(|r| r.method == "GET" && r.path().ends_with(&big))
    };
    let pull = |t: &Trow, img: &Image, into: &str| {
        let layout = tmp.path().join(into);
        skopeo_pull(&t.image(&format!("f/up/team/{}:1", img.tag)), &layout, "x");
        assert_layout_holds(&layout, "x", img);
    };

    let mut t = Trow::start_in_with(topology, &data, flags());
    pull(&t, &imgs[0], "pull-a");
    std::thread::sleep(Duration::from_millis(50));
    pull(&t, &imgs[1], "pull-b");
    std::thread::sleep(Duration::from_millis(50));
    pull(&t, &imgs[0], "pull-a-again");
    stop(&mut t);
    let mut t = Trow::start_in_with(topology, &data, flags());
    let _logs = trow_tests::clients::LogsOnPanic::trow(&t);
    pull(&t, &imgs[2], "pull-c");
    let b_big = blob_file(&data, &big_layer(&src, &imgs[1]));
    wait_until("the eviction of b", || !b_big.exists());
    for img in [&imgs[0], &imgs[2]] {
        assert!(
            blob_file(&data, &big_layer(&src, img)).exists(),
            "{} was evicted",
            img.tag
        );
    }
    // The eviction is on record in the audit log: b's image, by storage.
    let url = format!("{}/audit/v1/events?action=evict", t.url);
    let deadline = Instant::now() + PATIENCE;
    let evicted = loop {
        let r = trow_tests::oci::send(trow_tests::oci::client().get(&url)).await;
        r.assert_status(200);
        let events = r.json()["events"].as_array().unwrap().clone();
        if !events.is_empty() || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(evicted.len(), 1, "{evicted:#?}");
    assert_eq!(evicted[0]["digest"], imgs[1].manifest_digest.as_str());
    assert!(
        evicted[0]["repository"]
            .as_str()
            .unwrap()
            .ends_with("/team/b"),
        "{evicted:#?}"
    );
    assert_eq!(evicted[0]["source"], "storage");
    let before: Vec<usize> = imgs.iter().map(layer_gets).collect();
    assert_eq!(before, vec![1, 1, 1], "{}", reqs.describe());
    pull(&t, &imgs[0], "again-a");
    pull(&t, &imgs[2], "again-c");
    assert_eq!(layer_gets(&imgs[0]), 1, "a is served from the cache");
    assert_eq!(layer_gets(&imgs[2]), 1, "c is served from the cache");
    pull(&t, &imgs[1], "again-b");
    assert_eq!(layer_gets(&imgs[1]), 2, "b is fetched again");
    trow_tests::fsck::stop_and_fsck(&mut t);
}

/// Pushes `data` to `repo` with POST then PUT; the PUT's response, or the POST's when it failed.
async fn push_blob(reg: &Reg, repo: &str, data: &[u8]) -> trow_tests::oci::Resp {
    let r = reg.start_upload(repo).await;
    if r.status != 202 {
        return r;
    }
    let loc = reg.abs(&r.must_header("location"));
    send(
        reg.client
            .put(with_query(&loc, &format!("digest={}", sha256_digest(data))))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
    )
    .await
}

/// A 24 MiB volume keeping 10 MiB free, two cached images of 5 MiB: pushes take the volume
/// under its reserve, and the cache gives its images back, least recently pulled first, before
/// any push fails; once nothing is left to evict, pushes are refused with a 507 before they
/// write (nothing half-written under uploads/), and what was pushed reads back whole.
pub async fn disk_pressure_evicts_the_cache_before_pushes_fail(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let imgs: Vec<Image> = ["a", "b"]
        .iter()
        .map(|t| build_image_sized(&src, t, "amd64", 5 << 20))
        .collect();
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    for img in &imgs {
        up.push(&img.oci_ref(), &format!("team/{}:1", img.tag));
    }
    let fs = Tmpfs::mount("24m");
    let config = ProxyConfig::new([up.entry().alias("up")]);
    let p = Proxy::start_in(
        topology,
        &config,
        tmp.path(),
        &fs.dir,
        Flags::storage(&["--pull-guard", "0s", "--min-free-space", "10MiB"]),
    );
    for img in &imgs {
        let layout = tmp.path().join(format!("pull-{}", img.tag));
        skopeo_pull(&p.image(&format!("f/up/team/{}:1", img.tag)), &layout, "x");
        assert_layout_holds(&layout, "x", img);
        std::thread::sleep(Duration::from_millis(50));
    }
    let cached: Vec<std::path::PathBuf> = imgs
        .iter()
        .map(|img| blob_file(&fs.dir, &big_layer(&src, img)))
        .collect();
    assert!(cached.iter().all(|c| c.exists()));

    let mut pushed = Vec::new();
    let mut refused = None;
    for i in 0..8 {
        let data = bytes(5 << 20, 100 + i);
        let r = push_blob(&p.reg, "mine/big", &data).await;
        if r.status != 201 {
            refused = Some((i, r));
            break;
        }
        pushed.push(data);
        if i == 0 {
            wait_until("the eviction of a", || !cached[0].exists());
            assert!(cached[1].exists(), "b was pulled last: a goes first");
        }
    }
    let (at, r) = refused.expect("a 24 MiB volume took 40 MiB of pushes");
    assert!(
        !cached[1].exists(),
        "the cache gave everything back before push {at} was refused"
    );
    r.assert_status(507);
    assert_eq!(r.json()["errors"][0]["code"], "UNKNOWN", "{}", r.text());
    let uploads = std::fs::read_dir(fs.dir.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(uploads, 0, "a refused push leaves nothing under uploads/");
    for data in &pushed {
        let d = sha256_digest(data);
        let b = p.reg.get(&p.v2(&format!("mine/big/blobs/{d}"))).await;
        assert_eq!(b.status, 200);
        assert!(&b.body == data, "pushed blob {d} reads back whole");
    }
    let mut p = p;
    p.stop_and_fsck();
}
