//! Compiles the .proto contracts with protox (pure Rust), so no system `protoc` is needed, and
//! keeps the encoded descriptor set for gRPC reflection.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/trow/oci/v1/errors.proto",
        "proto/trow/storage/v1/storage.proto",
        "proto/trow/proxy/v1/proxy.proto",
        "proto/trow/admission/v1/admission.proto",
        "proto/trow/audit/v1/audit.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // One set per service (its file and what it imports), so each server reflects only the
    // contract it serves: grpcurl on storage must not list services that answer Unimplemented.
    // The storage process also serves the audit log, so its set holds both contracts.
    for (service, these) in [
        ("storage", &[files[1], files[4]][..]),
        ("proxy", &[files[2]][..]),
        ("admission", &[files[3]][..]),
    ] {
        let one = protox::compile(these, ["proto"])?;
        std::fs::write(
            out.join(format!("{service}_descriptor.bin")),
            one.encode_to_vec(),
        )?;
    }
    // Blob chunks as `Bytes`: handed between HTTP bodies and gRPC messages without copying.
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
