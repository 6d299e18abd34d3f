//! `trow.audit.v1.Audit` over the log: records batches, answers queries on the blocking pool
//! (they read files).

use tonic::{Request, Response, Status};
use trow_proto::audit::audit_server::Audit;
use trow_proto::audit::{
    PullsReply, PullsRequest, QueryReply, QueryRequest, RecordReply, RecordRequest,
};

use super::AuditLog;
use super::reader::{self, Filter, Pos};

/// Page size when a query names none, and the most a page holds.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// Queries reading the log at once: each reads whole files (up to `--audit-max-file-size`
/// each), so a burst of them is queued rather than holding many files in memory together.
const CONCURRENT_QUERIES: usize = 2;

pub struct AuditService {
    log: AuditLog,
    readers: tokio::sync::Semaphore,
}

impl AuditService {
    pub fn new(log: AuditLog) -> AuditService {
        AuditService {
            log,
            readers: tokio::sync::Semaphore::new(CONCURRENT_QUERIES),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "reading the audit log failed");
    Status::internal("reading the audit log failed")
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn record(&self, req: Request<RecordRequest>) -> Result<Response<RecordReply>, Status> {
        // Bounded here too: the gateway and the proxy are not the only possible callers.
        let events: Vec<_> = req
            .into_inner()
            .events
            .into_iter()
            .map(|e| e.bounded())
            .collect();
        let written = events.len() as u64;
        self.log
            .record(events)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(RecordReply { written }))
    }

    async fn query(&self, req: Request<QueryRequest>) -> Result<Response<QueryReply>, Status> {
        let q = req.into_inner();
        let after = match q.cursor.as_str() {
            "" => None,
            c => Some(Pos::parse(c).ok_or_else(|| Status::invalid_argument("invalid cursor"))?),
        };
        let limit = match q.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        } as usize;
        let filter = Filter {
            repository: q.repository,
            user: q.user,
            action: q.action,
            since_ms: q.since_ms,
            until_ms: q.until_ms,
        };
        let dir = self.log.dir().to_path_buf();
        let _reading = self.readers.acquire().await.map_err(internal)?;
        let (page, next) =
            tokio::task::spawn_blocking(move || reader::query(&dir, &filter, after, limit))
                .await
                .map_err(internal)?
                .map_err(internal)?;
        Ok(Response::new(QueryReply {
            events: page.into_iter().map(|(_, e)| e).collect(),
            next_cursor: next.map(|p| p.cursor()).unwrap_or_default(),
        }))
    }

    async fn pulls(&self, req: Request<PullsRequest>) -> Result<Response<PullsReply>, Status> {
        let q = req.into_inner();
        let filter = Filter {
            repository: q.repository,
            user: q.user,
            since_ms: q.since_ms,
            until_ms: q.until_ms,
            ..Filter::default()
        };
        let dir = self.log.dir().to_path_buf();
        let _reading = self.readers.acquire().await.map_err(internal)?;
        let images = tokio::task::spawn_blocking(move || reader::pulls(&dir, &filter))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(Response::new(PullsReply { images }))
    }
}
