//! Traces over OTLP: a pull through the cache is one trace across the gateway, proxy and storage
//! processes, joined by the `traceparent` their gRPC calls carry (and a webhook call one across
//! gateway and admission); and with no `OTEL_*` variable asking for traces, nothing is sent and
//! no exporter runs.
//!
//! Each test starts its own OTLP receiver ([`trow_tests::otlp`]) and a real upstream registry
//! (CNCF distribution) on its own `127.0.0.23x` address, and a real client (skopeo) pulls.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use trow_tests::clients::{LogsOnPanic, run, skopeo};
use trow_tests::images::{Image, build_image};
use trow_tests::oci::{ACCEPT_ALL, client};
use trow_tests::otlp::{Receiver, Span};
use trow_tests::upstream::{ProxyConfig, Upstream};
use trow_tests::{Flags, Topology, Trow};

/// A trace id and span id a client could send in `traceparent`.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// The trace of a local blob GET.
const BLOB_TRACE: &str = "5a2e9c1d3b4f60718293a4b5c6d7e8f9";

const BLOB_ROUTE: &str = "/v2/{name}/blobs/{digest}";

const MANIFEST_ROUTE: &str = "/v2/{name}/manifests/{reference}";

/// An upstream on `ip` holding `team/app:1.0`, and the config proxying it as `f/up/`.
fn upstream(ip: &str, dir: &Path) -> (Upstream, Image, std::path::PathBuf) {
    let img = build_image(&dir.join("src"), "1.0", "amd64");
    let up = Upstream::start(ip, 0);
    up.push(&img.oci_ref(), "team/app:1.0");
    let config = ProxyConfig::new([up.entry().alias("up")]).write(&dir.join("config.yml"));
    (up, img, config)
}

/// `flags` with the environment that sends traces to `receiver` over `protocol`, in batches
/// sent every 100 ms rather than 5 s.
fn traced(flags: Flags, receiver: &Receiver, protocol: &str) -> Flags {
    flags
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .with_env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .with_env("OTEL_BSP_SCHEDULE_DELAY", "100")
}

fn skopeo_pull(trow: &Trow, dir: &Path) {
    let layout = dir.join("pulled");
    run(
        skopeo(["copy", "--src-tls-verify=false", "--retry-times=0"])
            .arg(format!("docker://{}", trow.image("f/up/team/app:1.0")))
            .arg(format!("oci:{}:1.0", layout.display())),
    );
}

/// The spans of one trace, by span id.
struct Trace<'a> {
    spans: HashMap<&'a str, &'a Span>,
}

impl<'a> Trace<'a> {
    fn of(all: &'a [Span], trace_id: &str) -> Trace<'a> {
        Trace {
            spans: all
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| (s.span_id.as_str(), s))
                .collect(),
        }
    }

    fn services(&self) -> HashSet<&str> {
        self.spans.values().map(|s| s.service.as_str()).collect()
    }

    fn parent(&self, s: &Span) -> Option<&'a Span> {
        self.spans.get(s.parent_span_id.as_str()).copied()
    }

    /// Whether `ancestor` is `s`'s parent, grandparent, ...
    fn descends(&self, s: &Span, ancestor: &Span) -> bool {
        let mut at = self.parent(s);
        while let Some(p) = at {
            if p.span_id == ancestor.span_id {
                return true;
            }
            at = self.parent(p);
        }
        false
    }

    fn find(&self, what: impl Fn(&Span) -> bool) -> Vec<&'a Span> {
        self.spans.values().copied().filter(|s| what(s)).collect()
    }
}

/// The gateway's span of `GET /v2/f/up/team/app/manifests/1.0` from `service`.
fn manifest_get<'a>(spans: &'a [Span], service: &str) -> Option<&'a Span> {
    spans.iter().find(|s| {
        s.service == service
            && s.attr("http.route") == Some(MANIFEST_ROUTE)
            && s.attr("http.request.method") == Some("GET")
            && s.attr("url.path") == Some("/v2/f/up/team/app/manifests/1.0")
    })
}

/// What every span of a cache-filling manifest pull must show, `gateway`, `proxy`, `storage`
/// being the services' names: the gateway's request span, the proxy's `GetManifest` span as its
/// child across the gRPC hop, the upstream fetch under that, and storage calls made by the proxy
/// parented on the proxy's spans across the second hop. The trace id, or what is missing.
fn one_trace(spans: &[Span], gateway: &str, proxy: &str, storage: &str) -> Result<String, String> {
    let g = manifest_get(spans, gateway).ok_or("no span of the gateway's manifest GET")?;
    if g.kind != 2 || g.attr("http.response.status_code") != Some("200") {
        return Err(format!("the gateway's span is no 200 server span: {g:#?}"));
    }
    let t = Trace::of(spans, &g.trace_id);
    let p = t
        .find(|s| {
            s.service == proxy
                && s.name == "trow.proxy.v1.Proxy/GetManifest"
                && s.parent_span_id == g.span_id
        })
        .into_iter()
        .next()
        .ok_or_else(|| {
            format!(
                "no proxy GetManifest span child of the gateway's {}",
                g.span_id
            )
        })?;
    if p.kind != 2 || p.attr("rpc.system") != Some("grpc") {
        return Err(format!("the proxy's span is no gRPC server span: {p:#?}"));
    }
    let fetch = t.find(|s| s.service == proxy && s.name == "upstream.request");
    if !fetch.iter().any(|f| {
        t.descends(f, p) && f.kind == 3 && f.attr("upstream.path") == Some("manifests/1.0")
    }) {
        return Err("no upstream fetch of the manifest under the proxy's span".into());
    }
    let by_proxy = t.find(|s| {
        s.service == storage
            && s.name.starts_with("trow.storage.v1.Storage/")
            && t.parent(s).is_some_and(|parent| parent.service == proxy)
    });
    if by_proxy.is_empty() {
        return Err(format!(
            "no storage call parented on a proxy span in trace {}",
            g.trace_id
        ));
    }
    Ok(g.trace_id.clone())
}

/// Waits (spans are sent as they end, by each process on its own) until `spans` show
/// [`one_trace`]; panics with what is missing if they never do.
async fn assert_one_trace(
    receiver: &Receiver,
    gateway: &str,
    proxy: &str,
    storage: &str,
) -> (Vec<Span>, String) {
    let spans = receiver
        .wait_until(Duration::from_secs(30), |spans| {
            one_trace(spans, gateway, proxy, storage).is_ok()
        })
        .await;
    match one_trace(&spans, gateway, proxy, storage) {
        Ok(trace) => (spans, trace),
        Err(e) => panic!("{e}:\n{spans:#?}"),
    }
}

/// No span carries a query string or a credential.
fn assert_nothing_secret(spans: &[Span]) {
    for s in spans {
        for (k, v) in &s.attributes {
            let lower = v.to_ascii_lowercase();
            assert!(
                !v.contains('?') && !lower.contains("basic ") && !lower.contains("bearer "),
                "attribute {k}={v} of {s:#?}"
            );
        }
    }
}

/// Threads of the SDK's batch exporter in process `pid` (Linux truncates thread names to 15
/// bytes: `OpenTelemetry.T`).
fn exporter_threads(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("OpenTelemetry"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxied_pull_is_one_trace_across_the_split_services() {
    let receiver = Receiver::http("127.0.0.231");
    let tmp = tempfile::tempdir().unwrap();
    let (up, img, config) = upstream("127.0.0.232", tmp.path());
    let _up_logs = up.logs_on_panic();
    let trow = Trow::start_with(
        Topology::Split,
        traced(
            Flags::config(&config).with_admission(&[]),
            &receiver,
            "http/protobuf",
        ),
    );
    let _logs = LogsOnPanic::trow(&trow);
    assert_eq!(
        trow.processes().len(),
        4,
        "gateway, storage, proxy, admission"
    );
    for (name, p) in trow.processes() {
        assert_eq!(exporter_threads(p.pid()), 1, "{name} runs an exporter");
    }

    skopeo_pull(&trow, tmp.path());
    let services = ["trow-gateway", "trow-proxy", "trow-storage"];
    let (spans, trace) =
        assert_one_trace(&receiver, "trow-gateway", "trow-proxy", "trow-storage").await;
    let t = Trace::of(&spans, &trace);
    assert!(
        services.iter().all(|s| t.services().contains(s)),
        "trace {trace} has spans of {:?} only",
        t.services()
    );
    // The blobs' fills write into storage within the traces of the pulls that started them
    // (spans are sent as they end: the fill's and the gateway's after the write's).
    let rooted = |spans: &[Span], w: &Span| {
        let t = Trace::of(spans, &w.trace_id);
        t.find(|s| s.service == "trow-gateway" && s.parent_span_id.is_empty())
            .iter()
            .any(|root| t.descends(w, root))
    };
    let spans = receiver
        .wait_until(Duration::from_secs(30), |spans| {
            spans
                .iter()
                .filter(|s| s.name == "storage.blob.write")
                .all(|w| rooted(spans, w))
        })
        .await;
    let writes: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "storage.blob.write")
        .collect();
    assert!(!writes.is_empty(), "no blob write span:\n{spans:#?}");
    for w in &writes {
        let t = Trace::of(&spans, &w.trace_id);
        let root = t
            .find(|s| s.service == "trow-gateway" && s.parent_span_id.is_empty())
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("a blob write outside a pull's trace: {w:#?}"));
        assert!(t.descends(w, root), "{w:#?} under {root:#?}");
        // A blob GET's fill, or the warm-up a manifest fetch starts.
        assert!(
            [Some(BLOB_ROUTE), Some(MANIFEST_ROUTE)].contains(&root.attr("http.route")),
            "{root:#?}"
        );
    }

    // A caller's own trace context is the parent of the gateway's span, and travels on.
    let r = client()
        .get(format!(
            "{}/v2/f/up/team/app/manifests/{}",
            trow.url, img.manifest_digest
        ))
        .header("accept", ACCEPT_ALL)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .expect("GET the manifest");
    assert_eq!(r.status(), 200);
    let spans = receiver
        .wait_until(Duration::from_secs(30), |spans| {
            let t = Trace::of(spans, CLIENT_TRACE);
            t.find(|s| s.service == "trow-gateway").iter().any(|g| {
                !t.find(|s| s.service == "trow-proxy" && s.parent_span_id == g.span_id)
                    .is_empty()
            })
        })
        .await;
    let t = Trace::of(&spans, CLIENT_TRACE);
    let g = t
        .find(|s| s.service == "trow-gateway" && s.attr("http.route") == Some(MANIFEST_ROUTE))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no gateway span in the client's trace:\n{spans:#?}"));
    assert_eq!(g.parent_span_id, CLIENT_SPAN, "{g:#?}");
    assert!(
        t.find(|s| s.service == "trow-proxy" && s.parent_span_id == g.span_id)
            .iter()
            .any(|s| s.name == "trow.proxy.v1.Proxy/GetManifest"),
        "the proxy's span is not the gateway's child in the client's trace:\n{spans:#?}"
    );

    // A local blob GET: the body comes from storage's blob body route (not gRPC), whose span
    // is the gateway's child, with the store's read under it.
    let digest = trow_tests::oci::Reg::with_url(&trow.url)
        .push_blob("team/local", b"traced blob bytes")
        .await;
    let r = client()
        .get(format!("{}/v2/team/local/blobs/{digest}", trow.url))
        .header("traceparent", format!("00-{BLOB_TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .expect("GET the blob");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"traced blob bytes");
    let read_under_gateway = |spans: &[Span]| {
        let t = Trace::of(spans, BLOB_TRACE);
        t.find(|g| g.service == "trow-gateway" && g.attr("http.route") == Some(BLOB_ROUTE))
            .iter()
            .any(|g| {
                t.find(|b| {
                    b.service == "trow-storage"
                        && b.name == "trow.storage.v1.BlobBody/Read"
                        && b.parent_span_id == g.span_id
                })
                .iter()
                .any(|b| {
                    !t.find(|r| r.name == "storage.blob.read" && r.parent_span_id == b.span_id)
                        .is_empty()
                })
            })
    };
    let spans = receiver
        .wait_until(Duration::from_secs(30), read_under_gateway)
        .await;
    assert!(
        read_under_gateway(&spans),
        "no blob body read under the gateway's span:\n{:#?}",
        Trace::of(&spans, BLOB_TRACE).find(|_| true)
    );

    // The webhooks: the admission service's span is the gateway's child.
    let review = serde_json::json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "traced-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "team",
            "name": "web",
            "userInfo": {"username": "kubernetes-admin"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "team"},
                "spec": {"containers": [{"name": "web", "image": "alpine:3.20"}]},
            },
        },
    });
    let r = client()
        .post(format!("{}/validate-image", trow.url))
        .header("content-type", "application/json")
        .body(review.to_string())
        .send()
        .await
        .expect("POST /validate-image");
    assert_eq!(r.status(), 200);
    let admitted = |spans: &[Span]| {
        spans
            .iter()
            .filter(|g| {
                g.service == "trow-gateway" && g.attr("http.route") == Some("/validate-image")
            })
            .any(|g| {
                spans.iter().any(|a| {
                    a.service == "trow-admission"
                        && a.name.starts_with("trow.admission.v1.Admission/")
                        && a.trace_id == g.trace_id
                        && a.parent_span_id == g.span_id
                })
            })
    };
    let spans = receiver.wait_until(Duration::from_secs(30), admitted).await;
    assert!(
        admitted(&spans),
        "no admission span under the gateway's:\n{spans:#?}"
    );
    assert_nothing_secret(&spans);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_process_traces_over_grpc_under_its_service_name() {
    let receiver = Receiver::grpc("127.0.0.233");
    let tmp = tempfile::tempdir().unwrap();
    let (up, _img, config) = upstream("127.0.0.234", tmp.path());
    let _up_logs = up.logs_on_panic();
    let trow = Trow::start_with(
        Topology::OneProcess,
        traced(Flags::config(&config), &receiver, "grpc"),
    );
    let _logs = LogsOnPanic::trow(&trow);

    skopeo_pull(&trow, tmp.path());
    // In one process the same hops (in-memory gRPC pipes) carry the same context.
    let (spans, _) = assert_one_trace(&receiver, "trow", "trow", "trow").await;
    let names: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, HashSet::from(["trow"]));
    assert_nothing_secret(&spans);
}

#[tokio::test(flavor = "multi_thread")]
async fn exporter_none_service_name_and_the_flush_at_exit() {
    let receiver = Receiver::http("127.0.0.235");
    let tmp = tempfile::tempdir().unwrap();
    // An endpoint but OTEL_TRACES_EXPORTER=none: nothing is sent.
    let (up, _img, config) = upstream("127.0.0.235", tmp.path());
    let _up_logs = up.logs_on_panic();
    let off = Trow::start_with(
        Topology::Split,
        traced(Flags::config(&config), &receiver, "http/protobuf")
            .with_env("OTEL_TRACES_EXPORTER", "none"),
    );
    let logs = LogsOnPanic::trow(&off);
    skopeo_pull(&off, tmp.path());
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (name, p) in off.processes() {
        assert_eq!(exporter_threads(p.pid()), 0, "{name} runs an exporter");
    }
    assert_eq!(receiver.requests(), 0, "spans were sent with exporter none");
    drop(logs);
    drop(off);

    // OTEL_SERVICE_NAME names every process; spans still queued at SIGTERM are sent before
    // the process exits (batches are due only every 10 minutes here).
    let mut on = Trow::start_with(
        Topology::Split,
        traced(Flags::config(&config), &receiver, "http/protobuf")
            .with_env("OTEL_SERVICE_NAME", "registry-east")
            .with_env("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    );
    let logs = LogsOnPanic::trow(&on);
    let r = client()
        .get(format!("{}/v2/f/up/team/app/manifests/1.0", on.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .expect("GET the manifest");
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests(), 0, "a batch went out before it was due");
    let exited = on.main.terminate(Duration::from_secs(10));
    assert!(
        exited.is_some_and(|s| s.success()),
        "the gateway stopped: {exited:?}"
    );
    for p in on.proxies.iter_mut().chain(on.storage.as_mut()) {
        let exited = p.terminate(Duration::from_secs(10));
        assert!(exited.is_some_and(|s| s.success()), "stopped: {exited:?}");
    }
    let spans = receiver.spans();
    assert!(
        manifest_get(&spans, "registry-east").is_some(),
        "{spans:#?}"
    );
    let names: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, HashSet::from(["registry-east"]));
    for rpc in [
        "trow.proxy.v1.Proxy/GetManifest",
        "trow.storage.v1.Storage/",
    ] {
        assert!(
            spans.iter().any(|s| s.name.starts_with(rpc)),
            "no {rpc} span flushed at exit:\n{spans:#?}"
        );
    }
    drop(logs);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_otel_variables_no_exporter_runs() {
    let trow = Trow::start(Topology::Split);
    let _logs = LogsOnPanic::trow(&trow);
    let r = client()
        .get(format!("{}/v2/", trow.url))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(r.status(), 200);
    for (name, p) in trow.processes() {
        assert_eq!(exporter_threads(p.pid()), 0, "{name} runs an exporter");
        assert!(
            !p.log_text().contains("traces are on"),
            "{name}:\n{}",
            p.log_text()
        );
    }
}
