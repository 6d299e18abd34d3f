//! The proxy's gRPC service: resolves what a client wrote to a target (judged by the
//! validation policy before anything is read), then answers from the cache or the upstream.
//! The decisions live beside it, one file per resource: [`crate::manifests`] (revalidate,
//! fetch, serve stale), [`crate::fill`] (blobs, one upstream fetch however many ask),
//! [`crate::tags`] and [`crate::warm`]. With nothing cached, an upstream failure reaches the
//! client as an error naming the upstream.

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};
use trow_proto::oci_code::{self, ErrorCode};
use trow_proto::proxy::{self as pb, CacheStatus, proxy_server::Proxy};
use trow_proto::storage::storage_client::StorageClient;
use trow_proto::trust::Channel;

use crate::config::ProxyConfig;
use crate::failures::Failures;
use crate::policy::Enforcer;
use crate::reference::{ResolveError, Resolver, Target};
use crate::upstream::{UpstreamError, Upstreams};

pub struct ProxyService {
    resolver: Resolver,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) storage: StorageClient<Channel>,
    pub(crate) offline: bool,
    pub(crate) revalidate_timeout: Duration,
    /// Bound on a manifest download and on a tag list, whole.
    pub(crate) fetch_timeout: Duration,
    /// Manifest fills that failed here lately, for the requests that were following them.
    pub(crate) failures: Failures,
    policy: Option<Enforcer>,
    /// Blobs announced bigger are refused (`registry_proxies.max_blob_size`).
    pub(crate) max_blob_size: Option<u64>,
    /// Where upstream fetches and stale serves are put on record (see [`crate::audit`]).
    pub(crate) audit: crate::audit::Audit,
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
            audit: crate::audit::Audit::default(),
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

    /// Puts upstream fetches and stale serves on record in the audit log of the storage
    /// service at `channel`.
    pub fn with_audit(self, channel: Channel) -> ProxyService {
        ProxyService {
            audit: crate::audit::Audit::new(channel),
            ..self
        }
    }

    /// Enforces `image_validation` (see [`crate::policy`]); `None`: every image is served.
    pub fn with_policy(self, policy: Option<Enforcer>) -> ProxyService {
        ProxyService { policy, ..self }
    }
}

pub(crate) fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
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

/// A call to storage that failed in transport (refused, reset, a connection that closed under
/// it) as the gateway is to see it: UNAVAILABLE, as the gateway's own storage calls are, and not
/// the UNKNOWN "transport error" or CANCELLED tonic may give it here, which would reach the
/// gateway as an internal error. tonic made such a status in this process, with the transport
/// error as its source; statuses storage sent, and this service's own, have none and pass as
/// they are.
fn unavailable(s: Status) -> Status {
    if std::error::Error::source(&s).is_some() {
        Status::unavailable(format!("storage: {}", s.message()))
    } else {
        s
    }
}

#[tonic::async_trait]
impl Proxy for ProxyService {
    async fn get_manifest(
        &self,
        req: Request<pb::ManifestRequest>,
    ) -> Result<Response<pb::Manifest>, Status> {
        let r = req.into_inner();
        let (m, cache) = self.manifest(&r).await.map_err(unavailable)?;
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
        let (size, cache) = self.blob_size(&t, &r.digest).await.map_err(unavailable)?;
        crate::metrics::cache(&t, "blob", cache);
        Ok(Response::new(pb::BlobHeader {
            size,
            cache: cache.into(),
        }))
    }

    async fn open_blob(
        &self,
        req: Request<pb::BlobRequest>,
    ) -> Result<Response<pb::BlobSource>, Status> {
        let r = req.into_inner();
        let t = self.target(&r.registry, &r.repository)?;
        let cached = self.join_fill(&t, &r.digest).await.map_err(unavailable)?;
        let cache = if cached {
            CacheStatus::Hit
        } else {
            CacheStatus::Miss
        };
        crate::metrics::cache(&t, "blob", cache);
        Ok(Response::new(pb::BlobSource {
            repository: t.cache_repository,
            cache: cache.into(),
        }))
    }

    async fn list_tags(
        &self,
        req: Request<pb::TagsRequest>,
    ) -> Result<Response<pb::TagList>, Status> {
        Ok(Response::new(
            self.tags(&req.into_inner()).await.map_err(unavailable)?,
        ))
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
        Ok(Response::new(
            self.warm_image(&r).await.map_err(unavailable)?,
        ))
    }

    async fn check_tag(
        &self,
        req: Request<pb::CheckTagRequest>,
    ) -> Result<Response<pb::CheckTagReply>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.tag_status(&r).await.map_err(unavailable)?,
        ))
    }
}

/// Times a warm picks a stalled fill up again before giving up.
pub(crate) const RESUMES: usize = 3;
