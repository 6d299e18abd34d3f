//! The proxy's decisions: when to ask the upstream, what to cache, what to serve when the
//! upstream fails.
//!
//! - A tag is revalidated with one upstream `HEAD` (bounded by `revalidate_timeout`): a cached
//!   manifest with the digest the upstream names is served as is.
//! - Digests (manifests and blobs) that are cached never touch the upstream.
//! - A blob that is not cached is filled through storage (see `BeginFill` in storage.proto): one
//!   fetch per blob however many clients and replicas ask; every client reads the fill back as
//!   it grows, so the first byte does not wait for the layer, and a slow client slows nobody.
//! - When the upstream fails, the cached copy is served (`STALE`) with a warning naming the
//!   upstream; with nothing cached the client gets an error naming the upstream failure.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use sha2::Digest as _;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use trow_proto::oci_code::{self, ErrorCode};
use trow_proto::proxy::{self as pb, CacheStatus, proxy_server::Proxy};
use trow_proto::storage::{self as st, storage_client::StorageClient};
use trow_proto::transport::{MAX_MANIFEST_SIZE, READ_CHUNK_SIZE};

use crate::config::ProxyConfig;
use crate::failures::Failures;
use crate::policy::Enforcer;
use crate::reference::{ResolveError, Resolver, Target};
use crate::size;
use crate::upstream::{MANIFEST_TYPES, UpstreamError, Upstreams, min_rate, read_limited};

pub struct ProxyService {
    resolver: Resolver,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) storage: StorageClient<Channel>,
    pub(crate) offline: bool,
    pub(crate) revalidate_timeout: Duration,
    /// Bound on a manifest download and on a tag list, whole.
    pub(crate) fetch_timeout: Duration,
    /// Manifest fills that failed here lately, for the requests that were following them.
    failures: Failures,
    policy: Option<Enforcer>,
    /// Blobs announced bigger are refused (`registry_proxies.max_blob_size`).
    max_blob_size: Option<u64>,
}

impl ProxyService {
    pub fn new(cfg: &ProxyConfig, storage: StorageClient<Channel>) -> Result<ProxyService, String> {
        Ok(ProxyService {
            resolver: Resolver::new(cfg),
            upstreams: Arc::new(Upstreams::new(cfg)?),
            storage,
            offline: cfg.offline,
            revalidate_timeout: cfg.revalidate_timeout,
            fetch_timeout: cfg.fetch_timeout,
            failures: Failures::default(),
            policy: None,
            max_blob_size: cfg.max_blob_size,
        })
    }

    /// `registry` as the gateway got it: the first segment after `f/`, or the `ns` parameter.
    /// Judged by the validation policy (no tag: blobs, tag lists) before anything is read.
    pub(crate) fn target(&self, registry: &str, repository: &str) -> Result<Target, Status> {
        self.target_at(registry, repository, None)
    }

    /// As [`ProxyService::target`], for a manifest request's `reference` (tag or digest).
    pub(crate) fn target_at(
        &self,
        registry: &str,
        repository: &str,
        reference: Option<&str>,
    ) -> Result<Target, Status> {
        let resolved = if registry.contains(':') || registry.starts_with('[') {
            self.resolver.resolve_ns(registry, repository)
        } else {
            self.resolver
                .resolve_path(&format!("{registry}/{repository}"))
        };
        let t = resolved.map_err(resolve_status)?;
        if let Some(policy) = &self.policy {
            policy
                .judge(&self.resolver, registry, &t, reference)
                .map_err(|e| {
                    oci_code::status(Code::PermissionDenied, ErrorCode::Denied, e.to_string())
                })?;
        }
        Ok(t)
    }

    /// Enforces `image_validation` (see [`crate::policy`]); `None`: every image is served.
    pub fn with_policy(self, policy: Option<Enforcer>) -> ProxyService {
        ProxyService { policy, ..self }
    }

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
        let repo = &t.cache_repository;
        let accept = accept_headers();
        let by_digest = r.reference.contains(':');
        if by_digest {
            match self.cached_manifest(repo, &r.reference).await {
                Ok(m) => return Ok((m, CacheStatus::Hit)),
                Err(s) if s.code() != Code::NotFound || self.offline => return Err(s),
                Err(_) => {}
            }
            let m = self.fetch_manifest(&t, &r.reference, &accept).await?;
            return Ok((m, CacheStatus::Miss));
        }
        if self.offline {
            return Ok((
                self.cached_manifest(repo, &r.reference).await?,
                CacheStatus::Hit,
            ));
        }
        let failure = match self.head_manifest(&t, &r.reference, &accept).await {
            Ok(Some(digest)) => {
                if let Some(m) = self.cached_as(&t, &r.reference, &digest).await? {
                    return Ok((m, CacheStatus::Revalidated));
                }
                match self.fetch_manifest(&t, &digest, &accept).await {
                    Ok(_) => {}
                    Err(s) => return self.stale_or(&t, &r.reference, s).await,
                }
                let m = self
                    .cached_as(&t, &r.reference, &digest)
                    .await?
                    .ok_or_else(|| Status::internal("cached manifest vanished"))?;
                return Ok((m, CacheStatus::Miss));
            }
            Ok(None) => match self.fetch_manifest(&t, &r.reference, &accept).await {
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
        self.stale_or(&t, &r.reference, failure).await
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
                Ok((m, CacheStatus::Stale))
            }
            Err(_) => Err(failure),
        }
    }

    /// Starts filling a blob when this caller is to fill it; says whether it was cached.
    pub(crate) async fn join_fill(&self, t: &Target, digest: &str) -> Result<bool, Status> {
        use st::fill_state::Role;
        if self.offline {
            return Ok(true);
        }
        let state = self
            .storage
            .clone()
            .begin_fill(st::BeginFillRequest {
                repository: t.cache_repository.clone(),
                digest: digest.to_string(),
            })
            .await?
            .into_inner();
        match state.role() {
            Role::Present => Ok(true),
            Role::Follower => Ok(false),
            Role::Filler => {
                let filler = Filler {
                    upstreams: self.upstreams.clone(),
                    storage: self.storage.clone(),
                    target: t.clone(),
                    digest: digest.to_string(),
                    upload_id: state.upload_id,
                    offset: state.offset,
                };
                filler.start(self.max_blob_size).await?;
                Ok(false)
            }
            Role::Unspecified => Err(Status::internal("storage answered no fill role")),
        }
    }
}

/// One blob fetched from its upstream into storage, detached from the client that asked: a
/// client that goes away does not cut the fill the next client will want.
struct Filler {
    upstreams: Arc<Upstreams>,
    storage: StorageClient<Channel>,
    target: Target,
    digest: String,
    upload_id: String,
    offset: u64,
}

impl Filler {
    /// Asks the upstream for the blob (from the fill's offset); once it answers, the bytes go
    /// into storage in the background. An upstream that fails before sending anything, or
    /// announces a blob over `max_blob_size`, ends the fill at once (nothing was stored), so its
    /// readers fail fast, and the failure goes to the caller.
    async fn start(self, max_blob_size: Option<u64>) -> Result<(), Status> {
        let t = &self.target;
        let mut headers = HeaderMap::new();
        if self.offset > 0 {
            headers.insert(
                header::RANGE,
                HeaderValue::from_str(&format!("bytes={}-", self.offset)).expect("range"),
            );
        }
        let sent = self
            .upstreams
            .send(
                t,
                Method::GET,
                &format!("blobs/{}", self.digest),
                headers,
                None,
            )
            .await;
        let resp = match sent {
            Ok(r) if r.content_length().is_some() => r,
            Ok(_) => {
                self.cancel().await;
                return Err(oci_code::upstream_failed(format!(
                    "upstream {} did not say the blob's size",
                    t.upstream.host
                )));
            }
            Err(e) => {
                self.cancel().await;
                tracing::warn!(upstream = %t.upstream.host, digest = %self.digest, error = %e,
                    "fetching a blob failed");
                return Err(upstream_status(&e, ErrorCode::BlobUnknown));
            }
        };
        let (total, _) = self.extent(&resp);
        if let Err(s) = within_cap(&t.upstream.host, &self.digest, total, max_blob_size) {
            self.cancel().await;
            tracing::warn!(upstream = %t.upstream.host, digest = %self.digest, total,
                "refused a blob over max_blob_size");
            return Err(s);
        }
        tokio::spawn(async move {
            if let Err(e) = self.store(resp).await {
                tracing::warn!(upstream = %self.target.upstream.host, digest = %self.digest,
                    error = %e, "filling a blob failed");
            }
        });
        Ok(())
    }

    /// The blob's whole size as the upstream's answer announces it, and how many bytes of the
    /// answer to skip (an upstream that ignores the Range sends everything: what is stored).
    fn extent(&self, resp: &reqwest::Response) -> (u64, u64) {
        let len = resp.content_length().unwrap_or(0);
        if resp.status() == StatusCode::PARTIAL_CONTENT {
            (self.offset + len, 0)
        } else {
            (len, self.offset)
        }
    }

    /// Appends the upstream's bytes to the fill and completes it (verifying the digest).
    ///
    /// What becomes of the stored bytes when this fails: an upstream that broke off leaves them
    /// for the next filler to take over (storage drops the fill if nobody does, see `fills.rs`
    /// in storage); an upstream that ended cleanly short of what it announced failed for good,
    /// so the fill is cancelled and its bytes go at once; storage itself refuses bytes past the
    /// announced size, and bytes that do not match the digest, and drops those fills.
    async fn store(&self, resp: reqwest::Response) -> Result<(), String> {
        let t = &self.target;
        let (total, mut skip) = self.extent(&resp);
        let header = st::AppendUploadRequest {
            part: Some(st::append_upload_request::Part::Header(st::AppendHeader {
                repository: t.cache_repository.clone(),
                upload_id: self.upload_id.clone(),
                offset: Some(self.offset),
                fill_size: Some(total),
            })),
        };
        let window = self.upstreams.fetch_timeout();
        let body = min_rate(resp.bytes_stream(), t.upstream.host.clone(), window);
        let body = body.filter_map(move |c| {
            let out = match c {
                Ok(mut b) if skip > 0 => {
                    let n = (skip as usize).min(b.len());
                    skip -= n as u64;
                    let _ = b.split_to(n);
                    (!b.is_empty()).then_some(Ok(b))
                }
                other => Some(other),
            };
            std::future::ready(out)
        });
        let host = t.upstream.host.clone();
        let data = regroup(body).map(move |c| match c {
            Ok(data) => st::AppendUploadRequest {
                part: Some(st::append_upload_request::Part::Data(data)),
            },
            // Ends the append: the bytes so far stay, and a reader that finds the fill stalled
            // takes it over from there.
            Err(e) => {
                tracing::warn!(upstream = %host, error = %e, "upstream blob download broke off");
                st::AppendUploadRequest { part: None }
            }
        });
        let requests = futures::stream::once(async { header }).chain(data);
        let appended = self
            .storage
            .clone()
            .append_upload(requests)
            .await
            .map_err(|s| format!("storing the fetched bytes: {}", s.message()))?
            .into_inner();
        if appended.size != total {
            self.cancel().await;
            return Err(format!(
                "upstream sent {} of {total} bytes; the fill is dropped",
                appended.size
            ));
        }
        match self
            .storage
            .clone()
            .complete_upload(st::CompleteUploadRequest {
                repository: t.cache_repository.clone(),
                upload_id: self.upload_id.clone(),
                digest: self.digest.clone(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if oci_code::of(&s) == Some(ErrorCode::DigestInvalid) => Err(format!(
                "the upstream sent bytes that do not match the digest ({}); nothing was cached",
                s.message()
            )),
            Err(s) => Err(format!("committing the blob: {}", s.message())),
        }
    }

    /// Fills with bytes already in hand (a manifest), from the fill's offset on.
    async fn store_bytes(&self, content: Bytes) -> Result<(), Status> {
        let t = &self.target;
        let rest = content.slice((self.offset as usize).min(content.len())..);
        let header = st::AppendUploadRequest {
            part: Some(st::append_upload_request::Part::Header(st::AppendHeader {
                repository: t.cache_repository.clone(),
                upload_id: self.upload_id.clone(),
                offset: Some(self.offset),
                fill_size: Some(content.len() as u64),
            })),
        };
        let data = st::AppendUploadRequest {
            part: Some(st::append_upload_request::Part::Data(rest)),
        };
        self.storage
            .clone()
            .append_upload(futures::stream::iter([header, data]))
            .await?;
        self.storage
            .clone()
            .complete_upload(st::CompleteUploadRequest {
                repository: t.cache_repository.clone(),
                upload_id: self.upload_id.clone(),
                digest: self.digest.clone(),
            })
            .await?;
        Ok(())
    }

    async fn cancel(&self) {
        let _ = self
            .storage
            .clone()
            .cancel_upload(st::UploadRef {
                repository: self.target.cache_repository.clone(),
                upload_id: self.upload_id.clone(),
            })
            .await;
    }
}

/// Upstream bodies arrive in small pieces; storage flushes each chunk of a fill for its
/// readers, so the pieces that are ready are gathered into chunks of up to 256 KiB.
///
/// At most one chunk (plus the piece that completes it) is held: a chunk goes out before the
/// next piece is read, so an upstream faster than storage waits on storage (the gRPC stream's
/// flow control stops polling this stream) instead of piling its bytes up here. Bytes that
/// arrived before an error go out before it: they are good, and a take-over resumes after them.
fn regroup<S>(body: S) -> impl Stream<Item = reqwest::Result<Bytes>>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    enum State<S> {
        Reading(std::pin::Pin<Box<S>>, BytesMut),
        Failed(reqwest::Error),
        Done,
    }
    futures::stream::unfold(
        State::Reading(Box::pin(body), BytesMut::new()),
        |state| async move {
            let (mut body, mut buf) = match state {
                State::Reading(body, buf) => (body, buf),
                State::Failed(e) => return Some((Err(e), State::Done)),
                State::Done => return None,
            };
            loop {
                if buf.len() >= READ_CHUNK_SIZE {
                    let out = buf.split_to(READ_CHUNK_SIZE).freeze();
                    return Some((Ok(out), State::Reading(body, buf)));
                }
                // With bytes in hand, take only pieces that are ready: when the upstream
                // pauses, what came goes to storage (and to the fill's readers) now.
                let next = if buf.is_empty() {
                    body.next().await
                } else {
                    match futures::FutureExt::now_or_never(body.next()) {
                        Some(next) => next,
                        None => {
                            let out = buf.split().freeze();
                            return Some((Ok(out), State::Reading(body, buf)));
                        }
                    }
                };
                match next {
                    Some(Ok(piece)) => buf.extend_from_slice(&piece),
                    Some(Err(e)) if buf.is_empty() => return Some((Err(e), State::Done)),
                    Some(Err(e)) => return Some((Ok(buf.split().freeze()), State::Failed(e))),
                    None if buf.is_empty() => return None,
                    None => return Some((Ok(buf.split().freeze()), State::Done)),
                }
            }
        },
    )
}

/// Refuses a blob the upstream announces as `size` bytes when that is over the cap.
fn within_cap(host: &str, digest: &str, size: u64, cap: Option<u64>) -> Result<(), Status> {
    match cap {
        Some(cap) if size > cap => Err(oci_code::upstream_failed(format!(
            "upstream {host} announced blob {digest} as {size} bytes ({}), over \
             registry_proxies.max_blob_size ({})",
            size::show(size),
            size::show(cap)
        ))),
        _ => Ok(()),
    }
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
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

fn resolve_status(e: ResolveError) -> Status {
    let code = match e {
        ResolveError::NotConfigured(_) => ErrorCode::Denied,
        _ => ErrorCode::NameInvalid,
    };
    let grpc = if code == ErrorCode::Denied {
        Code::PermissionDenied
    } else {
        Code::InvalidArgument
    };
    oci_code::status(grpc, code, e.to_string())
}

/// An upstream failure as the client is to see it (see proxy.proto); `not_found` is the code
/// of what was asked for.
pub(crate) fn upstream_status(e: &UpstreamError, not_found: ErrorCode) -> Status {
    match e {
        UpstreamError::Refused(m) => oci_code::status(Code::PermissionDenied, ErrorCode::Denied, m),
        UpstreamError::NotFound { .. } => {
            oci_code::status(Code::NotFound, not_found, e.to_string())
        }
        e => oci_code::upstream_failed(format!("upstream {e}")),
    }
}

#[tonic::async_trait]
impl Proxy for ProxyService {
    async fn get_manifest(
        &self,
        req: Request<pb::ManifestRequest>,
    ) -> Result<Response<pb::Manifest>, Status> {
        let r = req.into_inner();
        let (m, cache) = self.manifest(&r).await?;
        let info = m.info.unwrap_or_default();
        Ok(Response::new(pb::Manifest {
            digest: info.digest,
            media_type: info.media_type,
            size: info.size,
            content: if r.head { Bytes::new() } else { m.content },
            cache: cache.into(),
        }))
    }

    async fn stat_blob(
        &self,
        req: Request<pb::BlobRequest>,
    ) -> Result<Response<pb::BlobHeader>, Status> {
        let r = req.into_inner();
        let t = self.target(&r.registry, &r.repository)?;
        let cached = self
            .storage
            .clone()
            .stat_blob(st::BlobRef {
                repository: t.cache_repository.clone(),
                digest: r.digest.clone(),
            })
            .await;
        match cached {
            Ok(b) => {
                return Ok(Response::new(pb::BlobHeader {
                    size: b.into_inner().size,
                    cache: CacheStatus::Hit.into(),
                }));
            }
            Err(s) if s.code() != Code::NotFound || self.offline => return Err(s),
            Err(_) => {}
        }
        let resp = self
            .upstreams
            .send(
                &t,
                Method::HEAD,
                &format!("blobs/{}", r.digest),
                HeaderMap::new(),
                None,
            )
            .await
            .map_err(|e| upstream_status(&e, ErrorCode::BlobUnknown))?;
        // Not `content_length()`: reqwest gives the body's length there, 0 for every HEAD.
        let size = header_str(resp.headers(), header::CONTENT_LENGTH)
            .parse::<u64>()
            .ok();
        let size = size.ok_or_else(|| {
            oci_code::upstream_failed(format!(
                "upstream {} did not say the blob's size",
                t.upstream.host
            ))
        })?;
        within_cap(&t.upstream.host, &r.digest, size, self.max_blob_size)?;
        Ok(Response::new(pb::BlobHeader {
            size,
            cache: CacheStatus::Miss.into(),
        }))
    }

    async fn open_blob(
        &self,
        req: Request<pb::BlobRequest>,
    ) -> Result<Response<pb::BlobSource>, Status> {
        let r = req.into_inner();
        let t = self.target(&r.registry, &r.repository)?;
        let cached = self.join_fill(&t, &r.digest).await?;
        Ok(Response::new(pb::BlobSource {
            repository: t.cache_repository,
            cache: if cached {
                CacheStatus::Hit
            } else {
                CacheStatus::Miss
            }
            .into(),
        }))
    }

    async fn list_tags(
        &self,
        req: Request<pb::TagsRequest>,
    ) -> Result<Response<pb::TagList>, Status> {
        Ok(Response::new(self.tags(&req.into_inner()).await?))
    }

    async fn warm(&self, req: Request<pb::WarmRequest>) -> Result<Response<pb::WarmReply>, Status> {
        let r = req.into_inner();
        if self.offline {
            return Err(oci_code::status(
                Code::FailedPrecondition,
                ErrorCode::Unsupported,
                "offline: nothing is fetched, so nothing can be warmed",
            ));
        }
        Ok(Response::new(self.warm_image(&r).await?))
    }
}

/// Times a warm picks a stalled fill up again before giving up.
pub(crate) const RESUMES: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream faster than storage: regroup reads at most one chunk ahead of what was
    /// taken from it, and keeps every byte in order.
    #[tokio::test]
    async fn regroup_reads_at_most_a_chunk_ahead() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        const PIECE: usize = 16 << 10;
        const PIECES: usize = 1000;
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = pulled.clone();
        let body = futures::stream::iter(0..PIECES).map(move |i| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, reqwest::Error>(Bytes::from(vec![(i % 251) as u8; PIECE]))
        });
        let mut chunks = Box::pin(regroup(body));
        let mut taken = 0;
        let mut expected = (0..PIECES).flat_map(|i| std::iter::repeat_n((i % 251) as u8, PIECE));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= READ_CHUNK_SIZE);
            taken += chunk.len();
            let ahead = pulled.load(Ordering::SeqCst) * PIECE - taken;
            assert!(ahead <= READ_CHUNK_SIZE, "{ahead} bytes read ahead");
            assert!(chunk.iter().all(|b| Some(*b) == expected.next()));
        }
        assert_eq!(taken, PIECE * PIECES);
    }

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
