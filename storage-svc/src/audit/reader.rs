//! Reading the audit log: every retained file, newest first, whole lines only (a line being
//! written, or torn by a crash, has no newline yet and is skipped).
//!
//! A cursor is a position in the log, `<file seq>-<line>`: lines are only ever appended and
//! files only removed whole, so a position means the same event for as long as it is kept,
//! and a page that continues after it has neither duplicates nor gaps, whatever was written
//! meanwhile. Each query reads the retained files (at most `max_files` × `max_file_size`).

use std::collections::HashMap;
use std::path::Path;
use trow_proto::audit::{Event, ImagePulls, UserPulls};

use super::{Line, action, files, under};

/// Which events a query wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// A repository name or prefix (boundary-aware); empty: all.
    pub repository: String,
    /// Some(""): anonymous only.
    pub user: Option<String>,
    pub action: String,
    pub since_ms: i64,
    pub until_ms: i64,
}

impl Filter {
    fn matches(&self, e: &Event) -> bool {
        under(&e.repository, &self.repository)
            && self.user.as_ref().is_none_or(|u| *u == e.user)
            && (self.action.is_empty() || self.action == e.action)
            && (self.since_ms == 0 || e.time_ms >= self.since_ms)
            && (self.until_ms == 0 || e.time_ms < self.until_ms)
    }
}

/// A position in the log: file sequence number, then line number in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub seq: u64,
    pub line: u64,
}

impl Pos {
    pub fn cursor(&self) -> String {
        format!("{:x}-{:x}", self.seq, self.line)
    }

    pub fn parse(cursor: &str) -> Option<Pos> {
        let (seq, line) = cursor.split_once('-')?;
        Some(Pos {
            seq: u64::from_str_radix(seq, 16).ok()?,
            line: u64::from_str_radix(line, 16).ok()?,
        })
    }
}

/// The whole lines of one file, parsed (unreadable lines are skipped, with a warning).
fn lines(seq: u64, path: &Path) -> std::io::Result<Vec<(Pos, Event)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        // Rotated away since it was listed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let whole = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => &bytes[..=i],
        None => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for (n, line) in whole.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Line>(line) {
            Ok(l) => out.push((
                Pos {
                    seq,
                    line: n as u64,
                },
                l.into_event(),
            )),
            Err(e) => tracing::warn!(error = %e, file = %path.display(), line = n,
                "skipping an unreadable audit line"),
        }
    }
    Ok(out)
}

/// A page of events with their positions, and where the next page starts (None: the last).
pub type Page = (Vec<(Pos, Event)>, Option<Pos>);

/// Up to `limit` events matching `filter`, newest first, strictly older than `after` (a
/// previous page's last position); and the position to continue from when there are more.
pub fn query(
    dir: &Path,
    filter: &Filter,
    after: Option<Pos>,
    limit: usize,
) -> std::io::Result<Page> {
    let mut page = Vec::new();
    for (seq, path) in files(dir)?.into_iter().rev() {
        if after.is_some_and(|a| seq > a.seq) {
            continue;
        }
        for (pos, e) in lines(seq, &path)?.into_iter().rev() {
            if after.is_some_and(|a| pos >= a) || !filter.matches(&e) {
                continue;
            }
            if page.len() == limit {
                let next = page.last().map(|(p, _): &(Pos, Event)| *p);
                return Ok((page, next));
            }
            page.push((pos, e));
        }
    }
    Ok((page, None))
}

/// Manifest pulls that succeeded, per repository and reference, with who pulled how often and
/// when last; most recently pulled first.
pub fn pulls(dir: &Path, filter: &Filter) -> std::io::Result<Vec<ImagePulls>> {
    let filter = Filter {
        action: action::PULL.into(),
        ..filter.clone()
    };
    let mut images: HashMap<(String, String), (ImagePulls, HashMap<String, UserPulls>)> =
        HashMap::new();
    for (seq, path) in files(dir)? {
        for (_, e) in lines(seq, &path)? {
            if e.outcome != "ok" || !filter.matches(&e) {
                continue;
            }
            let (image, users) = images
                .entry((e.repository.clone(), e.reference.clone()))
                .or_insert_with(|| {
                    (
                        ImagePulls {
                            repository: e.repository.clone(),
                            reference: e.reference.clone(),
                            ..ImagePulls::default()
                        },
                        HashMap::new(),
                    )
                });
            image.count += 1;
            if e.time_ms >= image.last_ms {
                image.last_ms = e.time_ms;
                image.digest = e.digest.clone();
            }
            let user = users.entry(e.user.clone()).or_insert_with(|| UserPulls {
                user: e.user.clone(),
                ..UserPulls::default()
            });
            user.count += 1;
            user.last_ms = user.last_ms.max(e.time_ms);
        }
    }
    let mut out: Vec<ImagePulls> = images
        .into_values()
        .map(|(mut image, users)| {
            image.users = users.into_values().collect();
            image
                .users
                .sort_by(|a, b| b.last_ms.cmp(&a.last_ms).then(a.user.cmp(&b.user)));
            image
        })
        .collect();
    out.sort_by(|a, b| {
        b.last_ms
            .cmp(&a.last_ms)
            .then_with(|| (&a.repository, &a.reference).cmp(&(&b.repository, &b.reference)))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditConfig, AuditLog, SyncMode};

    #[tokio::test]
    async fn pages_continue_without_duplicates_or_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            max_file_size: 500,
            max_files: 100,
            sync: SyncMode::All,
        };
        let log = AuditLog::open(dir.path(), config).unwrap();
        for n in 0..50u64 {
            let e = Event {
                action: if n % 2 == 0 { "pull" } else { "push" }.into(),
                repository: "a/b".into(),
                outcome: "ok".into(),
                bytes: n,
                user: if n % 3 == 0 { "ann" } else { "" }.into(),
                ..Event::default()
            };
            log.record(vec![e]).await.unwrap();
        }
        assert!(files(dir.path()).unwrap().len() > 2);
        let filter = Filter {
            action: "pull".into(),
            ..Filter::default()
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = query(dir.path(), &filter, after, 7).unwrap();
            seen.extend(page.iter().map(|(_, e)| e.bytes));
            match next {
                Some(p) => after = Some(Pos::parse(&p.cursor()).unwrap()),
                None => break,
            }
        }
        let want: Vec<u64> = (0..50).rev().filter(|n| n % 2 == 0).collect();
        assert_eq!(seen, want);
        let p = pulls(dir.path(), &Filter::default()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].count, 25);
        let ann = p[0].users.iter().find(|u| u.user == "ann").unwrap();
        assert_eq!(ann.count, 9);
    }
}
