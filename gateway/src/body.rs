//! Moving uploaded blob bytes from HTTP bodies into gRPC streams without buffering whole blobs.
//! (Downloads need no regrouping: storage's HTTP/2 body frames are passed on as they are, see
//! `routes::blobs`.)
//!
//! HTTP bodies arrive in frames of a few KiB; each gRPC message costs framing and a wake-up, so
//! uploads are regrouped into chunks of [`MIN_CHUNK`]..=[`MAX_CHUNK`] bytes. At most one chunk
//! is held per request, which bounds memory whatever the blob's size.
//!
//! Every request body is wrapped in [`Stalling`] by the server, so a client that stops sending
//! mid-body fails its request instead of holding it (and its upload) forever.

use axum::body::{Body, HttpBody};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hyper::body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Chunks are sent once they reach this size...
pub const MIN_CHUNK: usize = 256 << 10;
/// ...and never exceed this one (the storage service's chunk bound).
pub const MAX_CHUNK: usize = trow_proto::transport::CHUNK_SIZE;

/// Where a failed body read is recorded, because a gRPC request stream can only end, not fail.
pub type BodyError = Arc<Mutex<Option<axum::Error>>>;

/// The body's bytes regrouped into bounded chunks. A read error ends the stream (after the
/// bytes received before it) and is left in the returned slot for the caller to report.
pub fn chunks(body: Body) -> (impl Stream<Item = Bytes> + Send + 'static, BodyError) {
    let failed: BodyError = Arc::default();
    let slot = failed.clone();
    let frames = body.into_data_stream();
    let stream = futures::stream::unfold(
        (frames, BytesMut::new(), false),
        move |(mut frames, mut buf, done)| {
            let slot = slot.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    if buf.len() >= MIN_CHUNK {
                        let n = buf.len().min(MAX_CHUNK);
                        let chunk = buf.split_to(n).freeze();
                        return Some((chunk, (frames, buf, false)));
                    }
                    match frames.next().await {
                        Some(Ok(frame)) => {
                            if buf.is_empty()
                                && frame.len() >= MIN_CHUNK
                                && frame.len() <= MAX_CHUNK
                            {
                                return Some((frame, (frames, buf, false)));
                            }
                            buf.extend_from_slice(&frame);
                        }
                        Some(Err(e)) => {
                            // The bytes that did arrive are good (TCP keeps order): store them,
                            // so the client can resume right after them.
                            *slot.lock().expect("body error slot") = Some(e);
                            if buf.is_empty() {
                                return None;
                            }
                            let chunk = buf.split().freeze();
                            return Some((chunk, (frames, buf, true)));
                        }
                        None if buf.is_empty() => return None,
                        None => {
                            let chunk = buf.split().freeze();
                            return Some((chunk, (frames, buf, true)));
                        }
                    }
                }
            }
        },
    );
    (stream, failed)
}

/// Why [`read_limited`] gave up.
#[derive(Debug)]
pub enum ReadError {
    /// The body is over the limit. `drained` tells whether it was read to its end, so that the
    /// connection can carry the error answer and further requests.
    TooLarge {
        drained: bool,
    },
    Failed(axum::Error),
}

/// Bodies over the limit are still read (and dropped) up to this size, because a client that
/// is still sending when the answer comes may never see it.
pub const DRAIN_CAP: u64 = 64 << 20;

/// Reads a small body whole, refusing more than `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ReadError> {
    let mut frames = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut total: u64 = 0;
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(ReadError::Failed)?;
        total += frame.len() as u64;
        if total <= limit as u64 {
            buf.extend_from_slice(&frame);
        } else if total > DRAIN_CAP {
            return Err(ReadError::TooLarge { drained: false });
        }
    }
    if total > limit as u64 {
        return Err(ReadError::TooLarge { drained: true });
    }
    Ok(buf.freeze())
}

/// A request body that delivered no bytes for the timeout while the server waited for them.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:?}")]
pub struct BodyStalled(pub Duration);

/// A request body that fails with [`BodyStalled`] when the client sends nothing for `timeout`
/// while the body is being read. Only time spent waiting on the client counts: while the
/// handler is not reading (storage applying back-pressure), no clock runs.
pub struct Stalling<B> {
    inner: B,
    timeout: Duration,
    /// Armed when a read finds no bytes, disarmed when bytes come; allocated on first use, as
    /// most requests have no body.
    deadline: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    failed: bool,
}

impl<B> Stalling<B> {
    pub fn new(inner: B, timeout: Duration) -> Stalling<B> {
        Stalling {
            inner,
            timeout,
            deadline: None,
            waiting: false,
            failed: false,
        }
    }
}

impl<B> HttpBody for Stalling<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let at = Instant::now() + this.timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if !this.waiting {
                    deadline.as_mut().reset(at);
                    this.waiting = true;
                }
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.failed = true;
                        Poll::Ready(Some(Err(BodyStalled(this.timeout).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
