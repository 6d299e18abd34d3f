//! The test harness: real `trow` processes on free loopback ports, each with its own temp dir,
//! stopped by PID when dropped.
//!
//! Tests never mock a service: they start the same binary operators run, in the one-process
//! default or the split topology (storage and gateway as separate processes), and talk to it over
//! HTTP or with real clients.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the registry is deployed for a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// `trow` with gateway and storage in one process.
    OneProcess,
    /// `trow storage` and `trow gateway` as two processes talking gRPC.
    Split,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The workspace's `target/` directory.
pub fn target_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// The `trow` binary under test: `$TROW_BIN`, else the one `cargo build` put in target/debug.
pub fn trow_bin() -> PathBuf {
    if let Ok(b) = std::env::var("TROW_BIN") {
        return PathBuf::from(b);
    }
    let p = target_dir().join("debug/trow");
    assert!(
        p.exists(),
        "{} missing: run `cargo build` first",
        p.display()
    );
    p
}

/// A child process killed (SIGKILL) and reaped on drop, its output in a log file.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("dup log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The most memory the process has held resident so far (`VmHWM` in /proc/PID/status), in
    /// bytes.
    pub fn peak_rss(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no VmHWM in {path}:\n{status}"));
        kib * 1024
    }

    /// SIGKILL: the process gets no chance to clean up, as in a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for a graceful exit; returns the exit status if it ended.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The log so far, for assertion messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `url` until it answers HTTP 200, or panics with `procs`' logs after 30 s.
pub fn wait_http_ok(url: &str, procs: &mut [&mut Proc]) {
    wait_http_status(url, "200", procs)
}

/// Polls `url` until it answers with HTTP `status` (e.g. `401` from a registry that requires
/// auth), or panics with `procs`' logs after 30 s.
pub fn wait_http_status(url: &str, status: &str, procs: &mut [&mut Proc]) {
    let start = Instant::now();
    loop {
        if let Ok(out) = Command::new("curl")
            // -k: a gateway under test may serve HTTPS with a test certificate.
            .args(["-k", "-s", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output()
            && out.stdout == status.as_bytes()
        {
            return;
        }
        for p in procs.iter_mut() {
            if p.exited() {
                panic!("process exited before {url} was ready:\n{}", p.log_text());
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            let logs: Vec<String> = procs.iter().map(|p| p.log_text()).collect();
            panic!("{url} not ready after 30s:\n{}", logs.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls a TCP port until something accepts on it.
pub fn wait_tcp(addr: &str, proc_: &mut Proc) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if proc_.exited() {
            panic!(
                "process exited before {addr} was ready:\n{}",
                proc_.log_text()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{addr} not ready after 30s:\n{}",
            proc_.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running Trow: the one-process default or the split topology.
pub struct Trow {
    pub topology: Topology,
    /// `http://127.0.0.1:PORT`, the OCI API root (without `/v2`).
    pub url: String,
    /// `127.0.0.1:PORT` of the HTTP gateway.
    pub addr: String,
    /// `127.0.0.1:PORT` of the storage service's gRPC server.
    pub storage_addr: String,
    pub data_dir: PathBuf,
    /// The one process (OneProcess) or the gateway (Split).
    pub main: Proc,
    /// The storage process in the split topology.
    pub storage: Option<Proc>,
    /// The proxy processes (`trow proxy`) in the split topology, started when the flags name a
    /// config file (see [`Flags::config`]); empty otherwise and in the one-process topology.
    pub proxies: Vec<Proc>,
    /// `127.0.0.1:PORT` of each proxy's gRPC server, in the order of [`Trow::proxies`].
    pub proxy_addrs: Vec<String>,
    /// The `trow admission` process in the split topology, when the flags asked for it.
    pub admission: Option<Proc>,
    /// Flags the storage service was started with, for restarts.
    storage_flags: Vec<String>,
    /// The command line `main` was started with (program first), for [`Trow::restart_main`].
    main_argv: Vec<OsString>,
    /// What an anonymous `GET /v2/` answers once Trow is up: `200`, or `401` with users.
    ready: &'static str,
    /// The config file and flags the proxies were started with, for [`Trow::add_proxy`].
    proxy_config: Option<PathBuf>,
    proxy_flags: Vec<String>,
    /// The environment the proxies were started with, for [`Trow::add_proxy`].
    proxy_env: Vec<(String, String)>,
    /// `http`, or `https` when the services speak mutual TLS.
    grpc_scheme: &'static str,
    _tmp: Option<tempfile::TempDir>,
}

/// Extra flags for a Trow under test: `gateway` flags go to the HTTP side, `storage` flags to the
/// storage service, `proxy` flags to the pull-through cache; in the one-process topology all go
/// to the one `trow`.
///
/// With a `config_file` (its `registry_proxies` section configures the pull-through cache), the
/// one process gets `--config-file`, and the split topology runs `proxies` (at least one)
/// `trow proxy --config-file` processes between storage and the gateway, which gets all their
/// URLs in `--proxy`.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub gateway: Vec<String>,
    pub storage: Vec<String>,
    pub proxy: Vec<String>,
    pub config_file: Option<PathBuf>,
    /// How many `trow proxy` replicas the split topology runs (0 counts as 1).
    pub proxies: usize,
    /// Split topology: the gateway reaches the proxies by one host name (see [`ProxyName`]).
    pub proxy_name: Option<ProxyName>,
    /// Split topology: run `trow admission` (with `--config-file` and these flags, and the
    /// first proxy for pre-warming) and give the gateway `--admission`. In one process these
    /// flags go to the one `trow`, which always runs the admission service.
    pub admission: Option<Vec<String>>,
    /// Environment variables for every Trow process (the one `trow`, or gateway, storage,
    /// proxies and admission), e.g. `RUST_LOG`, `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub env: Vec<(String, String)>,
    /// Flags every process gets once (the one `trow`; in the split topology storage, proxies,
    /// admission and the gateway): the trust between services, `--grpc-tls-*` and
    /// `--grpc-token-file`. With `--grpc-tls-cert` the services are named by `https://` URLs.
    pub grpc: Vec<String>,
    /// The loopback address every process listens on (default `127.0.0.1`), for tests that
    /// own addresses of their own, or whose certificates name one.
    pub ip: Option<String>,
}

/// One host name for several proxy replicas, as a Kubernetes headless Service gives: replica
/// `i` listens on `ips[i]`, all on one port, and the gateway is started with
/// `--proxy http://NAME:PORT` in a mount namespace of its own where `/etc/hosts` is
/// `hosts_file`, which maps the name to the replicas' addresses. Rewriting that file (in place,
/// see [`ProxyName::point_at`]) changes what the name resolves to, for the gateway only.
#[derive(Clone, Debug)]
pub struct ProxyName {
    pub name: String,
    pub ips: Vec<String>,
    pub hosts_file: PathBuf,
}

/// A command that runs `program` (with the arguments added after it) in a mount namespace of its
/// own where `/etc/hosts` is `hosts_file`, bind-mounted, so the names in it resolve for that
/// process alone (needs root).
pub fn with_hosts_file(hosts_file: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/hosts && exec "$@""#,
    ])
    .arg(hosts_file)
    .arg(program);
    cmd
}

impl ProxyName {
    /// Makes the name resolve to `ips` (in place: the gateway sees the bind-mounted inode).
    pub fn point_at(&self, ips: &[&str]) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for ip in ips {
            text.push_str(&format!("{ip} {}\n", self.name));
        }
        std::fs::write(&self.hosts_file, text).expect("write the hosts file");
    }
}

impl Flags {
    pub fn gateway(args: &[&str]) -> Flags {
        Flags {
            gateway: args.iter().map(|a| a.to_string()).collect(),
            ..Flags::default()
        }
    }

    pub fn storage(args: &[&str]) -> Flags {
        Flags {
            storage: args.iter().map(|a| a.to_string()).collect(),
            ..Flags::default()
        }
    }

    /// Trow with the pull-through cache configured by the YAML file `path`.
    pub fn config(path: &Path) -> Flags {
        Flags {
            config_file: Some(path.to_path_buf()),
            ..Flags::default()
        }
    }

    /// The same flags, with the admission service (flags `args`) in the split topology.
    pub fn with_admission(mut self, args: &[&str]) -> Flags {
        self.admission = Some(args.iter().map(|a| a.to_string()).collect());
        self
    }

    /// The same flags, with `var=value` in every Trow process's environment.
    pub fn with_env(mut self, var: &str, value: &str) -> Flags {
        self.env.push((var.to_string(), value.to_string()));
        self
    }

    /// Whether these gateway flags configure users: then `/v2/` answers 401 once Trow is up.
    pub fn requires_auth(&self) -> bool {
        self.gateway.iter().any(|a| {
            ["-U", "--user", "--htpasswd"].contains(&a.as_str())
                || a.starts_with("--user=")
                || a.starts_with("--htpasswd=")
        })
    }

    /// The same flags, with `args` given once to every process (see [`Flags::grpc`]).
    pub fn with_grpc(mut self, args: &[&str]) -> Flags {
        self.grpc = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// The same flags, every process listening on `ip` (see [`Flags::ip`]).
    pub fn on_ip(mut self, ip: &str) -> Flags {
        self.ip = Some(ip.to_string());
        self
    }

    /// `https` when the services speak mutual TLS, else `http`.
    pub fn grpc_scheme(&self) -> &'static str {
        if self.grpc.iter().any(|a| a.starts_with("--grpc-tls-cert")) {
            "https"
        } else {
            "http"
        }
    }

    /// The same flags, with `n` proxy replicas in the split topology.
    pub fn with_proxies(mut self, n: usize) -> Flags {
        self.proxies = n;
        self
    }
}

/// Waits until `proc_`'s log has a line containing `prefix`; returns the rest of that line.
///
/// Tests start Trow on port 0 and read the address it prints: a port picked by the test and
/// released before Trow binds it can be taken meanwhile by any outgoing connection.
pub fn wait_for_line(proc_: &mut Proc, prefix: &str) -> String {
    let start = Instant::now();
    loop {
        let log = proc_.log_text();
        if let Some(rest) = log
            .lines()
            .find_map(|l| l.find(prefix).map(|i| &l[i + prefix.len()..]))
        {
            return rest.to_string();
        }
        if proc_.exited() {
            panic!("process exited before printing {prefix:?}:\n{log}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {prefix:?} after 30s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `HOST:PORT` at the start of `s` (up to a space, comma or quote).
pub fn addr_prefix(s: &str) -> String {
    s.split([' ', ',', '"']).next().unwrap_or("").to_string()
}

impl Trow {
    /// Starts Trow with a fresh temp data dir.
    pub fn start(topology: Topology) -> Trow {
        Trow::start_with(topology, Flags::default())
    }

    /// Starts Trow with a fresh temp data dir and extra flags.
    pub fn start_with(topology: Topology, flags: Flags) -> Trow {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut t = Trow::start_in_with(topology, &tmp.path().join("data"), flags);
        t._tmp = Some(tmp);
        t
    }

    /// Starts Trow with a fresh temp data dir and the pull-through cache configured by the YAML
    /// file `config`: in the split topology, storage, one `trow proxy` and the gateway.
    pub fn start_proxy_with(topology: Topology, config: &Path) -> Trow {
        Trow::start_with(topology, Flags::config(config))
    }

    /// Starts Trow on an existing (or new) data dir, which outlives it.
    pub fn start_in(topology: Topology, data_dir: &Path) -> Trow {
        Trow::start_in_with(topology, data_dir, Flags::default())
    }

    /// Starts Trow on an existing (or new) data dir with extra flags.
    pub fn start_in_with(topology: Topology, data_dir: &Path, mut flags: Flags) -> Trow {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        if let (Topology::Split, Some(config)) = (topology, &flags.config_file) {
            // Storage reads the cache's size bound and the retention rules from it.
            flags.storage.push("--config-file".into());
            flags.storage.push(config.display().to_string());
        }
        let logs = data_dir.parent().unwrap_or(data_dir).to_path_buf();
        let ready = if flags.requires_auth() { "401" } else { "200" };
        let scheme = flags.grpc_scheme();
        let ip = flags.ip.clone().unwrap_or_else(|| "127.0.0.1".to_string());
        let any_port = format!("{ip}:0");
        if topology == Topology::Split {
            let grpc = flags.grpc.clone();
            flags.gateway.extend(grpc.iter().cloned());
            flags.storage.extend(grpc.iter().cloned());
            flags.proxy.extend(grpc.iter().cloned());
            if let Some(a) = flags.admission.as_mut() {
                a.extend(grpc.iter().cloned());
            }
        }
        let mut proxies = Vec::new();
        let mut proxy_addrs = Vec::new();
        let mut admission_proc = None;
        let main_argv;
        let (main, storage, storage_addr) = match topology {
            Topology::OneProcess => {
                let mut cmd = Command::new(trow_bin());
                cmd.args([
                    "--bind",
                    &any_port,
                    "--storage-listen",
                    &any_port,
                    "--data-dir",
                ])
                .arg(data_dir)
                .args(&flags.grpc)
                .args(&flags.gateway)
                .args(&flags.storage)
                .args(&flags.proxy)
                .args(flags.admission.iter().flatten())
                .envs(flags.env.iter().map(|(k, v)| (k, v)));
                if let Some(config) = &flags.config_file {
                    cmd.arg("--config-file").arg(config);
                }
                if flags.ip.is_some() {
                    cmd.args(["--proxy-listen", &any_port, "--admission-listen", &any_port]);
                }
                main_argv = argv(&cmd);
                let mut main = Proc::spawn(cmd, logs.join(format!("trow-{}.log", now_ms())));
                let storage_addr = addr_prefix(&wait_for_line(&mut main, "trow storage: gRPC on "));
                (main, None, storage_addr)
            }
            Topology::Split => {
                let mut storage =
                    Trow::spawn_storage(&any_port, data_dir, &logs, &flags.storage, &flags.env);
                let storage_addr =
                    addr_prefix(&wait_for_line(&mut storage, "trow storage: gRPC on "));
                let named = flags.proxy_name.as_ref();
                if let Some(config) = &flags.config_file {
                    let count = named.map_or(flags.proxies.max(1), |n| n.ips.len());
                    // Named replicas share one port: the first one's.
                    let listen = |i: usize, port: &str| match named {
                        Some(n) => format!("{}:{port}", n.ips[i]),
                        None => any_port.clone(),
                    };
                    let mut port = "0".to_string();
                    for i in 0..count {
                        let mut p = Trow::spawn_proxy(
                            &listen(i, &port),
                            &format!("{scheme}://{storage_addr}"),
                            config,
                            &logs,
                            i,
                            &flags.proxy,
                            &flags.env,
                        );
                        let addr = addr_prefix(&wait_for_line(&mut p, "trow proxy: gRPC on "));
                        port = addr.rsplit_once(':').expect("HOST:PORT").1.to_string();
                        proxy_addrs.push(addr);
                        proxies.push(p);
                    }
                }
                let mut admission = None;
                if let Some(args) = &flags.admission {
                    let mut cmd = Command::new(trow_bin());
                    cmd.args(["admission", "--listen", &any_port])
                        .args(args)
                        .envs(flags.env.iter().map(|(k, v)| (k, v)));
                    if let Some(config) = &flags.config_file {
                        cmd.arg("--config-file").arg(config);
                    }
                    if let Some(p) = proxy_addrs.first() {
                        cmd.args(["--proxy", &format!("{scheme}://{p}")]);
                    }
                    let mut p = Proc::spawn(cmd, logs.join(format!("admission-{}.log", now_ms())));
                    let addr = addr_prefix(&wait_for_line(&mut p, "trow admission: gRPC on "));
                    admission = Some((addr, p));
                }
                let mut cmd = match named {
                    Some(n) => {
                        n.point_at(&n.ips.iter().map(String::as_str).collect::<Vec<_>>());
                        with_hosts_file(&n.hosts_file, trow_bin())
                    }
                    None => Command::new(trow_bin()),
                };
                cmd.args([
                    "gateway",
                    "--bind",
                    &any_port,
                    "--storage",
                    &format!("{scheme}://{storage_addr}"),
                ]);
                if let Some(config) = &flags.config_file {
                    // The gateway reads the authorization rules from it.
                    cmd.arg("--config-file").arg(config);
                }
                match (named, proxy_addrs.first()) {
                    (Some(n), Some(first)) => {
                        let port = first.rsplit_once(':').expect("HOST:PORT").1;
                        cmd.args(["--proxy", &format!("{scheme}://{}:{port}", n.name)]);
                    }
                    _ if !proxy_addrs.is_empty() => {
                        let urls: Vec<String> = proxy_addrs
                            .iter()
                            .map(|a| format!("{scheme}://{a}"))
                            .collect();
                        cmd.args(["--proxy", &urls.join(",")]);
                    }
                    _ => {}
                }
                if let Some((a, _)) = &admission {
                    cmd.args(["--admission", &format!("{scheme}://{a}")]);
                }
                cmd.args(&flags.gateway)
                    .envs(flags.env.iter().map(|(k, v)| (k, v)));
                main_argv = argv(&cmd);
                let main = Proc::spawn(cmd, logs.join(format!("gateway-{}.log", now_ms())));
                admission_proc = admission.map(|(_, p)| p);
                (main, Some(storage), storage_addr)
            }
        };
        let mut main = main;
        let url = addr_prefix(&wait_for_line(&mut main, "trow gateway: OCI registry on "));
        let addr = url.split_once("://").map_or(&*url, |(_, a)| a).to_string();
        let mut trow = Trow {
            topology,
            url,
            addr,
            storage_addr,
            data_dir: data_dir.to_path_buf(),
            main,
            storage,
            proxies,
            proxy_addrs,
            admission: admission_proc,
            storage_flags: flags.storage,
            main_argv,
            ready,
            proxy_config: flags.config_file,
            proxy_flags: flags.proxy,
            proxy_env: flags.env,
            grpc_scheme: scheme,
            _tmp: None,
        };
        let v2 = format!("{}/v2/", trow.url);
        let mut procs: Vec<&mut Proc> = vec![&mut trow.main];
        procs.extend(trow.storage.as_mut());
        procs.extend(trow.proxies.iter_mut());
        procs.extend(trow.admission.as_mut());
        wait_http_status(&v2, ready, &mut procs);
        trow
    }

    /// Split topology: starts one more `trow proxy` on `listen` (`IP:PORT`), as a pod that
    /// comes up; it is not in the gateway's `--proxy` list, so only a name that resolves to it
    /// (see [`ProxyName`]) makes the gateway use it.
    pub fn add_proxy(&mut self, listen: &str) {
        assert_eq!(self.topology, Topology::Split);
        let config = self
            .proxy_config
            .clone()
            .expect("a Trow with a proxy config");
        let logs = self
            .data_dir
            .parent()
            .unwrap_or(&self.data_dir)
            .to_path_buf();
        let replica = self.proxies.len();
        let mut p = Trow::spawn_proxy(
            listen,
            &format!("{}://{}", self.grpc_scheme, self.storage_addr),
            &config,
            &logs,
            replica,
            &self.proxy_flags,
            &self.proxy_env,
        );
        let addr = addr_prefix(&wait_for_line(&mut p, "trow proxy: gRPC on "));
        self.proxy_addrs.push(addr);
        self.proxies.push(p);
    }

    fn spawn_proxy(
        listen: &str,
        storage_url: &str,
        config: &Path,
        logs: &Path,
        replica: usize,
        flags: &[String],
        env: &[(String, String)],
    ) -> Proc {
        let mut cmd = Command::new(trow_bin());
        cmd.args([
            "proxy",
            "--listen",
            listen,
            "--storage",
            storage_url,
            "--config-file",
        ])
        .arg(config)
        .args(flags)
        .envs(env.iter().map(|(k, v)| (k, v)));
        Proc::spawn(cmd, logs.join(format!("proxy-{replica}-{}.log", now_ms())))
    }

    fn spawn_storage(
        storage_addr: &str,
        data_dir: &Path,
        logs: &Path,
        flags: &[String],
        env: &[(String, String)],
    ) -> Proc {
        let mut cmd = Command::new(trow_bin());
        cmd.args(["storage", "--listen", storage_addr, "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .envs(env.iter().map(|(k, v)| (k, v)));
        Proc::spawn(cmd, logs.join(format!("storage-{}.log", now_ms())))
    }

    /// Split topology only: SIGKILLs the storage process, as in a crash.
    pub fn kill_storage(&mut self) {
        self.storage.as_mut().expect("split topology").kill9();
    }

    /// Split topology only: starts the storage process again on the same port and data dir.
    pub fn restart_storage(&mut self) {
        assert_eq!(self.topology, Topology::Split);
        let logs = self
            .data_dir
            .parent()
            .unwrap_or(&self.data_dir)
            .to_path_buf();
        let mut p = Trow::spawn_storage(
            &self.storage_addr,
            &self.data_dir,
            &logs,
            &self.storage_flags,
            &[],
        );
        wait_tcp(&self.storage_addr, &mut p);
        self.storage = Some(p);
    }

    /// SIGKILLs `main` (the gateway in the split topology, the one `trow` otherwise) and
    /// starts it again with the same flags, on the same gateway address (and, in one process, the
    /// same storage address and data dir); returns once `/v2/` answers 200 (401 with users).
    pub fn restart_main(&mut self) {
        self.main.kill9();
        let logs = self
            .data_dir
            .parent()
            .unwrap_or(&self.data_dir)
            .to_path_buf();
        let mut args = self.main_argv.clone();
        let bound = |args: &mut Vec<OsString>, flag: &str, addr: &str| {
            let i = args
                .iter()
                .position(|a| a == flag)
                .unwrap_or_else(|| panic!("{flag} in {args:?}"));
            args[i + 1] = addr.into();
        };
        bound(&mut args, "--bind", &self.addr);
        let role = match self.topology {
            Topology::OneProcess => {
                bound(&mut args, "--storage-listen", &self.storage_addr);
                "trow"
            }
            Topology::Split => "gateway",
        };
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]);
        self.main = Proc::spawn(cmd, logs.join(format!("{role}-{}.log", now_ms())));
        wait_for_line(&mut self.main, "trow gateway: OCI registry on ");
        let v2 = format!("{}/v2/", self.url);
        wait_http_status(&v2, self.ready, &mut [&mut self.main]);
    }

    /// Split topology only: another replica of the gateway, with the same flags on a port of its
    /// own (as a Deployment's second pod); its process and URL (`http://IP:PORT`).
    pub fn another_gateway(&self) -> (Proc, String) {
        self.another_gateway_via(&self.storage_addr)
    }

    /// [`Trow::another_gateway`] reaching storage at `storage_addr` (`IP:PORT`: a relay in
    /// front of it, say).
    pub fn another_gateway_via(&self, storage_addr: &str) -> (Proc, String) {
        assert_eq!(self.topology, Topology::Split);
        let logs = self
            .data_dir
            .parent()
            .unwrap_or(&self.data_dir)
            .to_path_buf();
        let mut args = self.main_argv.clone();
        let i = args
            .iter()
            .position(|a| a == "--bind")
            .expect("--bind in the gateway's flags");
        let ip = self.addr.rsplit_once(':').map_or("127.0.0.1", |(ip, _)| ip);
        args[i + 1] = format!("{ip}:0").into();
        let i = args
            .iter()
            .position(|a| a == "--storage")
            .expect("--storage in the gateway's flags");
        let scheme = self.grpc_scheme;
        args[i + 1] = format!("{scheme}://{storage_addr}").into();
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]);
        let mut gw = Proc::spawn(cmd, logs.join(format!("gateway-{}.log", now_ms())));
        let url = addr_prefix(&wait_for_line(&mut gw, "trow gateway: OCI registry on "));
        wait_http_status(&format!("{url}/v2/"), self.ready, &mut [&mut gw]);
        (gw, url)
    }

    /// `127.0.0.1:PORT/` + `repo`, the image reference prefix clients use.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{}", self.addr, repo_and_tag)
    }

    /// Every process of this Trow, named by its role (`trow`, or `gateway`, `storage`,
    /// `proxy-0`... in the split topology).
    pub fn processes(&self) -> Vec<(String, &Proc)> {
        let main = match self.topology {
            Topology::OneProcess => "trow",
            Topology::Split => "gateway",
        };
        let mut all = vec![(main.to_string(), &self.main)];
        all.extend(self.storage.iter().map(|p| ("storage".to_string(), p)));
        all.extend(
            self.proxies
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("proxy-{i}"), p)),
        );
        all.extend(self.admission.iter().map(|p| ("admission".to_string(), p)));
        all
    }
}

/// `cmd`'s program and arguments.
fn argv(cmd: &Command) -> Vec<OsString> {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsString::from)
        .collect()
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub mod chart;
pub mod clients;
pub mod fsck;
pub mod images;
pub mod upstream;

/// A running CNCF distribution registry (`/usr/bin/docker-registry`, 2.8): filesystem storage in
/// its own temp dir, deletes enabled, plain HTTP on a free loopback port. Killed on drop.
///
/// Used as a known-good reference to validate the client tests, and as an upstream registry.
pub struct Distribution {
    /// `http://127.0.0.1:PORT`, the API root (without `/v2`).
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The filesystem storage root (`storage.filesystem.rootdirectory`).
    pub root: PathBuf,
    /// The config file it was started with.
    pub config: PathBuf,
    pub proc: Proc,
    /// The status `/v2/` answers once it is up (`200`, or `401` with auth).
    ready: String,
    _tmp: tempfile::TempDir,
}

impl Distribution {
    /// The binary: `$DISTRIBUTION_BIN`, else `/usr/bin/docker-registry`.
    pub fn bin() -> PathBuf {
        std::env::var_os("DISTRIBUTION_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
    }

    /// Starts a registry with the default configuration.
    pub fn start() -> Distribution {
        Distribution::start_with("")
    }

    /// Starts a registry whose config file gets `extra_yaml` appended: top-level keys other than
    /// `version`, `log`, `storage` and `http` (e.g. an `auth:` or `proxy:` section).
    pub fn start_with(extra_yaml: &str) -> Distribution {
        Distribution::start_expecting(extra_yaml, "200")
    }

    /// As [`Distribution::start_with`], for configs under which an anonymous `GET /v2/` answers
    /// `ready` once the registry is up (`401` with an `auth:` section).
    pub fn start_expecting(extra_yaml: &str, ready: &str) -> Distribution {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("data");
        std::fs::create_dir_all(&root).expect("create registry root");
        let config = tmp.path().join("config.yml");
        // Port 0, then the address it logs: see `wait_for_line`.
        let yaml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:0\n  secret: trow-tests-not-secret\n{extra_yaml}\n",
            root = root.display()
        );
        std::fs::write(&config, yaml).expect("write registry config");
        let mut proc = Distribution::spawn(&config, tmp.path());
        let addr = addr_prefix(&wait_for_line(&mut proc, "listening on "));
        let mut d = Distribution {
            url: format!("http://{addr}"),
            addr,
            root,
            config,
            proc,
            ready: ready.to_string(),
            _tmp: tmp,
        };
        wait_http_status(&format!("{}/v2/", d.url), ready, &mut [&mut d.proc]);
        d
    }

    fn spawn(config: &Path, dir: &Path) -> Proc {
        let mut cmd = Command::new(Distribution::bin());
        cmd.arg("serve").arg(config);
        Proc::spawn(cmd, dir.join(format!("registry-{}.log", now_ms())))
    }

    /// SIGKILLs the registry, as in a crash.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Starts the registry again with the same config, port and storage.
    pub fn restart(&mut self) {
        self.proc.kill9();
        // Back on the port it had, not a new one.
        let yaml = std::fs::read_to_string(&self.config).expect("read registry config");
        let yaml = yaml.replace("addr: 127.0.0.1:0\n", &format!("addr: {}\n", self.addr));
        std::fs::write(&self.config, yaml).expect("write registry config");
        let dir = self.config.parent().expect("config dir").to_path_buf();
        self.proc = Distribution::spawn(&self.config, &dir);
        wait_http_status(
            &format!("{}/v2/", self.url),
            &self.ready,
            &mut [&mut self.proc],
        );
    }

    /// `127.0.0.1:PORT/` + `repo`, the image reference prefix clients use.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{}", self.addr, repo_and_tag)
    }
}
/// `trow gc` against the storage service at `storage_addr` (`HOST:PORT`): whether it succeeded,
/// and its stdout then stderr.
pub fn trow_gc(storage_addr: &str, dry_run: bool) -> (bool, String) {
    let mut cmd = Command::new(trow_bin());
    cmd.args(["gc", "--storage", &format!("http://{storage_addr}")]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().expect("run trow gc");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{text}{err}"))
}

pub mod oci;
pub mod otlp;
pub mod tmpfs;
pub mod tools;

/// Runs `cmd` until it exits (failing the test if it runs longer than `limit`); its status,
/// its stdout (the log), its stderr, and how long it ran.
pub fn run_to_exit(
    mut cmd: Command,
    limit: Duration,
) -> (std::process::ExitStatus, String, String, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let (out, err): (PathBuf, PathBuf) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, read(&out), read(&err), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {limit:?}:\n{}{}",
                read(&out),
                read(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `module::scenario(topology[, ip])` in both topologies, as the tests
/// `scenario::one_process` and `scenario::split`; with IPs (each a loopback address of its
/// own, for upstreams), the one-process run gets the first, the split run the second.
// `crate::` on purpose: the scenarios live in the test crate that calls the macro.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! both_topologies {
    ($module:ident :: $scenario:ident $(, $one:literal, $split:literal)?) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread")]
            async fn one_process() {
                crate::$module::$scenario($crate::Topology::OneProcess $(, $one)?).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn split() {
                crate::$module::$scenario($crate::Topology::Split $(, $split)?).await;
            }
        }
    };
}
