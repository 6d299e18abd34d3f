//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`: blob bytes, streamed from storage, with Range.
//! The bytes come as storage's plain HTTP/2 body (`trow_proto::blob_body`), passed on as they
//! arrive.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use trow_proto::storage::{BlobRef, ReadBlobRequest};

use super::{DOCKER_CONTENT_DIGEST, Req, empty, hv};
use crate::error::{Error, OciCode, Result};

/// A parsed `Range: bytes=...` header: the inclusive byte span to send.
pub(crate) fn parse_range(value: &HeaderValue, size: u64) -> Result<Option<(u64, u64)>> {
    let unsatisfiable = || {
        Error::new(OciCode::SizeInvalid, "range not satisfiable")
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(header::CONTENT_RANGE, hv(format!("bytes */{size}")))
    };
    let Some(spec) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None); // Not a byte range we understand: ignoring it is allowed (RFC 9110).
    };
    if spec.contains(',') {
        return Ok(None); // Multiple ranges: send the whole blob.
    }
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| unsatisfiable())?;
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(n), size - 1)
        }
        (s, "") => (
            s.parse().map_err(|_| unsatisfiable())?,
            size.saturating_sub(1),
        ),
        (s, e) => {
            let s: u64 = s.parse().map_err(|_| unsatisfiable())?;
            let e: u64 = e.parse().map_err(|_| unsatisfiable())?;
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start >= size || start > end {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

pub async fn get(r: Req, digest: String, head: bool) -> Result<Response> {
    let mut storage = r.state.storage.clone();
    let blob = BlobRef {
        repository: r.repo.clone(),
        digest: digest.clone(),
    };
    let size = storage.stat_blob(blob).await?.into_inner().size;
    let range = match r.headers.get(header::RANGE) {
        Some(v) => parse_range(v, size)?,
        None => None,
    };
    let (offset, len) = match range {
        Some((start, end)) => (start, end - start + 1),
        None => (0, size),
    };
    let mut resp = Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(DOCKER_CONTENT_DIGEST, hv(&digest));
    if let Some((start, end)) = range {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
    }
    let body = if head || len == 0 {
        Body::empty()
    } else {
        let read = ReadBlobRequest {
            repository: r.repo,
            digest,
            offset,
            length: len,
        };
        Body::new(r.state.blobs.read(&read).await?)
    };
    Ok(resp.body(body).expect("valid response"))
}

pub async fn delete(r: Req, digest: String) -> Result<Response> {
    let mut storage = r.state.storage.clone();
    storage
        .delete_blob(BlobRef {
            repository: r.repo,
            digest,
        })
        .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, size: u64) -> Result<Option<(u64, u64)>> {
        parse_range(&HeaderValue::from_str(v).unwrap(), size)
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(range("bytes=50-500", 100).unwrap(), Some((50, 99)));
        assert_eq!(range("items=0-1", 100).unwrap(), None);
        assert!(range("bytes=100-", 100).is_err());
        assert!(range("bytes=5-1", 100).is_err());
        assert!(range("bytes=x-1", 100).is_err());
    }
}
