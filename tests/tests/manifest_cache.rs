//! The gateways' manifest cache against real processes: storage and two gateways (the split
//! topology as the chart runs it). What a gateway answers from memory is never older than a
//! write another gateway returned: a moved tag is served new, a deleted manifest is gone, while
//! writers race, while a gateway hangs (SIGSTOP) or is cut off from storage (a relay that holds
//! the bytes), and across a storage crash. Each test first
//! proves the cache answers (its hit counter moves), so a pass is not storage answering alone.

use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trow_tests::fsck::stop_and_fsck;
use trow_tests::oci::{OCI_MANIFEST, Reg, Resp, to_bytes};
use trow_tests::{Proc, Topology, Trow, sha256_digest};

/// Storage, gateway A (`trow.main`) and gateway B; clients of A and B.
struct TwoGateways {
    trow: Trow,
    b: Proc,
    reg_a: Reg,
    reg_b: Reg,
}

fn start() -> TwoGateways {
    let trow = Trow::start(Topology::Split);
    let (b, url_b) = trow.another_gateway();
    let reg_a = Reg::with_url(&trow.url);
    let reg_b = Reg::with_url(&url_b);
    TwoGateways {
        trow,
        b,
        reg_a,
        reg_b,
    }
}

impl TwoGateways {
    /// Stops every process and checks the store.
    fn finish(mut self) {
        self.b.terminate(Duration::from_secs(10));
        stop_and_fsck(&mut self.trow);
    }
}

/// Pushes the config blob the manifests of `repo` share; returns its descriptor.
async fn push_config(reg: &Reg, repo: &str) -> serde_json::Value {
    let d = reg.push_blob(repo, b"{}").await;
    json!({"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": 2})
}

/// An image manifest with no layers, made distinct by `n`.
fn manifest(config: &serde_json::Value, n: usize) -> Vec<u8> {
    to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [],
        "annotations": {"n": n.to_string()},
    }))
}

/// `trow_manifest_cache_lookups_total{result="hit"}` of the gateway at `reg`.
async fn hits(reg: &Reg) -> u64 {
    let r = reg.get(&format!("{}/metrics", reg.url)).await;
    r.assert_status(200);
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("trow_manifest_cache_lookups_total{result=\"hit\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no hit counter in:\n{}", r.text()))
}

/// GETs `reference` until a gateway's cache answers it (the cache serves once storage granted
/// it a lease, a moment after start); the digest served.
async fn warm(reg: &Reg, repo: &str, reference: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = hits(reg).await;
        let r = get(reg, repo, reference).await;
        r.assert_status(200);
        if hits(reg).await > before {
            return r.must_header("docker-content-digest");
        }
        assert!(
            Instant::now() < deadline,
            "the cache of {} never answered",
            reg.url
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(reg: &Reg, repo: &str, reference: &str) -> Resp {
    reg.get_m(&reg.v2(&format!("{repo}/manifests/{reference}")))
        .await
}

async fn head(reg: &Reg, repo: &str, reference: &str) -> Resp {
    reg.head_m(&reg.v2(&format!("{repo}/manifests/{reference}")))
        .await
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.pid().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {}", p.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_moved_through_one_gateway_is_served_new_by_the_other_at_once() {
    let t = start();
    let repo = "cache/moves";
    let config = push_config(&t.reg_a, repo).await;
    let first = t
        .reg_a
        .push_manifest(repo, "t", OCI_MANIFEST, &manifest(&config, 0))
        .await;
    assert_eq!(warm(&t.reg_b, repo, "t").await, first);
    let hits_before = hits(&t.reg_b).await;

    for n in 1..=40 {
        // Through A, then B, alternately: each gateway's cache is the other's witness.
        let (writer, reader) = match n % 2 {
            0 => (&t.reg_a, &t.reg_b),
            _ => (&t.reg_b, &t.reg_a),
        };
        let body = manifest(&config, n);
        let d = writer.push_manifest(repo, "t", OCI_MANIFEST, &body).await;
        // The reader cached the tag's old target a moment ago (the two reads below).
        let g = get(reader, repo, "t").await;
        g.assert_status(200)
            .assert_header("docker-content-digest", &d);
        assert_eq!(g.body, body, "move {n}: the old manifest's bytes");
        head(reader, repo, "t")
            .await
            .assert_status(200)
            .assert_header("docker-content-digest", &d);
        get(writer, repo, "t")
            .await
            .assert_header("docker-content-digest", &d);
    }
    // Both gateways answered from memory in between, so the moves invalidated real entries.
    let served = hits(&t.reg_b).await - hits_before;
    assert!(
        served >= 20,
        "B's cache answered only {served} of its reads"
    );
    t.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_manifest_is_never_served_after_its_delete_returned() {
    let t = start();
    let repo = "cache/deletes";
    let config = push_config(&t.reg_a, repo).await;
    for n in 0..10 {
        let body = manifest(&config, n);
        let tag = format!("v{n}");
        let d = t.reg_a.push_manifest(repo, &tag, OCI_MANIFEST, &body).await;
        // Both gateways hold it, by tag and by digest.
        for reg in [&t.reg_a, &t.reg_b] {
            assert_eq!(warm(reg, repo, &tag).await, d);
            warm(reg, repo, &d).await;
        }
        let (deleter, other) = match n % 2 {
            0 => (&t.reg_a, &t.reg_b),
            _ => (&t.reg_b, &t.reg_a),
        };
        if n % 3 == 0 {
            // By tag: the tag goes, the manifest stays.
            deleter
                .delete(&deleter.v2(&format!("{repo}/manifests/{tag}")))
                .await
                .assert_status(202);
            for reg in [other, deleter] {
                get(reg, repo, &tag).await.assert_status(404);
                head(reg, repo, &tag).await.assert_status(404);
                get(reg, repo, &d).await.assert_status(200);
            }
        } else {
            deleter
                .delete(&deleter.v2(&format!("{repo}/manifests/{d}")))
                .await
                .assert_status(202);
            for reg in [other, deleter] {
                let r = get(reg, repo, &d).await;
                r.assert_status(404);
                assert!(r.text().contains("MANIFEST_UNKNOWN"), "{r}");
                head(reg, repo, &d).await.assert_status(404);
                get(reg, repo, &tag).await.assert_status(404);
            }
        }
    }
    t.finish();
}

/// Concurrent writers through both gateways move one tag while each checks, through the other
/// gateway, that what it reads is never older than its own write: the value read is its own or
/// one whose PUT had not returned before its own began.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_never_read_a_tag_older_than_their_own_write() {
    let t = start();
    let repo = "cache/race";
    let config = push_config(&t.reg_a, repo).await;
    t.reg_a
        .push_manifest(repo, "t", OCI_MANIFEST, &manifest(&config, 0))
        .await;
    warm(&t.reg_a, repo, "t").await;
    warm(&t.reg_b, repo, "t").await;
    // Each PUT: digest -> (when it began, when it returned).
    type Log = Arc<Mutex<Vec<(String, Instant, Option<Instant>)>>>;
    let log: Log = Arc::default();
    let urls = [t.reg_a.url.clone(), t.reg_b.url.clone()];
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (log, urls, config) = (log.clone(), urls.clone(), config.clone());
            tokio::spawn(async move {
                let writer = Reg::with_url(&urls[w % 2]);
                let reader = Reg::with_url(&urls[(w + 1) % 2]);
                for i in 0..15 {
                    let body = manifest(&config, 1000 * (w + 1) + i);
                    let d = sha256_digest(&body);
                    let began = Instant::now();
                    let at = {
                        let mut l = log.lock().unwrap();
                        l.push((d.clone(), began, None));
                        l.len() - 1
                    };
                    writer.push_manifest(repo, "t", OCI_MANIFEST, &body).await;
                    log.lock().unwrap()[at].2 = Some(Instant::now());
                    let r = get(&reader, repo, "t").await;
                    r.assert_status(200);
                    let read = r.must_header("docker-content-digest");
                    if read == d {
                        continue;
                    }
                    let l = log.lock().unwrap();
                    let (_, _, ended) = l
                        .iter()
                        .find(|(x, _, _)| *x == read)
                        .unwrap_or_else(|| panic!("writer {w}: read {read}, which no one put"));
                    assert!(
                        ended.is_none_or(|e| e >= began),
                        "writer {w}: read {read}, whose PUT returned before this writer's began"
                    );
                }
            })
        })
        .collect();
    // Readers keep both caches busy meanwhile, so inserts race the invalidations.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let (url, stop) = (urls[i % 2].clone(), stop.clone());
            tokio::spawn(async move {
                let reg = Reg::with_url(&url);
                while !stop.load(Ordering::Relaxed) {
                    get(&reg, repo, "t").await.assert_status(200);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("a writer saw a stale tag");
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("a reader failed");
    }
    t.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_gateway_delays_writes_by_its_lease_and_serves_nothing_stale_after() {
    let t = start();
    let repo = "cache/hung";
    let config = push_config(&t.reg_a, repo).await;
    let d = t
        .reg_a
        .push_manifest(repo, "t", OCI_MANIFEST, &manifest(&config, 0))
        .await;
    warm(&t.reg_b, repo, "t").await;
    warm(&t.reg_b, repo, &d).await;

    // B stops answering anything, its lease included; the delete through A still returns.
    signal(&t.b, "-STOP");
    let began = Instant::now();
    t.reg_a
        .delete(&t.reg_a.v2(&format!("{repo}/manifests/{d}")))
        .await
        .assert_status(202);
    eprintln!("DELETE with gateway B hung took {:?}", began.elapsed());
    // A tag move is not held up a second time: B was dropped.
    let moved = t
        .reg_a
        .push_manifest(repo, "u", OCI_MANIFEST, &manifest(&config, 1))
        .await;
    signal(&t.b, "-CONT");
    // B's first answers after it wakes up: never the deleted manifest.
    for reference in [d.as_str(), "t"] {
        let r = get(&t.reg_b, repo, reference).await;
        r.assert_status(404);
    }
    // And it caches again once it watches again.
    assert_eq!(warm(&t.reg_b, repo, "u").await, moved);
    t.finish();
}

/// `socat` relaying gateway B's connections to storage, in a process group of its own: frozen
/// (SIGSTOP to the group), it holds every byte in both directions, as a network partition does,
/// while B keeps answering its clients.
struct Relay {
    addr: String,
    socat: std::process::Child,
}

impl Relay {
    fn start(to: &str) -> Relay {
        use std::os::unix::process::CommandExt;
        let port = trow_tests::free_port();
        let addr = format!("127.0.0.1:{port}");
        let socat = Command::new("socat")
            .args([
                &format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
                &format!("TCP:{to}"),
            ])
            .process_group(0)
            .spawn()
            .expect("run socat");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "socat never listened on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Relay { addr, socat }
    }

    fn freeze(&self, on: bool) {
        let group = format!("-{}", self.socat.id());
        let sig = if on { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, "--", &group])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} -- {group}");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let group = format!("-{}", self.socat.id());
        for sig in ["-CONT", "-KILL"] {
            let _ = Command::new("kill").args([sig, "--", &group]).status();
        }
        let _ = self.socat.wait();
    }
}

/// Storage, gateway A, and gateway B reaching storage through a [`Relay`].
fn start_with_relay() -> (TwoGateways, Relay) {
    let trow = Trow::start(Topology::Split);
    let relay = Relay::start(&trow.storage_addr);
    let (b, url_b) = trow.another_gateway_via(&relay.addr);
    let reg_a = Reg::with_url(&trow.url);
    let reg_b = Reg::with_url(&url_b);
    let t = TwoGateways {
        trow,
        b,
        reg_a,
        reg_b,
    };
    (t, relay)
}

/// `trow_manifest_cache_lease_end_seconds` of the gateway at `reg`: until when it may answer
/// from memory (Unix time, 0: not now). `/metrics` is not audited, so it answers while the
/// gateway cannot reach storage (a `/v2/` request waits for the audit log there).
async fn lease_end(reg: &Reg) -> f64 {
    let r = reg.get(&format!("{}/metrics", reg.url)).await;
    r.assert_status(200);
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("trow_manifest_cache_lease_end_seconds "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lease gauge in:\n{}", r.text()))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What B answers for `reference` while it cannot reach storage: an error, or nothing within a
/// few seconds (a call held by the relay) as `None`.
async fn read_cut_off(reg: &Reg, repo: &str, reference: &str) -> Option<Resp> {
    tokio::time::timeout(Duration::from_secs(8), get(reg, repo, reference))
        .await
        .ok()
}

/// Storage, A, and B through a relay; a manifest tagged `t` in `repo` that B holds in memory
/// by tag and digest; then the relay frozen, B still holding its lease. Returns the digest.
async fn cut_off_holding(repo: &str) -> (TwoGateways, Relay, serde_json::Value, String) {
    let (t, relay) = start_with_relay();
    let config = push_config(&t.reg_a, repo).await;
    let d = t
        .reg_a
        .push_manifest(repo, "t", OCI_MANIFEST, &manifest(&config, 0))
        .await;
    warm(&t.reg_b, repo, "t").await;
    warm(&t.reg_b, repo, &d).await;
    relay.freeze(true);
    // Cut off, B holds a lease: its cache would answer.
    assert!(lease_end(&t.reg_b).await > unix_now(), "B holds no lease");
    (t, relay, config, d)
}

/// Asserts B can no longer answer from memory (its lease ended), and answers neither reference
/// with the deleted manifest.
async fn assert_b_stopped_serving(t: &TwoGateways, repo: &str, d: &str) {
    let now = unix_now();
    let end = lease_end(&t.reg_b).await;
    assert!(
        end <= now,
        "the DELETE returned while B could still answer from memory for {:.3}s",
        end - now
    );
    for reference in [d, "t"] {
        if let Some(r) = read_cut_off(&t.reg_b, repo, reference).await {
            assert_ne!(r.status, 200, "B served a deleted manifest: {r}");
        }
    }
}

/// B is cut off from storage while it holds a lease and the deleted manifest: the delete
/// through A returns only once B's lease ran out, so B cannot serve the manifest after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_cut_off_from_storage_stops_serving_from_memory_before_a_delete_returns() {
    let repo = "cache/cut";
    let (t, relay, _, d) = cut_off_holding(repo).await;
    let began = Instant::now();
    t.reg_a
        .delete(&t.reg_a.v2(&format!("{repo}/manifests/{d}")))
        .await
        .assert_status(202);
    eprintln!("DELETE with gateway B cut off took {:?}", began.elapsed());
    assert_b_stopped_serving(&t, repo, &d).await;
    relay.freeze(false);
    t.finish();
}

/// As above, and storage is killed and restarted while B is cut off: B holds a lease the new
/// storage process never granted. The new process waits out the leases the old one recorded
/// before a change returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_storage_crash_old_leases_are_waited_out() {
    let repo = "cache/crash";
    let (mut t, relay, config, d) = cut_off_holding(repo).await;
    let began = Instant::now();
    t.trow.kill_storage();
    t.trow.restart_storage();
    // A's connection to storage broke: the first attempts may fail with 5xx.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = false;
    loop {
        let r = t
            .reg_a
            .delete(&t.reg_a.v2(&format!("{repo}/manifests/{d}")))
            .await;
        // 404 after a failure: that attempt deleted it, its answer was lost.
        if r.status == 202 || (failed && r.status == 404) {
            break;
        }
        assert!(r.status >= 500, "{r}");
        failed = true;
        assert!(Instant::now() < deadline, "storage never came back: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "storage killed, restarted and the DELETE returned {:?} after B was cut off",
        began.elapsed()
    );
    assert_b_stopped_serving(&t, repo, &d).await;
    // Connected again, B watches the new storage process, answers and caches again.
    relay.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&t.reg_b, repo, &d).await.status != 404 {
        assert!(Instant::now() < deadline, "B never reached storage again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved = t
        .reg_a
        .push_manifest(repo, "t", OCI_MANIFEST, &manifest(&config, 1))
        .await;
    assert_eq!(warm(&t.reg_b, repo, "t").await, moved);
    t.finish();
}
