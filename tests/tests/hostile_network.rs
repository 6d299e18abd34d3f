//! Hostile and unlucky clients: request heads trickled a byte a second, idle keep-alive
//! connections, uploads that stall mid-body, more connections than the cap or the fd limit.
//!
//! Trow is started with short timeouts (2 s) through its flags, so each test takes seconds.
//! Bounds like "within 10 s" only detect a hang; the measured times are printed to stderr.

mod hostile;

use hostile::{Server, get_base, http, start_upload, status_of, wait_closed};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use trow_tests::{Topology, sha256_digest};

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
