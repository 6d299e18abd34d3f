//! The audit log: every push, pull, delete, refusal, upstream fetch, stale serve, eviction and
//! admission decision, kept as append-only JSON lines under `<data dir>/audit/`.
//!
//! Storage owns it because it owns the data dir: every producer (gateway, proxy, storage
//! itself) sends events over gRPC (`trow.audit.v1.Audit`), whatever the topology.
//!
//! - [`writer`]: one thread appends batches (group commit: everything queued goes out in one
//!   write and at most one fdatasync), rotates files by size and keeps the newest few; an
//!   event is acknowledged only once written. At open, a torn last line (a crash mid-write) is cut.
//! - [`reader`]: queries over the retained files, newest first, paginated by a cursor that is
//!   a position in the log (stable across rotations), and the pull counts per image and user.
//! - [`service`]: the gRPC service.

pub mod reader;
pub mod service;
pub mod writer;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trow_proto::audit::Event;

pub use writer::AuditLog;

/// When written events are made durable against power loss. Every mode writes an event before
/// acknowledging it, so a kill -9 of any process never loses an acknowledged event; the modes
/// differ in what a power loss (or kernel crash) may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// fdatasync each batch before acknowledging it: nothing acknowledged is ever lost.
    All,
    /// Events of writes and decisions ([`must_sync`]: pushes, deletes, evictions, refusals,
    /// admission decisions) as in `All`; reads (pulls, proxy fetches, stale serves) are
    /// acknowledged once written and fdatasync'd within [`READS_SYNC_PERIOD`]. A pull's answer
    /// then never waits for the disk, which is what most requests are.
    Changes,
    /// Acknowledge every event once written; fdatasync at most this often.
    Every(Duration),
}

/// How long a read's event may stay written but not synced under [`SyncMode::Changes`].
pub const READS_SYNC_PERIOD: Duration = Duration::from_secs(1);

/// Whether `action` records a change or a decision, which [`SyncMode::Changes`] syncs before
/// acknowledging. Unknown actions are synced: a new kind of event is durable until someone
/// decides otherwise.
pub fn must_sync(action: &str) -> bool {
    !matches!(
        action,
        action::PULL | action::PULL_BLOBS | action::PROXY_FETCH | action::STALE
    )
}

/// How the audit log is kept.
#[derive(Clone, Copy, Debug)]
pub struct AuditConfig {
    /// A file grows to about this size (a batch never spans two files), then the next begins.
    pub max_file_size: u64,
    /// Files kept; the oldest go beyond this.
    pub max_files: usize,
    pub sync: SyncMode,
}

/// `Changes` by default: syncing every batch (`All`) made each manifest GET wait for an
/// fdatasync shared by the ~50 requests of its batch, which halved the manifest rate of a busy
/// registry (docs/PERFORMANCE.md); reads are most requests and losing the last second of them
/// to a power loss is the trade most registries' operators take, while pushes, deletes and
/// decisions keep the strict promise.
impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_file_size: 64 << 20,
            max_files: 8,
            sync: SyncMode::Changes,
        }
    }
}

/// The actions, as events name them.
pub mod action {
    pub const PUSH: &str = "push";
    pub const PULL: &str = "pull";
    pub const PULL_BLOBS: &str = "pull_blobs";
    pub const DELETE: &str = "delete";
    pub const REFUSED: &str = "refused";
    pub const PROXY_FETCH: &str = "proxy_fetch";
    pub const STALE: &str = "stale";
    pub const EVICT: &str = "evict";
    pub const ADMISSION: &str = "admission";
}

/// One event as a line of the log: the proto's fields, the time in RFC 3339 (readable with
/// `jq` and `grep`), empty fields left out.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Line {
    pub time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repository: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reference: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub status: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn time_of(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

impl Line {
    /// An event as it is written; an event without a time is stamped now.
    pub fn from_event(e: Event) -> Line {
        let ms = if e.time_ms > 0 { e.time_ms } else { now_ms() };
        Line {
            time: humantime::format_rfc3339_millis(time_of(ms)).to_string(),
            user: e.user,
            client: e.client,
            user_agent: e.user_agent,
            action: e.action,
            repository: e.repository,
            reference: e.reference,
            digest: e.digest,
            bytes: e.bytes,
            outcome: e.outcome,
            status: e.status,
            detail: e.detail,
            count: e.count,
            source: e.source,
        }
    }

    /// The line's time in ms since the epoch (0 if unreadable).
    pub fn time_ms(&self) -> i64 {
        humantime::parse_rfc3339(&self.time)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64)
    }

    pub fn into_event(self) -> Event {
        Event {
            time_ms: self.time_ms(),
            user: self.user,
            client: self.client,
            user_agent: self.user_agent,
            action: self.action,
            repository: self.repository,
            reference: self.reference,
            digest: self.digest,
            bytes: self.bytes,
            outcome: self.outcome,
            status: self.status,
            detail: self.detail,
            count: self.count,
            source: self.source,
        }
    }

    /// The event as a structured log line (target `trow::audit`), for log pipelines.
    /// The event as a log line. Text fields are written quoted and escaped (`?`): a path or a
    /// user name with a newline cannot forge another line.
    pub fn trace(&self) {
        tracing::info!(
            target: "trow::audit",
            time = %self.time,
            user = ?self.user,
            client = ?self.client,
            user_agent = ?self.user_agent,
            action = ?self.action,
            repository = ?self.repository,
            reference = ?self.reference,
            digest = ?self.digest,
            bytes = self.bytes,
            outcome = ?self.outcome,
            status = self.status,
            detail = ?self.detail,
            count = self.count,
            source = ?self.source,
            "audit"
        );
    }
}

/// `events-<seq>.jsonl`: the file of sequence number `seq` in `dir`.
pub(crate) fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("events-{seq:016}.jsonl"))
}

/// The log's files in `dir`, oldest first, by sequence number.
pub(crate) fn files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix("events-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((seq, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Whether `repository` is `prefix` or under it (boundary-aware: `team` is not a prefix of
/// `teamwork`); an empty prefix matches everything.
pub fn under(repository: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || repository == prefix
        || repository
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_boundary_aware() {
        assert!(under("team/app", "team"));
        assert!(under("team/app", "team/"));
        assert!(under("team", "team"));
        assert!(!under("teamwork", "team"));
        assert!(under("x", ""));
    }

    #[test]
    fn lines_round_trip() {
        let e = Event {
            time_ms: 1_700_000_000_123,
            user: "ann".into(),
            action: action::PULL.into(),
            repository: "a/b".into(),
            bytes: 42,
            ..Event::default()
        };
        let line = Line::from_event(e.clone());
        let json = serde_json::to_string(&line).unwrap();
        assert!(!json.contains("client"), "{json}");
        let back: Line = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_event(), e);
    }
}
