//! The test harness: real `trow` processes on free loopback ports, each with its own temp dir,
//! stopped by PID when dropped.
//!
//! Tests never mock a service: they start the same binary operators run, in the one-process
//! default or the split topology (storage and gateway as separate processes), and talk to it over
//! HTTP or with real clients.

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
    let start = Instant::now();
    loop {
        if let Ok(out) = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output()
            && out.stdout == b"200"
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
    _tmp: Option<tempfile::TempDir>,
}

impl Trow {
    /// Starts Trow with a fresh temp data dir.
    pub fn start(topology: Topology) -> Trow {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut t = Trow::start_in(topology, &tmp.path().join("data"));
        t._tmp = Some(tmp);
        t
    }

    /// Starts Trow on an existing (or new) data dir, which outlives it.
    pub fn start_in(topology: Topology, data_dir: &Path) -> Trow {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let port = free_port();
        let gport = free_port();
        let addr = format!("127.0.0.1:{port}");
        let storage_addr = format!("127.0.0.1:{gport}");
        let logs = data_dir.parent().unwrap_or(data_dir).to_path_buf();
        let mut trow = match topology {
            Topology::OneProcess => {
                let mut cmd = Command::new(trow_bin());
                cmd.args([
                    "--bind",
                    &addr,
                    "--storage-listen",
                    &storage_addr,
                    "--data-dir",
                ])
                .arg(data_dir);
                let main = Proc::spawn(cmd, logs.join(format!("trow-{port}.log")));
                Trow {
                    topology,
                    url: format!("http://{addr}"),
                    addr,
                    storage_addr,
                    data_dir: data_dir.to_path_buf(),
                    main,
                    storage: None,
                    _tmp: None,
                }
            }
            Topology::Split => {
                let storage = Trow::spawn_storage(&storage_addr, data_dir, &logs);
                let mut cmd = Command::new(trow_bin());
                cmd.args([
                    "gateway",
                    "--bind",
                    &addr,
                    "--storage",
                    &format!("http://{storage_addr}"),
                ]);
                let main = Proc::spawn(cmd, logs.join(format!("gateway-{port}.log")));
                Trow {
                    topology,
                    url: format!("http://{addr}"),
                    addr,
                    storage_addr,
                    data_dir: data_dir.to_path_buf(),
                    main,
                    storage: Some(storage),
                    _tmp: None,
                }
            }
        };
        let url = format!("{}/v2/", trow.url);
        match trow.storage.as_mut() {
            Some(s) => wait_http_ok(&url, &mut [&mut trow.main, s]),
            None => wait_http_ok(&url, &mut [&mut trow.main]),
        }
        trow
    }

    fn spawn_storage(storage_addr: &str, data_dir: &Path, logs: &Path) -> Proc {
        let mut cmd = Command::new(trow_bin());
        cmd.args(["storage", "--listen", storage_addr, "--data-dir"])
            .arg(data_dir);
        let port = storage_addr.rsplit(':').next().unwrap_or("0");
        let mut p = Proc::spawn(cmd, logs.join(format!("storage-{port}-{}.log", now_ms())));
        wait_tcp(storage_addr, &mut p);
        p
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
        self.storage = Some(Trow::spawn_storage(
            &self.storage_addr,
            &self.data_dir,
            &logs,
        ));
    }

    /// `127.0.0.1:PORT/` + `repo`, the image reference prefix clients use.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{}", self.addr, repo_and_tag)
    }
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

pub mod clients;
pub mod fsck;
pub mod images;

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
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("data");
        std::fs::create_dir_all(&root).expect("create registry root");
        let addr = format!("127.0.0.1:{}", free_port());
        let config = tmp.path().join("config.yml");
        let yaml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: trow-tests-not-secret\n{extra_yaml}\n",
            root = root.display()
        );
        std::fs::write(&config, yaml).expect("write registry config");
        let proc = Distribution::spawn(&config, tmp.path());
        let mut d = Distribution {
            url: format!("http://{addr}"),
            addr,
            root,
            config,
            proc,
            _tmp: tmp,
        };
        wait_http_ok(&format!("{}/v2/", d.url), &mut [&mut d.proc]);
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
        let dir = self.config.parent().expect("config dir").to_path_buf();
        self.proc = Distribution::spawn(&self.config, &dir);
        wait_http_ok(&format!("{}/v2/", self.url), &mut [&mut self.proc]);
    }

    /// `127.0.0.1:PORT/` + `repo`, the image reference prefix clients use.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{}", self.addr, repo_and_tag)
    }
}
pub mod oci;
