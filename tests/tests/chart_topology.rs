//! The helm chart's split topology, run: `helm template` of deploy/helm/trow with 2 gateways,
//! 1 storage, 3 proxies, 1 admission and the webhooks' 2 HTTPS gateways, every pod a `trow`
//! process on a loopback address of its own with exactly the args, env, ConfigMap and Secrets
//! the chart renders (the few substitutions loopback needs are in `trow_tests::chart::substitute`).
//!
//! Through it: an image pushed through one gateway and pulled through the other, a proxied
//! upstream image pulled through both (`/v2/f/...` and `?ns=`), a token of one gateway honoured
//! by the other (the shared token key), a mutating review through the webhooks' HTTPS Service
//! (the public gateway answers 404 on the webhook routes, which take no login); then a proxy and a gateway SIGKILLed, and an image not yet cached
//! pulled through the surviving gateway, which must pass over the dead proxy; finally every pod
//! stopped and the storage volume checked with `trow fsck`.
//!
//! Run twice: as rendered with the defaults for the services' trust (a shared token), and with
//! `grpcTls` on (mutual TLS from an existing Secret, probes as TCP checks).
//!
//! Loopback addresses: 127.0.0.120 (the upstream) and .121–.129 (the pods) for the first run,
//! .130 and .131–.139 for the second.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use trow_tests::chart::cluster::Cluster;
use trow_tests::chart::{Rendered, chart_dir};
use trow_tests::clients::{LogsOnPanic, layout_tag_digest, output, run, skopeo};
use trow_tests::fsck::fsck;
use trow_tests::images::{Image, build_image, read_blob};
use trow_tests::upstream::{self, Upstream};

/// The addresses of one run: the upstream's, then one per pod (9 pods). The two runs (plain
/// and mutual TLS) have their own, so they can run side by side.
struct Ips {
    upstream: &'static str,
    pods: [&'static str; 9],
}

const PLAIN: Ips = Ips {
    upstream: "127.0.0.120",
    pods: [
        "127.0.0.121",
        "127.0.0.122",
        "127.0.0.123",
        "127.0.0.124",
        "127.0.0.125",
        "127.0.0.126",
        "127.0.0.127",
        "127.0.0.128",
        "127.0.0.129",
    ],
};

const MTLS: Ips = Ips {
    upstream: "127.0.0.130",
    pods: [
        "127.0.0.131",
        "127.0.0.132",
        "127.0.0.133",
        "127.0.0.134",
        "127.0.0.135",
        "127.0.0.136",
        "127.0.0.137",
        "127.0.0.138",
        "127.0.0.139",
    ],
};
const DOMAIN: &str = "trow.example.com";
const USER: &str = "admin";
const NAMESPACE: &str = "trow";
/// The Secret `webhooks.tls.existingSecretRef` names: the cluster would hold it; the test
/// makes it.
const WEBHOOK_SECRET: &str = "trow-webhook-tls-test";
/// The Secret `grpcTls.existingSecret` names, in the mutual TLS run; the test makes it.
const GRPC_SECRET: &str = "trow-grpc-tls-test";

/// A CA and a certificate it signed.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and a certificate for `names`, for serving and, as a client, for mutual TLS.
fn issue(names: &[String]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "trow-tests CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.to_vec()).unwrap();
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The values: the topology of the issue, auth on, one proxied upstream with credentials, the
/// mutating webhook on with TLS from an existing Secret; with `mtls`, mutual TLS between the
/// services from an existing Secret.
fn values(upstream: &str, password: &str, ca_bundle: &str, mtls: bool) -> Value {
    let mut v = json!({
        "gateway": {"replicas": 2},
        "proxy": {"replicas": 3, "autoscaling": {"enabled": false}},
        "admission": {"replicas": 1},
        "webhooks": {
            "replicas": 2,
            "tls": {
                "existingSecretRef": WEBHOOK_SECRET,
                "caBundle": ca_bundle,
                "patch": {"enabled": false},
            },
        },
        "trow": {
            "domain": DOMAIN,
            "user": USER,
            "password": password,
            "proxyRegistries": {"config": {
                "configured_only": true,
                "registries": [{
                    "host": upstream,
                    "alias": "up",
                    "insecure": true,
                    "username": upstream::USER,
                    "password": upstream::PASSWORD,
                }],
            }},
            "mutationWebhook": {"enabled": true},
        },
    });
    if mtls {
        v["grpcTls"] = json!({"enabled": true, "existingSecret": GRPC_SECRET});
    }
    v
}

/// A GET with Basic credentials: status and body.
async fn get(url: &str, password: &str, accept: Option<&str>) -> (u16, Vec<u8>) {
    let c = reqwest::Client::new();
    let mut req = c.get(url).basic_auth(USER, Some(password));
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.bytes().await.expect("a body").to_vec())
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Pulls `img` as `/v2/<repo>/...<query>` from `base` by hand: the manifest and every blob must
/// be the image's bytes.
async fn pull_by_hand(base: &str, repo: &str, query: &str, img: &Image, password: &str) {
    let url = format!("{base}/v2/{repo}/manifests/{}{query}", img.tag);
    let (status, body) = get(&url, password, Some(ACCEPT)).await;
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    assert_eq!(
        body,
        img.manifest_bytes(),
        "{url}: not the upstream manifest"
    );
    for d in std::iter::once(&img.config_digest).chain(&img.layers) {
        let url = format!("{base}/v2/{repo}/blobs/{d}{query}");
        let (status, body) = get(&url, password, None).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(
            body,
            read_blob(&img.layout, d),
            "{url}: not the upstream blob"
        );
    }
}

/// `skopeo copy` of `docker://reference` (plain HTTP, credentials) into `layout:tag`; returns
/// the command's outcome, not failing on it.
fn skopeo_pull(reference: &str, layout: &Path, tag: &str, password: &str) -> std::process::Output {
    let mut cmd = skopeo([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--retry-times=0",
    ]);
    cmd.args(["--src-creds", &format!("{USER}:{password}")])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:{tag}", layout.display()));
    output(&mut cmd)
}

/// A pulled layout holds `img` byte for byte under `tag`.
fn assert_holds(layout: &Path, tag: &str, img: &Image) {
    assert_eq!(layout_tag_digest(layout, tag), img.manifest_digest);
    for d in std::iter::once(&img.config_digest)
        .chain(&img.layers)
        .chain([&img.manifest_digest])
    {
        assert_eq!(
            read_blob(layout, d),
            read_blob(&img.layout, d),
            "{d} differs"
        );
    }
}

/// An AdmissionReview creating a pod whose one container runs `image`.
fn pod_review(image: &str) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": format!("chart-topology-{}", trow_tests::oci::unique()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team",
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": {"kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": "web", "namespace": "team"},
                "spec": {"containers": [{"name": "app", "image": image}]}},
            "dryRun": false,
        },
    })
}

/// The images a mutate answer's JSON patch sets.
fn patched_images(answer: &Value) -> Vec<String> {
    let resp = &answer["response"];
    assert_eq!(resp["allowed"], true, "{answer}");
    let patch = resp["patch"]
        .as_str()
        .unwrap_or_else(|| panic!("no patch: {answer}"));
    let ops: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("a base64 patch"),
    )
    .expect("a JSON patch");
    ops.as_array()
        .into_iter()
        .flatten()
        .filter_map(|op| op["value"].as_str().map(str::to_string))
        .collect()
}

/// The value after `flag` in a command line.
fn flag_value<'a>(argv: &'a [String], flag: &str) -> &'a str {
    let i = argv
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {argv:?}"));
    &argv[i + 1]
}

/// The gateway's last log line listing its proxy replicas (proxy_pool.rs logs each change).
fn last_replicas_line(log: &str) -> String {
    log.lines()
        .rfind(|l| l.contains("proxy replicas"))
        .unwrap_or_else(|| panic!("the gateway never listed its proxy replicas:\n{log}"))
        .to_string()
}

/// Checks the rendered MutatingWebhookConfiguration calls the webhooks' Service with our CA,
/// and returns its `(service name, port, path)`.
fn mutate_hook(rendered: &Rendered, ca_bundle: &str) -> (String, u16, String) {
    let m = rendered.of_kind("MutatingWebhookConfiguration");
    assert_eq!(m.len(), 1, "one MutatingWebhookConfiguration");
    let cc = &m[0]["webhooks"][0]["clientConfig"];
    assert_eq!(cc["caBundle"].as_str(), Some(ca_bundle), "{cc:?}");
    let svc = &cc["service"];
    assert_eq!(svc["namespace"].as_str(), Some(NAMESPACE), "{cc:?}");
    (
        svc["name"].as_str().expect("a Service").to_string(),
        svc["port"].as_u64().unwrap_or(443) as u16,
        svc["path"].as_str().expect("a path").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_topology_serves_and_survives_a_dead_proxy_and_gateway() {
    scenario(&PLAIN, false).await;
}

/// The same with `grpcTls` on: every service speaks mutual TLS, probes are TCP checks.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_with_mutual_tls_between_the_services() {
    scenario(&MTLS, true).await;
}

async fn scenario(ips: &Ips, mtls: bool) {
    let tag = if mtls { "[mtls]" } else { "[plain]" };
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut lap = {
        let mut last = Instant::now();
        move |what: &str, timings: &mut Vec<(String, Duration)>| {
            timings.push((what.to_string(), last.elapsed()));
            last = Instant::now();
        }
    };

    // The upstream: two images, `app` pulled before the kills, `late` only after.
    let app = build_image(&tmp.path().join("app"), "1.0", "amd64");
    let late = build_image(&tmp.path().join("late"), "1.0", "amd64");
    let mine = build_image(&tmp.path().join("mine"), "1.0", "amd64");
    let up = Upstream::start_with_auth(ips.upstream, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&app.oci_ref(), "team/app:1.0");
    up.push(&late.oci_ref(), "team/late:1.0");

    // Render.
    let svc_dns = format!("trow-webhooks.{NAMESPACE}.svc");
    let pki = issue(std::slice::from_ref(&svc_dns));
    let ca_bundle = b64(pki.ca_pem.as_bytes());
    let password = format!("pw-{}", trow_tests::oci::unique());
    let values_path = tmp.path().join("values.yaml");
    std::fs::write(
        &values_path,
        serde_yaml::to_string(&values(&up.authority(), &password, &ca_bundle, mtls)).unwrap(),
    )
    .unwrap();
    let mut rendered = Rendered::template(&chart_dir(), "trow", NAMESPACE, &values_path);
    // The Secret `existingSecretRef` names, as the cluster would hold it.
    rendered.objects.push(
        serde_yaml::to_value(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": WEBHOOK_SECRET, "namespace": NAMESPACE},
            "data": {"tls.crt": b64(pki.cert_pem.as_bytes()), "tls.key": b64(pki.key_pem.as_bytes())},
        }))
        .unwrap(),
    );
    if mtls {
        // One certificate for every service, naming each by every name it is called by.
        let names: Vec<String> = ["storage", "proxy", "admission"]
            .iter()
            .flat_map(|svc| {
                let n = format!("trow-{svc}");
                [
                    n.clone(),
                    format!("{n}.{NAMESPACE}"),
                    format!("{n}.{NAMESPACE}.svc"),
                ]
            })
            .collect();
        let grpc = issue(&names);
        rendered.objects.push(
            serde_yaml::to_value(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": GRPC_SECRET, "namespace": NAMESPACE},
                "data": {
                    "tls.crt": b64(grpc.cert_pem.as_bytes()),
                    "tls.key": b64(grpc.key_pem.as_bytes()),
                    "ca.crt": b64(grpc.ca_pem.as_bytes()),
                },
            }))
            .unwrap(),
        );
    }
    let (hook_svc, hook_port, hook_path) = mutate_hook(&rendered, &ca_bundle);
    lap("render", &mut timings);

    // The pods the issue asks for, and the webhooks' gateways.
    let mut replicas: Vec<(String, usize)> = rendered
        .workloads()
        .iter()
        .map(|w| (w.component.clone(), w.replicas))
        .collect();
    replicas.sort();
    assert_eq!(
        replicas,
        [
            ("admission".to_string(), 1),
            ("gateway".to_string(), 2),
            ("proxy".to_string(), 3),
            ("storage".to_string(), 1),
            ("webhooks".to_string(), 2),
        ]
    );
    let mut c = Cluster::start(rendered, &tmp.path().join("pods"), &ips.pods);
    let _logs = LogsOnPanic(
        c.pods
            .iter()
            .filter_map(|p| p.proc.as_ref().map(|p| p.log.clone()))
            .collect(),
    );
    let ready = c.wait_ready(Duration::from_secs(60)).await;
    eprintln!("{tag} all {} pods ready after {ready:?}", c.pods.len());
    c.assert_live().await;
    lap("start, readiness and liveness", &mut timings);
    for p in &c.pods {
        eprintln!("{tag} pod {} on {}: {}", p.name, p.ip, p.argv.join(" "));
        for (what, from, to) in &p.substitutions {
            eprintln!("{tag}   substituted ({what}): {from} -> {to}");
        }
    }

    // Each gateway resolved the headless proxy Service its `--proxy` names to all three pods.
    let proxy_url = flag_value(&c.pods_of("gateway")[0].argv, "--proxy").to_string();
    let (scheme, _) = proxy_url.split_once("://").expect("a proxy URL");
    assert_eq!(scheme, if mtls { "https" } else { "http" }, "{proxy_url}");
    let proxy_port = proxy_url
        .rsplit_once(':')
        .expect("a proxy URL with a port")
        .1
        .to_string();
    let proxy_urls: Vec<String> = c
        .pods_of("proxy")
        .iter()
        .map(|p| format!("{scheme}://{}:{proxy_port}", p.ip))
        .collect();
    for g in c.pods_of("gateway") {
        let line = last_replicas_line(&g.log_text());
        for u in &proxy_urls {
            assert!(line.contains(u.as_str()), "{}: {u} not in {line:?}", g.name);
        }
    }

    // Every pod serves metrics where `--metrics-listen` put it.
    for p in &c.pods {
        let addr = flag_value(&p.argv, "--metrics-listen");
        let (status, _) = get(&format!("http://{addr}/metrics"), "", None).await;
        assert_eq!(status, 200, "{}: metrics on {addr}", p.name);
    }

    // Clients reach the gateways through the Service `trow` (its first port): at each gateway
    // pod's port it forwards to.
    let gw_svc = c.rendered.must("Service", "trow");
    let gw_svc_port = gw_svc["spec"]["ports"][0]["port"].as_u64().expect("a port") as u16;
    let gw_pods = c.target_ports("trow", gw_svc_port);
    let gw: Vec<String> = gw_pods
        .iter()
        .map(|(pod, port)| format!("{}:{port}", c.pods[c.index(pod)].ip))
        .collect();
    assert_eq!(gw.len(), 2, "{gw:?}");
    let base = |i: usize| format!("http://{}", gw[i]);

    // Push through gateway 0, pull through gateway 1.
    let mut cmd = skopeo([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--retry-times=0",
    ]);
    cmd.args(["--dest-creds", &format!("{USER}:{password}")])
        .arg(mine.oci_ref())
        .arg(format!("docker://{}/team/mine:1.0", gw[0]));
    run(&mut cmd);
    let pulled = tmp.path().join("pulled-mine");
    let out = skopeo_pull(
        &format!("{}/team/mine:1.0", gw[1]),
        &pulled,
        "1.0",
        &password,
    );
    assert!(out.status.success(), "{out:?}");
    assert_holds(&pulled, "1.0", &mine);
    lap("push via gateway 0, pull via gateway 1", &mut timings);

    // A token issued by gateway 0 is honoured by gateway 1: they share the token key.
    let (status, body) = get(
        &format!(
            "{}/v2/token?service={DOMAIN}&scope=repository:team/mine:pull",
            base(0)
        ),
        &password,
        None,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let token: Value = serde_json::from_slice(&body).expect("a token answer");
    let token = token["token"].as_str().expect("a token").to_string();
    let r = reqwest::Client::new()
        .get(format!("{}/v2/team/mine/manifests/1.0", base(1)))
        .bearer_auth(&token)
        .header("Accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "gateway 1 refused gateway 0's token");

    // The upstream image through both gateways: by alias and cache name with skopeo, and `?ns=`.
    let out = skopeo_pull(
        &format!("{}/f/up/team/app:1.0", gw[0]),
        &tmp.path().join("app-0"),
        "1.0",
        &password,
    );
    assert!(out.status.success(), "{out:?}");
    assert_holds(&tmp.path().join("app-0"), "1.0", &app);
    let out = skopeo_pull(
        &format!("{}/f/{}/team/app:1.0", gw[1], up.path_name()),
        &tmp.path().join("app-1"),
        "1.0",
        &password,
    );
    assert!(out.status.success(), "{out:?}");
    assert_holds(&tmp.path().join("app-1"), "1.0", &app);
    let ns = format!("?ns={}", up.authority());
    for i in 0..2 {
        pull_by_hand(&base(i), "team/app", &ns, &app, &password).await;
    }
    lap("upstream image via both gateways", &mut timings);

    // The mutating webhook: the public gateway does not serve the webhook routes (they take no
    // login: anyone reaching the registry port could make the proxy pre-warm); only the
    // webhooks' Service does, as the API server calls it (HTTPS, our CA, the Service's name).
    let review = pod_review(&format!("{}/team/app:1.0", up.authority()));
    let expected = format!("{DOMAIN}/f/up/team/app:1.0");
    let expected_by_name = format!("{DOMAIN}/f/{}/team/app:1.0", up.path_name());
    for path in ["/mutate-image", "/validate-image"] {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", base(0)))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&review).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "the public gateway serves {path}");
    }
    let ca_file = tmp.path().join("webhook-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let review_file = tmp.path().join("review.json");
    std::fs::write(&review_file, serde_json::to_vec(&review).unwrap()).unwrap();
    // The Service's port (443) forwards to the pods' webhook port: the API server reaches each
    // pod there, by the Service's name.
    let targets = c.target_ports(&hook_svc, hook_port);
    assert_eq!(targets.len(), 2, "{targets:?}");
    for (pod, port) in targets {
        let p = &c.pods[c.index(&pod)];
        let mut curl = std::process::Command::new("curl");
        curl.args(["-sS", "--fail-with-body", "--cacert"])
            .arg(&ca_file)
            .args([
                "--resolve",
                &format!("{svc_dns}:{port}:{}", p.ip),
                "-H",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(format!("@{}", review_file.display()))
            .arg(format!("https://{svc_dns}:{port}{hook_path}"));
        let body = run(&mut curl);
        let answer: Value = serde_json::from_str(&body).expect("an AdmissionReview");
        let images = patched_images(&answer);
        assert!(
            images == [expected.clone()] || images == [expected_by_name.clone()],
            "{}: {images:?}",
            p.name
        );
    }
    lap("mutating reviews", &mut timings);

    // A proxy and a gateway die. The dead proxy stays in the headless Service's name for now
    // (the endpoint controller lags): the surviving gateway must pass over it.
    let dead_proxy = c.pods_of("proxy")[0].name.clone();
    let dead_gw = gw_pods[1].0.clone();
    c.kill9(&dead_proxy);
    c.kill9(&dead_gw);
    let killed = Instant::now();
    assert!(
        std::net::TcpStream::connect(&gw[1]).is_err(),
        "the killed gateway still accepts connections"
    );
    // `late` was never pulled: a live proxy must fetch it. Several pulls, so the round robin
    // comes to the dead replica's turn more than once.
    let mut first_ok = None;
    let mut failures = Vec::new();
    let deadline = Duration::from_secs(15);
    let mut n = 0;
    while n < 4 {
        let layout = tmp.path().join(format!("late-{n}-{}", failures.len()));
        let out = skopeo_pull(
            &format!("{}/f/up/team/late:1.0", gw[0]),
            &layout,
            "1.0",
            &password,
        );
        if out.status.success() {
            assert_holds(&layout, "1.0", &late);
            first_ok.get_or_insert(killed.elapsed());
            n += 1;
        } else {
            assert!(
                first_ok.is_none(),
                "a pull failed after one had passed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
            assert!(
                killed.elapsed() < deadline,
                "no pull through the surviving gateway within {deadline:?} of the kills:\n{}",
                failures.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    for _ in 0..6 {
        pull_by_hand(&base(0), "team/late", &ns, &late, &password).await;
        pull_by_hand(&base(0), "f/up/team/app", "", &app, &password).await;
    }
    let first_ok = first_ok.expect("a pull");
    eprintln!(
        "{tag} after the kills: first pull of an uncached image ok {first_ok:?} after them, {} \
         failed attempts before",
        failures.len()
    );
    lap(
        "pulls after the kills (dead proxy still listed)",
        &mut timings,
    );

    // The endpoint controller catches up; pulls go on.
    c.drop_endpoints_of_dead();
    tokio::time::sleep(Duration::from_secs(6)).await;
    for _ in 0..3 {
        pull_by_hand(&base(0), "team/late", &ns, &late, &password).await;
    }
    let log = c.pods_of("gateway")[0].log_text();
    let line = last_replicas_line(&log);
    let dead_ip = c.pods[c.index(&dead_proxy)].ip.clone();
    assert!(
        !line.contains(&format!("{scheme}://{dead_ip}:{proxy_port}")) && line.contains(&proxy_port),
        "the gateway still lists the dead proxy once its name no longer does: {line:?}"
    );
    assert!(
        log.contains("a proxy replica is unreachable"),
        "the gateway never met the dead proxy: were calls spread over it?\n{log}"
    );
    lap("pulls after the endpoints dropped", &mut timings);

    // The survivors are healthy; every pod stops; the store is consistent.
    c.assert_live().await;
    c.terminate_all();
    // The data dir the storage pod was given (its volume, substituted).
    let argv = &c.pods_of("storage")[0].argv;
    let i = argv
        .iter()
        .position(|a| a == "--data-dir")
        .expect("--data-dir");
    fsck(Path::new(&argv[i + 1]));
    lap("stop and fsck", &mut timings);
    for (what, d) in &timings {
        eprintln!("{tag} timing: {what}: {d:?}");
    }
    eprintln!("{tag} total {:?}", t0.elapsed());
}
