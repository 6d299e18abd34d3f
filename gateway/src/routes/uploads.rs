//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic `?digest=`, or
//! cross-repo `?mount=&from=`), and `GET|PATCH|PUT|DELETE` on the session's location.
//!
//! Request bodies stream to the storage service as they arrive; the storage service hashes
//! them and only `PUT ?digest=` makes a blob visible, after the digest matched.

use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use trow_proto::storage::{
    AppendHeader, AppendUploadRequest, CompleteUploadRequest, MountBlobRequest, StartUploadRequest,
    UploadRef, append_upload_request::Part,
};

use super::{DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, Req, empty, hv};
use crate::AppState;
use crate::body;
use crate::error::{Error, OciCode, Result};

fn location(repo: &str, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// The spec's inclusive `Range` of bytes received; `0-0` when there are none.
fn received(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn session_headers(repo: &str, id: &str, size: u64) -> [(HeaderName, String); 3] {
    [
        (header::LOCATION, location(repo, id)),
        (header::RANGE, received(size)),
        (DOCKER_UPLOAD_UUID, id.to_string()),
    ]
}

fn session(status: StatusCode, repo: &str, id: &str, size: u64) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, 0);
    for (k, v) in session_headers(repo, id, size) {
        b = b.header(k, hv(v));
    }
    b.body(Body::empty()).expect("valid response")
}

/// 201 for a blob now in the repository.
fn created(repo: &str, digest: &str) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, hv(format!("/v2/{repo}/blobs/{digest}")))
        .header(DOCKER_CONTENT_DIGEST, hv(digest))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

/// Streams a request body into an upload; returns the upload's new size.
async fn append(
    state: &AppState,
    repo: &str,
    id: &str,
    offset: Option<u64>,
    body: Body,
) -> Result<u64> {
    let (chunks, failed) = body::chunks(body);
    let header = AppendHeader {
        repository: repo.to_string(),
        upload_id: id.to_string(),
        offset,
        fill_size: None,
    };
    // In one process the chunks go to the store as they are, without a message each.
    let result = match state.blobs.local_store() {
        Some(store) => store.append(header, Box::pin(chunks)).await,
        None => {
            let header = AppendUploadRequest {
                part: Some(Part::Header(header)),
            };
            let messages = futures::stream::once(async { header }).chain(chunks.map(|data| {
                AppendUploadRequest {
                    part: Some(Part::Data(data)),
                }
            }));
            let appended = state.storage.clone().append_upload(messages).await;
            appended.map(|info| info.into_inner().size)
        }
    };
    if let Some(e) = failed.lock().expect("body error slot").take() {
        // The bytes that arrived are kept: the client may resume from the upload's status.
        tracing::info!(upload = %id, error = %e, "upload body broke off");
        return Err(Error::new(
            OciCode::BlobUploadInvalid,
            "the request body broke off before its end",
        ));
    }
    Ok(result?)
}

fn has_body(body: &Body) -> bool {
    body.size_hint().exact() != Some(0)
}

/// The start offset of a `Content-Range: <start>-<end>` header, if there is one.
fn content_range_start(r: &Req) -> Result<Option<u64>> {
    content_range_of(&r.headers)
}

/// [`content_range_start`] on the headers alone, so it can be tested on any header.
pub(crate) fn content_range_of(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || {
        Error::new(
            OciCode::BlobUploadInvalid,
            format!("invalid Content-Range {v:?}"),
        )
    };
    let s = v.to_str().map_err(|_| invalid())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s).trim();
    let (a, b) = s.split_once('-').ok_or_else(invalid)?;
    let start: u64 = a.parse().map_err(|_| invalid())?;
    let end: u64 = b
        .split('/')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        // `0-18446744073709551615` spans 2^64 bytes: no u64 length matches it.
        && (end - start).checked_add(1) != Some(len)
    {
        return Err(Error::new(
            OciCode::SizeInvalid,
            format!("Content-Range {s} does not match Content-Length {len}"),
        ));
    }
    Ok(Some(start))
}

/// A 416 for an out-of-order chunk tells the client where the upload stands.
async fn with_upload_position(e: Error, state: &AppState, repo: &str, id: &str) -> Error {
    if e.status != StatusCode::RANGE_NOT_SATISFIABLE {
        return e;
    }
    let r = UploadRef {
        repository: repo.to_string(),
        upload_id: id.to_string(),
    };
    match state.storage.clone().upload_status(r).await {
        Ok(info) => session_headers(repo, id, info.into_inner().size)
            .into_iter()
            .fold(e, |e, (k, v)| e.with_header(k, hv(v))),
        Err(_) => e,
    }
}

pub async fn start(r: Req) -> Result<Response> {
    let mut storage = r.state.storage.clone();
    // A mount from a repository the caller may not pull would hand it that repository's
    // blob: it becomes an ordinary upload instead, as for a blob the source does not have.
    let mount = match (r.param("mount"), r.param("from")) {
        (Some(digest), Some(from)) => {
            let readable = r.may_pull(from).await;
            readable.then_some((digest, from))
        }
        _ => None,
    };
    if let Some((digest, from)) = mount {
        let mount = MountBlobRequest {
            repository: r.repo.clone(),
            digest: digest.to_string(),
            from_repository: from.to_string(),
        };
        match storage.mount_blob(mount).await {
            Ok(_) => return Ok(created(&r.repo, digest)),
            // Not mountable (unknown blob or source): fall back to an upload, as the spec says.
            Err(s) if s.code() != tonic::Code::Unavailable && s.code() != tonic::Code::Internal => {
            }
            Err(s) => return Err(s.into()),
        }
    }
    let digest = r.param("digest").map(str::to_string);
    let algorithm = digest
        .as_deref()
        .and_then(|d| d.split_once(':'))
        .map(|(a, _)| a.to_string())
        .unwrap_or_default();
    let id = storage
        .start_upload(StartUploadRequest {
            repository: r.repo.clone(),
            digest_algorithm: algorithm,
        })
        .await?
        .into_inner()
        .upload_id;
    let Some(digest) = digest else {
        return Ok(session(StatusCode::ACCEPTED, &r.repo, &id, 0));
    };
    // Monolithic: the whole blob in this request. The client never learns the session's id, so
    // a failure must not leave the session behind.
    let (state, repo) = (r.state.clone(), r.repo.clone());
    let result = finish(r, id.clone(), digest, None).await;
    if result.is_err() {
        let cancel = UploadRef {
            repository: repo,
            upload_id: id,
        };
        // Already gone when storage refused the digest.
        let _ = state.storage.clone().cancel_upload(cancel).await;
    }
    result
}

/// Appends the body (if any) and completes the upload with `digest`.
async fn finish(r: Req, id: String, digest: String, offset: Option<u64>) -> Result<Response> {
    if has_body(&r.body)
        && let Err(e) = append(&r.state, &r.repo, &id, offset, r.body).await
    {
        return Err(with_upload_position(e, &r.state, &r.repo, &id).await);
    }
    let complete = CompleteUploadRequest {
        repository: r.repo.clone(),
        upload_id: id,
        digest: digest.clone(),
    };
    r.state.storage.clone().complete_upload(complete).await?;
    Ok(created(&r.repo, &digest))
}

pub async fn patch(r: Req, id: String) -> Result<Response> {
    let offset = content_range_start(&r)?;
    match append(&r.state, &r.repo, &id, offset, r.body).await {
        Ok(size) => Ok(session(StatusCode::ACCEPTED, &r.repo, &id, size)),
        Err(e) => Err(with_upload_position(e, &r.state, &r.repo, &id).await),
    }
}

pub async fn put(r: Req, id: String) -> Result<Response> {
    let Some(digest) = r.param("digest").map(str::to_string) else {
        return Err(Error::new(
            OciCode::DigestInvalid,
            "closing an upload needs ?digest=",
        ));
    };
    let offset = content_range_start(&r)?;
    finish(r, id, digest, offset).await
}

pub async fn status(r: Req, id: String) -> Result<Response> {
    let info = r
        .state
        .storage
        .clone()
        .upload_status(UploadRef {
            repository: r.repo.clone(),
            upload_id: id.clone(),
        })
        .await?
        .into_inner();
    Ok(session(StatusCode::NO_CONTENT, &r.repo, &id, info.size))
}

pub async fn cancel(r: Req, id: String) -> Result<Response> {
    r.state
        .storage
        .clone()
        .cancel_upload(UploadRef {
            repository: r.repo,
            upload_id: id,
        })
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// Found by `props::content_ranges_are_consistent`: the span's length overflowed u64 (a
    /// panic in debug builds; in release it wrapped to 0 and matched `Content-Length: 0`).
    #[test]
    fn a_range_of_every_offset_matches_no_length() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("0-18446744073709551615"),
        );
        for len in ["0", "18446744073709551615"] {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(len));
            let e = content_range_of(&h).unwrap_err();
            assert_eq!(e.code, OciCode::SizeInvalid, "{len}");
        }
        h.remove(header::CONTENT_LENGTH);
        assert_eq!(content_range_of(&h).unwrap(), Some(0));
    }
}
