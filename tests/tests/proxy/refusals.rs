//! What the cache refuses: writes under `f/`, names that are no registry, an upstream's wrong
//! credentials, bytes that do not match their digest, and unconfigured loopback upstreams.

use std::time::{Duration, Instant};

use crate::support::liar::{self, Liar};
use crate::support::{
    Outcome, Proxy, assert_cache, assert_layout_holds, assert_manifest, assert_oci_error_status,
    blobs, error_message, get_outcome, image, skopeo_pull, skopeo_pull_cmd,
};
use trow_tests::clients::{describe as describe_cmd, output, skopeo};
use trow_tests::images::read_blob;
use trow_tests::oci::{OCI_MANIFEST, send};
use trow_tests::upstream::{Entry, PASSWORD, ProxyConfig, Scripted, USER, Upstream};
use trow_tests::{Topology, sha256_digest};

// ---------------------------------------------------------------------------------------------
// Writes under f/, and names that are not registries

pub async fn writes_under_f_are_denied(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/app:1.0");
    let mut p = Proxy::start(
        topology,
        &ProxyConfig::new([up.entry().alias("up")]),
        tmp.path(),
    );
    let (reg, repo) = (&p.reg, "f/up/team/app");
    let digest = &img.manifest_digest;
    assert_manifest(&p.get_m(&format!("{repo}/manifests/1.0")).await, &img);

    // Pushes to repositories outside f/ still work, with the proxy configured.
    let local_blob = reg.push_blob("local/app", b"a local blob").await;
    reg.push_image("local/app", "v1", "local").await;

    let denied = |r: &trow_tests::oci::Resp| {
        r.assert_error(403, "DENIED");
    };
    denied(&reg.start_upload(repo).await);
    let monolithic = format!(
        "{}?digest={local_blob}",
        reg.v2(&format!("{repo}/blobs/uploads/"))
    );
    denied(&send(reg.client.post(monolithic).body(b"a local blob".to_vec())).await);
    let mount = format!("{repo}/blobs/uploads/?mount={local_blob}&from=local/app");
    denied(
        &send(
            reg.client
                .post(reg.v2(&mount))
                .header("Content-Length", "0"),
        )
        .await,
    );
    let session = reg.v2(&format!(
        "{repo}/blobs/uploads/00000000-0000-0000-0000-000000000000"
    ));
    denied(&send(reg.client.patch(&session).body(b"x".to_vec())).await);
    denied(&send(reg.client.put(format!("{session}?digest={local_blob}"))).await);
    let manifest = read_blob(&img.layout, digest);
    denied(
        &reg.put_manifest(repo, "pushed", OCI_MANIFEST, &manifest)
            .await,
    );
    denied(
        &reg.put_manifest(repo, digest, OCI_MANIFEST, &manifest)
            .await,
    );
    denied(
        &reg.delete(&reg.v2(&format!("{repo}/manifests/{digest}")))
            .await,
    );
    denied(&reg.delete(&reg.v2(&format!("{repo}/manifests/1.0"))).await);
    denied(
        &reg.delete(&reg.v2(&format!("{repo}/blobs/{}", img.layers[0])))
            .await,
    );

    // A real client is told so.
    let mut cmd = skopeo(["copy", "--dest-tls-verify=false", "--retry-times=0"]);
    cmd.arg(img.oci_ref())
        .arg(format!("docker://{}", p.image(&format!("{repo}:pushed"))));
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", describe_cmd(&cmd, &out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("denied"),
        "{}",
        describe_cmd(&cmd, &out)
    );

    // Nothing was written upstream, and the cache is intact.
    let writes = up
        .requests()
        .count_where(|r| r.method != "GET" && r.method != "HEAD");
    assert_eq!(writes, 0, "{}", up.requests().describe());
    let r = p.get_m(&format!("{repo}/manifests/{digest}")).await;
    assert_manifest(&r, &img);
    assert_cache(&r, "hit");

    // A first segment that names no registry, or no repository after the registry.
    let any = sha256_digest(b"any");
    for path in [
        "f/library/nginx/manifests/x".to_string(),
        format!("f/library/nginx/blobs/{any}"),
        "f/library/nginx/tags/list".to_string(),
        "f/up/manifests/x".to_string(),
    ] {
        let r = p.get_m(&path).await;
        assert!(
            (400..500).contains(&r.status),
            "{path}: a client error: {r}"
        );
        r.assert_error_in(
            r.status,
            &["NAME_INVALID", "NAME_UNKNOWN", "DENIED", "UNSUPPORTED"],
        );
        assert!(
            !error_message(&r).is_empty(),
            "{path}: say what is wrong: {r}"
        );
    }
    let catalog = p.catalog().await;
    assert!(
        !catalog.iter().any(|c| c.starts_with("f/library")),
        "{catalog:?}"
    );
    assert!(
        !catalog.iter().any(|c| c.starts_with("f/up/manifests")),
        "{catalog:?}"
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// An upstream with Basic auth

pub async fn basic_auth_upstream(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let good = image(tmp.path(), "good", "1.0");
    let bad = image(tmp.path(), "bad", "1.0");
    let up = Upstream::start_with_auth(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&good.oci_ref(), "good/app:1.0");
    up.push(&good.oci_ref(), "good/file/app:1.0");
    up.push(&bad.oci_ref(), "bad/app:1.0");
    let pw = tmp.path().join("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    // One upstream, three entries: the longest matching path_prefix picks the credentials.
    let config = ProxyConfig::new([
        up.entry().path_prefix("good").credentials(USER, PASSWORD),
        up.entry().path_prefix("good/file").password_file(USER, &pw),
        up.entry()
            .path_prefix("bad")
            .credentials(USER, "not-the-password"),
    ]);
    let mut p = Proxy::start(topology, &config, tmp.path());
    let name = up.path_name();

    for repo in ["good/app", "good/file/app"] {
        let out = tmp.path().join(repo.replace('/', "-"));
        skopeo_pull(&p.image(&format!("f/{name}/{repo}:1.0")), &out, "1.0");
        assert_layout_holds(&out, "1.0", &good);
    }

    // Wrong credentials: a clear error, neither a 500 nor a 404.
    let bad_repo = format!("f/{name}/bad/app");
    let r = p.get_m(&format!("{bad_repo}/manifests/1.0")).await;
    eprintln!("wrong upstream credentials: {r}");
    assert_oci_error_status(&r, &[401, 403, 502, 503]);
    let r = p.get(&format!("{bad_repo}/blobs/{}", bad.layers[0])).await;
    assert_oci_error_status(&r, &[401, 403, 502, 503]);
    let out = tmp.path().join("bad-out");
    let mut cmd = skopeo_pull_cmd(&p.image(&format!("{bad_repo}:1.0")), &out, "1.0");
    let o = output(&mut cmd);
    assert!(!o.status.success(), "{}", describe_cmd(&cmd, &o));
    let reqs = up.requests();
    assert!(
        reqs.count_where(|r| r.path().starts_with("/v2/bad/") && r.authorization) > 0,
        "Trow never sent the configured (wrong) credentials:\n{}",
        reqs.describe()
    );

    // Nothing of it was cached; what the right credentials fetched was.
    assert!(
        p.storage_has_manifest(&format!("f/{name}/good/app"), &good.manifest_digest)
            .await
    );
    assert!(
        p.storage_has_blob(&format!("f/{name}/good/app"), &good.layers[0])
            .await
    );
    assert!(
        !p.storage_has_manifest(&bad_repo, &bad.manifest_digest)
            .await
    );
    assert!(!p.storage_has_manifest(&bad_repo, "1.0").await);
    for d in blobs(&bad) {
        assert!(
            !p.storage_has_blob(&bad_repo, &d).await,
            "{d} cached with wrong credentials"
        );
    }
    let catalog = p.catalog().await;
    assert!(
        catalog.contains(&format!("f/{name}/good/app")),
        "{catalog:?}"
    );
    assert!(
        !catalog.contains(&bad_repo),
        "a fetch the upstream refused left {bad_repo} in the catalog: {catalog:?}"
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// A lying upstream

pub async fn a_lying_upstream_is_not_cached(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let liar = Liar::start(&format!("{ip}:0"));
    let config = ProxyConfig::new([Entry::insecure(&liar.authority())]);
    let mut p = Proxy::start(topology, &config, tmp.path());
    let repo = format!("f/{}/{}", liar.path_name(), liar::REPO);

    // An honest blob of the liar is served and cached (so the probes below can see a blob).
    let r = p.get(&format!("{repo}/blobs/{}", liar.config_digest)).await;
    r.assert_status(200);
    assert_eq!(r.body, liar.config);
    assert!(p.storage_has_blob(&repo, &liar.config_digest).await);

    // Its manifest is honest: served as it is.
    let r = p.get_m(&format!("{repo}/manifests/1.0")).await;
    r.assert_status(200);
    assert_eq!(r.body, liar.manifest, "{r}");
    r.assert_header("docker-content-digest", &liar.manifest_digest);

    // A client's pull fails.
    let out = tmp.path().join("out");
    let mut cmd = skopeo_pull_cmd(&p.image(&format!("{repo}:1.0")), &out, "1.0");
    let o = output(&mut cmd);
    assert!(
        !o.status.success(),
        "a pull of a lying upstream succeeded: {}",
        describe_cmd(&cmd, &o)
    );

    // The lie is never served whole as a success, and never stored, however often asked.
    let url = p.v2(&format!("{repo}/blobs/{}", liar.layer_digest));
    for attempt in 1..=2 {
        let got: Outcome = get_outcome(&url).await;
        assert!(
            !got.complete_success(),
            "attempt {attempt}: GET of a blob whose bytes do not match its digest completed with \
             status {} ({:?}), {} bytes, lie: {}",
            got.status,
            got.cache,
            got.body.as_ref().map(Vec::len).unwrap_or(0),
            got.body.as_ref().is_ok_and(|b| *b == liar.lie)
        );
        assert_ne!(got.cache.as_deref(), Some("hit"), "attempt {attempt}");
        assert!(
            !p.storage_has_blob(&repo, &liar.layer_digest).await,
            "attempt {attempt}: storage holds the lying bytes"
        );
    }
    assert!(liar.server.requests.blob_gets(&liar.layer_digest) >= 1);

    // A manifest asked by a digest the upstream's bytes do not have.
    let wrong = sha256_digest(b"not the liar's manifest");
    for _ in 0..2 {
        let r = p.get_m(&format!("{repo}/manifests/{wrong}")).await;
        assert!(r.status >= 400 && r.status != 500, "{r}");
        assert!(!r.error_codes().is_empty());
    }
    assert!(!p.storage_has_manifest(&repo, &wrong).await);
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// SSRF: an unconfigured loopback upstream is never contacted

pub async fn unconfigured_loopback_is_refused(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    // A configured loopback upstream works: the guard is about what is not configured.
    let ctrl = Upstream::start("127.0.0.1", 0);
    ctrl.push(&img.oci_ref(), "ok/app:1.0");
    let config = ProxyConfig::new([ctrl.entry().alias("ctrl")]).configured_only(false);
    let mut p = Proxy::start(topology, &config, tmp.path());
    assert_manifest(&p.get_m("f/ctrl/ok/app/manifests/1.0").await, &img);

    let mut sentinels = vec![
        Scripted::sentinel(&format!("{ip}:80")),
        Scripted::sentinel(&format!("{ip}:443")),
        Scripted::sentinel(&format!("{ip}:0")),
        Scripted::sentinel("127.0.0.1:0"),
    ];
    let port = sentinels[2].addr.port();
    let local = sentinels[3].addr.port();
    if std::net::TcpListener::bind(format!("[::1]:{local}")).is_ok() {
        sentinels.push(Scripted::sentinel(&format!("[::1]:{local}")));
    }
    let zero = format!("sha256:{}", "0".repeat(64));
    // Each form names its own repository, so a leftover in the catalog says which one it was.
    for path in [
        format!("f/{ip}/by-tag/manifests/1"),
        format!("f/{ip}/blob/blobs/{zero}"),
        format!("f/{ip}/tags/tags/list"),
        format!("f/{ip}_{port}/host-port/manifests/1"),
        format!("f/localhost_{local}/localhost/manifests/1"),
        format!("ns-port/manifests/1?ns={ip}:{port}"),
        format!("ns/manifests/1?ns={ip}"),
        format!("ns-blob/blobs/{zero}?ns={ip}"),
        "f/169.254.169.254/metadata/manifests/1".to_string(),
    ] {
        let start = Instant::now();
        let r = p.get_m(&path).await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path}: refused only after a wait"
        );
        assert!(r.status >= 400, "{path} must be refused: {r}");
        assert!(!r.error_codes().is_empty(), "{path}: {r}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &sentinels {
        assert_eq!(
            s.requests.connections(),
            0,
            "Trow connected to unconfigured {}:\n{}",
            s.addr,
            s.requests.describe()
        );
    }
    // A refused request leaves nothing behind, not even an empty cached repository.
    let catalog = p.catalog().await;
    assert!(
        catalog.iter().all(|c| c.starts_with("f/ctrl/")),
        "refused requests left repositories in the catalog: {catalog:?}"
    );
    p.stop_and_fsck();
}
