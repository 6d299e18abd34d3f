//! The backend trait: the few object operations the store needs, so that a filesystem and
//! (later) an S3-compatible bucket can hold the same layout.
//!
//! The contract every backend keeps: `put` and `commit` are atomic and durable — after they
//! return, a crash leaves the new object whole; before, it leaves no object at all. `put_all`
//! is a sequence of puts with the same promise for each, in order.

use bytes::Bytes;
use futures::Stream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;

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

/// One object of a [`Backend::put_all`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Put {
    /// Store these bytes under the key, replacing any old object.
    Bytes(String, Bytes),
    /// Make a finished scratch object durable and move it to `to`, as
    /// [`Backend::commit`] does.
    Moved { from: String, to: String },
    /// An object that exists already with the right bytes, written by an earlier put, batch
    /// or commit (perhaps one still in flight in another task), and that the objects after it
    /// in the batch rely on: it must be durable before they are. Missing is not an error (a
    /// garbage collection may have just deleted it; the caller checks afterwards).
    Existing(String),
    /// An object [`Backend::stage`] already wrote (or, a scratch object, found) and made
    /// durable at `from`: only moved to `to`. A failed batch (or [`Backend::unstage`]) removes
    /// it only when `temp` (a temp file `stage` wrote): a scratch object stays its owner's.
    /// Only a backend whose `stage` makes these needs to handle them in its own batch.
    Staged {
        from: String,
        to: String,
        temp: bool,
    },
}

impl Put {
    pub fn key(&self) -> &str {
        match self {
            Put::Bytes(k, _)
            | Put::Existing(k)
            | Put::Moved { to: k, .. }
            | Put::Staged { to: k, .. } => k,
        }
    }
}

/// The last step of a batch's durability, which [`Backend::put_all_deferred`] leaves to its
/// caller: until it completes, a crash may lose the batch's last object (never one before it).
#[must_use = "the batch's last object is durable only once the flush completes"]
pub struct Flush(Pin<Box<dyn Future<Output = io::Result<()>> + Send>>);

impl Flush {
    /// Nothing left to flush.
    pub fn done() -> Flush {
        Flush(Box::pin(async { Ok(()) }))
    }

    pub fn new(f: impl Future<Output = io::Result<()>> + Send + 'static) -> Flush {
        Flush(Box::pin(f))
    }

    /// Waits until the batch is durable.
    pub async fn wait(self) -> io::Result<()> {
        self.0.await
    }
}

pub trait Backend: Send + Sync + 'static {
    /// Where appends to an upload go: written on the blocking pool, a chunk per call, so that a
    /// chunk is written and hashed in one hand-off and never copied into a buffer first.
    type Appender: std::io::Write + Send + 'static;

    /// Makes what is in the directory `prefix` durable: every rename into it by any writer
    /// so far, and with `deleted` also the deletes from it (which are not tracked). A caller
    /// about to act on what it reads there (a collection or a delete deciding by tags) calls
    /// it first, so that a crash cannot bring back a state it did not see; and after deleting
    /// there, before deleting what those objects named. The default does nothing: an object
    /// store's writes and deletes are durable once visible.
    fn make_durable(
        &self,
        _prefix: &str,
        _deleted: bool,
    ) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Stores a small object atomically and durably, replacing any old one.
    fn put(&self, key: &str, data: Bytes) -> impl Future<Output = io::Result<()>> + Send;

    /// Stores several small objects, each as [`Backend::put`] would, in order: when it returns
    /// every one is durable, and a crash at any point leaves a prefix of the batch (an object is
    /// there only if every one before it is). So one call can write content and the links
    /// that make it reachable. The default puts them one after another, which is all an object
    /// store needs (each put is durable when it returns, and an existing object is durable
    /// once it is visible); the filesystem flushes every object's bytes before the first
    /// rename, then orders the renames with directory fsyncs.
    fn put_all(&self, objects: Vec<Put>) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            for object in objects {
                match object {
                    Put::Bytes(key, data) => self.put(&key, data).await?,
                    Put::Moved { from, to } | Put::Staged { from, to, .. } => {
                        self.commit(&from, &to).await?
                    }
                    Put::Existing(_) => {}
                }
            }
            Ok(())
        }
    }

    /// [`Backend::put_all`], except that it returns once every object is in place (visible, in
    /// batch order, every one but the last durable) and leaves the last one's flush to the
    /// returned [`Flush`]. A caller holds a lock over what must not interleave with other
    /// writers (the checks and the order of the objects), not over that flush, so concurrent
    /// writers flush together (one directory fsync can cover several of their renames). The
    /// default flushes everything before it returns, which is all an object store needs.
    fn put_all_deferred(
        &self,
        objects: Vec<Put>,
    ) -> impl Future<Output = io::Result<Flush>> + Send {
        async move {
            self.put_all(objects).await?;
            Ok(Flush::done())
        }
    }

    /// Does ahead of a batch the part of putting `object` (new bytes, or a scratch object to
    /// move) that needs nothing else: a filesystem writes new bytes to a temp file and fsyncs
    /// it, or fsyncs the scratch file. So a caller can do it before taking a lock and leave
    /// only the move into place to the batch. Returns the batch's entry for it; one that never
    /// goes into a batch is given to [`Backend::unstage`]. The default does nothing until the
    /// batch (an object store's put is one request).
    fn stage(&self, object: Put) -> impl Future<Output = io::Result<Put>> + Send {
        async move { Ok(object) }
    }

    /// Removes what [`Backend::stage`] wrote for an entry that will not be put.
    fn unstage(&self, _staged: Put) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Stores a small object atomically, replacing any old one, but without waiting for it to
    /// be durable: it survives the process (a kill), not necessarily a power loss. For state
    /// whose loss in a power cut costs nothing more than what is lost anyway: an upload's
    /// scratch file and record, whose appended bytes become durable only at the commit, so
    /// after a power loss the upload may have lost its bytes whatever its record says. The
    /// default is `put`.
    fn put_unsynced(&self, key: &str, data: Bytes) -> impl Future<Output = io::Result<()>> + Send {
        self.put(key, data)
    }

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
