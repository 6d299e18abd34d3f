//! What a review of the chart as an attacker and as an unlucky operator asked for: secrets that
//! roll the pods when they change, disruption budgets, a storage update that never runs two
//! owners of one volume, an autoscaler with something to measure, and the webhooks' registry
//! port guarded exactly like the main one.

use super::render::{Rendered, args, flag, render, render_as, try_template};
use serde_yaml::Value;

/// The pod annotations of every Trow service workload, by workload name.
fn pod_annotations(r: &Rendered) -> Vec<(String, Value)> {
    r.workloads()
        .into_iter()
        .filter(|(w, _)| matches!(w["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(|(w, _)| {
            (
                w["metadata"]["name"].as_str().unwrap().to_string(),
                w["spec"]["template"]["metadata"]["annotations"].clone(),
            )
        })
        .collect()
}

/// The one `checksum/secrets` all Trow pods carry (None when none does).
fn secrets_checksum(r: &Rendered) -> Option<String> {
    let all: Vec<Option<String>> = pod_annotations(r)
        .into_iter()
        .map(|(_, a)| a["checksum/secrets"].as_str().map(String::from))
        .collect();
    assert!(all.windows(2).all(|w| w[0] == w[1]), "{}: {all:?}", r.set);
    all[0].clone()
}

fn config_checksum(r: &Rendered) -> String {
    pod_annotations(r)[0].1["checksum/config"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_changed_password_rolls_the_pods() {
    // Nothing from values in a Secret: no checksum (the default rendering is unchanged).
    assert_eq!(secrets_checksum(&render("default")), None);
    let with = |password: &str| {
        render_as(
            "default",
            "trow",
            "trow",
            &[
                "--set",
                "trow.proxyRegistries.config.registries[0].host=registry-1.docker.io",
                "--set",
                "trow.proxyRegistries.config.registries[0].username=robot",
                "--set-string",
                &format!("trow.proxyRegistries.config.registries[0].password={password}"),
            ],
        )
    };
    let (a, b) = (with("first"), with("second"));
    // The ConfigMap names only the password file, so its checksum cannot see the change...
    assert_eq!(config_checksum(&a), config_checksum(&b));
    // ...the secrets' checksum does, on every pod.
    let (sa, sb) = (secrets_checksum(&a), secrets_checksum(&b));
    assert!(sa.is_some() && sb.is_some());
    assert_ne!(sa, sb);
    assert_eq!(
        sa,
        secrets_checksum(&with("first")),
        "stable across renders"
    );
    for (_, ann) in pod_annotations(&a) {
        assert!(!serde_yaml::to_string(&ann).unwrap().contains("first"));
    }
    // The users' password too.
    let u = render("auth");
    let v = render_as(
        "auth",
        "trow",
        "trow",
        &["--set", "trow.password=another-pw"],
    );
    assert_ne!(secrets_checksum(&u), secrets_checksum(&v));
}

#[test]
fn disruption_budgets_guard_replicated_components_only() {
    let r = render("webhooks-patch");
    let budgets = r.of_kind("PodDisruptionBudget");
    let mut names: Vec<&str> = budgets
        .iter()
        .map(|b| b["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["trow-gateway", "trow-proxy", "trow-webhooks"]);
    for b in budgets {
        assert_eq!(b["spec"]["maxUnavailable"], 1);
        let sel = b["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
        let selected: Vec<&str> = r
            .workloads()
            .into_iter()
            .filter(|(w, _)| {
                let labels = &w["spec"]["template"]["metadata"]["labels"];
                sel.iter().all(|(k, v)| &labels[k.as_str().unwrap()] == v)
            })
            .map(|(w, _)| w["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "{:?} selects {selected:?}",
            b["metadata"]["name"]
        );
    }
    // One replica: a budget would block every drain, so there is none.
    let one = render_as(
        "hpa-off",
        "trow",
        "trow",
        &["--set", "gateway.replicas=1", "--set", "proxy.replicas=1"],
    );
    assert!(one.of_kind("PodDisruptionBudget").is_empty());
    assert!(render("single").of_kind("PodDisruptionBudget").is_empty());
    let off = render_as(
        "default",
        "trow",
        "trow",
        &["--set", "gateway.podDisruptionBudget.enabled=false"],
    );
    assert!(off.find("PodDisruptionBudget", "trow-gateway").is_none());
    assert!(off.find("PodDisruptionBudget", "trow-proxy").is_some());
}

#[test]
fn storage_updates_stop_the_old_owner_first_and_let_it_drain() {
    for (set, name) in [("default", "trow-storage"), ("single", "trow")] {
        let r = render(set);
        let s = r.get("StatefulSet", name);
        assert_eq!(s["spec"]["replicas"], 1);
        let strategy = &s["spec"]["updateStrategy"]["type"];
        assert!(strategy.is_null() || strategy == "RollingUpdate", "{set}");
        let grace = s["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        assert!(
            grace >= 60,
            "{set}: {grace} s to finish the writes in flight"
        );
    }
}

#[test]
fn the_autoscaler_has_a_cpu_request_to_measure_against() {
    let r = render("default");
    assert!(r.find("HorizontalPodAutoscaler", "trow-proxy").is_some());
    let proxy = &r.get("Deployment", "trow-proxy")["spec"]["template"]["spec"];
    assert!(!proxy["containers"][0]["resources"]["requests"]["cpu"].is_null());
    let e = try_template(
        "trow",
        "trow",
        &["--set".into(), "proxy.resources.requests.cpu=null".into()],
    )
    .expect_err("an HPA without a CPU request");
    assert!(e.contains("proxy.resources.requests.cpu"), "{e}");
    // Without autoscaling, no request is needed.
    try_template(
        "trow",
        "trow",
        &[
            "--set".into(),
            "proxy.resources.requests.cpu=null".into(),
            "--set".into(),
            "proxy.autoscaling.enabled=false".into(),
        ],
    )
    .expect("no HPA, no CPU request needed");
}

/// The webhooks' gateway serves the whole registry API on 8443, which no NetworkPolicy closes
/// (the API server calls it from wherever it runs): it must ask for the same logins as the main
/// gateway, with the same users, rules and token key, in both modes.
#[test]
fn the_webhooks_gateway_guards_the_registry_like_the_main_one() {
    const AUTH_FLAGS: [&str; 5] = [
        "--user",
        "--password",
        "--htpasswd",
        "--token-key-file",
        "--config-file",
    ];
    for (set, main, webhooks) in [
        (
            "ipv6-gitops",
            ("trow-gateway", "trow"),
            ("trow-webhooks", "trow"),
        ),
        ("single-auth-mtls", ("trow", "trow"), ("trow", "webhooks")),
    ] {
        let r = render(set);
        let pod = |w: &str| {
            r.workloads()
                .into_iter()
                .find(|(o, _)| o["metadata"]["name"] == w && o["kind"] != "Job")
                .unwrap()
                .1
        };
        let a = args(pod(main.0), main.1);
        let b = args(pod(webhooks.0), webhooks.1);
        assert!(flag(&a, "--password").is_some(), "{set}: users configured");
        for f in AUTH_FLAGS {
            assert_eq!(flag(&a, f), flag(&b, f), "{set}: {f}");
        }
        assert_eq!(
            a.iter().any(|x| x == "--anonymous-pull"),
            b.iter().any(|x| x == "--anonymous-pull"),
            "{set}"
        );
        let env = |p: &Value, c: &str| super::render::container(p, c)["env"].clone();
        assert_eq!(
            env(pod(main.0), main.1),
            env(pod(webhooks.0), webhooks.1),
            "{set}"
        );
    }
}
