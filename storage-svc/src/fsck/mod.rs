//! The store checker behind `trow fsck`: reads a whole store and lists every inconsistency.
//!
//! It goes through the [`Backend`] trait and the [`layout`] paths only (plus one filesystem walk
//! for temp files of the old layout, which `Backend::list` hides), so an object-store backend is
//! checked the same way. It never writes: it is safe beside a running Trow, though writes in
//! progress may then show up as problems. It takes `now` so that tests can move time.
//!
//! What it checks, in order:
//! - every blob under `blobs/<alg>/<xx>/<hex>` hashes to its name and sits in its `<xx>` directory;
//! - every repository: tags resolve to manifest records; records parse, match their path, and
//!   their bytes exist, have the recorded size and parse as the recorded media type; everything a
//!   manifest references is in the repository; `_blobs` links point at blobs; referrer entries
//!   match their manifests and every manifest with a subject has its entry;
//! - the catalog index lists exactly the repositories;
//! - no upload outlived the sweep or lacks a file past a grace period, no temp file is old.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::backend::{Backend, FsBackend};
use crate::layout;

mod checker;
mod problem;
mod repository;

pub use problem::Problem;

/// An upload missing its `repository` record or `data` file is a crash leftover once this old
/// (creating both takes milliseconds).
pub const UPLOAD_GRACE: Duration = Duration::from_secs(3600);
/// A temp file older than this is a crash leftover: the age the store's sweep removes it at.
pub use crate::store::TMP_MAX_AGE;

/// Why fsck could not run to the end (as opposed to the problems it found).
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error("no such directory")]
    NoDataDir(PathBuf),
    #[error("{key}: {source}")]
    Io {
        key: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = FsckError> = std::result::Result<T, E>;

/// What was checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub blobs: u64,
    pub repositories: u64,
    pub tags: u64,
    pub manifests: u64,
    pub uploads: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub counts: Counts,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// `fsck: N blobs, M repositories, K tags checked; P problems`.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "fsck: {} blobs, {} repositories, {} tags checked; {} problems",
            c.blobs,
            c.repositories,
            c.tags,
            self.problems.len()
        )
    }
}

/// Checks the store held by `backend` as of `now`.
pub async fn check<B: Backend>(backend: &B, now: SystemTime) -> Result<Report> {
    let mut c = checker::Checker::new(backend, now);
    c.blobs().await?;
    let repositories = c.repositories().await?;
    for r in &repositories {
        c.repository(r).await?;
    }
    c.catalog(&repositories).await?;
    c.uploads().await?;
    c.temp_files().await?;
    Ok(c.report)
}

/// Checks the filesystem store in `data_dir`, including temp files of the old layout.
pub async fn check_dir(data_dir: &Path, now: SystemTime) -> Result<Report> {
    if !data_dir.is_dir() {
        return Err(FsckError::NoDataDir(data_dir.to_path_buf()));
    }
    let backend = FsBackend::new(data_dir).map_err(|source| FsckError::Io {
        key: data_dir.display().to_string(),
        source,
    })?;
    let mut report = check(&backend, now).await?;
    let root = backend.root().to_path_buf();
    let legacy = tokio::task::spawn_blocking(move || legacy_temp_files(&root, now))
        .await
        .map_err(|e| FsckError::Io {
            key: String::new(),
            source: io::Error::other(e),
        })??;
    report.problems.extend(legacy);
    Ok(report)
}

/// Whether a running storage service holds the data dir's lock. Only probes: the lock is not
/// kept, so fsck never stops Trow from starting.
pub fn data_dir_in_use(data_dir: &Path) -> io::Result<bool> {
    let f = match std::fs::File::open(data_dir.join(layout::LOCK)) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match f.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// `.tmp-*` files anywhere under `root` older than [`TMP_MAX_AGE`]: the old layout wrote temp
/// files next to their targets, where `Backend::list` does not show them.
fn legacy_temp_files(root: &Path, now: SystemTime) -> Result<Vec<Problem>> {
    let found = crate::backend::fs::legacy_temp_files(root).map_err(|source| FsckError::Io {
        key: root.display().to_string(),
        source,
    })?;
    Ok(found
        .into_iter()
        .filter_map(|(path, modified)| {
            let age = now.duration_since(modified).unwrap_or_default();
            (age > TMP_MAX_AGE).then(|| Problem::TempStale {
                key: path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                age,
            })
        })
        .collect())
}
