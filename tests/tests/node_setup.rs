//! Node set-up: the `hosts.toml` files `trow containerd-config` writes make a real containerd pull
//! through Trow. An upstream (CNCF distribution behind a counting front) holds an image, Trow
//! proxies it, the command writes the files into a hosts directory, and containerd (a private
//! daemon, `ctr images pull --hosts-dir`: the same hosts-directory reader the CRI plugin's
//! `config_path` uses) pulls the upstream's name. The proof it came through Trow: containerd never
//! asks the upstream itself, Trow's catalog holds the cached repository, and after the upstream is
//! killed and the image (content included) removed from containerd, the same pull still succeeds,
//! from Trow's cache alone.
//!
//! Addresses: 127.0.0.100 (upstream) and .101 (Trow) for named registries; .102 and .103 for
//! `_default`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use trow_tests::clients::{Containerd, LogsOnPanic, run};
use trow_tests::images::build_image;
use trow_tests::upstream::{ProxyConfig, Upstream, assert_no_containerd_requests, describe};
use trow_tests::{Flags, Proc, Topology, Trow, run_to_exit, trow_bin, wait_for_line};

/// `trow containerd-config ARGS`: exit status, stdout, stderr.
fn containerd_config(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(trow_bin());
    cmd.arg("containerd-config").args(args);
    let (status, out, err, _) = run_to_exit(cmd, Duration::from_secs(30));
    (status.code().unwrap_or(-1), out, err)
}

/// An upstream on `upstream_ip` holding `lib/img:1.0`, a Trow on `trow_ip` proxying it, the
/// files written by `trow containerd-config` (`named`: with `--registry <upstream>`, else
/// `_default`) and pulled through by containerd, twice: upstream alive, then dead.
fn pull_through(upstream_ip: &str, trow_ip: &str, named: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let img = build_image(&tmp.path().join("src"), "1.0", "amd64");
    let mut up = Upstream::start(upstream_ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "lib/img:1.0");
    let registry = up.authority();
    let config = ProxyConfig::new([up.entry()]).write(&tmp.path().join("config.yml"));
    let trow = Trow::start_with(Topology::OneProcess, Flags::config(&config).on_ip(trow_ip));
    let _trow_logs = LogsOnPanic::trow(&trow);
    let mirror = format!("http://{}", trow.addr);

    let hosts = tmp.path().join("certs.d");
    let hosts_s = hosts.to_string_lossy().into_owned();
    let mut args = vec![
        "--mirror-url",
        mirror.as_str(),
        "--out-dir",
        hosts_s.as_str(),
    ];
    if named {
        args.extend(["--registry", registry.as_str()]);
    }
    let dir = if named { registry.as_str() } else { "_default" };
    let file = hosts.join(dir).join("hosts.toml");
    let (code, out, err) = containerd_config(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("created {}", file.display()), "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&format!(
            "[host.\"{mirror}\"]\ncapabilities = [\"pull\", \"resolve\"]\n"
        )),
        "{text}"
    );
    if named {
        assert!(
            text.contains(&format!("server = \"https://{registry}\"")),
            "{text}"
        );
    } else {
        assert!(!text.contains("server"), "{text}");
    }
    // What it prints is what it wrote, under a `# <dir>/hosts.toml` line.
    let print_args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--out-dir" && *a != hosts_s)
        .collect();
    let (code, printed, err) = containerd_config(&print_args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(printed, format!("# {dir}/hosts.toml\n{text}"));
    // Again: nothing changes.
    let (code, out, err) = containerd_config(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("unchanged {}", file.display()));

    let ctr = Containerd::start();
    let reference = format!("{registry}/lib/img:1.0");
    let pull = || ctr.run(["images", "pull", "--hosts-dir", &hosts_s, &reference]);
    pull();
    assert_eq!(ctr.image(&reference).digest, img.manifest_digest);
    let asked = up.requests().all();
    assert_no_containerd_requests(&asked);
    assert!(
        asked.iter().any(|r| r.method == "GET" && !r.is_ping()),
        "Trow never fetched from the upstream:\n{}",
        describe(&asked)
    );
    let catalog = run(Command::new("curl").args(["-sf", &format!("{}/v2/_catalog", trow.url)]));
    let cached = format!("f/{}/lib/img", up.path_name());
    assert!(catalog.contains(&cached), "{catalog}");

    // The upstream dies; containerd forgets the image and its content; the pull still works.
    up.kill();
    ctr.run(["images", "rm", "--sync", &reference]);
    let content = ctr.run(["content", "ls", "-q"]);
    assert!(
        !content.contains(&img.manifest_digest),
        "the manifest is still in containerd's content store:\n{content}"
    );
    pull();
    assert_eq!(ctr.image(&reference).digest, img.manifest_digest);
}

#[test]
fn a_named_registry_pulls_through_trow() {
    pull_through("127.0.0.100", "127.0.0.101", true);
}

#[test]
fn the_default_file_pulls_every_registry_through_trow() {
    pull_through("127.0.0.102", "127.0.0.103", false);
}

#[test]
fn bad_input_is_refused_with_status_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("certs.d");
    let out_s = out_dir.to_string_lossy().into_owned();
    for (args, needle) in [
        (
            vec!["--mirror-url", "http://m", "--registry", "../x"],
            "invalid registry \"../x\"",
        ),
        (
            vec!["--mirror-url", "http://m", "--registry", "a/b"],
            "invalid registry \"a/b\"",
        ),
        (vec!["--mirror-url", "ftp://m"], "invalid mirror URL"),
        (
            vec![
                "--mirror-url",
                "http://m",
                "--registry",
                "x.io",
                "--registry",
                "x.io",
            ],
            "given twice",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--out-dir", &out_s]);
        let (code, out, err) = containerd_config(&all);
        assert_eq!(code, 2, "{all:?}: {out}{err}");
        assert!(err.contains(needle), "{all:?}: {err}");
        assert!(!out_dir.exists(), "{all:?} wrote something");
    }
    // clap's own refusals use status 2 as well.
    let (code, _, err) = containerd_config(&[
        "--mirror-url",
        "http://m",
        "--ca-file",
        "/ca",
        "--skip-verify",
    ]);
    assert_eq!(code, 2, "{err}");
}

/// `--wait`: the DaemonSet's container writes, then stays up until SIGTERM, and exits 0.
#[test]
fn wait_stays_up_until_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("certs.d");
    let other = out_dir.join("other.io/hosts.toml");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "server = \"https://other.io\"\n").unwrap();
    let mut cmd = Command::new(trow_bin());
    cmd.args([
        "containerd-config",
        "--mirror-url",
        "https://trow.example.com",
        "--registry",
        "docker.io",
        "--ca-file",
        "/etc/trow/ca.crt",
        "--out-dir",
    ])
    .arg(&out_dir)
    .arg("--wait");
    let mut p = Proc::spawn(cmd, tmp.path().join("log"));
    wait_for_line(&mut p, "waiting for SIGTERM");
    let text = std::fs::read_to_string(out_dir.join("docker.io/hosts.toml")).unwrap();
    assert!(
        text.contains("server = \"https://registry-1.docker.io\""),
        "{text}"
    );
    assert!(text.contains("ca = \"/etc/trow/ca.crt\""), "{text}");
    // No pause: the handlers are installed before the line is printed.
    let status = p.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}:\n{}",
        p.log_text()
    );
    assert!(other.exists(), "another registry's file was removed");
    assert_dir_has(&out_dir, &["docker.io", "other.io"]);
}

fn assert_dir_has(dir: &Path, names: &[&str]) {
    let mut got: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, names);
}
