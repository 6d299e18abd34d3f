//! Manifests through the cache: a tag revalidated with one upstream `HEAD` (bounded by
//! `revalidate_timeout`), a cached manifest with the digest the upstream names served as is;
//! digests cached never touch the upstream; a manifest fetched by digest goes through a fill,
//! so however many clients and replicas ask at once, the upstream is asked once; when the
//! upstream fails, the cached copy of the tag is served (`STALE`).

use bytes::{Bytes, BytesMut};
use reqwest::Method;
use reqwest::header::{self, HeaderMap, HeaderValue};
use sha2::Digest as _;
use tonic::{Code, Status};
use trow_proto::oci_code::{self, ErrorCode};
use trow_proto::proxy::{self as pb, CacheStatus};
use trow_proto::storage as st;
use trow_proto::transport::MAX_MANIFEST_SIZE;

use crate::fill::Filler;
use crate::reference::Target;
use crate::service::{ProxyService, RESUMES, header_str, upstream_status};
use crate::upstream::{MANIFEST_TYPES, UpstreamError, read_limited};

impl ProxyService {
    async fn cached_manifest(&self, repo: &str, reference: &str) -> Result<st::Manifest, Status> {
        let m = self
            .storage
            .clone()
            .get_manifest(st::ManifestRef {
                repository: repo.to_string(),
                reference: reference.to_string(),
            })
            .await?;
        Ok(m.into_inner())
    }

    /// The upstream's current digest for a tag, by `HEAD`; None when it does not say.
    async fn head_manifest(
        &self,
        t: &Target,
        reference: &str,
        accept: &HeaderMap,
    ) -> Result<Option<String>, UpstreamError> {
        let resp = self
            .upstreams
            .send(
                t,
                Method::HEAD,
                &format!("manifests/{reference}"),
                accept.clone(),
                Some(self.revalidate_timeout),
            )
            .await?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// Fetches a manifest and caches it (tagged when `reference` is a tag). By digest, through a
    /// fill: however many clients and replicas ask at once, the upstream is asked once. When
    /// that one fetch fails, the requests that followed it get its failure (when it failed in
    /// this process) or make one fetch of their own (when another replica's fill failed): one
    /// upstream GET per fill attempt, never a loop of them.
    async fn fetch_manifest(
        &self,
        t: &Target,
        reference: &str,
        accept: &HeaderMap,
    ) -> Result<st::Manifest, Status> {
        if !reference.contains(':') {
            let (content, content_type) = self.download_manifest(t, reference, accept).await?;
            return self
                .store_manifest(t, reference, content_type, content)
                .await;
        }
        use st::fill_state::Role;
        let mut attempts = 0;
        let key = format!("{}@{reference}", t.cache_repository);
        loop {
            let joined = std::time::Instant::now();
            let state = self
                .storage
                .clone()
                .begin_fill(st::BeginFillRequest {
                    repository: t.cache_repository.clone(),
                    digest: reference.to_string(),
                })
                .await?
                .into_inner();
            if state.role() == Role::Filler {
                let filler = Filler {
                    audit: self.audit.clone(),
                    upstreams: self.upstreams.clone(),
                    storage: self.storage.clone(),
                    target: t.clone(),
                    digest: reference.to_string(),
                    upload_id: state.upload_id,
                    offset: state.offset,
                };
                let (content, content_type) =
                    match self.download_manifest(t, reference, accept).await {
                        Ok(m) => m,
                        Err(s) => {
                            // Recorded before the cancel ends the followers' reads.
                            self.failures.record(&key, &s);
                            filler.cancel().await;
                            return Err(s);
                        }
                    };
                filler.store_bytes(content.clone()).await?;
                return self
                    .store_manifest(t, reference, content_type, content)
                    .await;
            }
            match self.read_whole_fill(t, reference).await {
                Ok(content) => {
                    return self
                        .store_manifest(t, reference, String::new(), content)
                        .await;
                }
                Err(s) if s.code() == Code::Aborted => {
                    if let Some(failure) = self.failures.since(&key, joined) {
                        return Err(failure);
                    }
                    if attempts == RESUMES {
                        return Err(oci_code::upstream_failed(format!(
                            "upstream {}: the fetch of manifest {reference} failed",
                            t.upstream.host
                        )));
                    }
                    attempts += 1;
                }
                Err(s) => return Err(s),
            }
        }
    }

    /// A fill's bytes, whole (a manifest: at most 4 MiB).
    async fn read_whole_fill(&self, t: &Target, digest: &str) -> Result<Bytes, Status> {
        let mut stream = self
            .storage
            .clone()
            .read_fill(st::ReadBlobRequest {
                repository: t.cache_repository.clone(),
                digest: digest.to_string(),
                offset: 0,
                length: 0,
            })
            .await?
            .into_inner();
        let mut out = BytesMut::new();
        while let Some(part) = stream.message().await? {
            match part.part {
                Some(st::fill_part::Part::Data(d)) => out.extend_from_slice(&d),
                Some(st::fill_part::Part::Header(h)) if h.size > MAX_MANIFEST_SIZE as u64 => {
                    return Err(oci_code::status(
                        Code::InvalidArgument,
                        ErrorCode::ManifestInvalid,
                        "manifest too large",
                    ));
                }
                _ => {}
            }
        }
        Ok(out.freeze())
    }

    /// GETs a manifest from the upstream and checks it hashes to its digest (the one asked
    /// for, else the one the upstream names). Returns its bytes and Content-Type. The whole
    /// exchange (token request, headers, body) has `fetch_timeout`; when it runs out, or when
    /// the caller goes away, the request is dropped with its connection.
    #[tracing::instrument(level = "debug", name = "proxy.manifest.download", skip_all,
        fields(upstream = %t.upstream.host, reference = %reference))]
    async fn download_manifest(
        &self,
        t: &Target,
        reference: &str,
        accept: &HeaderMap,
    ) -> Result<(Bytes, String), Status> {
        let host = &t.upstream.host;
        let exchange = async {
            let resp = self
                .upstreams
                .send(
                    t,
                    Method::GET,
                    &format!("manifests/{reference}"),
                    accept.clone(),
                    None,
                )
                .await?;
            let content_type = header_str(resp.headers(), header::CONTENT_TYPE);
            let claimed = header_str(resp.headers(), "docker-content-digest");
            let content = read_limited(host, resp, MAX_MANIFEST_SIZE, "manifest").await?;
            Ok((content_type, claimed, content))
        };
        let (content_type, claimed, content) = tokio::time::timeout(self.fetch_timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(UpstreamError::Timeout { host: host.clone() }))
            .map_err(|e| upstream_status(&e, ErrorCode::ManifestUnknown))?;
        let expected = if reference.contains(':') {
            Some(reference.to_string())
        } else {
            (!claimed.is_empty()).then_some(claimed)
        };
        if let Some(expected) = &expected
            && !digest_matches(expected, &content)
        {
            tracing::warn!(upstream = %host, repository = %t.repository, %reference,
                "upstream sent a manifest whose bytes do not match its digest {expected}");
            return Err(oci_code::upstream_failed(format!(
                "{host} sent a manifest whose bytes do not match its digest"
            )));
        }
        // On record once its bytes are known good: a fetch that lied is a failure, not a fetch.
        self.audit.fetched(
            t,
            reference,
            expected.as_deref().unwrap_or_default(),
            content.len() as u64,
            "manifest",
        );
        Ok((content, content_type))
    }

    /// Caches a manifest under `reference` and answers with it.
    async fn store_manifest(
        &self,
        t: &Target,
        reference: &str,
        content_type: String,
        content: Bytes,
    ) -> Result<st::Manifest, Status> {
        self.storage
            .clone()
            .put_manifest(st::PutManifestRequest {
                repository: t.cache_repository.clone(),
                reference: reference.to_string(),
                content_type,
                content: content.clone(),
                cached: true,
            })
            .await?;
        let info = self
            .storage
            .clone()
            .stat_manifest(st::ManifestRef {
                repository: t.cache_repository.clone(),
                reference: reference.to_string(),
            })
            .await?
            .into_inner();
        Ok(st::Manifest {
            info: Some(info),
            content,
        })
    }

    /// A tag whose upstream digest is `digest`: the cached manifest of that digest, tagged here
    /// too (the tag may have moved upstream to a manifest cached under another tag).
    async fn cached_as(
        &self,
        t: &Target,
        tag: &str,
        digest: &str,
    ) -> Result<Option<st::Manifest>, Status> {
        let repo = &t.cache_repository;
        let m = match self.cached_manifest(repo, digest).await {
            Ok(m) => m,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(s),
        };
        let tagged = self.cached_manifest(repo, tag).await.ok();
        if tagged.and_then(|m| m.info).map(|i| i.digest).as_deref() != Some(digest) {
            let media_type = m.info.as_ref().map(|i| i.media_type.clone());
            self.storage
                .clone()
                .put_manifest(st::PutManifestRequest {
                    repository: repo.clone(),
                    reference: tag.to_string(),
                    content_type: media_type.unwrap_or_default(),
                    content: m.content.clone(),
                    cached: true,
                })
                .await?;
        }
        Ok(Some(m))
    }

    pub(crate) async fn manifest(
        &self,
        r: &pb::ManifestRequest,
    ) -> Result<(st::Manifest, CacheStatus), Status> {
        let t = self.target_at(&r.registry, &r.repository, Some(&r.reference))?;
        let answer = self.manifest_of(&t, r).await;
        if let Ok((_, cache)) = &answer {
            crate::metrics::cache(&t, "manifest", *cache);
        }
        answer
    }

    async fn manifest_of(
        &self,
        t: &Target,
        r: &pb::ManifestRequest,
    ) -> Result<(st::Manifest, CacheStatus), Status> {
        let repo = &t.cache_repository;
        let accept = accept_headers();
        let by_digest = r.reference.contains(':');
        if by_digest {
            match self.cached_manifest(repo, &r.reference).await {
                Ok(m) => return Ok((m, CacheStatus::Hit)),
                Err(s) if s.code() != Code::NotFound || self.offline => return Err(s),
                Err(_) => {}
            }
            let m = self.fetch_manifest(t, &r.reference, &accept).await?;
            return Ok((m, CacheStatus::Miss));
        }
        if self.offline {
            return Ok((
                self.cached_manifest(repo, &r.reference).await?,
                CacheStatus::Hit,
            ));
        }
        let failure = match self.head_manifest(t, &r.reference, &accept).await {
            Ok(Some(digest)) => {
                if let Some(m) = self.cached_as(t, &r.reference, &digest).await? {
                    return Ok((m, CacheStatus::Revalidated));
                }
                match self.fetch_manifest(t, &digest, &accept).await {
                    Ok(_) => {}
                    Err(s) => return self.stale_or(t, &r.reference, s).await,
                }
                let m = self
                    .cached_as(t, &r.reference, &digest)
                    .await?
                    .ok_or_else(|| Status::internal("cached manifest vanished"))?;
                return Ok((m, CacheStatus::Miss));
            }
            Ok(None) => match self.fetch_manifest(t, &r.reference, &accept).await {
                Ok(m) => return Ok((m, CacheStatus::Miss)),
                Err(s) => s,
            },
            Err(e @ UpstreamError::NotFound { .. }) => {
                return Err(oci_code::status(
                    Code::NotFound,
                    ErrorCode::ManifestUnknown,
                    e.to_string(),
                ));
            }
            Err(e) => upstream_status(&e, ErrorCode::ManifestUnknown),
        };
        self.stale_or(t, &r.reference, failure).await
    }

    /// The digest a cached tag names and the one its upstream names now (empty: unknown).
    pub(crate) async fn tag_status(
        &self,
        r: &pb::CheckTagRequest,
    ) -> Result<pb::CheckTagReply, Status> {
        let rest = r.repository.strip_prefix("f/").ok_or_else(|| {
            oci_code::status(
                Code::InvalidArgument,
                ErrorCode::NameInvalid,
                "not a cached repository",
            )
        })?;
        let (registry, repository) = rest.split_once('/').ok_or_else(|| {
            oci_code::status(
                Code::InvalidArgument,
                ErrorCode::NameInvalid,
                "no repository",
            )
        })?;
        let t = self.target_at(registry, repository, Some(&r.tag))?;
        let cached = match self.cached_manifest(&t.cache_repository, &r.tag).await {
            Ok(m) => m.info.map(|i| i.digest).unwrap_or_default(),
            Err(s) if s.code() == Code::NotFound => String::new(),
            Err(s) => return Err(s),
        };
        let upstream = if self.offline {
            String::new()
        } else {
            match self.head_manifest(&t, &r.tag, &accept_headers()).await {
                Ok(d) => d.unwrap_or_default(),
                Err(e) => {
                    tracing::debug!(upstream = %t.upstream.host, error = %e,
                        "checking a tag upstream failed");
                    String::new()
                }
            }
        };
        Ok(pb::CheckTagReply {
            cached_digest: cached,
            upstream_digest: upstream,
        })
    }

    /// The cached copy of a tag when the upstream failed with `failure`; else the failure.
    async fn stale_or(
        &self,
        t: &Target,
        tag: &str,
        failure: Status,
    ) -> Result<(st::Manifest, CacheStatus), Status> {
        match self.cached_manifest(&t.cache_repository, tag).await {
            Ok(m) => {
                tracing::warn!(upstream = %t.upstream.host, repository = %t.repository, %tag,
                    failure = %failure.message(), "upstream failed: serving the cached manifest");
                let digest = m
                    .info
                    .as_ref()
                    .map(|i| i.digest.clone())
                    .unwrap_or_default();
                self.audit.stale(t, tag, &digest, failure.message());
                Ok((m, CacheStatus::Stale))
            }
            Err(_) => Err(failure),
        }
    }
}

/// Every manifest type Trow stores: an upstream that converts for older clients (distribution
/// turns a schema 2 manifest into schema 1 for `Accept: */*`) must send the original.
fn accept_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT,
        HeaderValue::from_str(&MANIFEST_TYPES.join(", ")).expect("valid header"),
    );
    h
}

/// Whether `content` hashes to `digest` (`sha256:` or `sha512:`).
fn digest_matches(digest: &str, content: &[u8]) -> bool {
    match digest.split_once(':') {
        Some(("sha256", hex)) => hex::encode(sha2::Sha256::digest(content)) == hex,
        Some(("sha512", hex)) => hex::encode(sha2::Sha512::digest(content)) == hex,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert!(digest_matches(
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            b"hello"
        ));
        assert!(!digest_matches("sha256:00", b"hello"));
        assert!(!digest_matches(
            "md5:5d41402abc4b2a76b9719d911017c592",
            b"hello"
        ));
    }
}
