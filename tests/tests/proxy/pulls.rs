//! Pulls through the cache: cold then warm, the spellings of a registry (alias, host, host_port,
//! `?ns=`) sharing one cache, clients (skopeo, crane, containerd), a failing upstream, and many
//! clients at once.

use std::time::{Duration, Instant};

use crate::support::{
    Proxy, assert_blob, assert_cache, assert_layout_holds, assert_manifest, blobs, cache_status,
    error_message, get_with, image, skopeo_pull,
};
use trow_tests::clients::Containerd;
use trow_tests::images::{self, read_blob};
use trow_tests::oci::client;
use trow_tests::tools::Workdir;
use trow_tests::upstream::{ProxyConfig, Upstream, assert_no_containerd_requests, describe};
use trow_tests::{Flags, Topology, sha256_digest};

// ---------------------------------------------------------------------------------------------
// A cold pull, then warm ones

pub async fn cold_pull_then_warm(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/app:1.0");
    up.push(&img.oci_ref(), "team/app:latest");
    let config = ProxyConfig::new([up.entry().alias("up").path_prefix("team")]);
    let mut p = Proxy::start(topology, &config, tmp.path());
    let reqs = up.requests();
    let digest = &img.manifest_digest;

    // Cold: the manifest comes from the upstream.
    let by_tag = "f/up/team/app/manifests/1.0";
    let r = p.get_m(by_tag).await;
    assert_manifest(&r, &img);
    assert_cache(&r, "miss");
    // By tag or, after a HEAD of the tag, by digest: the manifest's body, once.
    let manifest_gets = || {
        reqs.count_where(|r| r.method == "GET" && r.path().starts_with("/v2/team/app/manifests/"))
    };
    assert_eq!(manifest_gets(), 1, "{}", reqs.describe());

    // Warm by tag: revalidated with exactly one HEAD, the body from the cache.
    let mark = reqs.mark();
    let r = p.get_m(by_tag).await;
    assert_manifest(&r, &img);
    assert_cache(&r, "revalidated");
    let asked = reqs.since_without_pings(mark);
    assert!(
        asked.len() == 1 && asked[0].is("HEAD", "/v2/team/app/manifests/1.0"),
        "a revalidation is one HEAD of the tag; the upstream got:\n{}",
        describe(&asked)
    );

    // By digest: never asks the upstream, GET or HEAD, by alias or by host_port (one cache).
    let mark = reqs.mark();
    for name in ["up".to_string(), up.path_name()] {
        let url = format!("f/{name}/team/app/manifests/{digest}");
        let r = p.get_m(&url).await;
        assert_manifest(&r, &img);
        assert_cache(&r, "hit");
        let h = p.reg.head_m(&p.v2(&url)).await;
        h.assert_status(200)
            .assert_header("docker-content-digest", digest);
        assert_cache(&h, "hit");
    }
    assert!(
        reqs.since(mark).is_empty(),
        "{}",
        describe(&reqs.since(mark))
    );

    // A blob: fetched once, then served from the cache.
    let layer = &img.layers[0];
    let url = format!("f/up/team/app/blobs/{layer}");
    let r = p.get(&url).await;
    assert_blob(&r, &img, layer);
    assert_cache(&r, "miss");
    let mark = reqs.mark();
    let r = p.get(&url).await;
    assert_blob(&r, &img, layer);
    assert_cache(&r, "hit");
    assert!(
        reqs.since(mark).is_empty(),
        "{}",
        describe(&reqs.since(mark))
    );

    // A real client gets the upstream's image, byte for byte.
    let out = tmp.path().join("out");
    skopeo_pull(&p.image("f/up/team/app:1.0"), &out, "1.0");
    assert_layout_holds(&out, "1.0", &img);

    // Across all of this, each blob and the manifest came from the upstream once.
    for d in blobs(&img) {
        assert_eq!(reqs.blob_gets(&d), 1, "GETs of {d}:\n{}", reqs.describe());
    }
    assert_eq!(manifest_gets(), 1, "{}", reqs.describe());

    // Tags are the upstream's.
    let r = p.get("f/up/team/app/tags/list").await;
    r.assert_status(200);
    assert_eq!(
        r.json()["tags"],
        serde_json::json!(["1.0", "latest"]),
        "{r}"
    );
    assert!(
        ["miss", "revalidated"].contains(&cache_status(&r).as_str()),
        "tags come from the upstream: {r}"
    );

    // The cache is one repository, named after the alias.
    let catalog = p.catalog().await;
    assert!(
        catalog.contains(&"f/up/team/app".to_string()),
        "{catalog:?}"
    );
    let by_host = format!("f/{}/", up.path_name());
    assert!(
        !catalog.iter().any(|c| c.starts_with(&by_host)),
        "{catalog:?}"
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// Port 80 (no port in the name), crane, and containerd's ?ns= sharing the cache

pub async fn port_80_upstream_crane_and_ns(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let up = Upstream::start(ip, 80);
    let _up_logs = up.logs_on_panic();
    assert_eq!(up.authority(), ip);
    up.push(&img.oci_ref(), "lib/img:1.0");
    let mut p = Proxy::start(topology, &ProxyConfig::new([up.entry()]), tmp.path());
    let reqs = up.requests();
    let digest = &img.manifest_digest;

    // crane through /f/<ip>/...
    let w = Workdir::new();
    let reference = p.image(&format!("f/{ip}/lib/img:1.0"));
    let got = w.run("crane", ["digest", "--insecure", &reference]);
    assert_eq!(got.trim(), digest, "crane digest");
    let manifest = w.run("crane", ["manifest", "--insecure", &reference]);
    assert_eq!(
        sha256_digest(manifest.as_bytes()),
        *digest,
        "crane manifest"
    );
    let out = tmp.path().join("crane-out");
    let out_s = out.to_string_lossy().into_owned();
    w.run(
        "crane",
        ["pull", "--insecure", "--format", "oci", &reference, &out_s],
    );
    trow_tests::clients::assert_layout_blobs_intact(&out);
    for d in blobs(&img).iter().chain([digest]) {
        assert_eq!(
            read_blob(&out, d),
            read_blob(&img.layout, d),
            "crane pulled {d}"
        );
    }
    for d in blobs(&img) {
        assert_eq!(reqs.blob_gets(&d), 1, "GETs of {d}:\n{}", reqs.describe());
    }

    // ?ns=<ip> on the plain repository path: the same cache.
    let mark = reqs.mark();
    let r = p.get_m(&format!("lib/img/manifests/1.0?ns={ip}")).await;
    assert_manifest(&r, &img);
    r.assert_header("oci-namespace", ip);
    assert_cache(&r, "revalidated");
    let r = p
        .get_m(&format!("lib/img/manifests/{digest}?ns={ip}"))
        .await;
    assert_manifest(&r, &img);
    r.assert_header("oci-namespace", ip);
    assert_cache(&r, "hit");
    for d in blobs(&img) {
        let r = p.get(&format!("lib/img/blobs/{d}?ns={ip}")).await;
        assert_blob(&r, &img, &d);
        r.assert_header("oci-namespace", ip);
        assert_cache(&r, "hit");
    }
    let asked = reqs.since_without_pings(mark);
    assert!(
        asked.len() == 1 && asked[0].is("HEAD", "/v2/lib/img/manifests/1.0"),
        "?ns= must share /f/'s cache; the upstream got:\n{}",
        describe(&asked)
    );

    // containerd with Trow as the mirror of <ip>: it sends ?ns=<ip>, all from the cache. Its
    // fallback server is dead (nothing listens on port 1), so only Trow can answer.
    let hosts = tmp.path().join("hosts");
    std::fs::create_dir_all(hosts.join(ip)).unwrap();
    std::fs::write(
        hosts.join(ip).join("hosts.toml"),
        format!(
            "server = \"http://{ip}:1\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \
             \"resolve\"]\n",
            p.trow().addr
        ),
    )
    .unwrap();
    let ctr = Containerd::start();
    let mark = reqs.mark();
    let ctr_ref = format!("{ip}/lib/img:1.0");
    ctr.run([
        "images",
        "pull",
        "--hosts-dir",
        &hosts.to_string_lossy(),
        &ctr_ref,
    ]);
    assert_eq!(ctr.image(&ctr_ref).digest, *digest);
    let asked = reqs.since(mark);
    assert_no_containerd_requests(&asked);
    assert!(
        !asked.iter().any(|r| r.method == "GET" && !r.is_ping()),
        "a warm mirror pull fetched from the upstream:\n{}",
        describe(&asked)
    );

    let catalog = p.catalog().await;
    assert!(catalog.contains(&format!("f/{ip}/lib/img")), "{catalog:?}");
    assert_eq!(
        catalog.iter().filter(|c| c.starts_with("f/")).count(),
        1,
        "{catalog:?}"
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// The upstream hangs, then dies

pub async fn stale_when_the_upstream_fails(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let mut up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "stale/app:1.0");
    up.push(&img.oci_ref(), "stale/app:2.0"); // never pulled through Trow
    let config = ProxyConfig::new([up.entry()]).revalidate_timeout("2s");
    let mut p = Proxy::start(topology, &config, tmp.path());
    let repo = format!("f/{}/stale/app", up.path_name());

    skopeo_pull(
        &p.image(&format!("{repo}:1.0")),
        &tmp.path().join("out1"),
        "1.0",
    );
    assert_layout_holds(&tmp.path().join("out1"), "1.0", &img);

    // A hanging upstream: the revalidation gives up after revalidate_timeout.
    up.hang();
    let mark = up.requests().mark();
    let start = Instant::now();
    let r = p.get_m(&format!("{repo}/manifests/1.0")).await;
    let took = start.elapsed();
    eprintln!("stale answer with a hanging upstream after {took:?}");
    assert_manifest(&r, &img);
    assert_cache(&r, "stale");
    assert!(
        took < Duration::from_secs(10),
        "revalidate_timeout 2s, answered after {took:?}"
    );
    assert!(
        up.requests()
            .since(mark)
            .iter()
            .any(|r| r.path() == "/v2/stale/app/manifests/1.0"),
        "stale without asking the upstream:\n{}",
        up.requests().describe()
    );

    // A dead upstream: pulls of what is cached still work.
    up.kill();
    skopeo_pull(
        &p.image(&format!("{repo}:1.0")),
        &tmp.path().join("out2"),
        "1.0",
    );
    assert_layout_holds(&tmp.path().join("out2"), "1.0", &img);
    let r = p.get_m(&format!("{repo}/manifests/1.0")).await;
    assert_manifest(&r, &img);
    assert_cache(&r, "stale");
    let r = p
        .get_m(&format!("{repo}/manifests/{}", img.manifest_digest))
        .await;
    assert_manifest(&r, &img);
    assert_cache(&r, "hit");
    let r = p.get(&format!("{repo}/blobs/{}", img.layers[1])).await;
    assert_blob(&r, &img, &img.layers[1]);
    assert_cache(&r, "hit");

    // What was never cached: 502 UNKNOWN, naming the upstream.
    let absent = sha256_digest(b"never cached");
    for path in [
        format!("{repo}/manifests/2.0"),
        format!("f/{}/other/app/manifests/1.0", up.path_name()),
        format!("{repo}/blobs/{absent}"),
    ] {
        let r = p.get_m(&path).await;
        r.assert_error(502, "UNKNOWN");
        assert!(
            error_message(&r).contains(ip),
            "the message must name the upstream: {r}"
        );
    }

    // Tags: the cached ones.
    let r = p.get(&format!("{repo}/tags/list")).await;
    r.assert_status(200);
    assert_cache(&r, "stale");
    let tags = r.json()["tags"].clone();
    assert!(
        tags.as_array()
            .is_some_and(|t| t.contains(&"1.0".into()) && !t.contains(&"2.0".into())),
        "cached tags only: {r}"
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// Many cold pulls at once, one upstream fetch per blob

pub async fn concurrent_cold_pulls_fetch_each_blob_once(topology: Topology, ip: &str) {
    const CLIENTS: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let img = images::build_image_sized(&tmp.path().join("src"), "1.0", "amd64", 6 << 20);
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/big:1.0");
    // Slow enough that every client arrives while the big layer is still being fetched.
    up.set_throttle(4 << 20);
    let config = ProxyConfig::new([up.entry().alias("big")]);
    // Three proxy replicas in the split topology (and two gateways, below): storage picks which
    // proxy fetches.
    let mut p = Proxy::start_with(
        topology,
        &config,
        tmp.path(),
        Flags::default().with_proxies(3),
    );

    // In the split topology a second gateway, on the same storage and proxies, takes every
    // other client.
    let second = (topology == Topology::Split).then(|| p.trow().another_gateway());
    let bases: Vec<String> = std::iter::once(p.v2("f/big/team/big"))
        .chain(
            second
                .as_ref()
                .map(|(_, url)| format!("{url}/v2/f/big/team/big")),
        )
        .collect();
    let expected: Vec<(String, String)> = blobs(&img)
        .into_iter()
        .map(|d| {
            let sum = sha256_digest(&read_blob(&img.layout, &d));
            (d, sum)
        })
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (base, expected, digest) = (
                bases[i % bases.len()].clone(),
                expected.clone(),
                img.manifest_digest.clone(),
            );
            tokio::spawn(async move {
                let c = client();
                let m = get_with(&c, &format!("{base}/manifests/1.0")).await;
                assert_eq!(m.status, 200, "client {i}: {m}");
                assert_eq!(sha256_digest(&m.body), digest, "client {i}");
                for (d, sum) in &expected {
                    let r = get_with(&c, &format!("{base}/blobs/{d}")).await;
                    assert_eq!(r.status, 200, "client {i}: {d}: {r}");
                    assert_eq!(
                        &sha256_digest(&r.body),
                        sum,
                        "client {i}: wrong bytes for {d}"
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a client failed");
    }
    eprintln!("{CLIENTS} cold pulls in {:?}", start.elapsed());
    let reqs = up.requests();
    for (d, _) in &expected {
        assert_eq!(
            reqs.blob_gets(d),
            1,
            "upstream GETs of {d}:\n{}",
            reqs.describe()
        );
    }
    let manifest_gets =
        reqs.count_where(|r| r.method == "GET" && r.path().starts_with("/v2/team/big/manifests/"));
    eprintln!("upstream manifest GETs for {CLIENTS} clients: {manifest_gets}");
    assert_eq!(
        manifest_gets,
        1,
        "the manifest is fetched once (tags are only HEADed):\n{}",
        reqs.describe()
    );
    drop(second);
    p.stop_and_fsck();
}
