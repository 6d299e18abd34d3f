//! Moving blob bytes between HTTP bodies and gRPC streams without buffering whole blobs.
//!
//! HTTP bodies arrive in frames of a few KiB; each gRPC message costs framing and a wake-up, so
//! uploads are regrouped into chunks of [`MIN_CHUNK`]..=[`MAX_CHUNK`] bytes. At most one chunk
//! is held per request, which bounds memory whatever the blob's size.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::sync::{Arc, Mutex};

/// Chunks are sent once they reach this size...
pub const MIN_CHUNK: usize = 256 << 10;
/// ...and never exceed this one (the storage service's chunk bound).
pub const MAX_CHUNK: usize = trow_proto::transport::CHUNK_SIZE;

/// Where a failed body read is recorded, because a gRPC request stream can only end, not fail.
pub type BodyError = Arc<Mutex<Option<axum::Error>>>;

/// The body's bytes regrouped into bounded chunks. A read error ends the stream and is left in
/// the returned slot for the caller to report.
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
                            *slot.lock().expect("body error slot") = Some(e);
                            return None;
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

/// An HTTP body streaming a storage `ReadBlob` response.
pub fn from_chunks(stream: tonic::Streaming<trow_proto::storage::Chunk>) -> Body {
    Body::from_stream(stream.map(|c| c.map(|c| c.data)))
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
