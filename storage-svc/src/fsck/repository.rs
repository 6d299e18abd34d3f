//! One repository: tags, manifest records and what they reference, `_blobs` links, referrers.

use std::collections::HashMap;

use super::checker::Checker;
use super::{Problem, Result};
use crate::backend::Backend;
use crate::digest::Digest;
use crate::layout;
use crate::manifest::{self, Reference};
use crate::names::validate_tag;
use crate::store::{ManifestMeta, ReferrerDescriptor};

/// What the referrers check needs to know about a manifest.
struct ManifestInfo {
    meta: ManifestMeta,
    /// From the manifest's bytes; None when they could not be read or parsed.
    artifact_type: Option<Option<String>>,
}

impl<B: Backend> Checker<'_, B> {
    pub(super) async fn repository(&mut self, repo: &str) -> Result<()> {
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
        if let Some(recorded) = &info.meta.references {
            let mut recorded = recorded.clone();
            let mut parsed = parsed.reference_digests();
            recorded.sort();
            parsed.sort();
            if recorded != parsed {
                self.problem(Problem::ManifestReferencesMismatch {
                    repository: repository.clone(),
                    digest: d.clone(),
                });
            }
        }
        // A cached manifest's blobs and children are filled when clients ask for them.
        let cached = trow_proto::cache::is_cached(repo);
        for r in parsed.references.iter().filter(|_| !cached) {
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
}
