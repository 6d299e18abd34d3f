//! Proxy replicas in the split topology: a gateway passes over a replica that died; a fill
//! whose proxy was killed in the middle is taken over by another replica from the bytes already
//! stored, so the client's retry gets the whole blob and the upstream sends it only once more
//! from where it stopped; and one host name for all replicas (a headless Service) is resolved
//! again and again, so every pod behind it is used, those that come too.

use futures::StreamExt;
use std::time::{Duration, Instant};

use crate::support::{Proxy, assert_layout_holds, blobs, image, skopeo_pull};
use trow_tests::images::{self, read_blob};
use trow_tests::oci::client;
use trow_tests::upstream::{ProxyConfig, Upstream};
use trow_tests::{Flags, ProxyName, Topology, sha256_digest};

pub async fn a_dead_proxy_replica_is_passed_over(ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/app:1.0");
    let config = ProxyConfig::new([up.entry().alias("up")]);
    let mut p = Proxy::start_with(
        Topology::Split,
        &config,
        tmp.path(),
        Flags::default().with_proxies(2),
    );
    p.reg.trow.as_mut().unwrap().proxies[0].kill9();
    // Every call, whichever replica its turn would pick, is answered.
    for i in 0..3 {
        let layout = tmp.path().join(format!("pulled-{i}"));
        skopeo_pull(&p.image("f/up/team/app:1.0"), &layout, "1.0");
        assert_layout_holds(&layout, "1.0", &img);
    }
    for _ in 0..4 {
        p.get_m("f/up/team/app/manifests/1.0")
            .await
            .assert_status(200);
    }
    p.stop_and_fsck();
}

pub async fn a_proxy_killed_mid_fill_is_taken_over(ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = images::build_image_sized(&tmp.path().join("src"), "1.0", "amd64", 8 << 20);
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/big:1.0");
    let big = blobs(&img)
        .into_iter()
        .max_by_key(|d| read_blob(&img.layout, d).len())
        .unwrap();
    let expected = sha256_digest(&read_blob(&img.layout, &big));
    up.set_throttle(1 << 20);
    let config = ProxyConfig::new([up.entry().alias("big")]);
    let mut p = Proxy::start_with(
        Topology::Split,
        &config,
        tmp.path(),
        Flags::storage(&["--fill-timeout", "2"]).with_proxies(2),
    );
    let url = p.v2(&format!("f/big/team/big/blobs/{big}"));

    // The gateway's first proxied call goes to the first replica: it becomes the filler.
    let c = client();
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got = 0;
    while got < (1 << 20) {
        got += body.next().await.expect("bytes").expect("bytes").len();
    }
    p.reg.trow.as_mut().unwrap().proxies[0].kill9();
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(
        rest.is_ok(),
        "the first download ends once its proxy is gone"
    );
    up.set_throttle(0);

    // The retry reaches the other replica, which follows the stalled fill, then takes it over.
    let r = tokio::time::timeout(Duration::from_secs(60), async {
        let r = c.get(&url).send().await.unwrap();
        (r.status().as_u16(), r.bytes().await)
    })
    .await
    .expect("the retry finishes");
    assert_eq!(r.0, 200);
    let bytes = r.1.expect("the whole blob");
    assert_eq!(
        sha256_digest(&bytes),
        expected,
        "the retry gets the right bytes"
    );
    assert!(p.storage_has_blob("f/big/team/big", &big).await);
    let gets = up.requests().blob_gets(&big);
    assert_eq!(
        gets,
        2,
        "one GET by the killed filler, one (from the stored offset) by the one that took over:\n{}",
        up.requests().describe()
    );
    let storage_log = p.trow().storage.as_ref().unwrap().log_text();
    assert!(
        storage_log.contains("a stalled fill was taken over"),
        "storage log:\n{storage_log}"
    );
    // A third read is a hit.
    let r = p.get(&format!("f/big/team/big/blobs/{big}")).await;
    r.assert_status(200);
    assert_eq!(up.requests().blob_gets(&big), 2);
    p.stop_and_fsck();
}

/// Six proxied calls, each of which must be answered: enough for round robin to reach every
/// replica.
async fn calls(p: &Proxy) {
    for _ in 0..6 {
        p.get_m("f/up/team/app/manifests/1.0")
            .await
            .assert_status(200);
    }
}

/// The gateway's established connections to `ip:port` (seen with `ss`), so a test can tell
/// which replicas a name made it use.
fn connections_to(ip: &str, port: &str) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( dst {ip} and dport = :{port} )"))
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss: {out:?}");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

pub async fn one_name_for_several_replicas(ips: [&str; 3], upstream_ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let up = Upstream::start(upstream_ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/app:1.0");
    let config = ProxyConfig::new([up.entry().alias("up")]);
    let name = ProxyName {
        name: "trow-proxy.test".to_string(),
        ips: vec![ips[0].to_string(), ips[1].to_string()],
        hosts_file: tmp.path().join("hosts"),
    };
    let mut p = Proxy::start_with(
        Topology::Split,
        &config,
        tmp.path(),
        Flags {
            proxy_name: Some(name.clone()),
            ..Flags::default()
        },
    );
    let port = p.trow().proxy_addrs[0]
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();

    // Both addresses of the name serve: the gateway holds a connection to each.
    calls(&p).await;
    for ip in &ips[..2] {
        assert!(
            connections_to(ip, &port) > 0,
            "the gateway never connected to the replica at {ip}:{port}"
        );
    }

    // A third pod comes up and the name now lists it: within a resolution period the gateway
    // uses it, with no restart.
    p.reg
        .trow
        .as_mut()
        .unwrap()
        .add_proxy(&format!("{}:{port}", ips[2]));
    name.point_at(&ips);
    let deadline = Instant::now() + Duration::from_secs(20);
    while connections_to(ips[2], &port) == 0 {
        assert!(
            Instant::now() < deadline,
            "the gateway did not pick up the new address {}:{port} of the name",
            ips[2]
        );
        calls(&p).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The first two pods go: the name's last address serves every call.
    name.point_at(&ips[2..]);
    for i in 0..2 {
        p.reg.trow.as_mut().unwrap().proxies[i].kill9();
    }
    calls(&p).await;
    let layout = tmp.path().join("pulled");
    skopeo_pull(&p.image("f/up/team/app:1.0"), &layout, "1.0");
    assert_layout_holds(&layout, "1.0", &img);
    p.stop_and_fsck();
}
