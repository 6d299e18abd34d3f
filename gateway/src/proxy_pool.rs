//! The proxy replicas a gateway spreads its calls over.
//!
//! Every proxy call is a read, so a call that cannot reach one replica is safely sent to the
//! next: a replica that died or restarts costs its callers a retry, not an error. A replica that
//! could not be reached is skipped for a few seconds, so its callers don't each wait for it.
//! Each replica's channel reconnects by itself, so a restarted proxy is used again.
//!
//! A proxy URL may name a host that resolves to several addresses (a Kubernetes headless
//! Service gives one per pod). One HTTP/2 channel by name would stick to the first address, so
//! the pool resolves such names itself, keeps a replica per address, and resolves them again
//! every few seconds: pods that come are used, pods that go are dropped.

use axum::http::Uri;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};
use tonic::{Code, Status};
use trow_proto::proxy::proxy_client::ProxyClient;
use trow_proto::trust::{Channel, Trust};

/// How long a replica that could not be reached is passed over.
const SKIP_FOR: Duration = Duration::from_secs(5);
/// How often proxy host names are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// How long one resolution may take before the previous addresses are kept.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct ProxyPool {
    inner: Arc<Inner>,
}

struct Inner {
    replicas: RwLock<Arc<[Arc<Replica>]>>,
    /// How replicas are connected to (mutual TLS, token).
    trust: Trust,
    next: AtomicUsize,
    epoch: Instant,
}

struct Replica {
    /// The URL this replica's channel connects to (names the replica in the logs and keeps it
    /// across resolutions).
    url: String,
    /// The index of the `--proxy` URL it came from: a name that fails to resolve keeps the
    /// replicas it resolved to before.
    source: usize,
    client: ProxyClient<Channel>,
    /// Milliseconds after `epoch` until which the replica is passed over.
    down_until: AtomicU64,
}

/// One `--proxy` URL: an address used as it is, or a host name the pool resolves.
enum Target {
    Fixed(String),
    Named {
        scheme: String,
        host: String,
        port: u16,
        url: String,
    },
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        // What a channel would refuse is a start-up error, resolved name or not.
        tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("invalid proxy URL {url}: {e}"))?;
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid proxy URL {url}: {e}"))?;
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Err(format!(
                "invalid proxy URL {url}: expected http://HOST:PORT"
            ));
        };
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if literal.parse::<IpAddr>().is_ok() {
            return Ok(Target::Fixed(url.to_string()));
        }
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Target::Named {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
            url: url.to_string(),
        })
    }
}

/// A replica that is not there (connection refused, reset, timed out), as opposed to a proxy's
/// answer. tonic makes the status of a failed connection or call here, with the transport error
/// as its source; a status the proxy sent has no source. Without that test, a proxy passing on
/// its own storage call's UNAVAILABLE (storage is down: no OCI code either) looked unreachable,
/// and every replica, which shares that storage, was tried and passed over in turn.
fn unreachable(s: &Status) -> bool {
    s.code() == Code::Unavailable
        && trow_proto::oci_code::of(s).is_none()
        && std::error::Error::source(s).is_some()
}

fn replica(url: String, source: usize, client: ProxyClient<Channel>) -> Arc<Replica> {
    Arc::new(Replica {
        url,
        source,
        client,
        down_until: AtomicU64::new(0),
    })
}

/// A replica at `url`; with TLS, its certificate must name `tls_name` (the host name `url`'s
/// address was resolved from), or else `url`'s host.
fn connect(
    url: &str,
    source: usize,
    tls_name: Option<&str>,
    trust: &Trust,
) -> Result<Arc<Replica>, String> {
    let channel = trust
        .channel(url, tls_name, crate::endpoint)
        .map_err(|e| format!("invalid proxy URL {url}: {e}"))?;
    Ok(replica(url.to_string(), source, crate::proxy(channel)))
}

impl ProxyPool {
    /// A pool of fixed replicas (the one-process default's in-memory one).
    pub fn new(clients: Vec<ProxyClient<Channel>>) -> ProxyPool {
        assert!(!clients.is_empty(), "a proxy pool needs a replica");
        let replicas = clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| replica(format!("replica {i}"), i, c))
            .collect();
        ProxyPool::of(replicas, Trust::none())
    }

    fn of(replicas: Vec<Arc<Replica>>, trust: Trust) -> ProxyPool {
        ProxyPool {
            inner: Arc::new(Inner {
                replicas: RwLock::new(replicas.into()),
                trust,
                next: AtomicUsize::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// A pool of the proxies at `urls` (`http://HOST:PORT`, `https://` with mutual TLS), reached
    /// as `trust` says. Addresses are used as they are;
    /// a host name becomes one replica per address it resolves to, resolved again every
    /// [`RESOLVE_EVERY`] by a task that ends with the pool. A name that does not resolve yet
    /// (its pods are starting) is kept as one replica by name until it does.
    pub async fn connect(urls: &[String], trust: &Trust) -> Result<ProxyPool, String> {
        if urls.is_empty() {
            return Err("a proxy pool needs a replica".into());
        }
        let targets = urls
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        // A URL that does not fit the trust (http:// with TLS, https:// without) stops the
        // start-up, as a malformed one does.
        for url in urls {
            trust
                .channel(url, None, crate::endpoint)
                .map_err(|e| e.to_string())?;
        }
        let pool = ProxyPool::of(Vec::new(), trust.clone());
        pool.inner.resolve(&targets).await;
        if targets.iter().any(|t| matches!(t, Target::Named { .. })) {
            tokio::spawn(refresh(Arc::downgrade(&pool.inner), targets));
        }
        Ok(pool)
    }

    /// The URLs of the replicas calls are spread over now.
    pub fn replica_urls(&self) -> Vec<String> {
        self.inner
            .snapshot()
            .iter()
            .map(|r| r.url.clone())
            .collect()
    }

    /// Calls `f` on the replicas in turn (round robin) until one is reached. Replicas recently
    /// found unreachable are tried last.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: Fn(ProxyClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let inner = &self.inner;
        let replicas = inner.snapshot();
        let n = replicas.len();
        let start = inner.next.fetch_add(1, Ordering::Relaxed);
        let now = inner.now_ms();
        let mut order: Vec<&Replica> = (0..n).map(|i| &*replicas[(start + i) % n]).collect();
        order.sort_by_key(|r| r.down_until.load(Ordering::Relaxed) > now);
        let mut last = None;
        for r in order {
            match f(r.client.clone()).await {
                Err(s) if unreachable(&s) => {
                    tracing::warn!(replica = %r.url, status = %s,
                        "a proxy replica is unreachable; trying the next");
                    r.down_until.store(
                        inner.now_ms() + SKIP_FOR.as_millis() as u64,
                        Ordering::Relaxed,
                    );
                    last = Some(s);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no proxy replica")))
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn snapshot(&self) -> Arc<[Arc<Replica>]> {
        self.replicas.read().expect("replica list lock").clone()
    }

    /// Resolves every named target and swaps in the new replica list. Replicas whose URL stays
    /// keep their channel (and connection); a name that fails to resolve keeps its replicas.
    async fn resolve(&self, targets: &[Target]) {
        let old = self.snapshot();
        let mut next: Vec<Arc<Replica>> = Vec::new();
        for (source, t) in targets.iter().enumerate() {
            let tls_name = match t {
                Target::Fixed(_) => None,
                Target::Named { host, .. } => Some(host.as_str()),
            };
            let urls: Vec<String> = match t {
                Target::Fixed(url) => vec![url.clone()],
                Target::Named {
                    scheme,
                    host,
                    port,
                    url,
                } => match lookup(host, *port).await {
                    Ok(addrs) if !addrs.is_empty() => {
                        addrs.iter().map(|a| format!("{scheme}://{a}")).collect()
                    }
                    failed => {
                        if let Err(e) = failed {
                            tracing::warn!(host = %host, error = %e,
                                "resolving the proxy host failed; keeping its replicas");
                        }
                        let before: Vec<String> = old
                            .iter()
                            .filter(|r| r.source == source)
                            .map(|r| r.url.clone())
                            .collect();
                        if before.is_empty() {
                            vec![url.clone()]
                        } else {
                            before
                        }
                    }
                },
            };
            for url in urls {
                if next.iter().any(|r| r.url == url) {
                    continue;
                }
                let kept = old.iter().find(|r| r.url == url).cloned();
                match kept
                    .map(Ok)
                    .unwrap_or_else(|| connect(&url, source, tls_name, &self.trust))
                {
                    Ok(r) => next.push(r),
                    Err(e) => tracing::error!(error = %e, "a proxy replica"),
                }
            }
        }
        let same =
            next.len() == old.len() && next.iter().zip(old.iter()).all(|(a, b)| a.url == b.url);
        if !same {
            let urls: Vec<&str> = next.iter().map(|r| r.url.as_str()).collect();
            tracing::info!(replicas = ?urls, "proxy replicas");
            *self.replicas.write().expect("replica list lock") = next.into();
        }
    }
}

async fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
    let mut addrs: Vec<SocketAddr> = found.collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// Resolves the named targets again every [`RESOLVE_EVERY`], until the pool is dropped.
async fn refresh(pool: Weak<Inner>, targets: Vec<Target>) {
    let mut every = tokio::time::interval(RESOLVE_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(inner) = pool.upgrade() else { return };
        inner.resolve(&targets).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_used_as_they_are_and_names_resolved() {
        assert!(matches!(
            Target::parse("http://127.0.0.1:7001"),
            Ok(Target::Fixed(_))
        ));
        assert!(matches!(
            Target::parse("http://[::1]:7001"),
            Ok(Target::Fixed(_))
        ));
        match Target::parse("http://trow-proxy.trow.svc:7001") {
            Ok(Target::Named { host, port, .. }) => {
                assert_eq!((host.as_str(), port), ("trow-proxy.trow.svc", 7001))
            }
            _ => panic!("a host name is resolved by the pool"),
        }
        assert!(Target::parse("not a url").is_err());
        assert!(Target::parse("/just/a/path").is_err());
    }

    #[tokio::test]
    async fn a_name_becomes_a_replica_per_address() {
        // `localhost` resolves on every machine; each address it gives is one replica.
        let pool = ProxyPool::connect(&["http://localhost:7001".to_string()], &Trust::none())
            .await
            .unwrap();
        let urls = pool.replica_urls();
        assert!(!urls.is_empty());
        assert!(
            urls.iter()
                .all(|u| u.ends_with(":7001") && !u.contains("localhost")),
            "{urls:?}"
        );
        assert!(
            urls.contains(&"http://127.0.0.1:7001".to_string()),
            "{urls:?}"
        );
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_kept_by_name() {
        let url = "http://trow-proxy.invalid:7001".to_string();
        let pool = ProxyPool::connect(std::slice::from_ref(&url), &Trust::none())
            .await
            .unwrap();
        assert_eq!(pool.replica_urls(), vec![url]);
    }
}
