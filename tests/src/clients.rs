//! Real registry clients driven as processes: skopeo, podman (with private storage) and
//! containerd (a private daemon) + ctr.
//!
//! Every helper that runs a command returns its output and, on failure, panics with the command
//! line, exit status, stdout and stderr, so a failing test says exactly what the client saw.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Proc;

/// The command line of `cmd`, for messages.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion (stdin closed), capturing its output.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run `{}`: {e}", cmdline(cmd)))
}

/// A human-readable report of a finished command.
pub fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        cmdline(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` and panics with its full output unless it succeeds. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(out.status.success(), "{}", describe(cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `Command::new(program).args(args)`.
pub fn command<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Prints the given log files to stderr when dropped during a panic, so a failing test shows what
/// the registry logged alongside what the client saw.
pub struct LogsOnPanic(pub Vec<PathBuf>);

impl LogsOnPanic {
    pub fn trow(t: &crate::Trow) -> LogsOnPanic {
        let mut logs = vec![t.main.log.clone()];
        if let Some(s) = &t.storage {
            logs.push(s.log.clone());
        }
        logs.extend(t.proxies.iter().map(|p| p.log.clone()));
        LogsOnPanic(logs)
    }

    pub fn distribution(d: &crate::Distribution) -> LogsOnPanic {
        LogsOnPanic(vec![d.proc.log.clone()])
    }
}

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for l in &self.0 {
                let text = std::fs::read_to_string(l).unwrap_or_default();
                // The tail is what matters; a long test can log a lot.
                let start = text.len().saturating_sub(64 * 1024);
                let start = (start..text.len())
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(text.len());
                eprintln!("===== {} (tail) =====\n{}", l.display(), &text[start..]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// skopeo

/// A `skopeo` command with the given arguments.
pub fn skopeo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    command("skopeo", args)
}

/// `skopeo inspect --raw` of `docker://reference` over plain HTTP: the manifest bytes the registry
/// serves.
pub fn registry_raw_manifest(reference: &str) -> Vec<u8> {
    let mut cmd = skopeo([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", describe(&cmd, &out));
    out.stdout
}

/// The manifest digest an OCI layout's `index.json` records for `tag`.
pub fn layout_tag_digest(layout: &Path, tag: &str) -> String {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("index.json"))
            .unwrap_or_else(|e| panic!("read {}/index.json: {e}", layout.display())),
    )
    .expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no tag {tag} in {}/index.json: {index}", layout.display()))
}

/// Asserts every file in an OCI layout's `blobs/sha256` hashes to its name.
pub fn assert_layout_blobs_intact(layout: &Path) {
    let dir = layout.join("blobs/sha256");
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        let data = std::fs::read(&p).expect("read blob");
        let name = p.file_name().unwrap().to_string_lossy();
        assert_eq!(
            crate::sha256_digest(&data),
            format!("sha256:{name}"),
            "blob {} does not match its name",
            p.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// podman

/// podman with private storage (root, runroot, tmpdir) in a temp dir, so tests neither share
/// state nor touch the machine's images and can run in parallel.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}

impl Podman {
    pub fn new() -> Podman {
        Podman {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A podman command with this instance's storage and the given arguments.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(args);
        c
    }

    /// Runs podman with `args`, panicking with its output unless it succeeds. Returns stdout.
    pub fn run<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run(&mut self.cmd(args))
    }

    /// A scratch path inside this instance's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // vfs layers are plain directories; nothing is mounted once the commands have exited.
        // `podman system reset` is unnecessary: the temp dir goes away.
    }
}

// ---------------------------------------------------------------------------------------------
// containerd

/// A private containerd daemon: own root, state and gRPC socket in a temp dir, CRI and snapshotters
/// that cannot work here disabled. Stopped by PID on drop.
pub struct Containerd {
    pub socket: PathBuf,
    pub namespace: String,
    pub proc: Proc,
    dir: tempfile::TempDir,
}

impl Default for Containerd {
    fn default() -> Self {
        Containerd::start()
    }
}

impl Containerd {
    pub fn start() -> Containerd {
        // Unix socket paths are limited to 108 bytes: keep the dir short, under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("ctd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let socket = d.join("c.sock");
        assert!(
            socket.as_os_str().len() + ".ttrpc".len() < 100,
            "socket path too long: {}",
            socket.display()
        );
        let config = d.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/c.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
                d = d.display()
            ),
        )
        .expect("write containerd config");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config);
        let mut proc = Proc::spawn(cmd, d.join("containerd.log"));
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if proc.exited() {
                panic!("containerd exited:\n{}", proc.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd not ready after 30s:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let c = Containerd {
            socket,
            namespace: "trow-tests".into(),
            proc,
            dir,
        };
        // The daemon answers `version` once its services are registered.
        c.run(["version"]);
        c
    }

    /// A `ctr` command against this daemon, in its namespace, with the given arguments.
    pub fn ctr<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.namespace])
            .args(args);
        c
    }

    /// Runs ctr with `args`, panicking with its output (and the daemon's log) unless it succeeds.
    /// Returns stdout.
    pub fn run<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.ctr(args);
        let out = output(&mut cmd);
        assert!(
            out.status.success(),
            "{}\n--- containerd log (tail) ---\n{}",
            describe(&cmd, &out),
            tail(&self.proc.log_text(), 8000)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr images ls`: (ref, media type, digest, platforms) of every image.
    pub fn images(&self) -> Vec<CtrImage> {
        let out = self.run(["images", "ls"]);
        out.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // REF TYPE DIGEST SIZE(2 fields: "5.8 KiB") PLATFORMS LABELS
                (f.len() >= 6).then(|| CtrImage {
                    reference: f[0].to_string(),
                    media_type: f[1].to_string(),
                    digest: f[2].to_string(),
                    platforms: f[5].to_string(),
                })
            })
            .collect()
    }

    /// The image `reference` from `ctr images ls`, or a panic listing what is there.
    pub fn image(&self, reference: &str) -> CtrImage {
        let all = self.images();
        all.iter()
            .find(|i| i.reference == reference)
            .cloned()
            .unwrap_or_else(|| panic!("{reference} not in `ctr images ls`: {all:#?}"))
    }
}

/// One row of `ctr images ls`.
#[derive(Clone, Debug)]
pub struct CtrImage {
    pub reference: String,
    pub media_type: String,
    pub digest: String,
    pub platforms: String,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Graceful stop first so it releases its mounts, then make sure it is gone.
        let _ = self.proc.terminate(Duration::from_secs(10));
        self.proc.kill9();
        // Unmount anything left under the temp dir (snapshots mounted mid-unpack).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = self.dir.path().to_string_lossy().into_owned();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| m.starts_with(&prefix))
                .collect();
            points.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in points {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
    }
}

/// The last `n` bytes of `s` (on a char boundary).
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
