//! How a gRPC status carries an OCI Distribution error code (`BLOB_UNKNOWN`, ...).
//!
//! The storage service knows *why* something failed in OCI terms; the gateway must answer with
//! exactly that code. Putting it in one metadata entry keeps the gRPC status code meaningful to
//! grpcurl users and the OCI code lossless for the gateway.

use tonic::{Code, Status};

/// Metadata key holding the OCI error code.
pub const METADATA_KEY: &str = "trow-oci-code";

/// A status with a gRPC code, an OCI error code and a message.
pub fn status(code: Code, oci_code: &str, message: impl Into<String>) -> Status {
    let mut s = Status::new(code, message);
    if let Ok(v) = oci_code.parse() {
        s.metadata_mut().insert(METADATA_KEY, v);
    }
    s
}

/// The OCI error code a status carries, if any.
pub fn of(status: &Status) -> Option<&str> {
    status.metadata().get(METADATA_KEY)?.to_str().ok()
}
