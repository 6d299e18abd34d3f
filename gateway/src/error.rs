//! The gateway's one error type and its one mapping to the OCI error JSON.
//!
//! Everything that fails — a bad request parsed here, or a storage call — becomes an [`Error`]
//! carrying an [`OciCode`]; [`IntoResponse`] turns it into the spec's
//! `{"errors":[{"code","message","detail"}]}` with the matching HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;

/// The OCI Distribution error codes, defined once in `proto/trow/oci/v1/errors.proto`.
pub use trow_proto::oci::ErrorCode as OciCode;

/// The HTTP status the spec pairs with a code.
fn http_status(code: OciCode) -> StatusCode {
    match code {
        OciCode::BlobUnknown
        | OciCode::BlobUploadUnknown
        | OciCode::ManifestUnknown
        | OciCode::NameUnknown => StatusCode::NOT_FOUND,
        OciCode::Unauthorized => StatusCode::UNAUTHORIZED,
        OciCode::Denied => StatusCode::FORBIDDEN,
        OciCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
        OciCode::Toomanyrequests => StatusCode::TOO_MANY_REQUESTS,
        OciCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        OciCode::BlobUploadInvalid
        | OciCode::DigestInvalid
        | OciCode::ManifestBlobUnknown
        | OciCode::ManifestInvalid
        | OciCode::NameInvalid
        | OciCode::SizeInvalid => StatusCode::BAD_REQUEST,
    }
}

/// A failed request: an OCI code, the HTTP status to answer with, and a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{} ({status}): {message}", code.as_str_name())]
pub struct Error {
    pub code: OciCode,
    pub status: StatusCode,
    pub message: String,
    /// Extra headers the answer must carry (e.g. `Range` on a 416 for an upload).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Error {
    pub fn new(code: OciCode, message: impl Into<String>) -> Error {
        Error {
            code,
            status: http_status(code),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Error {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Error {
        self.headers.push((name, value));
        self
    }
}

/// Whether tonic made `s` in this process from a connection that failed (refused, reset, a
/// broken pipe), rather than a service sending it: only then does it carry the transport error
/// as its source. A call on a connection whose service has just died fails this way, often as
/// UNKNOWN "transport error" before the connection is known to be closed: as unavailable as a
/// refused connection, not an internal error.
fn transport_failure(s: &tonic::Status) -> bool {
    std::error::Error::source(s).is_some()
}

impl From<tonic::Status> for Error {
    /// Storage errors carry their OCI code in metadata (see `trow_proto::oci_code`). Server faults
    /// are logged with their detail and answered without it.
    fn from(s: tonic::Status) -> Error {
        match (trow_proto::oci_code::of(&s), s.code()) {
            (Some(OciCode::Unknown), Code::ResourceExhausted) => {
                tracing::error!(status = %s, "storage is full");
                Error::new(OciCode::Unknown, "the registry's storage is full")
                    .with_status(StatusCode::INSUFFICIENT_STORAGE)
            }
            _ if trow_proto::oci_code::is_upstream_failure(&s) => {
                tracing::warn!(status = %s, "upstream registry failed");
                Error::new(OciCode::Unknown, s.message()).with_status(StatusCode::BAD_GATEWAY)
            }
            (Some(OciCode::Unknown) | None, grpc)
                if grpc == Code::Unavailable || transport_failure(&s) =>
            {
                tracing::warn!(status = %s, "storage unavailable");
                Error::new(OciCode::Unknown, "storage service unavailable")
                    .with_status(StatusCode::SERVICE_UNAVAILABLE)
            }
            (Some(OciCode::Unknown) | None, _) => {
                tracing::error!(status = %s, "storage call failed");
                Error::new(OciCode::Unknown, "internal error")
            }
            (Some(c), grpc) => {
                let e = Error::new(c, s.message());
                match grpc {
                    // Out-of-order upload chunks and unsatisfiable ranges are 416s.
                    Code::OutOfRange => e.with_status(StatusCode::RANGE_NOT_SATISFIABLE),
                    // Another request holds the upload.
                    Code::Aborted => e.with_status(StatusCode::CONFLICT),
                    _ => e,
                }
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "code": self.code.as_str_name(), "message": self.message, "detail": null }]
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl From<crate::auth::Refusal> for Error {
    /// `401 UNAUTHORIZED` with the challenge that says how to authenticate. The message says
    /// why (missing, wrong password, expired token, scope not granted), never with a secret.
    /// A caller the rules do not allow gets `403 DENIED` and no challenge: logging in again
    /// would not help.
    fn from(r: crate::auth::Refusal) -> Error {
        if let crate::auth::AuthError::Denied { .. } = r.error {
            return Error::new(OciCode::Denied, r.error.to_string());
        }
        let challenge = HeaderValue::from_str(&r.challenge)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        Error::new(OciCode::Unauthorized, r.error.to_string())
            .with_header(header::WWW_AUTHENTICATE, challenge)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
