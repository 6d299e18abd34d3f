//! Trust and credentials: mutual TLS between the services, users and registry passwords as
//! Secrets mounted as files, the node set-up's root, and the schema refusing typos.

use super::render::{
    args, container, flag, flags, lint, render, render_as, try_template, values_file, volume,
};

#[test]
fn mutual_tls_switches_urls_flags_and_probes() {
    for (set, secret) in [
        ("mtls-certmanager", "trow-grpc"),
        ("mtls-existing-secret", "trow-grpc-mine"),
    ] {
        let r = render(set);
        let gw = args(
            &r.get("Deployment", "trow-gateway")["spec"]["template"]["spec"],
            "trow",
        );
        assert_eq!(
            flag(&gw, "--storage"),
            Some("https://trow-storage:7000"),
            "{set}"
        );
        assert_eq!(
            flag(&gw, "--proxy"),
            Some("https://trow-proxy:7001"),
            "{set}"
        );
        assert_eq!(flag(&gw, "--admission"), None, "{set}");
        if let Some(w) = r.find("Deployment", "trow-webhooks") {
            let wa = args(&w["spec"]["template"]["spec"], "trow");
            assert_eq!(
                flag(&wa, "--admission"),
                Some("https://trow-admission:7002"),
                "{set}"
            );
        }
        for (w, pod) in r.workloads() {
            if w["kind"] == "Job" {
                continue; // the webhook certificate hook talks to the API server only
            }
            for c in pod["containers"].as_sequence().unwrap() {
                let a = args(pod, c["name"].as_str().unwrap());
                let at = format!("{set}: {}", w["metadata"]["name"].as_str().unwrap());
                assert_eq!(
                    flag(&a, "--grpc-tls-cert"),
                    Some("/etc/trow/grpc/tls.crt"),
                    "{at}"
                );
                assert_eq!(
                    flag(&a, "--grpc-tls-key"),
                    Some("/etc/trow/grpc/tls.key"),
                    "{at}"
                );
                assert_eq!(
                    flag(&a, "--grpc-tls-ca"),
                    Some("/etc/trow/grpc/ca.crt"),
                    "{at}"
                );
                for url in ["--storage", "--proxy", "--admission"] {
                    if let Some(u) = flag(&a, url) {
                        assert!(u.starts_with("https://"), "{at}: {url} {u}");
                    }
                }
                if !a.iter().any(|x| x == "gateway") {
                    // The kubelet's gRPC probe cannot handshake mutual TLS.
                    assert!(c["readinessProbe"]["grpc"].is_null(), "{at}");
                    assert!(c["readinessProbe"]["tcpSocket"]["port"].is_u64(), "{at}");
                    assert!(c["livenessProbe"]["tcpSocket"]["port"].is_u64(), "{at}");
                }
            }
            assert_eq!(
                volume(pod, "grpc-tls")["secret"]["secretName"],
                secret,
                "{set}"
            );
        }
    }
    let r = render("mtls-certmanager");
    let cert = r.get("Certificate", "trow-grpc");
    let usages = &cert["spec"]["usages"];
    assert_eq!(
        usages,
        &serde_yaml::to_value(["server auth", "client auth"]).unwrap()
    );
    let dns: Vec<&str> = cert["spec"]["dnsNames"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    for name in ["trow-storage", "trow-proxy", "trow-admission"] {
        assert!(dns.contains(&name), "{dns:?}");
    }
    let r = render("mtls-existing-secret");
    assert!(
        r.find("Secret", "trow-grpc-token").is_none(),
        "the token is off"
    );
    let gw = args(
        &r.get("Deployment", "trow-gateway")["spec"]["template"]["spec"],
        "trow",
    );
    assert_eq!(flag(&gw, "--grpc-token-file"), None);
    // The one process's webhooks container talks mutual TLS to the loopback listeners.
    let s = render("single-auth-mtls");
    let w = args(
        &s.get("StatefulSet", "trow")["spec"]["template"]["spec"],
        "webhooks",
    );
    assert_eq!(flag(&w, "--storage"), Some("https://127.0.0.1:7000"));
    let err = try_template(
        "trow",
        "trow",
        &["--set".into(), "grpcTls.enabled=true".into()],
    )
    .unwrap_err();
    assert!(err.contains("grpcTls"), "{err}");
}

#[test]
fn credentials_live_in_secrets_mounted_as_files() {
    let r = render("auth");
    let data = &r.get("ConfigMap", "trow-config")["data"];
    let cm = data["config.yaml"].as_str().unwrap();
    let cm_proxy = data["config-proxy.yaml"].as_str().unwrap();
    for secret in ["hub-password-1", "glpat-project-a", "s3cret-admin-pw"] {
        assert!(!cm.contains(secret), "{secret} in the ConfigMap");
        assert!(!cm_proxy.contains(secret), "{secret} in the ConfigMap");
    }
    // Only the proxy's config names the password files; the others keep the user names.
    assert!(!cm.contains("password_file"), "{cm}");
    assert!(cm.contains("username: robot"), "{cm}");
    assert!(
        cm_proxy.contains("password_file: /etc/trow/proxy-credentials/0"),
        "{cm_proxy}"
    );
    assert!(
        cm_proxy.contains("password_file: /etc/trow/proxy-credentials/2"),
        "{cm_proxy}"
    );
    let creds = r.secret_data("trow-proxy-credentials");
    assert_eq!(
        creds,
        [
            ("0".to_string(), b"hub-password-1".to_vec()),
            ("2".to_string(), b"glpat-project-a".to_vec())
        ]
    );
    let auth = r.secret_data("trow-auth");
    assert!(auth.contains(&("password".to_string(), b"s3cret-admin-pw".to_vec())));
    assert!(auth.iter().any(|(k, _)| k == "htpasswd"));
    let key = r.secret_data("trow-token-key");
    assert!(
        key[0].1.len() >= 32,
        "--token-key-file needs at least 32 bytes"
    );
    assert!(
        !r.yaml.contains("value: hub-password-1"),
        "no password in env"
    );
    let proxy = &r.get("Deployment", "trow-proxy")["spec"]["template"]["spec"];
    assert_eq!(
        volume(proxy, "proxy-credentials")["secret"]["secretName"],
        "trow-proxy-credentials"
    );
    // Split: only the proxy fetches from upstreams. Single: only the one process does, its
    // webhooks container is a gateway.
    let single = render_as(
        "auth",
        "trow",
        "trow",
        &[
            "--values",
            &values_file("single-webhooks").display().to_string(),
        ],
    );
    for (rendered, fetcher) in [(&r, "trow-proxy/trow"), (&single, "trow/trow")] {
        for (w, pod) in rendered.workloads() {
            let wname = w["metadata"]["name"].as_str().unwrap();
            for c in pod["containers"].as_sequence().unwrap() {
                let at = format!("{wname}/{}", c["name"].as_str().unwrap());
                let mounts = c["volumeMounts"].as_sequence().into_iter().flatten();
                let mounted = mounts.clone().any(|m| m["name"] == "proxy-credentials");
                assert_eq!(mounted, at == fetcher, "{at}: mounts proxy-credentials");
                if mounts.clone().any(|m| m["name"] == "config") {
                    let file = if at == fetcher {
                        "config-proxy.yaml"
                    } else {
                        "config.yaml"
                    };
                    assert_eq!(
                        flag(&args(pod, c["name"].as_str().unwrap()), "--config-file"),
                        Some(format!("/etc/trow/config/{file}").as_str()),
                        "{at}"
                    );
                }
            }
            let has_volume = pod["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|v| v["name"] == "proxy-credentials");
            assert_eq!(
                has_volume,
                fetcher.starts_with(&format!("{wname}/")),
                "{wname}: the proxy-credentials volume"
            );
        }
    }
    let gw = args(
        &r.get("Deployment", "trow-gateway")["spec"]["template"]["spec"],
        "trow",
    );
    assert_eq!(flag(&gw, "--user"), Some("admin"));
    assert_eq!(
        flag(&gw, "--password"),
        Some("file:///etc/trow/auth/password")
    );
    assert_eq!(flag(&gw, "--htpasswd"), Some("/etc/trow/auth/htpasswd"));
    assert_eq!(
        flag(&gw, "--token-key-file"),
        Some("/etc/trow/token-key/key")
    );
    // Each component's extraArgs reach that component only, at the end.
    assert_eq!(gw[gw.len() - 2..], ["--token-lifetime", "10m"]);
    let st = args(
        &r.get("StatefulSet", "trow-storage")["spec"]["template"]["spec"],
        "trow",
    );
    assert_eq!(st[st.len() - 2..], ["--gc-grace", "2h"]);
    assert!(flags(&st, "--token-lifetime").is_empty());
    assert!(flags(&gw, "--gc-grace").is_empty());
    let svc = r.get("Service", "trow");
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 31000);

    // An existing Secret: the user name through TROW_USER, the files from it.
    let s = render("single-auth-mtls");
    let pod = &s.get("StatefulSet", "trow")["spec"]["template"]["spec"];
    for c in ["trow", "webhooks"] {
        let a = args(pod, c);
        assert_eq!(flag(&a, "--user"), None);
        assert_eq!(
            flag(&a, "--password"),
            Some("file:///etc/trow/auth/password"),
            "{c}"
        );
        assert_eq!(
            flag(&a, "--htpasswd"),
            Some("/etc/trow/auth/htpasswd"),
            "{c}"
        );
        assert!(a.iter().any(|x| x == "--anonymous-pull"), "{c}");
        let env = container(pod, c)["env"].as_sequence().unwrap();
        let user = env
            .iter()
            .find(|e| e["name"] == "TROW_USER")
            .expect("TROW_USER");
        assert_eq!(user["valueFrom"]["secretKeyRef"]["name"], "my-trow-users");
        assert_eq!(user["valueFrom"]["secretKeyRef"]["key"], "user");
    }
    assert_eq!(volume(pod, "auth")["secret"]["secretName"], "my-trow-users");
    assert!(s.find("Secret", "trow-auth").is_none());

    // Kubernetes tokens as passwords: the pods get their token, the account TokenReviews.
    let k = render_as(
        "auth",
        "trow",
        "trow",
        &["--set", "trow.authorization.kubernetes.token_review=true"],
    );
    let crb = k.get("ClusterRoleBinding", "trow-trow-auth-delegator");
    assert_eq!(crb["roleRef"]["name"], "system:auth-delegator");
    assert_eq!(crb["subjects"][0]["name"], "trow");
    let pod = &k.get("Deployment", "trow-gateway")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "trow");
    assert_eq!(pod["automountServiceAccountToken"], true);
    let cm = k.get("ConfigMap", "trow-config")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(cm.contains("token_review: true"), "{cm}");
    assert!(
        r.find("ClusterRoleBinding", "trow-trow-auth-delegator")
            .is_none()
    );
    assert_eq!(
        r.get("Deployment", "trow-gateway")["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false,
        "no token in Trow's pods unless it reviews Kubernetes tokens"
    );

    // Rules without users would stop Trow at start-up: the chart says so first.
    let err = try_template(
        "trow",
        "trow",
        &["--set".into(), "trow.authorization.cache_pull=rules".into()],
    )
    .unwrap_err();
    assert!(err.contains("trow.authorization needs users"), "{err}");
}

#[test]
fn node_setup_writes_containerd_hosts_files_as_root_only_there() {
    let r = render("node-setup");
    let ds = r.get("DaemonSet", "trow-node-setup");
    let pod = &ds["spec"]["template"]["spec"];
    let a = args(pod, "containerd-config");
    assert_eq!(
        a,
        [
            "containerd-config",
            "--mirror-url",
            "http://trow.example.com",
            "--registry",
            "docker.io",
            "--registry",
            "quay.io",
            "--out-dir",
            "/host/etc/containerd/certs.d",
            "--wait"
        ]
    );
    let v = volume(pod, "hosts-dir");
    assert_eq!(v["hostPath"]["path"], "/etc/containerd/certs.d");
    let m = &container(pod, "containerd-config")["volumeMounts"][0];
    assert_eq!(m["mountPath"], "/host/etc/containerd/certs.d");
    assert!(
        m["readOnly"].is_null() || m["readOnly"] == false,
        "the node set-up writes there"
    );
    assert_eq!(pod["tolerations"][0]["operator"], "Exists", "every node");
    // The ingress: the chart's body and buffering annotations, the user's win.
    let ing = r.get("Ingress", "trow");
    let ann = &ing["metadata"]["annotations"];
    assert_eq!(ann["nginx.ingress.kubernetes.io/proxy-body-size"], "0");
    assert_eq!(
        ann["nginx.ingress.kubernetes.io/proxy-request-buffering"],
        "off"
    );
    assert_eq!(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"], "900");
    assert_eq!(ing["spec"]["rules"][0]["host"], "trow.example.com");
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "trow"
    );
    // trow.domain flows into every --hostname and the mirror URL.
    let d = render_as(
        "node-setup",
        "trow",
        "trow",
        &[
            "--set",
            "trow.domain=registry.corp.example:5000",
            "--set",
            "nodeSetup.registries=null",
        ],
    );
    let a = args(
        &d.get("DaemonSet", "trow-node-setup")["spec"]["template"]["spec"],
        "containerd-config",
    );
    assert_eq!(
        flag(&a, "--mirror-url"),
        Some("http://registry.corp.example:5000")
    );
    assert_eq!(
        flag(&a, "--registry"),
        None,
        "no registries: containerd's _default"
    );
    for (w, pod) in d.workloads() {
        for c in pod["containers"].as_sequence().unwrap() {
            let a = args(pod, c["name"].as_str().unwrap());
            if a[0] != "storage" && a[0] != "containerd-config" {
                assert_eq!(
                    flag(&a, "--hostname"),
                    Some("registry.corp.example:5000"),
                    "{:?}",
                    w["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn the_schema_refuses_typos_and_bad_values() {
    for (what, set) in [
        ("a typo at the top", "mdoe=split"),
        ("a typo inside trow", "trow.valdationWebhook.enabled=true"),
        (
            "a typo inside proxy.autoscaling",
            "proxy.autoscaling.minReplica=3",
        ),
        ("a bad mode", "mode=triple"),
        (
            "a bad failurePolicy",
            "trow.validationWebhook.failurePolicy=Maybe",
        ),
        (
            "a timeout past 30 s",
            "trow.mutationWebhook.timeoutSeconds=31",
        ),
        ("a bad service type", "service.type=Ingress"),
        (
            "a typo in a proxied registry",
            "trow.proxyRegistries.config.registries[0].host=a.example,trow.proxyRegistries.config.registries[0].pasword=x",
        ),
        (
            "a proxied registry without host",
            "trow.proxyRegistries.config.registries[0].username=u",
        ),
        (
            "a typo in the validation policy",
            "trow.validationWebhook.config.defualt=Deny",
        ),
        (
            "a bad validation default",
            "trow.validationWebhook.config.default=Maybe",
        ),
        (
            "a typo in the mutation config",
            "trow.mutationWebhook.config.prewarm_concurency=2",
        ),
        ("no webhook replica", "webhooks.replicas=0"),
    ] {
        let a = vec!["--set".to_string(), set.to_string()];
        let (ok, out) = lint(&a);
        assert!(!ok, "helm lint accepted {what} ({set}):\n{out}");
        let err = try_template("trow", "trow", &a).expect_err(set);
        assert!(
            err.contains("schema") || err.contains("values don't meet"),
            "{what}: {err}"
        );
    }
    // Beyond a schema: the template refuses it (helm lint lets `fail` pass, template does not).
    let err = try_template(
        "trow",
        "trow",
        &[
            "--set".to_string(),
            "proxy.autoscaling.minReplicas=5,proxy.autoscaling.maxReplicas=3".to_string(),
        ],
    )
    .expect_err("minReplicas > maxReplicas");
    assert!(err.contains("must not exceed"), "{err}");
}
