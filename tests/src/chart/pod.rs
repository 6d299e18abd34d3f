//! One pod of a rendered workload: its volumes written under a root dir of its own, its command
//! line and environment worked out (with [`super::substitute`]), its probes, and probing them as
//! the kubelet does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;

use super::substitute::{env_value, pod_listen, pod_paths, program};
use super::{Rendered, Workload, mapping, scalar, str_at};
use crate::Proc;

/// A probe as the pod spec gives it, the port resolved to a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Http {
        scheme: String,
        path: String,
        port: u16,
    },
    Grpc {
        port: u16,
        service: String,
    },
    Tcp {
        port: u16,
    },
}

/// One replica of a workload.
pub struct Pod {
    /// `<workload>-<i>` (a StatefulSet's name; a Deployment's pods get an index too).
    pub name: String,
    pub workload: String,
    pub component: String,
    pub ip: String,
    /// The pod's files: a volume mounted at `/a/b` is written to `root/a/b`.
    pub root: PathBuf,
    pub labels: BTreeMap<String, String>,
    /// The command line after substitution, program first.
    pub argv: Vec<String>,
    /// The environment after substitution.
    pub env: Vec<(String, String)>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    /// Every substitution made for this pod: (what, rendered, substituted).
    pub substitutions: Vec<(&'static str, String, String)>,
    /// Whether the Services selecting it list it (a killed pod stays listed until
    /// [`super::cluster::Cluster::drop_endpoints_of_dead`], as an endpoint controller lags).
    pub endpoint: bool,
    pub proc: Option<Proc>,
    /// SIGKILLed by the test.
    pub killed: bool,
}

impl Pod {
    /// The process's log.
    pub fn log_text(&self) -> String {
        self.proc.as_ref().map(|p| p.log_text()).unwrap_or_default()
    }

    pub fn alive(&self) -> bool {
        self.proc.is_some() && !self.killed
    }
}

/// The port number of the container port `name` of `pod`'s `trow` container.
pub(super) fn named_port(rendered: &Rendered, pod: &Pod, name: &str) -> u16 {
    let w = rendered
        .workloads()
        .into_iter()
        .find(|w| w.name == pod.workload)
        .expect("the pod's workload");
    container_ports(&trow_container(&w))
        .get(name)
        .copied()
        .unwrap_or_else(|| panic!("pod {}: no container port named {name}", pod.name))
}

/// The container ports by name (and by number, as a string).
fn container_ports(c: &Value) -> BTreeMap<String, u16> {
    let mut m = BTreeMap::new();
    for p in c["ports"].as_sequence().into_iter().flatten() {
        let n = p["containerPort"].as_u64().expect("containerPort") as u16;
        m.insert(n.to_string(), n);
        if let Some(name) = p["name"].as_str() {
            m.insert(name.to_string(), n);
        }
    }
    m
}

/// The pod template's one container, `trow`; any other container (or an init container)
/// fails the test, as the harness would not run it.
fn trow_container(w: &Workload) -> Value {
    let spec = &w.template["spec"];
    let inits = spec["initContainers"].as_sequence().map_or(0, |s| s.len());
    assert_eq!(
        inits, 0,
        "{} {}: init containers are not run",
        w.kind, w.name
    );
    let containers = spec["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = containers.iter().map(|c| scalar(&c["name"])).collect();
    assert_eq!(
        names,
        ["trow"],
        "{} {}: the harness runs one container, `trow`",
        w.kind,
        w.name
    );
    containers[0].clone()
}

/// Plans replica `i` of `w` on `ip`: writes its volumes under `dir/<pod>/root`, and works out
/// its command line, environment and probes.
pub(super) fn plan(rendered: &Rendered, w: &Workload, i: usize, ip: &str, dir: &Path) -> Pod {
    let name = format!("{}-{i}", w.name);
    let root = dir.join(&name).join("root");
    std::fs::create_dir_all(&root).expect("pod root");
    let c = trow_container(w);
    let ports = container_ports(&c);
    let mut subs = Vec::new();

    // Volumes: every mount of the container, written where the pod sees it.
    let volumes = w.template["spec"]["volumes"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let mounts_v = c["volumeMounts"].as_sequence().cloned().unwrap_or_default();
    let mounts: Vec<String> = mounts_v.iter().map(|m| str_at(m, &["mountPath"])).collect();
    for m in &mounts_v {
        let vname = str_at(m, &["name"]);
        let path = str_at(m, &["mountPath"]);
        assert!(
            m["subPath"].is_null(),
            "{name}: mount {path} uses subPath (the contract mounts whole dirs)"
        );
        let target = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&target).expect("mount dir");
        let vol = volumes.iter().find(|v| scalar(&v["name"]) == vname);
        let files = match vol {
            None if w.claims.contains(&vname) => BTreeMap::new(),
            None => panic!("{name}: mount {path} names no volume {vname}"),
            Some(v) if !v["configMap"].is_null() => {
                source_files(rendered, "ConfigMap", &v["configMap"], &vname)
            }
            Some(v) if !v["secret"].is_null() => {
                source_files(rendered, "Secret", &v["secret"], &vname)
            }
            Some(v) if !v["emptyDir"].is_null() || !v["persistentVolumeClaim"].is_null() => {
                BTreeMap::new()
            }
            Some(v) => panic!("{name}: volume {vname} is of a kind not emulated: {v:?}"),
        };
        for (file, bytes) in files {
            let bytes = match String::from_utf8(bytes) {
                Ok(text) => {
                    let (new, n) = pod_paths(&text, &mounts, &root);
                    if n > 0 {
                        subs.push((
                            "mount paths in a mounted file",
                            format!("{path}/{file}"),
                            format!("{n} path(s) under {}", root.display()),
                        ));
                    }
                    new.into_bytes()
                }
                Err(e) => e.into_bytes(),
            };
            std::fs::write(target.join(&file), bytes).expect("write a volume file");
        }
    }

    // The command line.
    let mut argv = vec![program(&c["command"]).display().to_string()];
    for a in c["args"].as_sequence().into_iter().flatten() {
        let a = scalar(a);
        if let Some(new) = pod_listen(&a, ip) {
            let port = a.rsplit_once(':').expect("IP:PORT").1;
            assert!(
                ports.contains_key(port),
                "{name}: listens on {a}, which is no containerPort ({ports:?})"
            );
            subs.push(("listen address", a, new.clone()));
            argv.push(new);
            continue;
        }
        assert!(
            !a.contains("0.0.0.0"),
            "{name}: {a:?} is a wildcard address not of the form 0.0.0.0:PORT"
        );
        let (new, n) = pod_paths(&a, &mounts, &root);
        if n > 0 {
            for piece in new.split(',') {
                let p = piece.strip_prefix("file://").unwrap_or(piece);
                assert!(
                    Path::new(p).exists(),
                    "{name}: the arg {a:?} names {p}, which no volume provides"
                );
            }
            subs.push(("mount path", a, new.clone()));
        } else {
            let p = a.strip_prefix("file://").unwrap_or(&a);
            assert!(
                !(p.starts_with("/etc/") || p.starts_with("/var/")),
                "{name}: the arg {a:?} names a path no volume mounts"
            );
        }
        argv.push(new);
    }

    // The environment.
    let mut env = Vec::new();
    assert!(
        c["envFrom"].is_null(),
        "{name}: envFrom {:?} is not emulated",
        c["envFrom"]
    );
    for v in c["env"].as_sequence().into_iter().flatten() {
        let var = str_at(v, &["name"]);
        if let Some(value) = env_value(v, rendered, &name, ip) {
            let (new, n) = pod_paths(&value, &mounts, &root);
            if n > 0 || !v["valueFrom"].is_null() {
                subs.push(("env", format!("{var}={value}"), format!("{var}={new}")));
            }
            env.push((var, new));
        }
    }

    let readiness = probe(&c["readinessProbe"], &ports, &name);
    let liveness = probe(&c["livenessProbe"], &ports, &name);
    let labels = mapping(&w.template["metadata"]["labels"])
        .into_iter()
        .map(|(k, v)| (k, scalar(&v)))
        .collect();
    Pod {
        name,
        workload: w.name.clone(),
        component: w.component.clone(),
        ip: ip.to_string(),
        root,
        labels,
        argv,
        env,
        readiness,
        liveness,
        substitutions: subs,
        endpoint: true,
        proc: None,
        killed: false,
    }
}

/// The files of a ConfigMap or Secret volume source: all keys, or its `items` (key → path).
fn source_files(
    rendered: &Rendered,
    kind: &str,
    source: &Value,
    vname: &str,
) -> BTreeMap<String, Vec<u8>> {
    let name = match kind {
        "Secret" => str_at(source, &["secretName"]),
        _ => str_at(source, &["name"]),
    };
    let optional = source["optional"].as_bool().unwrap_or(false);
    if rendered.get(kind, &name).is_none() {
        assert!(
            optional,
            "volume {vname}: the chart renders no {kind} {name}"
        );
        return BTreeMap::new();
    }
    let data = match kind {
        "Secret" => rendered.secret_data(&name),
        _ => rendered.config_map_data(&name),
    };
    match source["items"].as_sequence() {
        None => data,
        Some(items) => items
            .iter()
            .map(|it| {
                let key = str_at(it, &["key"]);
                let bytes = data
                    .get(&key)
                    .unwrap_or_else(|| panic!("volume {vname}: {kind} {name} has no key {key}"))
                    .clone();
                (str_at(it, &["path"]), bytes)
            })
            .collect(),
    }
}

/// A readiness or liveness probe, its port resolved against the container's ports.
fn probe(p: &Value, ports: &BTreeMap<String, u16>, pod: &str) -> Option<Probe> {
    if p.is_null() {
        return None;
    }
    let port = |v: &Value| -> u16 {
        let key = scalar(v);
        *ports
            .get(&key)
            .unwrap_or_else(|| panic!("{pod}: probe port {key} is no containerPort ({ports:?})"))
    };
    if !p["httpGet"].is_null() {
        let h = &p["httpGet"];
        return Some(Probe::Http {
            scheme: h["scheme"].as_str().unwrap_or("HTTP").to_lowercase(),
            path: h["path"].as_str().unwrap_or("/").to_string(),
            port: port(&h["port"]),
        });
    }
    if !p["grpc"].is_null() {
        return Some(Probe::Grpc {
            port: port(&p["grpc"]["port"]),
            service: p["grpc"]["service"].as_str().unwrap_or("").to_string(),
        });
    }
    if !p["tcpSocket"].is_null() {
        return Some(Probe::Tcp {
            port: port(&p["tcpSocket"]["port"]),
        });
    }
    panic!("{pod}: probe {p:?} is not emulated")
}

/// One probe, as the kubelet runs it: HTTP 200–399 (HTTPS unverified), gRPC health SERVING,
/// or a TCP connection.
pub async fn probe_once(ip: &str, probe: &Probe) -> bool {
    match probe {
        Probe::Http { scheme, path, port } => {
            let url = format!("{scheme}://{ip}:{port}{path}");
            let out = Command::new("curl")
                .args([
                    "-k",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-m",
                    "1",
                    "-w",
                    "%{http_code}",
                ])
                .arg(&url)
                .output();
            let code: u16 = out
                .ok()
                .and_then(|o| String::from_utf8_lossy(&o.stdout).parse().ok())
                .unwrap_or(0);
            (200..400).contains(&code)
        }
        Probe::Grpc { port, service } => {
            use tonic_health::pb::HealthCheckRequest;
            use tonic_health::pb::health_check_response::ServingStatus;
            let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
            else {
                return false;
            };
            let ep = ep
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(1));
            let Ok(ch) = ep.connect().await else {
                return false;
            };
            let mut c = tonic_health::pb::health_client::HealthClient::new(ch);
            let req = HealthCheckRequest {
                service: service.clone(),
            };
            matches!(c.check(req).await, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
        }
        Probe::Tcp { port } => std::net::TcpStream::connect_timeout(
            &format!("{ip}:{port}").parse().expect("an address"),
            Duration::from_secs(1),
        )
        .is_ok(),
    }
}
