//! The admission webhooks end to end: real `trow` processes (one process, and split, where
//! `trow admission` is its own process behind the gateway's `--admission`), AdmissionReviews
//! POSTed to `/validate-image` and `/mutate-image` as the API server sends them, HTTPS with
//! certificate rotation, and pre-warming an admitted pod's image from a real upstream.
//!
//! Pre-warm scenarios use their own `127.0.0.8x` addresses, so tests run side by side.

// The helpers live in admission/ (this file's own name is taken by the test crate).
#[path = "admission/mod.rs"]
mod support;

#[path = "admission/prewarm.rs"]
mod prewarm;
#[path = "admission/sites.rs"]
mod sites;
#[path = "admission/spellings.rs"]
mod spellings;
#[path = "admission/tls.rs"]
mod tls;
#[path = "admission/webhooks.rs"]
mod webhooks;

use trow_tests::both_topologies;

both_topologies!(webhooks::round_trip);
both_topologies!(webhooks::policy_table);
both_topologies!(spellings::default_ports_are_the_registry);
both_topologies!(
    prewarm::admitted_pods_are_prewarmed,
    "127.0.0.81",
    "127.0.0.82"
);
both_topologies!(
    prewarm::image_volumes_are_prewarmed,
    "127.0.0.83",
    "127.0.0.84"
);
both_topologies!(sites::image_volumes);
both_topologies!(sites::updates_judge_only_changed_images);
both_topologies!(sites::too_long_to_rewrite);

#[tokio::test(flavor = "multi_thread")]
async fn prefixes_match_at_boundaries_longest_wins() {
    webhooks::prefix_boundaries().await;
}

/// The guard that keeps pre-warm on loopback refuses what would reach past it.
#[test]
fn configs_that_would_prewarm_past_loopback_are_refused() {
    use support::prewarm_stays_on_loopback as ok;
    assert!(ok(webhooks::CONFIG).is_ok());
    assert!(ok("image_mutation:\n  enabled: false\n").is_ok());
    let loopback = "registry_proxies:\n  configured_only: true\n  registries:\n    \
                    - host: \"127.0.0.81:5000\"\n    - host: \"[::1]\"\n";
    assert!(ok(loopback).is_ok());
    for bad in [
        "image_validation:\n  default: Allow\n",
        "registry_proxies:\n  registries:\n    - host: \"127.0.0.81\"\n",
        &loopback.replace("127.0.0.81:5000", "registry-1.docker.io"),
        &loopback.replace("[::1]", "localhost:5000"),
    ] {
        assert!(ok(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_bad_config_stops_start_up() {
    webhooks::bad_config_stops_start_up();
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_and_rotates_its_certificate() {
    tls::serves_and_rotates_its_certificate().await;
}

#[test]
fn tls_a_bad_pair_stops_start_up() {
    tls::a_bad_pair_stops_start_up();
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_only_beside_the_one_process() {
    webhooks::webhooks_only_beside_the_one_process().await;
}
