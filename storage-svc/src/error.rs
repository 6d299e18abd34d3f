//! The storage service's errors, and their one mapping to a gRPC status carrying the OCI code.

use tonic::{Code, Status};
use trow_proto::oci_code;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob unknown to repository: {0}")]
    BlobUnknown(String),
    #[error("upload unknown: {0}")]
    UploadUnknown(String),
    /// An append that does not start where the upload ends.
    #[error("upload is at {size} bytes, append starts at {offset}")]
    UploadOffset { size: u64, offset: u64 },
    #[error("invalid upload: {0}")]
    UploadInvalid(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest references unknown {0}")]
    ManifestBlobUnknown(String),
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    #[error("repository unknown: {0}")]
    NameUnknown(String),
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    #[error("requested range not satisfiable: {0}")]
    RangeInvalid(String),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StorageError> for Status {
    fn from(e: StorageError) -> Status {
        let (code, oci) = match &e {
            StorageError::BlobUnknown(_) => (Code::NotFound, "BLOB_UNKNOWN"),
            StorageError::UploadUnknown(_) => (Code::NotFound, "BLOB_UPLOAD_UNKNOWN"),
            StorageError::UploadOffset { .. } => (Code::OutOfRange, "BLOB_UPLOAD_INVALID"),
            StorageError::UploadInvalid(_) => (Code::InvalidArgument, "BLOB_UPLOAD_INVALID"),
            StorageError::DigestInvalid(_) => (Code::InvalidArgument, "DIGEST_INVALID"),
            StorageError::ManifestUnknown(_) => (Code::NotFound, "MANIFEST_UNKNOWN"),
            StorageError::ManifestInvalid(_) => (Code::InvalidArgument, "MANIFEST_INVALID"),
            StorageError::ManifestBlobUnknown(_) => {
                (Code::FailedPrecondition, "MANIFEST_BLOB_UNKNOWN")
            }
            StorageError::NameInvalid(_) => (Code::InvalidArgument, "NAME_INVALID"),
            StorageError::NameUnknown(_) => (Code::NotFound, "NAME_UNKNOWN"),
            // The spec has no tag code; a bad tag makes the manifest request invalid.
            StorageError::TagInvalid(_) => (Code::InvalidArgument, "MANIFEST_INVALID"),
            StorageError::RangeInvalid(_) => (Code::OutOfRange, "SIZE_INVALID"),
            StorageError::Io(err) => {
                tracing::error!(error = %err, "storage I/O error");
                (Code::Internal, "UNKNOWN")
            }
        };
        oci_code::status(code, oci, e.to_string())
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
