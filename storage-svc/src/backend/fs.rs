//! The filesystem backend: one file per key under a root directory.
//!
//! Durability follows the classic recipe: write a temp file under `tmp/` (same filesystem), fsync
//! it, rename it over the target, fsync the target's directory. A crash before the rename leaves
//! only a file under `tmp/`, which the store sweeps. Directories are created durably too: each new
//! one is fsync'd into its parent, so a file renamed into it cannot vanish with it in a crash.
//!
//! The backend remembers which directories have a rename of its own not yet fsync'd (see
//! [`Dirs`]), so an object that a batch only relies on (`Put::Existing`) costs no flush when
//! its directory has nothing left to write.

use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Backend, ByteStream, CHUNK_SIZE, Flush, Put, Space};
use crate::layout;

#[derive(Clone, Debug)]
pub struct FsBackend {
    root: PathBuf,
    dirs: Arc<Dirs>,
}

/// Which directories may hold a rename that is not durable yet, so that an existing object's
/// directory is fsync'd only when it may need it. A directory is known durable once this
/// process fsync'd it (which covers every rename a previous process left unsynced) and every
/// rename of this process into it since was followed by a successful fsync of it. A rename is
/// counted before it happens and uncounted only after such a fsync, so whoever sees a renamed
/// file either sees it counted or its fsync done; a failed fsync leaves it counted for good
/// (the directory is fsync'd by every later user). Renames of `put_unsynced` are not counted:
/// nothing relies on those objects being durable.
#[derive(Debug, Default)]
struct Dirs(Mutex<DirsInner>);

/// Directories remembered as fsync'd at most (about 150 KiB of paths).
const SYNCED_DIRS_MAX: usize = 1024;

#[derive(Debug, Default)]
struct DirsInner {
    /// Renames into the directory not yet followed by a fsync of it.
    unsynced: HashMap<PathBuf, usize>,
    /// Directories this process fsync'd at least once.
    synced: HashSet<PathBuf>,
}

impl Dirs {
    fn renaming(&self, dir: &Path) {
        let mut d = self.0.lock().expect("dirs lock");
        *d.unsynced.entry(dir.to_path_buf()).or_default() += 1;
    }

    /// A counted rename did not happen.
    fn not_renamed(&self, dir: &Path) {
        self.uncount(&mut self.0.lock().expect("dirs lock"), dir, 1);
    }

    /// `dir` was fsync'd after `renames` counted renames into it.
    fn synced(&self, dir: &Path, renames: usize) {
        let mut d = self.0.lock().expect("dirs lock");
        self.uncount(&mut d, dir, renames);
        if !d.synced.contains(dir) {
            // Forgetting is safe (it costs one fsync more): the memory stays bounded however
            // many repositories the store has.
            if d.synced.len() >= SYNCED_DIRS_MAX {
                d.synced.clear();
            }
            d.synced.insert(dir.to_path_buf());
        }
    }

    fn uncount(&self, d: &mut DirsInner, dir: &Path, renames: usize) {
        if renames == 0 {
            return;
        }
        if let Some(n) = d.unsynced.get_mut(dir) {
            *n -= renames;
            if *n == 0 {
                d.unsynced.remove(dir);
            }
        }
    }

    fn durable(&self, dir: &Path) -> bool {
        let d = self.0.lock().expect("dirs lock");
        d.synced.contains(dir) && !d.unsynced.contains_key(dir)
    }

    /// Renames `from` to `to` in `dir`, counted until [`Dirs::sync`] of `dir`.
    fn rename(&self, from: &Path, to: &Path, dir: &Path) -> io::Result<()> {
        self.renaming(dir);
        let renamed = std::fs::rename(from, to);
        if renamed.is_err() {
            self.not_renamed(dir);
        }
        renamed
    }

    /// Fsyncs `dir` (missing: nothing to do) unless it is known durable; `deleted`: whatever
    /// is known, for files were removed from it (deletes are not counted).
    fn make_durable(&self, dir: &Path, deleted: bool) -> io::Result<()> {
        if !deleted && self.durable(dir) {
            return Ok(());
        }
        match sync_dir(dir) {
            Ok(()) => {
                self.synced(dir, 0);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Fsyncs `dir` after `renames` counted renames into it; with none, only if it may hold
    /// another writer's rename that is not durable yet.
    fn sync(&self, dir: &Path, renames: usize) -> io::Result<()> {
        if renames == 0 && self.durable(dir) {
            return Ok(());
        }
        sync_dir(dir)?;
        self.synced(dir, renames);
        Ok(())
    }
}

impl FsBackend {
    /// A backend rooted at `root`, which is created if missing.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<FsBackend> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(FsBackend {
            root: root.canonicalize()?,
            dirs: Default::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes the temp files the first layout wrote next to their targets (`.tmp-*`), once:
    /// a store that has `tmp/` was never written that way. Call it before serving.
    pub fn remove_legacy_temp_files(&self) -> io::Result<usize> {
        let tmp = self.root.join(layout::TMP);
        if tmp.is_dir() {
            return Ok(0);
        }
        let found = legacy_temp_files(&self.root)?;
        for (path, _) in &found {
            ok_if_missing(std::fs::remove_file(path))?;
        }
        create_dirs_durably(&tmp)?;
        Ok(found.len())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn sources(&self, objects: Vec<Put>) -> Vec<(PathBuf, Source)> {
        objects
            .into_iter()
            .map(|o| match o {
                Put::Bytes(key, data) => (self.path(&key), Source::Bytes(data)),
                Put::Moved { from, to } => (self.path(&to), Source::Moved(self.path(&from))),
                Put::Staged { from, to, temp } => {
                    (self.path(&to), Source::Staged(self.path(&from), temp))
                }
                Put::Existing(key) => (self.path(&key), Source::Existing),
            })
            .collect()
    }
}

fn none_if_missing<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn ok_if_missing(r: io::Result<()>) -> io::Result<()> {
    none_if_missing(r).map(|_| ())
}

/// Where the first layout put temp files: next to their targets, as `.tmp-<uuid>`.
pub const LEGACY_TMP_PREFIX: &str = ".tmp-";

/// Every `.tmp-*` file under `root`, with its modification time. A walk of the whole tree:
/// `list` hides dot files.
pub fn legacy_temp_files(root: &Path) -> io::Result<Vec<(PathBuf, std::time::SystemTime)>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else if entry
                .file_name()
                .to_string_lossy()
                .starts_with(LEGACY_TMP_PREFIX)
            {
                found.push((entry.path(), entry.metadata()?.modified()?));
            }
        }
    }
    Ok(found)
}

/// Fsyncs a directory so that a rename into it survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `create_dir_all`, fsyncing each parent that gained a directory.
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().expect("data paths have a parent");
    create_dirs_durably(parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        // Another writer made it first; it fsyncs the parent.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

fn put_blocking(root: &Path, dirs: &Dirs, path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("keys have a parent");
    create_dirs_durably(dir)?;
    let tmp = write_temp(root, data)?;
    let result = dirs.rename(&tmp, path, dir);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    dirs.sync(dir, 1)
}

/// A new file under `tmp/` holding `data`, fsync'd; nothing is left of it on failure.
fn write_temp(root: &Path, data: &[u8]) -> io::Result<PathBuf> {
    let tmp_dir = root.join(layout::TMP);
    create_dirs_durably(&tmp_dir)?;
    let tmp = tmp_dir.join(uuid::Uuid::new_v4().to_string());
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// What `put_all` does with one object of a batch on the filesystem.
enum Source {
    /// New bytes, written to a temp file first.
    Bytes(Bytes),
    /// A scratch file, moved into place.
    Moved(PathBuf),
    /// A file `stage` wrote (or found) and fsync'd, moved into place; `true`: a temp file
    /// `stage` wrote, removed if the batch fails (a scratch file stays its upload's).
    Staged(PathBuf, bool),
    /// Already in place: only its directory is made durable.
    Existing,
}

/// A new object of a batch, durable in its temp (or scratch) file but not yet in place.
struct Staged {
    from: PathBuf,
    /// A temp file of ours, removed if the batch fails.
    temp: bool,
    path: PathBuf,
}

/// `put_all` on the filesystem: every new object is written to a temp file, then all temp and
/// scratch files are fsync'd before any rename (on a journaling filesystem the first fsync
/// commits them all; without a journal each still costs its own flush).
/// Then the objects go into place in batch order, each one's directory fsync'd before the next
/// is renamed, so the batch reaches the disk in order even on a filesystem that keeps no order
/// of its own among metadata writes (ext4 without a journal, ext2): a crash leaves a prefix of
/// the batch, and before the renames only temp files. An existing object costs the fsync of its
/// directory only while that may hold a rename not durable yet (see [`Dirs`]).
///
/// With `defer_last`, the last object's directory is not fsync'd: it is returned, with the
/// renames into it, for the caller to sync ([`Dirs::sync`]) when it likes.
fn put_all_blocking(
    root: &Path,
    dirs: &Dirs,
    objects: &[(PathBuf, Source)],
    defer_last: bool,
) -> io::Result<Option<(PathBuf, usize)>> {
    let tmp_dir = root.join(layout::TMP);
    create_dirs_durably(&tmp_dir)?;
    let mut staged: Vec<Option<Staged>> = Vec::with_capacity(objects.len());
    let written = (|| {
        let mut files = Vec::new();
        for (path, source) in objects {
            create_dirs_durably(path.parent().expect("keys have a parent"))?;
            match source {
                Source::Existing => staged.push(None),
                Source::Staged(from, temp) => staged.push(Some(Staged {
                    from: from.clone(),
                    temp: *temp,
                    path: path.clone(),
                })),
                Source::Moved(from) => {
                    files.push(std::fs::File::open(from)?);
                    staged.push(Some(Staged {
                        from: from.clone(),
                        temp: false,
                        path: path.clone(),
                    }));
                }
                Source::Bytes(data) => {
                    let tmp = tmp_dir.join(uuid::Uuid::new_v4().to_string());
                    let mut f = std::fs::File::create(&tmp)?;
                    staged.push(Some(Staged {
                        from: tmp,
                        temp: true,
                        path: path.clone(),
                    }));
                    f.write_all(data)?;
                    files.push(f);
                }
            }
        }
        files.iter().try_for_each(|f| f.sync_all())?;
        let last = objects.len().saturating_sub(1);
        for (i, ((path, _), staged)) in objects.iter().zip(staged.iter_mut()).enumerate() {
            let dir = path.parent().expect("keys have a parent");
            let mut renames = 0;
            if let Some(s) = staged.take() {
                dirs.rename(&s.from, &s.path, dir)?;
                renames = 1;
            }
            if defer_last && i == last {
                return Ok(Some((dir.to_path_buf(), renames)));
            }
            dirs.sync(dir, renames)?;
        }
        Ok(None)
    })();
    if written.is_err() {
        for s in staged.into_iter().flatten().filter(|s| s.temp) {
            let _ = std::fs::remove_file(&s.from);
        }
        // Staged temp files the batch failed before reaching (one it moved is gone from there).
        for (_, source) in objects {
            if let Source::Staged(from, true) = source {
                let _ = std::fs::remove_file(from);
            }
        }
    }
    written
}

/// Chunks read from the file in one blocking call; also the channel's bound, so the next batch
/// is read once the consumer took the last one, while the gRPC stream still sends what it holds.
/// One blocking call per batch rather than per chunk halves the hand-offs to the blocking pool
/// and back (each costs several context switches), and a stalled reader still holds no more
/// than this one batch here.
const READ_BATCH: usize = 2;

/// Reads up to `want` bytes at `offset`: all of them unless the file ends first; empty at its
/// end. One `pread` in the usual case, straight into the buffer's spare capacity (no zeroing
/// pass); `read_to_end` would start at 8 KiB and double, six calls per 256 KiB.
fn read_at(file: &std::fs::File, offset: u64, want: usize) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(want);
    while buf.len() < want {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The allocator may have given more capacity than asked, and `pread` fills all of it.
    buf.truncate(want);
    Ok(Bytes::from(buf))
}

/// The size of the next batch of a read with `remaining` bytes to go.
fn batch_len(remaining: u64) -> usize {
    remaining.min((READ_BATCH * CHUNK_SIZE) as u64) as usize
}

/// Sends a batch as chunk-sized slices of its one buffer (no copy), one per permit.
fn send_batch(permits: tokio::sync::mpsc::PermitIterator<'_, io::Result<Bytes>>, mut batch: Bytes) {
    for permit in permits {
        if batch.is_empty() {
            break;
        }
        permit.send(Ok(batch.split_to(batch.len().min(CHUNK_SIZE))));
    }
}

/// Feeds `tx` with the file's chunks from `offset` until `remaining` bytes are sent, the file
/// ends, a read fails or the reader goes away. Each read borrows a blocking thread only while it
/// reads; the wait for a slow consumer is an async wait for room in the channel, so no number of
/// stalled readers can take the blocking pool that every other disk operation needs.
async fn read_chunks(
    file: std::fs::File,
    mut offset: u64,
    mut remaining: u64,
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) {
    let file = std::sync::Arc::new(file);
    while remaining > 0 {
        let want = batch_len(remaining);
        // Room for the whole batch first: nothing is read that the channel cannot take, and a
        // closed channel means the reader went away.
        let Ok(permits) = tx.reserve_many(want.div_ceil(CHUNK_SIZE)).await else {
            return;
        };
        let f = file.clone();
        let read = tokio::task::spawn_blocking(move || read_at(&f, offset, want))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        let batch = match read {
            Ok(batch) => batch,
            Err(e) => {
                if let Some(p) = permits.into_iter().next() {
                    p.send(Err(e));
                }
                return;
            }
        };
        let got = batch.len();
        send_batch(permits, batch);
        if got < want {
            // The file ended.
            return;
        }
        offset += got as u64;
        remaining -= got as u64;
    }
}

fn commit_blocking(dirs: &Dirs, from: &Path, to: &Path) -> io::Result<()> {
    std::fs::File::open(from)?.sync_all()?;
    let dir = to.parent().expect("keys have a parent");
    create_dirs_durably(dir)?;
    dirs.rename(from, to, dir)?;
    dirs.sync(dir, 1)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

impl Backend for FsBackend {
    type Appender = std::fs::File;

    async fn put(&self, key: &str, data: Bytes) -> io::Result<()> {
        let (root, dirs, path) = (self.root.clone(), self.dirs.clone(), self.path(key));
        blocking(move || put_blocking(&root, &dirs, &path, &data)).await
    }

    async fn put_all(&self, objects: Vec<Put>) -> io::Result<()> {
        // Only existing objects in directories with nothing left to flush (a PUT of a known
        // manifest): nothing to do, and no hand-off to the blocking pool for it.
        if objects.iter().all(|o| match o {
            Put::Existing(key) => self
                .dirs
                .durable(self.path(key).parent().expect("keys have a parent")),
            _ => false,
        }) {
            return Ok(());
        }
        let (root, dirs, objects) = (self.root.clone(), self.dirs.clone(), self.sources(objects));
        blocking(move || put_all_blocking(&root, &dirs, &objects, false).map(drop)).await
    }

    /// The batch with its last directory fsync left to the flush. Concurrent flushes of one
    /// directory (tags moved in one repository) are concurrent fsyncs of it: the block layer
    /// merges their cache flushes, and each covers every rename before it.
    async fn put_all_deferred(&self, objects: Vec<Put>) -> io::Result<Flush> {
        let (root, dirs, objects) = (self.root.clone(), self.dirs.clone(), self.sources(objects));
        let d = dirs.clone();
        let Some((dir, renames)) =
            blocking(move || put_all_blocking(&root, &d, &objects, true)).await?
        else {
            return Ok(Flush::done());
        };
        Ok(Flush::new(async move {
            blocking(move || dirs.sync(&dir, renames)).await
        }))
    }

    /// New bytes: a temp file under `tmp/`, written and fsync'd; a scratch file: fsync'd. The
    /// batch only renames it.
    async fn stage(&self, object: Put) -> io::Result<Put> {
        match object {
            Put::Bytes(key, data) => {
                let root = self.root.clone();
                let tmp = blocking(move || write_temp(&root, &data)).await?;
                let name = tmp.file_name().expect("a temp file has a name");
                Ok(Put::Staged {
                    from: format!("{}/{}", layout::TMP, name.to_string_lossy()),
                    to: key,
                    temp: true,
                })
            }
            Put::Moved { from, to } => {
                let path = self.path(&from);
                blocking(move || std::fs::File::open(path)?.sync_all()).await?;
                Ok(Put::Staged {
                    from,
                    to,
                    temp: false,
                })
            }
            other => Ok(other),
        }
    }

    async fn unstage(&self, staged: Put) {
        if let Put::Staged {
            from, temp: true, ..
        } = staged
        {
            let _ = self.delete(&from).await;
        }
    }

    /// Costs nothing when the directory is known durable (see [`Dirs`]).
    async fn make_durable(&self, prefix: &str, deleted: bool) -> io::Result<()> {
        let (dirs, dir) = (self.dirs.clone(), self.path(prefix));
        if !deleted && dirs.durable(&dir) {
            return Ok(());
        }
        blocking(move || dirs.make_durable(&dir, deleted)).await
    }

    /// A temp file renamed into place (whole or absent after a kill), no fsync.
    async fn put_unsynced(&self, key: &str, data: Bytes) -> io::Result<()> {
        let (root, path) = (self.root.clone(), self.path(key));
        blocking(move || {
            std::fs::create_dir_all(path.parent().expect("keys have a parent"))?;
            let tmp_dir = root.join(layout::TMP);
            std::fs::create_dir_all(&tmp_dir)?;
            let tmp = tmp_dir.join(uuid::Uuid::new_v4().to_string());
            let written = std::fs::write(&tmp, &data).and_then(|()| std::fs::rename(&tmp, &path));
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written
        })
        .await
    }

    /// A plain create: no temp file, no fsync (an empty file is whole or absent).
    async fn put_marker(&self, key: &str) -> io::Result<()> {
        let path = self.path(key);
        blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::File::create(&path).map(drop)
        })
        .await
    }

    async fn get(&self, key: &str) -> io::Result<Option<Bytes>> {
        none_if_missing(tokio::fs::read(self.path(key)).await).map(|o| o.map(Bytes::from))
    }

    async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        let meta = none_if_missing(tokio::fs::metadata(self.path(key)).await)?;
        Ok(meta.filter(|m| m.is_file()).map(|m| m.len()))
    }

    async fn modified(&self, key: &str) -> io::Result<Option<std::time::SystemTime>> {
        match none_if_missing(tokio::fs::metadata(self.path(key)).await)? {
            Some(m) => Ok(Some(m.modified()?)),
            None => Ok(None),
        }
    }

    async fn modified_and_size(
        &self,
        a: &str,
        b: &str,
    ) -> io::Result<(Option<std::time::SystemTime>, Option<u64>)> {
        let (a, b) = (self.path(a), self.path(b));
        blocking(move || {
            let modified = match none_if_missing(std::fs::metadata(a))? {
                Some(m) => Some(m.modified()?),
                None => None,
            };
            let size = none_if_missing(std::fs::metadata(b))?;
            Ok((modified, size.filter(|m| m.is_file()).map(|m| m.len())))
        })
        .await
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> io::Result<ByteStream> {
        let path = self.path(key);
        let limit = if len == 0 { u64::MAX } else { len };
        let want = batch_len(limit);
        // The open and the first batch in one hand-off to the blocking pool, so the first byte
        // waits for one round trip there, not two; a failing first read is an error here,
        // before any answer has started.
        let (file, first) = blocking(move || {
            let file = std::fs::File::open(path)?;
            let first = read_at(&file, offset, want)?;
            Ok((file, first))
        })
        .await?;
        // One task per stream, reading straight into the chunks it sends (no copy). The channel's
        // bound is the read-ahead.
        let (tx, rx) = tokio::sync::mpsc::channel(READ_BATCH);
        let got = first.len();
        if got > 0 {
            let permits = tx
                .try_reserve_many(got.div_ceil(CHUNK_SIZE))
                .expect("a new channel has room for one batch");
            send_batch(permits, first);
        }
        // Short of the batch: the file ended. A read that fit in one batch needs no task.
        if got == want && limit > got as u64 {
            tokio::spawn(read_chunks(
                file,
                offset + got as u64,
                limit - got as u64,
                tx,
            ));
        }
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        ok_if_missing(tokio::fs::remove_file(self.path(key)).await)
    }

    async fn delete_all(&self, prefix: &str) -> io::Result<()> {
        ok_if_missing(tokio::fs::remove_dir_all(self.path(prefix)).await)
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        let Some(mut dir) = none_if_missing(tokio::fs::read_dir(self.path(prefix)).await)? else {
            return Ok(names);
        };
        while let Some(entry) = dir.next_entry().await? {
            if let Ok(name) = entry.file_name().into_string()
                && !name.starts_with('.')
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn append(&self, key: &str) -> io::Result<std::fs::File> {
        let path = self.path(key);
        blocking(move || std::fs::OpenOptions::new().append(true).open(path)).await
    }

    async fn commit(&self, from: &str, to: &str) -> io::Result<()> {
        let (dirs, from, to) = (self.dirs.clone(), self.path(from), self.path(to));
        blocking(move || commit_blocking(&dirs, &from, &to)).await
    }

    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)` on a duplicate of the file, on a blocking
    /// thread (it can wait for the device's queue), not awaited: the kernel starts writing the
    /// dirty pages back now, so the commit's fsync waits only for the last few.
    async fn write_behind(&self, appender: &std::fs::File) {
        let Ok(file) = appender.try_clone() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: the fd is valid while `file` lives, which is until this returns; the
                // call only reads its arguments.
                unsafe {
                    libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
                };
            }
            drop(file);
        });
    }

    /// `statvfs` of the root: the blocks an unprivileged writer may still use, of all.
    async fn space(&self) -> io::Result<Option<Space>> {
        let root = self.root.clone();
        blocking(move || {
            use std::os::unix::ffi::OsStrExt;
            let path = std::ffi::CString::new(root.as_os_str().as_bytes())
                .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
            // SAFETY: `statvfs` is plain old data; all zeroes is a valid value of it.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: `path` is a valid C string and `st` a valid out-pointer for the call.
            if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let block = st.f_frsize as u64;
            Ok(Some(Space {
                free: st.f_bavail as u64 * block,
                total: st.f_blocks as u64 * block,
            }))
        })
        .await
    }
}
