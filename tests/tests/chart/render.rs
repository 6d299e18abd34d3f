//! Rendering and checking the chart with the real tools: `helm` (lint, template) and
//! `kubernetes-validate` (the Kubernetes API's JSON schemas, offline), installed pinned by
//! `scripts/k8s-tools.sh`. A missing tool fails the test with the command that installs it: the
//! chart tests never pass by not running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml::Value;

/// What to do when a tool is missing; scripts/test.sh does it before running the tests.
pub const INSTALL_HINT: &str = "run `eval \"$(scripts/k8s-tools.sh --env)\"` (it installs the \
     pinned helm, kubectl and kubernetes-validate into a cache dir and puts them on PATH); \
     scripts/test.sh does this itself";

/// The Kubernetes versions whose API schemas every rendering must satisfy: the kubectl the tools
/// bring, and the kube-apiserver scripts/kube-e2e.sh runs.
pub const KUBE_VERSIONS: [&str; 2] = ["1.35.0", "1.37.0"];

/// Kinds without a schema in kubernetes-validate that the chart may render: cert-manager's CRDs,
/// and nothing else. Any other kind without a schema fails the validation.
pub const SCHEMALESS: [(&str, &str); 2] = [
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
];

/// The tool `name` found on PATH; panics with [`INSTALL_HINT`].
pub fn k8s_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH: {INSTALL_HINT}"))
}

/// deploy/helm/trow in this checkout.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/trow")
}

/// A values file of tests/tests/chart/.
pub fn values_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/chart/{name}.yaml"))
}

/// The value sets: each names a values file in tests/tests/chart/ ("default": none).
pub const VALUE_SETS: [&str; 14] = [
    "default",
    "webhooks-off",
    "single",
    "hpa-off",
    "webhooks-patch",
    "webhooks-certmanager",
    "webhooks-existing-secret",
    "single-webhooks",
    "mtls-certmanager",
    "mtls-existing-secret",
    "node-setup",
    "auth",
    "single-auth-mtls",
    "ipv6-gitops",
];

/// `--values FILE` for a value set (none for "default").
pub fn values_args(set: &str) -> Vec<String> {
    if set == "default" {
        return Vec::new();
    }
    let f = values_file(set);
    assert!(f.is_file(), "{} missing", f.display());
    vec!["--values".into(), f.display().to_string()]
}

fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    // helm keeps caches and plugins under HOME: a private one, so the machine's settings never
    // leak into a test, and nothing is written to the user's home.
    let home = tempfile::tempdir().expect("tempdir");
    cmd.env("HOME", home.path())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"));
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `helm lint --strict` of the chart with `args`; the combined output, and whether it passed.
pub fn lint(args: &[String]) -> (bool, String) {
    let mut c = Command::new(k8s_tool("helm"));
    c.arg("lint").arg("--strict").arg(chart_dir()).args(args);
    let out = run(c);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

/// `helm template RELEASE chart --namespace NS args...`: the YAML text, or helm's error.
pub fn try_template(release: &str, ns: &str, args: &[String]) -> Result<String, String> {
    let mut c = Command::new(k8s_tool("helm"));
    c.arg("template")
        .arg(release)
        .arg(chart_dir())
        .args(["--namespace", ns])
        .args(args);
    let out = run(c);
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stdout) + &text(&out.stderr))
    }
}

/// The install notes (NOTES.txt) helm prints for `args`: `helm install --dry-run=client`, which
/// renders them as an install would without a cluster (`helm template` leaves them out).
pub fn notes(args: &[&str]) -> String {
    let mut c = Command::new(k8s_tool("helm"));
    c.args(["install", "trow"])
        .arg(chart_dir())
        .args(["--namespace", "trow", "--dry-run=client"])
        .args(args);
    let out = run(c);
    let all = text(&out.stdout);
    assert!(out.status.success(), "{all}{}", text(&out.stderr));
    all.split_once("NOTES:")
        .unwrap_or_else(|| panic!("no NOTES in {all}"))
        .1
        .to_string()
}

/// The rendered objects of `helm template` (empty documents dropped).
pub fn parse(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(yaml) {
        let v = <Value as serde::Deserialize>::deserialize(d).expect("helm's output is YAML");
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

/// A rendered value set: its text and its objects.
pub struct Rendered {
    pub set: String,
    pub yaml: String,
    pub objects: Vec<Value>,
}

/// Renders value set `set` as release `release` in namespace `ns`; panics with helm's error.
pub fn render_as(set: &str, release: &str, ns: &str, extra: &[&str]) -> Rendered {
    let mut args = values_args(set);
    args.extend(extra.iter().map(|s| s.to_string()));
    let yaml = try_template(release, ns, &args)
        .unwrap_or_else(|e| panic!("helm template of value set {set}: {e}"));
    Rendered {
        set: set.to_string(),
        objects: parse(&yaml),
        yaml,
    }
}

/// Renders value set `set` as release "trow" in namespace "trow".
pub fn render(set: &str) -> Rendered {
    render_as(set, "trow", "trow", &[])
}

/// Validates every object against the API schemas of each of [`KUBE_VERSIONS`] with
/// `kubernetes-validate --strict` (unknown fields are errors); the [`SCHEMALESS`] kinds are left
/// out first, any other kind without a schema fails. Returns the number of objects validated.
pub fn validate(r: &Rendered) -> usize {
    // helm's own text is what is validated (re-serializing would change how scalars such as
    // "on" are quoted, and a YAML 1.1 reader would see a boolean); the documents of the
    // schemaless kinds are dropped from it.
    let mut kept = 0;
    let mut body = String::new();
    for doc in r.yaml.split("\n---\n") {
        let Some(o) = parse(doc).into_iter().next() else {
            continue;
        };
        if SCHEMALESS
            .iter()
            .any(|(api, kind)| o["apiVersion"] == *api && o["kind"] == *kind)
        {
            continue;
        }
        kept += 1;
        body.push_str("---\n");
        body.push_str(doc.trim_start_matches("---\n"));
        body.push('\n');
    }
    assert_eq!(
        kept + r
            .objects
            .iter()
            .filter(|o| SCHEMALESS
                .iter()
                .any(|(a, k)| o["apiVersion"] == *a && o["kind"] == *k))
            .count(),
        r.objects.len(),
        "value set {}: splitting helm's output lost documents",
        r.set
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{}.yaml", r.set));
    std::fs::write(&file, body).expect("write the rendering");
    for version in KUBE_VERSIONS {
        let mut c = Command::new(k8s_tool("kubernetes-validate"));
        c.args(["--strict", "--kubernetes-version", version])
            .arg(&file);
        let out = run(c);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(
            out.status.success() && !all.contains("ERROR"),
            "value set {}: kubernetes-validate --strict -k {version} failed:\n{all}",
            r.set
        );
        assert!(
            !all.contains("Couldn't find schema"),
            "value set {}: a kind without a schema (only cert-manager's are expected):\n{all}",
            r.set
        );
        let passed = all.matches(" passed for resource ").count();
        assert_eq!(
            passed, kept,
            "value set {}: {kept} objects, {passed} validated against {version}:\n{all}",
            r.set
        );
    }
    kept
}

impl Rendered {
    /// The objects of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == *kind).collect()
    }

    /// The object `kind`/`name`, if rendered.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == *kind && o["metadata"]["name"] == *name)
    }

    /// The object `kind`/`name`; panics with the list of what was rendered.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name).unwrap_or_else(|| {
            panic!(
                "value set {}: no {kind} {name}; rendered: {:?}",
                self.set,
                self.names()
            )
        })
    }

    /// "Kind/name" of every object, in order.
    pub fn names(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    /// Every workload (Deployment, StatefulSet, DaemonSet, Job) with its pod spec.
    pub fn workloads(&self) -> Vec<(&Value, &Value)> {
        self.objects
            .iter()
            .filter(|o| {
                matches!(
                    o["kind"].as_str(),
                    Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job")
                )
            })
            .map(|o| (o, &o["spec"]["template"]["spec"]))
            .collect()
    }

    /// The string data of Secret `name`, decoded.
    pub fn secret_data(&self, name: &str) -> Vec<(String, Vec<u8>)> {
        use base64::Engine;
        let s = self.get("Secret", name);
        s["data"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let b = base64::engine::general_purpose::STANDARD
                            .decode(v.as_str().expect("base64 text"))
                            .expect("valid base64");
                        (k.as_str().expect("key").to_string(), b)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The args of container `name` of a pod spec, as strings.
pub fn args(pod: &Value, name: &str) -> Vec<String> {
    container(pod, name)["args"]
        .as_sequence()
        .unwrap_or_else(|| panic!("container {name} has no args"))
        .iter()
        .map(|a| a.as_str().expect("args are strings").to_string())
        .collect()
}

/// Container `name` of a pod spec.
pub fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_sequence()
        .and_then(|cs| cs.iter().find(|c| c["name"] == *name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The value following `flag` in `args`, if the flag is there.
pub fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .map(|i| args.get(i + 1).map(String::as_str).unwrap_or(""))
}

/// Every value following `flag` in `args`.
pub fn flags<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

/// Volume `name` of a pod spec.
pub fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_sequence()
        .and_then(|vs| vs.iter().find(|v| v["name"] == *name))
        .unwrap_or_else(|| panic!("no volume {name}"))
}
