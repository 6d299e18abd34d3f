//! The helm chart (deploy/helm/trow) as the topology test sees it: `helm template` run on it, the
//! objects it renders parsed, and every pod of its workloads run as a `trow` process on a
//! loopback address of its own ([`cluster`]).
//!
//! The point is that the processes get exactly what the chart renders: args, env, ConfigMaps and
//! Secrets, probes. Only what cannot exist on loopback is substituted, each by one small function
//! in [`cluster`] that fails the test when the rendered value no longer has the shape it expects,
//! so a chart change that would silently stop being exercised fails loudly instead.

pub mod cluster;
pub mod pod;
pub mod substitute;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_yaml::Value;

use crate::clients::{describe, output};

/// What to do when helm is missing; scripts/test.sh does it before running the tests.
pub const HELM_HINT: &str = "run `eval \"$(scripts/k8s-tools.sh --env)\"` (it installs the \
     pinned helm into a cache dir and puts it on PATH), or set HELM to a helm v4 binary; \
     scripts/test.sh does this itself";

/// The helm binary: `$HELM`, else `helm` on PATH; panics with [`HELM_HINT`].
pub fn helm_bin() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM") {
        let p = PathBuf::from(h);
        assert!(
            p.is_file(),
            "HELM={} does not exist: {HELM_HINT}",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`helm` is not on PATH and HELM is not set: {HELM_HINT}"))
}

/// The chart: `$TROW_CHART_DIR`, else `deploy/helm/trow` in this repository.
pub fn chart_dir() -> PathBuf {
    let dir = std::env::var_os("TROW_CHART_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/trow"));
    assert!(
        dir.join("Chart.yaml").is_file(),
        "no chart at {} (Chart.yaml missing); set TROW_CHART_DIR to the chart",
        dir.display()
    );
    dir
}

/// The objects `helm template` rendered, plus any the test adds as a cluster would hold them
/// (a Secret named by an `existing...` value).
pub struct Rendered {
    pub release: String,
    pub namespace: String,
    pub objects: Vec<Value>,
}

/// A Deployment or StatefulSet.
#[derive(Clone, Debug)]
pub struct Workload {
    pub kind: String,
    pub name: String,
    /// `app.kubernetes.io/component` of its pod template.
    pub component: String,
    pub replicas: usize,
    /// `spec.template`.
    pub template: Value,
    /// StatefulSet `volumeClaimTemplates` names: each pod gets an empty dir for each.
    pub claims: Vec<String>,
}

impl Rendered {
    /// `helm template <release> <chart> --namespace <namespace> -f <values>`, parsed.
    pub fn template(chart: &Path, release: &str, namespace: &str, values: &Path) -> Rendered {
        // helm's own dirs in a temp dir: no settings or repositories of the machine's user.
        let home = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(helm_bin());
        cmd.env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_DATA_HOME", home.path().join("data"))
            .args(["template", release])
            .arg(chart)
            .args(["--namespace", namespace, "-f"])
            .arg(values);
        let out = output(&mut cmd);
        assert!(out.status.success(), "{}", describe(&cmd, &out));
        let text = String::from_utf8_lossy(&out.stdout);
        Rendered {
            release: release.to_string(),
            namespace: namespace.to_string(),
            objects: parse_documents(&text),
        }
    }

    /// Every object of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| o["kind"].as_str() == Some(kind))
            .collect()
    }

    /// The object of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"].as_str() == Some(name))
    }

    /// As [`Rendered::get`], panicking with the names there are.
    pub fn must(&self, kind: &str, name: &str) -> &Value {
        self.get(kind, name).unwrap_or_else(|| {
            let names: Vec<&str> = self
                .of_kind(kind)
                .iter()
                .filter_map(|o| o["metadata"]["name"].as_str())
                .collect();
            panic!("the chart renders no {kind} {name:?} (it renders {kind}s {names:?})")
        })
    }

    /// The Deployments and StatefulSets.
    pub fn workloads(&self) -> Vec<Workload> {
        let mut out = Vec::new();
        for kind in ["Deployment", "StatefulSet"] {
            for o in self.of_kind(kind) {
                let name = str_at(o, &["metadata", "name"]);
                let template = o["spec"]["template"].clone();
                let component = template["metadata"]["labels"]["app.kubernetes.io/component"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{kind} {name}: no component label"))
                    .to_string();
                let replicas = match &o["spec"]["replicas"] {
                    Value::Null => 1,
                    v => v
                        .as_u64()
                        .unwrap_or_else(|| panic!("{kind} {name}: replicas {v:?}"))
                        as usize,
                };
                let claims = o["spec"]["volumeClaimTemplates"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(|c| str_at(c, &["metadata", "name"]))
                    .collect();
                out.push(Workload {
                    kind: kind.to_string(),
                    name,
                    component,
                    replicas,
                    template,
                    claims,
                });
            }
        }
        out
    }

    /// A Secret's files: `data` base64-decoded, and `stringData`.
    pub fn secret_data(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        let s = self.must("Secret", name);
        let mut files = BTreeMap::new();
        for (k, v) in mapping(&s["data"]) {
            let b64 = v.as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .unwrap_or_else(|e| panic!("Secret {name} key {k}: not base64 ({e})"));
            files.insert(k, bytes);
        }
        for (k, v) in mapping(&s["stringData"]) {
            files.insert(k, scalar(&v).into_bytes());
        }
        files
    }

    /// A ConfigMap's files: `data`, and `binaryData` base64-decoded.
    pub fn config_map_data(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        let c = self.must("ConfigMap", name);
        let mut files = BTreeMap::new();
        for (k, v) in mapping(&c["data"]) {
            files.insert(k, scalar(&v).into_bytes());
        }
        for (k, v) in mapping(&c["binaryData"]) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default().trim())
                .unwrap_or_else(|e| panic!("ConfigMap {name} key {k}: not base64 ({e})"));
            files.insert(k, bytes);
        }
        files
    }

    /// The Services, by name.
    pub fn services(&self) -> Vec<&Value> {
        self.of_kind("Service")
    }
}

/// The documents of a multi-document YAML stream, empty ones (`---` with only comments) left
/// out.
pub fn parse_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("helm printed bad YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The string at `path` in `v`; panics naming the path when it is missing.
pub fn str_at(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("no string at {} in {v:?}", path.join(".")))
        .to_string()
}

/// The entries of a YAML mapping (none for anything else), keys as strings.
pub fn mapping(v: &Value) -> Vec<(String, Value)> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| (scalar(k), v.clone()))
        .collect()
}

/// A scalar as Kubernetes reads it into a string field.
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}
