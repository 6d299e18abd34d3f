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
//!
//! Writing runs as root in a directory others may also write (an operator's own files, other
//! tools'), so it trusts nothing found there: every file it writes starts with [`MARKER`], and
//! a file without it is neither overwritten nor removed unless `--force`; the registry's
//! directory and its `hosts.toml` are opened relative to `--out-dir` without following symlinks;
//! the new text goes to a freshly created temp file (random name, `O_EXCL`, mode 0644 whatever
//! the umask) that is synced and renamed into place, and the directory is synced after.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// The first line of every file this command writes: what makes a file ours to replace or
/// remove.
pub const MARKER: &str = "# Written by `trow containerd-config`";

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
    #[error("--ca-file {0:?} is empty or not UTF-8")]
    CaFile(PathBuf),
    #[error(
        "{0} was not written by `trow containerd-config` (its first line is not {MARKER:?}): \
         not replaced; move it away, or pass --force to overwrite it"
    )]
    Foreign(PathBuf),
    #[error("{0} is a symlink or not a regular file/directory: refused (remove it first)")]
    NotPlain(PathBuf),
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
        // containerd would get a mangled path and silently fall back to the upstream.
        if path.to_str().is_none_or(str::is_empty) {
            return Err(ContainerdError::CaFile(path.clone()));
        }
    }
    Ok(registry_dirs(registries)?
        .into_iter()
        .map(|r| HostsFile {
            text: hosts_toml(&r, &mirror, tls),
            dir: r,
        })
        .collect())
}

/// The directories for `registries` (none: `_default`), each checked, none twice.
pub fn registry_dirs(registries: &[String]) -> Result<Vec<String>, ContainerdError> {
    if registries.is_empty() {
        return Ok(vec![DEFAULT_DIR.to_string()]);
    }
    let mut dirs: Vec<String> = Vec::new();
    for r in registries {
        check_registry(r)?;
        if dirs.contains(r) {
            return Err(ContainerdError::Duplicate(r.clone()));
        }
        dirs.push(r.clone());
    }
    Ok(dirs)
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
            // UTF-8, checked by `hosts_files`.
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
    format!("{MARKER}: pulls go through Trow first. Rewritten when it runs again.\n{body}")
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
    /// `--remove`: deleted.
    Removed,
    /// `--remove`: there was none.
    Absent,
    /// `--remove`: not ours (no [`MARKER`]), left alone.
    NotOurs,
}

/// Longest `hosts.toml` read back: ours are a few hundred bytes.
const READ_LIMIT: u64 = 64 * 1024;

/// Whether `text` is a file this command wrote.
fn is_ours(text: &[u8]) -> bool {
    text.starts_with(MARKER.as_bytes())
}

/// `--out-dir`, created (0755) if missing; it may be a symlink (the operator named it).
fn open_out_dir(out_dir: &Path, create: bool) -> Result<Option<OwnedFd>, ContainerdError> {
    let err = |source: std::io::Error| ContainerdError::Write {
        path: out_dir.to_path_buf(),
        source,
    };
    if create {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(out_dir)
            .map_err(err)?;
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::open(out_dir, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) if !create => Ok(None),
        Err(e) => Err(err(e.into())),
    }
}

/// The registry's directory under `base`, never through a symlink; `None` when missing.
fn open_registry_dir(
    base: &OwnedFd,
    dir: &str,
    path: &Path,
) -> Result<Option<OwnedFd>, ContainerdError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(base, dir, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::LOOP | Errno::NOTDIR) => Err(ContainerdError::NotPlain(path.to_path_buf())),
        Err(e) => Err(ContainerdError::Write {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// The current `hosts.toml` in `dir` (at most [`READ_LIMIT`] bytes), never through a symlink
/// and only a regular file; `None` when missing.
fn read_hosts(dir: &OwnedFd, path: &Path) -> Result<Option<Vec<u8>>, ContainerdError> {
    let err = |e: Errno| ContainerdError::Write {
        path: path.to_path_buf(),
        source: e.into(),
    };
    // NONBLOCK: a FIFO planted there must not hang the open.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, "hosts.toml", flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(ContainerdError::NotPlain(path.to_path_buf())),
        Err(e) => return Err(err(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(err)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(ContainerdError::NotPlain(path.to_path_buf()));
    }
    let mut text = Vec::new();
    std::fs::File::from(fd)
        .take(READ_LIMIT)
        .read_to_end(&mut text)
        .map_err(|source| ContainerdError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Some(text))
}

/// A temp file name no one can predict (a DaemonSet's pid is always 1).
fn temp_name() -> String {
    use std::hash::BuildHasher;
    let n = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    format!(".hosts.toml.trow-{n:016x}")
}

/// Writes `text` as `hosts.toml` in `dir`: a new temp file (O_EXCL, O_NOFOLLOW, 0644), synced,
/// renamed over the old one, then the directory synced.
fn replace_hosts(dir: &OwnedFd, text: &str) -> std::io::Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o644);
    let mut tries = 0;
    let (tmp, fd) = loop {
        let tmp = temp_name();
        match rustix::fs::openat(dir, &tmp, flags, mode) {
            Ok(fd) => break (tmp, fd),
            Err(Errno::EXIST) if tries < 5 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let result = (|| -> std::io::Result<()> {
        rustix::fs::fchmod(&fd, mode)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        rustix::fs::renameat(dir, &tmp, dir, "hosts.toml")?;
        rustix::fs::fsync(dir)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    result
}

/// Writes each file under `out_dir` (created if missing) so containerd never reads half a
/// file; a file that already says the same is left alone (its mtime too), a file this command
/// did not write is refused unless `force`, and nothing else in `out_dir` (other registries'
/// directories) is touched. Every file is checked before any is written.
pub fn write_files(
    out_dir: &Path,
    files: &[HostsFile],
    force: bool,
) -> Result<Vec<(PathBuf, Written)>, ContainerdError> {
    let base = open_out_dir(out_dir, true)?.expect("created");
    let mut plan = Vec::new();
    for f in files {
        let path = out_dir.join(&f.dir).join("hosts.toml");
        let before = match open_registry_dir(&base, &f.dir, &out_dir.join(&f.dir))? {
            Some(dir) => read_hosts(&dir, &path)?,
            None => None,
        };
        if before.as_deref().is_some_and(|b| !is_ours(b)) && !force {
            return Err(ContainerdError::Foreign(path));
        }
        plan.push((f, path, before));
    }
    let mut done = Vec::new();
    for (f, path, before) in plan {
        if before.as_deref() == Some(f.text.as_bytes()) {
            done.push((path, Written::Unchanged));
            continue;
        }
        let err = |source| ContainerdError::Write {
            path: path.clone(),
            source,
        };
        let made = match rustix::fs::mkdirat(&base, f.dir.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(err(e.into())),
        };
        let dir = open_registry_dir(&base, &f.dir, &out_dir.join(&f.dir))?
            .ok_or_else(|| err(std::io::ErrorKind::NotFound.into()))?;
        if made {
            // mkdir's mode is masked by the umask; containerd's directories are 0755.
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o755)).map_err(|e| err(e.into()))?;
        }
        replace_hosts(&dir, &f.text).map_err(err)?;
        let how = if before.is_some() {
            Written::Updated
        } else {
            Written::Created
        };
        done.push((path, how));
    }
    Ok(done)
}

/// `--remove`: deletes `<dir>/hosts.toml` under `out_dir` for each of `dirs` when this command
/// wrote it (or `force`), and the directory when that leaves it empty; a file without the marker
/// is left alone and reported.
pub fn remove_files(
    out_dir: &Path,
    dirs: &[String],
    force: bool,
) -> Result<Vec<(PathBuf, Written)>, ContainerdError> {
    let mut done = Vec::new();
    let Some(base) = open_out_dir(out_dir, false)? else {
        return Ok(dirs
            .iter()
            .map(|d| (out_dir.join(d).join("hosts.toml"), Written::Absent))
            .collect());
    };
    for d in dirs {
        let path = out_dir.join(d).join("hosts.toml");
        let err = |e: Errno| ContainerdError::Write {
            path: path.clone(),
            source: e.into(),
        };
        let Some(dir) = open_registry_dir(&base, d, &out_dir.join(d))? else {
            done.push((path, Written::Absent));
            continue;
        };
        let how = match read_hosts(&dir, &path)? {
            None => Written::Absent,
            Some(t) if !is_ours(&t) && !force => Written::NotOurs,
            Some(_) => {
                rustix::fs::unlinkat(&dir, "hosts.toml", AtFlags::empty()).map_err(err)?;
                rustix::fs::fsync(&dir).map_err(err)?;
                Written::Removed
            }
        };
        // Only an empty directory goes (rmdir refuses anything else).
        if how != Written::NotOurs
            && rustix::fs::unlinkat(&base, d.as_str(), AtFlags::REMOVEDIR).is_ok()
        {
            let _ = rustix::fs::fsync(&base);
        }
        done.push((path, how));
    }
    Ok(done)
}

/// `trow containerd-config`'s flags.
#[derive(clap::Args, Debug)]
pub struct ContainerdConfigArgs {
    /// Trow's URL as nodes reach it: http://HOST[:PORT] (containerd then speaks plain HTTP to
    /// it) or https://HOST[:PORT].
    #[arg(long, required_unless_present = "remove")]
    pub mirror_url: Option<String>,
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
    /// Delete the files this command wrote under --out-dir for the --registry names (none:
    /// `_default`) instead of writing them; files it did not write are left alone.
    #[arg(long, requires = "out_dir", conflicts_with_all = ["wait", "ca_file", "skip_verify"])]
    pub remove: bool,
    /// Overwrite (or with --remove, delete) a hosts.toml this command did not write.
    #[arg(long, requires = "out_dir")]
    pub force: bool,
}

fn report(done: Vec<(PathBuf, Written)>) {
    for (path, how) in done {
        let how = match how {
            Written::Created => "created",
            Written::Updated => "updated",
            Written::Unchanged => "unchanged",
            Written::Removed => "removed",
            Written::Absent => "absent",
            Written::NotOurs => "kept (not written by trow containerd-config)",
        };
        println!("{how} {}", path.display());
    }
}

/// Runs `trow containerd-config`; returns the exit status (2: bad input or cannot write).
pub async fn run(a: ContainerdConfigArgs) -> i32 {
    let fail = |e: ContainerdError| {
        eprintln!("trow containerd-config: {e}");
        2
    };
    if a.remove {
        let out_dir = a
            .out_dir
            .as_deref()
            .expect("clap: --remove requires --out-dir");
        return match registry_dirs(&a.registries).and_then(|d| remove_files(out_dir, &d, a.force)) {
            Ok(done) => {
                report(done);
                0
            }
            Err(e) => fail(e),
        };
    }
    let tls = match (a.ca_file, a.skip_verify) {
        (Some(ca), _) => MirrorTls::Ca(ca),
        (None, true) => MirrorTls::SkipVerify,
        (None, false) => MirrorTls::System,
    };
    let mirror_url = a.mirror_url.unwrap_or_default();
    let files = match hosts_files(&mirror_url, &a.registries, &tls) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let Some(out_dir) = a.out_dir else {
        print!("{}", render(&files));
        return 0;
    };
    match write_files(&out_dir, &files, a.force) {
        Ok(done) => report(done),
        Err(e) => return fail(e),
    }
    if a.wait {
        use tokio::signal::unix::{SignalKind, signal};
        // Both handlers first: a SIGTERM right after the line below must not take the default
        // action (ignored for PID 1, which would wait out the grace period).
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("trow containerd-config: cannot wait for SIGTERM: {e}");
                return 2;
            }
        };
        println!("trow containerd-config: written; waiting for SIGTERM");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
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

    fn victim(tmp: &Path) -> PathBuf {
        let v = tmp.join("victim");
        std::fs::write(&v, "precious\n").unwrap();
        v
    }

    /// Symlinks planted in the hosts directory (at the registry's directory, at hosts.toml, or
    /// at the temp name the writer used to predict) never redirect the write.
    #[test]
    fn symlinks_are_never_followed() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("certs.d");
        let v = victim(tmp.path());
        let f = hosts_files("http://m", &["a.io".into()], &MirrorTls::System).unwrap();

        std::fs::create_dir_all(&out).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, out.join("a.io")).unwrap();
        assert!(matches!(
            write_files(&out, &f, true),
            Err(ContainerdError::NotPlain(_))
        ));
        assert!(!elsewhere.join("hosts.toml").exists());
        std::fs::remove_file(out.join("a.io")).unwrap();

        std::fs::create_dir(out.join("a.io")).unwrap();
        symlink(&v, out.join("a.io/hosts.toml")).unwrap();
        assert!(matches!(
            write_files(&out, &f, true),
            Err(ContainerdError::NotPlain(_))
        ));
        assert!(matches!(
            remove_files(&out, &["a.io".into()], true),
            Err(ContainerdError::NotPlain(_))
        ));
        std::fs::remove_file(out.join("a.io/hosts.toml")).unwrap();

        let old_temp = format!(".hosts.toml.trow-{}", std::process::id());
        symlink(&v, out.join("a.io").join(&old_temp)).unwrap();
        assert_eq!(write_files(&out, &f, false).unwrap()[0].1, Written::Created);
        assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious\n");
        assert!(!out.join("a.io/hosts.toml").is_symlink());
    }

    /// 0644 files and 0755 directories whatever the umask (a world-writable mirror config, or
    /// one containerd cannot read, otherwise).
    #[test]
    fn modes_do_not_depend_on_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for umask in [0, 0o077] {
            let tmp = tempfile::tempdir().unwrap();
            let f = hosts_files("http://m", &["a.io".into()], &MirrorTls::System).unwrap();
            let old = rustix::process::umask(Mode::from_raw_mode(umask));
            let w = write_files(tmp.path(), &f, false);
            rustix::process::umask(old);
            w.unwrap();
            assert_eq!(
                mode(&tmp.path().join("a.io/hosts.toml")),
                0o644,
                "{umask:o}"
            );
            assert_eq!(mode(&tmp.path().join("a.io")), 0o755, "{umask:o}");
        }
    }

    /// A hosts.toml this command did not write is neither replaced (unless --force) nor
    /// removed; ours are.
    #[test]
    fn foreign_files_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let corp = tmp.path().join("docker.io/hosts.toml");
        std::fs::create_dir_all(corp.parent().unwrap()).unwrap();
        let theirs = "[host.\"https://corp-mirror.example.com\"]\nca = \"/etc/corp/ca.pem\"\n";
        std::fs::write(&corp, theirs).unwrap();
        let f = hosts_files(
            "http://m",
            &["quay.io".into(), "docker.io".into()],
            &MirrorTls::System,
        )
        .unwrap();
        assert!(matches!(
            write_files(tmp.path(), &f, false),
            Err(ContainerdError::Foreign(p)) if p == corp
        ));
        assert_eq!(std::fs::read_to_string(&corp).unwrap(), theirs);
        assert!(
            !tmp.path().join("quay.io").exists(),
            "wrote before checking"
        );
        let dirs = ["docker.io".to_string(), "quay.io".to_string()];
        let r = remove_files(tmp.path(), &dirs, false).unwrap();
        assert_eq!(r[0].1, Written::NotOurs);
        assert_eq!(r[1].1, Written::Absent);
        assert_eq!(std::fs::read_to_string(&corp).unwrap(), theirs);

        let w = write_files(tmp.path(), &f, true).unwrap();
        assert_eq!((w[0].1, w[1].1), (Written::Created, Written::Updated));
        let r = remove_files(tmp.path(), &dirs, false).unwrap();
        assert_eq!((r[0].1, r[1].1), (Written::Removed, Written::Removed));
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert_eq!(
            remove_files(&tmp.path().join("none"), &dirs, false).unwrap()[0].1,
            Written::Absent
        );
    }

    #[test]
    fn a_non_utf8_ca_path_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/etc/ca\xff.crt"));
        assert!(matches!(
            hosts_files("https://m", &[], &MirrorTls::Ca(p.into())),
            Err(ContainerdError::CaFile(_))
        ));
    }

    #[test]
    fn writes_only_what_differs_and_leaves_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let other = tmp.path().join("other.io");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("hosts.toml"), "server = \"x\"\n").unwrap();
        let f = hosts_files("http://m", &["a.io".into()], &MirrorTls::System).unwrap();
        let w = write_files(tmp.path(), &f, false).unwrap();
        assert_eq!(w[0].1, Written::Created);
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("a.io/hosts.toml")).unwrap(),
            f[0].text
        );
        assert_eq!(
            write_files(tmp.path(), &f, false).unwrap()[0].1,
            Written::Unchanged
        );
        let f2 = hosts_files("http://n", &["a.io".into()], &MirrorTls::System).unwrap();
        assert_eq!(
            write_files(tmp.path(), &f2, false).unwrap()[0].1,
            Written::Updated
        );
        assert!(other.join("hosts.toml").exists());
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("a.io"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["hosts.toml"], "no temp file left behind");
    }
}
