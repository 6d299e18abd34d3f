//! The pull-through cache end to end: real upstream registries (CNCF distribution behind a
//! counting front, or scripted liars) on loopback addresses, Trow configured to proxy them, and
//! real clients (skopeo, crane, containerd) pulling through `/v2/f/<registry>/...` and
//! containerd's `?ns=`. Every scenario runs in both topologies (in the split one, `trow proxy`
//! is its own process), checks what the upstream was asked (counted exactly), and ends with
//! `trow fsck`.
//!
//! Each scenario has its own `127.0.0.x` addresses, so they run side by side.

// The helpers live in proxy/ (this file's own name is taken by the test crate).
#[path = "proxy/mod.rs"]
mod support;

#[path = "proxy/auth.rs"]
mod auth;
#[path = "proxy/counter.rs"]
mod counter;
#[path = "proxy/evict.rs"]
mod evict;
#[path = "proxy/hostile_upstream.rs"]
mod hostile_upstream;
#[path = "proxy/large.rs"]
mod large;
#[path = "proxy/modes.rs"]
mod modes;
#[path = "proxy/policy.rs"]
mod policy;
#[path = "proxy/pulls.rs"]
mod pulls;
#[path = "proxy/ranges.rs"]
mod ranges;
#[path = "proxy/refusals.rs"]
mod refusals;
#[path = "proxy/replicas.rs"]
mod replicas;

use trow_tests::both_topologies;

both_topologies!(
    evict::the_least_recently_pulled_image_is_evicted,
    "127.0.0.211",
    "127.0.0.212"
);
both_topologies!(
    evict::disk_pressure_evicts_the_cache_before_pushes_fail,
    "127.0.0.213",
    "127.0.0.214"
);

both_topologies!(pulls::cold_pull_then_warm, "127.0.0.21", "127.0.0.22");
both_topologies!(
    pulls::port_80_upstream_crane_and_ns,
    "127.0.0.2",
    "127.0.0.3"
);
both_topologies!(
    pulls::stale_when_the_upstream_fails,
    "127.0.0.23",
    "127.0.0.24"
);
both_topologies!(
    pulls::concurrent_cold_pulls_fetch_each_blob_once,
    "127.0.0.33",
    "127.0.0.34"
);
both_topologies!(
    refusals::writes_under_f_are_denied,
    "127.0.0.25",
    "127.0.0.26"
);
both_topologies!(refusals::basic_auth_upstream, "127.0.0.27", "127.0.0.28");
both_topologies!(
    refusals::a_lying_upstream_is_not_cached,
    "127.0.0.31",
    "127.0.0.32"
);
both_topologies!(
    refusals::unconfigured_loopback_is_refused,
    "127.0.0.5",
    "127.0.0.6"
);
both_topologies!(auth::bearer_token_upstream, "127.0.0.61", "127.0.0.62");
both_topologies!(
    auth::credentials_are_not_forwarded_on_a_redirect,
    "127.0.0.63",
    "127.0.0.64"
);
both_topologies!(modes::podman_pulls_both_f_forms, "127.0.0.65", "127.0.0.66");
both_topologies!(
    modes::offline_serves_only_the_cache,
    "127.0.0.67",
    "127.0.0.68"
);
both_topologies!(
    modes::configured_only_refuses_the_rest,
    "127.0.0.69",
    "127.0.0.70"
);
both_topologies!(
    modes::ns_of_the_hostname_is_local,
    "127.0.0.71",
    "127.0.0.72"
);
both_topologies!(
    ranges::ranges_on_cold_filling_and_cached_blobs,
    "127.0.0.73",
    "127.0.0.74"
);
both_topologies!(
    ranges::index_children_are_fetched_when_asked,
    "127.0.0.75",
    "127.0.0.76"
);
both_topologies!(
    hostile_upstream::token_realms_pass_the_ssrf_guard,
    "127.0.0.151",
    "127.0.0.152"
);
both_topologies!(
    hostile_upstream::huge_answers_are_refused,
    "127.0.0.153",
    "127.0.0.154"
);
both_topologies!(
    hostile_upstream::slow_upstreams_are_cut_off,
    "127.0.0.155",
    "127.0.0.156"
);
both_topologies!(
    hostile_upstream::an_abandoned_fetch_is_dropped,
    "127.0.0.157",
    "127.0.0.158"
);
both_topologies!(
    hostile_upstream::a_failed_manifest_fill_fails_alike,
    "127.0.0.159",
    "127.0.0.160"
);
both_topologies!(
    policy::denied_images_are_refused_under_every_name,
    "127.0.0.171",
    "127.0.0.172"
);
both_topologies!(
    policy::an_allowed_tag_pulls_whole,
    "127.0.0.173",
    "127.0.0.174"
);
both_topologies!(
    policy::default_ports_reach_the_configured_upstream,
    "127.0.0.175",
    "127.0.0.176"
);
mod ns_of_the_hostname_in_capitals_is_local {
    #[tokio::test(flavor = "multi_thread")]
    async fn one_process() {
        crate::policy::ns_of_the_hostname_in_capitals_is_local(trow_tests::Topology::OneProcess)
            .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn split() {
        crate::policy::ns_of_the_hostname_in_capitals_is_local(trow_tests::Topology::Split).await;
    }
}
both_topologies!(
    large::a_large_layer_fills_in_bounded_memory,
    "127.0.0.181",
    "127.0.0.182"
);
both_topologies!(
    large::a_broken_off_fill_frees_its_bytes,
    "127.0.0.183",
    "127.0.0.184"
);
both_topologies!(
    large::a_blob_over_max_blob_size_is_refused,
    "127.0.0.185",
    "127.0.0.186"
);
// `counter::the_counting_front_counts_every_request_exactly` (127.0.0.30) checks the counting.

/// A bad `--config-file` stops `trow` and `trow proxy` at start-up, naming the key.
mod a_bad_config_stops_start_up {
    use crate::modes::{Reader, a_bad_config_stops_start_up};

    #[test]
    fn one_process() {
        a_bad_config_stops_start_up(Reader::OneProcess);
    }

    #[test]
    fn trow_proxy() {
        a_bad_config_stops_start_up(Reader::Proxy);
    }
}

mod replicas_split {
    #[tokio::test(flavor = "multi_thread")]
    async fn a_dead_proxy_replica_is_passed_over() {
        crate::replicas::a_dead_proxy_replica_is_passed_over("127.0.0.41").await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_proxy_killed_mid_fill_is_taken_over() {
        crate::replicas::a_proxy_killed_mid_fill_is_taken_over("127.0.0.42").await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_name_for_several_replicas() {
        crate::replicas::one_name_for_several_replicas(
            ["127.0.0.77", "127.0.0.78", "127.0.0.79"],
            "127.0.0.80",
        )
        .await;
    }
}
