//! How the cache is set up and addressed: podman through both `/f/` forms, `offline: true`
//! after a restart, `configured_only: true`, `?ns=` naming Trow itself (`--hostname`), and a
//! config file that stops the start-up.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    Proxy, assert_blob, assert_cache, assert_layout_holds, assert_manifest, blobs, error_message,
    image, skopeo_pull,
};
use trow_tests::clients::{LogsOnPanic, Podman, run, skopeo};
use trow_tests::images::Image;
use trow_tests::oci::{Reg, Resp};
use trow_tests::upstream::{ProxyConfig, Scripted, Upstream, describe};
use trow_tests::{Flags, Topology, Trow, sha256_digest, trow_bin};

// ---------------------------------------------------------------------------------------------
// podman, through /f/<alias>/ and /f/<ip>/

pub async fn podman_pulls_both_f_forms(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    // Port 80, so that the bare IP names it in /f/<ip>/.
    let up = Upstream::start(ip, 80);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "pod/app:1.0");
    let mut p = Proxy::start(
        topology,
        &ProxyConfig::new([up.entry().alias("pod")]),
        tmp.path(),
    );
    let reqs = up.requests();
    let id = img.config_digest.trim_start_matches("sha256:");

    for name in ["pod", ip] {
        // Each pull with its own storage: the second gets nothing from the first's.
        let podman = Podman::new();
        let reference = p.image(&format!("f/{name}/pod/app:1.0"));
        podman.run(["pull", "--tls-verify=false", &reference]);
        let info = podman.run([
            "image",
            "inspect",
            "--format",
            "{{.ID}} {{.Digest}}",
            &reference,
        ]);
        assert_eq!(
            info.trim(),
            format!("{id} {}", img.manifest_digest),
            "podman's image pulled as {reference}"
        );
        let listed = podman.run(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert!(
            listed.lines().any(|l| l.trim() == reference),
            "{reference} not in podman's images:\n{listed}"
        );
    }
    // Both forms are one cache: each blob came from the upstream once.
    for d in blobs(&img) {
        assert_eq!(reqs.blob_gets(&d), 1, "GETs of {d}:\n{}", reqs.describe());
    }
    let catalog = p.catalog().await;
    assert!(
        catalog.contains(&"f/pod/pod/app".to_string()),
        "{catalog:?}"
    );
    assert_eq!(
        catalog.iter().filter(|c| c.starts_with("f/")).count(),
        1,
        "{catalog:?}"
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// offline: true

/// A Trow on a data dir the test keeps, so that a second Trow can start on the same store.
struct OnDataDir {
    _logs: LogsOnPanic,
    reg: Reg,
}

impl OnDataDir {
    /// Writes `config` to `config_path` and starts Trow on `data_dir` with it.
    fn start(
        topology: Topology,
        config: &ProxyConfig,
        config_path: &Path,
        data_dir: &Path,
    ) -> Self {
        let path = config.write(config_path);
        let trow = Trow::start_in_with(topology, data_dir, Flags::config(&path));
        OnDataDir {
            _logs: LogsOnPanic::trow(&trow),
            reg: Reg::with_trow(trow),
        }
    }

    fn trow(&self) -> &Trow {
        self.reg.trow.as_ref().expect("a Trow")
    }

    async fn get_m(&self, path: &str) -> Resp {
        self.reg.get_m(&self.reg.v2(path)).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.reg.get(&self.reg.v2(path)).await
    }

    fn stop_and_fsck(&mut self) {
        trow_tests::fsck::stop_and_fsck(self.reg.trow.as_mut().expect("a Trow"));
    }
}

pub async fn offline_serves_only_the_cache(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let other = image(tmp.path(), "other", "2.0");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "off/app:1.0");
    up.push(&other.oci_ref(), "off/app:2.0"); // never pulled through Trow
    let reqs = up.requests();
    let data = tmp.path().join("data");
    let online = ProxyConfig::new([up.entry().alias("off")]);
    let repo = "f/off/off/app";

    // Online: one pull fills the cache.
    let mut p = OnDataDir::start(topology, &online, &tmp.path().join("online.yml"), &data);
    skopeo_pull(
        &p.trow().image(&format!("{repo}:1.0")),
        &tmp.path().join("out1"),
        "1.0",
    );
    assert_layout_holds(&tmp.path().join("out1"), "1.0", &img);
    assert!(reqs.blob_gets(&img.layers[0]) == 1, "{}", reqs.describe());
    p.stop_and_fsck();
    drop(p);

    // Offline, on the same store: the upstream is still up, and must not hear from Trow.
    let offline = online.clone().offline(true);
    let mut p = OnDataDir::start(topology, &offline, &tmp.path().join("offline.yml"), &data);
    let (mark, connections) = (reqs.mark(), reqs.connections());
    let out = tmp.path().join("out2");
    skopeo_pull(&p.trow().image(&format!("{repo}:1.0")), &out, "1.0");
    assert_layout_holds(&out, "1.0", &img);
    let r = p.get_m(&format!("{repo}/manifests/1.0")).await;
    assert_manifest(&r, &img);
    assert_cache(&r, "hit");
    let r = p
        .get_m(&format!("{repo}/manifests/{}", img.manifest_digest))
        .await;
    assert_manifest(&r, &img);
    assert_cache(&r, "hit");
    for d in blobs(&img) {
        let r = p.get(&format!("{repo}/blobs/{d}")).await;
        assert_blob(&r, &img, &d);
        assert_cache(&r, "hit");
    }
    let r = p.get(&format!("{repo}/tags/list")).await;
    r.assert_status(200);
    assert_eq!(r.json()["tags"], serde_json::json!(["1.0"]), "{r}");

    // What was never cached: a clear 404, not a 502 from trying the upstream.
    let absent = sha256_digest(b"never cached");
    for (path, code) in [
        (format!("{repo}/manifests/2.0"), "MANIFEST_UNKNOWN"),
        (
            format!("{repo}/manifests/{}", other.manifest_digest),
            "MANIFEST_UNKNOWN",
        ),
        ("f/off/off/other/manifests/1.0".into(), "MANIFEST_UNKNOWN"),
        (format!("{repo}/blobs/{}", other.layers[0]), "BLOB_UNKNOWN"),
        (format!("{repo}/blobs/{absent}"), "BLOB_UNKNOWN"),
    ] {
        let r = p.get_m(&path).await;
        r.assert_error(404, code);
        assert!(!error_message(&r).is_empty(), "{path}: say what: {r}");
    }
    let asked = reqs.since(mark);
    assert!(
        asked.is_empty() && reqs.connections() == connections,
        "offline, yet the upstream got {} connection(s):\n{}",
        reqs.connections() - connections,
        describe(&asked)
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// configured_only: true

pub async fn configured_only_refuses_the_rest(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "only/app:1.0");
    up.push(&img.oci_ref(), "elsewhere/app:1.0");
    // Configured for one repository prefix of one upstream.
    let config =
        ProxyConfig::new([up.entry().alias("only").path_prefix("only")]).configured_only(true);
    let mut p = Proxy::start(topology, &config, tmp.path());
    let reqs = up.requests();
    // A loopback listener nobody configured: refused as unconfigured, never connected to.
    let sentinel = Scripted::sentinel(&format!("{ip}:0"));
    let sentinel_name = sentinel.addr_string().replace(':', "_");

    let zero = format!("sha256:{}", "0".repeat(64));
    let invalid = "registry.example.invalid";
    for (path, named) in [
        (format!("f/{invalid}/x/manifests/1"), invalid),
        (format!("f/{invalid}/x/blobs/{zero}"), invalid),
        (format!("f/{invalid}/x/tags/list"), invalid),
        (format!("x/manifests/1?ns={invalid}"), invalid),
        (
            "f/docker.io/library/nginx/manifests/1.27".into(),
            "docker.io",
        ),
        (
            "library/nginx/manifests/1.27?ns=docker.io".into(),
            "docker.io",
        ),
        (
            format!("f/{sentinel_name}/x/manifests/1"),
            sentinel_name.as_str(),
        ),
        // The configured upstream, outside its configured prefix.
        ("f/only/elsewhere/app/manifests/1.0".into(), "only"),
    ] {
        let start = Instant::now();
        let r = p.get_m(&path).await;
        let took = start.elapsed();
        // DENIED, not the 502 a failed lookup or connection would give: refused before either.
        r.assert_error(403, "DENIED");
        let message = error_message(&r);
        assert!(
            message.contains(named) && message.contains("not configured"),
            "{path}: the refusal must name {named:?} and say why: {r}"
        );
        assert!(
            took < Duration::from_secs(2),
            "{path}: refused only after {took:?}"
        );
    }
    assert_eq!(
        sentinel.requests.connections(),
        0,
        "{}",
        sentinel.requests.describe()
    );
    assert!(
        reqs.all().is_empty(),
        "the refusals reached the configured upstream:\n{}",
        reqs.describe()
    );

    // The configured one works, by alias, by host and by ?ns=.
    assert_manifest(&p.get_m("f/only/only/app/manifests/1.0").await, &img);
    let by_host = format!("f/{}/only/app/manifests/1.0", up.path_name());
    assert_manifest(&p.get_m(&by_host).await, &img);
    let ns = format!("only/app/manifests/1.0?ns={}", up.authority());
    assert_manifest(&p.get_m(&ns).await, &img);
    let out = tmp.path().join("out");
    skopeo_pull(&p.image("f/only/only/app:1.0"), &out, "1.0");
    assert_layout_holds(&out, "1.0", &img);

    let catalog = p.catalog().await;
    assert!(
        catalog.iter().all(|c| c == "f/only/only/app"),
        "refused requests left repositories behind: {catalog:?}"
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// ?ns=<--hostname> is a local read

/// What `--hostname` is set to.
const HOSTNAME: &str = "trow.test:5000";

pub async fn ns_of_the_hostname_is_local(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let local = image(tmp.path(), "local", "1");
    let remote = image(tmp.path(), "remote", "1");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&remote.oci_ref(), "team/app:1");
    // The flag goes to the one process, or to the gateway in the split topology.
    let mut p = Proxy::start_with(
        topology,
        &ProxyConfig::new([up.entry()]),
        tmp.path(),
        Flags::gateway(&["--hostname", HOSTNAME]),
    );
    let reqs = up.requests();
    push_local(&local, &p.image("team/app:1"));

    // ?ns=<hostname>: the local repository, as without ns, and nothing of the cache.
    assert_ne!(local.manifest_digest, remote.manifest_digest);
    for path in [
        format!("team/app/manifests/1?ns={HOSTNAME}"),
        format!("team/app/manifests/{}?ns={HOSTNAME}", local.manifest_digest),
        "team/app/manifests/1".to_string(),
    ] {
        let r = p.get_m(&path).await;
        assert_manifest(&r, &local);
        assert_local(&r);
    }
    for d in blobs(&local) {
        let r = p.get(&format!("team/app/blobs/{d}?ns={HOSTNAME}")).await;
        assert_blob(&r, &local, &d);
        assert_local(&r);
    }
    let r = p.get(&format!("team/app/tags/list?ns={HOSTNAME}")).await;
    r.assert_status(200);
    assert_eq!(r.json()["tags"], serde_json::json!(["1"]), "{r}");
    assert_local(&r);
    assert!(
        reqs.all().is_empty(),
        "?ns={HOSTNAME} reached the upstream:\n{}",
        reqs.describe()
    );

    // ?ns=<the upstream>: the same path is the upstream's image, through the cache.
    let authority = up.authority();
    let r = p
        .get_m(&format!("team/app/manifests/1?ns={authority}"))
        .await;
    assert_manifest(&r, &remote);
    assert_cache(&r, "miss");
    r.assert_header("oci-namespace", &authority);
    assert!(
        reqs.count_where(|r| r.path() == "/v2/team/app/manifests/1") >= 1,
        "{}",
        reqs.describe()
    );
    // ... and the local repository is untouched by it.
    assert_manifest(&p.get_m("team/app/manifests/1").await, &local);
    let catalog = p.catalog().await;
    assert!(catalog.contains(&"team/app".to_string()), "{catalog:?}");
    assert!(
        catalog.contains(&format!("f/{}/team/app", up.path_name())),
        "{catalog:?}"
    );
    p.stop_and_fsck();
}

/// An answer from a local repository: nothing says it came through the cache.
fn assert_local(r: &Resp) {
    for h in ["trow-cache", "oci-namespace"] {
        assert_eq!(
            r.header(h),
            None,
            "{}: a local read has no {h} header: {r}",
            r.what
        );
    }
}

/// `skopeo copy --preserve-digests` of `img` to `reference` (`127.0.0.1:PORT/repo:tag`).
fn push_local(img: &Image, reference: &str) {
    let mut cmd = skopeo(["copy", "--preserve-digests", "--dest-tls-verify=false"]);
    cmd.arg(img.oci_ref()).arg(format!("docker://{reference}"));
    run(&mut cmd);
}

// ---------------------------------------------------------------------------------------------
// A bad config file

/// Which `trow` reads the config.
#[derive(Clone, Copy, Debug)]
pub enum Reader {
    /// `trow` (everything in one process).
    OneProcess,
    /// `trow proxy`.
    Proxy,
}

/// A password in the bad configs: no error may show it.
const SECRET: &str = "do-not-print-this-secret";

pub fn a_bad_config_stops_start_up(reader: Reader) {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "bad-alias",
            format!(
                "registry_proxies:\n  registries:\n    - host: registry.example.com\n      \
                 alias: \"Bad:Alias\"\n      username: robot\n      password: {SECRET}\n"
            ),
            vec!["registry_proxies.registries[0].alias", "Bad:Alias"],
        ),
        (
            "unknown-key",
            format!(
                "registry_proxies:\n  registries:\n    - host: registry.example.com\n      \
                 username: robot\n      pasword: {SECRET}\n"
            ),
            vec!["pasword", "registries[0]"],
        ),
    ];
    for (name, yaml, expected) in cases {
        let config = tmp.path().join(format!("{name}.yml"));
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = Command::new(trow_bin());
        match reader {
            Reader::OneProcess => {
                cmd.args([
                    "--bind",
                    "127.0.0.1:0",
                    "--storage-listen",
                    "127.0.0.1:0",
                    "--proxy-listen",
                    "127.0.0.1:0",
                    "--data-dir",
                ])
                .arg(tmp.path().join("data"));
            }
            Reader::Proxy => {
                cmd.args([
                    "proxy",
                    "--listen",
                    "127.0.0.1:0",
                    "--storage",
                    "http://127.0.0.1:1",
                ]);
            }
        }
        cmd.arg("--config-file").arg(&config);
        let (status, stdout, stderr, took) = trow_tests::run_to_exit(cmd, Duration::from_secs(10));
        eprintln!("{reader:?} {name}: {status} after {took:?}: {stderr}");
        assert!(
            !status.success(),
            "{reader:?} started with {}:\n{stderr}",
            config.display()
        );
        for e in expected {
            assert!(
                stderr.contains(e),
                "{reader:?} {name}: stderr must name {e:?}:\n{stderr}"
            );
        }
        assert!(
            !stderr.contains(SECRET),
            "{reader:?} {name}: the error shows the password:\n{stderr}"
        );
        assert!(
            !stderr.contains(SECRET) && !stdout.contains(SECRET),
            "{reader:?} {name}: the log shows the password:\n{stdout}"
        );
        let log = format!("{stdout}{stderr}");
        assert!(
            !log.contains(" on http://") && !log.contains("gRPC on "),
            "{reader:?} {name}: it listened before refusing the config:\n{log}"
        );
    }
}
