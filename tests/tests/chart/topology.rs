//! What the workloads are in each mode: names, args, ports and replicas as the chart contract
//! says, the headless proxy Service, the HPA, the NetworkPolicies, names after the release.

use serde_yaml::Value;

use super::render::{args, container, flag, render, render_as};

#[test]
fn default_is_split_with_the_contracts_names_args_and_ports() {
    let r = render("default");
    let gw = &r.get("Deployment", "trow-gateway")["spec"];
    assert_eq!(gw["replicas"], 2);
    let a = args(&gw["template"]["spec"], "trow");
    assert_eq!(
        a[..9],
        [
            "gateway",
            "--bind",
            "0.0.0.0:8000",
            "--storage",
            "http://trow-storage:7000",
            "--proxy",
            "http://trow-proxy:7001",
            "--hostname",
            "trow.example.com"
        ]
    );
    // The webhook routes take no login: the public gateway does not serve them (404).
    assert_eq!(flag(&a, "--admission"), None);
    assert_eq!(
        flag(&a, "--config-file"),
        Some("/etc/trow/config/config.yaml")
    );
    assert_eq!(
        flag(&a, "--grpc-token-file"),
        Some("/etc/trow/grpc-token/token")
    );
    assert_eq!(flag(&a, "--metrics-listen"), Some("0.0.0.0:9090"));
    assert_eq!(flag(&a, "--user"), None, "no users by default");
    let c = container(&gw["template"]["spec"], "trow");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");

    let st = r.get("StatefulSet", "trow-storage");
    assert_eq!(st["spec"]["replicas"], 1);
    let pod = &st["spec"]["template"]["spec"];
    assert_eq!(
        args(pod, "trow")[..5],
        [
            "storage",
            "--listen",
            "0.0.0.0:7000",
            "--data-dir",
            "/var/lib/trow"
        ]
    );
    let claim = &st["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
    assert_eq!(
        container(pod, "trow")["readinessProbe"]["grpc"]["port"],
        7000
    );

    let px = r.get("Deployment", "trow-proxy");
    assert!(
        px["spec"]["replicas"].is_null(),
        "the HPA owns the proxy's replicas"
    );
    let pa = args(&px["spec"]["template"]["spec"], "trow");
    assert_eq!(
        pa[..5],
        [
            "proxy",
            "--listen",
            "0.0.0.0:7001",
            "--storage",
            "http://trow-storage:7000"
        ]
    );
    assert_eq!(flag(&pa, "--hostname"), Some("trow.example.com"));
    let hpa = r.get("HorizontalPodAutoscaler", "trow-proxy");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "trow-proxy");
    assert_eq!(
        (
            hpa["spec"]["minReplicas"].as_u64(),
            hpa["spec"]["maxReplicas"].as_u64()
        ),
        (Some(2), Some(10))
    );
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );

    // Nothing calls the admission service without a webhook: it is rendered only with one.
    assert!(r.find("Deployment", "trow-admission").is_none());
    assert!(r.find("Service", "trow-admission").is_none());
    let hooked = render("webhooks-patch");
    let ad = hooked.get("Deployment", "trow-admission");
    let aa = args(&ad["spec"]["template"]["spec"], "trow");
    assert_eq!(
        aa[..5],
        [
            "admission",
            "--listen",
            "0.0.0.0:7002",
            "--proxy",
            "http://trow-proxy:7001"
        ]
    );

    assert_eq!(
        r.get("Service", "trow-proxy")["spec"]["clusterIP"],
        "None",
        "the proxy Service is headless"
    );
    assert!(r.get("Service", "trow-storage")["spec"]["clusterIP"].is_null());
    let main = r.get("Service", "trow");
    assert_eq!(main["spec"]["ports"][0]["name"], "http");
    assert_eq!(main["spec"]["ports"][0]["port"], 8000);
    for (r, svc, port) in [
        (&r, "trow-storage", 7000),
        (&r, "trow-proxy", 7001),
        (&hooked, "trow-admission", 7002),
    ] {
        assert_eq!(
            r.get("Service", svc)["spec"]["ports"][0]["port"],
            port,
            "{svc}"
        );
    }
    assert!(r.find("Deployment", "trow-webhooks").is_none());
    assert!(r.find("Service", "trow-webhooks").is_none());
    assert!(r.of_kind("ValidatingWebhookConfiguration").is_empty());
    assert!(r.of_kind("MutatingWebhookConfiguration").is_empty());
    assert!(r.of_kind("Job").is_empty() && r.of_kind("DaemonSet").is_empty());
    assert!(r.find("Secret", "trow-grpc-token").is_some());
    assert!(
        r.find("Secret", "trow-auth").is_none() && r.find("Secret", "trow-token-key").is_none()
    );
}

#[test]
fn network_policies_open_each_grpc_port_to_exactly_trows_own_callers() {
    assert_eq!(
        render("default").of_kind("NetworkPolicy").len(),
        2,
        "no admission service, no policy for it"
    );
    let r = render("webhooks-patch");
    let want = [
        (
            "storage",
            7000,
            vec!["admission", "gateway", "proxy", "webhooks"],
        ),
        ("proxy", 7001, vec!["admission", "gateway", "webhooks"]),
        ("admission", 7002, vec!["webhooks"]),
    ];
    assert_eq!(r.of_kind("NetworkPolicy").len(), want.len());
    for (component, port, from) in want {
        let np = &r.get("NetworkPolicy", &format!("trow-{component}"))["spec"];
        assert_eq!(
            np["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            component
        );
        assert_eq!(
            np["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "trow"
        );
        assert_eq!(
            np["policyTypes"],
            serde_yaml::to_value(["Ingress"]).unwrap(),
            "egress stays open (upstreams)"
        );
        let rules = np["ingress"].as_sequence().unwrap();
        assert_eq!(
            rules.len(),
            2,
            "{component}: the gRPC rule and the metrics rule"
        );
        let grpc = &rules[0];
        assert_eq!(grpc["ports"].as_sequence().unwrap().len(), 1);
        assert_eq!(grpc["ports"][0]["port"], port);
        let peers = grpc["from"].as_sequence().unwrap();
        assert_eq!(peers.len(), 1, "{component}: one peer selector");
        let sel = &peers[0]["podSelector"];
        assert!(peers[0]["namespaceSelector"].is_null() && peers[0]["ipBlock"].is_null());
        assert_eq!(sel["matchLabels"]["app.kubernetes.io/instance"], "trow");
        assert_eq!(sel["matchLabels"]["app.kubernetes.io/name"], "trow");
        let e = &sel["matchExpressions"][0];
        assert_eq!(e["key"], "app.kubernetes.io/component");
        assert_eq!(e["operator"], "In");
        let mut got: Vec<&str> = e["values"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, from, "{component}: who may call port {port}");
        // Metrics stay reachable from anywhere: a rule with the port and no `from`.
        assert!(rules[1]["from"].is_null());
        assert_eq!(rules[1]["ports"][0]["port"], 9090);
    }
    // The callers named really are pods of those components; the gateway and webhooks pods
    // (HTTP 8000, HTTPS 8443) have no policy and stay open.
    let r = render("webhooks-patch");
    for (w, _) in r.workloads() {
        let c = w["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap();
        let has_policy = r.find("NetworkPolicy", &format!("trow-{c}")).is_some();
        assert_eq!(
            has_policy,
            matches!(c, "storage" | "proxy" | "admission"),
            "{c}"
        );
    }
    assert!(
        render("single").of_kind("NetworkPolicy").is_empty(),
        "one process listens on loopback"
    );
}

#[test]
fn hpa_off_gives_the_proxy_fixed_replicas() {
    let r = render("hpa-off");
    assert!(r.of_kind("HorizontalPodAutoscaler").is_empty());
    assert_eq!(r.get("Deployment", "trow-proxy")["spec"]["replicas"], 3);
}

#[test]
fn single_mode_is_one_statefulset() {
    let r = render("single");
    let names = r.names();
    let workloads: Vec<&Value> = r.workloads().into_iter().map(|(w, _)| w).collect();
    assert_eq!(workloads.len(), 1, "{names:?}");
    let st = r.get("StatefulSet", "trow");
    let pod = &st["spec"]["template"]["spec"];
    assert_eq!(pod["containers"].as_sequence().unwrap().len(), 1);
    let a = args(pod, "trow");
    assert_eq!(
        a[..4],
        ["--bind", "0.0.0.0:8000", "--data-dir", "/var/lib/trow"]
    );
    assert_eq!(flag(&a, "--hostname"), Some("trow.example.com"));
    assert_eq!(
        flag(&a, "--storage-listen"),
        None,
        "loopback listeners only for the webhooks"
    );
    assert_eq!(
        st["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    assert_eq!(
        r.get("Service", "trow")["spec"]["selector"]["app.kubernetes.io/component"],
        "single"
    );
    assert_eq!(r.of_kind("Service").len(), 1);

    let r = render("single-webhooks");
    let pod = &r.get("StatefulSet", "trow")["spec"]["template"]["spec"];
    let a = args(pod, "trow");
    assert_eq!(flag(&a, "--storage-listen"), Some("127.0.0.1:7000"));
    assert_eq!(flag(&a, "--proxy-listen"), Some("127.0.0.1:7001"));
    assert_eq!(flag(&a, "--admission-listen"), Some("127.0.0.1:7002"));
    assert!(
        a.iter().any(|f| f == "--no-webhooks-on-bind"),
        "the registry port must not answer AdmissionReviews: {a:?}"
    );
    let w = args(pod, "webhooks");
    assert_eq!(
        w[..13],
        [
            "gateway",
            "--bind",
            "0.0.0.0:8443",
            "--tls",
            "/etc/trow/webhook-tls/tls.crt,/etc/trow/webhook-tls/tls.key",
            "--storage",
            "http://127.0.0.1:7000",
            "--proxy",
            "http://127.0.0.1:7001",
            "--admission",
            "http://127.0.0.1:7002",
            "--hostname",
            "trow.example.com"
        ]
    );
    assert_eq!(
        flag(&w, "--metrics-listen"),
        Some("0.0.0.0:9091"),
        "the pod's 9090 is the main process's"
    );
    let probe = &container(pod, "webhooks")["readinessProbe"]["httpGet"];
    assert_eq!(
        (probe["path"].as_str(), probe["scheme"].as_str()),
        (Some("/healthz"), Some("HTTPS"))
    );
    let svc = r.get("Service", "trow-webhooks");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/component"],
        "single"
    );
}

#[test]
fn names_follow_the_release() {
    let r = render_as("webhooks-patch", "x", "ns1", &[]);
    for (kind, name) in [
        ("Deployment", "x-trow-gateway"),
        ("StatefulSet", "x-trow-storage"),
        ("Deployment", "x-trow-proxy"),
        ("Deployment", "x-trow-admission"),
        ("Deployment", "x-trow-webhooks"),
        ("Service", "x-trow"),
        ("ConfigMap", "x-trow-config"),
        ("ValidatingWebhookConfiguration", "x-trow-validate"),
    ] {
        let o = r.get(kind, name);
        if !kind.ends_with("WebhookConfiguration") {
            assert_eq!(o["metadata"]["namespace"], "ns1", "{kind} {name}");
        }
        assert_eq!(o["metadata"]["labels"]["app.kubernetes.io/instance"], "x");
        assert_eq!(o["metadata"]["labels"]["app.kubernetes.io/name"], "trow");
    }
    let gw = args(
        &r.get("Deployment", "x-trow-gateway")["spec"]["template"]["spec"],
        "trow",
    );
    assert_eq!(flag(&gw, "--storage"), Some("http://x-trow-storage:7000"));
}
