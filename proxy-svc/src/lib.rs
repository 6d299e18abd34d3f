//! Trow's pull-through cache: answers reads of other registries (`/v2/f/<registry>/...` and
//! containerd's `?ns=<registry>`) from the storage service, asking the upstream only what it must
//! and caching what it fetches while the client reads it.
//!
//! - [`config`], [`reference`], [`size`]: the `registry_proxies` section and resolving a name to
//!   an upstream and a cached repository, from `trow-upstreams` (shared with admission).
//! - [`policy`]: the `image_validation` policy, enforced on every request before it is served.
//! - [`ssrf`]: which addresses an unconfigured upstream may not resolve to.
//! - [`upstream`]: the upstream registry API with its three ways of authenticating;
//!   [`challenge`]: reading the `WWW-Authenticate` challenges it answers.
//! - [`service`]: the gRPC service: resolves and judges each request, then answers it with
//!   `manifests` (revalidate, fetch through a fill, serve stale) or `fill` (blobs: one upstream
//!   fetch however many ask, through bounded buffers).
//! - [`audit`]: upstream fetches and stale serves, sent to the audit log (storage's).
//! - [`failures`]: manifest fills that failed lately, for the requests that followed them.
//! - [`tags`]: tag lists, from the upstream or, when it fails, the cache.
//! - [`warm`]: filling the cache with a whole image before anyone pulls it (pre-warm).
//! - [`server`]: the gRPC server with health and reflection.
//! - [`metrics`]: cache results, fills in progress, upstream latency and errors.

/// The `registry_proxies` section and name resolution live in `trow-upstreams` (the admission
/// service shares them); re-exported here under the names this crate has always used.
pub use trow_upstreams::{config, reference, size};

pub mod audit;
pub mod challenge;
pub mod failures;
mod fill;
mod manifests;
pub mod metrics;
pub mod policy;
#[cfg(test)]
mod props;
pub mod server;
pub mod service;
pub mod ssrf;
pub mod tags;
pub mod upstream;
pub mod warm;

pub use server::{in_process, serve};
pub use service::ProxyService;

/// The upstream-header parsers this crate keeps to itself, reachable by the fuzz targets in
/// `fuzz/` (docs/RELIABILITY.md) and nothing else: not part of the proxy's API.
#[doc(hidden)]
pub mod fuzzing {
    use reqwest::header::HeaderMap;

    /// The next page of an upstream tag list, from its `Link` header, if it lies under
    /// `repository`.
    pub fn next_page(headers: &HeaderMap, repository: &str) -> Option<String> {
        crate::tags::next_page(headers, repository)
    }
}
