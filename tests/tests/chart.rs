//! The helm chart (deploy/helm/trow), rendered and checked with the real tools: `helm lint
//! --strict` and `helm template` (helm v4) of every value set in tests/tests/chart/, each
//! rendering validated against the Kubernetes API schemas with `kubernetes-validate --strict`,
//! then read back object by object for the mistakes that validate but break a cluster: a Service
//! selecting no pod, a flag naming a file nothing mounts, a password in a ConfigMap, a webhook
//! policy that ignores its values, a gRPC port open to every pod.
//!
//! The tools come from `scripts/k8s-tools.sh` (on PATH); without them every test fails, saying so.

#[path = "chart/extras.rs"]
mod extras;
#[path = "chart/render.rs"]
mod render;
#[path = "chart/review.rs"]
mod review;
#[path = "chart/security.rs"]
mod security;
#[path = "chart/topology.rs"]
mod topology;
#[path = "chart/webhooks.rs"]
mod webhooks;

use std::collections::BTreeSet;

use render::{Rendered, VALUE_SETS, args, lint, render};
use serde_yaml::Value;

const IMAGE: &str = "trow:0.1.0";

#[test]
fn lint_strict_passes_for_every_value_set() {
    for set in VALUE_SETS {
        let (ok, out) = lint(&render::values_args(set));
        assert!(ok, "helm lint --strict with value set {set}:\n{out}");
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{set}: {out}"
        );
    }
}

#[test]
fn every_value_set_validates_against_the_api_schemas_and_holds_together() {
    let mut summary = Vec::new();
    for set in VALUE_SETS {
        let r = render(set);
        let n = render::validate(&r);
        check_containers(&r);
        check_mounts_and_files(&r);
        check_services_select_pods(&r);
        check_config_parses(&r);
        check_trow_accepts_args(&r);
        check_references(&r);
        check_install_wait_order(&r);
        summary.push(format!("{set}: {n} objects"));
    }
    println!("validated (kubernetes-validate --strict, 1.35 and 1.37): {summary:?}");
}

/// Every container: the chart's image, resources, probes (long-running ones), a non-root
/// restricted security context (the node set-up alone runs as root), flags as separate items.
fn check_containers(r: &Rendered) {
    for (w, pod) in r.workloads() {
        let kind = w["kind"].as_str().unwrap();
        let wname = w["metadata"]["name"].as_str().unwrap();
        let component = w["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {kind} {wname} has no component label", r.set));
        let node_setup = component == "node-setup";
        assert_eq!(node_setup, kind == "DaemonSet", "{}: {wname}", r.set);
        let pod_sc = &pod["securityContext"];
        for c in pod["containers"].as_sequence().unwrap() {
            let at = format!("{}: {kind} {wname}, container {:?}", r.set, c["name"]);
            assert_eq!(c["image"], IMAGE, "{at}");
            for (part, key) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "memory"),
            ] {
                assert!(
                    !c["resources"][part][key].is_null(),
                    "{at}: no resources.{part}.{key}"
                );
            }
            if matches!(kind, "Deployment" | "StatefulSet") {
                for p in ["readinessProbe", "livenessProbe"] {
                    assert!(c[p].is_mapping(), "{at}: no {p}");
                }
            }
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{at}");
            assert!(
                sc["privileged"].is_null() || sc["privileged"] == false,
                "{at}"
            );
            let user = sc["runAsUser"].as_u64().or(pod_sc["runAsUser"].as_u64());
            if node_setup {
                assert_eq!(user, Some(0), "{at}: the node set-up writes root's files");
            } else {
                assert_eq!(user, Some(333333), "{at}");
                let non_root = if sc["runAsNonRoot"].is_null() {
                    &pod_sc["runAsNonRoot"]
                } else {
                    &sc["runAsNonRoot"]
                };
                assert_eq!(non_root, &Value::Bool(true), "{at}");
                assert_eq!(pod_sc["fsGroup"], 333333, "{at}");
                assert_eq!(pod_sc["fsGroupChangePolicy"], "OnRootMismatch", "{at}");
            }
            assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault", "{at}");
            let a = args(pod, c["name"].as_str().unwrap());
            for arg in &a {
                assert!(
                    !(arg.starts_with("--") && arg.contains('=')),
                    "{at}: {arg}: flags and values are separate items"
                );
            }
        }
    }
}

/// No subPath (a renewed Secret would never reach the pod); every mount has its volume; every
/// file a flag names lies under a mount of that container.
fn check_mounts_and_files(r: &Rendered) {
    for (w, pod) in r.workloads() {
        let wname = w["metadata"]["name"].as_str().unwrap();
        let volumes: BTreeSet<&str> = pod["volumes"]
            .as_sequence()
            .map(|vs| vs.iter().map(|v| v["name"].as_str().unwrap()).collect())
            .unwrap_or_default();
        let claims: BTreeSet<&str> = w["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .map(|vs| {
                vs.iter()
                    .map(|v| v["metadata"]["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let mut used = BTreeSet::new();
        for c in pod["containers"].as_sequence().unwrap() {
            let cname = c["name"].as_str().unwrap();
            let at = format!("{}: {wname}, container {cname}", r.set);
            let mounts: Vec<&Value> = c["volumeMounts"]
                .as_sequence()
                .map(|m| m.iter().collect())
                .unwrap_or_default();
            for m in &mounts {
                assert!(m["subPath"].is_null(), "{at}: subPath mount {m:?}");
                assert!(m["subPathExpr"].is_null(), "{at}: subPathExpr mount {m:?}");
                let v = m["name"].as_str().unwrap();
                assert!(
                    volumes.contains(v) || claims.contains(v),
                    "{at}: mount of unknown volume {v}"
                );
                used.insert(v);
            }
            let a = args(pod, cname);
            for (i, arg) in a.iter().enumerate() {
                // containerd-config's --ca-file names a file on the node, for containerd.
                if a[0] == "containerd-config" && i > 0 && a[i - 1] == "--ca-file" {
                    continue;
                }
                for path in arg.trim_start_matches("file://").split(',') {
                    if !path.starts_with('/') {
                        continue;
                    }
                    assert!(
                        mounts.iter().any(|m| {
                            let dir = m["mountPath"].as_str().unwrap();
                            path.starts_with(&format!("{}/", dir.trim_end_matches('/')))
                                || path == dir
                        }),
                        "{at}: {path} (in {arg}) is under no mount"
                    );
                }
            }
        }
        for v in &volumes {
            assert!(
                used.contains(v),
                "{}: {wname}: volume {v} never mounted",
                r.set
            );
        }
    }
}

/// Every Service selects the pods of one workload, and its target ports are named ports of them.
fn check_services_select_pods(r: &Rendered) {
    for s in r.of_kind("Service") {
        let sname = s["metadata"]["name"].as_str().unwrap();
        let sel = s["spec"]["selector"].as_mapping().expect("a selector");
        let pods: Vec<&Value> = r
            .workloads()
            .into_iter()
            .filter(|(w, _)| {
                let labels = &w["spec"]["template"]["metadata"]["labels"];
                sel.iter().all(|(k, v)| &labels[k.as_str().unwrap()] == v)
            })
            .map(|(_, pod)| pod)
            .collect();
        assert_eq!(
            pods.len(),
            1,
            "{}: Service {sname} selects {} workloads",
            r.set,
            pods.len()
        );
        let names: BTreeSet<&str> = pods[0]["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_sequence().into_iter().flatten())
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for p in s["spec"]["ports"].as_sequence().unwrap() {
            let t = p["targetPort"].as_str().expect("named target ports");
            assert!(
                names.contains(t),
                "{}: Service {sname} targets port {t}, which no container names",
                r.set
            );
        }
    }
}

/// Both config keys parse with Trow's own parser: `config.yaml` (every process but the ones that
/// fetch from upstreams) names no password file, `config-proxy.yaml` (present exactly when the
/// proxy-credentials Secret is) reads them from the Secret's data; no password is in the
/// ConfigMap. Every `ca_file` lies under a mount of every Trow service container: each of them
/// reads a config, and reading it checks that the file is readable.
fn check_config_parses(r: &Rendered) {
    let cm = r.get("ConfigMap", "trow-config");
    let text = cm["data"]["config.yaml"].as_str().expect("config.yaml");
    assert!(
        !text.contains("password_file:"),
        "{}: config.yaml names a password file:\n{text}",
        r.set
    );
    let has_creds = r.find("Secret", "trow-proxy-credentials").is_some();
    let proxy_text = cm["data"]["config-proxy.yaml"].as_str();
    assert_eq!(
        proxy_text.is_some(),
        has_creds,
        "{}: config-proxy.yaml exactly when there are registry passwords",
        r.set
    );
    let dir = tempfile::tempdir().expect("tempdir");
    if has_creds {
        for (k, v) in r.secret_data("trow-proxy-credentials") {
            std::fs::write(dir.path().join(&k), v).expect("write a password file");
        }
    }
    for (key, text) in
        std::iter::once(("config.yaml", text)).chain(proxy_text.map(|t| ("config-proxy.yaml", t)))
    {
        check_one_config(r, dir.path(), key, text);
    }
}

/// One key of the ConfigMap: see [`check_config_parses`].
fn check_one_config(r: &Rendered, dir: &std::path::Path, key: &str, text: &str) {
    assert!(
        !text.contains("password:"),
        "{}: a password in the ConfigMap's {key}:\n{text}",
        r.set
    );
    let mut local = text.replace(
        "/etc/trow/proxy-credentials/",
        &format!("{}/", dir.display()),
    );
    for (i, line) in text.lines().enumerate() {
        let Some(ca) = line
            .trim()
            .trim_start_matches("- ")
            .strip_prefix("ca_file: ")
        else {
            continue;
        };
        for (w, pod) in r.workloads() {
            if matches!(w["kind"].as_str(), Some("Job" | "DaemonSet")) {
                continue;
            }
            for c in pod["containers"].as_sequence().unwrap() {
                let mounted = c["volumeMounts"].as_sequence().unwrap().iter().any(|m| {
                    let dir = m["mountPath"].as_str().unwrap().trim_end_matches('/');
                    ca.starts_with(&format!("{dir}/"))
                });
                assert!(
                    mounted,
                    "{}: {} container {:?} reads ca_file {ca} but mounts nothing there",
                    r.set,
                    w["metadata"]["name"].as_str().unwrap(),
                    c["name"]
                );
            }
        }
        let copy = dir.join(format!("ca-{i}.crt"));
        std::fs::write(&copy, "a CA bundle").expect("write a CA file");
        local = local.replace(ca, &copy.display().to_string());
    }
    if let Err(e) = trow::config::FileConfig::parse(&local) {
        panic!("{}: {key} does not parse: {e}\n{text}", r.set);
    }
}

/// Every Trow service container's args (flags and values) are accepted by the `trow` binary's
/// own parser: run with `--help` appended, which clap answers only once every earlier flag and
/// value parsed, so a flag a mode lacks or a bad address fails here, before any cluster sees it.
/// The hook Job's `webhook-certs` and the DaemonSet's `containerd-config` included.
fn check_trow_accepts_args(r: &Rendered) {
    let bin = trow_tests::trow_bin();
    for (w, pod) in r.workloads() {
        for c in pod["containers"].as_sequence().unwrap() {
            let a = args(pod, c["name"].as_str().unwrap());
            let out = std::process::Command::new(&bin)
                .args(&a)
                .arg("--help")
                .output()
                .expect("run trow");
            assert!(
                out.status.success(),
                "{}: {} container {:?}: trow refuses its args {a:?}:\n{}",
                r.set,
                w["metadata"]["name"].as_str().unwrap(),
                c["name"],
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Secrets given by name in the value sets, which the chart must not render itself.
const EXISTING_SECRETS: [&str; 6] = [
    "my-webhook-tls",
    "trow-grpc-mine",
    "my-trow-users",
    "my-token-key",
    "my-grpc-token",
    "upstream-ca",
];

/// Every Secret, ConfigMap and ServiceAccount a pod refers to exists once the chart is installed:
/// rendered by the chart, written by one of its cert-manager Certificates or by its certificate
/// hook Job, or named in the values as existing. Catches a name that drifted between the object
/// and its users.
fn check_references(r: &Rendered) {
    let mut secrets: BTreeSet<String> = r
        .of_kind("Secret")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for c in r.of_kind("Certificate") {
        secrets.insert(c["spec"]["secretName"].as_str().unwrap().to_string());
    }
    for (w, pod) in r.workloads() {
        if w["kind"] == "Job" {
            let a = args(pod, "webhook-certs");
            secrets.insert(render::flag(&a, "--secret").unwrap().to_string());
        }
    }
    for given in EXISTING_SECRETS {
        assert!(
            r.find("Secret", given).is_none(),
            "{}: the chart renders {given}, which the values say exists",
            r.set
        );
    }
    let names = |kind: &str| -> BTreeSet<String> {
        r.of_kind(kind)
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let config_maps = names("ConfigMap");
    let accounts = names("ServiceAccount");
    for (w, pod) in r.workloads() {
        let at = format!("{}: {}", r.set, w["metadata"]["name"].as_str().unwrap());
        let mut wanted = Vec::new();
        for v in pod["volumes"].as_sequence().into_iter().flatten() {
            if let Some(s) = v["secret"]["secretName"].as_str() {
                wanted.push(s);
            }
            if let Some(c) = v["configMap"]["name"].as_str() {
                assert!(
                    config_maps.contains(c),
                    "{at}: ConfigMap {c} is not rendered"
                );
            }
        }
        for c in pod["containers"].as_sequence().unwrap() {
            for e in c["env"].as_sequence().into_iter().flatten() {
                if let Some(s) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    wanted.push(s);
                }
            }
        }
        for s in wanted {
            assert!(
                secrets.contains(s) || EXISTING_SECRETS.contains(&s),
                "{at}: Secret {s} is neither rendered, nor made by a Certificate or the hook Job, nor given"
            );
        }
        if let Some(sa) = pod["serviceAccountName"].as_str() {
            assert!(
                accounts.contains(sa),
                "{at}: ServiceAccount {sa} is not rendered"
            );
        }
    }
}

/// `helm install --wait` waits for the pods before it runs post-install hooks, so every Secret a
/// pod mounts exists before the pods: rendered as a plain object, written by cert-manager, given,
/// or made by a pre-install and pre-upgrade hook Job; such a Job's account and roles are hooks of
/// the same phases, ordered before it. A pod waiting on a post-install hook would never start.
fn check_install_wait_order(r: &Rendered) {
    let hook = |o: &Value| -> String {
        o["metadata"]["annotations"]["helm.sh/hook"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let weight = |o: &Value| -> i64 {
        o["metadata"]["annotations"]["helm.sh/hook-weight"]
            .as_str()
            .map_or(0, |w| w.parse().expect("a numeric hook weight"))
    };
    let mut early: BTreeSet<String> = r
        .of_kind("Secret")
        .iter()
        .filter(|s| hook(s).is_empty())
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for c in r.of_kind("Certificate") {
        early.insert(c["spec"]["secretName"].as_str().unwrap().to_string());
    }
    early.extend(EXISTING_SECRETS.iter().map(|s| s.to_string()));
    for (w, pod) in r.workloads() {
        if w["kind"] != "Job" {
            assert!(hook(w).is_empty(), "{}: a hook workload", r.set);
            continue;
        }
        let at = format!("{}: Job {}", r.set, w["metadata"]["name"].as_str().unwrap());
        let phases = hook(w);
        assert!(!phases.is_empty(), "{at}: Jobs are hooks");
        let sa = pod["serviceAccountName"].as_str().unwrap();
        for kind in ["ServiceAccount", "Role", "RoleBinding"] {
            let o = r.get(kind, sa);
            for phase in phases.split(',') {
                assert!(
                    hook(o).split(',').any(|p| p == phase),
                    "{at}: {kind} {sa} is no {phase} hook"
                );
            }
            assert!(weight(o) < weight(w), "{at}: {kind} {sa} is made after it");
        }
        if phases == "pre-install,pre-upgrade" {
            let a = args(pod, "webhook-certs");
            early.insert(render::flag(&a, "--secret").unwrap().to_string());
        }
    }
    for (w, pod) in r.workloads() {
        if w["kind"] == "Job" {
            continue;
        }
        for v in pod["volumes"].as_sequence().into_iter().flatten() {
            if let Some(s) = v["secret"]["secretName"].as_str() {
                assert!(
                    early.contains(s),
                    "{}: {} mounts Secret {s}, which exists only after the pods started: \
                     `helm install --wait` would never finish",
                    r.set,
                    w["metadata"]["name"].as_str().unwrap()
                );
            }
        }
    }
}
