//! The admission webhooks' registrations (failurePolicy, timeout, namespace selector from values),
//! their HTTPS gateway, and their TLS from each source: the hook Job, cert-manager, a Secret.

use super::render::{args, flag, render, render_as, try_template, values_file, volume};

#[test]
fn webhooks_follow_their_values() {
    let r = render("webhooks-patch");
    let v = &r.get("ValidatingWebhookConfiguration", "trow-validate")["webhooks"][0];
    assert_eq!(v["failurePolicy"], "Ignore");
    assert_eq!(v["timeoutSeconds"], 7);
    assert_eq!(v["sideEffects"], "None");
    assert_eq!(v["clientConfig"]["service"]["name"], "trow-webhooks");
    assert_eq!(v["clientConfig"]["service"]["namespace"], "trow");
    assert_eq!(v["clientConfig"]["service"]["path"], "/validate-image");
    assert_eq!(v["clientConfig"]["service"]["port"], 443);
    assert!(
        v["clientConfig"]["caBundle"].is_null(),
        "the hook Job patches it in"
    );
    let resources: Vec<String> = v["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["resources"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
        })
        .collect();
    for want in [
        "pods",
        "pods/ephemeralcontainers",
        "deployments",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
    ] {
        assert!(
            resources.iter().any(|r| r == want),
            "validating rules lack {want}"
        );
    }
    // The deployment controller UPDATEs ReplicaSets on every scale: with Fail, judging them
    // would stop scaling while Trow is down; their pods are judged at CREATE.
    assert!(
        !resources.iter().any(|r| r == "replicasets"),
        "{resources:?}"
    );
    // UPDATEs reach Trow only when what runs changed (kube-e2e check 8 has the API server
    // compile the expression; check 9 sees it skip a metadata-only update).
    let conditions = v["matchConditions"].as_sequence().expect("matchConditions");
    assert_eq!(conditions.len(), 1);
    let cel = conditions[0]["expression"].as_str().unwrap();
    for part in [
        "request.operation != 'UPDATE'",
        "object.spec.template != oldObject.spec.template",
        "object.spec.jobTemplate != oldObject.spec.jobTemplate",
        "object.spec != oldObject.spec",
        "has(oldObject.spec.template)",
        "has(oldObject.spec.jobTemplate)",
    ] {
        assert!(cel.contains(part), "{part} not in {cel}");
    }
    let m = &r.get("MutatingWebhookConfiguration", "trow-mutate")["webhooks"][0];
    assert_eq!(m["failurePolicy"], "Fail");
    assert_eq!(m["timeoutSeconds"], 4);
    assert_eq!(m["sideEffects"], "NoneOnDryRun");
    assert_eq!(m["reinvocationPolicy"], "IfNeeded");
    assert_eq!(m["clientConfig"]["service"]["path"], "/mutate-image");
    assert_eq!(
        m["rules"][0]["operations"],
        serde_yaml::to_value(["CREATE"]).unwrap()
    );
    assert_eq!(
        m["rules"][0]["resources"],
        serde_yaml::to_value(["pods"]).unwrap()
    );
    // The default selector exempts the release's namespace, whatever it is called, and
    // kube-system (the cluster's DNS and network start while Trow is down).
    let r2 = render_as("webhooks-patch", "reg", "registry-system", &[]);
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let o = &r2.of_kind(kind)[0]["webhooks"][0];
        let e = &o["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(e["key"], "kubernetes.io/metadata.name", "{kind}");
        assert_eq!(e["operator"], "NotIn", "{kind}");
        assert_eq!(
            e["values"],
            serde_yaml::to_value(["registry-system", "kube-system"]).unwrap(),
            "{kind}"
        );
        assert_eq!(o["clientConfig"]["service"]["name"], "reg-trow-webhooks");
    }
    // The values' defaults: Fail for validation, Ignore for mutation, 10 s.
    let d = render_as(
        "default",
        "trow",
        "trow",
        &[
            "--set",
            "trow.validationWebhook.enabled=true",
            "--set",
            "trow.mutationWebhook.enabled=true",
        ],
    );
    let v = &d.get("ValidatingWebhookConfiguration", "trow-validate")["webhooks"][0];
    let m = &d.get("MutatingWebhookConfiguration", "trow-mutate")["webhooks"][0];
    assert_eq!(
        (v["failurePolicy"].as_str(), v["timeoutSeconds"].as_u64()),
        (Some("Fail"), Some(10))
    );
    assert_eq!(
        (m["failurePolicy"].as_str(), m["timeoutSeconds"].as_u64()),
        (Some("Ignore"), Some(10))
    );
    // An explicit selector replaces the default.
    let c = render("webhooks-certmanager");
    let v = &c.get("ValidatingWebhookConfiguration", "trow-validate")["webhooks"][0];
    assert_eq!(
        v["namespaceSelector"]["matchLabels"]["trow.dev/admission"],
        "on"
    );
    assert!(v["namespaceSelector"]["matchExpressions"].is_null());
    assert!(
        c.of_kind("MutatingWebhookConfiguration").is_empty(),
        "only the validating one is on"
    );

    // The webhooks' own HTTPS gateway.
    let w = r.get("Deployment", "trow-webhooks");
    assert_eq!(w["spec"]["replicas"], 2);
    let a = args(&w["spec"]["template"]["spec"], "trow");
    assert_eq!(
        a[..11],
        [
            "gateway",
            "--bind",
            "0.0.0.0:8443",
            "--tls",
            "/etc/trow/webhook-tls/tls.crt,/etc/trow/webhook-tls/tls.key",
            "--storage",
            "http://trow-storage:7000",
            "--proxy",
            "http://trow-proxy:7001",
            "--admission",
            "http://trow-admission:7002"
        ]
    );
    let svc = r.get("Service", "trow-webhooks");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/component"],
        "webhooks"
    );
}

#[test]
fn webhook_tls_comes_from_the_hook_job_cert_manager_or_an_existing_secret() {
    // Two hook Jobs running `trow webhook-certs`: before the install the Secret if missing, after it
    // the Secret and the caBundle of only the enabled webhooks; the RBAC narrowed by name.
    let r = render("webhooks-patch");
    let pre = r.get("Job", "trow-webhook-certs-pre");
    assert_eq!(
        pre["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    let job = r.get("Job", "trow-webhook-certs");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "post-install,post-upgrade"
    );
    let secret_only = [
        "webhook-certs",
        "--namespace",
        "trow",
        "--secret",
        "trow-webhook-tls",
        "--service",
        "trow-webhooks",
    ];
    // Before the pods: the Secret when there is none, never a renewal (which belongs to the run
    // that also patches caBundle, so the old CA stays trusted while the pods switch).
    let pre_args = args(&pre["spec"]["template"]["spec"], "webhook-certs");
    assert_eq!(pre_args[..secret_only.len()], secret_only);
    assert_eq!(pre_args[secret_only.len()..], ["--create-only"]);
    let a = args(&job["spec"]["template"]["spec"], "webhook-certs");
    assert_eq!(a[..secret_only.len()], secret_only);
    assert_eq!(
        a[secret_only.len()..],
        [
            "--validating-webhook",
            "trow-validate",
            "--mutating-webhook",
            "trow-mutate"
        ]
    );
    for j in [pre, job] {
        let ann = &j["metadata"]["annotations"];
        assert_eq!(ann["helm.sh/hook-weight"], "0");
        assert_eq!(
            ann["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded"
        );
        assert_eq!(
            j["spec"]["template"]["spec"]["serviceAccountName"],
            "trow-webhook-certs"
        );
    }
    // The account and its roles are hooks of both phases, made before the Job of each (lower
    // weight), deleted after each succeeded phase and replaced before the next.
    for (kind, name) in [
        ("ServiceAccount", "trow-webhook-certs"),
        ("Role", "trow-webhook-certs"),
        ("RoleBinding", "trow-webhook-certs"),
        ("ClusterRole", "trow-webhook-certs-trow"),
        ("ClusterRoleBinding", "trow-webhook-certs-trow"),
    ] {
        let o = r.get(kind, name);
        let ann = &o["metadata"]["annotations"];
        assert_eq!(
            ann["helm.sh/hook"], "pre-install,pre-upgrade,post-install,post-upgrade",
            "{kind}"
        );
        let weight: i32 = ann["helm.sh/hook-weight"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(weight < 0, "{kind} exists before the Job runs");
        assert_eq!(
            ann["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded",
            "{kind}"
        );
    }
    let role = r.get("Role", "trow-webhook-certs");
    for rule in role["rules"].as_sequence().unwrap() {
        assert_eq!(
            rule["resources"],
            serde_yaml::to_value(["secrets"]).unwrap()
        );
        if rule["verbs"] != serde_yaml::to_value(["create"]).unwrap() {
            assert_eq!(
                rule["resourceNames"],
                serde_yaml::to_value(["trow-webhook-tls"]).unwrap()
            );
        }
    }
    let cr = r.get("ClusterRole", "trow-webhook-certs-trow");
    let mut named = Vec::new();
    for rule in cr["rules"].as_sequence().unwrap() {
        assert_eq!(
            rule["verbs"],
            serde_yaml::to_value(["get", "patch"]).unwrap()
        );
        named.push(rule["resourceNames"][0].as_str().unwrap().to_string());
    }
    assert_eq!(named, ["trow-validate", "trow-mutate"]);
    let vol = volume(
        &r.get("Deployment", "trow-webhooks")["spec"]["template"]["spec"],
        "webhook-tls",
    );
    assert_eq!(vol["secret"]["secretName"], "trow-webhook-tls");

    // Only the mutating webhook on: the Job patches only it.
    let only = render_as(
        "default",
        "trow",
        "trow",
        &["--set", "trow.mutationWebhook.enabled=true"],
    );
    let a = args(
        &only.get("Job", "trow-webhook-certs")["spec"]["template"]["spec"],
        "webhook-certs",
    );
    assert_eq!(flag(&a, "--validating-webhook"), None);
    assert_eq!(flag(&a, "--mutating-webhook"), Some("trow-mutate"));
    assert_eq!(only.of_kind("Job").len(), 2);

    // cert-manager: a Certificate for the Service, its CA injected; no Job.
    let c = render("webhooks-certmanager");
    assert!(c.of_kind("Job").is_empty());
    let v = c.get("ValidatingWebhookConfiguration", "trow-validate");
    assert_eq!(
        v["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "trow/trow-webhook-tls"
    );
    let cert = c.get("Certificate", "trow-webhook-tls");
    assert_eq!(cert["spec"]["secretName"], "trow-webhook-tls");
    assert_eq!(cert["spec"]["duration"], "2160h");
    let dns: Vec<&str> = cert["spec"]["dnsNames"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(dns.contains(&"trow-webhooks.trow.svc"), "{dns:?}");
    assert_eq!(cert["spec"]["issuerRef"]["name"], "trow-webhook-ca");
    assert!(
        c.find("Issuer", "trow-webhook-ca").is_some()
            && c.find("Issuer", "trow-webhook-selfsigned").is_some()
    );
    let given = render_as(
        "webhooks-certmanager",
        "trow",
        "trow",
        &[
            "--set",
            "webhooks.tls.certmanager.issuerRef.name=corp",
            "--set",
            "webhooks.tls.certmanager.issuerRef.kind=ClusterIssuer",
        ],
    );
    assert!(
        given.of_kind("Issuer").is_empty(),
        "a given issuer: no issuer of the chart's own"
    );
    assert_eq!(
        given.get("Certificate", "trow-webhook-tls")["spec"]["issuerRef"]["kind"],
        "ClusterIssuer"
    );

    // An existing Secret and its CA; no Job, no Certificate.
    let e = render("webhooks-existing-secret");
    assert!(e.of_kind("Job").is_empty() && e.of_kind("Certificate").is_empty());
    let m = &e.get("MutatingWebhookConfiguration", "trow-mutate")["webhooks"][0];
    assert_eq!(
        m["clientConfig"]["caBundle"],
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
    );
    let vol = volume(
        &e.get("Deployment", "trow-webhooks")["spec"]["template"]["spec"],
        "webhook-tls",
    );
    assert_eq!(vol["secret"]["secretName"], "my-webhook-tls");
    let err = try_template(
        "trow",
        "trow",
        &[
            "--values".into(),
            values_file("webhooks-existing-secret")
                .display()
                .to_string(),
            "--set".into(),
            "webhooks.tls.caBundle=".into(),
        ],
    )
    .unwrap_err();
    assert!(err.contains("caBundle"), "{err}");
}

#[test]
fn webhooks_off_render_nothing_of_theirs() {
    let r = render("webhooks-off");
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "Job",
        "Certificate",
        "Issuer",
    ] {
        assert!(r.of_kind(kind).is_empty(), "{kind}: {:?}", r.names());
    }
    assert!(r.find("Deployment", "trow-webhooks").is_none());
    assert!(r.find("Service", "trow-webhooks").is_none());
    let cm = r.get("ConfigMap", "trow-config")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(
        !cm.contains("image_validation") && !cm.contains("image_mutation"),
        "{cm}"
    );
}
