//! Issue 25, findings 3 and 9 through real processes.
//!
//! - The proxy enforces `image_validation`: an image the policy denies is answered `403 DENIED`
//!   under every name of Trow (`localhost:<port>`, `127.0.0.1:<port>`) and every spelling of the
//!   upstream (`f/host_port`, `?ns=host:port`), before any upstream request (the counting front
//!   sees none) or cache read (an image cached before the policy is not served); the blobs of
//!   an image allowed by tag still pull; `enforce_in_proxy: false` turns it off.
//! - Default ports are the registry itself: `/f/<ip>_80/...`, `/f/<ip>_443/...` and
//!   `?ns=<ip>:80` reach the configured `<ip>` (port 80, plain http) and share its cache.
//! - `?ns=` equal to `--hostname` in another case is a local read.

use std::path::Path;

use trow_tests::clients::{LogsOnPanic, run};
use trow_tests::oci::{Reg, Resp};
use trow_tests::upstream::{ProxyConfig, Upstream, describe};
use trow_tests::{Flags, Topology, Trow};

use crate::support::{
    assert_blob, assert_cache, assert_manifest, assert_oci_error_status, blobs, error_message,
    image, skopeo_pull_cmd,
};

/// Trow's name for clients and for the policy's `<trow>/f/` rule.
const HOSTNAME: &str = "trow.test:5000";

/// A Trow on `data` with `yaml` as its config file and `--hostname` (gateway and proxy).
struct Started {
    _logs: LogsOnPanic,
    reg: Reg,
}

impl Started {
    fn start(topology: Topology, yaml: &str, dir: &Path, data: &Path) -> Started {
        let path = dir.join("config.yml");
        std::fs::write(&path, yaml).expect("write the config file");
        let hostname = ["--hostname".to_string(), HOSTNAME.to_string()];
        let flags = Flags {
            gateway: hostname.to_vec(),
            // In one process the gateway's flags already reach the proxy.
            proxy: match topology {
                Topology::Split => hostname.to_vec(),
                Topology::OneProcess => Vec::new(),
            },
            ..Flags::config(&path)
        };
        let trow = Trow::start_in_with(topology, data, flags);
        Started {
            _logs: LogsOnPanic::trow(&trow),
            reg: Reg::with_trow(trow),
        }
    }

    fn trow(&self) -> &Trow {
        self.reg.trow.as_ref().expect("a Trow")
    }

    /// `http://<host>:<port>/v2/<path>`, Trow named `host`.
    fn url(&self, host: &str, path: &str) -> String {
        let port = self.trow().addr.rsplit_once(':').expect("HOST:PORT").1;
        format!("http://{host}:{port}/v2/{path}")
    }
}

/// `403` with `DENIED` naming the image and the policy.
fn assert_denied(r: &Resp) {
    assert_oci_error_status(r, &[403]);
    assert_eq!(r.error_codes(), ["DENIED"], "{}: {r}", r.what);
    let m = error_message(r);
    assert!(
        m.contains("is denied by image_validation"),
        "{}: {m}",
        r.what
    );
}

fn config(up: &Upstream, validation: &str) -> String {
    format!(
        "{}image_validation:\n{validation}",
        ProxyConfig::new([up.entry()]).yaml()
    )
}

/// A denied image is refused under every name of Trow and of the upstream, also once cached,
/// with zero upstream requests; `enforce_in_proxy: false` serves it.
pub async fn denied_images_are_refused_under_every_name(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let evil = image(tmp.path(), "evil", "1");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&evil.oci_ref(), "evil/x:1");
    up.push(&evil.oci_ref(), "good/x:1");
    let deny = format!("  default: Allow\n  deny: [\"{}/evil/\"]\n", up.authority());
    let reqs = up.requests();

    // Enforcement off: the image is fetched, and so is in the cache from now on.
    let off = Started::start(
        topology,
        &config(&up, &format!("{deny}  enforce_in_proxy: false\n")),
        tmp.path(),
        &data,
    );
    let name = up.path_name();
    let r = off
        .reg
        .get_m(&off.url("127.0.0.1", &format!("f/{name}/evil/x/manifests/1")))
        .await;
    assert_manifest(&r, &evil);
    for d in blobs(&evil) {
        let r = off
            .reg
            .get(&off.url("127.0.0.1", &format!("f/{name}/evil/x/blobs/{d}")))
            .await;
        assert_blob(&r, &evil, &d);
    }
    drop(off);

    // Enforcement on (the default), same data dir: nothing of evil/ under any name.
    let on = Started::start(topology, &config(&up, &deny), tmp.path(), &data);
    let mark = reqs.mark();
    let authority = up.authority();
    let digest = &evil.manifest_digest;
    let mut paths = vec![
        format!("f/{name}/evil/x/manifests/1"),
        format!("f/{name}/evil/x/manifests/{digest}"),
        format!("f/{name}/evil/x/tags/list"),
        format!("evil/x/manifests/1?ns={authority}"),
        format!("evil/x/manifests/{digest}?ns={authority}"),
    ];
    paths.extend(
        blobs(&evil)
            .iter()
            .map(|d| format!("f/{name}/evil/x/blobs/{d}")),
    );
    for host in ["localhost", "127.0.0.1"] {
        for path in &paths {
            let r = on.reg.get_m(&on.url(host, path)).await;
            assert_denied(&r);
        }
        // A real client pulling through this name of Trow is refused too.
        let port = on.trow().addr.rsplit_once(':').unwrap().1.to_string();
        let reference = format!("{host}:{port}/f/{name}/evil/x:1");
        let out = skopeo_pull_cmd(&reference, &tmp.path().join(format!("{host}-out")), "1")
            .output()
            .expect("run skopeo");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("denied"),
            "skopeo pulled {reference}: {stderr}"
        );
    }
    let asked = reqs.since(mark);
    assert!(
        asked.is_empty(),
        "a denied image reached the upstream:\n{}",
        describe(&asked)
    );

    // The same upstream's other repositories still pull: the 403s were the policy's.
    let r = on
        .reg
        .get_m(&on.url("localhost", &format!("f/{name}/good/x/manifests/1")))
        .await;
    assert_manifest(&r, &evil);
    assert_cache(&r, "miss");
}

/// `default: Deny` with one tag allowed: that tag pulls with a real client (its blobs are
/// reference-less requests), another tag of the repository does not.
pub async fn an_allowed_tag_pulls_whole(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "img", "1.0");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "lib/img:1.0");
    up.push(&img.oci_ref(), "lib/img:2.0");
    let allow = format!(
        "  default: Deny\n  allow: [\"{}/lib/img:1.0\"]\n",
        up.authority()
    );
    let p = Started::start(
        topology,
        &config(&up, &allow),
        tmp.path(),
        &tmp.path().join("data"),
    );
    let reqs = up.requests();
    let name = up.path_name();
    let mark = reqs.mark();
    let r = p
        .reg
        .get_m(&p.url("localhost", &format!("f/{name}/lib/img/manifests/2.0")))
        .await;
    assert_denied(&r);
    assert!(reqs.since(mark).is_empty(), "{}", reqs.describe());
    let port = p.trow().addr.rsplit_once(':').unwrap().1.to_string();
    let layout = tmp.path().join("pulled");
    run(&mut skopeo_pull_cmd(
        &format!("localhost:{port}/f/{name}/lib/img:1.0"),
        &layout,
        "1.0",
    ));
    crate::support::assert_layout_holds(&layout, "1.0", &img);
}

/// `/f/<ip>_80/...`, `/f/<ip>_443/...` and `?ns=<ip>:80` are the configured `<ip>` (port 80).
pub async fn default_ports_reach_the_configured_upstream(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "img", "1.0");
    let up = Upstream::start(ip, 80);
    let _up_logs = up.logs_on_panic();
    assert_eq!(up.authority(), ip);
    up.push(&img.oci_ref(), "lib/img:1.0");
    let p = Started::start(
        topology,
        &ProxyConfig::new([up.entry()]).configured_only(true).yaml(),
        tmp.path(),
        &tmp.path().join("data"),
    );
    let reqs = up.requests();
    let r = p
        .reg
        .get_m(&p.url("127.0.0.1", &format!("f/{ip}_80/lib/img/manifests/1.0")))
        .await;
    assert_manifest(&r, &img);
    assert_cache(&r, "miss");
    for d in blobs(&img) {
        let r = p
            .reg
            .get(&p.url("127.0.0.1", &format!("f/{ip}_80/lib/img/blobs/{d}")))
            .await;
        assert_blob(&r, &img, &d);
    }
    // One cache for every spelling: these are all hits, and never ask the upstream again.
    let mark = reqs.mark();
    let digest = &img.manifest_digest;
    for path in [
        format!("f/{ip}/lib/img/manifests/{digest}"),
        format!("f/{ip}_443/lib/img/manifests/{digest}"),
        format!("lib/img/manifests/{digest}?ns={ip}:80"),
        format!("lib/img/manifests/{digest}?ns={ip}:443"),
    ] {
        let r = p.reg.get_m(&p.url("127.0.0.1", &path)).await;
        assert_manifest(&r, &img);
        assert_cache(&r, "hit");
    }
    let r = p
        .reg
        .get_m(&p.url("127.0.0.1", &format!("lib/img/manifests/1.0?ns={ip}:80")))
        .await;
    assert_manifest(&r, &img);
    r.assert_header("oci-namespace", &format!("{ip}:80"));
    assert_cache(&r, "revalidated");
    let asked = reqs.since_without_pings(mark);
    assert!(
        asked.len() == 1 && asked[0].is("HEAD", "/v2/lib/img/manifests/1.0"),
        "the spellings must share one cache; the upstream got:\n{}",
        describe(&asked)
    );
}

/// `?ns=` naming `--hostname` in capitals is a local read, not a proxied one.
pub async fn ns_of_the_hostname_in_capitals_is_local(topology: Topology) {
    let tmp = tempfile::tempdir().unwrap();
    let local = image(tmp.path(), "local", "1");
    // configured_only: before the fix the `ns` was proxied and refused as unconfigured,
    // without resolving the name.
    let p = Started::start(
        topology,
        &ProxyConfig::new([]).configured_only(true).yaml(),
        tmp.path(),
        &tmp.path().join("data"),
    );
    let port = p.trow().addr.rsplit_once(':').unwrap().1.to_string();
    let mut cmd =
        trow_tests::clients::skopeo(["copy", "--preserve-digests", "--dest-tls-verify=false"]);
    cmd.arg(local.oci_ref())
        .arg(format!("docker://127.0.0.1:{port}/team/app:1"));
    run(&mut cmd);
    let upper = HOSTNAME.to_uppercase();
    for ns in [upper.as_str(), "Trow.Test:5000"] {
        let r = p
            .reg
            .get_m(&p.url("127.0.0.1", &format!("team/app/manifests/1?ns={ns}")))
            .await;
        assert_manifest(&r, &local);
        for h in ["trow-cache", "oci-namespace"] {
            assert_eq!(r.header(h), None, "a local read has no {h} header: {r}");
        }
    }
}
