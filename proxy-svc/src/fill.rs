//! Blobs through the cache: a blob that is not cached is filled through storage (see
//! `BeginFill` in storage.proto): one upstream fetch per blob however many clients and
//! replicas ask; every client reads the fill back as it grows, so the first byte does not wait
//! for the layer, and a slow client slows nobody. The bytes move through bounded buffers, with
//! back-pressure from storage to the upstream read.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use std::sync::Arc;
use tonic::{Code, Status};
use tracing::Instrument;
use trow_proto::oci_code::{self, ErrorCode};
use trow_proto::proxy::CacheStatus;
use trow_proto::storage::{self as st, storage_client::StorageClient};
use trow_proto::transport::READ_CHUNK_SIZE;
use trow_proto::trust::Channel;

use crate::reference::Target;
use crate::service::{ProxyService, header_str, upstream_status};
use crate::size;
use crate::upstream::{Upstreams, min_rate};

impl ProxyService {
    /// A blob's size and whether it is cached: from storage, else from the upstream's `HEAD`
    /// (nothing is fetched), refused when it is over `max_blob_size`.
    pub(crate) async fn blob_size(
        &self,
        t: &Target,
        digest: &str,
    ) -> Result<(u64, CacheStatus), Status> {
        let cached = self
            .storage
            .clone()
            .stat_blob(st::BlobRef {
                repository: t.cache_repository.clone(),
                digest: digest.to_string(),
            })
            .await;
        match cached {
            Ok(b) => {
                return Ok((b.into_inner().size, CacheStatus::Hit));
            }
            Err(s) if s.code() != Code::NotFound || self.offline => return Err(s),
            Err(_) => {}
        }
        let resp = self
            .upstreams
            .send(
                t,
                Method::HEAD,
                &format!("blobs/{}", digest),
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
        within_cap(&t.upstream.host, digest, size, self.max_blob_size)?;
        Ok((size, CacheStatus::Miss))
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
                    audit: self.audit.clone(),
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
pub(crate) struct Filler {
    pub(crate) audit: crate::audit::Audit,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) storage: StorageClient<Channel>,
    pub(crate) target: Target,
    pub(crate) digest: String,
    pub(crate) upload_id: String,
    pub(crate) offset: u64,
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
        // The fill outlives the call that started it; its span (traces only) keeps it in the
        // pull's trace.
        let span = tracing::debug_span!("proxy.blob.fill", digest = %self.digest, total);
        let in_progress = crate::metrics::fill_started(t);
        tokio::spawn(
            async move {
                let _in_progress = in_progress;
                let stored = self.store(resp).await;
                if let Err(e) = &stored {
                    tracing::warn!(upstream = %self.target.upstream.host, digest = %self.digest,
                        error = %e, "filling a blob failed");
                }
                self.audit.blob_fetched(
                    &self.target,
                    &self.digest,
                    total - self.offset.min(total),
                    stored.is_ok(),
                );
            }
            .instrument(span),
        );
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
        let target = t.clone();
        let data = regroup(body).map(move |c| match c {
            Ok(data) => st::AppendUploadRequest {
                part: Some(st::append_upload_request::Part::Data(data)),
            },
            // Ends the append: the bytes so far stay, and a reader that finds the fill stalled
            // takes it over from there.
            Err(e) => {
                tracing::warn!(upstream = %host, error = %e, "upstream blob download broke off");
                crate::metrics::body_failed(&target);
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
    pub(crate) async fn store_bytes(&self, content: Bytes) -> Result<(), Status> {
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

    pub(crate) async fn cancel(&self) {
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

/// Upstream bodies arrive in pieces of any size; storage flushes each chunk of a fill for its
/// readers, so small pieces that are ready are gathered into chunks of up to 256 KiB. A piece
/// that is already big (a fast upstream fills hyper's read buffer) goes on as it is, cut to
/// chunks without a copy: copying every byte once more is a cost a cold pull pays in full.
///
/// At most one chunk (plus the piece that completes it), or one piece, is held: a chunk goes out
/// before the next piece is read, so an upstream faster than storage waits on storage (the gRPC
/// stream's flow control stops polling this stream) instead of piling its bytes up here. Bytes
/// that arrived before an error go out before it: they are good, and a take-over resumes after
/// them.
fn regroup<S>(body: S) -> impl Stream<Item = reqwest::Result<Bytes>>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    /// A piece at least this big is passed on rather than copied into a chunk.
    const PASS_ON: usize = READ_CHUNK_SIZE / 4;
    enum State<S> {
        /// The body, small pieces being gathered, and the rest of a big piece being passed on.
        Reading(std::pin::Pin<Box<S>>, BytesMut, Bytes),
        Failed(reqwest::Error),
        Done,
    }
    futures::stream::unfold(
        State::Reading(Box::pin(body), BytesMut::new(), Bytes::new()),
        |state| async move {
            let (mut body, mut buf, mut big) = match state {
                State::Reading(body, buf, big) => (body, buf, big),
                State::Failed(e) => return Some((Err(e), State::Done)),
                State::Done => return None,
            };
            loop {
                if !big.is_empty() {
                    let out = big.split_to(big.len().min(READ_CHUNK_SIZE));
                    return Some((Ok(out), State::Reading(body, buf, big)));
                }
                if buf.len() >= READ_CHUNK_SIZE {
                    let out = buf.split_to(READ_CHUNK_SIZE).freeze();
                    return Some((Ok(out), State::Reading(body, buf, big)));
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
                            return Some((Ok(out), State::Reading(body, buf, big)));
                        }
                    }
                };
                match next {
                    Some(Ok(piece)) if buf.is_empty() && piece.len() >= PASS_ON => big = piece,
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
pub(crate) fn within_cap(
    host: &str,
    digest: &str,
    size: u64,
    cap: Option<u64>,
) -> Result<(), Status> {
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

    /// Big pieces, mixed with small ones: passed on in chunks of at most 256 KiB, every byte in
    /// order, and never more than one piece read ahead of what was taken.
    #[tokio::test]
    async fn regroup_passes_big_pieces_on() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let sizes: Vec<usize> = (0..200)
            .map(|i| match i % 4 {
                0 => 700 << 10,
                1 => 3 << 10,
                2 => READ_CHUNK_SIZE / 4,
                _ => 100 << 10,
            })
            .collect();
        let total: usize = sizes.iter().sum();
        let biggest = *sizes.iter().max().unwrap();
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = pulled.clone();
        let body =
            futures::stream::iter(sizes.clone().into_iter().enumerate()).map(move |(i, n)| {
                counter.fetch_add(n, Ordering::SeqCst);
                Ok::<_, reqwest::Error>(Bytes::from(vec![(i % 251) as u8; n]))
            });
        let mut expected = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| std::iter::repeat_n((i % 251) as u8, *n));
        let mut chunks = Box::pin(regroup(body));
        let mut taken = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.unwrap();
            assert!(!chunk.is_empty() && chunk.len() <= READ_CHUNK_SIZE);
            taken += chunk.len();
            let ahead = pulled.load(Ordering::SeqCst) - taken;
            assert!(
                ahead <= biggest.max(READ_CHUNK_SIZE),
                "{ahead} bytes read ahead"
            );
            assert!(chunk.iter().all(|b| Some(*b) == expected.next()));
        }
        assert_eq!(taken, total);
    }
}
