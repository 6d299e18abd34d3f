//! The registries Trow proxies, as the proxy and the admission webhooks both need them: the
//! `registry_proxies` section of the config file, and what a client (or a pod's image) wrote
//! resolved to one upstream and one cached repository. Both services must resolve a name the
//! same way, or a rewritten image would land on a cache the proxy never fills; so they share
//! this crate, which holds no client and talks to no network (no reqwest here).
//!
//! - [`config`]: the `registry_proxies` section, validated at start-up ([`size`]: its sizes).
//! - [`reference`]: what a client wrote (`docker.io`, an alias, `host:port`, `host_port`) →
//!   which upstream, which repository there, which cached repository here; and, for the
//!   validation policy, which image a `<trow>/f/...` path caches.

pub mod config;
pub mod reference;
pub mod size;
