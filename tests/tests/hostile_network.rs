//! Hostile and unlucky clients: request heads trickled a byte a second, idle keep-alive
//! connections, uploads that stall mid-body, more connections than the cap or the fd limit, and
//! tens of slow or stalled blob downloads beside ordinary requests.
//!
//! Trow is started with short timeouts (2 s) through its flags, so each test takes seconds.
//! Bounds like "within 10 s" only detect a hang; the measured times are printed to stderr.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use trow_tests::oci::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, desc, oci_manifest, to_bytes};
use trow_tests::{Proc, Topology, free_port, sha256_digest, trow_bin, wait_http_ok, wait_tcp};

/// The slow-reader tests each load the machine; they run one at a time.
static HEAVY: Mutex<()> = Mutex::const_new(());

/// A Trow started with extra flags (the shared harness starts it with defaults only).
struct Server {
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// `127.0.0.1:PORT` of the HTTP API.
    addr: String,
    /// The one process, or the gateway in the split topology.
    main: Proc,
    storage: Option<Proc>,
    _tmp: tempfile::TempDir,
}

impl Server {
    /// Starts Trow in `topology` with `flags` for the HTTP server.
    fn start(topology: Topology, flags: &[&str]) -> Server {
        Server::start_under(topology, &[], flags)
    }

    /// Like [`Server::start`], with the gateway's command run through `wrapper` (e.g. `prlimit`).
    fn start_under(topology: Topology, wrapper: &[&str], flags: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).expect("create data dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let storage_addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(trow_bin());
                c
            }
            None => Command::new(trow_bin()),
        };
        let storage = match topology {
            Topology::OneProcess => {
                cmd.args(["--storage-listen", &storage_addr, "--data-dir"])
                    .arg(&data);
                None
            }
            Topology::Split => {
                let mut s = Command::new(trow_bin());
                s.args(["storage", "--listen", &storage_addr, "--data-dir"])
                    .arg(&data);
                let mut p = Proc::spawn(s, tmp.path().join("storage.log"));
                wait_tcp(&storage_addr, &mut p);
                cmd.args(["gateway", "--storage", &format!("http://{storage_addr}")]);
                Some(p)
            }
        };
        cmd.args(["--bind", &addr]).args(flags);
        let mut main = Proc::spawn(cmd, tmp.path().join("trow.log"));
        let url = format!("http://{addr}");
        wait_http_ok(&format!("{url}/v2/"), &mut [&mut main]);
        Server {
            url,
            addr,
            main,
            storage,
            _tmp: tmp,
        }
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).expect("connect to trow")
    }

    /// Resident memory of the gateway (or the one process) and of storage, in KiB.
    fn rss(&self) -> (u64, Option<u64>) {
        (
            rss_kib(self.main.pid()),
            self.storage.as_ref().map(|s| rss_kib(s.pid())),
        )
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reads until the server closes `s` (EOF or reset); returns what arrived and when it closed.
/// Panics if it is still open after `bound`.
fn wait_closed(s: &mut TcpStream, bound: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = bound.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "the server kept the connection open for {bound:?}; received {} bytes: {:?}",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(200)])
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, start.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (got, start.elapsed());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading: {e}"),
        }
    }
}

/// Sends a keep-alive `GET /v2/` on `s` and reads its (small, fixed-length) answer.
fn get_base(s: &mut TcpStream) -> String {
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: trow\r\n\r\n")
        .expect("send GET");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !head_and_body_done(&got) {
        let n = s.read(&mut buf).expect("read the answer");
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// True once `got` holds a head and the `content-length` bytes of body it announces.
fn head_and_body_done(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= len
}

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_trickled_request_head_is_cut_off_after_the_header_timeout() {
    let trow = Server::start(
        Topology::OneProcess,
        &["--header-timeout", "2", "--idle-timeout", "60"],
    );
    let mut s = trow.connect();
    let mut writer = s.try_clone().unwrap();
    // One byte a second: the head would take half a minute.
    std::thread::spawn(move || {
        for b in b"GET /v2/ HTTP/1.1\r\nHost: trow\r\nUser-Agent: slowloris\r\n\r\n" {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (got, after) = wait_closed(&mut s, Duration::from_secs(15));
    eprintln!("trickled head: connection closed after {after:?}");
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "the request must not be served: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        after >= Duration::from_millis(1500),
        "closed before the header timeout: {after:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The header timeout is long, so only the idle timeout can close these.
    let trow = Server::start(
        Topology::OneProcess,
        &["--header-timeout", "60", "--idle-timeout", "2"],
    );
    // HTTP/1.1: one request, then nothing.
    let mut s = trow.connect();
    let resp = get_base(&mut s);
    assert_eq!(status_of(&resp), 200, "{resp}");
    let (_, after) = wait_closed(&mut s, Duration::from_secs(10));
    eprintln!("idle HTTP/1.1 keep-alive connection closed after {after:?}");
    assert!(
        after >= Duration::from_millis(1500),
        "closed early: {after:?}"
    );

    // h2c with prior knowledge: the preface and empty settings, then nothing. hyper has no
    // header timer for HTTP/2; the server must send GOAWAY (frame type 7) and close.
    let mut s = trow.connect();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let (got, after) = wait_closed(&mut s, Duration::from_secs(15));
    eprintln!("idle h2c connection closed after {after:?}");
    assert!(has_h2_goaway(&got), "no GOAWAY frame in {got:?}");
}

/// Walks HTTP/2 frames (9-byte headers) looking for a GOAWAY.
fn has_h2_goaway(mut b: &[u8]) -> bool {
    while b.len() >= 9 {
        let len = ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize;
        if b[3] == 7 {
            return true;
        }
        b = &b[(9 + len).min(b.len())..];
    }
    false
}

/// Opens `n` keep-alive connections, each having been served once, so the server holds them.
fn served_connections(trow: &Server, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = trow.connect();
            let resp = get_base(&mut s);
            assert_eq!(status_of(&resp), 200, "{resp}");
            s
        })
        .collect()
}

/// A fresh connection's answer to `GET /v2/`, or `None` if it closed without one.
fn one_get(trow: &Server) -> Option<u16> {
    let mut s = trow.connect();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: trow\r\nConnection: close\r\n\r\n")
        .ok()?;
    let (got, _) = wait_closed(&mut s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&got);
    (!text.is_empty()).then(|| status_of(&text))
}

#[test]
fn connections_over_the_cap_get_a_fast_503_and_service_resumes_when_they_go() {
    let trow = Server::start(
        Topology::OneProcess,
        &["--max-connections", "8", "--idle-timeout", "60"],
    );
    let mut held = served_connections(&trow, 8);

    let t = Instant::now();
    let over = one_get(&trow);
    eprintln!("9th connection answered {over:?} after {:?}", t.elapsed());
    assert!(
        matches!(over, Some(503) | None),
        "the 9th connection must get a 503 or be closed, got {over:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the refusal must be fast"
    );

    let resp = get_base(&mut held[0]);
    assert_eq!(
        status_of(&resp),
        200,
        "held connections keep working: {resp}"
    );

    drop(held);
    let t = Instant::now();
    loop {
        if one_get(&trow) == Some(200) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "requests must work again once the 8 connections are closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn under_a_low_fd_limit_new_clients_are_served_once_idle_ones_are_reaped() {
    let trow = Server::start_under(
        Topology::OneProcess,
        &["prlimit", "--nofile=64", "--"],
        &["--idle-timeout", "2", "--header-timeout", "2"],
    );
    // More connections than the process has fds, each sending nothing and staying open.
    let hostile: Vec<TcpStream> = (0..100).map(|_| trow.connect()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    loop {
        let mut s = trow.connect();
        let answered = s
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: trow\r\nConnection: close\r\n\r\n")
            .is_ok()
            && {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 64];
                matches!(s.read(&mut buf), Ok(n) if n > 12 && status_of(&String::from_utf8_lossy(&buf[..n])) == 200)
            };
        if answered {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "with 100 idle connections under a 64-fd limit, a new client is never served:\n{}",
            trow.main.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "under a 64-fd limit with 100 idle connections, a new client was served after {:?}",
        t.elapsed()
    );
    drop(hostile);
}

/// A client whose own timeout (30 s) only stops a hung test; bounds are checked by [`timed`].
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Starts an upload in `repo`; returns its absolute location.
async fn start_upload(c: &reqwest::Client, url: &str, repo: &str) -> String {
    let r = c
        .post(format!("{url}/v2/{repo}/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .await
        .expect("POST upload");
    assert_eq!(r.status().as_u16(), 202);
    absolute(url, &r)
}

/// Pushes `data` with POST, PATCH, PUT; returns its digest.
async fn push_blob(c: &reqwest::Client, url: &str, repo: &str, data: Vec<u8>) -> String {
    try_push_blob(c, url, repo, data)
        .await
        .unwrap_or_else(|e| panic!("pushing a blob to {repo}: {e}"))
}

/// [`push_blob`], reporting failures instead of panicking.
async fn try_push_blob(
    c: &reqwest::Client,
    url: &str,
    repo: &str,
    data: Vec<u8>,
) -> Result<String, String> {
    let digest = sha256_digest(&data);
    let r = c
        .post(format!("{url}/v2/{repo}/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .await
        .map_err(|e| format!("POST: {e}"))?;
    if r.status().as_u16() != 202 {
        return Err(format!("POST: {}", r.status()));
    }
    let loc = absolute(url, &r);
    let r = c
        .patch(&loc)
        .header("Content-Type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .map_err(|e| format!("PATCH: {e}"))?;
    if r.status().as_u16() != 202 {
        return Err(format!("PATCH: {}", r.status()));
    }
    let loc = absolute(url, &r);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={digest}"))
        .header("Content-Length", "0")
        .send()
        .await
        .map_err(|e| format!("PUT: {e}"))?;
    if r.status().as_u16() != 201 {
        return Err(format!("PUT: {}", r.status()));
    }
    Ok(digest)
}

/// The response's `Location`, made absolute.
fn absolute(url: &str, r: &reqwest::Response) -> String {
    let loc = r.headers()["location"].to_str().unwrap();
    if loc.starts_with('/') {
        format!("{url}{loc}")
    } else {
        loc.to_string()
    }
}

async fn stalled_patch_stays_resumable(topology: Topology) {
    let trow = Server::start(topology, &["--body-timeout", "2"]);
    let c = http();
    let loc = start_upload(&c, &trow.url, "stall/me").await;
    let path = loc.strip_prefix(&trow.url).unwrap().to_string();
    let blob = trow_tests::oci::bytes((2 << 20) + 4321, 7);
    // Not a chunk multiple: the bytes past the last full chunk must be kept too.
    let sent = (1 << 20) + 12345;

    let mut s = trow.connect();
    write!(
        s,
        "PATCH {path} HTTP/1.1\r\nHost: trow\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        blob.len()
    )
    .unwrap();
    s.write_all(&blob[..sent]).unwrap();
    let t = Instant::now();
    let (got, after) = wait_closed(&mut s, Duration::from_secs(15));
    let answer = String::from_utf8_lossy(&got).into_owned();
    eprintln!(
        "{topology:?}: stalled PATCH ended after {after:?}: {:?}",
        answer.lines().next()
    );
    assert!(
        answer.is_empty() || status_of(&answer) >= 400,
        "a stalled body must fail its request: {answer}"
    );
    assert!(t.elapsed() >= Duration::from_millis(1500), "failed early");

    let r = c.get(&loc).send().await.expect("GET upload status");
    assert_eq!(r.status().as_u16(), 204, "upload status");
    assert_eq!(
        r.headers()["range"].to_str().unwrap(),
        format!("0-{}", sent - 1),
        "the upload keeps every byte received"
    );

    let r = c
        .patch(&loc)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{}-{}", sent, blob.len() - 1))
        .body(blob[sent..].to_vec())
        .send()
        .await
        .expect("resuming PATCH");
    assert_eq!(r.status().as_u16(), 202, "resuming PATCH");
    let digest = sha256_digest(&blob);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={digest}"))
        .header("Content-Length", "0")
        .send()
        .await
        .expect("closing PUT");
    assert_eq!(r.status().as_u16(), 201, "closing PUT");
    let got = c
        .get(format!("{}/v2/stall/me/blobs/{digest}", trow.url))
        .send()
        .await
        .expect("GET blob")
        .bytes()
        .await
        .expect("blob bytes");
    assert_eq!(
        sha256_digest(&got),
        digest,
        "the blob's bytes hash to its name"
    );
    assert_eq!(got.len(), blob.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_patch_fails_after_the_body_timeout_and_stays_resumable_one_process() {
    stalled_patch_stays_resumable(Topology::OneProcess).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_patch_fails_after_the_body_timeout_and_stays_resumable_split() {
    stalled_patch_stays_resumable(Topology::Split).await;
}

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
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (gw_rss, storage_rss) = trow.rss();

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
         (before the readers: {rss_before:?})"
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
