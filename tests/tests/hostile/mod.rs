//! What the hostile-network tests share: a Trow started with extra flags (the shared harness
//! starts it with defaults only), raw-socket helpers and a small blob push.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use trow_tests::{Proc, Topology, free_port, sha256_digest, trow_bin, wait_http_ok, wait_tcp};

/// A Trow started with extra flags (the shared harness starts it with defaults only).
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT` of the HTTP API.
    pub addr: String,
    /// The one process, or the gateway in the split topology.
    pub main: Proc,
    pub storage: Option<Proc>,
    _tmp: tempfile::TempDir,
}

impl Server {
    /// Starts Trow in `topology` with `flags` for the HTTP server.
    pub fn start(topology: Topology, flags: &[&str]) -> Server {
        Server::start_under(topology, &[], flags)
    }

    /// Like [`Server::start`], with the gateway's command run through `wrapper` (e.g. `prlimit`).
    pub fn start_under(topology: Topology, wrapper: &[&str], flags: &[&str]) -> Server {
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

    pub fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).expect("connect to trow")
    }

    /// Resident memory of the gateway (or the one process) and of storage, in KiB.
    pub fn rss(&self) -> (u64, Option<u64>) {
        (
            rss_kib(self.main.pid()),
            self.storage.as_ref().map(|s| rss_kib(s.pid())),
        )
    }

    /// Threads of the gateway (or the one process) and of storage.
    pub fn threads(&self) -> (u64, Option<u64>) {
        (
            proc_status(self.main.pid(), "Threads:"),
            self.storage
                .as_ref()
                .map(|s| proc_status(s.pid(), "Threads:")),
        )
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

/// A number from `/proc/PID/status` (`VmRSS:` in KiB, `Threads:`), 0 if unreadable.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reads until the server closes `s` (EOF or reset); returns what arrived and when it closed.
/// Panics if it is still open after `bound`.
pub fn wait_closed(s: &mut TcpStream, bound: Duration) -> (Vec<u8>, Duration) {
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
pub fn get_base(s: &mut TcpStream) -> String {
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
pub fn head_and_body_done(got: &[u8]) -> bool {
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

pub fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A client whose own timeout (30 s) only stops a hung test; bounds are checked by the tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Starts an upload in `repo`; returns its absolute location.
pub async fn start_upload(c: &reqwest::Client, url: &str, repo: &str) -> String {
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
pub async fn push_blob(c: &reqwest::Client, url: &str, repo: &str, data: Vec<u8>) -> String {
    try_push_blob(c, url, repo, data)
        .await
        .unwrap_or_else(|e| panic!("pushing a blob to {repo}: {e}"))
}

/// [`push_blob`], reporting failures instead of panicking.
pub async fn try_push_blob(
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
pub fn absolute(url: &str, r: &reqwest::Response) -> String {
    let loc = r.headers()["location"].to_str().unwrap();
    if loc.starts_with('/') {
        format!("{url}{loc}")
    } else {
        loc.to_string()
    }
}
