//! The walk over the store's layout: blobs, the repository tree, catalog, uploads, temp files.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind};
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::{FsckError, Problem, Report, Result, TMP_MAX_AGE, UPLOAD_GRACE};
use crate::backend::Backend;
use crate::digest::{Digest, Hasher};
use crate::layout;
use crate::names::validate_repository;
use crate::store::UPLOAD_MAX_AGE;

pub(super) struct Checker<'a, B> {
    backend: &'a B,
    now: SystemTime,
    pub(super) report: Report,
}

fn io_at(key: &str) -> impl FnOnce(io::Error) -> FsckError + '_ {
    move |source| FsckError::Io {
        key: key.to_string(),
        source,
    }
}

impl<'a, B: Backend> Checker<'a, B> {
    pub(super) fn new(backend: &'a B, now: SystemTime) -> Self {
        Checker {
            backend,
            now,
            report: Report::default(),
        }
    }

    pub(super) fn problem(&mut self, p: Problem) {
        self.report.problems.push(p);
    }

    pub(super) fn stray(&mut self, key: String, why: &str) {
        self.problem(Problem::Stray {
            key,
            why: why.to_string(),
        });
    }

    /// The names under `key`, which must be a directory (a prefix).
    pub(super) async fn list(&mut self, key: &str) -> Result<Vec<String>> {
        match self.backend.list(key).await {
            Ok(names) => Ok(names),
            Err(e) if e.kind() == ErrorKind::NotADirectory => {
                self.stray(key.to_string(), "a file where a directory belongs");
                Ok(Vec::new())
            }
            Err(e) => Err(io_at(key)(e)),
        }
    }

    pub(super) async fn size(&self, key: &str) -> Result<Option<u64>> {
        self.backend.size(key).await.map_err(io_at(key))
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key).await?.is_some())
    }

    /// A small object's bytes; None (with a problem) when it is a directory or unreadable.
    pub(super) async fn get(&mut self, key: &str) -> Result<Option<bytes::Bytes>> {
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
    pub(super) async fn digests_under(&mut self, prefix: &str) -> Result<Vec<Digest>> {
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

    pub(super) async fn blobs(&mut self) -> Result<()> {
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

    pub(super) async fn blob(&mut self, key: &str, d: &Digest) -> Result<()> {
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
    pub(super) async fn repositories(&mut self) -> Result<Vec<String>> {
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

    pub(super) async fn catalog(&mut self, repositories: &[String]) -> Result<()> {
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
    pub(super) async fn age(&self, key: &str) -> Result<Option<Duration>> {
        let m = self.backend.modified(key).await.map_err(io_at(key))?;
        Ok(m.map(|t| self.now.duration_since(t).unwrap_or_default()))
    }

    pub(super) async fn uploads(&mut self) -> Result<()> {
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

    pub(super) async fn temp_files(&mut self) -> Result<()> {
        for name in self.list(layout::TMP).await? {
            let key = format!("{}/{name}", layout::TMP);
            if let Some(a) = self.age(&key).await?
                && a > TMP_MAX_AGE
            {
                self.problem(Problem::TempStale { key, age: a });
            }
        }
        Ok(())
    }
}
