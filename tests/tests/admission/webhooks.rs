//! The two webhooks through the real gateway: what the API server sends (Pods, workloads, both
//! AdmissionReview versions, UPDATE, dry runs, garbage), what it gets back, and the policy's
//! rules (normalization, prefix boundaries, longest prefix, Trow's own cache) end to end.

use std::time::Duration;

use serde_json::Value;
use trow_tests::Topology;

use crate::support::{
    CONFIGMAP, CRONJOB, DEPLOYMENT, DIGEST, HOSTNAME, POD, Webhooks, assert_bad_request, cronjob,
    deployment, images_at, message, patch_of, patched, pod, pod_create, review, spec, trow_command,
};

/// The config of the round trip: Docker Hub proxied, a Deny default with two allowed
/// registries and one denied repository. Pre-warm off: Docker Hub is only named here, never
/// looked up or contacted (pre-warm has its own tests, from loopback upstreams).
pub const CONFIG: &str = r#"registry_proxies:
  registries:
    - host: "registry-1.docker.io"
image_mutation:
  prewarm: false
image_validation:
  default: Deny
  allow: ["docker.io/library/", "registry.k8s.io/"]
  deny: ["docker.io/library/evil"]
"#;

const DENIED_BY_PREFIX: &str = "denied by prefix \"docker.io/library/evil\"";
const BY_DEFAULT: &str = "neither explicitly allowed nor denied: denied by the default (Deny)";

fn hub(repo_and_tag: &str) -> String {
    format!("{HOSTNAME}/f/docker.io/library/{repo_and_tag}")
}

/// Pods, a Deployment, a v1beta1 CronJob, an UPDATE and dry runs through both webhooks; the
/// patch applied and sent again; unreadable reviews refused with 400.
pub async fn round_trip(topology: Topology) {
    let tmp = tempfile::tempdir().unwrap();
    let w = Webhooks::start(topology, CONFIG, tmp.path());

    // A Pod CREATE: containers, init containers and ephemeral containers are all judged.
    let pod_spec = spec(
        &[("app", "nginx:1.27")],
        &[("init", "quay.io/x:1")],
        &[("debug", "docker.io/library/evil:2")],
    );
    let create = pod_create(pod_spec.clone(), false);
    let v = w.send("validate-image", &create).await;
    assert_eq!(v["allowed"], false, "{v}");
    assert_eq!(v["status"]["code"], 403, "{v}");
    let m = message(&v);
    for expected in [
        format!("image \"quay.io/x:1\" (container \"init\") {BY_DEFAULT}"),
        format!("image \"docker.io/library/evil:2\" (container \"debug\") {DENIED_BY_PREFIX}"),
    ] {
        assert!(
            m.contains(&expected),
            "the denial must say {expected:?}: {v}"
        );
    }
    assert!(!m.contains("nginx"), "an allowed image is not listed: {v}");

    // Its mutation: the allowed Docker Hub image goes through the cache; quay.io (not proxied)
    // stays, and so does the denied image (never rewritten nor warmed: the validating webhook
    // refuses it as the user wrote it).
    let r = w.send("mutate-image", &create).await;
    assert_eq!(
        r["allowed"], true,
        "the mutating webhook never refuses: {r}"
    );
    let patch = patch_of(&r).unwrap_or_else(|| panic!("no patch: {r}"));
    let object = &create["request"]["object"];
    let after = patched(object, &patch);
    assert_eq!(
        images_at(&after, "/spec"),
        [
            hub("nginx:1.27"),
            "quay.io/x:1".into(),
            "docker.io/library/evil:2".into()
        ],
        "{r}"
    );
    // One replace of an image field, nothing else touched.
    assert_eq!(patch.0.len(), 1, "{patch:?}");
    for op in &patch.0 {
        assert!(
            matches!(op, json_patch::PatchOperation::Replace(r) if r.path.to_string().ends_with("/image")),
            "{op:?}"
        );
    }
    // Mutated again, the patched pod is left alone.
    let again = pod_create(after["spec"].clone(), false);
    let r2 = w.send("mutate-image", &again).await;
    assert!(
        r2.get("patch").is_none(),
        "mutating twice must change nothing: {r2}"
    );
    // `f/` is no way around the policy: the denied image written through Trow's cache.
    let evil = hub("evil:2");
    let through_cache = pod_create(spec(&[("app", &evil)], &[], &[]), false);
    let v2 = w.send("validate-image", &through_cache).await;
    assert_eq!(v2["allowed"], false, "{v2}");
    assert!(
        message(&v2).contains(&format!(
            "image \"{evil}\" (container \"app\") {DENIED_BY_PREFIX} (judged as \
             \"docker.io/library/evil:2\", the image it caches)"
        )),
        "{v2}"
    );

    // A dry run gets the same answers (and, with the uid, byte for byte the same review).
    let mut dry = create.clone();
    dry["request"]["dryRun"] = Value::Bool(true);
    assert_eq!(w.send("validate-image", &dry).await, v);
    assert_eq!(w.send("mutate-image", &dry).await, r);

    // A Deployment: its pod template is judged and rewritten.
    let ok = deployment(spec(
        &[("app", "nginx"), ("pause", "registry.k8s.io/pause:3.9")],
        &[],
        &[],
    ));
    let d = review(
        "admission.k8s.io/v1",
        &DEPLOYMENT,
        "CREATE",
        ok,
        None,
        false,
    );
    let v = w.send("validate-image", &d).await;
    assert_eq!(v["allowed"], true, "{v}");
    let r = w.send("mutate-image", &d).await;
    let after = patched(&d["request"]["object"], &patch_of(&r).expect("a patch"));
    assert_eq!(
        images_at(&after, "/spec/template/spec"),
        [hub("nginx:latest"), "registry.k8s.io/pause:3.9".into()]
    );
    let evil_pinned = format!("evil@{DIGEST}");
    let bad = deployment(spec(&[("app", evil_pinned.as_str())], &[], &[]));
    let d = review(
        "admission.k8s.io/v1",
        &DEPLOYMENT,
        "CREATE",
        bad,
        None,
        false,
    );
    let v = w.send("validate-image", &d).await;
    assert_eq!(
        (v["allowed"].clone(), v["status"]["code"].clone()),
        (false.into(), 403.into())
    );
    assert!(message(&v).contains(DENIED_BY_PREFIX), "{v}");

    // A CronJob in AdmissionReview v1beta1: answered in v1beta1 (`send` checks it).
    let c = cronjob(spec(
        &[("report", "evil:1")],
        &[("init", "busybox:1.36")],
        &[],
    ));
    let c = review(
        "admission.k8s.io/v1beta1",
        &CRONJOB,
        "CREATE",
        c,
        None,
        false,
    );
    let v = w.send("validate-image", &c).await;
    assert_eq!(v["allowed"], false, "{v}");
    assert!(message(&v).contains(&format!("(container \"report\") {DENIED_BY_PREFIX}")));
    let r = w.send("mutate-image", &c).await;
    let after = patched(&c["request"]["object"], &patch_of(&r).expect("a patch"));
    assert_eq!(
        images_at(&after, "/spec/jobTemplate/spec/template/spec"),
        ["evil:1".into(), hub("busybox:1.36")],
        "the denied image stays as written: {r}"
    );

    // An UPDATE rewrites what changed only: the unchanged sidecar must not restart.
    let old = pod(spec(
        &[("app", "nginx:1.27"), ("side", "busybox:1.36")],
        &[],
        &[],
    ));
    let new = pod(spec(
        &[("app", "nginx:1.28"), ("side", "busybox:1.36")],
        &[],
        &[],
    ));
    let u = review("admission.k8s.io/v1", &POD, "UPDATE", new, Some(old), false);
    let v = w.send("validate-image", &u).await;
    assert_eq!(v["allowed"], true, "{v}");
    let r = w.send("mutate-image", &u).await;
    let after = patched(&u["request"]["object"], &patch_of(&r).expect("a patch"));
    assert_eq!(
        images_at(&after, "/spec"),
        [hub("nginx:1.28"), "busybox:1.36".into()]
    );

    // What the webhook cannot read is a 400 Status for the API server to show.
    for hook in ["validate-image", "mutate-image"] {
        let r = w.post(hook, "{\"kind\": \"AdmissionReview\",").await;
        assert_bad_request(&r, "not valid JSON");
        let cm = serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "web"}, "data": {"image": "evil:1"}});
        let cm = review("admission.k8s.io/v1", &CONFIGMAP, "CREATE", cm, None, false);
        let r = w.post(hook, serde_json::to_vec(&cm).unwrap()).await;
        assert_bad_request(&r, "kind ConfigMap has no pod spec");
        let mut v2 = create.clone();
        v2["apiVersion"] = "admission.k8s.io/v2".into();
        let r = w.post(hook, serde_json::to_vec(&v2).unwrap()).await;
        assert_bad_request(&r, "admission.k8s.io/v2");
    }
}

/// Judges `image` as the only container of a pod: (allowed, message).
async fn judge(w: &Webhooks, image: &str) -> (bool, String) {
    let v = w
        .send(
            "validate-image",
            &pod_create(spec(&[("c", image)], &[], &[]), false),
        )
        .await;
    let allowed = v["allowed"].as_bool().expect("allowed is a bool");
    if !allowed {
        assert_eq!(v["status"]["code"], 403, "{image}: {v}");
    }
    (allowed, message(&v))
}

/// Checks each `(image, allowed, words of the reason)` through the real endpoint.
async fn table(w: &Webhooks, cases: &[(&str, bool, &str)]) {
    let mut wrong = Vec::new();
    for (image, allowed, reason) in cases {
        let (got, m) = judge(w, image).await;
        if got != *allowed || !m.contains(reason) {
            wrong.push(format!(
                "{image}: expected allowed={allowed} with {reason:?}, got allowed={got}: {m:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

/// Normalization, boundaries, digests, ports and Trow's own cache under the round trip's config.
pub async fn policy_table(topology: Topology) {
    let tmp = tempfile::tempdir().unwrap();
    let w = Webhooks::start(topology, CONFIG, tmp.path());
    let nginx_digest = format!("nginx@{DIGEST}");
    let evil_digest = format!("docker.io/library/evil@{DIGEST}");
    let cached_evil = hub("evil:1");
    let cached_nginx = hub("nginx:1.27");
    // Allowed images have no message; a denial names the image, so "" matches every reason.
    table(
        &w,
        &[
            // One image, every spelling.
            ("nginx", true, ""),
            ("docker.io/library/nginx:latest", true, ""),
            ("index.docker.io/nginx", true, ""),
            ("registry-1.docker.io/library/nginx:1.27", true, ""),
            (&nginx_digest, true, ""),
            ("nginx:1.27@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true, ""),
            ("registry.k8s.io/pause:3.9", true, ""),
            // A port is another registry.
            ("registry.k8s.io:5000/pause:3.9", false, BY_DEFAULT),
            ("localhost:5000/team/app:1", false, BY_DEFAULT),
            ("quay.io/x:1", false, BY_DEFAULT),
            ("bitnami/redis:7", false, BY_DEFAULT),
            // The deny prefix: the repository, its tags, digests and sub-repositories...
            ("evil", false, DENIED_BY_PREFIX),
            ("evil:1", false, DENIED_BY_PREFIX),
            ("docker.io/evil:1", false, DENIED_BY_PREFIX),
            (&evil_digest, false, DENIED_BY_PREFIX),
            ("docker.io/library/evil/sub:1", false, DENIED_BY_PREFIX),
            // ...but not a repository that only starts with its name.
            ("docker.io/library/evil-twin:1", true, ""),
            ("evilness", true, ""),
            // Trow's own cache is judged as what it caches.
            (&cached_evil, false, DENIED_BY_PREFIX),
            (&cached_evil, false, "judged as \"docker.io/library/evil:1\""),
            (&cached_nginx, true, ""),
            // Trow's own repositories are not special.
            ("trow.example.com/team/app:1", false, BY_DEFAULT),
            // What cannot be parsed is denied.
            ("Nginx:1", false, "not a valid image reference"),
            ("nginx:", false, "not a valid image reference"),
        ],
    )
    .await;
}

/// Prefixes match at component boundaries only, and the longest one wins.
pub async fn prefix_boundaries() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"image_mutation:
  prewarm: false
image_validation:
  default: Deny
  allow: ["docker.io/lib", "docker.io/library/ngin", "quay.io/lib", "ghcr.io/team/", "gcr.io/a/b/"]
  deny: ["ghcr.io/team/secret", "gcr.io/a/"]
"#;
    let w = Webhooks::start(Topology::OneProcess, config, tmp.path());
    table(
        &w,
        &[
            // `docker.io/lib` is the repository docker.io/library/lib, not a string prefix.
            ("nginx", false, BY_DEFAULT),
            ("docker.io/library/nginx", false, BY_DEFAULT),
            ("docker.io/library/lib:1", true, ""),
            ("lib", true, ""),
            ("docker.io/library/ngin:2", true, ""),
            ("quay.io/library/x:1", false, BY_DEFAULT),
            ("quay.io/lib:1", true, ""),
            ("quay.io/lib/x:1", true, ""),
            ("quay.io/libx:1", false, BY_DEFAULT),
            // Longest wins, whichever list.
            ("ghcr.io/team/app:1", true, ""),
            (
                "ghcr.io/team/secret:1",
                false,
                "denied by prefix \"ghcr.io/team/secret\"",
            ),
            ("ghcr.io/team/secretive:1", true, ""),
            ("gcr.io/a/c:1", false, "denied by prefix \"gcr.io/a/\""),
            ("gcr.io/a/b/c:1", true, ""),
        ],
    )
    .await;
}

/// A bad `image_validation` or `image_mutation` stops `trow` and `trow admission` at start-up,
/// naming the key.
pub fn bad_config_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "image_validation:\n  default: Maybe\n",
            "image_validation.default",
        ),
        (
            "image_validation:\n  default: Deny\n  allow: [quay.io/, quay.io]\n",
            "image_validation.allow[1]",
        ),
        (
            "image_mutation:\n  prewarm_concurrency: 0\n",
            "image_mutation.prewarm_concurrency",
        ),
    ];
    for (i, (yaml, key)) in cases.iter().enumerate() {
        let config = tmp.path().join(format!("bad-{i}.yml"));
        std::fs::write(&config, yaml).unwrap();
        let mut one = trow_command(&tmp.path().join("data"));
        one.arg("--config-file").arg(&config);
        let mut alone = std::process::Command::new(trow_tests::trow_bin());
        alone
            .args(["admission", "--listen", "127.0.0.1:0", "--config-file"])
            .arg(&config);
        for (what, cmd) in [("trow", one), ("trow admission", alone)] {
            let (status, stdout, stderr, _) = trow_tests::run_to_exit(cmd, Duration::from_secs(10));
            assert!(
                !status.success(),
                "{what} started with {yaml:?}:\n{stdout}{stderr}"
            );
            assert!(
                stderr.contains(key),
                "{what}: the error must name {key:?}:\n{stderr}"
            );
            assert!(
                !stdout.contains("gRPC on") && !stdout.contains("OCI registry on"),
                "{what} listened before refusing its config:\n{stdout}"
            );
        }
    }
}

/// `trow --no-webhooks-on-bind` (the chart's single mode): the registry's port answers no
/// AdmissionReview (404), while a `trow gateway` beside it, calling the one process's admission
/// listener, judges as usual.
pub async fn webhooks_only_beside_the_one_process() {
    use trow_tests::{Proc, addr_prefix, wait_for_line, wait_http_ok};
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.yml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut one = trow_command(&tmp.path().join("data"));
    one.arg("--config-file")
        .arg(&config)
        .args(["--hostname", HOSTNAME, "--no-webhooks-on-bind"]);
    let mut one = Proc::spawn(one, tmp.path().join("trow.log"));
    let storage = addr_prefix(&wait_for_line(&mut one, "trow storage: gRPC on "));
    let admission = addr_prefix(&wait_for_line(&mut one, "trow admission: gRPC on "));
    let main = addr_prefix(&wait_for_line(&mut one, "trow gateway: OCI registry on "));
    let main = main.trim_start_matches("http://").to_string();
    let mut beside = std::process::Command::new(trow_tests::trow_bin());
    beside.args([
        "gateway",
        "--bind",
        "127.0.0.1:0",
        "--storage",
        &format!("http://{storage}"),
        "--admission",
        &format!("http://{admission}"),
        "--hostname",
        HOSTNAME,
    ]);
    let mut beside = Proc::spawn(beside, tmp.path().join("beside.log"));
    let hooks = addr_prefix(&wait_for_line(
        &mut beside,
        "trow gateway: OCI registry on ",
    ));
    let hooks = hooks.trim_start_matches("http://").to_string();
    wait_http_ok(&format!("http://{main}/v2/"), &mut [&mut one]);
    wait_http_ok(&format!("http://{hooks}/v2/"), &mut [&mut beside]);
    let review = pod_create(spec(&[("app", "quay.io/evil/miner:1")], &[], &[]), false);
    let review = serde_json::to_vec(&review).unwrap();
    for hook in ["validate-image", "mutate-image"] {
        let r = trow_tests::oci::send(
            trow_tests::oci::client()
                .post(format!("http://{main}/{hook}"))
                .header("Content-Type", "application/json")
                .body(review.clone()),
        )
        .await;
        r.assert_status(404);
    }
    let r = trow_tests::oci::send(
        trow_tests::oci::client()
            .post(format!("http://{hooks}/validate-image"))
            .header("Content-Type", "application/json")
            .body(review),
    )
    .await;
    r.assert_status(200);
    let answer = r.json();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert!(
        message(&answer["response"]).contains("quay.io/evil/miner:1"),
        "{answer}"
    );
}
