//! Storage SIGKILLed while it evicts cached images (its cache past `registry_proxies.max_size`):
//! the store it leaves checks clean, and after a restart every image, evicted or not, pulls
//! whole (the evicted ones from the upstream again).

use std::path::Path;
use std::time::{Duration, Instant};

use trow_tests::clients::LogsOnPanic;
use trow_tests::oci::{
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Reg, bytes, config_blob, desc, oci_manifest, send,
    to_bytes, with_query,
};
use trow_tests::upstream::{ProxyConfig, Upstream};
use trow_tests::{Flags, Topology, Trow, sha256_digest};

/// An image pushed straight to a registry over HTTP: its manifest, and blobs with their bytes.
struct Pushed {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
}

async fn push_upstream(url: &str, repo: &str, tag: &str, layer: Vec<u8>) -> Pushed {
    let c = trow_tests::oci::client();
    let config = config_blob(&format!("{repo}:{tag}"));
    let mut blobs = Vec::new();
    for data in [config.clone(), layer.clone()] {
        let d = sha256_digest(&data);
        let r = send(c.post(format!("{url}/v2/{repo}/blobs/uploads/"))).await;
        r.assert_status(202);
        let loc = r.must_header("location");
        let loc = if loc.starts_with("http") {
            loc
        } else {
            format!("{url}{loc}")
        };
        send(
            c.put(with_query(&loc, &format!("digest={d}")))
                .header("Content-Type", "application/octet-stream")
                .body(data.clone()),
        )
        .await
        .assert_status(201);
        blobs.push((d, data));
    }
    let manifest = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, &blobs[0].0, config.len()),
        &[desc(OCI_LAYER, &blobs[1].0, layer.len())],
    ));
    send(
        c.put(format!("{url}/v2/{repo}/manifests/{tag}"))
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.clone()),
    )
    .await
    .assert_status(201);
    Pushed {
        repo: repo.to_string(),
        tag: tag.to_string(),
        manifest,
        blobs,
    }
}

/// Pulls an image through the cache as a client does; the status of the first failure, if any.
async fn pull(reg: &Reg, p: &Pushed) -> Result<(), String> {
    let m = reg
        .get_m(&reg.v2(&format!("f/up/{}/manifests/{}", p.repo, p.tag)))
        .await;
    if m.status != 200 {
        return Err(format!("manifest {}:{}: {}", p.repo, p.tag, m.status));
    }
    assert_eq!(m.body, p.manifest, "{}:{}", p.repo, p.tag);
    for (d, data) in &p.blobs {
        let b = reg
            .get(&reg.v2(&format!("f/up/{}/blobs/{d}", p.repo)))
            .await;
        if b.status != 200 {
            return Err(format!("blob {}@{d}: {}", p.repo, b.status));
        }
        assert!(&b.body == data, "{}@{d} pulled whole", p.repo);
    }
    Ok(())
}

fn busy(gc: &Path) -> bool {
    std::fs::read_dir(gc.join("blobs")).is_ok_and(|mut e| e.next().is_some())
}

pub async fn storage_killed_during_an_eviction(ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    let mut small = Vec::new();
    for i in 0..40u64 {
        small.push(
            push_upstream(
                &up.registry.url,
                &format!("team/s{}", i % 5),
                &format!("v{i}"),
                bytes(20_000, i),
            )
            .await,
        );
    }
    let big = push_upstream(&up.registry.url, "team/big", "1", bytes(1 << 20, 999)).await;
    let config = ProxyConfig::new([up.entry().alias("up")])
        .max_size("1200KiB")
        .write(&tmp.path().join("config.yml"));
    let mut reg = Reg::with_trow(Trow::start_with(
        Topology::Split,
        Flags {
            config_file: Some(config),
            ..Flags::storage(&["--pull-guard", "0s"])
        },
    ));
    let _logs = LogsOnPanic::trow(reg.trow.as_ref().unwrap());
    for p in &small {
        pull(&reg, p).await.unwrap();
    }
    // The big image takes the cache past its size: most small ones are evicted at once.
    let url = reg.url.clone();
    let big_pull = tokio::spawn({
        let reg = Reg::with_url(&url);
        async move { pull(&reg, &big).await.map(|()| big) }
    });
    let trow = reg.trow.as_mut().unwrap();
    let gc = trow.data_dir.join("gc");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !busy(&gc) {
        assert!(Instant::now() < deadline, "no eviction started");
        std::thread::sleep(Duration::from_micros(200));
    }
    trow.kill_storage();
    let log = trow.storage.as_ref().unwrap().log_text();
    assert!(
        !log.contains("evicted the least recently pulled"),
        "killed too late:\n{log}"
    );
    // The store a crash mid-eviction leaves is consistent.
    trow_tests::fsck::fsck(&trow.data_dir);
    let _ = big_pull.await;
    trow.restart_storage();
    // Every image pulls whole; what was evicted comes from the upstream again.
    for p in &small {
        let mut outcome = pull(&reg, p).await;
        for _ in 0..50 {
            if outcome.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            outcome = pull(&reg, p).await;
        }
        outcome.unwrap();
    }
    trow_tests::fsck::stop_and_fsck(reg.trow.as_mut().unwrap());
}
