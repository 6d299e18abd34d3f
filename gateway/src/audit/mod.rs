//! The gateway's side of the audit log (the log itself is the storage service's, see
//! `trow.audit.v1.Audit`).
//!
//! - [`Auditor`]: events go into a queue; one sender task takes everything queued and sends it
//!   in one `Record` call, so concurrent requests share a round trip (and storage's one write
//!   and sync). A request that must be on record before it is answered waits for its batch.
//! - Blob pulls are summarised: bytes and count per (user, client, repository), sent as one
//!   `pull_blobs` event once that key has been idle for `blob_idle`, or at shutdown
//!   ([`Auditor::flush`]). A kill -9 of the gateway loses summaries not yet sent.
//! - [`layer`]: the middleware that sees every `/v2/` answer and records what it was.
//! - [`who`]: who made a request (user, client address, user agent). Never a secret.

pub mod layer;
pub mod who;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use trow_proto::audit::Event;
use trow_proto::audit::audit_client::AuditClient;
use trow_proto::transport::MAX_MESSAGE_SIZE;
use trow_proto::trust::Channel;

pub use who::Who;

/// Events sent in one `Record` call at most.
const MAX_BATCH: usize = 1000;

/// Longest a request waits for its event to be on record: a stalled audit log delays
/// answers by this much, and no more (the event is then in this process's log).
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// Longest a blob-pull summary is held, however busy its key: a client pulling without pause
/// is still on record every minute.
const MAX_SUMMARY_AGE: Duration = Duration::from_secs(60);

/// Refusals put on record one by one, per client and minute; past it they are counted, and the
/// minute ends with one `refused` event carrying the count. Refusals need no credentials, so
/// without a bound anyone could fill the log's retention with them and push real history out.
const REFUSALS_PER_MINUTE: u64 = 60;

/// Clients whose refusals are counted apart; past it the rest share one count.
const REFUSAL_CLIENTS: usize = 10_000;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The gateway's audit settings.
#[derive(Clone, Debug)]
pub struct AuditSettings {
    /// A blob-pull summary goes out once its (user, client, repository) was quiet this long.
    pub blob_idle: Duration,
    /// Peers whose `X-Forwarded-For` names the client (see [`who`]).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The name clients use for this registry: `?ns=<it>` is a local read, any other `?ns=`
    /// read is on record under the cache's name.
    pub hostname: Option<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            blob_idle: Duration::from_secs(5),
            trusted_proxies: Vec::new(),
            hostname: None,
        }
    }
}

/// What the audit log is sent through: cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    queue: mpsc::UnboundedSender<(Event, Option<oneshot::Sender<()>>)>,
    blobs: Arc<Mutex<HashMap<BlobKey, BlobPulls>>>,
    /// This minute's refusals, by client.
    refusals: Arc<Mutex<HashMap<String, Refusals>>>,
    /// Peers whose `X-Forwarded-For` names the client (see [`who`]).
    trusted_proxies: Arc<Vec<std::net::IpAddr>>,
    hostname: Option<Arc<str>>,
    client: AuditClient<Channel>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BlobKey {
    user: String,
    client: String,
    repository: String,
}

struct Refusals {
    since: Instant,
    recorded: u64,
    /// Refusals past [`REFUSALS_PER_MINUTE`], counted only.
    counted: u64,
    last_ms: i64,
    user_agent: String,
}

struct BlobPulls {
    user_agent: String,
    bytes: u64,
    count: u64,
    last_ms: i64,
    last: Instant,
    first: Instant,
}

impl Auditor {
    /// An auditor sending to the audit service on `channel` (the storage service's). Starts
    /// its tasks.
    pub fn new(channel: Channel, settings: &AuditSettings) -> Auditor {
        let blob_idle = settings.blob_idle;
        let client = AuditClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(client.clone(), rx));
        let auditor = Auditor {
            queue,
            blobs: Arc::default(),
            refusals: Arc::default(),
            trusted_proxies: Arc::new(settings.trusted_proxies.clone()),
            hostname: settings.hostname.as_deref().map(Arc::from),
            client,
        };
        let summaries = auditor.clone();
        let period = (blob_idle / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            loop {
                every.tick().await;
                summaries.send_blob_summaries(Some(blob_idle));
                summaries.send_refusal_counts(false);
            }
        });
        auditor
    }

    /// A client of the audit service, for queries.
    pub fn client(&self) -> AuditClient<Channel> {
        self.client.clone()
    }

    /// Records `event` and waits until the audit log has it (or failed to take it: then the
    /// event is in this process's log as a warning and the request goes on).
    pub async fn record(&self, event: Event) {
        let (ack, done) = oneshot::channel();
        if self.queue.send((event.bounded(), Some(ack))).is_ok()
            && tokio::time::timeout(RECORD_WAIT, done).await.is_err()
        {
            tracing::warn!("the audit log did not answer within {RECORD_WAIT:?}; answering");
        }
    }

    /// Records `event` without waiting.
    pub fn record_detached(&self, event: Event) {
        let _ = self.queue.send((event.bounded(), None));
    }

    /// Whether a refusal of `who`'s request goes on record as an event of its own: the first
    /// [`REFUSALS_PER_MINUTE`] of a client's minute do; the rest are counted.
    pub fn admit_refusal(&self, who: &Who) -> bool {
        admit(&mut self.refusals.lock().expect("refusal counts"), who)
    }

    /// Ends the refusal minutes that are over (all of them with `all`), putting on record one
    /// event with the count of those that were only counted.
    fn send_refusal_counts(&self, all: bool) {
        let over = take_over(
            &mut self.refusals.lock().expect("refusal counts"),
            Duration::from_secs(60),
            all,
        );
        for (client, r) in over.into_iter().filter(|(_, r)| r.counted > 0) {
            self.record_detached(Event {
                time_ms: r.last_ms,
                client,
                user_agent: r.user_agent,
                action: "refused".into(),
                outcome: "refused".into(),
                count: r.counted,
                detail: format!(
                    "{} more refusals in a minute, counted only (the first {REFUSALS_PER_MINUTE} \
                     are on record one by one)",
                    r.counted
                ),
                source: "gateway".into(),
                ..Event::default()
            });
        }
    }

    /// Counts a blob read by `who` from `repository`.
    pub fn blob_pulled(&self, who: &Who, repository: &str, bytes: u64) {
        let key = BlobKey {
            user: who.user.clone(),
            client: who.client.clone(),
            repository: repository.to_string(),
        };
        let mut blobs = self.blobs.lock().expect("blob summaries");
        let entry = blobs.entry(key).or_insert_with(|| BlobPulls {
            user_agent: who.user_agent.clone(),
            bytes: 0,
            count: 0,
            last_ms: 0,
            last: Instant::now(),
            first: Instant::now(),
        });
        entry.bytes += bytes;
        entry.count += 1;
        entry.last_ms = now_ms();
        entry.last = Instant::now();
    }

    /// Queues the summaries idle for `idle`, or older than [`MAX_SUMMARY_AGE`] (all of them
    /// when None).
    fn send_blob_summaries(&self, idle: Option<Duration>) {
        let due: Vec<(BlobKey, BlobPulls)> = {
            let mut blobs = self.blobs.lock().expect("blob summaries");
            let keys: Vec<BlobKey> = blobs
                .iter()
                .filter(|(_, p)| {
                    idle.is_none_or(|i| {
                        p.last.elapsed() >= i || p.first.elapsed() >= MAX_SUMMARY_AGE
                    })
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| blobs.remove(&k).map(|p| (k, p)))
                .collect()
        };
        for (k, p) in due {
            self.record_detached(Event {
                time_ms: p.last_ms,
                user: k.user,
                client: k.client,
                user_agent: p.user_agent,
                action: "pull_blobs".into(),
                repository: k.repository,
                bytes: p.bytes,
                count: p.count,
                outcome: "ok".into(),
                status: 200,
                source: "gateway".into(),
                ..Event::default()
            });
        }
    }

    /// Sends every pending blob summary and waits until the log has everything queued so far:
    /// at shutdown, before the storage service stops.
    pub async fn flush(&self) {
        self.send_blob_summaries(None);
        self.send_refusal_counts(true);
        let (ack, done) = oneshot::channel();
        // A marker with no event: acknowledged with the batch it ends.
        if self.queue.send((Event::default(), Some(ack))).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
    }
}

/// Whether a refusal of `who`'s request is admitted as an event of its own (see
/// [`Auditor::admit_refusal`]).
fn admit(refusals: &mut HashMap<String, Refusals>, who: &Who) -> bool {
    let key = if refusals.len() >= REFUSAL_CLIENTS && !refusals.contains_key(&who.client) {
        "(other clients)".to_string()
    } else {
        who.client.clone()
    };
    let r = refusals.entry(key).or_insert_with(|| Refusals {
        since: Instant::now(),
        recorded: 0,
        counted: 0,
        last_ms: 0,
        user_agent: who.user_agent.clone(),
    });
    if r.recorded < REFUSALS_PER_MINUTE {
        r.recorded += 1;
        return true;
    }
    r.counted += 1;
    r.last_ms = now_ms();
    false
}

/// The refusal windows older than `window` (all with `all`), taken out.
fn take_over(
    refusals: &mut HashMap<String, Refusals>,
    window: Duration,
    all: bool,
) -> Vec<(String, Refusals)> {
    let keys: Vec<String> = refusals
        .iter()
        .filter(|(_, r)| all || r.since.elapsed() >= window)
        .map(|(k, _)| k.clone())
        .collect();
    keys.into_iter()
        .filter_map(|k| refusals.remove(&k).map(|r| (k, r)))
        .collect()
}

/// The sender task: everything queued goes in one `Record`; every waiter of the batch is
/// answered when it returns.
async fn send_batches(
    mut client: AuditClient<Channel>,
    mut rx: mpsc::UnboundedReceiver<(Event, Option<oneshot::Sender<()>>)>,
) {
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let (events, acks): (Vec<Event>, Vec<_>) = queued.drain(..).unzip();
        // Flush markers carry no action.
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| !e.action.is_empty())
            .collect();
        if !events.is_empty() {
            let n = events.len();
            let request = trow_proto::audit::RecordRequest {
                events: events.clone(),
            };
            let sent = tokio::time::timeout(RECORD_WAIT * 2, client.record(request)).await;
            let failed = match sent {
                Ok(Ok(_)) => None,
                Ok(Err(status)) => Some(format!("{:?}: {}", status.code(), status.message())),
                Err(_) => Some(format!("no answer within {:?}", RECORD_WAIT * 2)),
            };
            if let Some(why) = failed {
                tracing::error!(
                    why,
                    events = n,
                    "the audit log did not take events; they are logged here instead"
                );
                // Quoted (`?`): a path or name with a newline cannot forge a line.
                for e in &events {
                    tracing::warn!(target: "trow::audit", user = ?e.user, client = ?e.client,
                        action = ?e.action, repository = ?e.repository,
                        reference = ?e.reference, digest = ?e.digest, bytes = e.bytes,
                        outcome = ?e.outcome, status = e.status, "audit event not recorded");
                }
            }
        }
        for ack in acks.into_iter().flatten() {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(client: &str) -> Who {
        Who {
            user: String::new(),
            client: client.into(),
            user_agent: "ua".into(),
        }
    }

    #[test]
    fn refusals_past_the_minute_bound_are_counted_not_recorded() {
        let mut m = HashMap::new();
        let a = who("10.0.0.1");
        let admitted = (0..REFUSALS_PER_MINUTE + 5)
            .filter(|_| admit(&mut m, &a))
            .count();
        assert_eq!(admitted as u64, REFUSALS_PER_MINUTE);
        assert!(
            admit(&mut m, &who("10.0.0.2")),
            "another client has its own minute"
        );
        assert!(take_over(&mut m, Duration::from_secs(60), false).is_empty());
        let over = take_over(&mut m, Duration::ZERO, false);
        let counted: u64 = over.iter().map(|(_, r)| r.counted).sum();
        assert_eq!(counted, 5);
        assert!(m.is_empty());
        // Past the bound on clients, the rest share one count.
        for i in 0..REFUSAL_CLIENTS {
            admit(&mut m, &who(&i.to_string()));
        }
        admit(&mut m, &who("one more"));
        assert!(m.contains_key("(other clients)"));
        assert_eq!(m.len(), REFUSAL_CLIENTS + 1);
    }
}
