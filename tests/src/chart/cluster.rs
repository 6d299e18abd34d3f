//! A rendered chart's pods run as processes on loopback, as a kubelet would run them: each pod
//! on a `127.0.0.x` of its own, its ConfigMap and Secret volumes written to a temp dir, its
//! container's args and env as rendered, Service names resolved to the pods they select, and its
//! readiness probe polled until it passes.
//!
//! The substitutions, each one function below that panics when the rendered value does not have
//! the shape it replaces (so a chart change breaks the test instead of going unexercised):
//! - [`program`]: the image's `trow` entrypoint becomes the `trow` binary under test;
//! - [`pod_listen`]: `0.0.0.0:PORT` becomes the pod's own `IP:PORT` (a pod owns its network
//!   namespace; processes on one loopback share one);
//! - [`pod_paths`]: a volume's mount path (in args, env and the mounted files) becomes the dir
//!   under the pod's root where the volume was written;
//! - [`env_value`]: `valueFrom` becomes the value of the rendered Secret, ConfigMap or field;
//! - [`Cluster::hosts_text`]: the cluster DNS becomes an `/etc/hosts` bind-mounted in each
//!   process's mount namespace (as `crate::ProxyName` does), naming each Service's pods, so a
//!   headless Service resolves to every replica and a ClusterIP one to its pods (no kube-proxy);
//!   [`Cluster::check_service_url`] checks a URL's port is what the Service forwards to.
//! - the service links the kubelet puts in the environment (`<SVC>_SERVICE_HOST`, ...) are given,
//!   with made-up cluster IPs, unless the pod turns them off.
//!
//! Left out, as loopback has no use for them: the security contexts (the processes run as the
//! test's user, root, which `unshare --mount` needs), resources, NetworkPolicies, node
//! selection, and restarts (a pod whose process exits fails the test).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_yaml::Value;

use super::{Rendered, Workload, mapping, scalar, str_at};
use crate::{Proc, trow_bin};

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
    /// Every substitution made for this pod: (what, rendered, substituted).
    pub substitutions: Vec<(&'static str, String, String)>,
    /// Whether the Services selecting it list it (a killed pod stays listed until
    /// [`Cluster::drop_endpoints_of_dead`], as an endpoint controller lags).
    pub endpoint: bool,
    pub proc: Option<Proc>,
    /// SIGKILLed by the test.
    pub killed: bool,
}

impl Pod {
    /// Where the pod sees `mount_path`, on this machine.
    pub fn path(&self, mount_path: &str) -> PathBuf {
        self.root.join(mount_path.trim_start_matches('/'))
    }

    /// The process's log.
    pub fn log_text(&self) -> String {
        self.proc.as_ref().map(|p| p.log_text()).unwrap_or_default()
    }

    pub fn alive(&self) -> bool {
        self.proc.is_some() && !self.killed
    }
}

/// The running pods of a rendered chart.
pub struct Cluster {
    pub rendered: Rendered,
    pub pods: Vec<Pod>,
    hosts: PathBuf,
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Cluster {
    /// Plans every pod of every Deployment and StatefulSet (each on the next of `ips`), writes
    /// their volumes under `dir`, and starts them all at once, as a cluster would.
    pub fn start(rendered: Rendered, dir: &Path, ips: &[&str]) -> Cluster {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next().map(str::to_string))
            })
            .unwrap_or_default();
        assert_eq!(
            uid, "0",
            "the chart topology test runs each pod in a mount namespace of its own \
             (`unshare --mount`, for its /etc/hosts): run it as root (scripts/test.sh does)"
        );
        let mut ips = ips.iter();
        let mut pods = Vec::new();
        for w in rendered.workloads() {
            for i in 0..w.replicas {
                let ip = ips
                    .next()
                    .unwrap_or_else(|| panic!("more pods than loopback addresses"));
                pods.push(plan(&rendered, &w, i, ip, dir));
            }
        }
        let mut c = Cluster {
            rendered,
            pods,
            hosts: dir.join("hosts"),
        };
        for p in &c.pods {
            for a in &p.argv {
                if a.starts_with("http://") || a.starts_with("https://") {
                    c.check_service_url(a);
                }
            }
        }
        c.write_hosts();
        for i in 0..c.pods.len() {
            c.spawn(i);
        }
        c
    }

    /// Starts pod `i`'s process: `unshare --mount` with the hosts file bind-mounted on
    /// `/etc/hosts`, then the pod's command line with only the pod's environment (and PATH,
    /// which `sh` needs), in the pod's root.
    fn spawn(&mut self, i: usize) {
        let links = self.service_links(&self.pods[i]);
        let p = &mut self.pods[i];
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/hosts && exec "$@""#,
        ])
        .arg(&self.hosts)
        .args(&p.argv)
        // The container's working dir: its root (the image sets no other).
        .current_dir(&p.root)
        .env_clear()
        .env("PATH", PATH)
        .envs(links)
        .envs(p.env.iter().cloned());
        let log = p
            .root
            .parent()
            .expect("pod dir")
            .join(format!("{}.log", p.name));
        p.proc = Some(Proc::spawn(cmd, log));
    }

    /// The pods of `component`, in order.
    pub fn pods_of(&self, component: &str) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|p| p.component == component)
            .collect()
    }

    /// The index in [`Cluster::pods`] of pod `name`.
    pub fn index(&self, name: &str) -> usize {
        self.pods
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// SIGKILLs pod `name`'s process; it stays in its Services' endpoints for now.
    pub fn kill9(&mut self, name: &str) {
        let i = self.index(name);
        let p = &mut self.pods[i];
        p.proc.as_mut().expect("a started pod").kill9();
        p.killed = true;
    }

    /// The endpoint controller catches up: dead pods leave their Services' names.
    pub fn drop_endpoints_of_dead(&mut self) {
        for p in self.pods.iter_mut() {
            p.endpoint = p.alive();
        }
        self.write_hosts();
    }

    /// Polls every live pod's readiness probe until all pass, as the kubelet does, or panics
    /// after `limit` with the logs of those that did not; returns how long it took.
    pub async fn wait_ready(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut waiting: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].alive())
            .collect();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for i in waiting {
                let p = &mut self.pods[i];
                if let Some(proc_) = p.proc.as_mut()
                    && proc_.exited()
                {
                    panic!(
                        "pod {} exited before it was ready:\n{}",
                        p.name,
                        p.log_text()
                    );
                }
                let ready = match &p.readiness {
                    None => true,
                    Some(probe) => probe_once(&p.ip, probe).await,
                };
                if !ready {
                    still.push(i);
                }
            }
            waiting = still;
            if waiting.is_empty() {
                break;
            }
            if start.elapsed() > limit {
                let logs: Vec<String> = waiting
                    .iter()
                    .map(|&i| {
                        let p = &self.pods[i];
                        format!("--- {} ({:?}) ---\n{}", p.name, p.readiness, p.log_text())
                    })
                    .collect();
                panic!("pods not ready after {limit:?}:\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        start.elapsed()
    }

    /// Stops every live pod with SIGTERM (the gateways first, storage last), as a rollout
    /// would; panics when one does not exit within 10 s.
    pub fn terminate_all(&mut self) {
        let order = ["gateway", "webhooks", "admission", "proxy", "storage"];
        let rank = |c: &str| order.iter().position(|o| *o == c).unwrap_or(0);
        let mut idx: Vec<usize> = (0..self.pods.len()).collect();
        idx.sort_by_key(|&i| rank(&self.pods[i].component));
        for i in idx {
            let p = &mut self.pods[i];
            if p.killed {
                continue;
            }
            if let Some(proc_) = p.proc.as_mut() {
                assert!(
                    proc_.terminate(Duration::from_secs(10)).is_some(),
                    "pod {} did not stop within 10 s of SIGTERM:\n{}",
                    p.name,
                    proc_.log_text()
                );
            }
        }
    }

    /// Every name a Service is reached by from the chart's namespace.
    fn service_names(&self, svc: &str) -> Vec<String> {
        let ns = &self.rendered.namespace;
        vec![
            svc.to_string(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ]
    }

    /// The pods a Service's selector picks.
    fn selected(&self, svc: &Value) -> Vec<&Pod> {
        let selector = mapping(&svc["spec"]["selector"]);
        assert!(
            !selector.is_empty(),
            "Service {:?} has no selector",
            svc["metadata"]["name"]
        );
        self.pods
            .iter()
            .filter(|p| {
                selector
                    .iter()
                    .all(|(k, v)| p.labels.get(k) == Some(&scalar(v)))
            })
            .collect()
    }

    /// The cluster DNS as an `/etc/hosts`: each Service's names map to the addresses of the pods
    /// it selects that are still endpoints. A headless Service resolves to them in DNS too; a
    /// ClusterIP one would give one virtual address that kube-proxy forwards to them, which
    /// [`Cluster::check_service_url`] makes equivalent.
    pub fn hosts_text(&self) -> String {
        let mut text = String::from("127.0.0.1 localhost\n");
        for svc in self.rendered.services() {
            let name = str_at(svc, &["metadata", "name"]);
            let names = self.service_names(&name).join(" ");
            for p in self.selected(svc) {
                if p.endpoint {
                    text.push_str(&format!("{} {names}\n", p.ip));
                }
            }
        }
        text
    }

    /// Rewrites the hosts file in place (the processes see the bind-mounted inode).
    pub fn write_hosts(&self) {
        std::fs::write(&self.hosts, self.hosts_text()).expect("write the hosts file");
    }

    /// A URL in the args must name a rendered Service (not an address), on a port of that
    /// Service which forwards to the same port of the pods it selects: the hosts file maps the
    /// name straight to the pods, so the URL's port is the pod's. Returns the Service's name.
    pub fn check_service_url(&self, url: &str) -> String {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = authority
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{url}: no port"));
        let port: u16 = port.parse().unwrap_or_else(|_| panic!("{url}: bad port"));
        let svc = self
            .rendered
            .services()
            .into_iter()
            .find(|s| {
                let n = str_at(s, &["metadata", "name"]);
                self.service_names(&n).iter().any(|x| x == host)
            })
            .unwrap_or_else(|| panic!("{url}: {host} is no Service the chart renders"));
        let name = str_at(svc, &["metadata", "name"]);
        for (pod, target) in self.target_ports(&name, port) {
            assert_eq!(
                target, port,
                "{url}: Service {name} forwards port {port} to {target} of pod {pod}: the \
                 test maps the name to the pods, so the URL's port must be the pod's"
            );
        }
        name
    }

    /// Where Service `name`'s `port` forwards to: each selected pod's name and port (a named
    /// `targetPort` resolved against the pod's container ports, as kube-proxy does). Panics
    /// when the Service has no such port or selects no pod.
    pub fn target_ports(&self, name: &str, port: u16) -> Vec<(String, u16)> {
        let svc = self.rendered.must("Service", name);
        let sp = svc["spec"]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["port"].as_u64() == Some(port as u64))
            .unwrap_or_else(|| panic!("Service {name} has no port {port}"));
        let pods = self.selected(svc);
        assert!(!pods.is_empty(), "Service {name} selects no pod");
        pods.iter()
            .map(|p| {
                let target = match &sp["targetPort"] {
                    Value::Null => port,
                    Value::Number(n) => n.as_u64().expect("a port") as u16,
                    Value::String(s) => named_port(&self.rendered, p, s),
                    v => panic!("Service {name}: targetPort {v:?}"),
                };
                (p.name.clone(), target)
            })
            .collect()
    }

    /// The environment the kubelet gives a pod for every Service with a cluster IP (unless the
    /// pod says `enableServiceLinks: false`); the IPs are made up (10.96.0.x), as no
    /// kube-proxy forwards them.
    fn service_links(&self, pod: &Pod) -> Vec<(String, String)> {
        let w = self
            .rendered
            .workloads()
            .into_iter()
            .find(|w| w.name == pod.workload)
            .expect("the pod's workload");
        if w.template["spec"]["enableServiceLinks"].as_bool() == Some(false) {
            return Vec::new();
        }
        let mut env = Vec::new();
        for (n, svc) in self.rendered.services().into_iter().enumerate() {
            if svc["spec"]["clusterIP"].as_str() == Some("None") {
                continue;
            }
            let name = str_at(svc, &["metadata", "name"])
                .to_uppercase()
                .replace('-', "_");
            let ip = format!("10.96.0.{}", n + 10);
            let ports = svc["spec"]["ports"]
                .as_sequence()
                .cloned()
                .unwrap_or_default();
            for (i, p) in ports.iter().enumerate() {
                let port = p["port"].as_u64().expect("a Service port");
                let proto = p["protocol"].as_str().unwrap_or("TCP");
                if i == 0 {
                    env.push((format!("{name}_SERVICE_HOST"), ip.clone()));
                    env.push((format!("{name}_SERVICE_PORT"), port.to_string()));
                    env.push((
                        format!("{name}_PORT"),
                        format!("{}://{ip}:{port}", proto.to_lowercase()),
                    ));
                }
                if let Some(pn) = p["name"].as_str() {
                    env.push((
                        format!(
                            "{name}_SERVICE_PORT_{}",
                            pn.to_uppercase().replace('-', "_")
                        ),
                        port.to_string(),
                    ));
                }
                let base = format!("{name}_PORT_{port}_{proto}");
                env.push((
                    base.clone(),
                    format!("{}://{ip}:{port}", proto.to_lowercase()),
                ));
                env.push((format!("{base}_PROTO"), proto.to_lowercase()));
                env.push((format!("{base}_PORT"), port.to_string()));
                env.push((format!("{base}_ADDR"), ip.clone()));
            }
        }
        env
    }
}

/// The port number of the container port `name` of `pod`'s `trow` container.
fn named_port(rendered: &Rendered, pod: &Pod, name: &str) -> u16 {
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

/// Substitution: the container's program. The image's entrypoint is `trow` (no `command`, or
/// one naming `trow`); on loopback it is the binary under test.
pub fn program(command: &Value) -> PathBuf {
    match command {
        Value::Null => {}
        Value::Sequence(s) => {
            assert!(
                s.len() == 1 && scalar(&s[0]).rsplit('/').next() == Some("trow"),
                "the container's command {s:?} is not the image's `trow`"
            );
        }
        v => panic!("command {v:?}"),
    }
    trow_bin()
}

/// Substitution: `0.0.0.0:PORT`, where a pod listens, becomes `ip:PORT`. `None` for any
/// other argument; panics on a wildcard listen address of another shape.
pub fn pod_listen(arg: &str, ip: &str) -> Option<String> {
    let port = arg.strip_prefix("0.0.0.0:")?;
    let port: u16 = port
        .parse()
        .unwrap_or_else(|_| panic!("{arg}: not 0.0.0.0:PORT"));
    Some(format!("{ip}:{port}"))
}

/// Substitution: every mount path in `text` (followed by `/`, a quote, white space or the end)
/// becomes its dir under `root`; returns the text and how many were replaced. Longer mount
/// paths are tried first, so `/etc/trow/config` never eats `/etc/trow/config-x`.
pub fn pod_paths(text: &str, mounts: &[String], root: &Path) -> (String, usize) {
    let mut sorted: Vec<&String> = mounts.iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let mut out = String::new();
    let mut count = 0;
    let mut i = 0;
    'scan: while i < text.len() {
        for m in &sorted {
            if text[i..].starts_with(m.as_str()) {
                let after = text[i + m.len()..].chars().next();
                let ends = match after {
                    None => true,
                    Some(c) => c == '/' || c == '"' || c == '\'' || c == ',' || c.is_whitespace(),
                };
                if ends {
                    out.push_str(&root.join(m.trim_start_matches('/')).display().to_string());
                    i += m.len();
                    count += 1;
                    continue 'scan;
                }
            }
        }
        let c = text[i..].chars().next().expect("a char");
        out.push(c);
        i += c.len_utf8();
    }
    (out, count)
}

/// Substitution: an env var's value: `value` (mount paths substituted by the caller), or
/// `valueFrom` a rendered Secret or ConfigMap key, or the pod's fields. `None` when an
/// `optional` reference is missing (the var is then unset, as in Kubernetes).
pub fn env_value(var: &Value, rendered: &Rendered, pod_name: &str, ip: &str) -> Option<String> {
    if !var["value"].is_null() || var["valueFrom"].is_null() {
        return Some(scalar(&var["value"]));
    }
    let from = &var["valueFrom"];
    let key_ref = |kind: &str, r: &Value| -> Option<String> {
        let name = str_at(r, &["name"]);
        let key = str_at(r, &["key"]);
        let optional = r["optional"].as_bool().unwrap_or(false);
        if rendered.get(kind, &name).is_none() && optional {
            return None;
        }
        let data = if kind == "Secret" {
            rendered.secret_data(&name)
        } else {
            rendered.config_map_data(&name)
        };
        match data.get(&key) {
            Some(v) => Some(String::from_utf8(v.clone()).expect("a UTF-8 env value")),
            None if optional => None,
            None => panic!("{kind} {name} has no key {key} (env {:?})", var["name"]),
        }
    };
    if !from["secretKeyRef"].is_null() {
        return key_ref("Secret", &from["secretKeyRef"]);
    }
    if !from["configMapKeyRef"].is_null() {
        return key_ref("ConfigMap", &from["configMapKeyRef"]);
    }
    if !from["fieldRef"].is_null() {
        let field = str_at(&from["fieldRef"], &["fieldPath"]);
        return Some(match field.as_str() {
            "metadata.name" => pod_name.to_string(),
            "metadata.namespace" => rendered.namespace.clone(),
            "status.podIP" => ip.to_string(),
            "spec.nodeName" => "loopback".to_string(),
            other => panic!("env {:?}: fieldRef {other} is not emulated", var["name"]),
        });
    }
    panic!("env {:?}: valueFrom {from:?} is not emulated", var["name"])
}

/// Plans replica `i` of `w` on `ip`: writes its volumes under `dir/<pod>/root`, and works out
/// its command line, environment and readiness probe.
fn plan(rendered: &Rendered, w: &Workload, i: usize, ip: &str, dir: &Path) -> Pod {
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

/// A readiness probe, its port resolved against the container's ports.
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
    panic!("{pod}: readiness probe {p:?} is not emulated")
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
