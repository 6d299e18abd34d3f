//! The gateway's one error type and its one mapping to the OCI error JSON.
//!
//! Everything that fails — a bad request parsed here, or a storage call — becomes an [`Error`]
//! carrying an [`OciCode`]; [`IntoResponse`] turns it into the spec's
//! `{"errors":[{"code","message","detail"}]}` with the matching HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;

/// The error codes of the OCI Distribution Spec, plus UNKNOWN for server faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OciCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unknown,
}

impl OciCode {
    const ALL: [OciCode; 15] = [
        OciCode::BlobUnknown,
        OciCode::BlobUploadInvalid,
        OciCode::BlobUploadUnknown,
        OciCode::DigestInvalid,
        OciCode::ManifestBlobUnknown,
        OciCode::ManifestInvalid,
        OciCode::ManifestUnknown,
        OciCode::NameInvalid,
        OciCode::NameUnknown,
        OciCode::SizeInvalid,
        OciCode::Unauthorized,
        OciCode::Denied,
        OciCode::Unsupported,
        OciCode::TooManyRequests,
        OciCode::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OciCode::BlobUnknown => "BLOB_UNKNOWN",
            OciCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            OciCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            OciCode::DigestInvalid => "DIGEST_INVALID",
            OciCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            OciCode::ManifestInvalid => "MANIFEST_INVALID",
            OciCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            OciCode::NameInvalid => "NAME_INVALID",
            OciCode::NameUnknown => "NAME_UNKNOWN",
            OciCode::SizeInvalid => "SIZE_INVALID",
            OciCode::Unauthorized => "UNAUTHORIZED",
            OciCode::Denied => "DENIED",
            OciCode::Unsupported => "UNSUPPORTED",
            OciCode::TooManyRequests => "TOOMANYREQUESTS",
            OciCode::Unknown => "UNKNOWN",
        }
    }

    fn parse(s: &str) -> Option<OciCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status the spec pairs with the code.
    fn status(self) -> StatusCode {
        match self {
            OciCode::BlobUnknown
            | OciCode::BlobUploadUnknown
            | OciCode::ManifestUnknown
            | OciCode::NameUnknown => StatusCode::NOT_FOUND,
            OciCode::Unauthorized => StatusCode::UNAUTHORIZED,
            OciCode::Denied => StatusCode::FORBIDDEN,
            OciCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            OciCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            OciCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A failed request: an OCI code, the HTTP status to answer with, and a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{} ({status}): {message}", code.as_str())]
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
            status: code.status(),
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

impl From<tonic::Status> for Error {
    /// Storage errors carry their OCI code in metadata (see `trow_proto::oci_code`).
    fn from(s: tonic::Status) -> Error {
        let code = trow_proto::oci_code::of(&s).and_then(OciCode::parse);
        match (code, s.code()) {
            (Some(c), grpc) => {
                let e = Error::new(c, s.message());
                // Out-of-order upload chunks and unsatisfiable ranges are 416s.
                if grpc == Code::OutOfRange {
                    e.with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                } else {
                    e
                }
            }
            (None, Code::Unavailable) => {
                tracing::warn!(status = %s, "storage unavailable");
                Error::new(OciCode::Unknown, "storage service unavailable")
                    .with_status(StatusCode::SERVICE_UNAVAILABLE)
            }
            (None, _) => {
                tracing::error!(status = %s, "storage call failed");
                Error::new(OciCode::Unknown, format!("storage: {}", s.message()))
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message, "detail": null }]
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
