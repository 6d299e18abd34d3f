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

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use crate::backend::{Backend, FsBackend};
use crate::digest::{Digest, Hasher};
use crate::layout;
use crate::manifest::{self, Reference};
use crate::names::{validate_repository, validate_tag};
use crate::server::UPLOAD_MAX_AGE;
use crate::store::{ManifestMeta, ReferrerDescriptor};

/// An upload missing its `repository` record or `data` file is a crash leftover once this old
/// (creating both takes milliseconds).
pub const UPLOAD_GRACE: Duration = Duration::from_secs(3600);
/// A temp file of an atomic write lives milliseconds; one this old is a crash leftover.
pub const TEMP_MAX_AGE: Duration = Duration::from_secs(3600);

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
    let mut c = Checker {
        backend,
        now,
        report: Report::default(),
    };
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

/// `.tmp-*` files anywhere under `root` older than [`TEMP_MAX_AGE`]: the old layout wrote temp
/// files next to their targets, where `Backend::list` does not show them.
fn legacy_temp_files(root: &Path, now: SystemTime) -> Result<Vec<Problem>> {
    let io_err = |p: &Path, source| FsckError::Io {
        key: p.display().to_string(),
        source,
    };
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let path = entry.path();
            let ty = entry.file_type().map_err(|e| io_err(&path, e))?;
            if ty.is_dir() {
                pending.push(path);
                continue;
            }
            let name = entry.file_name();
            if !name
                .to_string_lossy()
                .starts_with(layout::LEGACY_TMP_PREFIX)
            {
                continue;
            }
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(|e| io_err(&path, e))?;
            let a = now.duration_since(modified).unwrap_or_default();
            if a > TEMP_MAX_AGE {
                let key = path.strip_prefix(root).unwrap_or(&path);
                found.push(Problem::TempStale {
                    key: key.display().to_string(),
                    age: a,
                });
            }
        }
    }
    Ok(found)
}

/// What the referrers check needs to know about a manifest.
struct ManifestInfo {
    meta: ManifestMeta,
    /// From the manifest's bytes; None when they could not be read or parsed.
    artifact_type: Option<Option<String>>,
}

struct Checker<'a, B> {
    backend: &'a B,
    now: SystemTime,
    report: Report,
}

fn io_at(key: &str) -> impl FnOnce(io::Error) -> FsckError + '_ {
    move |source| FsckError::Io {
        key: key.to_string(),
        source,
    }
}

impl<B: Backend> Checker<'_, B> {
    fn problem(&mut self, p: Problem) {
        self.report.problems.push(p);
    }

    fn stray(&mut self, key: String, why: &str) {
        self.problem(Problem::Stray {
            key,
            why: why.to_string(),
        });
    }

    /// The names under `key`, which must be a directory (a prefix).
    async fn list(&mut self, key: &str) -> Result<Vec<String>> {
        match self.backend.list(key).await {
            Ok(names) => Ok(names),
            Err(e) if e.kind() == ErrorKind::NotADirectory => {
                self.stray(key.to_string(), "a file where a directory belongs");
                Ok(Vec::new())
            }
            Err(e) => Err(io_at(key)(e)),
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        self.backend.size(key).await.map_err(io_at(key))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key).await?.is_some())
    }

    /// A small object's bytes; None (with a problem) when it is a directory or unreadable.
    async fn get(&mut self, key: &str) -> Result<Option<bytes::Bytes>> {
        match self.backend.get(key).await {
            Ok(Some(b)) => Ok(Some(b)),
            Ok(None) => Ok(None),
            Err(e) if e.kind() == ErrorKind::IsADirectory => {
                self.stray(key.to_string(), "a directory where a file belongs");
                Ok(None)
            }
            Err(e) => {
                self.problem(Problem::Unreadable {
                    key: key.to_string(),
                    error: e.to_string(),
                });
                Ok(None)
            }
        }
    }

    /// `<prefix>/<alg>/<hex>` entries as digests; `<alg>` directories named by the algorithm.
    async fn digests_under(&mut self, prefix: &str) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in self.list(prefix).await? {
            let dir = format!("{prefix}/{alg}");
            for hex in self.list(&dir).await? {
                match Digest::parse(&format!("{alg}:{hex}")) {
                    Ok(d) => out.push(d),
                    Err(_) => self.stray(format!("{dir}/{hex}"), "not named by a digest"),
                }
            }
        }
        Ok(out)
    }

    async fn blobs(&mut self) -> Result<()> {
        for alg in self.list("blobs").await? {
            for xx in self.list(&format!("blobs/{alg}")).await? {
                let dir = format!("blobs/{alg}/{xx}");
                for hex in self.list(&dir).await? {
                    let key = format!("{dir}/{hex}");
                    let Ok(d) = Digest::parse(&format!("{alg}:{hex}")) else {
                        self.stray(key, "not named by a digest");
                        continue;
                    };
                    self.report.counts.blobs += 1;
                    if layout::blob(&d) != key {
                        self.problem(Problem::BlobMisplaced { key: key.clone() });
                    }
                    self.blob(&key, &d).await?;
                }
            }
        }
        Ok(())
    }

    async fn blob(&mut self, key: &str, d: &Digest) -> Result<()> {
        if self.size(key).await?.is_none() {
            self.stray(key.to_string(), "a directory where a blob belongs");
            return Ok(());
        }
        let mut hasher = Hasher::new(d.algorithm);
        let read = async {
            let mut stream = self.backend.read(key, 0, 0).await?;
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk?);
            }
            io::Result::Ok(())
        };
        if let Err(e) = read.await {
            self.problem(Problem::Unreadable {
                key: key.to_string(),
                error: e.to_string(),
            });
            return Ok(());
        }
        let actual = hasher.finish();
        if &actual != d {
            self.problem(Problem::BlobCorrupt {
                key: key.to_string(),
                actual,
            });
        }
        Ok(())
    }

    /// Directories under `repositories/` holding one of [`layout::REPO_MARKERS`], sorted.
    async fn repositories(&mut self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(name) = pending.pop() {
            let key = if name.is_empty() {
                layout::REPOSITORIES.to_string()
            } else {
                layout::repository(&name)
            };
            let children = self.list(&key).await?;
            if !name.is_empty()
                && children
                    .iter()
                    .any(|c| layout::REPO_MARKERS.contains(&c.as_str()))
            {
                if validate_repository(&name).is_ok() {
                    found.push(name.clone());
                } else {
                    self.stray(key.clone(), "not a valid repository name");
                }
            }
            for c in children.into_iter().filter(|c| !c.starts_with('_')) {
                let child = format!("{key}/{c}");
                if self.exists(&child).await? {
                    self.stray(child, "a file among repositories");
                    continue;
                }
                pending.push(if name.is_empty() {
                    c
                } else {
                    format!("{name}/{c}")
                });
            }
        }
        found.sort();
        self.report.counts.repositories = found.len() as u64;
        Ok(found)
    }

    async fn repository(&mut self, repo: &str) -> Result<()> {
        let mut manifests = HashMap::new();
        let prefix = format!("{}/_manifests", layout::repository(repo));
        for d in self.digests_under(&prefix).await? {
            self.report.counts.manifests += 1;
            if let Some(info) = self.manifest(repo, &d).await? {
                manifests.insert(d, info);
            }
        }
        self.tags(repo).await?;
        let prefix = format!("{}/_blobs", layout::repository(repo));
        for d in self.digests_under(&prefix).await? {
            if !self.exists(&layout::blob(&d)).await? {
                self.problem(Problem::LinkDangling {
                    repository: repo.to_string(),
                    blob: d,
                });
            }
        }
        self.referrers(repo, &manifests).await
    }

    async fn tags(&mut self, repo: &str) -> Result<()> {
        let dir = layout::tags(repo);
        for tag in self.list(&dir).await? {
            let key = layout::tag(repo, &tag);
            if validate_tag(&tag).is_err() {
                self.stray(key, "not a valid tag");
                continue;
            }
            self.report.counts.tags += 1;
            let Some(raw) = self.get(&key).await? else {
                continue;
            };
            let content = String::from_utf8_lossy(&raw).into_owned();
            let Ok(digest) = Digest::parse(content.trim()) else {
                self.problem(Problem::TagInvalid {
                    repository: repo.to_string(),
                    tag,
                    content,
                });
                continue;
            };
            if !self.exists(&layout::manifest(repo, &digest)).await? {
                self.problem(Problem::TagDangling {
                    repository: repo.to_string(),
                    tag,
                    digest,
                });
            }
        }
        Ok(())
    }

    async fn manifest(&mut self, repo: &str, d: &Digest) -> Result<Option<ManifestInfo>> {
        let repository = repo.to_string();
        let Some(raw) = self.get(&layout::manifest(repo, d)).await? else {
            return Ok(None);
        };
        let meta: ManifestMeta = match serde_json::from_slice(&raw) {
            Ok(m) => m,
            Err(e) => {
                self.problem(Problem::ManifestRecordInvalid {
                    repository,
                    digest: d.clone(),
                    error: e.to_string(),
                });
                return Ok(None);
            }
        };
        if meta.digest != d.to_string() {
            self.problem(Problem::ManifestDigestMismatch {
                repository: repository.clone(),
                digest: d.clone(),
                recorded: meta.digest.clone(),
            });
        }
        let mut info = ManifestInfo {
            meta,
            artifact_type: None,
        };
        let blob = layout::blob(d);
        let Some(actual) = self.size(&blob).await? else {
            self.problem(Problem::ManifestBytesMissing {
                repository,
                digest: d.clone(),
            });
            return Ok(Some(info));
        };
        if actual != info.meta.size {
            self.problem(Problem::ManifestSizeMismatch {
                repository: repository.clone(),
                digest: d.clone(),
                recorded: info.meta.size,
                actual,
            });
        }
        let Some(content) = self.get(&blob).await? else {
            return Ok(Some(info));
        };
        let parsed = match manifest::parse(&content, &info.meta.media_type) {
            Ok(p) => p,
            Err(e) => {
                self.problem(Problem::ManifestUnparsable {
                    repository,
                    digest: d.clone(),
                    error: e.to_string(),
                });
                return Ok(Some(info));
            }
        };
        if parsed.media_type != info.meta.media_type {
            self.problem(Problem::ManifestMediaTypeMismatch {
                repository: repository.clone(),
                digest: d.clone(),
                recorded: info.meta.media_type.clone(),
                parsed: parsed.media_type.clone(),
            });
        }
        let subject = parsed.subject.as_ref().map(Digest::to_string);
        if subject != info.meta.subject {
            self.problem(Problem::ManifestSubjectMismatch {
                repository: repository.clone(),
                digest: d.clone(),
                recorded: info.meta.subject.clone(),
                parsed: subject,
            });
        }
        for r in &parsed.references {
            let (manifest, repository) = (d.clone(), repository.clone());
            match r {
                Reference::Blob(b) => {
                    if !self.exists(&layout::blob_link(repo, b)).await? {
                        self.problem(Problem::ManifestBlobNotLinked {
                            repository: repository.clone(),
                            manifest: manifest.clone(),
                            blob: b.clone(),
                        });
                    }
                    if !self.exists(&layout::blob(b)).await? {
                        self.problem(Problem::ManifestBlobMissing {
                            repository,
                            manifest,
                            blob: b.clone(),
                        });
                    }
                }
                Reference::Manifest(c) => {
                    if !self.exists(&layout::manifest(repo, c)).await? {
                        self.problem(Problem::ManifestChildMissing {
                            repository,
                            manifest,
                            child: c.clone(),
                        });
                    }
                }
            }
        }
        if let Some(s) = &parsed.subject
            && !self.exists(&layout::referrer(repo, s, d)).await?
        {
            self.problem(Problem::ReferrerMissing {
                repository,
                subject: s.clone(),
                manifest: d.clone(),
            });
        }
        info.artifact_type = Some(parsed.artifact_type);
        Ok(Some(info))
    }

    async fn referrers(
        &mut self,
        repo: &str,
        manifests: &HashMap<Digest, ManifestInfo>,
    ) -> Result<()> {
        let prefix = format!("{}/_referrers", layout::repository(repo));
        for subject in self.digests_under(&prefix).await? {
            let dir = layout::referrers(repo, &subject);
            for entry in self.list(&dir).await? {
                let key = format!("{dir}/{entry}");
                let parsed = entry
                    .split_once('-')
                    .and_then(|(alg, hex)| Digest::parse(&format!("{alg}:{hex}")).ok());
                let Some(referrer) = parsed else {
                    self.stray(key, "not named <alg>-<hex>");
                    continue;
                };
                let Some(raw) = self.get(&key).await? else {
                    continue;
                };
                let unreadable = |error: String| Problem::ReferrerUnreadable {
                    repository: repo.to_string(),
                    subject: subject.clone(),
                    referrer: referrer.clone(),
                    error,
                };
                let desc: ReferrerDescriptor = match serde_json::from_slice(&raw) {
                    Ok(d) => d,
                    Err(e) => {
                        self.problem(unreadable(e.to_string()));
                        continue;
                    }
                };
                let info = manifests
                    .get(&referrer)
                    .filter(|i| i.meta.subject.as_deref() == Some(subject.to_string().as_str()));
                let Some(info) = info else {
                    self.problem(Problem::ReferrerDangling {
                        repository: repo.to_string(),
                        subject: subject.clone(),
                        referrer,
                    });
                    continue;
                };
                let mut fields = vec![
                    ("digest", desc.digest.clone(), referrer.to_string()),
                    (
                        "mediaType",
                        desc.media_type.clone(),
                        info.meta.media_type.clone(),
                    ),
                    ("size", desc.size.to_string(), info.meta.size.to_string()),
                ];
                if let Some(at) = &info.artifact_type {
                    fields.push((
                        "artifactType",
                        format!("{:?}", desc.artifact_type),
                        format!("{at:?}"),
                    ));
                }
                for (field, entry, manifest) in fields {
                    if entry != manifest {
                        self.problem(Problem::ReferrerMismatch {
                            repository: repo.to_string(),
                            subject: subject.clone(),
                            referrer: referrer.clone(),
                            field,
                            entry,
                            manifest,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    async fn catalog(&mut self, repositories: &[String]) -> Result<()> {
        let mut listed = BTreeSet::new();
        for entry in self.list(layout::CATALOG).await? {
            let name = layout::catalog_name(&entry);
            if validate_repository(&name).is_err() {
                self.stray(
                    format!("{}/{entry}", layout::CATALOG),
                    "not a repository name",
                );
                continue;
            }
            listed.insert(name);
        }
        for r in repositories {
            if !listed.remove(r) {
                self.problem(Problem::CatalogMissing {
                    repository: r.clone(),
                });
            }
        }
        for r in listed {
            self.problem(Problem::CatalogStray { repository: r });
        }
        Ok(())
    }

    /// How long ago `key` was last written, or None when it does not exist.
    async fn age(&self, key: &str) -> Result<Option<Duration>> {
        let m = self.backend.modified(key).await.map_err(io_at(key))?;
        Ok(m.map(|t| self.now.duration_since(t).unwrap_or_default()))
    }

    async fn uploads(&mut self) -> Result<()> {
        for id in self.list(layout::UPLOADS).await? {
            if uuid::Uuid::try_parse(&id).map(|u| u.hyphenated().to_string()) != Ok(id.clone()) {
                self.stray(layout::upload_dir(&id), "not an upload id");
                continue;
            }
            self.report.counts.uploads += 1;
            let data = self.age(&layout::upload_data(&id)).await?;
            let record = self.age(&layout::upload_repository(&id)).await?;
            // Ages: the youngest file says when the upload was last touched.
            let youngest = match (data, record) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(a) = youngest.or(self.age(&layout::upload_dir(&id)).await?) else {
                continue;
            };
            if a > UPLOAD_MAX_AGE {
                self.problem(Problem::UploadStale { id, age: a });
                continue;
            }
            let missing = match (data, record) {
                (None, _) => Some("data"),
                (_, None) => Some("repository"),
                _ => None,
            };
            if let Some(missing) = missing
                && a > UPLOAD_GRACE
            {
                self.problem(Problem::UploadIncomplete {
                    id,
                    missing,
                    age: a,
                });
            }
        }
        Ok(())
    }

    async fn temp_files(&mut self) -> Result<()> {
        for name in self.list(layout::TMP).await? {
            let key = format!("{}/{name}", layout::TMP);
            if let Some(a) = self.age(&key).await?
                && a > TEMP_MAX_AGE
            {
                self.problem(Problem::TempStale { key, age: a });
            }
        }
        Ok(())
    }
}
