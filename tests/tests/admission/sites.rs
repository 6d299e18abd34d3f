//! Which images count, through the real gateway: image volumes (`volumes[].image.reference`)
//! in every kind's pod spec, judged and rewritten like containers' images; an UPDATE judges
//! only the images it changed; an image whose rewritten name runtimes would refuse (longer than
//! 255 characters) is left as written, and the log says so.

use serde_json::{Value, json};
use trow_tests::Topology;

use crate::support::{
    DEPLOYMENT, HOSTNAME, POD, POD_KINDS, Webhooks, message, object_of, patch_of, patched, pod,
    review, spec,
};
use crate::webhooks::CONFIG;

const V1: &str = "admission.k8s.io/v1";

fn hub(repo_and_tag: &str) -> String {
    format!("{HOSTNAME}/f/docker.io/library/{repo_and_tag}")
}

/// `spec` with volumes: an emptyDir, the image volume `models` of `reference`, and an image
/// volume without a reference (a template may leave it to be set later).
fn with_volumes(mut spec: Value, reference: &str) -> Value {
    spec["volumes"] = json!([
        {"name": "scratch", "emptyDir": {}},
        {"name": "models", "image": {"reference": reference, "pullPolicy": "IfNotPresent"}},
        {"name": "unset", "image": {"pullPolicy": "Always"}},
    ]);
    spec
}

/// Image volumes of every pod-carrying kind: a denied one refuses the object, naming the
/// volume; an allowed one is rewritten at `<pod spec>/volumes/<i>/image/reference`.
pub async fn image_volumes(topology: Topology) {
    let tmp = tempfile::tempdir().unwrap();
    let w = Webhooks::start(topology, CONFIG, tmp.path());
    let containers = spec(&[("app", "nginx:1.27")], &[], &[]);
    for (kind, base) in &POD_KINDS {
        let name = kind.2;
        let denied = object_of(kind, base, with_volumes(containers.clone(), "evil:1"));
        let r = review(V1, kind, "CREATE", denied, None, false);
        let v = w.send("validate-image", &r).await;
        assert_eq!(v["allowed"], false, "{name}: {v}");
        assert_eq!(
            message(&v),
            "image \"evil:1\" (volume \"models\") denied by prefix \"docker.io/library/evil\"",
            "{name}"
        );
        let r = w.send("mutate-image", &r).await;
        let untouched = patch_of(&r).expect("the container is rewritten");
        assert!(
            untouched
                .0
                .iter()
                .all(|op| !format!("{op:?}").contains("volumes")),
            "{name}: a denied volume image is not rewritten: {untouched:?}"
        );

        let allowed = object_of(kind, base, with_volumes(containers.clone(), "busybox:1.36"));
        let r = review(V1, kind, "CREATE", allowed, None, false);
        let v = w.send("validate-image", &r).await;
        assert_eq!(v["allowed"], true, "{name}: {v}");
        let m = w.send("mutate-image", &r).await;
        let patch = patch_of(&m).unwrap_or_else(|| panic!("{name}: no patch: {m}"));
        let after = patched(&r["request"]["object"], &patch);
        let pod_spec = after.pointer(base).unwrap();
        assert_eq!(
            pod_spec["volumes"],
            json!([
                {"name": "scratch", "emptyDir": {}},
                {"name": "models", "image": {"reference": hub("busybox:1.36"),
                                             "pullPolicy": "IfNotPresent"}},
                {"name": "unset", "image": {"pullPolicy": "Always"}},
            ]),
            "{name}"
        );
        assert_eq!(pod_spec["containers"][0]["image"], hub("nginx:1.27"));
        let paths: Vec<String> = patch.0.iter().map(|op| op.path().to_string()).collect();
        assert!(
            paths.contains(&format!("{base}/volumes/1/image/reference")),
            "{name}: {paths:?}"
        );
        // Mutated again, the patched object is left alone.
        let again = review(V1, kind, "CREATE", after, None, false);
        let m = w.send("mutate-image", &again).await;
        assert!(m.get("patch").is_none(), "{name}: mutated twice: {m}");
        let v = w.send("validate-image", &again).await;
        assert_eq!(v["allowed"], true, "{name}: the rewritten object: {v}");
    }
}

/// `object` with metadata.finalizers set to `finalizers`.
fn finalized(mut object: Value, finalizers: &[&str]) -> Value {
    object["metadata"]["finalizers"] = json!(finalizers);
    object
}

/// An UPDATE judges the images it changed, not those the object already had: a policy
/// changed since a pod was admitted must not keep its finalizer from being removed.
pub async fn updates_judge_only_changed_images(topology: Topology) {
    let tmp = tempfile::tempdir().unwrap();
    let w = Webhooks::start(topology, CONFIG, tmp.path());
    // A pod admitted before `evil` was denied: a container and an image volume.
    let running = with_volumes(spec(&[("app", "evil:1")], &[], &[]), "evil:2");
    let old = finalized(pod(running.clone()), &["example.com/cleanup"]);
    let new = pod(running.clone());
    let u = review(V1, &POD, "UPDATE", new, Some(old.clone()), false);
    let v = w.send("validate-image", &u).await;
    assert_eq!(v["allowed"], true, "removing a finalizer was refused: {v}");
    let m = w.send("mutate-image", &u).await;
    assert!(m.get("patch").is_none(), "nothing changed: {m}");

    // A changed container image is judged; the unchanged volume is not.
    let mut changed = running.clone();
    changed["containers"][0]["image"] = "evil:3".into();
    let u = review(V1, &POD, "UPDATE", pod(changed), Some(old.clone()), false);
    let v = w.send("validate-image", &u).await;
    assert_eq!(v["allowed"], false, "{v}");
    assert_eq!(
        message(&v),
        "image \"evil:3\" (container \"app\") denied by prefix \"docker.io/library/evil\""
    );

    // `kubectl debug`: a new ephemeral container is judged, even with an image the pod
    // already runs elsewhere.
    let mut debug = running.clone();
    debug["ephemeralContainers"] = json!([{"name": "debugger", "image": "evil:1"}]);
    let u = review(V1, &POD, "UPDATE", pod(debug), Some(old), false);
    let v = w.send("validate-image", &u).await;
    assert_eq!(
        message(&v),
        "image \"evil:1\" (container \"debugger\") denied by prefix \"docker.io/library/evil\""
    );

    // A Deployment whose template swaps its denied volume image for an allowed one: the
    // unchanged (denied) container is neither judged nor rewritten, the new volume image is
    // rewritten.
    let base = "/spec/template/spec";
    let before = object_of(&DEPLOYMENT, base, running);
    let mut after = before.clone();
    after["spec"]["template"]["spec"]["volumes"][1]["image"]["reference"] = "busybox:1.36".into();
    let u = review(V1, &DEPLOYMENT, "UPDATE", after, Some(before), false);
    let v = w.send("validate-image", &u).await;
    assert_eq!(v["allowed"], true, "{v}");
    let m = w.send("mutate-image", &u).await;
    let patch = patch_of(&m).unwrap_or_else(|| panic!("no patch: {m}"));
    let paths: Vec<String> = patch.0.iter().map(|op| op.path().to_string()).collect();
    assert_eq!(paths, [format!("{base}/volumes/1/image/reference")]);
    let done = patched(&u["request"]["object"], &patch);
    assert_eq!(
        done.pointer(&format!("{base}/volumes/1/image/reference")),
        Some(&Value::from(hub("busybox:1.36")))
    );
}

/// `<trow>/f/docker.io/library/` is 37 characters with `trow.example.com`: a repository name
/// of 218 characters makes a rewritten name of 255, the most runtimes accept; 219 is left as
/// written, and the log says why.
pub async fn too_long_to_rewrite(topology: Topology) {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Webhooks::start(topology, CONFIG, tmp.path());
    let fits = format!("{}:1", "a".repeat(218));
    let over = format!("{}:1", "b".repeat(219));
    let s = with_volumes(spec(&[("fits", &fits), ("over", &over)], &[], &[]), &over);
    let r = review(V1, &POD, "CREATE", pod(s), None, false);
    let v = w.send("validate-image", &r).await;
    assert_eq!(v["allowed"], true, "{v}");
    let m = w.send("mutate-image", &r).await;
    let patch = patch_of(&m).unwrap_or_else(|| panic!("no patch: {m}"));
    let after = patched(&r["request"]["object"], &patch);
    let rewritten = after["spec"]["containers"][0]["image"].as_str().unwrap();
    assert_eq!(rewritten, hub(&fits));
    let name = rewritten.strip_suffix(":1").unwrap();
    assert_eq!(name.len(), 255, "{name}");
    assert_eq!(after["spec"]["containers"][1]["image"], over.as_str());
    assert_eq!(
        after["spec"]["volumes"][1]["image"]["reference"],
        over.as_str()
    );
    assert_eq!(patch.0.len(), 1, "{patch:?}");
    let proc_ = w.trow.admission.as_mut().unwrap_or(&mut w.trow.main);
    let line = trow_tests::wait_for_line(proc_, "would be 256 characters long");
    assert!(line.contains("255"), "{line}");
}
