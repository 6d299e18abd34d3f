//! Pre-warming: when the mutating webhook admits a pod, the images it will pull through the
//! cache start filling at once, so the kubelet's pull, a few seconds later, finds them cached
//! or joins the fills in progress (the proxy's `Warm`).
//!
//! Never in the admission's way: [`Prewarmer::warm`] only queues and returns. Bounded: at most
//! `prewarm_concurrency` images warm at once, at most [`MAX_QUEUED`] wait, and beyond that an
//! image is skipped (the kubelet's own pull still fills it). Deduplicated: an image warming or
//! warmed in the last [`RECENT`] is not warmed again, so a Deployment scaled to a hundred
//! replicas costs one warm, not a hundred revalidations upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use trow_proto::proxy::WarmRequest;
use trow_proto::proxy::proxy_client::ProxyClient;
use trow_proto::trust::Channel;

use crate::WarmTarget;

/// Images waiting for a warm slot at most.
pub const MAX_QUEUED: usize = 1024;
/// An image warmed this recently is not warmed again.
pub const RECENT: Duration = Duration::from_secs(60);

/// Warms images through the proxy service in the background.
pub struct Prewarmer {
    proxy: ProxyClient<Channel>,
    slots: Arc<Semaphore>,
    platforms: Vec<String>,
    /// Images queued or warming (no `Instant`), or warmed at that time.
    seen: Mutex<HashMap<WarmTarget, Option<Instant>>>,
}

impl Prewarmer {
    pub fn new(proxy: ProxyClient<Channel>, concurrency: usize, platforms: Vec<String>) -> Self {
        Prewarmer {
            proxy,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            platforms,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Queues `targets` for warming and returns at once.
    pub fn warm(self: &Arc<Self>, targets: &[WarmTarget]) {
        for t in targets {
            if !self.claim(t) {
                continue;
            }
            let me = self.clone();
            let t = t.clone();
            tokio::spawn(async move {
                let outcome = {
                    let _slot = me.slots.acquire().await.expect("never closed");
                    me.proxy
                        .clone()
                        .warm(WarmRequest {
                            registry: t.registry.clone(),
                            repository: t.repository.clone(),
                            reference: t.reference.clone(),
                            platforms: me.platforms.clone(),
                        })
                        .await
                };
                match outcome {
                    Ok(r) => {
                        let r = r.into_inner();
                        tracing::info!(image = %t, filled = r.filled, cached = r.cached,
                            "pre-warmed an admitted pod's image");
                    }
                    Err(s) => tracing::warn!(image = %t, error = %s.message(),
                        "pre-warming an admitted pod's image failed; its pull will fill it"),
                }
                me.seen
                    .lock()
                    .expect("seen lock")
                    .insert(t, Some(Instant::now()));
            });
        }
    }

    /// Marks `t` as queued unless it is queued, warming or warmed recently, or the queue is
    /// full. Forgets images warmed long ago on the way.
    fn claim(&self, t: &WarmTarget) -> bool {
        let mut seen = self.seen.lock().expect("seen lock");
        seen.retain(|_, at| at.is_none_or(|at| at.elapsed() < RECENT));
        if seen.contains_key(t) {
            return false;
        }
        let queued = seen.values().filter(|at| at.is_none()).count();
        if queued >= MAX_QUEUED {
            tracing::warn!(image = %t, "too many images waiting to be pre-warmed: skipped");
            return false;
        }
        seen.insert(t.clone(), None);
        true
    }
}
