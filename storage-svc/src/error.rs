//! The storage service's errors, and their one mapping to a gRPC status carrying the OCI code.

use tonic::{Code, Status};
use trow_proto::oci_code::{self, ErrorCode};

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
    /// Another request is appending to or completing the upload.
    #[error("upload {0} is busy with another request")]
    UploadBusy(String),
    #[error("too many uploads in progress (at most {0})")]
    TooManyUploads(usize),
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
    /// Writes the caller may not make (e.g. a fill outside the cache's namespace).
    #[error("{0}")]
    Denied(String),
    /// The fill of a blob failed (its bytes did not match its digest, or it was cancelled).
    #[error("the fill of {0} failed")]
    FillFailed(String),
    /// The fill of a blob made no progress for the fill timeout.
    #[error("the fill of {0} stalled")]
    FillStalled(String),
    /// The data volume is under its reserve of free space: a push is refused before it writes.
    #[error(
        "the data volume has {free} bytes free, under the {reserve}-byte reserve kept for pushes"
    )]
    SpaceLow { free: u64, reserve: u64 },
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    /// The disk (or quota) is full: an operator must act, so it is told apart from other faults.
    pub fn is_full(&self) -> bool {
        matches!(self, StorageError::Io(e) if matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ))
    }
}

impl From<StorageError> for Status {
    fn from(e: StorageError) -> Status {
        use ErrorCode as C;
        let (code, oci) = match &e {
            StorageError::BlobUnknown(_) => (Code::NotFound, C::BlobUnknown),
            StorageError::UploadUnknown(_) => (Code::NotFound, C::BlobUploadUnknown),
            StorageError::UploadOffset { .. } => (Code::OutOfRange, C::BlobUploadInvalid),
            StorageError::UploadInvalid(_) => (Code::InvalidArgument, C::BlobUploadInvalid),
            StorageError::UploadBusy(_) => (Code::Aborted, C::BlobUploadInvalid),
            StorageError::TooManyUploads(_) => (Code::ResourceExhausted, C::Toomanyrequests),
            StorageError::DigestInvalid(_) => (Code::InvalidArgument, C::DigestInvalid),
            StorageError::ManifestUnknown(_) => (Code::NotFound, C::ManifestUnknown),
            StorageError::ManifestInvalid(_) => (Code::InvalidArgument, C::ManifestInvalid),
            StorageError::ManifestBlobUnknown(_) => {
                (Code::FailedPrecondition, C::ManifestBlobUnknown)
            }
            StorageError::NameInvalid(_) => (Code::InvalidArgument, C::NameInvalid),
            StorageError::NameUnknown(_) => (Code::NotFound, C::NameUnknown),
            // The spec has no tag code; a bad tag makes the manifest request invalid.
            StorageError::TagInvalid(_) => (Code::InvalidArgument, C::ManifestInvalid),
            StorageError::RangeInvalid(_) => (Code::OutOfRange, C::SizeInvalid),
            StorageError::Denied(_) => (Code::PermissionDenied, C::Denied),
            // The caller asks again (and may take a stalled fill over).
            StorageError::FillFailed(_) | StorageError::FillStalled(_) => {
                (Code::Aborted, C::BlobUnknown)
            }
            StorageError::SpaceLow { .. } => {
                tracing::error!(error = %e, "refusing a push: the data volume is nearly full");
                (Code::ResourceExhausted, C::Unknown)
            }
            StorageError::Io(err) if e.is_full() => {
                tracing::error!(error = %err, "storage is full");
                (Code::ResourceExhausted, C::Unknown)
            }
            StorageError::Io(err) => {
                tracing::error!(error = %err, "storage I/O error");
                (Code::Internal, C::Unknown)
            }
        };
        oci_code::status(code, oci, e.to_string())
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
