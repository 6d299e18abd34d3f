//! `trow containerd-config`: the `hosts.toml` files (containerd's `config_path` layout, 1.5+ and
//! 2.x) that make a node pull through Trow.
//!
//! Each file names Trow as a mirror with `pull` and `resolve` only: a node must never push into
//! the cache, and containerd tries the mirror first and the registry's own `server` after it.
//! containerd adds `?ns=<registry>` to every request it sends a mirror, which is how Trow knows
//! which upstream an unprefixed path (`/v2/library/nginx/...`) belongs to.
//!
//! The files are built as TOML values and serialized by the `toml` crate, so no input (a path
//! with a quote, a host) can change a file's shape; inputs are checked first anyway, because a
//! registry name becomes a directory name under `--out-dir`.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory containerd reads for a registry with no directory of its own.
pub const DEFAULT_DIR: &str = "_default";

/// Why a set of files cannot be made or written.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error(
        "invalid mirror URL {0:?}: want http://HOST[:PORT] or https://HOST[:PORT] (no path, user or query)"
    )]
    MirrorUrl(String),
    #[error(
        "invalid registry {0:?}: want a host name or IP with an optional :PORT as containerd names \
         its directory (e.g. docker.io, 127.0.0.1:5000), or _default"
    )]
    Registry(String),
    #[error("registry {0} given twice")]
    Duplicate(String),
    #[error("--ca-file {0:?} is empty or holds a newline")]
    CaFile(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How containerd checks the mirror's certificate (https mirrors only; ignored for http).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MirrorTls {
    /// The node's system roots.
    #[default]
    System,
    /// This CA bundle (a path on the node; relative paths are relative to the host's directory,
    /// as containerd reads them).
    Ca(PathBuf),
    /// No verification at all.
    SkipVerify,
}

/// One file: `<dir>/hosts.toml` under the hosts directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostsFile {
    /// `_default`, or the registry's directory name (`docker.io`, `127.0.0.1:5000`).
    pub dir: String,
    pub text: String,
}

impl HostsFile {
    /// `<dir>/hosts.toml`.
    pub fn relative_path(&self) -> PathBuf {
        Path::new(&self.dir).join("hosts.toml")
    }
}

/// Checks a mirror URL: `http` or `https`, a host, an optional port, nothing else (containerd
/// adds `/v2` itself). Returns it without a trailing `/`.
pub fn check_mirror_url(url: &str) -> Result<String, ContainerdError> {
    let bad = || ContainerdError::MirrorUrl(url.to_string());
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if !valid_authority(authority) {
        return Err(bad());
    }
    Ok(url.strip_suffix('/').unwrap_or(url).to_string())
}

/// Checks a registry name as containerd names its directory: `host` or `host:port` (a bracketed
/// IPv6 address too), or [`DEFAULT_DIR`].
pub fn check_registry(name: &str) -> Result<(), ContainerdError> {
    if name == DEFAULT_DIR || valid_authority(name) {
        Ok(())
    } else {
        Err(ContainerdError::Registry(name.to_string()))
    }
}

/// `host[:port]`: DNS labels or an IPv4 address, or `[v6]`; a port of digits. This is also what
/// keeps a name from escaping `--out-dir`: no `/`, no `..`, no leading `.`.
fn valid_authority(s: &str) -> bool {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, rest)) => {
                if addr.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match rest {
                    "" => return true,
                    r => (None, r.strip_prefix(':').unwrap_or("x")),
                }
            }
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), p),
            None => (Some(s), "1"),
        }
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    port_ok && host_ok
}

/// The registry's own endpoint, containerd's fallback when the mirror fails: Docker Hub's real
/// host for `docker.io`, else `https://<registry>`; none in `_default` (containerd uses the
/// name the image has).
fn server(registry: &str) -> Option<String> {
    match registry {
        DEFAULT_DIR => None,
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => {
            Some("https://registry-1.docker.io".into())
        }
        r => Some(format!("https://{r}")),
    }
}

/// The files for `registries` (none: the one `_default` file, for every registry), each naming
/// `mirror_url` as a pull-and-resolve mirror.
pub fn hosts_files(
    mirror_url: &str,
    registries: &[String],
    tls: &MirrorTls,
) -> Result<Vec<HostsFile>, ContainerdError> {
    let mirror = check_mirror_url(mirror_url)?;
    if let MirrorTls::Ca(path) = tls {
        let s = path.to_string_lossy();
        if s.is_empty() || s.contains('\n') {
            return Err(ContainerdError::CaFile(path.clone()));
        }
    }
    let default = [DEFAULT_DIR.to_string()];
    let registries = if registries.is_empty() {
        &default[..]
    } else {
        registries
    };
    let mut files: Vec<HostsFile> = Vec::new();
    for r in registries {
        check_registry(r)?;
        if files.iter().any(|f| f.dir == *r) {
            return Err(ContainerdError::Duplicate(r.clone()));
        }
        files.push(HostsFile {
            dir: r.clone(),
            text: hosts_toml(r, &mirror, tls),
        });
    }
    Ok(files)
}

/// One `hosts.toml`.
fn hosts_toml(registry: &str, mirror: &str, tls: &MirrorTls) -> String {
    let mut host = toml::Table::new();
    host.insert(
        "capabilities".into(),
        toml::Value::Array(vec!["pull".into(), "resolve".into()]),
    );
    match tls {
        MirrorTls::System => {}
        MirrorTls::Ca(path) => {
            host.insert("ca".into(), path.to_string_lossy().into_owned().into());
        }
        MirrorTls::SkipVerify => {
            host.insert("skip_verify".into(), true.into());
        }
    }
    let mut hosts = toml::Table::new();
    hosts.insert(mirror.to_string(), toml::Value::Table(host));
    let mut doc = toml::Table::new();
    if let Some(s) = server(registry) {
        doc.insert("server".into(), s.into());
    }
    doc.insert("host".into(), toml::Value::Table(hosts));
    let body = toml::to_string(&doc).expect("a table of strings serializes");
    format!(
        "# Written by `trow containerd-config`: pulls go through Trow first. Rewritten when it \
         runs again.\n{body}"
    )
}

/// What `trow containerd-config` prints: each file after a `# <dir>/hosts.toml` line.
pub fn render(files: &[HostsFile]) -> String {
    let mut out = String::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("# {}/hosts.toml\n{}", f.dir, f.text));
    }
    out
}

/// What happened to one file under `--out-dir`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
    Unchanged,
}

/// Writes each file under `out_dir` (created if missing), by temp file and rename so containerd
/// never reads half a file; a file that already says the same is left alone (its mtime too), and
/// nothing else in `out_dir` (other registries' directories) is touched.
pub fn write_files(
    out_dir: &Path,
    files: &[HostsFile],
) -> Result<Vec<(PathBuf, Written)>, ContainerdError> {
    let mut done = Vec::new();
    for f in files {
        let dir = out_dir.join(&f.dir);
        let path = dir.join("hosts.toml");
        let err = |source| ContainerdError::Write {
            path: path.clone(),
            source,
        };
        let before = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(err(e)),
        };
        if before.as_deref() == Some(f.text.as_bytes()) {
            done.push((path, Written::Unchanged));
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(err)?;
        let tmp = dir.join(format!(".hosts.toml.trow-{}", std::process::id()));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(f.text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        let how = if before.is_some() {
            Written::Updated
        } else {
            Written::Created
        };
        done.push((path, how));
    }
    Ok(done)
}

/// `trow containerd-config`'s flags.
#[derive(clap::Args, Debug)]
pub struct ContainerdConfigArgs {
    /// Trow's URL as nodes reach it: http://HOST[:PORT] (containerd then speaks plain HTTP to
    /// it) or https://HOST[:PORT].
    #[arg(long)]
    pub mirror_url: String,
    /// A registry to pull through Trow (repeatable): docker.io, ghcr.io, 127.0.0.1:5000, ...
    /// Without any: one `_default/hosts.toml`, for every registry.
    #[arg(long = "registry", value_name = "HOST")]
    pub registries: Vec<String>,
    /// The CA bundle (a path on the node) that signed an https mirror's certificate.
    #[arg(long, conflicts_with = "skip_verify")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify an https mirror's certificate.
    #[arg(long)]
    pub skip_verify: bool,
    /// Write the files under this directory (containerd's `config_path`, e.g.
    /// /etc/containerd/certs.d) instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// After writing, keep running until SIGTERM or SIGINT (as a DaemonSet's container).
    #[arg(long, requires = "out_dir")]
    pub wait: bool,
}

/// Runs `trow containerd-config`; returns the exit status (2: bad input or cannot write).
pub async fn run(a: ContainerdConfigArgs) -> i32 {
    let tls = match (a.ca_file, a.skip_verify) {
        (Some(ca), _) => MirrorTls::Ca(ca),
        (None, true) => MirrorTls::SkipVerify,
        (None, false) => MirrorTls::System,
    };
    let files = match hosts_files(&a.mirror_url, &a.registries, &tls) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("trow containerd-config: {e}");
            return 2;
        }
    };
    let Some(out_dir) = a.out_dir else {
        print!("{}", render(&files));
        return 0;
    };
    match write_files(&out_dir, &files) {
        Ok(done) => {
            for (path, how) in done {
                let how = match how {
                    Written::Created => "created",
                    Written::Updated => "updated",
                    Written::Unchanged => "unchanged",
                };
                println!("{how} {}", path.display());
            }
        }
        Err(e) => {
            eprintln!("trow containerd-config: {e}");
            return 2;
        }
    }
    if a.wait {
        println!("trow containerd-config: written; waiting for SIGTERM");
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("trow containerd-config: cannot wait for SIGTERM: {e}");
                    return 2;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> toml::Table {
        text.parse().expect("valid TOML")
    }

    #[test]
    fn default_file_has_the_mirror_and_no_server() {
        let files = hosts_files("http://trow.example.com/", &[], &MirrorTls::System).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].dir, "_default");
        let t = parse(&files[0].text);
        assert!(t.get("server").is_none(), "{t}");
        let host = &t["host"]["http://trow.example.com"];
        assert_eq!(
            host["capabilities"],
            toml::Value::Array(vec!["pull".into(), "resolve".into()])
        );
        assert!(host.get("ca").is_none() && host.get("skip_verify").is_none());
    }

    #[test]
    fn named_registries_get_their_servers() {
        let regs = ["docker.io".to_string(), "127.0.0.1:5000".to_string()];
        let files = hosts_files(
            "https://trow.example.com:8443",
            &regs,
            &MirrorTls::Ca("/etc/trow/ca.crt".into()),
        )
        .unwrap();
        let dirs: Vec<&str> = files.iter().map(|f| f.dir.as_str()).collect();
        assert_eq!(dirs, ["docker.io", "127.0.0.1:5000"]);
        let hub = parse(&files[0].text);
        assert_eq!(hub["server"].as_str(), Some("https://registry-1.docker.io"));
        assert_eq!(
            hub["host"]["https://trow.example.com:8443"]["ca"].as_str(),
            Some("/etc/trow/ca.crt")
        );
        let local = parse(&files[1].text);
        assert_eq!(local["server"].as_str(), Some("https://127.0.0.1:5000"));
        assert_eq!(
            files[1].relative_path(),
            Path::new("127.0.0.1:5000/hosts.toml")
        );
    }

    #[test]
    fn skip_verify_and_a_quote_in_the_ca_path() {
        let f = hosts_files("https://m", &[], &MirrorTls::SkipVerify).unwrap();
        assert_eq!(
            parse(&f[0].text)["host"]["https://m"]["skip_verify"].as_bool(),
            Some(true)
        );
        let f = hosts_files("https://m", &[], &MirrorTls::Ca("/a\"b] x".into())).unwrap();
        assert_eq!(
            parse(&f[0].text)["host"]["https://m"]["ca"].as_str(),
            Some("/a\"b] x")
        );
    }

    #[test]
    fn never_push() {
        let f = hosts_files("http://m:5000", &["quay.io".into()], &MirrorTls::System).unwrap();
        assert!(!f[0].text.contains("push"), "{}", f[0].text);
    }

    #[test]
    fn bad_registries_are_refused() {
        for bad in [
            "../x", "..", ".", "a/b", "/etc", "", "a..b", ".hidden", "x:", "x:0", "x:99999",
            "x:8o", "-a.com", "a b", "a\\b", "_other", "[::1", "[zz]:80",
        ] {
            assert!(
                matches!(
                    hosts_files("http://m", &[bad.to_string()], &MirrorTls::System),
                    Err(ContainerdError::Registry(_))
                ),
                "{bad:?} accepted"
            );
        }
        for good in [
            "docker.io",
            "ghcr.io",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[::1]",
            "localhost",
            "_default",
            "my-reg.example.com:443",
        ] {
            check_registry(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert!(matches!(
            hosts_files(
                "http://m",
                &["a.io".into(), "a.io".into()],
                &MirrorTls::System
            ),
            Err(ContainerdError::Duplicate(_))
        ));
    }

    #[test]
    fn bad_mirror_urls_are_refused() {
        for bad in [
            "trow.example.com",
            "ftp://m",
            "http://",
            "http://m/v2",
            "http://u@m",
            "http://m?x=1",
            "http://m:port",
            "http://m/../",
            "http://m\"]",
        ] {
            assert!(
                matches!(check_mirror_url(bad), Err(ContainerdError::MirrorUrl(_))),
                "{bad:?} accepted"
            );
        }
        assert_eq!(check_mirror_url("http://m:80/").unwrap(), "http://m:80");
    }

    #[test]
    fn render_heads_each_file_with_its_path() {
        let f = hosts_files(
            "http://m",
            &["a.io".into(), "b.io".into()],
            &MirrorTls::System,
        )
        .unwrap();
        let out = render(&f);
        assert!(out.starts_with("# a.io/hosts.toml\n"), "{out}");
        assert!(out.contains("\n# b.io/hosts.toml\n"), "{out}");
    }

    #[test]
    fn writes_only_what_differs_and_leaves_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let other = tmp.path().join("other.io");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("hosts.toml"), "server = \"x\"\n").unwrap();
        let f = hosts_files("http://m", &["a.io".into()], &MirrorTls::System).unwrap();
        let w = write_files(tmp.path(), &f).unwrap();
        assert_eq!(w[0].1, Written::Created);
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("a.io/hosts.toml")).unwrap(),
            f[0].text
        );
        assert_eq!(
            write_files(tmp.path(), &f).unwrap()[0].1,
            Written::Unchanged
        );
        let f2 = hosts_files("http://n", &["a.io".into()], &MirrorTls::System).unwrap();
        assert_eq!(write_files(tmp.path(), &f2).unwrap()[0].1, Written::Updated);
        assert!(other.join("hosts.toml").exists());
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("a.io"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["hosts.toml"], "no temp file left behind");
    }
}
