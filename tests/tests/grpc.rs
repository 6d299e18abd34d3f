//! The storage service's gRPC server: standard health checking (grpc.health.v1) and server
//! reflection (grpc.reflection.v1), in both topologies.

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
use trow_tests::{Topology, Trow};

const STORAGE: &str = "trow.storage.v1.Storage";
/// The audit log, served by the storage process beside Storage.
const AUDIT: &str = "trow.audit.v1.Audit";

async fn channel(trow: &Trow) -> Channel {
    Channel::from_shared(format!("http://{}", trow.storage_addr))
        .expect("endpoint")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to storage gRPC at {}: {e}", trow.storage_addr))
}

async fn check(ch: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut c = HealthClient::new(ch.clone());
    let r = c
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(ServingStatus::try_from(r.into_inner().status).expect("known serving status"))
}

/// Sends one reflection request and returns its response (or the stream's error status).
async fn try_reflect(
    ch: &Channel,
    req: MessageRequest,
) -> Result<ServerReflectionResponse, tonic::Status> {
    let mut c = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(req),
    };
    let mut stream = c
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .expect("reflection call")
        .into_inner();
    Ok(stream.message().await?.expect("one response"))
}

async fn reflect(ch: &Channel, req: MessageRequest) -> ServerReflectionResponse {
    try_reflect(ch, req).await.expect("reflection response")
}

async fn list_services(ch: &Channel) -> Vec<String> {
    match reflect(ch, MessageRequest::ListServices(String::new()))
        .await
        .message_response
    {
        Some(MessageResponse::ListServicesResponse(l)) => {
            let mut names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("unexpected reflection response: {other:?}"),
    }
}

/// What a server of `service` lists, sorted: its own service, health and reflection; never a
/// service of another Trow contract, which would answer Unimplemented there.
fn listed(service: &str) -> Vec<String> {
    listed_all(&[service])
}

/// As [`listed`], for a server of several services (storage and the audit log).
fn listed_all(services: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    all.extend([
        "grpc.health.v1.Health".to_string(),
        "grpc.reflection.v1.ServerReflection".to_string(),
        "grpc.reflection.v1alpha.ServerReflection".to_string(),
    ]);
    all.sort();
    all
}

async fn health_and_reflection(topology: Topology) {
    let trow = Trow::start(topology);
    let ch = channel(&trow).await;

    assert_eq!(
        check(&ch, "").await.expect("check \"\""),
        ServingStatus::Serving
    );
    assert_eq!(
        check(&ch, STORAGE).await.expect("check Storage"),
        ServingStatus::Serving
    );
    let unknown = check(&ch, "no.such.Service").await;
    assert_eq!(
        unknown
            .expect_err("unknown service must not be SERVING")
            .code(),
        tonic::Code::NotFound
    );

    assert_eq!(
        check(&ch, AUDIT).await.expect("check Audit"),
        ServingStatus::Serving
    );
    assert_eq!(list_services(&ch).await, listed_all(&[AUDIT, STORAGE]));
    // The audit log's descriptor is served too.
    match reflect(&ch, MessageRequest::FileContainingSymbol(AUDIT.to_string()))
        .await
        .message_response
    {
        Some(MessageResponse::FileDescriptorResponse(f)) => {
            let all: Vec<u8> = f.file_descriptor_proto.concat();
            assert!(all.windows(6).any(|w| w == b"Record"), "no Record method");
        }
        other => panic!("unexpected reflection response: {other:?}"),
    }

    // The Storage service's file descriptor is served, under its proto package.
    match reflect(
        &ch,
        MessageRequest::FileContainingSymbol(STORAGE.to_string()),
    )
    .await
    .message_response
    {
        Some(MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty(), "no descriptors");
            let all: Vec<u8> = f.file_descriptor_proto.concat();
            let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
            assert!(has(b"trow.storage.v1"), "descriptor lacks the package name");
            assert!(has(b"Storage"), "descriptor lacks the service");
            assert!(
                has(b"PutManifest"),
                "descriptor lacks the PutManifest method"
            );
        }
        other => panic!("unexpected reflection response: {other:?}"),
    }
    // An unknown symbol is NOT_FOUND (as an error message or a stream status), not a descriptor.
    match try_reflect(
        &ch,
        MessageRequest::FileContainingSymbol("no.such.Symbol".into()),
    )
    .await
    {
        Ok(ServerReflectionResponse {
            message_response: Some(MessageResponse::ErrorResponse(e)),
            ..
        }) => assert_eq!(e.error_code, tonic::Code::NotFound as i32, "{e:?}"),
        Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

#[tokio::test]
async fn health_and_reflection_one_process() {
    health_and_reflection(Topology::OneProcess).await;
}

#[tokio::test]
async fn health_and_reflection_split() {
    health_and_reflection(Topology::Split).await;
}

#[tokio::test]
async fn split_storage_health_survives_restart() {
    let mut trow = Trow::start(Topology::Split);
    let ch = channel(&trow).await;
    assert_eq!(
        check(&ch, STORAGE).await.expect("check"),
        ServingStatus::Serving
    );
    trow.kill_storage();
    assert!(
        check(&ch, STORAGE).await.is_err(),
        "a killed storage process answered a health check"
    );
    trow.restart_storage();
    // A fresh connection to the restarted process.
    let ch = channel(&trow).await;
    assert_eq!(check(&ch, "").await.expect("check"), ServingStatus::Serving);
    assert_eq!(
        check(&ch, STORAGE).await.expect("check"),
        ServingStatus::Serving
    );
}

/// The 4 MiB manifest limit holds on the gRPC side too: a client calling storage directly (a
/// future proxy, grpcurl) cannot store what the HTTP API refuses.
#[tokio::test]
async fn storage_refuses_manifests_over_the_limit() {
    use trow_proto::storage::{PutManifestRequest, storage_client::StorageClient};
    let trow = Trow::start(Topology::Split);
    let mut c = StorageClient::new(channel(&trow).await)
        .max_encoding_message_size(trow_proto::transport::MAX_MESSAGE_SIZE);
    let big = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{{"x":"{}"}}}}"#,
        "a".repeat(trow_proto::transport::MAX_MANIFEST_SIZE)
    );
    let err = c
        .put_manifest(PutManifestRequest {
            repository: "big".into(),
            reference: "t".into(),
            content_type: String::new(),
            content: big.into_bytes().into(),
            cached: false,
        })
        .await
        .expect_err("a manifest over 4 MiB is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(
        trow_proto::oci_code::of(&err),
        Some(trow_proto::oci::ErrorCode::ManifestInvalid)
    );
}

/// The admission service's own listener (one process: beside the in-process pipes; split:
/// `trow admission`) carries health and reflection too.
async fn admission_health_and_reflection(topology: Topology) {
    const ADMISSION: &str = "trow.admission.v1.Admission";
    let flags = trow_tests::Flags::default().with_admission(&[]);
    let mut trow = Trow::start_with(topology, flags);
    let proc_ = trow.admission.as_mut().unwrap_or(&mut trow.main);
    let addr = trow_tests::addr_prefix(&trow_tests::wait_for_line(
        proc_,
        "trow admission: gRPC on ",
    ));
    let ch = Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to admission gRPC at {addr}: {e}"));
    assert_eq!(
        check(&ch, ADMISSION).await.expect("check Admission"),
        ServingStatus::Serving
    );
    assert_eq!(list_services(&ch).await, listed(ADMISSION));
}

#[tokio::test]
async fn admission_health_and_reflection_one_process() {
    admission_health_and_reflection(Topology::OneProcess).await;
}

#[tokio::test]
async fn admission_health_and_reflection_split() {
    admission_health_and_reflection(Topology::Split).await;
}
