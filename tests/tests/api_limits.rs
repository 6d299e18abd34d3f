//! Limits that keep one client from exhausting the registry: open upload sessions are capped
//! (`--max-uploads`), and the cap frees up as sessions end.

use trow_tests::oci::Reg;
use trow_tests::{Flags, Topology, Trow};

async fn upload_sessions_are_capped(topology: Topology) {
    let reg = Reg::with_trow(Trow::start_with(
        topology,
        Flags::storage(&["--max-uploads", "2"]),
    ));
    let first = reg.upload_location("capped").await;
    reg.upload_location("capped").await;
    let refused = reg.start_upload("capped").await;
    refused.assert_error(429, "TOOMANYREQUESTS");
    // A monolithic push needs a session too.
    let blob = b"small";
    let r = reg
        .client
        .post(reg.v2(&format!(
            "capped/blobs/uploads/?digest={}",
            trow_tests::sha256_digest(blob)
        )))
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Ending a session frees its slot.
    reg.delete(&first).await.assert_status(204);
    reg.push_blob("capped", blob).await;
}

#[tokio::test]
async fn upload_sessions_are_capped_one_process() {
    upload_sessions_are_capped(Topology::OneProcess).await;
}

#[tokio::test]
async fn upload_sessions_are_capped_split() {
    upload_sessions_are_capped(Topology::Split).await;
}
