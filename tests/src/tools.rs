//! The Go tools the tests drive: the OCI distribution-spec conformance suite, oras, crane and
//! grpcurl, built pinned from the Go module proxy by `scripts/go-tools.sh`.
//!
//! A missing binary fails the test with the command that installs it: a conformance or client test
//! must never pass by not running.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::clients::cmdline;

/// What to do when a tool is missing; scripts/test.sh does it before running the tests.
pub const INSTALL_HINT: &str = "run `eval \"$(scripts/go-tools.sh --env)\"` (it builds the pinned \
     conformance suite, oras, crane and grpcurl into a cache dir, puts them on PATH and sets \
     TROW_CONFORMANCE_BIN); scripts/test.sh does this itself";

/// The Go tool `name` (`oras`, `crane`, `grpcurl`) found on PATH; panics with [`INSTALL_HINT`].
pub fn go_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH: {INSTALL_HINT}"))
}

/// The conformance suite binary named by `$TROW_CONFORMANCE_BIN`; panics with [`INSTALL_HINT`].
pub fn conformance_bin() -> PathBuf {
    let p = std::env::var_os("TROW_CONFORMANCE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("TROW_CONFORMANCE_BIN is not set: {INSTALL_HINT}"));
    assert!(
        p.is_file(),
        "TROW_CONFORMANCE_BIN={} does not exist: {INSTALL_HINT}",
        p.display()
    );
    p
}

/// A private working dir for one test's tool runs: the current dir of every command (oras takes
/// file names relative to it) and an empty docker config, so no credentials or settings of the
/// machine's user leak into a test.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("docker-config")).expect("docker config dir");
        Workdir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `data` to `name` in the working dir; returns its path.
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// The Go tool `name` with `args`, run in the working dir.
    pub fn cmd<I, S>(&self, name: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(go_tool(name));
        c.args(args)
            .current_dir(self.dir.path())
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"));
        c
    }

    /// Runs the Go tool `name` and panics with its full output unless it succeeds; returns stdout.
    pub fn run<I, S>(&self, name: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        crate::clients::run(&mut self.cmd(name, args))
    }

    /// As [`Workdir::run`], parsing stdout as JSON (`--format json` of oras).
    pub fn run_json<I, S>(&self, name: &str, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(name, args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{name} printed no JSON ({e}):\n{out}"))
    }
}

impl Default for Workdir {
    fn default() -> Self {
        Workdir::new()
    }
}

/// Runs `cmd` with stdout and stderr captured to files in `dir`, killing it if it outlives
/// `limit` (a hang guard, not a speed check). Returns the status and both outputs.
pub fn run_bounded(mut cmd: Command, dir: &Path, limit: Duration) -> (ExitStatus, String, String) {
    let out_path = dir.join("stdout.txt");
    let err_path = dir.join("stderr.txt");
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let err = std::fs::File::create(&err_path).expect("create stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("could not run `{}`: {e}", cmdline(&cmd)));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{}` still running after {limit:?}, killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                cmdline(&cmd),
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// One entry of the conformance report that did not pass.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NotPassed {
    /// `test` (a spec in the results tree), `api` or `data` (the per-API and per-data-set tables).
    pub section: &'static str,
    /// The spec, API or data set name, e.g. `OCI Conformance Test/sha256 blobs/mount/blob-mount`.
    pub name: String,
    /// `Skip`, `Disabled`, `FAIL`, `Error`, ...
    pub status: String,
    /// The reason the suite gave (the first error line under a spec), if any.
    pub reason: String,
}

/// The conformance suite's stdout report, parsed.
///
/// The report is: `Test results`, an indented tree of `NAME: STATUS` lines (a ` - reason` line
/// under a leaf that did not pass), the configuration, `OCI Conformance Result: STATUS`, counts
/// (`  Pass....: 854`), then the `API conformance:` and `Data conformance:` tables.
#[derive(Clone, Debug, Default)]
pub struct ConformanceReport {
    /// `Pass` or `FAIL`, from `OCI Conformance Result:`.
    pub result: String,
    /// The counts by status, and `Total`.
    pub counts: BTreeMap<String, u64>,
    /// The result line and the counts, as printed.
    pub summary: Vec<String>,
    /// Every spec, API and data set whose status is not `Pass`.
    pub not_passed: Vec<NotPassed>,
}

impl ConformanceReport {
    pub fn parse(stdout: &str) -> ConformanceReport {
        let mut r = ConformanceReport::default();
        let lines: Vec<&str> = stdout.lines().collect();
        let mut section = "";
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            match t {
                "Test results" => section = "test",
                "Configuration:" => section = "config",
                "API conformance:" => section = "api",
                "Data conformance:" => section = "data",
                _ if t.starts_with("OCI Conformance Result:") => {
                    section = "counts";
                    r.result = t["OCI Conformance Result:".len()..].trim().to_string();
                    r.summary.push(t.to_string());
                }
                _ => {
                    let Some((name, status)) = t.rsplit_once(':') else {
                        continue;
                    };
                    let (name, status) = (name.trim_end_matches('.'), status.trim());
                    match section {
                        "counts" => {
                            if let Ok(n) = status.parse() {
                                r.counts.insert(name.to_string(), n);
                                r.summary.push(format!("{name}: {n}"));
                            }
                        }
                        "test" | "api" | "data" if status != "Pass" && !status.is_empty() => {
                            if section == "test" && !name.starts_with("OCI Conformance Test") {
                                continue; // a continuation line of a reason
                            }
                            let reason = lines
                                .get(i + 1)
                                .map(|l| l.trim())
                                .and_then(|l| l.strip_prefix("- "))
                                .unwrap_or("")
                                .to_string();
                            r.not_passed.push(NotPassed {
                                section: match section {
                                    "test" => "test",
                                    "api" => "api",
                                    _ => "data",
                                },
                                name: name.to_string(),
                                status: status.to_string(),
                                reason,
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        r
    }

    /// The count printed for `status` (`Pass`, `Skip`, `Disabled`, `FAIL`, `Error`, `Total`).
    pub fn count(&self, status: &str) -> u64 {
        self.counts.get(status).copied().unwrap_or(0)
    }
}

/// Runs the conformance suite (`$TROW_CONFORMANCE_BIN`) against the plain-HTTP registry at
/// `registry` (`HOST:PORT`) with `env` as its configuration, writing its reports (results.yaml,
/// junit.xml, report.html) to `results_dir`. Inherited `OCI_*` variables are removed and no
/// config file is read, so only `env` configures the run.
pub fn run_conformance(
    registry: &str,
    env: &[(&str, &str)],
    results_dir: &Path,
) -> (ExitStatus, String, String) {
    std::fs::create_dir_all(results_dir).expect("create results dir");
    let mut cmd = Command::new(conformance_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OCI_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(results_dir)
        .env("OCI_CONFIGURATION", "")
        .env("OCI_REGISTRY", registry)
        .env("OCI_TLS", "disabled")
        .env("OCI_RESULTS_DIR", results_dir)
        .envs(env.iter().copied());
    run_bounded(cmd, results_dir, Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Test results
OCI Conformance Test: Pass
  OCI Conformance Test/ping: Pass
    OCI Conformance Test/sha256 blobs/mount anonymous/blob-mount-anonymous: Skip
     - registry returned status 202, fell back to blob POST+PUT
    OCI Conformance Test/sha256 blobs/post cancel/blob-post-cancel: Disabled

Configuration:
  registry: 127.0.0.1:1
  apis:
    ping: true

OCI Conformance Result: Pass
  Disabled......................:          1
  Skip..........................:          1
  Pass..........................:        854
  FAIL..........................:          0
  Error.........................:          0
  Total.........................:        856

API conformance:
  Tag listing...................:       Pass
  Blob anonymous mount..........:       Skip

Data conformance:
  Artifact......................:       Pass
  Sparse Manifests..............:   Disabled
";

    #[test]
    fn parses_the_report() {
        let r = ConformanceReport::parse(SAMPLE);
        assert_eq!(r.result, "Pass");
        assert_eq!(r.count("Pass"), 854);
        assert_eq!(r.count("Total"), 856);
        assert_eq!(r.summary[0], "OCI Conformance Result: Pass");
        let np: Vec<(&str, &str, &str)> = r
            .not_passed
            .iter()
            .map(|n| (n.section, n.name.as_str(), n.status.as_str()))
            .collect();
        assert_eq!(
            np,
            [
                (
                    "test",
                    "OCI Conformance Test/sha256 blobs/mount anonymous/blob-mount-anonymous",
                    "Skip"
                ),
                (
                    "test",
                    "OCI Conformance Test/sha256 blobs/post cancel/blob-post-cancel",
                    "Disabled"
                ),
                ("api", "Blob anonymous mount", "Skip"),
                ("data", "Sparse Manifests", "Disabled"),
            ]
        );
        assert_eq!(
            r.not_passed[0].reason,
            "registry returned status 202, fell back to blob POST+PUT"
        );
    }
}
