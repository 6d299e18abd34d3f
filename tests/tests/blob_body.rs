//! Blob bodies beside storage's gRPC (`trow_proto::blob_body`, what the gateway pulls blobs
//! through): a real split topology with a shared token, the route called directly as another
//! process on the network would. It admits exactly whom the gRPC calls admit, serves the bytes
//! and ranges `ReadBlob` serves, and fails with the status (code and OCI code) `ReadBlob` fails
//! with.
//!
//! Owns loopback address 127.0.0.178.

use std::path::Path;

use trow_proto::blob_body::BlobBodyClient;
use trow_proto::storage::ReadBlobRequest;
use trow_proto::storage::storage_client::StorageClient;
use trow_proto::trust::Trust;
use trow_tests::oci::Reg;
use trow_tests::{Flags, Topology, Trow};

const IP: &str = "127.0.0.178";

/// A channel to storage at `addr` carrying the token in `token_file` (none: no token).
fn channel(addr: &str, token_file: Option<&Path>) -> trow_proto::trust::Channel {
    Trust::load(None, token_file.map(Path::to_path_buf))
        .unwrap()
        .channel(&format!("http://{addr}"), None, |e| e)
        .unwrap()
}

/// All of a body's bytes, or the error that ended it.
async fn collect(body: tonic::body::Body) -> Result<Vec<u8>, tonic::Status> {
    use http_body_util::BodyExt;
    Ok(body.collect().await?.to_bytes().to_vec())
}

/// What the route answers for `req`: the bytes or the status.
async fn via_body(c: &BlobBodyClient, req: &ReadBlobRequest) -> Result<Vec<u8>, tonic::Status> {
    collect(c.read(req).await?).await
}

/// What `ReadBlob` answers for `req`: the bytes or the status.
async fn via_grpc(
    c: &mut StorageClient<trow_proto::trust::Channel>,
    req: &ReadBlobRequest,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = c.read_blob(req.clone()).await?.into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

fn req(repository: &str, digest: &str, offset: u64, length: u64) -> ReadBlobRequest {
    ReadBlobRequest {
        repository: repository.into(),
        digest: digest.into(),
        offset,
        length,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_bodies_admit_and_answer_as_read_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("grpc.token");
    let token = format!("test-token-{}", trow_tests::oci::unique());
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let flags = Flags::default()
        .with_grpc(&["--grpc-token-file", &token_file.display().to_string()])
        .on_ip(IP);
    let trow = Trow::start_with(Topology::Split, flags);
    let _logs = trow_tests::clients::LogsOnPanic::trow(&trow);
    let storage = trow.storage_addr.clone();
    let reg = Reg::with_trow(trow);

    // Two reads' worth of bytes and an odd tail, so ranges cross the store's chunks.
    let data: Vec<u8> = (0..(600u32 << 10) + 17).map(|i| (i % 251) as u8).collect();
    let digest = reg.push_blob("team/app", &data).await;
    let size = data.len() as u64;

    let trusted = channel(&storage, Some(&token_file));
    let body = BlobBodyClient::new(trusted.clone());
    let mut grpc = StorageClient::new(trusted);

    // Served: the whole blob, and ranges, byte for byte as ReadBlob serves them.
    for r in [
        req("team/app", &digest, 0, 0),
        req("team/app", &digest, 0, size),
        req("team/app", &digest, 1, 10),
        req("team/app", &digest, 300 << 10, 0),
        req("team/app", &digest, size - 1, 1),
    ] {
        let got = via_body(&body, &r).await.expect("a read through the body");
        let end = if r.length == 0 {
            size
        } else {
            r.offset + r.length
        };
        assert_eq!(got, &data[r.offset as usize..end as usize], "{r:?}");
        assert_eq!(got, via_grpc(&mut grpc, &r).await.unwrap(), "{r:?}");
    }

    // Refused: the same status as a gRPC call, without the token or with a wrong one.
    let wrong = tmp.path().join("wrong.token");
    std::fs::write(&wrong, "wrong-token-0123456789\n").unwrap();
    for file in [None, Some(wrong.as_path())] {
        let untrusted = channel(&storage, file);
        let r = req("team/app", &digest, 0, 0);
        let refused = via_body(&BlobBodyClient::new(untrusted.clone()), &r)
            .await
            .expect_err("a read without the token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        let grpc_refused = via_grpc(&mut StorageClient::new(untrusted), &r)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), grpc_refused.code());
    }

    // Failed: each with ReadBlob's code and OCI code.
    let absent = format!("sha256:{}", "0".repeat(64));
    for r in [
        req("team/app", &absent, 0, 0),        // blob unknown
        req("team/other", &digest, 0, 0),      // not linked in this repository
        req("team/app", "sha256:xyz", 0, 0),   // digest invalid
        req("Team/App", &digest, 0, 0),        // name invalid
        req("team/app", &digest, size, 0),     // offset at the end
        req("team/app", &digest, size - 1, 2), // past the end
    ] {
        let e = via_body(&body, &r).await.expect_err("a failing read");
        let g = via_grpc(&mut grpc, &r)
            .await
            .expect_err("a failing ReadBlob");
        assert_eq!(e.code(), g.code(), "{r:?}: {e:?} vs {g:?}");
        let oci = trow_proto::oci_code::of(&e);
        assert!(oci.is_some(), "{r:?}: no OCI code in {e:?}");
        assert_eq!(oci, trow_proto::oci_code::of(&g), "{r:?}");
        assert_eq!(e.message(), g.message(), "{r:?}");
    }
}
