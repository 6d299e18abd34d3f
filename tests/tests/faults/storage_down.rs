//! Storage down (split topology): every request that needs storage is a prompt 503 with an
//! OCI error body, `/v2/` stays 200, and storage started again is used with no gateway restart.

use trow_tests::clients::LogsOnPanic;
use trow_tests::images;
use trow_tests::oci::{ACCEPT_ALL, Reg, client, send, send_no_body, with_query};
use trow_tests::{Topology, Trow, sha256_digest};

use crate::support::{
    BigBlob, MIB, Partial, assert_pulled, assert_storage_unavailable, guarded, push_big, signal,
    skopeo_copy, trow,
};

pub async fn storage_down_is_503_until_it_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let img = images::build_image(&tmp.path().join("src"), "1.0", "amd64");
    let mut reg = Reg::with_trow(Trow::start(Topology::Split));
    let _logs = LogsOnPanic::trow(trow(&mut reg));
    let image = trow(&mut reg).image("faults/app:1.0");
    skopeo_copy(&img.oci_ref(), &format!("docker://{image}"));
    // An upload opened before the crash, to write into while storage is down.
    let upload = reg.upload_location("faults/app").await;

    // The gateway is paused (SIGSTOP) while storage dies and the first requests arrive, as a
    // busy gateway would be: it then uses its connection to storage before it has seen that
    // connection close, and those calls fail with a broken pipe rather than a refused connect.
    let gateway = trow(&mut reg).main.pid();
    signal(gateway, "-STOP");
    tokio::task::block_in_place(|| trow(&mut reg).kill_storage());
    let c = guarded();
    let base = reg.url.clone();
    let v2 = |p: &str| format!("{base}/v2/{p}");
    let layer = &img.layers[0];
    // Twice: a failed call must not leave the next one waiting either. All at once, the first
    // time right after the kill: calls that race the gateway's discovery that its connection to
    // storage is gone fail differently (a broken pipe) from those made after (refused).
    for round in 0..2 {
        eprintln!("round {round} with storage down");
        let mut calls = Vec::new();
        for (method, path) in [
            ("GET", "faults/app/manifests/1.0".to_string()),
            ("HEAD", "faults/app/manifests/1.0".to_string()),
            (
                "GET",
                format!("faults/app/manifests/{}", img.manifest_digest),
            ),
            ("GET", format!("faults/app/blobs/{layer}")),
            ("HEAD", format!("faults/app/blobs/{layer}")),
            ("GET", "faults/app/tags/list".to_string()),
            ("GET", "_catalog".to_string()),
        ] {
            let req = c.request(method.parse().unwrap(), v2(&path));
            calls.push((req.header("Accept", ACCEPT_ALL), method == "HEAD"));
        }
        calls.push((
            c.post(v2("faults/app/blobs/uploads/"))
                .header("Content-Length", "0"),
            false,
        ));
        calls.push((
            c.patch(&upload)
                .header("Content-Type", "application/octet-stream")
                .body(vec![1u8; 4096]),
            false,
        ));
        calls.push((
            c.put(v2("faults/app/manifests/2.0"))
                .header("Content-Type", images::MANIFEST_MEDIA_TYPE)
                .body(img.manifest_bytes()),
            false,
        ));
        let answers = calls.into_iter().map(|(req, head)| {
            tokio::spawn(async move {
                let r = if head {
                    send_no_body(req).await
                } else {
                    send(req).await
                };
                (r, head)
            })
        });
        let answers: Vec<_> = answers.collect();
        if round == 0 {
            // The requests are on their way (queued at the stopped gateway's sockets).
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            signal(gateway, "-CONT");
        }
        let answers = futures::future::join_all(answers).await;
        let answers: Vec<_> = answers
            .into_iter()
            .map(|a| a.expect("request task"))
            .collect();
        for (r, head) in &answers {
            assert_storage_unavailable(r, *head);
        }
        // The API root needs no storage: it stays up.
        send(c.get(v2(""))).await.assert_status(200);
    }

    // Storage back on the same address and data: the gateway, untouched, serves again from the
    // first request on.
    tokio::task::block_in_place(|| trow(&mut reg).restart_storage());
    let r = send(
        c.get(v2("faults/app/manifests/1.0"))
            .header("Accept", ACCEPT_ALL),
    )
    .await;
    r.assert_status(200);
    assert!(r.body == img.manifest_bytes(), "{r}");
    let layout = tmp.path().join("pulled");
    skopeo_copy(
        &format!("docker://{image}"),
        &format!("oci:{}:1.0", layout.display()),
    );
    assert_pulled(&layout, "1.0", &img);
    // The upload opened before the crash goes on.
    let data = b"after the restart".to_vec();
    let r = send(
        c.put(with_query(
            &upload,
            &format!("digest={}", sha256_digest(&data)),
        ))
        .header("Content-Type", "application/octet-stream")
        .body(data),
    )
    .await;
    r.assert_status(201);
    trow_tests::fsck::stop_and_fsck(trow(&mut reg));
}

/// Storage killed while the gateway streams a blob from it: the client's download ends (cut, not
/// whole, not hanging), and once storage is back its `Range` retry gets the rest.
pub async fn storage_killed_mid_pull() {
    let mut reg = Reg::with_trow(Trow::start(Topology::Split));
    let _logs = LogsOnPanic::trow(trow(&mut reg));
    let big = BigBlob::new(64 * MIB);
    push_big(&reg, "faults/big", &big).await;
    let url = reg.v2(&format!("faults/big/blobs/{}", big.digest));
    let c = client();
    let mut pull = Partial::start(&c, &url, 200, MIB).await;
    tokio::task::block_in_place(|| trow(&mut reg).kill_storage());
    pull.drain_cut(big.size(), "the pull").await;
    tokio::task::block_in_place(|| trow(&mut reg).restart_storage());
    pull.resume(&c, &url, big.size(), &big.digest).await;
    trow_tests::fsck::stop_and_fsck(trow(&mut reg));
}
