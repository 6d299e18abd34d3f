//! OCI Distribution API: the base endpoint and blob pulls (GET/HEAD, ranges, repo scoping) and
//! blob deletion.

use trow_tests::Topology;
use trow_tests::oci::{Reg, bytes, send, send_no_body, sha512_digest};

#[tokio::test]
async fn base_endpoint_answers_200_with_api_version() {
    let reg = Reg::start(Topology::OneProcess);
    let r = reg.get(&reg.v2("")).await;
    r.assert_status(200)
        .assert_header("docker-distribution-api-version", "registry/2.0");
    let h = reg.head(&reg.v2("")).await;
    h.assert_status(200)
        .assert_header("docker-distribution-api-version", "registry/2.0");
}

#[tokio::test]
async fn get_blob_returns_bytes_and_headers() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("blobs/get");
    let data = b"hello blob".to_vec();
    let d = reg.push_blob(&repo, &data).await;
    let r = reg.get(&reg.v2(&format!("{repo}/blobs/{d}"))).await;
    r.assert_status(200)
        .assert_header("docker-content-digest", &d)
        .assert_header("content-length", &data.len().to_string())
        .assert_header("content-type", "application/octet-stream");
    assert_eq!(r.body, data);
}

#[tokio::test]
async fn head_blob_has_headers_and_no_body() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("blobs/head");
    let data = bytes(3000, 7);
    let d = reg.push_blob(&repo, &data).await;
    let r = reg.head(&reg.v2(&format!("{repo}/blobs/{d}"))).await;
    r.assert_status(200)
        .assert_header("docker-content-digest", &d)
        .assert_header("content-length", "3000")
        .assert_header("content-type", "application/octet-stream");
    assert!(r.body.is_empty(), "HEAD has a body: {r}");
}

#[tokio::test]
async fn range_request_returns_206_with_content_range() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("blobs/range");
    let data = bytes(1000, 11);
    let d = reg.push_blob(&repo, &data).await;
    let url = reg.v2(&format!("{repo}/blobs/{d}"));

    let r = send(reg.client.get(&url).header("Range", "bytes=10-19")).await;
    r.assert_status(206)
        .assert_header("content-range", "bytes 10-19/1000")
        .assert_header("content-length", "10");
    assert_eq!(r.body, &data[10..20]);

    let r = send(reg.client.get(&url).header("Range", "bytes=0-0")).await;
    r.assert_status(206)
        .assert_header("content-range", "bytes 0-0/1000");
    assert_eq!(r.body, &data[0..1]);

    // An end beyond the blob is clamped to the last byte (RFC 9110 14.1.2).
    let r = send(reg.client.get(&url).header("Range", "bytes=990-5000")).await;
    r.assert_status(206)
        .assert_header("content-range", "bytes 990-999/1000");
    assert_eq!(r.body, &data[990..]);
}

#[tokio::test]
async fn open_ended_range_returns_the_rest() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("blobs/range-open");
    let data = bytes(500, 13);
    let d = reg.push_blob(&repo, &data).await;
    let url = reg.v2(&format!("{repo}/blobs/{d}"));
    let r = send(reg.client.get(&url).header("Range", "bytes=123-")).await;
    r.assert_status(206)
        .assert_header("content-range", "bytes 123-499/500")
        .assert_header("content-length", "377");
    assert_eq!(r.body, &data[123..]);
}

#[tokio::test]
async fn unsatisfiable_range_returns_416() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("blobs/range-416");
    let data = bytes(100, 17);
    let d = reg.push_blob(&repo, &data).await;
    let url = reg.v2(&format!("{repo}/blobs/{d}"));
    for range in ["bytes=100-", "bytes=200-300"] {
        let r = send_no_body(reg.client.get(&url).header("Range", range)).await;
        r.assert_status(416);
    }
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("blobs/unknown");
    // The repository exists, the blob does not.
    reg.push_blob(&repo, b"something else").await;
    let d = trow_tests::sha256_digest(b"never pushed");
    let url = reg.v2(&format!("{repo}/blobs/{d}"));
    reg.get(&url).await.assert_error(404, "BLOB_UNKNOWN");
    let h = reg.head(&url).await;
    h.assert_status(404);
    assert!(h.body.is_empty(), "HEAD error has a body: {h}");
    // And in a repository that does not exist at all.
    let r = reg
        .get(&reg.v2(&format!("{}/blobs/{d}", reg.repo("blobs/nosuchrepo"))))
        .await;
    r.assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn blob_is_not_served_from_another_repo() {
    let reg = Reg::start(Topology::OneProcess);
    let a = reg.repo("scoped/a");
    let b = reg.repo("scoped/b");
    let data = b"private to a".to_vec();
    let d = reg.push_blob(&a, &data).await;
    reg.push_blob(&b, b"b has other content").await;
    reg.get(&reg.v2(&format!("{a}/blobs/{d}")))
        .await
        .assert_status(200);
    reg.get(&reg.v2(&format!("{b}/blobs/{d}")))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    reg.head(&reg.v2(&format!("{b}/blobs/{d}")))
        .await
        .assert_status(404);
    // Once pushed to b as well, it is served there.
    reg.push_blob(&b, &data).await;
    let r = reg.get(&reg.v2(&format!("{b}/blobs/{d}"))).await;
    r.assert_status(200);
    assert_eq!(r.body, data);
}

#[tokio::test]
async fn delete_blob_is_202_then_404() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("blobs/delete");
    let d = reg.push_blob(&repo, b"to be deleted").await;
    let keep = reg.push_blob(&repo, b"to be kept").await;
    let url = reg.v2(&format!("{repo}/blobs/{d}"));
    reg.delete(&url).await.assert_status(202);
    reg.get(&url).await.assert_error(404, "BLOB_UNKNOWN");
    reg.head(&url).await.assert_status(404);
    reg.get(&reg.v2(&format!("{repo}/blobs/{keep}")))
        .await
        .assert_status(200);
    // Deleting again: the blob is unknown.
    reg.delete(&url).await.assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn deleting_a_blob_in_one_repo_keeps_it_in_another() {
    let reg = Reg::start(Topology::OneProcess);
    let a = reg.repo("shared/a");
    let b = reg.repo("shared/b");
    let data = b"in both repositories".to_vec();
    let d = reg.push_blob(&a, &data).await;
    reg.push_blob(&b, &data).await;
    reg.delete(&reg.v2(&format!("{a}/blobs/{d}")))
        .await
        .assert_status(202);
    reg.get(&reg.v2(&format!("{a}/blobs/{d}")))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    let r = reg.get(&reg.v2(&format!("{b}/blobs/{d}"))).await;
    r.assert_status(200);
    assert_eq!(r.body, data);
}

#[tokio::test]
async fn sha512_blob_is_fetched_by_its_digest() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("blobs/sha512");
    let data = bytes(4096, 23);
    let d = sha512_digest(&data);
    let r = send(
        reg.client
            .post(reg.v2(&format!("{repo}/blobs/uploads/?digest={d}")))
            .header("Content-Type", "application/octet-stream")
            .body(data.clone()),
    )
    .await;
    r.assert_status(201);
    let g = reg.get(&reg.v2(&format!("{repo}/blobs/{d}"))).await;
    g.assert_status(200)
        .assert_header("docker-content-digest", &d)
        .assert_header("content-length", "4096");
    assert_eq!(g.body, data);
}

async fn large_blob_round_trip(topology: Topology) {
    let reg = Reg::start(topology);
    let repo = reg.repo("blobs/large");
    // Larger than any sensible gRPC message or chunk, so it is streamed in pieces.
    let data = bytes(9 * 1024 * 1024 + 123, 29);
    let d = reg.push_blob(&repo, &data).await;
    let url = reg.v2(&format!("{repo}/blobs/{d}"));
    let r = reg.get(&url).await;
    r.assert_status(200)
        .assert_header("content-length", &data.len().to_string())
        .assert_header("docker-content-digest", &d);
    assert!(r.body == data, "large blob body differs");
    // A range spanning what would be chunk boundaries.
    let (a, b) = (4 * 1024 * 1024 - 10, 8 * 1024 * 1024 + 10);
    let r = send(
        reg.client
            .get(&url)
            .header("Range", format!("bytes={a}-{b}")),
    )
    .await;
    r.assert_status(206)
        .assert_header("content-range", &format!("bytes {a}-{b}/{}", data.len()));
    assert!(r.body == data[a..=b], "range body differs");
}

#[tokio::test]
async fn large_blob_round_trip_one_process() {
    large_blob_round_trip(Topology::OneProcess).await;
}

#[tokio::test]
async fn large_blob_round_trip_split() {
    large_blob_round_trip(Topology::Split).await;
}

#[tokio::test]
async fn blob_pull_and_delete_split() {
    let reg = Reg::start(Topology::Split);
    let repo = reg.repo("split/blobs");
    let d = reg.push_blob(&repo, b"split topology blob").await;
    let url = reg.v2(&format!("{repo}/blobs/{d}"));
    let r = reg.head(&url).await;
    r.assert_status(200)
        .assert_header("content-length", "19")
        .assert_header("docker-content-digest", &d);
    let r = send(reg.client.get(&url).header("Range", "bytes=6-13")).await;
    r.assert_status(206)
        .assert_header("content-range", "bytes 6-13/19");
    assert_eq!(r.body, b"topology");
    reg.get(&reg.v2(&format!("{}/blobs/{d}", reg.repo("split/other"))))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    reg.delete(&url).await.assert_status(202);
    reg.get(&url).await.assert_error(404, "BLOB_UNKNOWN");
}
