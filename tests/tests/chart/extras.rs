//! What the chart offers beyond the contract: the listen address (IPv6), extra volumes for
//! files the config names, the node set-up's trust in an https mirror, and the generated
//! secrets given as existing Secrets for renderers without `lookup`.

use super::render::{args, flag, flags, render, render_as, try_template, volume};

/// Every address a Trow process listens on: the values of --bind, --listen, --metrics-listen
/// (and the one process's in-pod --*-listen, which stay on loopback).
fn listen_addresses(set: &str) -> Vec<String> {
    let r = render(set);
    let mut all = Vec::new();
    for (w, pod) in r.workloads() {
        if matches!(w["kind"].as_str(), Some("Job" | "DaemonSet")) {
            continue;
        }
        for c in pod["containers"].as_sequence().unwrap() {
            let a = args(pod, c["name"].as_str().unwrap());
            for f in ["--bind", "--listen", "--metrics-listen"] {
                all.extend(flags(&a, f).into_iter().map(String::from));
            }
        }
    }
    all
}

#[test]
fn listen_address_is_0000_by_default_and_ipv6_on_request() {
    for (set, prefix) in [
        ("default", "0.0.0.0:"),
        ("single-webhooks", "0.0.0.0:"),
        ("ipv6-gitops", "[::]:"),
    ] {
        let a = listen_addresses(set);
        assert!(a.len() >= 4, "{set}: {a:?}");
        for addr in &a {
            assert!(
                addr.starts_with(prefix),
                "{set}: {addr} does not start with {prefix}"
            );
        }
    }
    // The address is checked by the schema: a host name or a bare IPv6 address is refused.
    for bad in ["localhost", "::"] {
        let e = try_template(
            "trow",
            "trow",
            &["--set".into(), format!("listenAddress={bad}")],
        )
        .expect_err(bad);
        assert!(e.contains("listenAddress"), "{bad}: {e}");
    }
}

#[test]
fn extra_volumes_reach_every_trow_service_container_and_nothing_else() {
    let r = render("ipv6-gitops");
    let mut seen = 0;
    for (w, pod) in r.workloads() {
        let name = w["metadata"]["name"].as_str().unwrap();
        let service = !matches!(w["kind"].as_str(), Some("Job" | "DaemonSet"));
        let has_volume = pod["volumes"]
            .as_sequence()
            .is_some_and(|vs| vs.iter().any(|v| v["name"] == "upstream-ca"));
        assert_eq!(has_volume, service, "{name}");
        if !service {
            continue;
        }
        assert_eq!(
            volume(pod, "upstream-ca")["secret"]["secretName"],
            "upstream-ca"
        );
        for c in pod["containers"].as_sequence().unwrap() {
            let m = c["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "upstream-ca")
                .unwrap_or_else(|| panic!("{name}: {:?} does not mount it", c["name"]));
            assert_eq!(m["mountPath"], "/etc/trow/upstream-ca");
            assert_eq!(m["readOnly"], true);
            seen += 1;
        }
    }
    // gateway, storage, proxy, admission, webhooks.
    assert_eq!(seen, 5);
    let cm = r.get("ConfigMap", "trow-config")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(cm.contains("ca_file: /etc/trow/upstream-ca/ca.crt"), "{cm}");
}

#[test]
fn node_setup_trusts_an_https_mirror_by_ca_file_or_skip_verify() {
    let r = render("ipv6-gitops");
    let ds = r.get("DaemonSet", "trow-node-setup");
    let a = args(&ds["spec"]["template"]["spec"], "containerd-config");
    assert_eq!(flag(&a, "--mirror-url"), Some("https://trow.example.com"));
    assert_eq!(flag(&a, "--ca-file"), Some("/etc/pki/trow-ca.crt"));
    assert!(!a.iter().any(|x| x == "--skip-verify"));

    let s = render_as(
        "node-setup",
        "trow",
        "trow",
        &["--set", "nodeSetup.skipVerify=true"],
    );
    let a = args(
        &s.get("DaemonSet", "trow-node-setup")["spec"]["template"]["spec"],
        "containerd-config",
    );
    assert!(a.iter().any(|x| x == "--skip-verify"));
    assert_eq!(flag(&a, "--ca-file"), None);

    let e = try_template(
        "trow",
        "trow",
        &[
            "--values".into(),
            super::render::values_file("ipv6-gitops")
                .display()
                .to_string(),
            "--set".into(),
            "nodeSetup.skipVerify=true".into(),
        ],
    )
    .expect_err("caFile with skipVerify");
    assert!(e.contains("exclude each other"), "{e}");
    let e = try_template(
        "trow",
        "trow",
        &["--set".into(), "nodeSetup.caFile=relative.crt".into()],
    )
    .expect_err("a relative caFile");
    assert!(e.contains("caFile"), "{e}");
}

#[test]
fn generated_secrets_can_be_given_for_renderers_without_lookup() {
    let r = render("ipv6-gitops");
    assert!(r.find("Secret", "trow-grpc-token").is_none());
    assert!(r.find("Secret", "trow-token-key").is_none());
    for (w, pod) in r.workloads() {
        if matches!(w["kind"].as_str(), Some("Job" | "DaemonSet")) {
            continue;
        }
        let name = w["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            volume(pod, "grpc-token")["secret"]["secretName"],
            "my-grpc-token",
            "{name}"
        );
        let component = w["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap();
        if matches!(component, "gateway" | "webhooks") {
            assert_eq!(
                volume(pod, "token-key")["secret"]["secretName"],
                "my-token-key",
                "{name}"
            );
        }
    }
    // Without them the chart draws its own (kept across upgrades by lookup).
    let d = render("auth");
    assert!(d.find("Secret", "trow-grpc-token").is_some());
    assert!(d.find("Secret", "trow-token-key").is_some());
}
