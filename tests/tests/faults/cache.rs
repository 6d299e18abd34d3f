//! The pull-through cache under faults: storage killed (SIGKILL) while a proxy fills a large
//! blob, and an upstream that takes requests and never answers.

use trow_tests::clients::LogsOnPanic;
use trow_tests::images::{self, read_blob};
use trow_tests::oci::{ACCEPT_ALL, Reg, client, send, send_no_body};
use trow_tests::upstream::{ProxyConfig, Upstream};
use trow_tests::{Flags, Topology, Trow, sha256_digest};

use crate::support::{
    MIB, Partial, assert_storage_unavailable, guarded, signal, trow, wait_no_uploads,
};

pub async fn storage_killed_during_a_cache_fill(ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = images::build_image_sized(&tmp.path().join("src"), "1.0", "amd64", 8 << 20);
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/big:1.0");
    let layer = img
        .layers
        .iter()
        .max_by_key(|d| read_blob(&img.layout, d).len())
        .unwrap()
        .clone();
    let size = read_blob(&img.layout, &layer).len() as u64;
    // Slow enough that the fill is still running when storage dies.
    up.set_throttle(MIB);
    let config = ProxyConfig::new([up.entry().alias("big")]).write(&tmp.path().join("config.yml"));
    let mut reg = Reg::with_trow(Trow::start_with(
        Topology::Split,
        Flags::config(&config).with_proxies(2),
    ));
    let _logs = LogsOnPanic::trow(trow(&mut reg));
    let url = reg.v2(&format!("f/big/team/big/blobs/{layer}"));

    let c = client();
    // Each replica calls storage once (round robin), so each holds a connection to it.
    for _ in 0..2 {
        let r = send(
            c.get(reg.v2("f/big/team/big/manifests/1.0"))
                .header("Accept", ACCEPT_ALL),
        )
        .await;
        r.assert_status(200);
    }
    let mut pull = Partial::start(&c, &url, 200, MIB).await;
    // The proxies are paused (SIGSTOP) while storage dies and the next requests arrive, as busy
    // ones would be: they then call storage on connections they have not yet seen close.
    let proxies: Vec<u32> = trow(&mut reg).proxies.iter().map(|p| p.pid()).collect();
    for p in &proxies {
        signal(*p, "-STOP");
    }
    tokio::task::block_in_place(|| trow(&mut reg).kill_storage());
    pull.drain_cut(size, "the cold pull").await;
    // Reads through the cache need storage too: a prompt 503, as for local reads. The proxy
    // replica that answered is up: the gateway must not take its answer for an unreachable
    // replica and try every other one (which has the same storage).
    let g = guarded();
    let mark = trow(&mut reg).main.log_text().len();
    let calls: Vec<_> = [
        ("manifests/1.0".to_string(), false),
        (format!("manifests/{}", img.manifest_digest), false),
        (format!("blobs/{layer}"), false),
        (format!("blobs/{layer}"), true),
    ]
    .into_iter()
    .map(|(path, head)| {
        let url = reg.v2(&format!("f/big/team/big/{path}"));
        let g = g.clone();
        tokio::spawn(async move {
            let r = if head {
                send_no_body(g.head(&url).header("Accept", ACCEPT_ALL)).await
            } else {
                send(g.get(&url).header("Accept", ACCEPT_ALL)).await
            };
            (r, head)
        })
    })
    .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for p in &proxies {
        signal(*p, "-CONT");
    }
    for call in calls {
        let (r, head) = call.await.expect("request task");
        assert_storage_unavailable(&r, head);
    }
    let log = trow(&mut reg).main.log_text()[mark..].to_string();
    assert!(
        !log.contains("proxy replica is unreachable"),
        "the gateway blamed a proxy replica for storage being down:\n{log}"
    );
    tokio::task::block_in_place(|| trow(&mut reg).restart_storage());
    up.set_throttle(0);

    // The retry, from where the download stopped, fills the blob again and gets the rest.
    pull.resume(&c, &url, size, &layer).await;
    assert_eq!(
        up.requests().blob_gets(&layer),
        2,
        "the killed fill's GET, and one for the retry (a fill is not resumed across a storage \
         restart):\n{}",
        up.requests().describe()
    );
    // Served from the cache now, whole; no scratch of either fill is left.
    let r = send(c.get(&url)).await;
    r.assert_status(200);
    r.assert_header("trow-cache", "hit");
    assert_eq!(sha256_digest(&r.body), layer);
    let data_dir = trow(&mut reg).data_dir.clone();
    wait_no_uploads(&data_dir).await;
    trow_tests::fsck::stop_and_fsck(trow(&mut reg));
}

// ---------------------------------------------------------------------------------------------
// An upstream that hangs

pub async fn a_hanging_upstream(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = images::build_image(&tmp.path().join("src"), "1.0", "amd64");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/app:1.0");
    up.push(&img.oci_ref(), "team/app:2.0"); // never asked for while the upstream answers
    let config = ProxyConfig::new([up.entry().alias("up")])
        .revalidate_timeout("1s")
        .fetch_timeout("2s")
        .write(&tmp.path().join("config.yml"));
    let reg = Reg::with_trow(Trow::start_with(topology, Flags::config(&config)));
    let _logs = LogsOnPanic::trow(reg.trow.as_ref().unwrap());
    let v2 = |p: &str| reg.v2(&format!("f/up/team/app/{p}"));

    // Cached while the upstream answers: the tag, its manifest, the config blob.
    let c = guarded();
    let r = send(c.get(v2("manifests/1.0")).header("Accept", ACCEPT_ALL)).await;
    r.assert_status(200);
    assert!(r.body == img.manifest_bytes(), "{r}");
    let r = send(c.get(v2(&format!("blobs/{}", img.config_digest)))).await;
    r.assert_status(200);

    // The upstream takes every request and never answers.
    up.hang();
    let mark = up.requests().mark();
    for round in 0..2 {
        eprintln!("round {round} with the upstream hanging");
        let r = send(c.get(v2("manifests/1.0")).header("Accept", ACCEPT_ALL)).await;
        r.assert_status(200);
        r.assert_header("trow-cache", "stale");
        assert!(r.body == img.manifest_bytes(), "{r}");
        let r = send(c.get(v2(&format!("blobs/{}", img.config_digest)))).await;
        r.assert_status(200);
        r.assert_header("trow-cache", "hit");
        assert!(r.body == read_blob(&img.layout, &img.config_digest), "{r}");
        let r = send(c.get(v2("tags/list"))).await;
        r.assert_status(200);
        r.assert_header("trow-cache", "stale");
        assert_eq!(r.json()["tags"], serde_json::json!(["1.0"]), "{r}");

        // Never cached: a 502 naming the upstream, not a wait for it.
        for (method, path) in [
            ("GET", format!("blobs/{}", img.layers[1])),
            ("HEAD", format!("blobs/{}", img.layers[0])),
            ("GET", "manifests/2.0".to_string()),
        ] {
            let req = c
                .request(method.parse().unwrap(), v2(&path))
                .header("Accept", ACCEPT_ALL);
            if method == "HEAD" {
                send_no_body(req).await.assert_status(502);
                continue;
            }
            let r = send(req).await;
            r.assert_error(502, "UNKNOWN");
            assert!(
                r.text().contains(ip),
                "{}: the message should name the upstream: {r}",
                r.what
            );
        }
    }
    // Each answer above came after the upstream was asked (and gave up on), not instead of it.
    let asked = up.requests().since(mark);
    for path in [
        "/v2/team/app/manifests/1.0".to_string(),
        format!("/v2/team/app/blobs/{}", img.layers[1]),
        "/v2/team/app/manifests/2.0".to_string(),
    ] {
        assert!(
            asked.iter().any(|r| r.path() == path),
            "{path} was not asked upstream:\n{}",
            up.requests().describe()
        );
    }
    let mut reg = reg;
    trow_tests::fsck::stop_and_fsck(trow(&mut reg));
}
