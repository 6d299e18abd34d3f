//! The gateway killed (SIGKILL) in the middle of a large pull or push: the client resumes
//! against a new gateway (in one process: a new `trow` on the same data dir) from where it
//! stopped, with `Range` for the pull and the upload's status and `Content-Range` for the push.

use std::time::Duration;

use tokio::sync::oneshot;
use trow_tests::clients::LogsOnPanic;
use trow_tests::oci::{Reg, client, send, with_query};
use trow_tests::{Topology, Trow};

use crate::support::{
    BIG, BigBlob, LONG_GUARD, MIB, PAUSE_AFTER, Partial, guarded, push_big, trow, uploads,
};

pub async fn gateway_killed_mid_pull(topology: Topology) {
    let mut reg = Reg::with_trow(Trow::start(topology));
    let _logs = LogsOnPanic::trow(trow(&mut reg));
    let big = BigBlob::new(BIG);
    push_big(&reg, "faults/big", &big).await;
    let url = reg.v2(&format!("faults/big/blobs/{}", big.digest));

    // A slow client: it reads 4 MiB, stops, and the process streaming to it dies.
    let c = client();
    let mut pull = Partial::start(&c, &url, 200, 4 * MIB).await;
    tokio::task::block_in_place(|| trow(&mut reg).main.kill9());
    pull.drain_cut(big.size(), "the pull").await;

    // A new gateway (in one process: a new trow on the same data dir) on the same address.
    tokio::task::block_in_place(|| trow(&mut reg).restart_main());
    let _logs = LogsOnPanic::trow(trow(&mut reg));
    pull.resume(&c, &url, big.size(), &big.digest).await;

    // Nothing was left in progress, and the registry works as before.
    assert_eq!(uploads(&trow(&mut reg).data_dir), Vec::<String>::new());
    let (digest, manifest) = reg.push_image("faults/after", "1.0", "after").await;
    let r = reg.get_m(&reg.v2("faults/after/manifests/1.0")).await;
    r.assert_status(200);
    r.assert_header("docker-content-digest", &digest);
    assert!(r.body == manifest, "{r}");
    trow_tests::fsck::stop_and_fsck(trow(&mut reg));
}

/// A push whose gateway dies part way, in a streamed `PATCH`: the bytes that reached storage are
/// kept, and the client resumes with a new gateway from the upload's status (`Range`), with a
/// `Content-Range` `PATCH` of the rest, and closes it.
pub async fn gateway_killed_mid_push(topology: Topology) {
    let mut reg = Reg::with_trow(Trow::start(topology));
    let _logs = LogsOnPanic::trow(trow(&mut reg));
    let big = BigBlob::new(64 * MIB);
    let loc = reg.upload_location("faults/pushed").await;

    let (reached_tx, reached_rx) = oneshot::channel();
    let (resume_tx, resume_rx) = oneshot::channel();
    let patch = reg
        .client
        .patch(&loc)
        .header("Content-Type", "application/octet-stream")
        .body(big.body_from(0, Some((reached_tx, resume_rx))));
    let in_flight = tokio::spawn(async move { patch.send().await.map(|r| r.status()) });
    tokio::time::timeout(LONG_GUARD, reached_rx)
        .await
        .expect("the PATCH never reached the pause")
        .expect("the body stream went before the pause");
    // Let the first MiBs reach storage.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| trow(&mut reg).main.kill9());
    let _ = resume_tx.send(());
    let ended = tokio::time::timeout(LONG_GUARD, in_flight)
        .await
        .expect("the PATCH did not end after the gateway was killed")
        .expect("the PATCH task");
    assert!(
        !ended.as_ref().is_ok_and(|s| s.is_success()),
        "a PATCH whose gateway was killed half way succeeded: {ended:?}"
    );

    tokio::task::block_in_place(|| trow(&mut reg).restart_main());
    let _logs = LogsOnPanic::trow(trow(&mut reg));
    let c = guarded();
    let r = send(c.get(&loc)).await;
    r.assert_status(204);
    let range = r.must_header("range");
    let stored: u64 = range
        .strip_prefix("0-")
        .and_then(|end| end.parse::<u64>().ok())
        .map_or(0, |end| end + 1);
    eprintln!("the upload holds {stored} bytes ({range}) after the gateway was killed");
    assert!(stored <= PAUSE_AFTER + MIB, "{range}: more than was sent");

    let r = send(
        reg.client
            .patch(&loc)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{stored}-{}", big.size() - 1))
            .header("Content-Length", (big.size() - stored).to_string())
            .body(big.body_from(stored, None)),
    )
    .await;
    r.assert_status(202);
    let loc = reg.abs(&r.must_header("location"));
    let r = send(
        reg.client
            .put(with_query(&loc, &format!("digest={}", big.digest))),
    )
    .await;
    r.assert_status(201);
    let url = reg.v2(&format!("faults/pushed/blobs/{}", big.digest));
    Partial::start(&client(), &url, 200, 0)
        .await
        .finish(big.size(), &big.digest, "GET the pushed blob")
        .await;
    assert_eq!(uploads(&trow(&mut reg).data_dir), Vec::<String>::new());
    trow_tests::fsck::stop_and_fsck(trow(&mut reg));
}
