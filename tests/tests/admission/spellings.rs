//! Issue 25, finding 3 at the webhook: a registry written with its default port
//! (`quay.io:443`, `registry-1.docker.io:443`) is the registry itself, so a deny cannot be
//! bypassed by spelling it that way. Validation only: nothing here resolves a public name.

use trow_tests::Topology;

use crate::support::{Webhooks, message, pod_create, spec};

const CONFIG: &str = r#"image_validation:
  default: Allow
  deny: ["quay.io/evil/", "docker.io/library/busybox"]
image_mutation:
  prewarm: false
"#;

/// Every spelling of a denied image is denied, by the prefix that names it; other ports and
/// other repositories are not.
pub async fn default_ports_are_the_registry(topology: Topology) {
    let tmp = tempfile::tempdir().unwrap();
    let w = Webhooks::start(topology, CONFIG, tmp.path());
    let cases: &[(&str, Option<&str>)] = &[
        ("quay.io/evil/x", Some("quay.io/evil/")),
        ("quay.io:443/evil/x", Some("quay.io/evil/")),
        ("QUAY.IO:443/evil/x:1", Some("quay.io/evil/")),
        ("quay.io:80/evil/x", Some("quay.io/evil/")),
        (
            "docker.io/library/busybox",
            Some("docker.io/library/busybox"),
        ),
        (
            "docker.io:443/library/busybox",
            Some("docker.io/library/busybox"),
        ),
        (
            "registry-1.docker.io:443/library/busybox",
            Some("docker.io/library/busybox"),
        ),
        (
            "index.docker.io:443/busybox:1.36",
            Some("docker.io/library/busybox"),
        ),
        ("quay.io:8443/evil/x", None),
        ("quay.io:443/good/x", None),
        ("docker.io:443/library/nginx", None),
    ];
    let mut wrong = Vec::new();
    for (image, denied_by) in cases {
        let v = w
            .send(
                "validate-image",
                &pod_create(spec(&[("c", image)], &[], &[]), false),
            )
            .await;
        let allowed = v["allowed"].as_bool().expect("allowed is a bool");
        let m = message(&v);
        let right = match denied_by {
            Some(p) => {
                !allowed
                    && v["status"]["code"] == 403
                    && m.contains(&format!("denied by prefix \"{p}\""))
                    && m.contains(&format!("image {image:?}"))
            }
            None => allowed,
        };
        if !right {
            wrong.push(format!(
                "{image}: expected denied by {denied_by:?}, got {v}"
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}
