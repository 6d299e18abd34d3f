//! What a review of the chart as an attacker and as an unlucky operator asked for: secrets that
//! roll the pods when they change, disruption budgets, a storage update that never runs two
//! owners of one volume, an autoscaler with something to measure, and the webhooks' registry
//! port guarded exactly like the main one.

use super::render::{Rendered, args, container, flag, render, render_as, try_template};
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

/// One annotation of one workload's pod template (None when it has none).
fn annotation(r: &Rendered, workload: &str, key: &str) -> Option<String> {
    pod_annotations(r)
        .into_iter()
        .find(|(n, _)| n == workload)
        .unwrap_or_else(|| panic!("{}: no workload {workload}", r.set))
        .1[key]
        .as_str()
        .map(String::from)
}

/// The pod template of a workload, annotations and all: equal templates mean no rollout.
fn template(r: &Rendered, kind: &str, name: &str) -> Value {
    r.get(kind, name)["spec"]["template"].clone()
}

/// Value set `set` with one proxied registry whose password is `password`.
fn with_registry_password(set: &str, password: &str) -> Rendered {
    render_as(
        set,
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
}

#[test]
fn a_changed_password_rolls_the_pods_that_read_it_and_no_other() {
    // Nothing from values in a Secret: no checksum (the default rendering is unchanged).
    for (w, a) in pod_annotations(&render("default")) {
        assert!(a["checksum/secrets"].is_null(), "{w}");
    }
    let with = |password: &str| with_registry_password("default", password);
    let (a, b) = (with("first"), with("second"));
    // A registry password rolls the proxy, which fetches with it, and nothing else: the
    // ConfigMap names only the password file, the secrets' checksum sees the change.
    let (sa, sb) = (
        annotation(&a, "trow-proxy", "checksum/secrets"),
        annotation(&b, "trow-proxy", "checksum/secrets"),
    );
    assert!(sa.is_some() && sb.is_some());
    assert_ne!(sa, sb);
    assert_eq!(
        sa,
        annotation(&with("first"), "trow-proxy", "checksum/secrets"),
        "stable across renders"
    );
    for (kind, w) in [
        ("StatefulSet", "trow-storage"),
        ("Deployment", "trow-gateway"),
    ] {
        assert_eq!(template(&a, kind, w), template(&b, kind, w), "{w} rolls");
    }
    for (_, ann) in pod_annotations(&a) {
        assert!(!serde_yaml::to_string(&ann).unwrap().contains("first"));
    }
    // single: the one process fetches too.
    let single = |password: &str| with_registry_password("single", password);
    assert_ne!(
        template(&single("first"), "StatefulSet", "trow"),
        template(&single("second"), "StatefulSet", "trow")
    );
    // The users' password rolls the gateways (main and webhooks'), never the storage pod: one
    // replica on its volume, whose restart is an outage.
    let u = render("auth");
    let v = render_as(
        "auth",
        "trow",
        "trow",
        &["--set", "trow.password=another-pw"],
    );
    for w in ["trow-gateway", "trow-webhooks"] {
        if u.find("Deployment", w).is_none() {
            continue;
        }
        assert_ne!(
            annotation(&u, w, "checksum/secrets"),
            annotation(&v, w, "checksum/secrets"),
            "{w}"
        );
    }
    assert_eq!(
        template(&u, "StatefulSet", "trow-storage"),
        template(&v, "StatefulSet", "trow-storage")
    );
    assert_eq!(
        template(&u, "Deployment", "trow-proxy"),
        template(&v, "Deployment", "trow-proxy")
    );
    // Storage rolls for what it reads (retention, the cache's bound), not for a policy.
    let with_policy = |default: &str| {
        render_as(
            "default",
            "trow",
            "trow",
            &[
                "--set",
                "trow.validationWebhook.enabled=true",
                "--set",
                "webhooks.tls.patch.enabled=true",
                "--set",
                &format!("trow.validationWebhook.config.default={default}"),
            ],
        )
    };
    let (allow, deny) = (with_policy("Allow"), with_policy("Deny"));
    assert_eq!(
        template(&allow, "StatefulSet", "trow-storage"),
        template(&deny, "StatefulSet", "trow-storage")
    );
    assert_ne!(
        annotation(&allow, "trow-admission", "checksum/config"),
        annotation(&deny, "trow-admission", "checksum/config")
    );
    let base = render("default");
    for set in [
        "trow.retention[0].repositories=team/,trow.retention[0].keep_last=3",
        "trow.proxyRegistries.config.max_size=5GiB",
    ] {
        let changed = render_as("default", "trow", "trow", &["--set", set]);
        assert_ne!(
            annotation(&base, "trow-storage", "checksum/config"),
            annotation(&changed, "trow-storage", "checksum/config"),
            "{set}"
        );
    }
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
    assert_eq!(
        names,
        [
            "trow-admission",
            "trow-gateway",
            "trow-proxy",
            "trow-webhooks"
        ]
    );
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
        &[
            "--set",
            "gateway.replicas=1",
            "--set",
            "proxy.replicas=1",
            "--set",
            "admission.replicas=1",
        ],
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

/// `trow.authorization.kubernetes`: TokenReviews come from the gateways alone, so only their
/// pods carry a service-account token; the proxy, which fetches from addresses clients name,
/// holds none. The hook Jobs patch webhook configurations and keep theirs.
#[test]
fn only_pods_that_call_the_api_carry_a_token() {
    for set in ["auth", "single-auth-mtls"] {
        let r = render_as(
            set,
            "trow",
            "trow",
            &[
                "--set",
                "trow.authorization.kubernetes.token_review=true,trow.anonymousPull=false",
                "--set",
                "trow.validationWebhook.enabled=true",
                "--set",
                "webhooks.tls.patch.enabled=true",
            ],
        );
        let mut seen = Vec::new();
        for (w, pod) in r.workloads() {
            let name = w["metadata"]["name"].as_str().unwrap();
            let component = w["metadata"]["labels"]["app.kubernetes.io/component"]
                .as_str()
                .unwrap();
            let wants = matches!(
                component,
                "gateway" | "webhooks" | "single" | "webhook-certs"
            );
            assert_eq!(
                pod["automountServiceAccountToken"].as_bool(),
                Some(wants),
                "{set}: {name}"
            );
            seen.push(component.to_string());
        }
        assert!(seen.len() > 2, "{set}: {seen:?}");
    }
    // Without it, no Trow service pod has one.
    for (w, pod) in render("auth").workloads() {
        if w["kind"] != "Job" {
            assert_eq!(
                pod["automountServiceAccountToken"].as_bool(),
                Some(false),
                "{:?}",
                w["metadata"]["name"]
            );
        }
    }
}

/// Multi-replica Deployments prefer one pod per node unless the user sets affinity, so one
/// node's drain or loss leaves each component (the webhooks' backends above all) answering.
#[test]
fn replicated_deployments_spread_over_nodes() {
    let r = render("webhooks-patch");
    for d in [
        "trow-gateway",
        "trow-proxy",
        "trow-admission",
        "trow-webhooks",
    ] {
        let pod = &r.get("Deployment", d)["spec"]["template"]["spec"];
        let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(
            term["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname",
            "{d}"
        );
        // The selector picks this Deployment's own pods: its selector labels.
        let sel = &term["podAffinityTerm"]["labelSelector"]["matchLabels"];
        assert_eq!(
            sel,
            &r.get("Deployment", d)["spec"]["selector"]["matchLabels"],
            "{d}"
        );
    }
    let storage = &r.get("StatefulSet", "trow-storage")["spec"]["template"]["spec"];
    assert!(
        storage["affinity"].is_null(),
        "one replica: nothing to spread"
    );
    // The user's own affinity replaces the default.
    let own = render_as(
        "default",
        "trow",
        "trow",
        &[
            "--set",
            "gateway.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool,gateway.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        ],
    );
    let a = &own.get("Deployment", "trow-gateway")["spec"]["template"]["spec"]["affinity"];
    assert!(
        a["podAntiAffinity"].is_null() && !a["nodeAffinity"].is_null(),
        "{a:?}"
    );
}

/// Storage opens the store before it answers (recovery, the catalog walk on a first start):
/// a startup probe holds liveness off while it does, so a large volume is not killed mid-walk.
#[test]
fn storage_and_single_start_under_a_startup_probe() {
    let r = render("default");
    let pod = &r.get("StatefulSet", "trow-storage")["spec"]["template"]["spec"];
    let p = &pod["containers"][0]["startupProbe"];
    assert!(!p["grpc"].is_null(), "{p:?}");
    assert!(p["failureThreshold"].as_u64().unwrap() * p["periodSeconds"].as_u64().unwrap() >= 300);
    let s = render("single");
    let pod = &s.get("StatefulSet", "trow")["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["startupProbe"]["httpGet"]["path"],
        "/healthz"
    );
}

/// A long release name: every derived name stays a valid DNS-1035 label / label value (63),
/// including the hook Jobs (their name is their pods' job-name label) and the StatefulSet
/// (name plus revision hash is a pod label).
#[test]
fn long_release_names_keep_every_name_within_63() {
    let release = "a-release-name-that-is-very-long-for-a-registry-xy";
    assert_eq!(release.len(), 50);
    for set in ["webhooks-patch", "single-webhooks"] {
        let r = render_as(set, release, "trow", &[]);
        for o in &r.objects {
            let name = o["metadata"]["name"].as_str().unwrap();
            if o["kind"] == "ClusterRoleBinding" || o["kind"] == "ClusterRole" {
                continue; // cluster-scoped RBAC names may be 253 long
            }
            assert!(
                name.len() <= 63,
                "{set}: {} {name} ({})",
                o["kind"].as_str().unwrap(),
                name.len()
            );
            if o["kind"] == "StatefulSet" {
                assert!(
                    name.len() <= 52,
                    "{set}: {name}: plus -<hash> exceeds a label value"
                );
            }
        }
        let jobs = r.of_kind("Job");
        assert!(!jobs.is_empty(), "{set}");
    }
}

/// No users: the install notes say the registry is open, and shout when it is exposed outside
/// the cluster (an Ingress, a NodePort or a LoadBalancer).
#[test]
fn the_notes_warn_about_an_open_registry() {
    use super::render::notes;
    let quiet = notes(&[]);
    assert!(
        quiet.contains("WARNING: no users are configured"),
        "{quiet}"
    );
    assert!(!quiet.contains("EXPOSED"), "{quiet}");
    for exposed in [
        ["--set", "ingress.enabled=true"],
        ["--set", "service.type=NodePort"],
        ["--set", "service.type=LoadBalancer"],
    ] {
        let n = notes(&exposed);
        assert!(
            n.contains("WARNING: NO USERS, AND THE REGISTRY IS EXPOSED OUTSIDE THE CLUSTER"),
            "{exposed:?}: {n}"
        );
    }
    let users = notes(&[
        "--set",
        "trow.user=admin,trow.password=pw,ingress.enabled=true",
    ]);
    assert!(!users.contains("WARNING"), "{users}");
    assert!(users.contains("log in first"), "{users}");
    // Single mode no longer serves the webhook routes on the registry port
    // (--no-webhooks-on-bind): nothing to warn about.
    let single = notes(&[
        "--set",
        "mode=single,trow.validationWebhook.enabled=true,trow.user=a,trow.password=b",
    ]);
    assert!(!single.contains("WARNING"), "{single}");
    assert!(
        single.contains("served by Service trow-webhooks over HTTPS"),
        "{single}"
    );
}

/// The original chart's `host: "none"` meant a rule for every host: it still does.
#[test]
fn an_ingress_host_of_none_is_a_rule_for_every_host() {
    let r = render_as(
        "default",
        "trow",
        "trow",
        &[
            "--set",
            "ingress.enabled=true,ingress.hosts[0].host=none,ingress.hosts[0].paths={/}",
        ],
    );
    let rule = &r.get("Ingress", "trow")["spec"]["rules"][0];
    assert!(rule["host"].is_null(), "{rule:?}");
    assert_eq!(rule["http"]["paths"][0]["path"], "/");
}

/// The HTTP containers (gateway, the webhooks' gateway, the one process) keep serving for
/// `preStopSleepSeconds` after Kubernetes decides to stop them, while Services stop sending them
/// new connections; 0 leaves the hook out.
#[test]
fn http_containers_drain_before_sigterm() {
    let sleep = |r: &Rendered, kind: &str, name: &str, container_name: &str| {
        let pod = &r.get(kind, name)["spec"]["template"]["spec"];
        container(pod, container_name)["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64()
    };
    let r = render("webhooks-patch");
    assert_eq!(sleep(&r, "Deployment", "trow-gateway", "trow"), Some(5));
    assert_eq!(sleep(&r, "Deployment", "trow-webhooks", "trow"), Some(5));
    let s = render("single-webhooks");
    assert_eq!(sleep(&s, "StatefulSet", "trow", "trow"), Some(5));
    assert_eq!(sleep(&s, "StatefulSet", "trow", "webhooks"), Some(5));
    let off = render_as(
        "webhooks-patch",
        "trow",
        "trow",
        &["--set", "preStopSleepSeconds=0"],
    );
    assert_eq!(sleep(&off, "Deployment", "trow-gateway", "trow"), None);
    assert_eq!(sleep(&off, "Deployment", "trow-webhooks", "trow"), None);
}
