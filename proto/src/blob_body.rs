//! Blob bytes as a plain HTTP/2 response body, beside the gRPC services on the storage port.
//!
//! `ReadBlob` carries each chunk in a gRPC message: storage's encoder copies every chunk into its
//! send buffer, and the gateway's decoder copies every HTTP/2 DATA frame into its receive buffer
//! (about 15 % of a split pull's CPU, measured). This route answers the same request with the
//! bytes as the response body itself: storage hands the buffers its reads fill to HTTP/2 as
//! they are, and the gateway hands the frames HTTP/2 received on to its client.
//!
//! The contract: `GET /trow.storage.v1.BlobBody/Read?repository=R&digest=D&offset=N&length=N`
//! (a [`ReadBlobRequest`], percent-encoded) on the storage service's connection. A success is
//! `200` with the bytes; a failure, before any byte, is a trailers-only gRPC answer
//! (`grpc-status`, `grpc-message` and the OCI code's metadata), exactly what `ReadBlob` would
//! have answered, so callers map it the same way. A failure after the first byte resets the
//! stream. The route sits behind the same [`crate::trust::Guard`] (and mutual TLS) as every
//! call on that port, and the client goes through the same [`crate::trust::Channel`]
//! interceptor (token, trace context). `ReadBlob` stays for other callers (grpcurl, the proxy),
//! and the gateway falls back to it when the route answers UNIMPLEMENTED or without a gRPC status
//! (a storage service older than the route during a rolling upgrade, or a proxy between that
//! passes only gRPC).

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::ServiceExt;

use crate::storage::storage_client::StorageClient;
use crate::storage::{AppendHeader, ReadBlobRequest};
use crate::trust::Channel;

/// The route's prefix, as a service name (tonic routes `/<NAME>/*`).
pub const NAME: &str = "trow.storage.v1.BlobBody";

/// The one method under [`NAME`].
const READ: &str = "Read";

/// What a query value keeps as it is: the characters of repository names and digests.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'/')
    .remove(b':');

/// The path and query asking for `req`.
pub fn path_and_query(req: &ReadBlobRequest) -> String {
    format!(
        "/{NAME}/{READ}?repository={}&digest={}&offset={}&length={}",
        utf8_percent_encode(&req.repository, QUERY_VALUE),
        utf8_percent_encode(&req.digest, QUERY_VALUE),
        req.offset,
        req.length
    )
}

/// The request a path and query asks for; INVALID_ARGUMENT when it is not one.
pub fn parse(uri: &http::Uri) -> Result<ReadBlobRequest, Status> {
    let bad = |why: &str| Status::invalid_argument(format!("{NAME}: {why}"));
    if uri.path() != format!("/{NAME}/{READ}") {
        return Err(Status::unimplemented(format!("{NAME}: no such method")));
    }
    let mut req = ReadBlobRequest::default();
    let (mut repository, mut digest) = (false, false);
    for pair in uri.query().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').ok_or_else(|| bad("malformed query"))?;
        let text = || {
            percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| bad("query value is not UTF-8"))
        };
        let number = || value.parse::<u64>().map_err(|_| bad("not a number"));
        match key {
            "repository" => (req.repository, repository) = (text()?, true),
            "digest" => (req.digest, digest) = (text()?, true),
            "offset" => req.offset = number()?,
            "length" => req.length = number()?,
            _ => return Err(bad("unknown query key")),
        }
    }
    if !(repository && digest) {
        return Err(bad("repository and digest are required"));
    }
    Ok(req)
}

/// The bytes of a read, in the buffers the store filled.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A blob being cached (or already cached) as `ReadFill` answers it: the whole blob's size, and
/// the bytes asked for as they arrive, each failure a status (`ABORTED`: the fill stalled).
pub type Fill = (u64, FillBytes);

/// A fill's bytes as they arrive.
pub type FillBytes = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// The bytes an append adds, as they arrive (a body that breaks off just ends: its caller keeps
/// why).
pub type AppendBytes = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// Where the route's bytes come from: the store, in the storage service.
pub trait BlobSource: Send + Sync + 'static {
    /// The bytes `req` asks for, or why not (a status with its OCI code, as `ReadBlob`'s).
    fn read(&self, req: ReadBlobRequest) -> BoxFuture<'static, Result<ByteStream, Status>>;

    /// What `ReadFill` answers for `req`, without the messages (for a reader in this process).
    fn read_fill(&self, req: ReadBlobRequest) -> BoxFuture<'static, Result<Fill, Status>>;

    /// What `AppendUpload` does with `header` and then `data`, without the messages (for a
    /// writer in this process): the upload's new size.
    fn append(
        &self,
        header: AppendHeader,
        data: AppendBytes,
    ) -> BoxFuture<'static, Result<u64, Status>>;
}

/// The route's server: add it to the storage service's gRPC router.
pub struct BlobBodyServer<S> {
    source: Arc<S>,
}

impl<S> BlobBodyServer<S> {
    pub fn new(source: Arc<S>) -> Self {
        BlobBodyServer { source }
    }
}

impl<S> Clone for BlobBodyServer<S> {
    fn clone(&self) -> Self {
        BlobBodyServer {
            source: self.source.clone(),
        }
    }
}

impl<S> NamedService for BlobBodyServer<S> {
    const NAME: &'static str = NAME;
}

impl<S: BlobSource> tower::Service<Request<Body>> for BlobBodyServer<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let source = self.source.clone();
        let asked = match req.method() {
            &Method::GET => parse(req.uri()),
            _ => Err(Status::unimplemented(format!("{NAME}: GET only"))),
        };
        Box::pin(async move {
            let read = async { source.read(asked?).await };
            Ok(match read.await {
                Ok(bytes) => Response::new(Body::new(Frames(bytes))),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// A byte stream as an HTTP body: each buffer one frame, as it is.
struct Frames(ByteStream);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .as_mut()
            .poll_next(cx)
            .map(|next| next.map(|r| r.map(http_body::Frame::data)))
    }
}

/// Reads blobs through the route, on a channel to the storage service; or, in one process,
/// straight from the store.
#[derive(Clone)]
pub struct BlobBodyClient {
    via: Via,
}

#[derive(Clone)]
enum Via {
    Channel(Channel),
    Local(Arc<dyn BlobSource>),
}

impl BlobBodyClient {
    pub fn new(channel: Channel) -> Self {
        BlobBodyClient {
            via: Via::Channel(channel),
        }
    }

    /// A client of the store in this process: the buffers its reads fill become the body, with
    /// no HTTP/2 connection and no in-memory pipe between (each would copy every byte twice).
    /// What the caller gets, bytes and statuses, is the route's.
    pub fn local(source: Arc<dyn BlobSource>) -> Self {
        BlobBodyClient {
            via: Via::Local(source),
        }
    }

    /// The bytes `req` asks for, as the HTTP body HTTP/2 received (frames not copied). Fails as
    /// `ReadBlob` would: the service's status, or the transport's error as a status carrying it
    /// as its source.
    ///
    /// A body that ends before (or runs past) the `length` asked for fails at its end instead
    /// of ending cleanly: unlike `ReadBlob`'s closing status, a plain body has no end marker
    /// (and HTTP/2 reports a stream reset with NO_ERROR as a clean end), so a short answer would
    /// otherwise pass for a whole one in the gateway's metrics, traces and audit.
    pub async fn read(&self, req: &ReadBlobRequest) -> Result<Body, Status> {
        let expected = (req.length > 0).then_some(req.length);
        let channel = match &self.via {
            Via::Local(source) => {
                let frames = Frames(source.read(req.clone()).await?);
                return Ok(Body::new(Exact::new(frames, expected)));
            }
            Via::Channel(channel) => channel,
        };
        let request = Request::get(path_and_query(req))
            .body(Body::empty())
            .map_err(|e| Status::invalid_argument(format!("{NAME}: {e}")))?;
        let response = channel
            .clone()
            .oneshot(request)
            .await
            .map_err(Status::from_error)?;
        match Status::from_header_map(response.headers()) {
            // A storage service older than the route (a rolling upgrade), or something between
            // that passes only gRPC: the same bytes through `ReadBlob`, copied as before.
            Some(status) if status.code() == tonic::Code::Unimplemented => {
                return self.read_by_grpc(channel, req, expected).await;
            }
            Some(status) if status.code() != tonic::Code::Ok => return Err(status),
            _ => {}
        }
        if response.status() != StatusCode::OK {
            tracing::warn!(
                status = %response.status(),
                "storage's blob body route answered without gRPC status: reading through ReadBlob"
            );
            return self.read_by_grpc(channel, req, expected).await;
        }
        Ok(Body::new(Exact::new(response.into_body(), expected)))
    }

    /// A blob the proxy is caching (or cached), from `req.offset` on: through `ReadFill`, or in
    /// one process from the store itself (no message per chunk to encode and decode).
    pub async fn read_fill(&self, req: &ReadBlobRequest) -> Result<Fill, Status> {
        use crate::storage::fill_part::Part;
        let channel = match &self.via {
            Via::Local(source) => return source.read_fill(req.clone()).await,
            Via::Channel(channel) => channel,
        };
        let mut stream = StorageClient::new(channel.clone())
            .max_decoding_message_size(crate::transport::MAX_MESSAGE_SIZE)
            .read_fill(req.clone())
            .await?
            .into_inner();
        let size = match stream.message().await? {
            Some(crate::storage::FillPart {
                part: Some(Part::Header(h)),
            }) => h.size,
            _ => return Err(Status::internal("a fill stream without its header")),
        };
        let bytes = futures::StreamExt::filter_map(stream, |part| async move {
            match part {
                Ok(crate::storage::FillPart {
                    part: Some(Part::Data(d)),
                }) => Some(Ok(d)),
                Ok(_) => None,
                Err(status) => Some(Err(status)),
            }
        });
        Ok((size, Box::pin(bytes)))
    }

    /// The store, when it is in this process: a writer there appends through
    /// [`BlobSource::append`] instead of `AppendUpload`'s messages.
    pub fn local_store(&self) -> Option<&Arc<dyn BlobSource>> {
        match &self.via {
            Via::Local(source) => Some(source),
            Via::Channel(_) => None,
        }
    }

    async fn read_by_grpc(
        &self,
        channel: &Channel,
        req: &ReadBlobRequest,
        expected: Option<u64>,
    ) -> Result<Body, Status> {
        let stream = StorageClient::new(channel.clone())
            .max_decoding_message_size(crate::transport::MAX_MESSAGE_SIZE)
            .read_blob(req.clone())
            .await?
            .into_inner();
        let bytes = futures::StreamExt::map(stream, |chunk| {
            chunk
                .map(|c| c.data)
                .map_err(|status| std::io::Error::other(status.to_string()))
        });
        Ok(Body::new(Exact::new(Frames(Box::pin(bytes)), expected)))
    }
}

/// A body that must carry exactly `left` more bytes (None: any number).
struct Exact<B> {
    inner: B,
    left: Option<u64>,
}

impl<B> Exact<B> {
    fn new(inner: B, left: Option<u64>) -> Self {
        Exact { inner, left }
    }
}

impl<B> http_body::Body for Exact<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let wrong = |what: String| -> Self::Error {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what).into()
        };
        Poll::Ready(match (next, self.left) {
            (Some(Ok(frame)), Some(left)) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                match left.checked_sub(n) {
                    Some(rest) => {
                        self.left = Some(rest);
                        Some(Ok(frame))
                    }
                    None => Some(Err(wrong(format!(
                        "{NAME}: storage sent more than the {left} bytes left"
                    )))),
                }
            }
            (None, Some(left)) if left > 0 => Some(Err(wrong(format!(
                "{NAME}: storage's body ended {left} bytes short"
            )))),
            (Some(Err(e)), _) => Some(Err(e.into())),
            (next, _) => next.map(|r| r.map_err(Into::into)),
        })
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.left {
            Some(left) => http_body::SizeHint::with_exact(left),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for (repository, digest) in [
            ("library/alpine", "sha256:0123abcd"),
            ("a b&c=d%e/é", "sha512+x:=?#"),
            ("", ""),
        ] {
            let req = ReadBlobRequest {
                repository: repository.into(),
                digest: digest.into(),
                offset: 7,
                length: u64::MAX,
            };
            let uri: http::Uri = path_and_query(&req).parse().unwrap();
            assert_eq!(parse(&uri).unwrap(), req);
        }
    }

    #[test]
    fn other_paths_and_queries_are_refused() {
        let code = |s: &str| parse(&s.parse().unwrap()).unwrap_err().code();
        assert_eq!(
            code("/trow.storage.v1.BlobBody/Write?repository=a&digest=b"),
            tonic::Code::Unimplemented
        );
        assert_eq!(
            code("/trow.storage.v1.BlobBody/Read?repository=a"),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code("/trow.storage.v1.BlobBody/Read?repository=a&digest=b&offset=x"),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code("/trow.storage.v1.BlobBody/Read?repository=a&digest=b&size=1"),
            tonic::Code::InvalidArgument
        );
    }

    /// Drains `body`: the bytes, or the error it ended with.
    async fn drain(mut body: Exact<Frames>) -> Result<usize, String> {
        let mut n = 0;
        while let Some(frame) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
        {
            n += frame
                .map_err(|e| e.to_string())?
                .into_data()
                .map_or(0, |d| d.len());
        }
        Ok(n)
    }

    fn frames(sizes: &[usize]) -> Frames {
        let chunks: Vec<std::io::Result<Bytes>> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![7u8; *n])))
            .collect();
        Frames(Box::pin(futures::stream::iter(chunks)))
    }

    #[tokio::test]
    async fn a_body_must_carry_exactly_what_was_asked() {
        assert_eq!(drain(Exact::new(frames(&[3, 4]), Some(7))).await, Ok(7));
        assert_eq!(drain(Exact::new(frames(&[3, 4]), None)).await, Ok(7));
        let short = drain(Exact::new(frames(&[3]), Some(7))).await.unwrap_err();
        assert!(short.contains("4 bytes short"), "{short}");
        let long = drain(Exact::new(frames(&[3, 5]), Some(7)))
            .await
            .unwrap_err();
        assert!(long.contains("more than the 4 bytes left"), "{long}");
    }
}
