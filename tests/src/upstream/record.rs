//! What an upstream was asked: every request head a counting front or a scripted server read,
//! in arrival order, and how many connections it accepted.
//!
//! A request is recorded as soon as its head has been read, before it is forwarded or answered,
//! so once a client has its answer the request behind it is in the record.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::http1::RequestHead;

/// One request as an upstream saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub user_agent: Option<String>,
    /// Whether it carried an `Authorization` header.
    pub authorization: bool,
    /// The scheme of its `Authorization` header (`Basic`, `Bearer`), never the credential.
    pub auth_scheme: Option<String>,
    /// Which accepted connection it came on (0, 1, ...).
    pub connection: usize,
}

impl Request {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// `method` and, without query, `path`.
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path() == path
    }

    /// A registry's version check, `/v2/`: clients and proxies send it to discover auth.
    pub fn is_ping(&self) -> bool {
        self.path() == "/v2/" || self.path() == "/v2"
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (conn {}, ua {:?}{})",
            self.method,
            self.target,
            self.connection,
            self.user_agent.as_deref().unwrap_or(""),
            if self.authorization { ", auth" } else { "" }
        )
    }
}

/// The shared record of one upstream. Clones see the same record.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    log: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
}

impl Requests {
    pub(crate) fn record(&self, head: &RequestHead, connection: usize) -> Request {
        let r = Request {
            method: head.method.clone(),
            target: head.target.clone(),
            user_agent: head.header("user-agent").map(str::to_owned),
            authorization: head.header("authorization").is_some(),
            auth_scheme: head
                .header("authorization")
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_owned),
            connection,
        };
        self.log.lock().expect("request log").push(r.clone());
        r
    }

    /// Counts an accepted connection; returns its number.
    pub(crate) fn accepted(&self) -> usize {
        self.connections.fetch_add(1, Ordering::SeqCst)
    }

    /// Every request so far, in arrival order.
    pub fn all(&self) -> Vec<Request> {
        self.log.lock().expect("request log").clone()
    }

    /// A position in the record, for [`Requests::since`].
    pub fn mark(&self) -> usize {
        self.log.lock().expect("request log").len()
    }

    /// The requests that arrived after `mark`.
    pub fn since(&self, mark: usize) -> Vec<Request> {
        self.log.lock().expect("request log")[mark..].to_vec()
    }

    /// As [`Requests::since`], without `/v2/` pings.
    pub fn since_without_pings(&self, mark: usize) -> Vec<Request> {
        self.since(mark)
            .into_iter()
            .filter(|r| !r.is_ping())
            .collect()
    }

    /// How many requests had `method` and, ignoring the query, `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.count_where(|r| r.is(method, path))
    }

    /// How many requests satisfy `pred`.
    pub fn count_where(&self, pred: impl Fn(&Request) -> bool) -> usize {
        self.log
            .lock()
            .expect("request log")
            .iter()
            .filter(|r| pred(r))
            .count()
    }

    /// How many `GET`s of blob `digest` arrived, in any repository.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let suffix = format!("/blobs/{digest}");
        self.count_where(|r| r.method == "GET" && r.path().ends_with(&suffix))
    }

    /// How many connections were accepted (whether or not a request came on them).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The whole record, one request a line, for assertion messages.
    pub fn describe(&self) -> String {
        describe(&self.all())
    }
}

/// Panics when containerd itself reached the upstream in `asked`: a pull configured to go
/// through Trow as its mirror (`hosts.toml`) went around it, because the mirror failed.
pub fn assert_no_containerd_requests(asked: &[Request]) {
    assert!(
        !asked.iter().any(|r| r
            .user_agent
            .as_deref()
            .is_some_and(|u| u.starts_with("containerd"))),
        "containerd went to the upstream itself (the mirror failed):\n{}",
        describe(asked)
    );
}

/// `reqs`, one a line, for assertion messages.
pub fn describe(reqs: &[Request]) -> String {
    if reqs.is_empty() {
        return "(no requests)".into();
    }
    reqs.iter()
        .map(|r| format!("  {r}"))
        .collect::<Vec<_>>()
        .join("\n")
}
