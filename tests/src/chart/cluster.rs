//! A rendered chart's pods run as processes on loopback, as a kubelet would run them: each pod
//! on a `127.0.0.x` of its own ([`super::pod`] writes its volumes and works out its command line
//! with the substitutions of [`super::substitute`]), all started at once, their readiness probes
//! polled until they pass.
//!
//! The cluster around the pods:
//! - DNS: [`Cluster::hosts_text`] is an `/etc/hosts` bind-mounted in each process's mount
//!   namespace (as `crate::ProxyName` does), naming each Service's pods: a headless Service
//!   resolves to every replica, a ClusterIP one to one address (a pod's: no kube-proxy);
//!   [`Cluster::check_service_url`] checks a URL's port is the one the Service forwards to.
//! - Endpoints: a killed pod stays under its Services' names until
//!   [`Cluster::drop_endpoints_of_dead`], as the endpoint controller lags.
//! - Service links: the variables the kubelet puts in the environment
//!   (`<SVC>_SERVICE_HOST`, ...), with made-up cluster IPs, unless the pod turns them off.
//!
//! Left out, as loopback has no use for them: the security contexts (the processes run as the
//! test's user, root, which `unshare --mount` needs), resources, NetworkPolicies, node
//! selection, and restarts (a pod whose process exits fails the test).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_yaml::Value;

use super::pod::{Pod, named_port, plan, probe_once};
use super::{Rendered, mapping, scalar, str_at};
use crate::Proc;

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
        let mut cmd = crate::with_hosts_file(&self.hosts, &p.argv[0]);
        cmd.args(&p.argv[1..])
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

    /// Every live pod passes its liveness probe (within a few tries, as the kubelet allows
    /// `failureThreshold` failures): else the kubelet would restart it.
    pub async fn assert_live(&self) {
        for p in self.pods.iter().filter(|p| p.alive()) {
            let Some(probe) = &p.liveness else { continue };
            let mut ok = false;
            for _ in 0..10 {
                if probe_once(&p.ip, probe).await {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            assert!(
                ok,
                "pod {} fails its liveness probe {probe:?}:\n{}",
                p.name,
                p.log_text()
            );
        }
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

    /// The cluster DNS as an `/etc/hosts`. A headless Service's names resolve to the addresses
    /// of every pod it selects that is still an endpoint, as in Kubernetes. A ClusterIP
    /// Service's resolve to one address, as in Kubernetes, where kube-proxy forwards the virtual
    /// IP to the pods; here that address is the first endpoint pod's (so a caller sees one
    /// replica, and a chart that lost `clusterIP: None` fails the test), and
    /// [`Cluster::check_service_url`] makes sure the port needs no forwarding.
    pub fn hosts_text(&self) -> String {
        let mut text = String::from("127.0.0.1 localhost\n");
        for svc in self.rendered.services() {
            let name = str_at(svc, &["metadata", "name"]);
            let names = self.service_names(&name).join(" ");
            let headless = svc["spec"]["clusterIP"].as_str() == Some("None");
            let endpoints = self.selected(svc).into_iter().filter(|p| p.endpoint);
            for p in endpoints.take(if headless { usize::MAX } else { 1 }) {
                text.push_str(&format!("{} {names}\n", p.ip));
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
