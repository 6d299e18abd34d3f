//! The container image `scripts/build-image.sh` assembles (deploy/Containerfile builds the same
//! one with an engine): built here from the `trow` under test, it must run from its own root
//! filesystem with only the files it carries, serve the registry API as uid 333333, survive a
//! push into Trow and a pull back digest for digest, and hold nothing but the files it means to.
//!
//! No engine runs here: `umoci unpack` gives the root filesystem and the runtime config, and
//! `chroot --userspec` runs the entrypoint in it, with the config's user and environment. So the
//! tests run as root (scripts/test.sh runs the suite as root), like the tmpfs tests.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use trow_tests::clients::{layout_tag_digest, run, skopeo};
use trow_tests::{Flags, Proc, Topology, Trow, addr_prefix, trow_bin, wait_for_line, wait_http_ok};

/// This helper's loopback addresses: the Trow run from the image, the one it is pushed into, and
/// the split services run from the image.
const IMAGE_IP: &str = "127.0.0.94";
const REGISTRY_IP: &str = "127.0.0.95";
const SPLIT_IP: &str = "127.0.0.96";

/// The tag the script gives by default: the workspace version, which `trow --version` prints.
const TAG: &str = env!("CARGO_PKG_VERSION");

/// An image built by the script into a temp dir, with what the script printed.
struct Built {
    tmp: tempfile::TempDir,
    layout: PathBuf,
    stdout: String,
}

/// Fails (never skips) unless the tests run as root: the layer's files belong to root and to
/// 333333, and chroot needs root. A test that cannot run must not pass.
fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("Uid line in /proc/self/status");
    assert_eq!(
        euid, "0",
        "the image tests need root (scripts/test.sh runs the suite as root): the image's files \
         belong to root and uid 333333, and the image is run with chroot. To leave them out, \
         run the suite without this test binary (cargo nextest: `-E 'not binary(image)'`)"
    );
}

/// `scripts/build-image.sh --bin <trow under test> --out <temp>/layout ARGS`.
fn build(args: &[&str]) -> Built {
    build_env(args, &[])
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-image.sh")
}

/// [`build`] with extra environment variables.
fn build_env(args: &[&str], env: &[(&str, &str)]) -> Built {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path().join("layout");
    let mut cmd = Command::new(script());
    cmd.arg("--bin").arg(trow_bin()).arg("--out").arg(&layout);
    cmd.args(args).envs(env.iter().copied());
    let stdout = run(&mut cmd);
    Built {
        tmp,
        layout,
        stdout,
    }
}

impl Built {
    /// The value of the `key: ` line the script printed.
    fn printed(&self, key: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no `{key}:` line in the script's output:\n{}", self.stdout))
    }

    /// The JSON blob `digest` of the layout.
    fn blob_json(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.blob(digest)).expect("blob is JSON")
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        std::fs::read(self.layout.join("blobs/sha256").join(hex)).expect("read blob")
    }

    fn manifest(&self) -> Value {
        self.blob_json(&layout_tag_digest(&self.layout, TAG))
    }

    fn config(&self) -> Value {
        let manifest = self.manifest();
        self.blob_json(
            manifest["config"]["digest"]
                .as_str()
                .expect("config digest"),
        )
    }

    /// `umoci unpack` into a bundle: `rootfs/` and the runtime `config.json`.
    fn unpack(&self) -> Bundle {
        let dir = self.tmp.path().join("bundle");
        let mut cmd = Command::new("umoci");
        cmd.args(["unpack", "--image"])
            .arg(format!("{}:{TAG}", self.layout.display()))
            .arg(&dir);
        run(&mut cmd);
        let config: Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config.json"))
                .expect("config.json is JSON");
        Bundle {
            rootfs: dir.join("rootfs"),
            process: config["process"].clone(),
        }
    }
}

/// An unpacked image.
struct Bundle {
    rootfs: PathBuf,
    /// The runtime config's `process`: user, args (the entrypoint), env, cwd.
    process: Value,
}

impl Bundle {
    /// The image's entrypoint with `args`, run as the image's user with only its environment,
    /// chrooted into its root filesystem: only the files the image carries are visible.
    fn command(&self, args: &[&str]) -> Command {
        let user = &self.process["user"];
        let mut cmd = Command::new("chroot");
        cmd.arg(format!("--userspec={}:{}", user["uid"], user["gid"]))
            .arg(&self.rootfs)
            .args(strings(&self.process["args"]))
            .args(args)
            .env_clear();
        for kv in strings(&self.process["env"]) {
            let (k, v) = kv.split_once('=').expect("env entries are K=V");
            cmd.env(k, v);
        }
        cmd
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn the_binary_runs_from_the_images_own_root_filesystem() {
    let built = build(&[]);
    let bundle = built.unpack();
    assert_eq!(bundle.process["user"]["uid"], 333333, "{}", bundle.process);
    let out = run(&mut bundle.command(&["--version"]));
    assert_eq!(out.trim(), format!("trow {TAG}"));
}

#[test]
fn the_image_serves_the_registry_api_as_uid_333333() {
    let built = build(&[]);
    let bundle = built.unpack();
    let any_port = format!("{IMAGE_IP}:0");
    // As a pod would: the image's entrypoint and environment (TROW_DATA_DIR), flags appended.
    let cmd = bundle.command(&[
        "--bind",
        &any_port,
        "--storage-listen",
        &any_port,
        "--proxy-listen",
        &any_port,
        "--admission-listen",
        &any_port,
    ]);
    let mut trow = Proc::spawn(cmd, built.tmp.path().join("trow.log"));
    let url = addr_prefix(&wait_for_line(&mut trow, "trow gateway: OCI registry on "));
    wait_http_ok(&format!("{url}/v2/"), &mut [&mut trow]);

    let status = std::fs::read_to_string(format!("/proc/{}/status", trow.pid())).expect("status");
    let uids = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(
        uids.split_whitespace().skip(1).all(|u| u == "333333"),
        "{uids}"
    );
    // The store is the image's /var/lib/trow, written by trow as 333333.
    let data = bundle.rootfs.join("var/lib/trow");
    let entries: Vec<_> = std::fs::read_dir(&data)
        .expect("read /var/lib/trow")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(!entries.is_empty(), "nothing in {}", data.display());
    for e in &entries {
        let meta = std::fs::symlink_metadata(e).expect("stat");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (333333, 333333),
            "{}",
            e.display()
        );
    }

    let exit = trow.terminate(Duration::from_secs(10));
    assert!(
        exit.is_some(),
        "trow did not stop on SIGTERM:\n{}",
        trow.log_text()
    );
}

/// The split services reach each other by name (a Kubernetes Service's, from `/etc/hosts` here
/// as in a pod): the image's nsswitch.conf and libc must resolve it with no NSS module on disk.
#[test]
fn the_split_services_find_each_other_by_name_inside_the_image() {
    let built = build(&[]);
    let bundle = built.unpack();
    std::fs::write(
        bundle.rootfs.join("etc/hosts"),
        format!("127.0.0.1 localhost\n{SPLIT_IP} trow-storage\n"),
    )
    .expect("write the image's /etc/hosts");
    let any_port = format!("{SPLIT_IP}:0");
    let logs = built.tmp.path();
    let mut storage = Proc::spawn(
        bundle.command(&["storage", "--listen", &any_port]),
        logs.join("storage.log"),
    );
    let storage_addr = addr_prefix(&wait_for_line(&mut storage, "trow storage: gRPC on "));
    let port = storage_addr.rsplit(':').next().expect("a port");
    let mut gateway = Proc::spawn(
        bundle.command(&[
            "gateway",
            "--bind",
            &any_port,
            "--storage",
            &format!("http://trow-storage:{port}"),
        ]),
        logs.join("gateway.log"),
    );
    let url = addr_prefix(&wait_for_line(
        &mut gateway,
        "trow gateway: OCI registry on ",
    ));
    wait_http_ok(&format!("{url}/v2/"), &mut [&mut gateway, &mut storage]);
    // Only storage knows the repository is unknown: 404 proves the gateway reached it (503 if not).
    let code = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{url}/v2/nothing/here/tags/list"),
    ]));
    assert_eq!(
        code,
        "404",
        "gateway:\n{}\nstorage:\n{}",
        gateway.log_text(),
        storage.log_text()
    );
}

#[test]
fn the_image_pushed_into_trow_pulls_back_digest_equal() {
    let registry = Trow::start_with(Topology::OneProcess, Flags::default().on_ip(REGISTRY_IP));
    let _logs = trow_tests::clients::LogsOnPanic::trow(&registry);
    let reference = format!("{}/trow/trow:{TAG}", registry.addr);
    let built = build(&[
        "--push",
        &format!("docker://{reference}"),
        "--",
        "--dest-tls-verify=false",
    ]);
    let digest = layout_tag_digest(&built.layout, TAG);
    assert_eq!(built.printed("digest"), digest);
    assert_eq!(
        built.printed("pushed"),
        format!("docker://{reference}@{digest}")
    );

    let back = built.tmp.path().join("back");
    run(&mut skopeo([
        "copy".to_string(),
        "--src-tls-verify=false".to_string(),
        format!("docker://{reference}"),
        format!("oci:{}:{TAG}", back.display()),
    ]));
    assert_eq!(layout_tag_digest(&back, TAG), digest, "digest changed");
    trow_tests::clients::assert_layout_blobs_intact(&back);

    let config: Value = serde_json::from_str(&run(&mut skopeo([
        "inspect".to_string(),
        "--config".to_string(),
        "--tls-verify=false".to_string(),
        format!("docker://{reference}"),
    ])))
    .expect("skopeo inspect --config prints JSON");
    assert_eq!(config["config"]["User"], "333333:333333", "{config}");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/trow"]),
        "{config}"
    );
}

/// What `ldd` says the binary loads, the loader included: the only libraries the image carries.
fn linked_libraries(bin: &Path) -> BTreeSet<String> {
    let out = run(Command::new("ldd").arg(bin));
    out.lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| path[1..].to_owned())
        })
        .collect()
}

/// A CI clone's origin: `https://<user>:<token>@host/...`.
const ORIGIN_WITH_TOKEN: &str = "https://ci-token:FAKE-SECRET@gitlab.example.com/team/trow.git";

#[test]
fn the_image_holds_only_what_it_means_to() {
    // git reads GIT_CONFIG_* as configuration: the origin as a CI job's clone has it.
    let built = build_env(
        &[],
        &[
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "remote.origin.url"),
            ("GIT_CONFIG_VALUE_0", ORIGIN_WITH_TOKEN),
        ],
    );
    let config = built.config();
    assert_eq!(config["config"]["User"], "333333:333333", "{config}");
    assert_eq!(
        config["config"]["ExposedPorts"]["8000/tcp"],
        serde_json::json!({})
    );
    assert!(
        strings(&config["config"]["Env"]).contains(&"TROW_DATA_DIR=/var/lib/trow".to_string()),
        "{config}"
    );
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "trow");
    assert_eq!(labels["org.opencontainers.image.version"], TAG);
    assert_eq!(
        labels["org.opencontainers.image.source"], "https://gitlab.example.com/team/trow.git",
        "the credentials must not be published"
    );
    assert!(!config.to_string().contains("FAKE-SECRET"), "{config}");
    assert_eq!(config["os"], "linux");

    let manifest = built.manifest();
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer = built.tmp.path().join("layer.tar.gz");
    std::fs::write(
        &layer,
        built.blob(layers[0]["digest"].as_str().expect("digest")),
    )
    .expect("write layer");
    let listing = run(Command::new("tar").arg("-tzf").arg(&layer));
    let found: BTreeSet<String> = listing
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .filter(|l| l != ".")
        .collect();

    let mut expected: BTreeSet<String> = [
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
        "etc/ssl/certs/ca-certificates.crt",
        "tmp",
        "usr/local/bin/trow",
        "var/lib/trow",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    expected.extend(linked_libraries(&trow_bin()));
    // And every directory above them.
    for path in expected.clone() {
        let mut p = Path::new(&path);
        while let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            expected.insert(parent.display().to_string());
            p = parent;
        }
    }
    assert_eq!(found, expected, "the layer's files");

    let bundle = built.unpack();
    let root = &bundle.rootfs;
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("trow:x:333333:333333:")),
        "{passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).expect("group");
    assert!(group.lines().any(|l| l == "trow:x:333333:"), "{group}");
    for path in &found {
        let meta = std::fs::symlink_metadata(root.join(path)).expect("stat");
        let owner = if path == "var/lib/trow" { 333333 } else { 0 };
        assert_eq!((meta.uid(), meta.gid()), (owner, owner), "owner of {path}");
    }
    let tmp_mode = std::fs::metadata(root.join("tmp"))
        .expect("tmp")
        .permissions();
    assert_eq!(tmp_mode.mode() & 0o7777, 0o1777);
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/trow")).expect("read trow"),
        std::fs::read(trow_bin()).expect("read trow under test"),
        "the image's trow is not the binary it was built from"
    );

    // The CA bundle is Mozilla's set as Debian ships it, in name order: none of the build
    // host's own CAs (/usr/local/share/ca-certificates), which /etc/ssl/certs also holds.
    let bundle = std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("the CA bundle");
    let mut mozilla: Vec<PathBuf> = std::fs::read_dir("/usr/share/ca-certificates/mozilla")
        .expect("Debian's ca-certificates")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    mozilla.sort();
    assert!(!mozilla.is_empty());
    let expected: String = mozilla
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read a Mozilla CA"))
        .collect();
    assert!(
        bundle == expected,
        "the CA bundle is not exactly Mozilla's set"
    );
    for local in local_cas() {
        let pem = std::fs::read_to_string(&local).expect("read a local CA");
        let body = pem.trim();
        assert!(
            !bundle.contains(body) || expected.contains(body),
            "{} (a local CA of the build host) is in the image",
            local.display()
        );
    }
}

/// The build host's own CAs, which update-ca-certificates adds to /etc/ssl/certs.
fn local_cas() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::from("/usr/local/share/ca-certificates")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "crt") {
                found.push(p);
            }
        }
    }
    found
}

/// The script with ARGS (and `--bin bin`) is refused, saying `why`.
fn refused(bin: &Path, args: &[&str], why: &str) {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(script())
        .arg("--bin")
        .arg(bin)
        .arg("--out")
        .arg(tmp.path().join("layout"))
        .args(args)
        .output()
        .expect("run build-image.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(stderr.contains(why), "{stderr}");
    assert!(!tmp.path().join("layout").exists(), "wrote a layout");
}

#[test]
fn credentials_in_source_and_foreign_binaries_are_refused() {
    refused(
        &trow_bin(),
        &["--source", ORIGIN_WITH_TOKEN],
        "without user or password",
    );
    refused(
        &trow_bin(),
        &["--source", "git@github.com:a/b.git"],
        "https://",
    );
    // This machine's own /bin/true, marked as built for another architecture: ldd calls it
    // "not a dynamic executable", which used to pass for a static binary.
    let tmp = tempfile::tempdir().expect("tempdir");
    let foreign = tmp.path().join("true");
    let mut elf = std::fs::read("/bin/true").expect("read /bin/true");
    let machine: u16 = if cfg!(target_arch = "aarch64") {
        0x3e
    } else {
        0xb7
    };
    elf[18..20].copy_from_slice(&machine.to_le_bytes());
    std::fs::write(&foreign, elf).expect("write");
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    refused(&foreign, &[], "is built for");
}

#[test]
fn the_image_is_reproducible() {
    let a = build(&[]);
    let b = build(&[]);
    assert_eq!(
        layout_tag_digest(&a.layout, TAG),
        layout_tag_digest(&b.layout, TAG),
        "two builds of one binary differ"
    );
}
