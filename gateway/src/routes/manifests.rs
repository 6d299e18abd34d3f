//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<tag|digest>`.
//!
//! The gateway enforces the size limit and passes the bytes and Content-Type on; the storage
//! service parses the manifest and checks that everything it references is in the repository.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use std::sync::Arc;
use trow_proto::storage::{ManifestRef, PutManifestRequest};

use super::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT, Req, empty, hv};
use crate::body;
use crate::error::{Error, OciCode, Result};
use crate::manifest_cache::{Cached, Lookup};

pub use trow_proto::transport::MAX_MANIFEST_SIZE;

/// A 413. When the rest of the body was not read, the connection must close after the answer.
fn too_large(drained: bool) -> Error {
    let e = Error::new(
        OciCode::ManifestInvalid,
        format!("manifest exceeds the {MAX_MANIFEST_SIZE}-byte limit"),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE);
    if drained {
        e
    } else {
        e.with_header(header::CONNECTION, HeaderValue::from_static("close"))
    }
}

pub async fn put(r: Req, reference: String) -> Result<Response> {
    let declared = r
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > body::DRAIN_CAP) {
        return Err(too_large(false));
    }
    let content_type = r
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content = body::read_limited(r.body, MAX_MANIFEST_SIZE)
        .await
        .map_err(|e| match e {
            body::ReadError::TooLarge { drained } => too_large(drained),
            body::ReadError::Failed(e) => Error::new(
                OciCode::ManifestInvalid,
                format!("reading the manifest failed: {e}"),
            ),
        })?;
    let stored = r
        .state
        .storage
        .clone()
        .put_manifest(PutManifestRequest {
            repository: r.repo.clone(),
            reference,
            content_type,
            content,
            cached: false,
        })
        .await?
        .into_inner();
    let mut resp = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            hv(format!("/v2/{}/manifests/{}", r.repo, stored.digest)),
        )
        .header(DOCKER_CONTENT_DIGEST, hv(&stored.digest))
        .header(header::CONTENT_LENGTH, 0);
    if !stored.subject.is_empty() {
        resp = resp.header(OCI_SUBJECT, hv(&stored.subject));
    }
    Ok(resp.body(Body::empty()).expect("valid response"))
}

/// Whether the request's `Accept` header admits `media_type`. No `Accept`, or a wildcard, admits
/// everything. Trow never converts manifests, so a client that refuses the stored type is told
/// the manifest is unknown to it, as distribution does.
pub(crate) fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut types = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .filter(|t| !t.is_empty())
        .peekable();
    if types.peek().is_none() {
        return true;
    }
    types.any(|t| t == media_type || t == "*/*" || t == "application/*")
}

/// From the gateway's cache when it holds the manifest (see [`crate::manifest_cache`]); a miss
/// reads the whole manifest even for a HEAD, so the next request of either kind is a hit.
pub async fn get(r: Req, reference: String, head: bool) -> Result<Response> {
    let cache = &r.state.manifests;
    let manifest = match cache.lookup(&r.repo, &reference) {
        Lookup::Hit(m) => m,
        Lookup::Miss(ticket) => {
            let mut storage = r.state.storage.clone();
            let at = ManifestRef {
                repository: r.repo.clone(),
                reference: reference.clone(),
            };
            let m = if head && !cache.is_on() {
                Cached {
                    info: storage.stat_manifest(at).await?.into_inner(),
                    content: Bytes::new(),
                }
            } else {
                let m = storage.get_manifest(at).await?.into_inner();
                Cached {
                    info: m.info.unwrap_or_default(),
                    content: m.content,
                }
            };
            let m = Arc::new(m);
            if cache.is_on() {
                cache.insert(ticket, &r.repo, &reference, m.clone());
            }
            m
        }
    };
    let info = &manifest.info;
    if !accepts(&r.headers, &info.media_type) {
        return Err(Error::new(
            OciCode::ManifestUnknown,
            format!(
                "the manifest is {}, which the Accept header does not admit",
                info.media_type
            ),
        ));
    }
    let body = match head {
        true => Body::empty(),
        false => Body::from(manifest.content.clone()),
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, hv(&info.media_type))
        .header(header::CONTENT_LENGTH, info.size)
        .header(DOCKER_CONTENT_DIGEST, hv(&info.digest))
        .body(body)
        .expect("valid response"))
}

pub async fn delete(r: Req, reference: String) -> Result<Response> {
    r.state
        .storage
        .clone()
        .delete_manifest(ManifestRef {
            repository: r.repo,
            reference,
        })
        .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header() {
        let mut h = HeaderMap::new();
        assert!(accepts(&h, "a/b"));
        h.append(header::ACCEPT, "x/y; q=0.5, a/b".parse().unwrap());
        assert!(accepts(&h, "a/b"));
        assert!(!accepts(&h, "c/d"));
        h.append(header::ACCEPT, "*/*".parse().unwrap());
        assert!(accepts(&h, "c/d"));
    }
}
