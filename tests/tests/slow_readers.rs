//! Slow and stalled readers: tens of blob downloads that read slowly or not at all must not
//! starve other requests (the gateway reaches storage over one HTTP/2 connection, whose
//! flow-control window such streams can use up), and a client that reads nothing is cut off.
//!
//! Bounds like "within 10 s" only detect a hang; the measured times and the processes' resident
//! memory are printed to stderr.

mod hostile;

use hostile::{Server, http, push_blob, try_push_blob, wait_closed};
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use trow_tests::oci::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, desc, oci_manifest, to_bytes};
use trow_tests::{Proc, Topology};

/// The slow-reader tests each load the machine; they run one at a time.
static HEAVY: Mutex<()> = Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_disconnected_after_the_send_timeout() {
    let trow = Server::start(Topology::OneProcess, &["--send-timeout", "2"]);
    let c = http();
    let blob = trow_tests::oci::bytes(32 << 20, 3);
    let len = blob.len();
    let digest = push_blob(&c, &trow.url, "stalled/reader", blob).await;

    let mut s = trow.connect();
    write!(
        s,
        "GET /v2/stalled/reader/blobs/{digest} HTTP/1.1\r\nHost: trow\r\n\r\n"
    )
    .unwrap();
    // Read nothing for longer than the send timeout, then everything there is.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (got, _) =
        tokio::task::spawn_blocking(move || wait_closed(&mut s, Duration::from_secs(30)))
            .await
            .unwrap();
    eprintln!(
        "a reader stalled for 6 s got {} of {len} blob bytes before the connection closed",
        got.len()
    );
    assert!(
        got.len() < len,
        "the server must give up on a client that reads nothing, yet it sent all {} bytes",
        got.len()
    );
}

/// Times `f`; `None` if it did not finish within 10 s.
async fn timed<F: std::future::Future<Output = u16>>(f: F) -> Option<(Duration, u16)> {
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .ok()
        .map(|status| (t.elapsed(), status))
}

async fn slow_readers_do_not_starve_others(topology: Topology) {
    let _heavy = HEAVY.lock().await;
    let trow = Server::start(topology, &[]);
    let c = http();
    let big_c = reqwest::Client::builder().no_proxy().build().unwrap();
    let repo = "slow/readers";
    let big = trow_tests::oci::bytes(64 << 20, 1);
    let big_len = big.len();
    let big_digest = push_blob(&big_c, &trow.url, repo, big).await;
    let config = b"{}".to_vec();
    let config_digest = push_blob(&c, &trow.url, repo, config).await;
    let manifest = oci_manifest(
        desc(OCI_CONFIG, &config_digest, 2),
        &[desc(OCI_LAYER, &big_digest, big_len)],
    );
    let r = c
        .put(format!("{}/v2/{repo}/manifests/v1", trow.url))
        .header("Content-Type", OCI_MANIFEST)
        .body(to_bytes(&manifest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let rss_before = trow.rss();
    let threads_before = trow.threads();

    // 20 slow downloads (100 KB/s) and 20 that never read.
    let blob_url = format!("{}/v2/{repo}/blobs/{big_digest}", trow.url);
    let logs = tempfile::tempdir().unwrap();
    let slow: Vec<Proc> = (0..20)
        .map(|i| {
            let mut cmd = Command::new("curl");
            cmd.args(["-s", "-o", "/dev/null", "--limit-rate", "100k", &blob_url]);
            Proc::spawn(cmd, logs.path().join(format!("curl-{i}.log")))
        })
        .collect();
    let path = format!("/v2/{repo}/blobs/{big_digest}");
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = trow.connect();
            write!(s, "GET {path} HTTP/1.1\r\nHost: trow\r\n\r\n").unwrap();
            s
        })
        .collect();
    // Time for the stalled readers' socket buffers to fill, so their streams stop.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (gw_rss, storage_rss) = trow.rss();
    let threads = trow.threads();

    let manifest_get = timed(async {
        c.get(format!("{}/v2/{repo}/manifests/v1", trow.url))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
    .await;
    let small_get = timed(async {
        let r = c
            .get(format!("{}/v2/{repo}/blobs/{config_digest}", trow.url))
            .send()
            .await;
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                if r.bytes().await.is_ok_and(|b| b.as_ref() == b"{}") {
                    status
                } else {
                    0
                }
            }
            Err(_) => 0,
        }
    })
    .await;
    let small_push = timed(async {
        let Ok(digest) = try_push_blob(&c, &trow.url, "slow/other", b"small".to_vec()).await else {
            return 0;
        };
        // The config must be in this repository too.
        if try_push_blob(&c, &trow.url, "slow/other", b"{}".to_vec())
            .await
            .is_err()
        {
            return 0;
        }
        let m = oci_manifest(
            desc(OCI_CONFIG, &config_digest, 2),
            &[desc(OCI_LAYER, &digest, 5)],
        );
        c.put(format!("{}/v2/slow/other/manifests/v1", trow.url))
            .header("Content-Type", OCI_MANIFEST)
            .body(to_bytes(&m))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
    .await;
    eprintln!(
        "{topology:?} with 20 slow + 20 stalled readers of a 64 MiB blob: \
         manifest GET {manifest_get:?}, 2-byte blob GET {small_get:?}, small push {small_push:?}; \
         RSS gateway/one process {gw_rss} KiB, storage {storage_rss:?} KiB \
         (before the readers: {rss_before:?}); threads {threads:?} (before: {threads_before:?})"
    );
    drop(stalled);
    drop(slow);
    assert!(
        matches!(manifest_get, Some((_, 200))),
        "manifest GET: {manifest_get:?}"
    );
    assert!(
        matches!(small_get, Some((_, 200))),
        "2-byte blob GET: {small_get:?}"
    );
    assert!(
        matches!(small_push, Some((_, 201))),
        "small push: {small_push:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_stalled_readers_do_not_starve_other_requests_one_process() {
    slow_readers_do_not_starve_others(Topology::OneProcess).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_stalled_readers_do_not_starve_other_requests_split() {
    slow_readers_do_not_starve_others(Topology::Split).await;
}
