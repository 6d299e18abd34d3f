//! Reads of other registries, answered by the proxy service: `GET|HEAD` of manifests and blobs
//! and `GET` of tags under `/v2/f/<registry>/<repository>/...`, and the same reads of
//! `/v2/<repository>/...?ns=<registry>` (containerd's mirror form). Writes under `f/` are
//! refused: the cache holds copies of other registries, which only the proxy writes.
//!
//! Every answer says what the cache did in `Trow-Cache` (`hit`, `miss`, `revalidated`, `stale`);
//! answers to `?ns=` carry `OCI-Namespace`, as the distribution spec's proxying section asks.

use axum::body::Body;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tonic::Code;
use trow_proto::blob_body::{BlobBodyClient, FillBytes};
use trow_proto::proxy::{BlobRequest, CacheStatus, ManifestRequest, TagsRequest};
use trow_proto::storage as st;

use super::{DOCKER_CONTENT_DIGEST, Req, hv, next_link, page_params};
use crate::error::{Error, OciCode, Result};
use crate::proxy_pool::ProxyPool;

pub const TROW_CACHE: HeaderName = HeaderName::from_static("trow-cache");
pub const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");

/// Which upstream repository a request reads.
#[derive(Debug, PartialEq, Eq)]
pub struct Upstream {
    /// As the client wrote it: the segment after `f/`, or the `ns` parameter.
    pub registry: String,
    pub repository: String,
    /// Named by `?ns=`: the answer says `OCI-Namespace`.
    pub ns: bool,
}

impl Upstream {
    /// The upstream a request addresses, if any: a repository under `f/`, or an `ns` that is
    /// not this registry's own name.
    pub fn of(repo: &str, ns: Option<&str>, hostname: Option<&str>) -> Option<Upstream> {
        if trow_proto::cache::is_cached(repo) {
            let rest = &repo[trow_proto::cache::NAMESPACE.len() + 1..];
            let (registry, repository) = rest.split_once('/').unwrap_or((rest, ""));
            return Some(Upstream {
                registry: registry.to_string(),
                repository: repository.to_string(),
                ns: false,
            });
        }
        let ns = ns.filter(|ns| !ns.is_empty() && !is_hostname(ns, hostname))?;
        Some(Upstream {
            registry: ns.to_string(),
            repository: repo.to_string(),
            ns: true,
        })
    }
}

/// Whether `ns` names this registry: compared as canonical authorities (host case, default
/// port), as the proxy would compare them, so no spelling of Trow's own name is proxied.
fn is_hostname(ns: &str, hostname: Option<&str>) -> bool {
    use trow_names::Authority;
    hostname.is_some_and(|h| {
        ns == h || matches!((Authority::parse(ns), Authority::parse(h)), (Ok(a), Ok(b)) if a == b)
    })
}

/// Anything but a read of a manifest, blob or tag list with `?ns=` of another registry.
pub fn not_through_ns() -> Error {
    Error::new(
        OciCode::Denied,
        "only manifests, blobs and tags of another registry are read with ?ns=; \
         other requests name this registry's own repositories without it",
    )
}

/// Writes under `f/`.
pub fn denied() -> Error {
    Error::new(
        OciCode::Denied,
        "repositories under f/ are a read-only cache of other registries",
    )
}

fn client(r: &Req) -> Result<ProxyPool> {
    r.state.proxy.clone().ok_or_else(|| {
        Error::new(
            OciCode::Unsupported,
            "this registry does not proxy other registries",
        )
        .with_status(StatusCode::NOT_FOUND)
    })
}

fn cache_name(c: CacheStatus) -> &'static str {
    match c {
        CacheStatus::Hit => "hit",
        CacheStatus::Miss => "miss",
        CacheStatus::Revalidated => "revalidated",
        CacheStatus::Stale => "stale",
        CacheStatus::Unspecified => "unknown",
    }
}

fn answer(up: &Upstream, cache: CacheStatus) -> axum::http::response::Builder {
    let mut b = Response::builder().header(TROW_CACHE, cache_name(cache));
    if up.ns {
        b = b.header(OCI_NAMESPACE, hv(&up.registry));
    }
    b
}

pub async fn manifest(r: Req, up: Upstream, reference: String, head: bool) -> Result<Response> {
    let request = ManifestRequest {
        registry: up.registry.clone(),
        repository: up.repository.clone(),
        reference,
        head,
    };
    let m = client(&r)?
        .call(|mut c| {
            let request = request.clone();
            async move { c.get_manifest(request).await }
        })
        .await?
        .into_inner();
    if !super::manifests::accepts(&r.headers, &m.media_type) {
        return Err(Error::new(
            OciCode::ManifestUnknown,
            format!(
                "the manifest is {}, which the Accept header does not admit",
                m.media_type
            ),
        ));
    }
    let cache = m.cache();
    let body = if head {
        Body::empty()
    } else {
        Body::from(m.content)
    };
    Ok(answer(&up, cache)
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, hv(&m.media_type))
        .header(header::CONTENT_LENGTH, m.size)
        .header(DOCKER_CONTENT_DIGEST, hv(&m.digest))
        .body(body)
        .expect("valid response"))
}

pub async fn blob(r: Req, up: Upstream, digest: String, head: bool) -> Result<Response> {
    let proxy = client(&r)?;
    let request = || BlobRequest {
        registry: up.registry.clone(),
        repository: up.repository.clone(),
        digest: digest.clone(),
    };
    let range_header = r.headers.get(header::RANGE);
    // A HEAD, or a Range to resolve against the size, asks for the size first.
    let stat = if head || range_header.is_some() {
        Some(
            proxy
                .call(|mut c| {
                    let request = request();
                    async move { c.stat_blob(request).await }
                })
                .await?
                .into_inner(),
        )
    } else {
        None
    };
    let range = match (range_header, &stat) {
        (Some(v), Some(s)) => super::blobs::parse_range(v, s.size)?,
        _ => None,
    };
    if let (true, Some(s)) = (head, &stat) {
        // As the local route answers a HEAD: with the range's status and headers.
        let resp = blob_answer(&up, s.cache(), &digest, range, s.size);
        return Ok(resp.body(Body::empty()).expect("valid response"));
    }
    let (offset, length) = match range {
        Some((start, end)) => (start, end - start + 1),
        None => (0, 0),
    };
    let mut fill = Fill {
        proxy,
        blobs: r.state.blobs.clone(),
        blob: request(),
        read: st::ReadBlobRequest {
            repository: String::new(),
            digest: digest.clone(),
            offset,
            length,
        },
        cache: CacheStatus::Unspecified,
        resumes: 0,
    };
    let (size, stream) = fill.open().await?;
    let resp = blob_answer(&up, fill.cache, &digest, range, size);
    Ok(resp
        .body(Body::from_stream(fill.follow(stream)))
        .expect("valid response"))
}

/// Times a download picks a stalled fill up again before giving up.
const RESUMES: u32 = 3;

/// A proxied blob download: the proxy makes the blob readable (cached, or filling), and the
/// bytes come straight from storage (`ReadFill`; in one process, the store itself). When the fill stalls (`ABORTED`: its filler died or hung),
/// the proxy is asked again, which takes the fill over, and the download goes on from the
/// byte the client is at.
struct Fill {
    proxy: ProxyPool,
    blobs: BlobBodyClient,
    blob: BlobRequest,
    /// The next read: its offset moves with every byte sent.
    read: st::ReadBlobRequest,
    cache: CacheStatus,
    resumes: u32,
}

impl Fill {
    /// Asks the proxy for the blob and opens it in storage; returns the whole blob's size.
    async fn open(&mut self) -> Result<(u64, FillBytes)> {
        loop {
            let blob = self.blob.clone();
            let source = self
                .proxy
                .call(|mut c| {
                    let blob = blob.clone();
                    async move { c.open_blob(blob).await }
                })
                .await?
                .into_inner();
            if self.cache == CacheStatus::Unspecified {
                self.cache = source.cache();
            }
            self.read.repository = source.repository;
            let opened = self.blobs.read_fill(&self.read);
            match opened.await {
                Err(s) if s.code() == Code::Aborted && self.resumes < RESUMES => self.resumes += 1,
                other => return Ok(other?),
            }
        }
    }

    /// The bytes from `stream` on, picking the fill up again when it stalls.
    fn follow(
        self,
        stream: FillBytes,
    ) -> impl futures::Stream<Item = Result<bytes::Bytes, Error>> + Send {
        futures::stream::unfold(Some((self, stream)), |state| async move {
            let (mut fill, mut stream) = state?;
            loop {
                match stream.next().await {
                    Some(Ok(d)) => {
                        fill.read.offset += d.len() as u64;
                        if fill.read.length > 0 {
                            fill.read.length -= d.len() as u64;
                        }
                        return Some((Ok(d), Some((fill, stream))));
                    }
                    None => return None,
                    Some(Err(s)) if s.code() == Code::Aborted && fill.resumes < RESUMES => {
                        fill.resumes += 1;
                        tracing::info!(digest = %fill.read.digest, at = fill.read.offset,
                            "a proxied blob's fill stalled: picking it up again");
                        match fill.open().await {
                            Ok((_, s)) => stream = s,
                            Err(e) => return Some((Err(e), None)),
                        }
                    }
                    Some(Err(s)) => {
                        tracing::warn!(status = %s, "proxied blob download broke off");
                        return Some((Err(Error::from(s)), None));
                    }
                }
            }
        })
    }
}

/// The head of a blob answer: 206 with the range's headers, or 200 with the whole size.
fn blob_answer(
    up: &Upstream,
    cache: CacheStatus,
    digest: &str,
    range: Option<(u64, u64)>,
    size: u64,
) -> axum::http::response::Builder {
    let resp = answer(up, cache)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(DOCKER_CONTENT_DIGEST, hv(digest));
    match range {
        Some((start, end)) => resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, end - start + 1)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
        None => resp
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size),
    }
}

pub async fn tags(r: Req, up: Upstream) -> Result<Response> {
    let (n, last) = page_params(&r.params)?;
    let request = TagsRequest {
        registry: up.registry.clone(),
        repository: up.repository.clone(),
    };
    let list = client(&r)?
        .call(|mut c| {
            let request = request.clone();
            async move { c.list_tags(request).await }
        })
        .await?
        .into_inner();
    let cache = list.cache();
    let mut tags: Vec<String> = list.tags.into_iter().filter(|t| *t > last).collect();
    let truncated = n.is_some_and(|n| tags.len() > n as usize);
    if let Some(n) = n {
        tags.truncate(n as usize);
    }
    let body = axum::Json(serde_json::json!({ "name": r.repo, "tags": tags }));
    let mut resp = body.into_response();
    if let (Some(n), Some(last), true) = (n, tags.last(), truncated) {
        let (k, v) = next_link(&format!("/v2/{}/tags/list", r.repo), n, last);
        resp.headers_mut().insert(k, v);
    }
    resp.headers_mut().insert(TROW_CACHE, hv(cache_name(cache)));
    if up.ns {
        resp.headers_mut().insert(OCI_NAMESPACE, hv(&up.registry));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_go_upstream() {
        let up = |registry: &str, repository: &str, ns| Upstream {
            registry: registry.into(),
            repository: repository.into(),
            ns,
        };
        assert_eq!(
            Upstream::of("f/docker.io/library/nginx", None, None),
            Some(up("docker.io", "library/nginx", false))
        );
        assert_eq!(
            Upstream::of("library/nginx", Some("docker.io"), None),
            Some(up("docker.io", "library/nginx", true))
        );
        assert_eq!(Upstream::of("team/app", None, None), None);
        assert_eq!(
            Upstream::of("team/app", Some("trow.local"), Some("trow.local")),
            None
        );
        assert_eq!(Upstream::of("team/app", Some(""), None), None);
        // Another spelling of the hostname is the hostname.
        for ns in ["TROW.LOCAL:8000", "trow.local:8000"] {
            assert_eq!(
                Upstream::of("team/app", Some(ns), Some("trow.local:8000")),
                None
            );
        }
        assert_eq!(
            Upstream::of("team/app", Some("Trow.Local:443"), Some("trow.local")),
            None
        );
        assert_eq!(
            Upstream::of("team/app", Some("trow.local:8001"), Some("trow.local:8000")),
            Some(up("trow.local:8001", "team/app", true))
        );
    }
}
