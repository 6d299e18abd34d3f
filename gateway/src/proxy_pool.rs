//! The proxy replicas a gateway spreads its calls over.
//!
//! Every proxy call is a read, so a call that cannot reach one replica is safely sent to the
//! next: a replica that died or restarts costs its callers a retry, not an error. A replica that
//! could not be reached is skipped for a few seconds, so its callers don't each wait for it.
//! Each replica's channel reconnects by itself, so a restarted proxy is used again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Status};
use trow_proto::proxy::proxy_client::ProxyClient;

/// How long a replica that could not be reached is passed over.
const SKIP_FOR: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ProxyPool {
    replicas: Arc<[Replica]>,
    next: Arc<AtomicUsize>,
    epoch: Instant,
}

struct Replica {
    client: ProxyClient<Channel>,
    /// Milliseconds after `epoch` until which the replica is passed over.
    down_until: AtomicU64,
}

/// A replica that is not there (connection refused, reset, timed out), as opposed to a proxy's
/// own answer, which always carries an OCI code.
fn unreachable(s: &Status) -> bool {
    s.code() == Code::Unavailable && trow_proto::oci_code::of(s).is_none()
}

impl ProxyPool {
    pub fn new(clients: Vec<ProxyClient<Channel>>) -> ProxyPool {
        assert!(!clients.is_empty(), "a proxy pool needs a replica");
        ProxyPool {
            replicas: clients
                .into_iter()
                .map(|client| Replica {
                    client,
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            next: Arc::new(AtomicUsize::new(0)),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Calls `f` on the replicas in turn (round robin) until one is reached. Replicas recently
    /// found unreachable are tried last.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: Fn(ProxyClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut order: Vec<&Replica> = (0..n).map(|i| &self.replicas[(start + i) % n]).collect();
        order.sort_by_key(|r| r.down_until.load(Ordering::Relaxed) > now);
        let mut last = None;
        for r in order {
            match f(r.client.clone()).await {
                Err(s) if unreachable(&s) => {
                    tracing::warn!(status = %s, "a proxy replica is unreachable; trying the next");
                    r.down_until.store(
                        self.now_ms() + SKIP_FOR.as_millis() as u64,
                        Ordering::Relaxed,
                    );
                    last = Some(s);
                }
                other => return other,
            }
        }
        Err(last.expect("at least one replica was tried"))
    }
}
