//! Both webhooks driven as the gRPC server will drive them: AdmissionReview JSON in (the
//! fixtures are reviews as the API server sends them), AdmissionReview JSON out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use trow_admission::{Decision, MutationConfig, ReviewError, ValidationConfig, Webhooks};
use trow_upstreams::config::{ProxyConfig, RegistryConfig};

const TROW: &str = "trow.example.com:8443";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn proxy() -> ProxyConfig {
    ProxyConfig {
        registries: vec![
            RegistryConfig {
                host: "docker.io".into(),
                ignore_repos: vec!["library/busybox".into()],
                ..RegistryConfig::default()
            },
            RegistryConfig {
                host: "registry.example.com:5000".into(),
                ..RegistryConfig::default()
            },
        ],
        ..ProxyConfig::default()
    }
    .validate()
    .unwrap()
}

fn policy(default: Decision, allow: &[&str], deny: &[&str]) -> ValidationConfig {
    ValidationConfig::new(
        default,
        allow.iter().map(|s| s.to_string()).collect(),
        deny.iter().map(|s| s.to_string()).collect(),
    )
}

fn hooks(validation: Option<ValidationConfig>, hostname: Option<&str>) -> Webhooks {
    Webhooks::new(
        validation,
        MutationConfig::default(),
        &proxy(),
        hostname.map(String::from),
    )
    .unwrap()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The review in `name` with its object's images replaced by `images` (in spec order).
fn with_images(name: &str, images: &[(&str, &str)]) -> String {
    let mut v: Value = serde_json::from_str(&fixture(name)).unwrap();
    for (pointer, image) in images {
        *v.pointer_mut(&format!("/request/object{pointer}")).unwrap() = Value::from(*image);
    }
    v.to_string()
}

#[test]
fn a_denial_names_every_denied_image_with_its_container() {
    let h = hooks(
        Some(policy(
            Decision::Deny,
            &["docker.io/library/", "registry.example.com:5000/"],
            &["evil.example.com/"],
        )),
        Some(TROW),
    );
    let review = with_images(
        "pod-create.json",
        &[
            ("/spec/containers/0/image", "evil.example.com/x:1"),
            ("/spec/containers/1/image", "quay.io/y:2"),
        ],
    );
    let (answer, outcome) = h.validate(review.as_bytes()).unwrap();
    let v = json(&answer);
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let r = &v["response"];
    assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    assert_eq!(r["status"]["status"], "Failure");
    let message = "image \"evil.example.com/x:1\" (container \"app\") denied by prefix \
                   \"evil.example.com/\"; image \"quay.io/y:2\" (container \"side\") neither \
                   explicitly allowed nor denied: denied by the default (Deny)";
    assert_eq!(r["status"]["message"], message);
    assert!(!outcome.allowed && !outcome.dry_run);
    assert_eq!(outcome.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(outcome.object, "Pod team/web");
    assert_eq!(outcome.denied.len(), 2);
    assert_eq!(outcome.denied[1].site.name, "side");
    // The init container (registry.example.com:5000, by digest) was allowed.
    assert!(outcome.denied.iter().all(|d| d.site.name != "init"));
}

#[test]
fn allowed_reviews_and_no_policy() {
    let allow_all = policy(Decision::Allow, &[], &[]);
    for h in [hooks(Some(allow_all), Some(TROW)), hooks(None, None)] {
        for name in [
            "pod-create.json",
            "pod-update.json",
            "pod-debug-update.json",
            "deployment-create.json",
            "cronjob-create-v1beta1.json",
        ] {
            let (answer, outcome) = h.validate(fixture(name).as_bytes()).unwrap();
            let v = json(&answer);
            assert_eq!(v["response"]["allowed"], true, "{name}");
            assert!(v["response"].get("patch").is_none(), "{name}");
            assert!(outcome.allowed && outcome.denied.is_empty(), "{name}");
        }
    }
    // Nothing is allowed by a Deny default with no prefixes, except objects being deleted.
    let strict = hooks(Some(policy(Decision::Deny, &[], &[])), Some(TROW));
    let (_, o) = strict
        .validate(fixture("deployment-create.json").as_bytes())
        .unwrap();
    assert!(!o.allowed && o.dry_run && o.denied.len() == 3);
    let mut deleting: Value = serde_json::from_str(&fixture("pod-update.json")).unwrap();
    deleting["request"]["object"]["metadata"]["deletionTimestamp"] = "2025-05-14T10:00:00Z".into();
    let (_, o) = strict.validate(deleting.to_string().as_bytes()).unwrap();
    assert!(
        o.allowed,
        "finalizers must be removable from a pod on its way out"
    );
}

#[test]
fn v1beta1_is_answered_in_v1beta1() {
    let h = hooks(
        Some(policy(Decision::Deny, &["docker.io/"], &[])),
        Some(TROW),
    );
    let (answer, outcome) = h
        .validate(fixture("cronjob-create-v1beta1.json").as_bytes())
        .unwrap();
    let v = json(&answer);
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(v["response"]["uid"], "e911857d-c318-11e8-bbad-025000000001");
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        outcome.denied[0]
            .to_string()
            .contains("(container \"report\")")
    );
    let (answer, _) = h
        .mutate(fixture("cronjob-create-v1beta1.json").as_bytes())
        .unwrap();
    assert_eq!(json(&answer)["apiVersion"], "admission.k8s.io/v1beta1");
}

/// Applies the answer's patch to the review's object and returns the review with it.
fn apply(review: &str, answer: &[u8]) -> (String, Value) {
    let v = json(answer);
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let bytes = STANDARD
        .decode(v["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut review: Value = serde_json::from_str(review).unwrap();
    json_patch::patch(&mut review["request"]["object"], &patch).unwrap();
    let object = review["request"]["object"].clone();
    (review.to_string(), object)
}

#[test]
fn mutation_rewrites_configured_registries_and_is_idempotent() {
    let h = hooks(None, Some("Trow.Example.com:8443"));
    let review = fixture("deployment-create.json");
    let (answer, outcome) = h.mutate(review.as_bytes()).unwrap();
    assert!(outcome.allowed && outcome.dry_run);
    let (patched, object) = apply(&review, &answer);
    let spec = &object["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"][0]["image"],
        "trow.example.com:8443/f/docker.io/library/nginx:1.27"
    );
    // ghcr.io has no registry_proxies entry.
    assert_eq!(
        spec["containers"][1]["image"],
        "ghcr.io/example/envoy:v1.31.0@sha256:89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(
        spec["initContainers"][0]["image"],
        "trow.example.com:8443/f/registry.example.com_5000/team/migrate:1.4"
    );
    let got: Vec<_> = outcome
        .rewritten
        .iter()
        .map(|r| {
            (
                r.site.name.as_str(),
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("api", "docker.io", "library/nginx", "1.27"),
            (
                "migrate",
                "registry.example.com:5000",
                "team/migrate",
                "1.4"
            ),
        ]
    );
    assert_eq!(
        outcome.rewritten[0].cache_repository,
        "f/docker.io/library/nginx"
    );
    // Mutating the mutated object changes nothing.
    let (again, outcome) = h.mutate(patched.as_bytes()).unwrap();
    let v = json(&again);
    assert_eq!(v["response"]["allowed"], true);
    assert!(v["response"].get("patch").is_none() && v["response"].get("patchType").is_none());
    assert!(outcome.rewritten.is_empty());
    // And the rewritten images are judged as the images they cache.
    let strict = Webhooks::new(
        Some(policy(
            Decision::Deny,
            &[
                "docker.io/library/",
                "registry.example.com:5000/",
                "ghcr.io/",
            ],
            &[],
        )),
        MutationConfig::default(),
        &proxy(),
        Some(TROW.into()),
    )
    .unwrap();
    let (_, o) = strict.validate(patched.as_bytes()).unwrap();
    assert!(o.allowed, "{:?}", o.denied);
}

#[test]
fn mutation_of_pods_digests_ports_and_ignores() {
    let h = hooks(None, Some(TROW));
    let review = fixture("pod-create.json");
    let (answer, outcome) = h.mutate(review.as_bytes()).unwrap();
    let (_, object) = apply(&review, &answer);
    assert_eq!(
        object["spec"]["containers"][0]["image"],
        "trow.example.com:8443/f/docker.io/library/nginx:1.27"
    );
    assert_eq!(
        object["spec"]["containers"][1]["image"],
        "quay.io/prometheus/node-exporter:v1.8.0"
    );
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(
        object["spec"]["initContainers"][0]["image"],
        format!("trow.example.com:8443/f/registry.example.com_5000/team/init@{d}")
    );
    assert_eq!(outcome.rewritten[1].reference, d);
    // busybox is in docker.io's ignore_repos; the UPDATE's unchanged images stay too.
    let (answer, outcome) = h
        .mutate(fixture("pod-debug-update.json").as_bytes())
        .unwrap();
    assert!(json(&answer)["response"].get("patch").is_none());
    assert!(outcome.rewritten.is_empty());
    // A changed image in an UPDATE is rewritten.
    let (answer, outcome) = h.mutate(fixture("pod-update.json").as_bytes()).unwrap();
    assert_eq!(outcome.rewritten.len(), 1);
    let (_, object) = apply(&fixture("pod-update.json"), &answer);
    assert_eq!(
        object["spec"]["containers"][0]["image"],
        "trow.example.com:8443/f/docker.io/library/nginx:1.28"
    );
    // With the image_mutation.ignore list.
    let ignoring = Webhooks::new(
        None,
        MutationConfig {
            ignore: vec!["nginx".into()],
            ..MutationConfig::default()
        },
        &proxy(),
        Some(TROW.into()),
    )
    .unwrap();
    let (_, outcome) = ignoring.mutate(review.as_bytes()).unwrap();
    assert_eq!(outcome.rewritten.len(), 1);
    assert_eq!(outcome.rewritten[0].site.name, "init");
}

#[test]
fn no_hostname_no_rewrite() {
    let h = hooks(None, None);
    let (answer, outcome) = h.mutate(fixture("pod-create.json").as_bytes()).unwrap();
    let v = json(&answer);
    assert_eq!(v["response"]["allowed"], true);
    assert!(v["response"].get("patch").is_none());
    assert!(outcome.rewritten.is_empty());
    assert!(
        outcome.warnings[0].contains("--hostname"),
        "{:?}",
        outcome.warnings
    );
}

#[test]
fn hostnames_are_checked() {
    let make = |h: &str, enabled: bool| {
        let mutation = MutationConfig {
            enabled,
            ..MutationConfig::default()
        };
        Webhooks::new(None, mutation, &proxy(), Some(h.into()))
    };
    assert_eq!(
        make("TROW.example.com", true).unwrap().hostname(),
        Some("trow.example.com")
    );
    assert!(make("localhost:8000", true).is_ok());
    let e = make("https://trow.example.com", true).unwrap_err();
    assert!(e.to_string().starts_with("--hostname: "), "{e}");
    // A name runtimes would read as a Docker Hub namespace: nothing is rewritten, and the
    // operator is told at start-up.
    let plain = make("trow", true).unwrap();
    assert!(
        plain
            .startup_warnings()
            .iter()
            .any(|w| w.contains("Docker Hub namespace")),
        "{:?}",
        plain.startup_warnings()
    );
    let (_, outcome) = plain.mutate(fixture("pod-create.json").as_bytes()).unwrap();
    assert!(outcome.rewritten.is_empty());
    assert!(make("trow", false).unwrap().startup_warnings().len() == 1);
    // Configs built in code are validated too.
    let bad = policy(Decision::Deny, &["Quay.io/Team/"], &[]);
    let e = Webhooks::new(Some(bad), MutationConfig::default(), &proxy(), None).unwrap_err();
    assert!(
        e.to_string().starts_with("image_validation.allow[0]: "),
        "{e}"
    );
}

#[test]
fn bad_reviews_are_review_errors() {
    let h = hooks(Some(policy(Decision::Allow, &[], &[])), Some(TROW));
    let configmap =
        fixture("pod-create.json").replacen("\"kind\": \"Pod\" }", "\"kind\": \"ConfigMap\" }", 1);
    for (body, want) in [
        ("{\"kind\": ", "not valid JSON"),
        (
            "{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}",
            "no request",
        ),
        (configmap.as_str(), "kind ConfigMap has no pod spec"),
    ] {
        for result in [
            h.validate(body.as_bytes()).err(),
            h.mutate(body.as_bytes()).err(),
        ] {
            let e: ReviewError = result.unwrap();
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}

#[test]
fn webhooks_can_be_shared_between_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Webhooks>();
}

#[test]
fn images_the_policy_denies_are_neither_rewritten_nor_warmed() {
    // Pod create: containers nginx:1.27 (Docker Hub) and quay.io/...; init from
    // registry.example.com:5000 — configured for proxying in `proxy()` or not, the deny wins.
    let review = with_images(
        "pod-create.json",
        &[("/spec/containers/0/image", "redis:7")],
    );
    let denying = hooks(
        Some(policy(Decision::Allow, &[], &["docker.io/library/redis"])),
        Some(TROW),
    );
    let (_, outcome) = denying.mutate(review.as_bytes()).unwrap();
    assert!(
        outcome
            .rewritten
            .iter()
            .all(|r| !r.site.image.contains("redis")),
        "{:?}",
        outcome.rewritten
    );
    assert!(
        outcome.warm.iter().all(|t| !t.repository.contains("redis")),
        "{:?}",
        outcome.warm
    );
    // Without the deny the same image is rewritten and warmed.
    let (_, outcome) = hooks(None, Some(TROW)).mutate(review.as_bytes()).unwrap();
    assert!(outcome.rewritten.iter().any(|r| r.site.image == "redis:7"));
    assert!(outcome.warm.iter().any(|t| t.repository == "library/redis"));
}

/// `pod-update.json` (nginx:1.27 → nginx:1.28, the quay.io sidecar unchanged) with `edit`
/// applied to its object and old object.
fn update(edit: impl Fn(&mut Value, &mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&fixture("pod-update.json")).unwrap();
    let mut object = v["request"]["object"].take();
    let mut old = v["request"]["oldObject"].take();
    edit(&mut object, &mut old);
    v["request"]["object"] = object;
    v["request"]["oldObject"] = old;
    v.to_string()
}

#[test]
fn an_update_judges_only_the_images_it_changed() {
    // The policy changed since the pod was admitted: both its images are denied now.
    let h = hooks(
        Some(policy(
            Decision::Deny,
            &["docker.io/library/"],
            &["quay.io/", "nginx"],
        )),
        Some(TROW),
    );
    // Removing a finalizer: no image changed, nothing is judged, the update goes through.
    let unchanged = update(|new, old| {
        new["spec"] = old["spec"].clone();
        old["metadata"]["finalizers"] = serde_json::json!(["example.com/cleanup"]);
    });
    let (answer, outcome) = h.validate(unchanged.as_bytes()).unwrap();
    assert!(outcome.allowed, "{:?}", outcome.denied);
    assert_eq!(json(&answer)["response"]["allowed"], true);
    // nginx:1.27 → nginx:1.28 is judged (and denied); the unchanged sidecar is not.
    let (answer, outcome) = h.validate(update(|_, _| {}).as_bytes()).unwrap();
    assert!(!outcome.allowed);
    let message = json(&answer)["response"]["status"]["message"].clone();
    assert_eq!(
        message,
        "image \"nginx:1.28\" (container \"app\") denied by prefix \"docker.io/library/nginx\""
    );
    // An image moved to another container is a change there.
    let swapped = update(|new, _| {
        new["spec"]["containers"][0]["image"] = "quay.io/prometheus/node-exporter:v1.8.0".into();
        new["spec"]["containers"][1]["image"] = "nginx:1.27".into();
    });
    let (_, outcome) = h.validate(swapped.as_bytes()).unwrap();
    let denied: Vec<_> = outcome
        .denied
        .iter()
        .map(|d| d.site.name.as_str())
        .collect();
    assert_eq!(denied, ["app", "side"]);
    // An old object that cannot be read: every image is judged.
    let unreadable = update(|new, old| {
        new["spec"] = old["spec"].clone();
        *old = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {},
            "spec": {"containers": "broken"}});
    });
    let (_, outcome) = h.validate(unreadable.as_bytes()).unwrap();
    assert_eq!(outcome.denied.len(), 2);
    // The mutating webhook agrees: nothing unchanged is rewritten, the changed denied image
    // is not rewritten either.
    let (answer, outcome) = h.mutate(unchanged.as_bytes()).unwrap();
    assert!(json(&answer)["response"].get("patch").is_none());
    assert!(outcome.rewritten.is_empty() && outcome.warm.is_empty());
}

#[test]
fn image_volumes_are_judged_rewritten_and_warmed() {
    let with_volumes = |models: &str, tools: &str| {
        let mut v: Value = serde_json::from_str(&fixture("deployment-create.json")).unwrap();
        let spec = v.pointer_mut("/request/object/spec/template/spec").unwrap();
        spec["volumes"] = serde_json::json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "models", "image": {"reference": models, "pullPolicy": "IfNotPresent"}},
            {"name": "unset", "image": {"pullPolicy": "Always"}},
            {"name": "tools", "image": {"reference": tools}},
        ]);
        v["request"]["dryRun"] = false.into();
        v.to_string()
    };
    let h = hooks(
        Some(policy(Decision::Allow, &[], &["docker.io/library/evil"])),
        Some(TROW),
    );
    let review = with_volumes("evil:1", "registry.example.com:5000/ml/tools:2");
    let (answer, outcome) = h.validate(review.as_bytes()).unwrap();
    assert!(!outcome.allowed);
    assert_eq!(
        json(&answer)["response"]["status"]["message"],
        "image \"evil:1\" (volume \"models\") denied by prefix \"docker.io/library/evil\""
    );
    let review = with_volumes("models/llama:3", "registry.example.com:5000/ml/tools:2");
    let (answer, outcome) = h.validate(review.as_bytes()).unwrap();
    assert!(outcome.allowed, "{}", String::from_utf8_lossy(&answer));
    let (answer, outcome) = h.mutate(review.as_bytes()).unwrap();
    let (_, object) = apply(&review, &answer);
    let volumes = &object["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes[1]["image"],
        serde_json::json!({"reference": "trow.example.com:8443/f/docker.io/models/llama:3",
            "pullPolicy": "IfNotPresent"})
    );
    assert_eq!(
        volumes[2]["image"],
        serde_json::json!({"pullPolicy": "Always"})
    );
    assert_eq!(
        volumes[3]["image"]["reference"],
        "trow.example.com:8443/f/registry.example.com_5000/ml/tools:2"
    );
    let pointers: Vec<_> = outcome
        .rewritten
        .iter()
        .filter(|r| r.site.place == trow_admission::Place::ImageVolume)
        .map(|r| r.site.pointer.as_str())
        .collect();
    assert_eq!(
        pointers,
        [
            "/spec/template/spec/volumes/1/image/reference",
            "/spec/template/spec/volumes/3/image/reference"
        ]
    );
    let warm: Vec<_> = outcome.warm.iter().map(|t| t.to_string()).collect();
    for image in [
        "docker.io/models/llama:3",
        "registry.example.com:5000/ml/tools:2",
    ] {
        assert!(
            warm.contains(&image.to_string()),
            "{image} not warmed: {warm:?}"
        );
    }
    // Mutated again, nothing changes.
    let (again, _) = h.mutate(apply(&review, &answer).0.as_bytes()).unwrap();
    assert!(json(&again)["response"].get("patch").is_none());
}

#[test]
fn a_rewrite_too_long_for_runtimes_is_left_as_written() {
    let h = hooks(None, Some(TROW));
    // `trow.example.com:8443/f/docker.io/library/` is 42 characters: 213 more make 255.
    let image = |n: usize| format!("{}:1", "a".repeat(n));
    for (n, rewritten) in [(213, true), (214, false)] {
        let review = with_images(
            "pod-create.json",
            &[("/spec/containers/0/image", &image(n))],
        );
        let (_, outcome) = h.mutate(review.as_bytes()).unwrap();
        let hit = outcome.rewritten.iter().find(|r| r.site.name == "app");
        assert_eq!(hit.is_some(), rewritten, "{n}: {:?}", outcome.rewritten);
        if let Some(r) = hit {
            assert_eq!(r.to.len(), 255 + ":1".len());
        }
        let warmed = outcome
            .warm
            .iter()
            .any(|t| t.repository.starts_with("library/aaa"));
        assert_eq!(warmed, rewritten, "{n}");
    }
}
