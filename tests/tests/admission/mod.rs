//! What the admission tests share: a Trow started with a config file and `--hostname`,
//! AdmissionReviews built as the API server sends them, posting them to the gateway, and
//! reading the answers (verdict, message, JSON patch).
//!
//! No test may make Trow look up or contact a public registry (the tests run in a loopback-only
//! network namespace). Validation and mutation only read names; pre-warming fetches. So
//! [`Webhooks::start`] refuses a config under which pre-warm could reach anything but loopback:
//! a test names public registries with `prewarm: false`, or warms from a loopback upstream
//! with `configured_only: true`.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};
use trow_tests::clients::LogsOnPanic;
use trow_tests::oci::{Resp, client, send, unique};
use trow_tests::{Flags, Topology, Trow};

/// The name the kubelet reaches Trow by, in every test.
pub const HOSTNAME: &str = "trow.example.com";

/// A digest, for image references that pin one.
pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A Trow with its admission service, its logs printed if the test fails.
pub struct Webhooks {
    // Declared first: dropped (and printed) before the Trow and its log dir go.
    _logs: LogsOnPanic,
    pub trow: Trow,
}

impl Webhooks {
    /// Writes `yaml` to `dir/config.yml` and starts Trow with it and `--hostname`. Panics
    /// when the config would let pre-warm reach past loopback (see the module doc).
    pub fn start(topology: Topology, yaml: &str, dir: &Path) -> Webhooks {
        if let Err(why) = prewarm_stays_on_loopback(yaml) {
            panic!("{why}; the config:\n{yaml}");
        }
        let path = dir.join("config.yml");
        std::fs::write(&path, yaml).expect("write the config file");
        let trow = Trow::start_with(
            topology,
            Flags::config(&path).with_admission(&["--hostname", HOSTNAME]),
        );
        let mut logs = LogsOnPanic::trow(&trow);
        logs.0
            .extend(trow.admission.as_ref().map(|p| p.log.clone()));
        Webhooks { _logs: logs, trow }
    }

    /// POSTs `body` to `/<hook>` (`validate-image` or `mutate-image`).
    pub async fn post(&self, hook: &str, body: impl Into<Vec<u8>>) -> Resp {
        let url = format!("{}/{hook}", self.trow.url);
        send(
            client()
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.into()),
        )
        .await
    }

    /// Sends `review` to `/<hook>`; the answer must be a 200 AdmissionReview in the request's
    /// version with its uid. Returns the answer's `response`.
    pub async fn send(&self, hook: &str, review: &Value) -> Value {
        let r = self.post(hook, serde_json::to_vec(review).unwrap()).await;
        r.assert_status(200);
        assert_eq!(r.content_type().as_deref(), Some("application/json"), "{r}");
        let answer = r.json();
        assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
        assert_eq!(answer["apiVersion"], review["apiVersion"], "{answer}");
        assert_eq!(
            answer["response"]["uid"], review["request"]["uid"],
            "the answer must carry the request's uid: {answer}"
        );
        answer["response"].clone()
    }

    /// The admission service's log: the one process's, or `trow admission`'s.
    pub fn admission_log(&self) -> String {
        self.trow
            .admission
            .as_ref()
            .unwrap_or(&self.trow.main)
            .log_text()
    }
}

/// Whether pre-warm under `yaml` can only ever fetch from loopback: off (or mutation off), or
/// `registry_proxies.configured_only` with every upstream a loopback address. Without
/// `configured_only` the proxy warms any registry an image names (`<trow>/f/quay.io/...`).
pub fn prewarm_stays_on_loopback(yaml: &str) -> Result<(), String> {
    let config: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| format!("the config is not YAML: {e}"))?;
    let flag =
        |section: &str, key: &str, default: bool| config[section][key].as_bool().unwrap_or(default);
    if !flag("image_mutation", "enabled", true) || !flag("image_mutation", "prewarm", true) {
        return Ok(());
    }
    if !flag("registry_proxies", "configured_only", false) {
        return Err(
            "pre-warm is on without registry_proxies.configured_only: an image naming \
                    any registry would be fetched from it (set image_mutation.prewarm: false)"
                .to_string(),
        );
    }
    let hosts = config["registry_proxies"]["registries"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    for h in hosts {
        let host = h["host"].as_str().unwrap_or_default();
        if !is_loopback(host) {
            return Err(format!(
                "pre-warm is on and the upstream {host:?} is not a loopback address: Trow \
                 would look it up and fetch from it (set image_mutation.prewarm: false)"
            ));
        }
    }
    Ok(())
}

/// `127.x.x.x` or `[::1]`, with or without a port (a name, even `localhost`, is looked up).
fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// What a review is about: group, version, kind and resource.
pub struct Kind(
    pub &'static str,
    pub &'static str,
    pub &'static str,
    pub &'static str,
);

pub const POD: Kind = Kind("", "v1", "Pod", "pods");
pub const DEPLOYMENT: Kind = Kind("apps", "v1", "Deployment", "deployments");
pub const CRONJOB: Kind = Kind("batch", "v1", "CronJob", "cronjobs");
pub const CONFIGMAP: Kind = Kind("", "v1", "ConfigMap", "configmaps");

/// Every kind the webhooks read a pod spec from, with where that spec is.
pub const POD_KINDS: [(Kind, &str); 9] = [
    (POD, "/spec"),
    (DEPLOYMENT, "/spec/template/spec"),
    (
        Kind("apps", "v1", "StatefulSet", "statefulsets"),
        "/spec/template/spec",
    ),
    (
        Kind("apps", "v1", "DaemonSet", "daemonsets"),
        "/spec/template/spec",
    ),
    (
        Kind("apps", "v1", "ReplicaSet", "replicasets"),
        "/spec/template/spec",
    ),
    (Kind("batch", "v1", "Job", "jobs"), "/spec/template/spec"),
    (
        Kind("", "v1", "ReplicationController", "replicationcontrollers"),
        "/spec/template/spec",
    ),
    (CRONJOB, "/spec/jobTemplate/spec/template/spec"),
    (
        Kind("", "v1", "PodTemplate", "podtemplates"),
        "/template/spec",
    ),
];

/// An object of `kind` whose pod spec (at `base`, from [`POD_KINDS`]) is `spec`, with the
/// fields its API type requires.
pub fn object_of(kind: &Kind, base: &str, spec: Value) -> Value {
    let Kind(group, version, name, _) = kind;
    let api_version = match *group {
        "" => version.to_string(),
        g => format!("{g}/{version}"),
    };
    let mut object = json!({"kind": name, "apiVersion": api_version, "metadata": metadata()});
    let mut at = &mut object;
    for key in base.trim_start_matches('/').split('/') {
        at = &mut at[key];
    }
    *at = spec;
    match *name {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
            object["spec"]["selector"] = json!({"matchLabels": {"app": "web"}})
        }
        "CronJob" => object["spec"]["schedule"] = "0 2 * * *".into(),
        _ => {}
    }
    object
}

/// An AdmissionReview as the API server sends it, with a fresh uid.
pub fn review(
    api_version: &str,
    kind: &Kind,
    operation: &str,
    object: Value,
    old_object: Option<Value>,
    dry_run: bool,
) -> Value {
    let Kind(group, version, kind, resource) = kind;
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let options = if operation == "UPDATE" {
        "UpdateOptions"
    } else {
        "CreateOptions"
    };
    json!({
        "kind": "AdmissionReview",
        "apiVersion": api_version,
        "request": {
            "uid": format!("{}-{}", kind.to_lowercase(), unique()),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": "web",
            "namespace": "team",
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old_object,
            "dryRun": dry_run,
            "options": {"kind": options, "apiVersion": "meta.k8s.io/v1"},
        }
    })
}

/// A v1 Pod CREATE review of a pod with `spec`.
pub fn pod_create(spec: Value, dry_run: bool) -> Value {
    review(
        "admission.k8s.io/v1",
        &POD,
        "CREATE",
        pod(spec),
        None,
        dry_run,
    )
}

/// A pod spec: `(container name, image)` for containers, init and ephemeral containers.
pub fn spec(
    containers: &[(&str, &str)],
    init: &[(&str, &str)],
    ephemeral: &[(&str, &str)],
) -> Value {
    let list = |l: &[(&str, &str)]| -> Value {
        l.iter()
            .map(|(name, image)| {
                json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                       "terminationMessagePath": "/dev/termination-log"})
            })
            .collect()
    };
    let mut s = json!({
        "containers": list(containers),
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
    });
    if !init.is_empty() {
        s["initContainers"] = list(init);
    }
    if !ephemeral.is_empty() {
        s["ephemeralContainers"] = list(ephemeral);
    }
    s
}

fn metadata() -> Value {
    json!({"name": "web", "namespace": "team", "labels": {"app": "web"}})
}

pub fn pod(spec: Value) -> Value {
    json!({"kind": "Pod", "apiVersion": "v1", "metadata": metadata(), "spec": spec,
           "status": {"phase": "Pending"}})
}

pub fn deployment(spec: Value) -> Value {
    json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": metadata(), "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec},
    }})
}

pub fn cronjob(spec: Value) -> Value {
    json!({"kind": "CronJob", "apiVersion": "batch/v1", "metadata": metadata(), "spec": {
        "schedule": "0 2 * * *",
        "jobTemplate": {"spec": {"template": {"spec": spec}}},
    }})
}

/// The images at `pointer` (a pod spec in `object`), in the order containers, init containers,
/// ephemeral containers.
pub fn images_at(object: &Value, pointer: &str) -> Vec<String> {
    let spec = object
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {object}"));
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| spec[l].as_array().cloned().unwrap_or_default())
        .map(|c| c["image"].as_str().expect("an image").to_string())
        .collect()
}

/// The answer's status message (empty when there is none).
pub fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The JSON patch of a mutating answer (`None` without one), checked to be a base64 JSONPatch.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let b64 = response
        .get("patch")?
        .as_str()
        .expect("the patch is a string");
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("the patch is not base64 ({e}): {response}"));
    Some(
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("the patch is not a JSON patch ({e}): {bytes:?}")),
    )
}

/// `object` with `patch` applied.
pub fn patched(object: &Value, patch: &json_patch::Patch) -> Value {
    let mut o = object.clone();
    json_patch::patch(&mut o, patch).unwrap_or_else(|e| panic!("apply {patch:?}: {e}"));
    o
}

/// A 400 answer with a Kubernetes `Status` saying BadRequest and why (`says`).
pub fn assert_bad_request(r: &Resp, says: &str) {
    r.assert_status(400);
    let s = r.json();
    assert_eq!(s["kind"], "Status", "{r}");
    assert_eq!(s["reason"], "BadRequest", "{r}");
    assert_eq!(s["code"], 400, "{r}");
    let m = s["message"].as_str().unwrap_or_default();
    assert!(
        m.contains(says),
        "{}: the message must say {says:?}: {r}",
        r.what
    );
}

/// The one-process `trow` on free ports with `data` as its data dir, flags to add.
pub fn trow_command(data: &Path) -> Command {
    let mut cmd = Command::new(trow_tests::trow_bin());
    cmd.args([
        "--bind",
        "127.0.0.1:0",
        "--storage-listen",
        "127.0.0.1:0",
        "--proxy-listen",
        "127.0.0.1:0",
        "--admission-listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data);
    cmd
}
