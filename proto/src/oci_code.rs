//! How a gRPC status carries an OCI Distribution error code ([`ErrorCode`], defined once in
//! `proto/trow/oci/v1/errors.proto`).
//!
//! The storage service knows *why* something failed in OCI terms; the gateway must answer with
//! exactly that code. Putting it in one metadata entry keeps the gRPC status code meaningful to
//! grpcurl users and the OCI code lossless for the gateway.

use tonic::{Code, Status};

pub use crate::oci::ErrorCode;

/// Metadata key holding the OCI error code's name.
pub const METADATA_KEY: &str = "trow-oci-code";

/// Longest status message sent. Messages may quote client input (a tag, a name), and gRPC carries
/// the message in an HTTP/2 header, which peers refuse past their header-list limit.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// A status with a gRPC code, an OCI error code and a message (cut to [`MAX_MESSAGE_LEN`]).
pub fn status(code: Code, oci_code: ErrorCode, message: impl Into<String>) -> Status {
    let mut message = message.into();
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    let mut s = Status::new(code, message);
    s.metadata_mut().insert(
        METADATA_KEY,
        tonic::metadata::MetadataValue::from_static(oci_code.as_str_name()),
    );
    s
}

/// An upstream registry failed the proxy and nothing cached could stand in: UNAVAILABLE with
/// code UNKNOWN. Unlike other server faults, the message is meant for the client (it names the
/// upstream and what went wrong), so the gateway passes it on, with HTTP 502.
pub fn upstream_failed(message: impl Into<String>) -> Status {
    status(Code::Unavailable, ErrorCode::Unknown, message)
}

/// Whether a status is [`upstream_failed`]'s.
pub fn is_upstream_failure(s: &Status) -> bool {
    s.code() == Code::Unavailable && of(s) == Some(ErrorCode::Unknown)
}

/// The OCI error code a status carries, if any.
pub fn of(status: &Status) -> Option<ErrorCode> {
    ErrorCode::from_str_name(status.metadata().get(METADATA_KEY)?.to_str().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_long_messages_are_cut() {
        let s = status(Code::NotFound, ErrorCode::BlobUnknown, "x".repeat(20_000));
        assert_eq!(of(&s), Some(ErrorCode::BlobUnknown));
        assert!(s.message().len() <= MAX_MESSAGE_LEN + 3);
        assert_eq!(ErrorCode::Toomanyrequests.as_str_name(), "TOOMANYREQUESTS");
    }
}
