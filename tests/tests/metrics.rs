//! Prometheus `/metrics` end to end: a scripted workload against a real Trow (one process, and
//! split with every service in its own process and its own `--metrics-listen`), a real upstream
//! registry for the pull-through cache, then every scrape checked by `promtool check metrics`
//! (Debian's `prometheus` package) and the counts compared with what the workload did, exactly.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trow_tests::clients::LogsOnPanic;
use trow_tests::images::build_image;
use trow_tests::oci::{Reg, client, send};
use trow_tests::upstream::{ProxyConfig, Upstream};
use trow_tests::{Flags, Proc, Topology, Trow, trow_gc, wait_for_line};

/// A sample's labels and value.
type Sample = (Vec<(String, String)>, f64);

/// One scrape: every sample by metric name.
struct Scrape {
    text: String,
    samples: HashMap<String, Vec<Sample>>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples: HashMap<String, Vec<_>> = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("NAME VALUE");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("labels end with }");
                    let labels = inner
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').expect("k=v");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, Vec::new()),
            };
            samples
                .entry(name.to_string())
                .or_default()
                .push((labels, value));
        }
        Scrape { text, samples }
    }

    /// The sum of `name`'s samples that carry every label of `labels` (0 when none does).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(have, _)| {
                labels
                    .iter()
                    .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.samples.keys().any(|k| k.starts_with(prefix))
    }
}

/// Checks `text` with `promtool check metrics`: any complaint fails the test.
fn promtool_check(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; scripts/test.sh installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics complained about {what}: {said}\n--- the scrape:\n{text}"
    );
}

/// GETs `url` (a `/metrics`), checks the answer with promtool, and parses it.
async fn scrape(url: &str) -> Scrape {
    let r = send(client().get(url)).await;
    r.assert_status(200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{url}"
    );
    let text = r.text();
    promtool_check(&text, url);
    Scrape::parse(text)
}

/// The `/metrics` URL a process printed for its `--metrics-listen`.
fn metrics_url(p: &mut Proc) -> String {
    let rest = wait_for_line(p, "trow metrics: ");
    rest.split_whitespace().next().unwrap().to_string()
}

/// Where each service's metrics are read, once Trow runs.
struct Endpoints {
    gateway: String,
    storage: String,
    proxy: String,
    admission: String,
}

const HTTP_REQUESTS: &str = "trow_http_requests_total";
const CACHE: &str = "trow_proxy_cache_requests_total";

/// A pod CREATE review with one container running `image`.
fn review(image: &str, dry_run: bool) -> Value {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": format!("uid-{}", trow_tests::oci::unique()),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": "web", "namespace": "team", "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "web", "namespace": "team"},
                       "spec": {"containers": [{"name": "c", "image": image}]}},
            "dryRun": dry_run,
        }
    })
}

/// Waits until `check` holds for a fresh scrape of `url` (durations are observed when a
/// response body is dropped, a moment after the client has its last byte); returns that scrape.
async fn eventually(url: &str, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        let s = scrape(url).await;
        if check(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} never held:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scripted workload, then exact counts: pushes, pulls, a 404, proxied pulls (miss, hit,
/// revalidated, `?ns=`, stale once the upstream is gone), admission decisions, and a GC run.
async fn counts_move_exactly(topology: Topology, ip: &'static str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = build_image(&tmp.path().join("src"), "1.0", "amd64");
    let mut up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/app:1.0");
    let config = ProxyConfig::new([up.entry()]).yaml()
        + "image_validation:\n  default: Allow\n  deny: [docker.io/library/busybox]\n";
    let config_path = tmp.path().join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let listen = format!("{ip}:0");
    let metrics = ["--metrics-listen", listen.as_str()]
        .map(String::from)
        .to_vec();
    let split = topology == Topology::Split;
    let flags = Flags {
        gateway: metrics.clone(),
        // Garbage collection keeps what is younger than this: the test waits it out.
        storage: [
            vec!["--gc-grace".into(), "1s".into()],
            if split { metrics.clone() } else { vec![] },
        ]
        .concat(),
        proxy: if split { metrics.clone() } else { vec![] },
        admission: Some(
            [
                vec!["--hostname".into(), "trow.test".into()],
                if split { metrics.clone() } else { vec![] },
            ]
            .concat(),
        ),
        config_file: Some(config_path),
        ..Flags::default()
    };
    let mut trow = Trow::start_with(topology, flags);
    let _logs = LogsOnPanic::trow(&trow);
    let ep = if split {
        Endpoints {
            gateway: metrics_url(&mut trow.main),
            storage: metrics_url(trow.storage.as_mut().unwrap()),
            proxy: metrics_url(&mut trow.proxies[0]),
            admission: metrics_url(trow.admission.as_mut().unwrap()),
        }
    } else {
        let url = metrics_url(&mut trow.main);
        Endpoints {
            gateway: url.clone(),
            storage: url.clone(),
            proxy: url.clone(),
            admission: url,
        }
    };
    let storage_addr = trow.storage_addr.clone();
    let base = trow.url.clone();
    let reg = Reg::with_trow(trow);

    // The gateway's HTTP port shows the same registry (no users: no login needed).
    let on_port = scrape(&format!("{base}/metrics")).await;
    assert!(on_port.has_prefix("trow_http_"), "{}", on_port.text);
    if split {
        // Each process shows its own services only.
        let gw = scrape(&ep.gateway).await;
        assert!(
            !gw.has_prefix("trow_proxy_") && !gw.has_prefix("trow_storage_"),
            "{}",
            gw.text
        );
        let st = scrape(&ep.storage).await;
        assert!(
            st.has_prefix("trow_storage_") && !st.has_prefix("trow_http_"),
            "{}",
            st.text
        );
    } else {
        let all = scrape(&ep.gateway).await;
        for p in ["trow_http_", "trow_storage_", "trow_build_info"] {
            assert!(
                all.has_prefix(p),
                "{p} missing in one process:\n{}",
                all.text
            );
        }
    }

    // Pushes: two blobs (POST then PUT each) and a manifest.
    let g0 = scrape(&ep.gateway).await;
    let repo = "metrics/app";
    let (digest, manifest) = reg.push_image(repo, "1.0", "metrics").await;
    let g1 = scrape(&ep.gateway).await;
    let delta = |a: &Scrape, b: &Scrape, name: &str, labels: &[(&str, &str)]| {
        b.get(name, labels) - a.get(name, labels)
    };
    let req = |route, method, status| [("route", route), ("method", method), ("status", status)];
    assert_eq!(
        delta(&g0, &g1, HTTP_REQUESTS, &req("uploads", "POST", "202")),
        2.0
    );
    assert_eq!(
        delta(&g0, &g1, HTTP_REQUESTS, &req("uploads", "PUT", "201")),
        2.0
    );
    assert_eq!(
        delta(&g0, &g1, HTTP_REQUESTS, &req("manifests", "PUT", "201")),
        1.0
    );
    assert_eq!(
        delta(
            &g0,
            &g1,
            "trow_http_received_bytes_total",
            &[("route", "manifests")]
        ),
        manifest.len() as f64
    );

    // Pulls: the manifest GET 200 count moves by exactly the pulls made; a 404 is a 404.
    const PULLS: usize = 7;
    let url = reg.v2(&format!("{repo}/manifests/1.0"));
    let audit0 = scrape(&ep.storage).await;
    for _ in 0..PULLS {
        reg.get_m(&url).await.assert_status(200);
    }
    // Each manifest pull is on record before it is answered (other events may land too).
    let audit1 = scrape(&ep.storage).await;
    let written = delta(&audit0, &audit1, "trow_audit_events_total", &[]);
    assert!(written >= PULLS as f64, "{written} audit events written");
    reg.get_m(&reg.v2(&format!("{repo}/manifests/missing")))
        .await
        .assert_status(404);
    let g2 = eventually(&ep.gateway, "8 manifest GET durations", |s| {
        s.get(
            "trow_http_request_duration_seconds_count",
            &[("route", "manifests"), ("method", "GET")],
        ) - g1.get(
            "trow_http_request_duration_seconds_count",
            &[("route", "manifests"), ("method", "GET")],
        ) == (PULLS + 1) as f64
    })
    .await;
    assert_eq!(
        delta(&g1, &g2, HTTP_REQUESTS, &req("manifests", "GET", "200")),
        PULLS as f64,
        "{}",
        g2.text
    );
    assert_eq!(
        delta(&g1, &g2, HTTP_REQUESTS, &req("manifests", "GET", "404")),
        1.0
    );
    let sent = delta(
        &g1,
        &g2,
        "trow_http_sent_bytes_total",
        &[("route", "manifests")],
    );
    assert!(
        sent >= (PULLS * manifest.len()) as f64,
        "sent {sent} bytes for {PULLS} manifests of {}",
        manifest.len()
    );
    // The repository never becomes a label.
    assert!(!g2.text.contains("metrics/app"), "{}", g2.text);

    // Through the cache: a blob missed then hit; a tag fetched, revalidated, and read with
    // `?ns=`.
    let name = up.path_name();
    let layer = &img.layers[0];
    let p0 = scrape(&ep.proxy).await;
    let g3 = scrape(&ep.gateway).await;
    for _ in 0..2 {
        reg.get(&reg.v2(&format!("f/{name}/team/app/blobs/{layer}")))
            .await
            .assert_status(200);
    }
    for _ in 0..2 {
        reg.get_m(&reg.v2(&format!("f/{name}/team/app/manifests/1.0")))
            .await
            .assert_status(200);
    }
    let ns_url = format!("{}?ns={}", reg.v2("team/app/manifests/1.0"), up.authority());
    reg.get_m(&ns_url).await.assert_status(200);
    let p1 = eventually(&ep.proxy, "no fill in progress", |s| {
        s.get("trow_proxy_blob_fills_in_progress", &[("upstream", &name)]) == 0.0
            && s.samples.contains_key("trow_proxy_blob_fills_in_progress")
    })
    .await;
    let cache = |resource, result| {
        [
            ("upstream", name.as_str()),
            ("resource", resource),
            ("result", result),
        ]
    };
    assert_eq!(
        delta(&p0, &p1, CACHE, &cache("blob", "miss")),
        1.0,
        "{}",
        p1.text
    );
    assert_eq!(
        delta(&p0, &p1, CACHE, &cache("blob", "hit")),
        1.0,
        "{}",
        p1.text
    );
    assert_eq!(
        delta(&p0, &p1, CACHE, &cache("manifest", "miss")),
        1.0,
        "{}",
        p1.text
    );
    assert_eq!(
        delta(&p0, &p1, CACHE, &cache("manifest", "revalidated")),
        2.0,
        "{}",
        p1.text
    );
    assert!(
        delta(
            &p0,
            &p1,
            "trow_proxy_upstream_request_duration_seconds_count",
            &[("upstream", &name)]
        ) >= 2.0,
        "{}",
        p1.text
    );
    assert_eq!(
        p1.get("trow_proxy_upstream_errors_total", &[]),
        0.0,
        "{}",
        p1.text
    );
    let g4 = scrape(&ep.gateway).await;
    assert_eq!(
        delta(&g3, &g4, HTTP_REQUESTS, &req("proxied_blobs", "GET", "200")),
        2.0
    );
    assert_eq!(
        delta(
            &g3,
            &g4,
            HTTP_REQUESTS,
            &req("proxied_manifests", "GET", "200")
        ),
        3.0
    );
    assert!(!g4.text.contains("team/app"), "{}", g4.text);

    // The upstream goes away: the cached tag is served stale, and the failure is counted.
    up.kill();
    reg.get_m(&reg.v2(&format!("f/{name}/team/app/manifests/1.0")))
        .await
        .assert_status(200);
    let p2 = scrape(&ep.proxy).await;
    assert_eq!(
        delta(&p1, &p2, CACHE, &cache("manifest", "stale")),
        1.0,
        "{}",
        p2.text
    );
    assert_eq!(
        delta(
            &p1,
            &p2,
            "trow_proxy_upstream_errors_total",
            &[("upstream", &name), ("error", "unreachable")]
        ),
        1.0,
        "{}",
        p2.text
    );

    // Admission: allowed, denied, patched (a dry run: nothing is pre-warmed), and a review
    // that cannot be read.
    let a0 = scrape(&ep.admission).await;
    let post = |hook: &str, body: Vec<u8>| {
        let url = format!("{base}/{hook}");
        async move {
            send(
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
        }
    };
    let json = |v: Value| serde_json::to_vec(&v).unwrap();
    post(
        "validate-image",
        json(review("docker.io/library/nginx:1", false)),
    )
    .await
    .assert_status(200);
    post(
        "validate-image",
        json(review("docker.io/library/busybox:1", false)),
    )
    .await
    .assert_status(200);
    let image = format!("{}/team/app:1.0", up.authority());
    let r = post("mutate-image", json(review(&image, true))).await;
    r.assert_status(200);
    assert!(r.text().contains("patch"), "{}", r.text());
    let r = post(
        "validate-image",
        b"{\"kind\": \"AdmissionReview\",".to_vec(),
    )
    .await;
    assert!(r.status >= 400, "{}", r.status);
    let a1 = scrape(&ep.admission).await;
    let decision = |webhook, outcome| [("webhook", webhook), ("outcome", outcome)];
    const DECISIONS: &str = "trow_admission_decisions_total";
    assert_eq!(
        delta(&a0, &a1, DECISIONS, &decision("validate", "allowed")),
        1.0,
        "{}",
        a1.text
    );
    assert_eq!(
        delta(&a0, &a1, DECISIONS, &decision("validate", "denied")),
        1.0,
        "{}",
        a1.text
    );
    assert_eq!(
        delta(&a0, &a1, DECISIONS, &decision("mutate", "patched")),
        1.0,
        "{}",
        a1.text
    );
    assert_eq!(
        delta(&a0, &a1, DECISIONS, &decision("validate", "error")),
        1.0,
        "{}",
        a1.text
    );

    // Garbage collection: the blobs of the pushed image, whose manifest is deleted, go; the
    // metrics say what `trow gc` said.
    reg.delete(&reg.v2(&format!("{repo}/manifests/{digest}")))
        .await
        .assert_status(202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s0 = scrape(&ep.storage).await;
    let (ok, out) = tokio::task::spawn_blocking(move || trow_gc(&storage_addr, false))
        .await
        .unwrap();
    assert!(ok, "{out}");
    let s1 = scrape(&ep.storage).await;
    let said = out
        .lines()
        .find(|l| l.starts_with("gc: "))
        .expect("a summary");
    let numbers: Vec<f64> = said
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // gc: M manifests, L links, B blobs (N bytes) deleted in ...
    let (manifests, blobs, bytes) = (numbers[0], numbers[2], numbers[3]);
    // The delete removed the manifest's record already; its bytes, config and layer are
    // garbage.
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let size = |d: &Value| d["size"].as_f64().unwrap();
    assert_eq!(blobs, 3.0, "{out}");
    assert_eq!(
        bytes,
        manifest.len() as f64 + size(&m["config"]) + size(&m["layers"][0]),
        "{out}"
    );
    assert_eq!(
        delta(&s0, &s1, "trow_storage_gc_runs_total", &[("outcome", "ok")]),
        1.0
    );
    assert_eq!(
        delta(&s0, &s1, "trow_storage_gc_removed_manifests_total", &[]),
        manifests
    );
    assert_eq!(
        delta(&s0, &s1, "trow_storage_gc_removed_blobs_total", &[]),
        blobs
    );
    assert_eq!(
        delta(&s0, &s1, "trow_storage_gc_removed_bytes_total", &[]),
        bytes
    );
    assert_eq!(
        delta(&s0, &s1, "trow_storage_gc_duration_seconds_count", &[]),
        1.0
    );
    // A dry run removes nothing and is not a run.
    let storage_addr = reg.trow.as_ref().unwrap().storage_addr.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || trow_gc(&storage_addr, true))
        .await
        .unwrap();
    assert!(ok, "{out}");
    let s2 = scrape(&ep.storage).await;
    assert_eq!(delta(&s1, &s2, "trow_storage_gc_runs_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_move_exactly_in_one_process() {
    counts_move_exactly(Topology::OneProcess, "127.0.0.226").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_move_exactly_split() {
    counts_move_exactly(Topology::Split, "127.0.0.227").await;
}

/// With users, `/metrics` on the HTTP port needs a login (anonymous pull does not extend to
/// it); `--metrics-listen` serves it without, for the cluster's Prometheus.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_on_the_api_port_need_a_login() {
    let flags = Flags::gateway(&[
        "--user",
        "admin",
        "--password",
        "s3cret",
        "--anonymous-pull",
        "--metrics-listen",
        "127.0.0.228:0",
    ]);
    let mut trow = Trow::start_with(Topology::OneProcess, flags);
    let _logs = LogsOnPanic::trow(&trow);
    let listener = metrics_url(&mut trow.main);
    let on_port = format!("{}/metrics", trow.url);
    let r = send(client().get(&on_port)).await;
    r.assert_status(401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer realm=")),
        "a challenge"
    );
    let r = send(client().get(&on_port).basic_auth("admin", Some("wrong"))).await;
    r.assert_status(401);
    // Nor does an anonymous token (what anonymous pull hands out).
    let t = send(client().get(format!("{}/v2/token?service=trow", trow.url))).await;
    t.assert_status(200);
    let anon = t.json()["token"].as_str().unwrap().to_string();
    let r = send(client().get(&on_port).bearer_auth(&anon)).await;
    r.assert_status(401);
    let r = send(client().get(&on_port).basic_auth("admin", Some("s3cret"))).await;
    r.assert_status(200);
    promtool_check(&r.text(), &on_port);
    // Counted too: the refusals by route and status.
    let s = scrape(&listener).await;
    assert_eq!(
        s.get(
            HTTP_REQUESTS,
            &[("route", "metrics"), ("method", "GET"), ("status", "401")]
        ),
        3.0,
        "{}",
        s.text
    );
    // The listener answers nothing else.
    let other = listener.replace("/metrics", "/v2/");
    send(client().get(&other)).await.assert_status(404);
}

/// Evictions are counted in the storage process: three images of about 1 MiB through a cache
/// of 2.5 MiB; once the third is cached, the least recently pulled (the first) is evicted, and
/// the counters say one pass, one image, and at least its big layer's bytes.
#[tokio::test(flavor = "multi_thread")]
async fn evictions_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let imgs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|t| trow_tests::images::build_image_sized(&src, t, "amd64", 1 << 20))
        .collect();
    let up = Upstream::start("127.0.0.230", 0);
    let _up_logs = up.logs_on_panic();
    for img in &imgs {
        up.push(&img.oci_ref(), &format!("team/{}:1", img.tag));
    }
    let config = ProxyConfig::new([up.entry().alias("up")]).max_size("2500KiB");
    let flags = Flags {
        config_file: Some(config.write(&tmp.path().join("config.yml"))),
        ..Flags::storage(&["--pull-guard", "0s", "--metrics-listen", "127.0.0.230:0"])
    };
    let mut trow = Trow::start_with(Topology::Split, flags);
    let _logs = LogsOnPanic::trow(&trow);
    let storage = metrics_url(trow.storage.as_mut().unwrap());
    let before = scrape(&storage).await;
    assert_eq!(before.get("trow_storage_evictions_total", &[]), 0.0);
    for img in &imgs {
        let mut cmd =
            trow_tests::clients::skopeo(["copy", "--src-tls-verify=false", "--retry-times=0"]);
        cmd.arg(format!(
            "docker://{}",
            trow.image(&format!("f/up/team/{}:1", img.tag))
        ))
        .arg(format!("oci:{}:x", tmp.path().join(&img.tag).display()));
        trow_tests::clients::run(&mut cmd);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = eventually(&storage, "an eviction", |s| {
        s.get("trow_storage_evicted_images_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(
        after.get("trow_storage_evictions_total", &[]),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.get("trow_storage_evicted_images_total", &[]),
        1.0,
        "{}",
        after.text
    );
    assert!(
        after.get("trow_storage_evicted_blobs_total", &[]) >= 2.0,
        "{}",
        after.text
    );
    assert!(
        after.get("trow_storage_evicted_bytes_total", &[]) >= (1 << 20) as f64,
        "{}",
        after.text
    );
}
