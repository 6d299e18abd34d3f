//! Faults, with real processes: a `trow` process SIGKILLed at the worst moment, or an upstream
//! that stops answering, and what clients see meanwhile and once the process is back.
//!
//! - Storage down (split topology): the gateway answers every request that needs storage at
//!   once with `503` and an OCI error body, while `GET /v2/` stays `200` (it needs no storage;
//!   a liveness probe on it must not restart gateways because storage is down). Storage started
//!   again on the same data dir and address is used again with no gateway restart. Storage
//!   killed while the gateway streams a blob ends the client's download at once, and its
//!   `Range` retry gets the rest once storage is back.
//! - The gateway killed while it streams a large blob to a slow client, or while a client
//!   streams one to it: the client resumes against a new gateway (in one process: a new `trow`)
//!   from where it stopped, and gets or stores the blob byte for byte.
//! - Storage killed during a cache fill (split, two `trow proxy` replicas): reads through the
//!   cache are 503s too, blamed on storage and not on the replicas; the client's retry fills the
//!   blob again from the upstream, and the killed fill leaves no scratch behind.
//! - An upstream that accepts requests and never answers: cached tags are served stale, what was
//!   never cached is a `502`, within the configured timeouts.
//! - Storage killed while it evicts cached images: the store checks clean as the crash left it,
//!   and every image pulls whole after a restart. (Storage killed during a garbage collection:
//!   tests/tests/gc.rs.)
//!
//! Where a process must meet a dead connection before it has noticed the close (as a busy one
//! does), it is paused with SIGSTOP while storage dies and requests queue, then resumed.
//!
//! Every test ends with `trow fsck`. Timeouts here are hang guards, never speed assertions.
//! Pull-through scenarios use `127.0.0.191`–`127.0.0.199` and `127.0.0.215`.

// The scenarios live in faults/ (this file's own name is taken by the test crate).
#[path = "faults/cache.rs"]
mod cache;
#[path = "faults/eviction.rs"]
mod eviction;
#[path = "faults/killed_gateway.rs"]
mod killed_gateway;
#[path = "faults/storage_down.rs"]
mod storage_down;
#[path = "faults/support.rs"]
mod support;

#[tokio::test(flavor = "multi_thread")]
async fn storage_down_is_503_until_it_is_back() {
    storage_down::storage_down_is_503_until_it_is_back().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_killed_mid_pull() {
    storage_down::storage_killed_mid_pull().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_killed_during_a_cache_fill() {
    cache::storage_killed_during_a_cache_fill("127.0.0.191").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_killed_during_an_eviction() {
    eviction::storage_killed_during_an_eviction("127.0.0.215").await;
}

use trow_tests::both_topologies;

both_topologies!(killed_gateway::gateway_killed_mid_pull);
both_topologies!(killed_gateway::gateway_killed_mid_push);
both_topologies!(cache::a_hanging_upstream, "127.0.0.192", "127.0.0.193");
