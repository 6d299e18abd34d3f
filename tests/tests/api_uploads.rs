//! OCI Distribution API: blob uploads — sessions, monolithic and chunked pushes, streamed
//! PATCH, digests, cancellation, and cross-repository mounts.

use trow_tests::Topology;
use trow_tests::oci::{Reg, Resp, bytes, path_only, send, sha512_digest, with_query};
use trow_tests::sha256_digest;

/// Asserts `r` describes an upload session in `repo`: Location `/v2/<repo>/blobs/uploads/<id>`
/// and `Docker-Upload-UUID: <id>`; returns the id.
fn assert_session(r: &Resp, repo: &str) -> String {
    let path = path_only(&r.location_path());
    let prefix = format!("/v2/{repo}/blobs/uploads/");
    let id = path
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("Location {path} not under {prefix}: {r}"))
        .to_string();
    assert!(
        !id.is_empty() && !id.contains('/'),
        "bad upload id in {path}"
    );
    r.assert_header("docker-upload-uuid", &id);
    id
}

async fn patch(reg: &Reg, loc: &str, data: &[u8], range: Option<(usize, usize)>) -> Resp {
    let mut req = reg
        .client
        .patch(loc)
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec());
    if let Some((a, b)) = range {
        req = req.header("Content-Range", format!("{a}-{b}"));
    }
    send(req).await
}

async fn put_digest(reg: &Reg, loc: &str, digest: &str, data: &[u8]) -> Resp {
    send(
        reg.client
            .put(with_query(loc, &format!("digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
    )
    .await
}

/// Asserts a completed upload: 201, Location of the blob, Docker-Content-Digest; and that the
/// blob is then served with `data`.
async fn assert_completed(reg: &Reg, r: &Resp, repo: &str, digest: &str, data: &[u8]) {
    r.assert_status(201)
        .assert_header("docker-content-digest", digest);
    assert_eq!(
        path_only(&r.location_path()),
        format!("/v2/{repo}/blobs/{digest}"),
        "{r}"
    );
    let g = reg.get(&reg.v2(&format!("{repo}/blobs/{digest}"))).await;
    g.assert_status(200)
        .assert_header("docker-content-digest", digest);
    assert!(g.body == data, "stored blob differs from uploaded bytes");
}

#[tokio::test]
async fn post_starts_an_empty_session() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/start");
    let r = reg.start_upload(&repo).await;
    r.assert_status(202).assert_header("range", "0-0");
    let id = assert_session(&r, &repo);
    // Two sessions get different ids.
    let r2 = reg.start_upload(&repo).await;
    r2.assert_status(202);
    assert_ne!(assert_session(&r2, &repo), id);
}

#[tokio::test]
async fn monolithic_post_with_digest_creates_the_blob() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/mono");
    let data = b"monolithic upload".to_vec();
    let d = sha256_digest(&data);
    let r = send(
        reg.client
            .post(reg.v2(&format!("{repo}/blobs/uploads/?digest={d}")))
            .header("Content-Type", "application/octet-stream")
            .body(data.clone()),
    )
    .await;
    assert_completed(&reg, &r, &repo, &d, &data).await;
}

#[tokio::test]
async fn monolithic_post_with_wrong_digest_stores_nothing() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/mono-bad");
    let data = b"these bytes".to_vec();
    let claimed = sha256_digest(b"other bytes");
    let r = send(
        reg.client
            .post(reg.v2(&format!("{repo}/blobs/uploads/?digest={claimed}")))
            .body(data.clone()),
    )
    .await;
    r.assert_error(400, "DIGEST_INVALID");
    for d in [&claimed, &sha256_digest(&data)] {
        reg.head(&reg.v2(&format!("{repo}/blobs/{d}")))
            .await
            .assert_status(404);
    }
}

#[tokio::test]
async fn post_then_put_with_whole_body() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/postput");
    let data = bytes(70_000, 3);
    let d = sha256_digest(&data);
    let loc = reg.upload_location(&repo).await;
    let r = put_digest(&reg, &loc, &d, &data).await;
    assert_completed(&reg, &r, &repo, &d, &data).await;
}

#[tokio::test]
async fn chunked_upload_with_content_range() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/chunked");
    let data = bytes(300_000, 5);
    let d = sha256_digest(&data);
    let mut loc = reg.upload_location(&repo).await;

    let r = patch(&reg, &loc, &data[..100_000], Some((0, 99_999))).await;
    r.assert_status(202).assert_header("range", "0-99999");
    assert_session(&r, &repo);
    loc = reg.abs(&r.must_header("location"));

    let r = patch(
        &reg,
        &loc,
        &data[100_000..250_000],
        Some((100_000, 249_999)),
    )
    .await;
    r.assert_status(202).assert_header("range", "0-249999");
    loc = reg.abs(&r.must_header("location"));

    // The last chunk rides on the closing PUT.
    let r = put_digest(&reg, &loc, &d, &data[250_000..]).await;
    assert_completed(&reg, &r, &repo, &d, &data).await;
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    // What skopeo and podman do: the whole layer in one PATCH with no Content-Range, then an
    // empty PUT.
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/streamed");
    let data = bytes(1_500_000, 7);
    let d = sha256_digest(&data);
    let loc = reg.upload_location(&repo).await;
    let r = patch(&reg, &loc, &data, None).await;
    r.assert_status(202).assert_header("range", "0-1499999");
    assert_session(&r, &repo);
    let loc = reg.abs(&r.must_header("location"));
    let r = put_digest(&reg, &loc, &d, b"").await;
    assert_completed(&reg, &r, &repo, &d, &data).await;
}

#[tokio::test]
async fn streamed_patch_body_as_a_stream() {
    // A chunked transfer-encoded PATCH (no Content-Length), as a streaming client sends it.
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/stream-te");
    let data = bytes(2_000_000, 9);
    let d = sha256_digest(&data);
    let loc = reg.upload_location(&repo).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(65_536).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = send(reg.client.patch(&loc).body(body)).await;
    r.assert_status(202).assert_header("range", "0-1999999");
    let loc = reg.abs(&r.must_header("location"));
    let r = put_digest(&reg, &loc, &d, b"").await;
    assert_completed(&reg, &r, &repo, &d, &data).await;
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_keeps_state() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/ooo");
    let data = bytes(30, 11);
    let d = sha256_digest(&data);
    let loc = reg.upload_location(&repo).await;

    // The first chunk must start at 0.
    let r = patch(&reg, &loc, &data[5..10], Some((5, 9))).await;
    r.assert_error(416, "BLOB_UPLOAD_INVALID");

    let r = patch(&reg, &loc, &data[..10], Some((0, 9))).await;
    r.assert_status(202).assert_header("range", "0-9");
    let loc = reg.abs(&r.must_header("location"));

    // A gap, then an overlap: both refused.
    let r = patch(&reg, &loc, &data[15..20], Some((15, 19))).await;
    r.assert_error(416, "BLOB_UPLOAD_INVALID");
    let r = patch(&reg, &loc, &data[5..15], Some((5, 14))).await;
    r.assert_error(416, "BLOB_UPLOAD_INVALID");

    // The session still holds exactly the first 10 bytes.
    let s = reg.get(&loc).await;
    s.assert_status(204).assert_header("range", "0-9");

    let r = patch(&reg, &loc, &data[10..], Some((10, 29))).await;
    r.assert_status(202).assert_header("range", "0-29");
    let loc = reg.abs(&r.must_header("location"));
    let r = put_digest(&reg, &loc, &d, b"").await;
    assert_completed(&reg, &r, &repo, &d, &data).await;
}

#[tokio::test]
async fn put_with_wrong_digest_is_400_and_discards_the_upload() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/wrong");
    let data = b"the real content".to_vec();
    let claimed = sha256_digest(b"a different content");
    let loc = reg.upload_location(&repo).await;
    let r = patch(&reg, &loc, &data, None).await;
    r.assert_status(202);
    let loc = reg.abs(&r.must_header("location"));
    let r = put_digest(&reg, &loc, &claimed, b"").await;
    r.assert_error(400, "DIGEST_INVALID");
    for d in [&claimed, &sha256_digest(&data)] {
        reg.head(&reg.v2(&format!("{repo}/blobs/{d}")))
            .await
            .assert_status(404);
    }
    reg.get(&loc).await.assert_status(404);
}

#[tokio::test]
async fn get_upload_status_reports_progress() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/status");
    let r = reg.start_upload(&repo).await;
    let id = assert_session(&r, &repo);
    let loc = reg.abs(&r.must_header("location"));

    let s = reg.get(&loc).await;
    s.assert_status(204).assert_header("range", "0-0");
    assert_eq!(assert_session(&s, &repo), id);
    assert!(s.body.is_empty());

    let r = patch(&reg, &loc, &bytes(1234, 1), None).await;
    r.assert_status(202);
    let loc = reg.abs(&r.must_header("location"));
    let s = reg.get(&loc).await;
    s.assert_status(204).assert_header("range", "0-1233");
    assert_eq!(assert_session(&s, &repo), id);
}

#[tokio::test]
async fn delete_upload_cancels_the_session() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/cancel");
    let data = b"abandoned".to_vec();
    let loc = reg.upload_location(&repo).await;
    let r = patch(&reg, &loc, &data, None).await;
    r.assert_status(202);
    let loc = reg.abs(&r.must_header("location"));
    reg.delete(&loc).await.assert_status(204);

    reg.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    patch(&reg, &loc, b"more", None)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    put_digest(&reg, &loc, &sha256_digest(&data), b"")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.delete(&loc)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.head(&reg.v2(&format!("{repo}/blobs/{}", sha256_digest(&data))))
        .await
        .assert_status(404);
}

#[tokio::test]
async fn unknown_upload_id_is_404_blob_upload_unknown() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/unknown");
    // The repository exists.
    reg.push_blob(&repo, b"x").await;
    let d = sha256_digest(b"y");
    for id in [
        "9f3c1c2e-7a0b-4c4e-9d7a-0123456789ab",
        "not-an-upload-id",
        "zzzz",
    ] {
        let loc = reg.v2(&format!("{repo}/blobs/uploads/{id}"));
        reg.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
        patch(&reg, &loc, b"y", None)
            .await
            .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
        put_digest(&reg, &loc, &d, b"y")
            .await
            .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
        reg.delete(&loc)
            .await
            .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    }
}

#[tokio::test]
async fn malformed_digest_is_400_digest_invalid() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/baddigest");
    let data = b"content".to_vec();
    let hex = sha256_digest(&data)[7..].to_string();
    let bad = [
        "notadigest".to_string(),
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}zz", &hex[..62]),
        "sha256:".to_string(),
    ];
    for d in &bad {
        let r = send(
            reg.client
                .post(reg.v2(&format!("{repo}/blobs/uploads/?digest={d}")))
                .body(data.clone()),
        )
        .await;
        r.assert_error(400, "DIGEST_INVALID");
        let loc = reg.upload_location(&repo).await;
        put_digest(&reg, &loc, d, &data)
            .await
            .assert_error(400, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn sha512_monolithic_upload() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/sha512-mono");
    let data = bytes(10_000, 13);
    let d = sha512_digest(&data);
    assert_eq!(d.len(), 7 + 128);
    let r = send(
        reg.client
            .post(reg.v2(&format!("{repo}/blobs/uploads/?digest={d}")))
            .body(data.clone()),
    )
    .await;
    assert_completed(&reg, &r, &repo, &d, &data).await;
}

#[tokio::test]
async fn sha512_session_upload() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/sha512-session");
    let data = bytes(10_000, 17);
    let d = sha512_digest(&data);
    let loc = reg.upload_location(&repo).await;
    let r = patch(&reg, &loc, &data[..6000], Some((0, 5999))).await;
    r.assert_status(202).assert_header("range", "0-5999");
    let loc = reg.abs(&r.must_header("location"));
    let r = put_digest(&reg, &loc, &d, &data[6000..]).await;
    assert_completed(&reg, &r, &repo, &d, &data).await;
    // And a wrong sha512 is refused like a wrong sha256.
    let loc = reg.upload_location(&repo).await;
    put_digest(&reg, &loc, &sha512_digest(b"other"), &data)
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn empty_blob_upload() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/empty");
    let d = sha256_digest(b"");
    let loc = reg.upload_location(&repo).await;
    let r = put_digest(&reg, &loc, &d, b"").await;
    assert_completed(&reg, &r, &repo, &d, b"").await;
    reg.head(&reg.v2(&format!("{repo}/blobs/{d}")))
        .await
        .assert_status(200)
        .assert_header("content-length", "0");
}

#[tokio::test]
async fn mount_from_a_repo_holding_the_blob() {
    let reg = Reg::start(Topology::OneProcess);
    let from = reg.repo("mount/src");
    let to = reg.repo("mount/dst");
    let data = b"mount me".to_vec();
    let d = reg.push_blob(&from, &data).await;
    reg.head(&reg.v2(&format!("{to}/blobs/{d}")))
        .await
        .assert_status(404);
    let r = send(
        reg.client
            .post(reg.v2(&format!("{to}/blobs/uploads/?mount={d}&from={from}")))
            .header("Content-Length", "0"),
    )
    .await;
    assert_completed(&reg, &r, &to, &d, &data).await;
    // The source keeps it.
    reg.head(&reg.v2(&format!("{from}/blobs/{d}")))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn mount_of_a_missing_blob_falls_back_to_an_upload_session() {
    let reg = Reg::start(Topology::OneProcess);
    let from = reg.repo("mount/empty-src");
    let to = reg.repo("mount/fallback");
    let elsewhere = reg.repo("mount/elsewhere");
    reg.push_blob(&from, b"unrelated").await;
    let data = b"only elsewhere".to_vec();
    let d = reg.push_blob(&elsewhere, &data).await;
    // `from` does not hold the blob: no mount (not even from another repo), a session instead.
    let r = send(
        reg.client
            .post(reg.v2(&format!("{to}/blobs/uploads/?mount={d}&from={from}")))
            .header("Content-Length", "0"),
    )
    .await;
    r.assert_status(202).assert_header("range", "0-0");
    assert_session(&r, &to);
    reg.head(&reg.v2(&format!("{to}/blobs/{d}")))
        .await
        .assert_status(404);
    // The session works.
    let loc = reg.abs(&r.must_header("location"));
    let r = put_digest(&reg, &loc, &d, &data).await;
    assert_completed(&reg, &r, &to, &d, &data).await;
}

#[tokio::test]
async fn upload_session_is_independent_per_upload() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/parallel");
    let a = bytes(5000, 19);
    let b = bytes(7000, 23);
    let la = reg.upload_location(&repo).await;
    let lb = reg.upload_location(&repo).await;
    let ra = patch(&reg, &la, &a, None).await;
    let rb = patch(&reg, &lb, &b, None).await;
    ra.assert_status(202).assert_header("range", "0-4999");
    rb.assert_status(202).assert_header("range", "0-6999");
    let la = reg.abs(&ra.must_header("location"));
    let lb = reg.abs(&rb.must_header("location"));
    let (da, db) = (sha256_digest(&a), sha256_digest(&b));
    let r = put_digest(&reg, &lb, &db, b"").await;
    assert_completed(&reg, &r, &repo, &db, &b).await;
    let r = put_digest(&reg, &la, &da, b"").await;
    assert_completed(&reg, &r, &repo, &da, &a).await;
}

#[tokio::test]
async fn completed_session_is_gone() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/finished");
    let data = b"done".to_vec();
    let d = sha256_digest(&data);
    let loc = reg.upload_location(&repo).await;
    put_digest(&reg, &loc, &d, &data).await.assert_status(201);
    reg.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

async fn chunked_and_mount(topology: Topology) {
    let reg = Reg::start(topology);
    let repo = reg.repo("split/up");
    let data = bytes(5 * 1024 * 1024 + 7, 29);
    let d = sha256_digest(&data);
    let loc = reg.upload_location(&repo).await;
    let mid = 3 * 1024 * 1024;
    let r = patch(&reg, &loc, &data[..mid], Some((0, mid - 1))).await;
    r.assert_status(202)
        .assert_header("range", &format!("0-{}", mid - 1));
    let loc = reg.abs(&r.must_header("location"));
    let r = patch(&reg, &loc, &data[mid..], None).await;
    r.assert_status(202)
        .assert_header("range", &format!("0-{}", data.len() - 1));
    let loc = reg.abs(&r.must_header("location"));
    reg.get(&loc)
        .await
        .assert_status(204)
        .assert_header("range", &format!("0-{}", data.len() - 1));
    let r = put_digest(&reg, &loc, &d, b"").await;
    assert_completed(&reg, &r, &repo, &d, &data).await;

    let other = reg.repo("split/up-mounted");
    let r = send(
        reg.client
            .post(reg.v2(&format!("{other}/blobs/uploads/?mount={d}&from={repo}")))
            .header("Content-Length", "0"),
    )
    .await;
    assert_completed(&reg, &r, &other, &d, &data).await;

    let loc = reg.upload_location(&repo).await;
    reg.delete(&loc).await.assert_status(204);
    reg.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn chunked_upload_and_mount_split() {
    chunked_and_mount(Topology::Split).await;
}

#[tokio::test]
async fn chunked_upload_and_mount_one_process() {
    chunked_and_mount(Topology::OneProcess).await;
}

#[tokio::test]
async fn put_without_digest_is_digest_invalid() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/nodigest");
    let loc = reg.upload_location(&repo).await;
    let r = send(reg.client.put(&loc).body(b"data".to_vec())).await;
    r.assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn final_put_with_out_of_order_content_range_is_416() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/final-ooo");
    let data = bytes(20, 31);
    let d = sha256_digest(&data);
    let loc = reg.upload_location(&repo).await;
    let r = patch(&reg, &loc, &data[..10], Some((0, 9))).await;
    r.assert_status(202);
    let loc = reg.abs(&r.must_header("location"));
    let r = send(
        reg.client
            .put(with_query(&loc, &format!("digest={d}")))
            .header("Content-Range", "12-19")
            .body(data[12..].to_vec()),
    )
    .await;
    r.assert_error(416, "BLOB_UPLOAD_INVALID");
    reg.head(&reg.v2(&format!("{repo}/blobs/{d}")))
        .await
        .assert_status(404);
    // The right final chunk, with its Content-Range, completes the upload.
    reg.get(&loc)
        .await
        .assert_status(204)
        .assert_header("range", "0-9");
    let r = send(
        reg.client
            .put(with_query(&loc, &format!("digest={d}")))
            .header("Content-Range", "10-19")
            .body(data[10..].to_vec()),
    )
    .await;
    assert_completed(&reg, &r, &repo, &d, &data).await;
}

#[tokio::test]
async fn out_of_order_416_reports_the_upload_position() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/416-headers");
    let loc = reg.upload_location(&repo).await;
    let r = patch(&reg, &loc, &bytes(8, 1), Some((0, 7))).await;
    r.assert_status(202);
    let loc = reg.abs(&r.must_header("location"));
    let r = patch(&reg, &loc, &bytes(4, 2), Some((20, 23))).await;
    r.assert_error(416, "BLOB_UPLOAD_INVALID")
        .assert_header("range", "0-7");
    assert_session(&r, &repo);
}

#[tokio::test]
async fn content_range_not_matching_content_length_is_size_invalid() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/sizeinvalid");
    let loc = reg.upload_location(&repo).await;
    // Content-Range says 10 bytes, the body (and Content-Length) has 5.
    let r = patch(&reg, &loc, b"12345", Some((0, 9))).await;
    r.assert_error(400, "SIZE_INVALID");
    reg.get(&loc)
        .await
        .assert_status(204)
        .assert_header("range", "0-0");
}

#[tokio::test]
async fn malformed_content_range_is_blob_upload_invalid() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("up/badrange");
    let loc = reg.upload_location(&repo).await;
    for cr in ["garbage", "5-2", "a-b", "-4"] {
        let r = send(
            reg.client
                .patch(&loc)
                .header("Content-Range", cr)
                .body(b"12345".to_vec()),
        )
        .await;
        r.assert_error(400, "BLOB_UPLOAD_INVALID");
    }
    reg.get(&loc)
        .await
        .assert_status(204)
        .assert_header("range", "0-0");
}

#[tokio::test]
async fn upload_session_belongs_to_its_repository() {
    let reg = Reg::start(Topology::OneProcess);
    let a = reg.repo("up/owner");
    let b = reg.repo("up/intruder");
    reg.push_blob(&b, b"b exists").await;
    let r = reg.start_upload(&a).await;
    let id = assert_session(&r, &a);
    let data = b"session of a".to_vec();
    let d = sha256_digest(&data);
    let other = reg.v2(&format!("{b}/blobs/uploads/{id}"));
    reg.get(&other)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    patch(&reg, &other, &data, None)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    put_digest(&reg, &other, &d, &data)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.head(&reg.v2(&format!("{b}/blobs/{d}")))
        .await
        .assert_status(404);
    // Still usable in its own repository.
    let loc = reg.abs(&r.must_header("location"));
    let r = put_digest(&reg, &loc, &d, &data).await;
    assert_completed(&reg, &r, &a, &d, &data).await;
}
