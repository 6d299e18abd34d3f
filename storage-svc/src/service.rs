//! The gRPC face of the store: turns requests into [`Store`] calls and results into messages.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use trow_proto::storage::{self as pb, append_upload_request::Part, storage_server::Storage};

use prost::Message;
use trow_proto::transport::MAX_MESSAGE_SIZE;

use crate::backend::Backend;
use crate::error::StorageError;
use crate::store::{FillRole, Garbage, ManifestMeta, Store};

pub struct StorageService<B> {
    store: Arc<Store<B>>,
    /// Ends the long-lived `Watch` streams when the server stops (they would hold its graceful
    /// shutdown open).
    stop: CancellationToken,
    /// Callers are other processes (a TCP listener), whose leases outlive this one's crash
    /// (see `store::changes`).
    remote: bool,
}

impl<B: Backend> StorageService<B> {
    /// The service for callers in other processes.
    pub fn new(store: Arc<Store<B>>) -> Self {
        StorageService {
            store,
            stop: CancellationToken::new(),
            remote: true,
        }
    }

    /// The service whose `Watch` streams end when `stop` is cancelled; `remote`: its callers
    /// are other processes.
    pub fn with_stop(store: Arc<Store<B>>, stop: CancellationToken, remote: bool) -> Self {
        StorageService {
            store,
            stop,
            remote,
        }
    }
}

/// Runs a write to its end in a task of its own, whether or not the caller still waits: a
/// client that goes away mid-way (the request's future dropped) must not cut a manifest put
/// between its stages (leaking staged temp files) or between a tag's move and its flush and
/// publication (caches would keep the old digest), nor an upload's commit between its steps.
async fn detached<T: Send + 'static>(
    write: impl Future<Output = Result<T, StorageError>> + Send + 'static,
) -> Result<T, Status> {
    match tokio::spawn(write).await {
        Ok(done) => Ok(done?),
        Err(e) => Err(Status::internal(format!("the write failed: {e}"))),
    }
}

impl From<ManifestMeta> for pb::ManifestInfo {
    fn from(m: ManifestMeta) -> Self {
        pb::ManifestInfo {
            digest: m.digest,
            media_type: m.media_type,
            size: m.size,
            subject: m.subject.unwrap_or_default(),
        }
    }
}

/// The store as the source of blob bodies served beside the gRPC service
/// (`trow_proto::blob_body`): the same read as `ReadBlob`, its buffers not wrapped in messages;
/// and, in one process, what `ReadFill` and `AppendUpload` do, without their messages.
pub struct BlobBytes<B>(pub Arc<Store<B>>);

impl<B: Backend> trow_proto::blob_body::BlobSource for BlobBytes<B> {
    fn read(
        &self,
        r: pb::ReadBlobRequest,
    ) -> futures::future::BoxFuture<'static, Result<trow_proto::blob_body::ByteStream, Status>>
    {
        let store = self.0.clone();
        Box::pin(async move {
            Ok(store
                .read_blob(&r.repository, &r.digest, r.offset, r.length)
                .await?)
        })
    }

    fn read_fill(
        &self,
        r: pb::ReadBlobRequest,
    ) -> futures::future::BoxFuture<'static, Result<trow_proto::blob_body::Fill, Status>> {
        let store = self.0.clone();
        Box::pin(async move {
            let (size, bytes) = store
                .read_fill(&r.repository, &r.digest, r.offset, r.length)
                .await?;
            let bytes = bytes.map(|c| c.map_err(Status::from));
            Ok((size, Box::pin(bytes) as _))
        })
    }

    fn append(
        &self,
        header: pb::AppendHeader,
        data: trow_proto::blob_body::AppendBytes,
    ) -> futures::future::BoxFuture<'static, Result<u64, Status>> {
        let store = self.0.clone();
        Box::pin(async move { Ok(append(&store, &header, data.map(Ok)).await?) })
    }
}

/// `AppendUpload`'s work, from its header and then its data.
async fn append<B: Backend>(
    store: &Store<B>,
    header: &pb::AppendHeader,
    data: impl Stream<Item = std::result::Result<Bytes, StorageError>> + Send,
) -> std::result::Result<u64, StorageError> {
    if let Some(total) = header.fill_size {
        store.announce_fill_size(&header.repository, &header.upload_id, total)?;
    }
    store
        .append_upload(&header.repository, &header.upload_id, header.offset, data)
        .await
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::Chunk, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> Storage for StorageService<B> {
    async fn stat_blob(&self, req: Request<pb::BlobRef>) -> Result<Response<pb::BlobInfo>, Status> {
        let r = req.into_inner();
        let size = self.store.stat_blob(&r.repository, &r.digest).await?;
        Ok(Response::new(pb::BlobInfo {
            digest: r.digest,
            size,
        }))
    }

    type ReadBlobStream = ChunkStream;

    async fn read_blob(
        &self,
        req: Request<pb::ReadBlobRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = req.into_inner();
        let bytes = self
            .store
            .read_blob(&r.repository, &r.digest, r.offset, r.length)
            .await?;
        let chunks = bytes.map(|c| {
            c.map(|data| pb::Chunk { data })
                .map_err(|e| Status::from(StorageError::Io(e)))
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn delete_blob(&self, req: Request<pb::BlobRef>) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        self.store.delete_blob(&r.repository, &r.digest).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn mount_blob(
        &self,
        req: Request<pb::MountBlobRequest>,
    ) -> Result<Response<pb::BlobInfo>, Status> {
        let r = req.into_inner();
        let size = self
            .store
            .mount_blob(&r.repository, &r.digest, &r.from_repository)
            .await?;
        Ok(Response::new(pb::BlobInfo {
            digest: r.digest,
            size,
        }))
    }

    async fn start_upload(
        &self,
        req: Request<pb::StartUploadRequest>,
    ) -> Result<Response<pb::UploadInfo>, Status> {
        let r = req.into_inner();
        let upload_id = self
            .store
            .start_upload(&r.repository, &r.digest_algorithm)
            .await?;
        Ok(Response::new(pb::UploadInfo { upload_id, size: 0 }))
    }

    async fn append_upload(
        &self,
        req: Request<Streaming<pb::AppendUploadRequest>>,
    ) -> Result<Response<pb::UploadInfo>, Status> {
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::AppendUploadRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(
                    StorageError::UploadInvalid("append must start with a header".into()).into(),
                );
            }
        };
        let data = stream.map(|m| match m {
            Ok(pb::AppendUploadRequest {
                part: Some(Part::Data(d)),
            }) => Ok::<Bytes, StorageError>(d),
            Ok(_) => Err(StorageError::UploadInvalid(
                "only data may follow the header".into(),
            )),
            Err(s) => {
                tracing::info!(status = %s, "upload stream broke off");
                Err(StorageError::UploadInvalid(
                    "upload stream broke off".into(),
                ))
            }
        });
        let size = append(&self.store, &header, data).await?;
        Ok(Response::new(pb::UploadInfo {
            upload_id: header.upload_id,
            size,
        }))
    }

    async fn upload_status(
        &self,
        req: Request<pb::UploadRef>,
    ) -> Result<Response<pb::UploadInfo>, Status> {
        let r = req.into_inner();
        let size = self
            .store
            .upload_status(&r.repository, &r.upload_id)
            .await?;
        Ok(Response::new(pb::UploadInfo {
            upload_id: r.upload_id,
            size,
        }))
    }

    async fn complete_upload(
        &self,
        req: Request<pb::CompleteUploadRequest>,
    ) -> Result<Response<pb::BlobInfo>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        let (repository, id, digest) = (r.repository, r.upload_id, r.digest.clone());
        let size =
            detached(async move { store.complete_upload(&repository, &id, &digest).await }).await?;
        Ok(Response::new(pb::BlobInfo {
            digest: r.digest,
            size,
        }))
    }

    async fn cancel_upload(
        &self,
        req: Request<pb::UploadRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        self.store
            .cancel_upload(&r.repository, &r.upload_id)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn put_manifest(
        &self,
        req: Request<pb::PutManifestRequest>,
    ) -> Result<Response<pb::PutManifestResponse>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        let meta = detached(async move {
            let (repo, reference, kind) = (&r.repository, &r.reference, &r.content_type);
            if r.cached {
                store
                    .put_cached_manifest(repo, reference, kind, r.content)
                    .await
            } else {
                store.put_manifest(repo, reference, kind, r.content).await
            }
        })
        .await?;
        Ok(Response::new(pb::PutManifestResponse {
            digest: meta.digest,
            subject: meta.subject.unwrap_or_default(),
        }))
    }

    async fn get_manifest(
        &self,
        req: Request<pb::ManifestRef>,
    ) -> Result<Response<pb::Manifest>, Status> {
        let r = req.into_inner();
        let (meta, content) = self.store.get_manifest(&r.repository, &r.reference).await?;
        Ok(Response::new(pb::Manifest {
            info: Some(meta.into()),
            content,
        }))
    }

    async fn stat_manifest(
        &self,
        req: Request<pb::ManifestRef>,
    ) -> Result<Response<pb::ManifestInfo>, Status> {
        let r = req.into_inner();
        let meta = self
            .store
            .stat_manifest(&r.repository, &r.reference)
            .await?;
        Ok(Response::new(meta.into()))
    }

    async fn delete_manifest(
        &self,
        req: Request<pb::ManifestRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        // Detached too: a delete cut between removing the manifest and publishing it would
        // leave the gateways' caches serving it.
        let store = self.store.clone();
        detached(async move { store.delete_manifest(&r.repository, &r.reference).await }).await?;
        Ok(Response::new(pb::Empty {}))
    }

    type ListTagsStream = PageStream<pb::NameList>;

    async fn list_tags(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListTagsStream>, Status> {
        let r = req.into_inner();
        let (names, truncated) = self
            .store
            .list_tags(&r.repository, r.limit, &r.last)
            .await?;
        Ok(Response::new(name_pages(names, truncated)))
    }

    type ListRepositoriesStream = PageStream<pb::NameList>;

    async fn list_repositories(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListRepositoriesStream>, Status> {
        let r = req.into_inner();
        let (names, truncated) = self.store.list_repositories(r.limit, &r.last).await?;
        Ok(Response::new(name_pages(names, truncated)))
    }

    type ListReferrersStream = PageStream<pb::ReferrerList>;

    async fn list_referrers(
        &self,
        req: Request<pb::ListReferrersRequest>,
    ) -> Result<Response<Self::ListReferrersStream>, Status> {
        let r = req.into_inner();
        let found = self
            .store
            .list_referrers(&r.repository, &r.digest, &r.artifact_type)
            .await?;
        let mut pages = vec![pb::ReferrerList::default()];
        for d in found {
            let d = pb::Descriptor {
                media_type: d.media_type,
                digest: d.digest,
                size: d.size,
                artifact_type: d.artifact_type.unwrap_or_default(),
                annotations: d.annotations.into_iter().collect(),
            };
            let page = pages.last_mut().expect("one page");
            if !page.manifests.is_empty()
                && page.encoded_len() + d.encoded_len() > MAX_MESSAGE_SIZE / 2
            {
                pages.push(pb::ReferrerList::default());
            }
            pages.last_mut().expect("one page").manifests.push(d);
        }
        Ok(Response::new(Box::pin(futures::stream::iter(
            pages.into_iter().map(Ok),
        ))))
    }

    async fn begin_fill(
        &self,
        req: Request<pb::BeginFillRequest>,
    ) -> Result<Response<pb::FillState>, Status> {
        use pb::fill_state::Role;
        let r = req.into_inner();
        let state = match self.store.begin_fill(&r.repository, &r.digest).await? {
            FillRole::Present => pb::FillState {
                role: Role::Present.into(),
                ..Default::default()
            },
            FillRole::Follower => pb::FillState {
                role: Role::Follower.into(),
                ..Default::default()
            },
            FillRole::Filler { upload_id, offset } => pb::FillState {
                role: Role::Filler.into(),
                upload_id,
                offset,
            },
        };
        Ok(Response::new(state))
    }

    type ReadFillStream = Pin<Box<dyn Stream<Item = Result<pb::FillPart, Status>> + Send>>;

    async fn read_fill(
        &self,
        req: Request<pb::ReadBlobRequest>,
    ) -> Result<Response<Self::ReadFillStream>, Status> {
        use pb::fill_part::Part;
        let r = req.into_inner();
        let (size, bytes) = self
            .store
            .read_fill(&r.repository, &r.digest, r.offset, r.length)
            .await?;
        let header = pb::FillPart {
            part: Some(Part::Header(pb::BlobInfo {
                digest: r.digest,
                size,
            })),
        };
        let data = bytes.map(|c| {
            c.map(|d| pb::FillPart {
                part: Some(Part::Data(d)),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(header) }).chain(data),
        )))
    }

    type CollectGarbageStream = PageStream<pb::GarbageReport>;

    async fn collect_garbage(
        &self,
        req: Request<pb::CollectGarbageRequest>,
    ) -> Result<Response<Self::CollectGarbageStream>, Status> {
        use pb::garbage_report::Part;
        let dry_run = req.into_inner().dry_run;
        let (tx, rx) = tokio::sync::mpsc::channel(GARBAGE_LISTED);
        let store = self.store.clone();
        // Runs to the end even if the caller goes away: every step leaves a consistent store,
        // and a collection half done is no use to anyone.
        tokio::spawn(async move {
            let mut unlisted = 0u64;
            let mut listed = |g: Garbage| {
                if tx.try_send(Ok(garbage_item(g))).is_err() {
                    unlisted += 1;
                }
            };
            let outcome = store.collect_garbage(dry_run, &mut listed).await;
            let last = outcome.map_err(Status::from).map(|s| pb::GarbageReport {
                part: Some(Part::Summary(pb::GarbageSummary {
                    repositories: s.repositories,
                    tags: s.tags,
                    manifests: s.manifests,
                    links: s.links,
                    blobs: s.blobs,
                    bytes: s.bytes,
                    rescued: s.rescued,
                    elapsed_ms: s.elapsed.as_millis() as u64,
                    unlisted,
                    dry_run,
                })),
            });
            if let Ok(s) = &last {
                tracing::info!(dry_run, summary = ?s.part, "garbage collection finished");
            }
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

    async fn watch(
        &self,
        _req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use pb::watch_event::Kind;
        let changes = self.store.changes();
        let (sub, queue) = changes.subscribe();
        let hello = pb::WatchEvent {
            kind: Some(Kind::Hello(pb::WatchHello {
                watcher: sub.id(),
                lease_ms: changes.lease().as_millis() as u32,
                digest_fresh_ms: self
                    .store
                    .digest_freshness()
                    .map_or(0, |d| d.as_millis() as u64),
            })),
        };
        let ended = sub.ended();
        let stop = self.stop.clone().cancelled_owned();
        let changed = tokio_stream::wrappers::ReceiverStream::new(queue).map(move |c| {
            // The stream owns the subscription: a watcher whose stream is gone is dropped.
            let _held = &sub;
            Ok(pb::WatchEvent {
                kind: Some(Kind::Changed(pb::Changed {
                    seq: c.seq,
                    repository: c.repository,
                })),
            })
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(hello) })
                .chain(changed)
                .take_until(async move {
                    tokio::select! {
                        _ = ended => {}
                        _ = stop => {}
                    }
                }),
        )))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::Lease>, Status> {
        let r = req.into_inner();
        // A lease a crash of this process could forget is never granted: the watcher keeps
        // asking storage meanwhile.
        if self.remote {
            self.store.record_remote_lease().await?;
        }
        let through = self
            .store
            .changes()
            .ack(r.watcher, r.applied)
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(pb::Lease { through }))
    }

    async fn unwatch(&self, req: Request<pb::Watcher>) -> Result<Response<pb::Empty>, Status> {
        self.store.changes().unwatch(req.into_inner().watcher);
        Ok(Response::new(pb::Empty {}))
    }
}

/// Items of a collection held for a slow reader; past that they are only counted.
const GARBAGE_LISTED: usize = 4096;

fn garbage_item(g: Garbage) -> pb::GarbageReport {
    use pb::garbage_item::Kind;
    let item = match g {
        Garbage::Manifest { repository, digest } => pb::GarbageItem {
            kind: Kind::Manifest as i32,
            repository,
            digest,
            ..Default::default()
        },
        Garbage::Link { repository, digest } => pb::GarbageItem {
            kind: Kind::Link as i32,
            repository,
            digest,
            ..Default::default()
        },
        Garbage::Blob { digest, size } => pb::GarbageItem {
            kind: Kind::Blob as i32,
            digest,
            size,
            ..Default::default()
        },
        Garbage::Tag {
            repository,
            tag,
            rule,
        } => pb::GarbageItem {
            kind: Kind::Tag as i32,
            repository,
            tag,
            rule,
            ..Default::default()
        },
    };
    pb::GarbageReport {
        part: Some(pb::garbage_report::Part::Item(item)),
    }
}

/// A listing as a stream of pages: listings have no size limit, messages do.
type PageStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Names per page: well under the message limit even for 255-character repository names.
const NAMES_PER_PAGE: usize = 10_000;

fn name_pages(names: Vec<String>, truncated: bool) -> PageStream<pb::NameList> {
    let mut pages: Vec<pb::NameList> = names
        .chunks(NAMES_PER_PAGE)
        .map(|c| pb::NameList {
            names: c.to_vec(),
            truncated: false,
        })
        .collect();
    match pages.last_mut() {
        Some(last) => last.truncated = truncated,
        None => pages.push(pb::NameList {
            names: Vec::new(),
            truncated,
        }),
    }
    Box::pin(futures::stream::iter(pages.into_iter().map(Ok)))
}
