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
