//! Process lifecycle: start-up output, graceful SIGTERM, and a gateway that survives a storage
//! restart in the split topology.

use std::time::Duration;
use trow_tests::{Topology, Trow};

fn get_status(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn one_process_prints_where_it_listens_and_stores_and_stops_on_sigterm() {
    let mut trow = Trow::start(Topology::OneProcess);
    let log = trow.main.log_text();
    assert!(
        log.contains(&format!("OCI registry on http://{}", trow.addr)),
        "start-up must print the HTTP address:\n{log}"
    );
    let data = trow.data_dir.canonicalize().unwrap();
    assert!(
        log.contains(&format!("data in {}", data.display())),
        "start-up must print the data dir:\n{log}"
    );
    assert!(
        log.contains(&format!("gRPC on {}", trow.storage_addr)),
        "start-up must print the storage gRPC address:\n{log}"
    );
    let status = trow
        .main
        .terminate(Duration::from_secs(10))
        .expect("trow must exit within 10s of SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[test]
fn split_gateway_reports_storage_down_and_recovers_after_restart() {
    let mut trow = Trow::start(Topology::Split);
    let tags = format!("{}/v2/some/repo/tags/list", trow.url);
    assert_eq!(
        get_status(&tags).0,
        404,
        "unknown repo before anything is pushed"
    );

    trow.kill_storage();
    let (code, body) = get_status(&tags);
    assert_eq!(code, 503, "storage down must be a 503, got {code}: {body}");
    assert!(body.contains("\"errors\""), "an OCI error body: {body}");

    trow.restart_storage();
    let mut code = 0;
    for _ in 0..100 {
        code = get_status(&tags).0;
        if code == 404 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(code, 404, "gateway must reconnect to the restarted storage");

    let storage = trow.storage.as_mut().unwrap();
    let status = storage
        .terminate(Duration::from_secs(10))
        .expect("storage must exit within 10s of SIGTERM");
    assert!(
        status.success(),
        "storage exit status after SIGTERM: {status:?}"
    );
    let status = trow
        .main
        .terminate(Duration::from_secs(10))
        .expect("gateway must exit within 10s of SIGTERM");
    assert!(
        status.success(),
        "gateway exit status after SIGTERM: {status:?}"
    );
}

/// SIGTERM while a request is in flight: the request completes, then the process exits.
#[test]
fn sigterm_lets_an_upload_in_flight_finish() {
    use std::io::{Read, Write};
    let mut trow = Trow::start(Topology::OneProcess);
    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-X", "POST"])
        .arg(format!("{}/v2/drain/blobs/uploads/", trow.url))
        .output()
        .expect("run curl");
    let headers = String::from_utf8_lossy(&out.stdout).into_owned();
    let location = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .expect("upload location")
        .trim()
        .to_string();

    let half = vec![7u8; 1 << 20];
    let mut conn = std::net::TcpStream::connect(&trow.addr).unwrap();
    write!(
        conn,
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        trow.addr,
        2 * half.len()
    )
    .unwrap();
    conn.write_all(&half).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::process::Command::new("kill")
        .args(["-TERM", &trow.main.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    conn.write_all(&half).unwrap();
    let mut resp = Vec::new();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&resp).contains("\r\n\r\n") {
        let n = conn.read(&mut buf).expect("read the answer");
        assert!(n > 0, "connection closed without an answer");
        resp.extend_from_slice(&buf[..n]);
    }
    let resp = String::from_utf8_lossy(&resp).into_owned();
    assert!(
        resp.starts_with("HTTP/1.1 202"),
        "the upload in flight must complete: {resp}"
    );
    assert!(
        resp.to_ascii_lowercase()
            .contains(&format!("range: 0-{}", 2 * half.len() - 1)),
        "all bytes must be stored: {resp}"
    );
    drop(conn);
    let status = trow
        .main
        .terminate(Duration::from_secs(10))
        .expect("trow must exit after draining");
    assert!(status.success(), "exit status: {status:?}");
}
