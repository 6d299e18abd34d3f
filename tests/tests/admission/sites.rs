//! Which images count, through the real gateway: image volumes (`volumes[].image.reference`)
//! in every kind's pod spec, judged and rewritten like containers' images.

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
