//! Appending to the audit log: one thread owns the newest file. Producers queue batches and
//! wait on a oneshot; the thread takes everything queued, writes it in one `write`, then (when
//! the mode asks it of any event in the group, see [`SyncMode`]) fdatasyncs once and
//! acknowledges the whole group. A write of whole lines that a
//! crash cuts short leaves a torn last line: readers skip it, and [`Writer::open`] cuts it
//! before appending, so the next line starts clean.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use trow_proto::audit::Event;

use super::{AuditConfig, Line, READS_SYNC_PERIOD, SyncMode, file_path, files, must_sync};

/// Why events could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("writing the audit log failed: {0}")]
    Io(String),
    #[error("the audit log is closed")]
    Closed,
}

type Ack = oneshot::Sender<Result<(), AuditError>>;

/// A handle on the log: cheap to clone; the writer thread ends when the last one drops.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<(Vec<Event>, Option<Ack>)>,
    dir: PathBuf,
    /// fdatasyncs of the log so far (a test sees which mode synced what).
    syncs: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("dir", &self.dir).finish()
    }
}

impl AuditLog {
    /// Opens (creating) the log in `dir` and starts its writer thread.
    pub fn open(dir: &Path, config: AuditConfig) -> std::io::Result<AuditLog> {
        let writer = Writer::open(dir, config)?;
        let syncs = writer.syncs.clone();
        let (queue, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(AuditLog {
            queue,
            dir: dir.to_path_buf(),
            syncs,
        })
    }

    /// Where the files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many times the log was fdatasync'd since it was opened.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Acquire)
    }

    /// Writes `events`; returns once they are written (and synced, when the mode asks it).
    pub async fn record(&self, events: Vec<Event>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.queue
            .send((events, Some(ack)))
            .map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)?
    }

    /// Queues `events` without waiting (storage's own events: evictions).
    pub fn record_detached(&self, events: Vec<Event>) {
        if !events.is_empty() {
            let _ = self.queue.send((events, None));
        }
    }
}

/// The newest file, open for appending.
struct Writer {
    dir: PathBuf,
    config: AuditConfig,
    seq: u64,
    file: File,
    size: u64,
    /// Written and not yet synced.
    dirty: bool,
    last_sync: Instant,
    syncs: Arc<AtomicU64>,
}

impl Writer {
    /// Opens the newest file (or the first), cutting a torn last line.
    fn open(dir: &Path, config: AuditConfig) -> std::io::Result<Writer> {
        std::fs::create_dir_all(dir)?;
        let seq = files(dir)?.last().map_or(1, |(seq, _)| *seq);
        let path = file_path(dir, seq);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let size = cut_torn_tail(&mut file, &path)?;
        file.seek(SeekFrom::End(0))?;
        sync_dir(dir)?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            config,
            seq,
            file,
            size,
            dirty: false,
            last_sync: Instant::now(),
            syncs: Arc::default(),
        })
    }

    fn run(mut self, rx: mpsc::Receiver<(Vec<Event>, Option<Ack>)>) {
        loop {
            let first = match self.pending_sync() {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(wait) => rx.recv_timeout(wait),
            };
            let first = match first {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.sync();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            // Group commit: everything queued meanwhile goes in the same write.
            let mut jobs = vec![first];
            jobs.extend(rx.try_iter());
            let mut buf = Vec::new();
            let mut lines = Vec::new();
            let sync_now = match self.config.sync {
                SyncMode::All => true,
                SyncMode::Changes => jobs
                    .iter()
                    .flat_map(|(events, _)| events)
                    .any(|e| must_sync(&e.action)),
                SyncMode::Every(_) => false,
            };
            for (events, _) in &mut jobs {
                for e in events.drain(..) {
                    let line = Line::from_event(e);
                    match serde_json::to_vec(&line) {
                        Ok(json) => {
                            buf.extend_from_slice(&json);
                            buf.push(b'\n');
                        }
                        Err(e) => tracing::error!(error = %e, "cannot encode an audit event"),
                    }
                    lines.push(line);
                }
            }
            let written = self.write(&buf, sync_now).map_err(|e| e.to_string());
            match &written {
                Ok(()) => {
                    crate::metrics::audit_written(lines.len() as u64);
                    lines.iter().for_each(Line::trace)
                }
                Err(e) => {
                    tracing::error!(error = %e, events = lines.len(), "writing audit events failed")
                }
            }
            for (_, ack) in jobs {
                if let Some(ack) = ack {
                    let _ = ack.send(written.clone().map_err(AuditError::Io));
                }
            }
        }
        if self.dirty {
            self.sync();
        }
    }

    /// How long until written bytes are due for their fdatasync; None: nothing is due.
    fn pending_sync(&self) -> Option<Duration> {
        let period = match self.config.sync {
            _ if !self.dirty => return None,
            SyncMode::All => return None,
            SyncMode::Changes => READS_SYNC_PERIOD,
            SyncMode::Every(period) => period,
        };
        Some(period.saturating_sub(self.last_sync.elapsed()))
    }

    /// Appends `buf`; `sync_now`: fdatasync before returning (else within the mode's period).
    fn write(&mut self, buf: &[u8], sync_now: bool) -> std::io::Result<()> {
        if self.size > 0 && self.size + buf.len() as u64 > self.config.max_file_size {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(buf) {
            // Part of the batch may be in the file: cut it back to the last whole line, or the
            // next batch's first event would be glued to a fragment and lost to readers.
            if let Err(cut) = self.file.set_len(self.size) {
                tracing::error!(error = %cut, "cannot cut a failed audit write back");
            }
            return Err(e);
        }
        self.size += buf.len() as u64;
        self.dirty = true;
        if sync_now {
            self.file.sync_data()?;
            self.synced();
        } else if self.pending_sync() == Some(Duration::ZERO) {
            self.sync();
        }
        Ok(())
    }

    fn sync(&mut self) {
        match self.file.sync_data() {
            Ok(()) => self.synced(),
            Err(e) => {
                // Retried at the next period: the bytes are in the page cache still.
                tracing::error!(error = %e, "syncing the audit log failed");
                self.last_sync = Instant::now();
            }
        }
    }

    fn synced(&mut self) {
        self.dirty = false;
        self.last_sync = Instant::now();
        self.syncs.fetch_add(1, Ordering::AcqRel);
        crate::metrics::audit_synced();
    }

    /// Starts the next file (synced into the directory) and removes the oldest beyond
    /// `max_files`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        let seq = self.seq + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(file_path(&self.dir, seq))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.seq = seq;
        self.size = 0;
        let all = files(&self.dir)?;
        let keep = self.config.max_files.max(1);
        for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(error = %e, path = %path.display(), "removing an old audit file failed");
            }
        }
        Ok(())
    }
}

/// Cuts whatever follows the last newline (a line a crash tore); returns the size after.
fn cut_torn_tail(file: &mut File, path: &Path) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Read back from the end until a newline (lines are short; a torn one is within a batch).
    let mut end = len;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                tracing::warn!(path = %path.display(), cut = len - keep,
                    "cutting a torn last line off the audit log (a crash during a write)");
                file.set_len(keep)?;
                file.sync_all()?;
            }
            return Ok(keep);
        }
        if start == 0 {
            tracing::warn!(path = %path.display(), cut = len,
                "the audit file holds no whole line: cutting it");
            file.set_len(0)?;
            file.sync_all()?;
            return Ok(0);
        }
        end = start;
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::reader::{Filter, query};

    fn event(n: u64) -> Event {
        Event {
            action: "push".into(),
            repository: format!("r/{n}"),
            bytes: n,
            ..Event::default()
        }
    }

    #[tokio::test]
    async fn rotates_keeps_the_newest_and_cuts_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            max_file_size: 300,
            max_files: 3,
            sync: SyncMode::All,
        };
        let log = AuditLog::open(dir.path(), config).unwrap();
        for n in 0..20 {
            log.record(vec![event(n)]).await.unwrap();
        }
        drop(log);
        let names = files(dir.path()).unwrap();
        assert_eq!(names.len(), 3, "{names:?}");
        let newest = &names[2].1;
        let mut f = OpenOptions::new().append(true).open(newest).unwrap();
        f.write_all(b"{\"time\":\"gar").unwrap();
        let (page, _) = query(dir.path(), &Filter::default(), None, 1000).unwrap();
        let seen: Vec<u64> = page.iter().map(|(_, e)| e.bytes).collect();
        assert_eq!(seen.first(), Some(&19));
        let before = seen.len();
        // Reopened: the torn line is cut and the next event is whole.
        std::thread::sleep(Duration::from_millis(50));
        let log = AuditLog::open(dir.path(), config).unwrap();
        log.record(vec![event(99)]).await.unwrap();
        let (page, _) = query(dir.path(), &Filter::default(), None, 1000).unwrap();
        assert_eq!(page[0].1.bytes, 99);
        assert!(page.len() >= before, "{} < {before}", page.len());
        let text = std::fs::read_to_string(&files(dir.path()).unwrap().last().unwrap().1).unwrap();
        assert!(!text.contains("gar\""), "{text}");
        assert!(text.ends_with('\n'));
    }

    fn acted(action: &str) -> Event {
        Event {
            action: action.into(),
            repository: "r".into(),
            ..Event::default()
        }
    }

    /// Waits (bounded) until the log has synced `n` times.
    async fn synced(log: &AuditLog, n: u64) {
        let start = Instant::now();
        while log.syncs() < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "never synced {n} times"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn changes_sync_before_the_answer_reads_within_a_period() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            sync: SyncMode::Changes,
            ..AuditConfig::default()
        };
        let log = AuditLog::open(dir.path(), config).unwrap();
        // A push is synced before it is acknowledged.
        log.record(vec![acted("push")]).await.unwrap();
        assert_eq!(log.syncs(), 1);
        // A pull is acknowledged once written (readable at once), synced only later.
        let t = Instant::now();
        log.record(vec![acted("pull"), acted("pull_blobs")])
            .await
            .unwrap();
        assert!(log.syncs() == 1 || t.elapsed() >= READS_SYNC_PERIOD);
        let (page, _) = query(dir.path(), &Filter::default(), None, 10).unwrap();
        assert_eq!(page.len(), 3);
        synced(&log, 2).await;
        // Nothing dirty: no sync without writes.
        tokio::time::sleep(READS_SYNC_PERIOD + Duration::from_millis(300)).await;
        assert_eq!(log.syncs(), 2);
        // A batch mixing a read and a change waits for the sync; so do unknown actions.
        log.record(vec![acted("pull"), acted("delete")])
            .await
            .unwrap();
        assert_eq!(log.syncs(), 3);
        log.record(vec![acted("something_new")]).await.unwrap();
        assert_eq!(log.syncs(), 4);
    }

    #[tokio::test]
    async fn all_syncs_reads_too_and_a_period_syncs_nothing_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let all = AuditConfig {
            sync: SyncMode::All,
            ..AuditConfig::default()
        };
        let log = AuditLog::open(dir.path(), all).unwrap();
        log.record(vec![acted("pull")]).await.unwrap();
        assert_eq!(log.syncs(), 1);
        drop(log);
        let dir = tempfile::tempdir().unwrap();
        let every = AuditConfig {
            sync: SyncMode::Every(Duration::from_millis(200)),
            ..AuditConfig::default()
        };
        let log = AuditLog::open(dir.path(), every).unwrap();
        let t = Instant::now();
        log.record(vec![acted("push")]).await.unwrap();
        assert!(log.syncs() == 0 || t.elapsed() >= Duration::from_millis(200));
        synced(&log, 1).await;
    }
}
