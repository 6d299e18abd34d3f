//! Prometheus metrics of the pull-through cache: what the cache answered (hit, miss,
//! revalidated, stale) per resource, the blob fills in progress, and the upstream exchanges'
//! latency and failures, all by upstream registry.
//!
//! The `upstream` label is the registry's cache name (`docker.io`, `quay.io`,
//! `registry.local_5000`: one canonical spelling however clients wrote it). A configured
//! registry always has its own label; registries reached without configuration (when the
//! config allows any) get their own only for the first [`UNCONFIGURED_LABELS`] of them that
//! answered, the rest share `other`: clients choose those names, and must not be able to grow
//! the series without bound, nor use the labels up with names of registries that do not exist.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;
use trow_proto::proxy::CacheStatus;

use crate::reference::Target;
use crate::upstream::UpstreamError;

/// Unconfigured registries that get a label of their own.
pub const UNCONFIGURED_LABELS: usize = 32;

type Upstream = Arc<String>;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    upstream: Upstream,
    resource: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: Upstream,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ExchangeLabels {
    upstream: Upstream,
    method: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    upstream: Upstream,
    error: &'static str,
}

fn latency_histogram() -> Histogram {
    // A registry on the LAN to past every timeout.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

struct ProxyMetrics {
    cache: Family<CacheLabels, Counter>,
    fills: Family<UpstreamLabel, Gauge>,
    latency: Family<ExchangeLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    labels: RwLock<Labels>,
}

#[derive(Default)]
struct Labels {
    known: HashMap<String, Upstream>,
    unconfigured: usize,
}

static PROXY: LazyLock<ProxyMetrics> = LazyLock::new(|| ProxyMetrics {
    cache: Family::default(),
    fills: Family::default(),
    latency: Family::new_with_constructor(latency_histogram),
    errors: Family::default(),
    labels: RwLock::default(),
});

/// Registers the proxy's metrics in `registry`.
pub fn register(registry: &mut Registry) {
    let m = &*PROXY;
    registry.register(
        "trow_proxy_cache_requests",
        "Reads through the cache, by upstream, resource (manifest, blob, tags) and result \
         (hit, miss, revalidated, stale)",
        m.cache.clone(),
    );
    registry.register(
        "trow_proxy_blob_fills_in_progress",
        "Blobs being fetched from an upstream into the cache by this proxy, by upstream",
        m.fills.clone(),
    );
    registry.register_with_unit(
        "trow_proxy_upstream_request_duration",
        "Time to an upstream's answer (headers; authentication round trips included), by \
         upstream and method",
        Unit::Seconds,
        m.latency.clone(),
    );
    registry.register(
        "trow_proxy_upstream_errors",
        "Upstream exchanges that failed, by upstream and error (timeout, unreachable, status, \
         too_many_requests, unauthorized, invalid, too_large, refused, body); a 404 is an \
         answer, not an error",
        m.errors.clone(),
    );
}

/// The bounded label of `t`'s upstream (see the module docs), claiming one of the
/// unconfigured registries' labels if it has none yet.
fn upstream(t: &Target) -> Upstream {
    label(t, true)
}

/// `t`'s upstream's label if it has one; a failed exchange with an unconfigured registry never
/// claims one, so names nobody can pull from cannot use up the labels real registries need.
fn label(t: &Target, claim: bool) -> Upstream {
    let name = t.upstream.cache_name.as_str();
    if let Some(u) = PROXY.labels.read().expect("labels lock").known.get(name) {
        return u.clone();
    }
    if !claim && t.registry.is_none() {
        return Arc::new("other".to_string());
    }
    let mut labels = PROXY.labels.write().expect("labels lock");
    if let Some(u) = labels.known.get(name) {
        return u.clone();
    }
    if t.registry.is_none() {
        if labels.unconfigured >= UNCONFIGURED_LABELS {
            return Arc::new("other".to_string());
        }
        labels.unconfigured += 1;
    }
    let u = Arc::new(name.to_string());
    labels.known.insert(name.to_string(), u.clone());
    u
}

/// The cache answered a read of `resource` (`manifest`, `blob`, `tags`) with `status`.
pub(crate) fn cache(t: &Target, resource: &'static str, status: CacheStatus) {
    let result = match status {
        CacheStatus::Hit => "hit",
        CacheStatus::Miss => "miss",
        CacheStatus::Revalidated => "revalidated",
        CacheStatus::Stale => "stale",
        CacheStatus::Unspecified => return,
    };
    PROXY
        .cache
        .get_or_create(&CacheLabels {
            upstream: upstream(t),
            resource,
            result,
        })
        .inc();
}

/// Counts a blob fill as in progress until dropped.
pub(crate) struct FillInProgress(Gauge);

impl Drop for FillInProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) fn fill_started(t: &Target) -> FillInProgress {
    let g = PROXY.fills.get_or_create_owned(&UpstreamLabel {
        upstream: upstream(t),
    });
    g.inc();
    FillInProgress(g)
}

/// An exchange with `t`'s upstream ended after `elapsed`, failing with `error` if it did.
pub(crate) fn exchange(
    t: &Target,
    method: &reqwest::Method,
    elapsed: Duration,
    error: Option<&UpstreamError>,
) {
    // An answer (a 404 too) shows a registry is there; a failure does not.
    let upstream = label(
        t,
        matches!(error, None | Some(UpstreamError::NotFound { .. })),
    );
    let method = match *method {
        reqwest::Method::GET => "GET",
        reqwest::Method::HEAD => "HEAD",
        _ => "OTHER",
    };
    PROXY
        .latency
        .get_or_create(&ExchangeLabels {
            upstream: upstream.clone(),
            method,
        })
        .observe(elapsed.as_secs_f64());
    let error = match error {
        None | Some(UpstreamError::NotFound { .. }) => return,
        Some(UpstreamError::Unauthorized { .. }) => "unauthorized",
        Some(UpstreamError::TooManyRequests { .. }) => "too_many_requests",
        Some(UpstreamError::Status { .. }) => "status",
        Some(UpstreamError::Timeout { .. }) => "timeout",
        Some(UpstreamError::Unreachable { .. }) => "unreachable",
        Some(UpstreamError::Invalid { .. }) => "invalid",
        Some(UpstreamError::TooLarge { .. }) => "too_large",
        Some(UpstreamError::RealmRefused { .. } | UpstreamError::Refused(_)) => "refused",
    };
    upstream_error(upstream, error);
}

/// A blob download from `t`'s upstream broke off after its answer began.
pub(crate) fn body_failed(t: &Target) {
    upstream_error(label(t, false), "body");
}

fn upstream_error(upstream: Upstream, error: &'static str) {
    PROXY
        .errors
        .get_or_create(&ErrorLabels { upstream, error })
        .inc();
}
