//! The backend trait: the few object operations the store needs, so that a filesystem and
//! (later) an S3-compatible bucket can hold the same layout.
//!
//! The contract every backend keeps: `put` and `commit` are atomic and durable — after they
//! return, a crash leaves the new object whole; before, it leaves no object at all.

use bytes::Bytes;
use futures::Stream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;
use tokio::io::AsyncWrite;

pub mod fs;
pub use fs::FsBackend;

/// Bytes of an object, in chunks of at most [`CHUNK_SIZE`] (one gRPC data message).
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Largest chunk a read yields: one gRPC data message.
pub const CHUNK_SIZE: usize = trow_proto::transport::READ_CHUNK_SIZE;

/// A volume's size and what is left of it, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub free: u64,
    pub total: u64,
}

pub trait Backend: Send + Sync + 'static {
    /// Where appends to an upload go.
    type Appender: AsyncWrite + Send + Unpin + 'static;

    /// Stores a small object atomically and durably, replacing any old one.
    fn put(&self, key: &str, data: Bytes) -> impl Future<Output = io::Result<()>> + Send;

    /// Stores an empty marker object that only needs to be seen, not to survive a crash (a
    /// collection's tombstone: a restart removes them all). Cheaper than [`Backend::put`]
    /// where durability costs a flush; the default is `put`.
    fn put_marker(&self, key: &str) -> impl Future<Output = io::Result<()>> + Send {
        self.put(key, Bytes::new())
    }

    /// A small object's bytes, or None.
    fn get(&self, key: &str) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;

    /// An object's size, or None when it does not exist.
    fn size(&self, key: &str) -> impl Future<Output = io::Result<Option<u64>>> + Send;

    /// When an object was last written, or None when it does not exist.
    fn modified(&self, key: &str) -> impl Future<Output = io::Result<Option<SystemTime>>> + Send;

    /// When object `a` was last written and the size of object `b` (each None when absent), in
    /// one call: what `StatBlob` asks of a repository's link and the blob it names, on every
    /// blob HEAD and GET. A filesystem answers both in one hand-off to the blocking pool, whose
    /// round trip (a wake-up there and one back) costs more than the two `stat`s.
    fn modified_and_size(
        &self,
        a: &str,
        b: &str,
    ) -> impl Future<Output = io::Result<(Option<SystemTime>, Option<u64>)>> + Send {
        async move { Ok((self.modified(a).await?, self.size(b).await?)) }
    }

    /// Streams `len` bytes (0: to the end) of an object from `offset`.
    fn read(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = io::Result<ByteStream>> + Send;

    /// Removes an object; missing is fine.
    fn delete(&self, key: &str) -> impl Future<Output = io::Result<()>> + Send;

    /// Removes everything under a prefix; missing is fine.
    fn delete_all(&self, prefix: &str) -> impl Future<Output = io::Result<()>> + Send;

    /// The names directly under a prefix, sorted; empty when there are none.
    fn list(&self, prefix: &str) -> impl Future<Output = io::Result<Vec<String>>> + Send;

    /// Opens an existing scratch object for appending. Never creates one: a scratch object that
    /// is gone belongs to an upload that is over.
    fn append(&self, key: &str) -> impl Future<Output = io::Result<Self::Appender>> + Send;

    /// Makes a finished scratch object durable and moves it to `to` atomically.
    fn commit(&self, from: &str, to: &str) -> impl Future<Output = io::Result<()>> + Send;

    /// Starts making what was appended so far durable, without waiting for it, so that the
    /// commit's flush finds little left to do (a blob's last bytes reach a cache's readers only
    /// after it). A hint: a backend without such a thing does nothing.
    fn write_behind(&self, _appender: &Self::Appender) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The room left for new objects, when the backend has such a limit (a filesystem does;
    /// an object store does not: `None`).
    fn space(&self) -> impl Future<Output = io::Result<Option<Space>>> + Send {
        async { Ok(None) }
    }
}
