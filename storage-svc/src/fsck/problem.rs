//! The problems fsck reports, one line each.

use std::fmt;
use std::time::Duration;

use crate::digest::Digest;
use crate::store::UPLOAD_MAX_AGE;

/// One inconsistency. Keys are paths relative to the store's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Something that has no place in the layout (a bad name, a file where a directory belongs).
    Stray {
        key: String,
        why: String,
    },
    /// An object that exists but could not be read.
    Unreadable {
        key: String,
        error: String,
    },
    /// A blob whose bytes hash to another digest than its name.
    BlobCorrupt {
        key: String,
        actual: Digest,
    },
    /// A blob in the wrong `<xx>` directory.
    BlobMisplaced {
        key: String,
    },
    TagInvalid {
        repository: String,
        tag: String,
        content: String,
    },
    TagDangling {
        repository: String,
        tag: String,
        digest: Digest,
    },
    ManifestRecordInvalid {
        repository: String,
        digest: Digest,
        error: String,
    },
    ManifestDigestMismatch {
        repository: String,
        digest: Digest,
        recorded: String,
    },
    ManifestBytesMissing {
        repository: String,
        digest: Digest,
    },
    ManifestSizeMismatch {
        repository: String,
        digest: Digest,
        recorded: u64,
        actual: u64,
    },
    ManifestUnparsable {
        repository: String,
        digest: Digest,
        error: String,
    },
    ManifestMediaTypeMismatch {
        repository: String,
        digest: Digest,
        recorded: String,
        parsed: String,
    },
    ManifestSubjectMismatch {
        repository: String,
        digest: Digest,
        recorded: Option<String>,
        parsed: Option<String>,
    },
    /// A record whose kept references differ from its bytes': garbage collection, which
    /// follows the record, would delete what the manifest needs.
    ManifestReferencesMismatch {
        repository: String,
        digest: Digest,
    },
    ManifestBlobNotLinked {
        repository: String,
        manifest: Digest,
        blob: Digest,
    },
    ManifestBlobMissing {
        repository: String,
        manifest: Digest,
        blob: Digest,
    },
    ManifestChildMissing {
        repository: String,
        manifest: Digest,
        child: Digest,
    },
    /// A manifest with a subject that has no entry in the subject's referrers.
    ReferrerMissing {
        repository: String,
        subject: Digest,
        manifest: Digest,
    },
    LinkDangling {
        repository: String,
        blob: Digest,
    },
    /// A referrer entry without a manifest record of that digest having that subject.
    ReferrerDangling {
        repository: String,
        subject: Digest,
        referrer: Digest,
    },
    ReferrerUnreadable {
        repository: String,
        subject: Digest,
        referrer: Digest,
        error: String,
    },
    /// A referrer entry whose descriptor `field` disagrees with its manifest.
    ReferrerMismatch {
        repository: String,
        subject: Digest,
        referrer: Digest,
        field: &'static str,
        entry: String,
        manifest: String,
    },
    CatalogMissing {
        repository: String,
    },
    CatalogStray {
        repository: String,
    },
    UploadStale {
        id: String,
        age: Duration,
    },
    UploadIncomplete {
        id: String,
        missing: &'static str,
        age: Duration,
    },
    TempStale {
        key: String,
        age: Duration,
    },
}

fn age(d: Duration) -> String {
    let m = d.as_secs() / 60;
    format!("{}h{:02}m", m / 60, m % 60)
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Problem::*;
        match self {
            Stray { key, why } => write!(f, "{key}: stray entry: {why}"),
            Unreadable { key, error } => write!(f, "{key}: unreadable: {error}"),
            BlobCorrupt { key, actual } => write!(f, "{key}: blob content hashes to {actual}"),
            BlobMisplaced { key } => write!(f, "{key}: blob in the wrong directory"),
            ManifestReferencesMismatch { repository, digest } => write!(
                f,
                "{repository}@{digest}: manifest record's references differ from its bytes'"
            ),
            TagInvalid {
                repository,
                tag,
                content,
            } => {
                write!(
                    f,
                    "{repository}:{tag}: tag holds no valid digest: {content:?}"
                )
            }
            TagDangling {
                repository,
                tag,
                digest,
            } => {
                write!(
                    f,
                    "{repository}:{tag}: tag points at {digest}, which has no manifest record"
                )
            }
            ManifestRecordInvalid {
                repository,
                digest,
                error,
            } => {
                write!(
                    f,
                    "{repository}@{digest}: manifest record unreadable: {error}"
                )
            }
            ManifestDigestMismatch {
                repository,
                digest,
                recorded,
            } => {
                write!(
                    f,
                    "{repository}@{digest}: manifest record says digest {recorded}"
                )
            }
            ManifestBytesMissing { repository, digest } => {
                write!(
                    f,
                    "{repository}@{digest}: manifest bytes missing from blobs/"
                )
            }
            ManifestSizeMismatch {
                repository,
                digest,
                recorded,
                actual,
            } => write!(
                f,
                "{repository}@{digest}: manifest record says {recorded} bytes, blob has {actual}"
            ),
            ManifestUnparsable {
                repository,
                digest,
                error,
            } => {
                write!(
                    f,
                    "{repository}@{digest}: manifest bytes do not parse: {error}"
                )
            }
            ManifestMediaTypeMismatch {
                repository,
                digest,
                recorded,
                parsed,
            } => write!(
                f,
                "{repository}@{digest}: manifest recorded as {recorded} but parses as {parsed}"
            ),
            ManifestSubjectMismatch {
                repository,
                digest,
                recorded,
                parsed,
            } => write!(
                f,
                "{repository}@{digest}: manifest record's subject {recorded:?} differs from its bytes' {parsed:?}"
            ),
            ManifestBlobNotLinked {
                repository,
                manifest,
                blob,
            } => {
                write!(
                    f,
                    "{repository}@{manifest}: references blob {blob}, not linked in the repository"
                )
            }
            ManifestBlobMissing {
                repository,
                manifest,
                blob,
            } => {
                write!(
                    f,
                    "{repository}@{manifest}: references blob {blob}, missing from blobs/"
                )
            }
            ManifestChildMissing {
                repository,
                manifest,
                child,
            } => {
                write!(
                    f,
                    "{repository}@{manifest}: references manifest {child}, not in the repository"
                )
            }
            ReferrerMissing {
                repository,
                subject,
                manifest,
            } => write!(
                f,
                "{repository}@{manifest}: has subject {subject} but no entry in its referrers"
            ),
            LinkDangling { repository, blob } => {
                write!(
                    f,
                    "{repository}: _blobs link to {blob}, missing from blobs/"
                )
            }
            ReferrerDangling {
                repository,
                subject,
                referrer,
            } => write!(
                f,
                "{repository}@{subject}: referrer entry {referrer} matches no manifest with that subject"
            ),
            ReferrerUnreadable {
                repository,
                subject,
                referrer,
                error,
            } => write!(
                f,
                "{repository}@{subject}: referrer entry {referrer} unreadable: {error}"
            ),
            ReferrerMismatch {
                repository,
                subject,
                referrer,
                field,
                entry,
                manifest,
            } => write!(
                f,
                "{repository}@{subject}: referrer entry {referrer} has {field} {entry}, its manifest {manifest}"
            ),
            CatalogMissing { repository } => {
                write!(f, "{repository}: repository missing from the catalog index")
            }
            CatalogStray { repository } => {
                write!(
                    f,
                    "{repository}: catalog index lists a repository that does not exist"
                )
            }
            UploadStale { id, age: a } => write!(
                f,
                "uploads/{id}: untouched for {}, older than the sweep allows ({})",
                age(*a),
                age(UPLOAD_MAX_AGE)
            ),
            UploadIncomplete {
                id,
                missing,
                age: a,
            } => {
                write!(f, "uploads/{id}: no {missing} file after {}", age(*a))
            }
            TempStale { key, age: a } => write!(f, "{key}: temp file left for {}", age(*a)),
        }
    }
}
