//! What the proxy puts on record in the audit log (the storage service's
//! `trow.audit.v1.Audit`): every fetch from an upstream (`proxy_fetch`: a manifest, or a blob
//! once its fill ends) and every stale serve (`stale`). The user and client of the pull that
//! caused them are on the gateway's `pull` event; these say what the cache did.
//!
//! Sent without holding up the pull: a fetch is on record shortly after it happened.

use trow_proto::audit::audit_client::AuditClient;
use trow_proto::audit::{Event, RecordRequest};
use trow_proto::trust::Channel;

use crate::reference::Target;

/// A client of the audit log; without one (tests of the service alone), nothing is recorded.
#[derive(Clone, Default)]
pub struct Audit {
    client: Option<AuditClient<Channel>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Audit {
    pub fn new(channel: Channel) -> Audit {
        Audit {
            client: Some(AuditClient::new(channel)),
        }
    }

    fn send(&self, event: Event) {
        let Some(mut client) = self.client.clone() else {
            return;
        };
        tokio::spawn(async move {
            let request = RecordRequest {
                events: vec![event],
            };
            if let Err(s) = client.record(request).await {
                tracing::warn!(code = ?s.code(), message = s.message(),
                    "the audit log did not take a proxy event");
            }
        });
    }

    fn event(t: &Target, action: &str, reference: &str, digest: &str) -> Event {
        Event {
            time_ms: now_ms(),
            action: action.into(),
            repository: t.cache_repository.clone(),
            reference: reference.into(),
            digest: digest.into(),
            source: "proxy".into(),
            ..Event::default()
        }
    }

    /// A manifest came from the upstream (`what`: `manifest`).
    pub fn fetched(&self, t: &Target, reference: &str, digest: &str, bytes: u64, what: &str) {
        let mut e = Audit::event(t, "proxy_fetch", reference, digest);
        e.bytes = bytes;
        e.outcome = "ok".into();
        e.detail = format!("{what} from {}", t.upstream.host);
        self.send(e);
    }

    /// A blob's fill from the upstream ended, with `bytes` fetched.
    pub fn blob_fetched(&self, t: &Target, digest: &str, bytes: u64, ok: bool) {
        let mut e = Audit::event(t, "proxy_fetch", digest, digest);
        e.bytes = bytes;
        e.outcome = if ok { "ok" } else { "error" }.into();
        e.detail = format!("blob from {}", t.upstream.host);
        self.send(e);
    }

    /// The upstream failed and the cached copy of `tag` was served.
    pub fn stale(&self, t: &Target, tag: &str, digest: &str, failure: &str) {
        let mut e = Audit::event(t, "stale", tag, digest);
        e.outcome = "ok".into();
        e.detail = failure.chars().take(300).collect();
        self.send(e);
    }
}
