//! Listings as HTTP bodies: storage sends them as streams of pages, and an unpaginated listing
//! (no `n`) is written out as the pages arrive, so neither side ever holds a listing's JSON whole
//! and no listing is bounded by a message size.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;

/// Most names one paginated answer carries, whatever `n` asks; the `Link` header leads on.
pub const MAX_PAGE: u32 = 10_000;

/// `n` as sent to storage: capped at [`MAX_PAGE`], and at least 1 so that `n=0` still reports
/// an unknown repository. `None` (no `n`) asks for everything.
pub fn limit(n: Option<u32>) -> u32 {
    n.map_or(0, |n| n.clamp(1, MAX_PAGE))
}

/// A JSON document `prefix` + the items of every page, comma-separated + `suffix`, streamed.
/// `items` turns a page into JSON-encoded array elements.
pub fn streamed_json<T, I>(
    prefix: String,
    pages: tonic::Streaming<T>,
    mut items: impl FnMut(T) -> I + Send + 'static,
    suffix: &'static str,
) -> Response
where
    T: Send + 'static,
    I: IntoIterator<Item = String>,
{
    let mut first = true;
    let body = futures::stream::once(async move { Ok(Bytes::from(prefix)) })
        .chain(pages.map(move |page| {
            let page = page.map_err(|s| {
                // Headers are gone: all we can do is cut the body short.
                tracing::error!(status = %s, "listing broke off");
                std::io::Error::other("listing failed")
            })?;
            let mut out = String::new();
            for item in items(page) {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                out.push_str(&item);
            }
            Ok(Bytes::from(out))
        }))
        .chain(futures::stream::once(async move {
            Ok::<_, std::io::Error>(Bytes::from_static(suffix.as_bytes()))
        }));
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Names as JSON strings.
pub fn json_strings(names: Vec<String>) -> impl Iterator<Item = String> {
    names
        .into_iter()
        .map(|n| serde_json::to_string(&n).expect("a string serializes"))
}

/// Every name of a (paginated, hence single-page) listing, and whether more follow.
pub async fn collect(
    mut pages: tonic::Streaming<trow_proto::storage::NameList>,
) -> crate::error::Result<(Vec<String>, bool)> {
    let (mut names, mut truncated) = (Vec::new(), false);
    while let Some(page) = pages.message().await? {
        names.extend(page.names);
        truncated = page.truncated;
    }
    Ok((names, truncated))
}
