//! Upstream authentication: the bearer-token flow against a real distribution (`auth: token`)
//! and a realm the test runs, and credentials that stay behind when an upstream redirects a
//! blob to another host (blob storage, a CDN).

use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::{
    Proxy, assert_cache, assert_layout_holds, assert_oci_error_status, blobs, error_message, image,
    skopeo_pull, skopeo_pull_cmd,
};
use trow_tests::clients::{describe as describe_cmd, output};
use trow_tests::images::read_blob;
use trow_tests::oci::OCI_MANIFEST;
use trow_tests::upstream::token::SERVICE;
use trow_tests::upstream::{
    Credentials, Entry, PASSWORD, ProxyConfig, Reply, Scripted, USER, Upstream, describe,
};
use trow_tests::{Topology, sha256_digest};

// ---------------------------------------------------------------------------------------------
// The bearer-token flow

pub async fn bearer_token_upstream(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let good = image(tmp.path(), "good", "1.0");
    let bad = image(tmp.path(), "bad", "1.0");
    let up = Upstream::start_with_token(ip, 0);
    let _up_logs = up.logs_on_panic();
    let realm = up.realm.as_ref().expect("a token realm");
    // Seeding goes through the realm too (skopeo asks for pull,push tokens with --dest-creds).
    up.push(&good.oci_ref(), "tok/app:1.0");
    up.push(&bad.oci_ref(), "bad/app:1.0");
    assert!(
        realm
            .requests()
            .iter()
            .any(|r| r.granted && r.scopes.iter().any(|s| s.ends_with("tok/app:pull,push"))),
        "seeding did not use the realm:\n{}",
        realm.describe()
    );
    // One upstream, two entries: the right credentials for tok/, wrong ones for bad/.
    let config = ProxyConfig::new([
        up.entry()
            .alias("tok")
            .path_prefix("tok")
            .credentials(USER, PASSWORD),
        up.entry()
            .path_prefix("bad")
            .credentials(USER, "not-the-password"),
    ]);
    let mut p = Proxy::start(topology, &config, tmp.path());
    let reqs = up.requests();

    // Two pulls (cold, then warm: a revalidation and the cached blobs).
    for (n, out) in ["out1", "out2"].iter().enumerate() {
        let out = tmp.path().join(out);
        skopeo_pull(&p.image("f/tok/tok/app:1.0"), &out, "1.0");
        assert_layout_holds(&out, "1.0", &good);
        if n == 0 {
            for d in blobs(&good) {
                assert_eq!(reqs.blob_gets(&d), 1, "GETs of {d}:\n{}", reqs.describe());
            }
        }
    }
    let r = p.get_m("f/tok/tok/app/manifests/1.0").await;
    r.assert_status(200);
    assert_cache(&r, "revalidated");

    // The realm saw Trow once, with the configured Basic credentials, for the pull scope.
    let asked = realm.trow_requests();
    assert_eq!(
        asked.len(),
        1,
        "Trow must fetch one token for its one scope and reuse it (expires_in 300 s):\n{}",
        realm.describe()
    );
    assert_eq!(asked[0].scopes, ["repository:tok/app:pull"], "{asked:?}");
    assert_eq!(asked[0].service.as_deref(), Some(SERVICE), "{asked:?}");
    assert_eq!(asked[0].credentials, Credentials::Right, "{asked:?}");
    assert!(asked[0].granted);

    // The registry: the first request went without a token (its 401 named the realm), every
    // later one carried the token; none carried the Basic credentials, which belong to the realm.
    let all = reqs.all();
    let manifest_and_blobs = 1 + blobs(&good).len();
    assert!(
        all.len() > manifest_and_blobs + 2,
        "too few upstream requests to show a reuse:\n{}",
        describe(&all)
    );
    let anonymous: Vec<_> = all.iter().filter(|r| !r.authorization).collect();
    assert_eq!(
        anonymous.len(),
        1,
        "only the first request may go without the token; the upstream got:\n{}",
        describe(&all)
    );
    assert!(
        std::ptr::eq(anonymous[0], &all[0]),
        "the request without a token was not the first:\n{}",
        describe(&all)
    );
    for r in &all[1..] {
        assert_eq!(
            r.auth_scheme.as_deref(),
            Some("Bearer"),
            "{r}: every request after the first carries the token:\n{}",
            describe(&all)
        );
    }
    eprintln!(
        "bearer upstream: {} upstream requests, {} token request(s) from Trow",
        all.len(),
        asked.len()
    );

    // Wrong credentials: the realm refuses them, the client gets a clear error naming the
    // upstream (not a 500, not a 404), and nothing is cached.
    let bad_repo = format!("f/{}/bad/app", up.path_name());
    let r = p.get_m(&format!("{bad_repo}/manifests/1.0")).await;
    eprintln!("wrong credentials at the realm: {r}");
    assert_oci_error_status(&r, &[401, 403, 502, 503]);
    assert!(
        error_message(&r).contains(&up.authority()),
        "the error must name the upstream: {r}"
    );
    let r = p.get(&format!("{bad_repo}/blobs/{}", bad.layers[0])).await;
    assert_oci_error_status(&r, &[401, 403, 502, 503]);
    let out = tmp.path().join("bad-out");
    let mut cmd = skopeo_pull_cmd(&p.image(&format!("{bad_repo}:1.0")), &out, "1.0");
    let o = output(&mut cmd);
    assert!(!o.status.success(), "{}", describe_cmd(&cmd, &o));
    let refused: Vec<_> = realm
        .trow_requests()
        .into_iter()
        .filter(|r| r.scopes.iter().any(|s| s.contains("bad/app")))
        .collect();
    assert!(
        !refused.is_empty() && refused.iter().all(|r| r.credentials == Credentials::Wrong),
        "Trow must ask the realm with the configured (wrong) credentials:\n{}",
        realm.describe()
    );
    assert!(refused.iter().all(|r| !r.granted));
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
        catalog.contains(&"f/tok/tok/app".to_string()),
        "{catalog:?}"
    );
    assert!(!catalog.contains(&bad_repo), "{catalog:?}");
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// A redirect to blob storage

/// The repository the redirecting upstream serves.
const REDIR_REPO: &str = "redir/app";

/// An upstream (a scripted one: distribution cannot redirect to a host of the test's choosing)
/// that wants Basic credentials on every `/v2/` path and answers layer GETs with
/// `307 Location: http://<cdn>/blob-data/<digest>`: one CDN on another host (`127.0.0.1`),
/// one on the upstream's own address with another port (an origin of its own, too). Both serve
/// the bytes to anyone and record whether an `Authorization` came with the request.
///
/// What the SSRF guard makes of a redirect target (found out with this test): the same as of
/// an upstream. reqwest follows the redirect and resolves a host *name* through Trow's guarded
/// resolver, so an unconfigured `localhost` is refused; an IP literal never reaches the
/// resolver, and Trow's redirect policy checks it instead, so an unconfigured loopback literal
/// is refused too (before that policy, `http://127.0.0.1:PORT` was followed unchecked). Both
/// refusals are checked below against sentinels that must never be connected to. So the CDNs,
/// being loopback, must be configured (as entries without credentials), as any loopback
/// upstream must.
pub async fn credentials_are_not_forwarded_on_a_redirect(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), "src", "1.0");
    let cdn_handler = {
        let layout = img.layout.clone();
        move |r: &trow_tests::upstream::Request| match r.path().strip_prefix("/blob-data/") {
            Some(d) if r.method == "GET" && img_has(&layout, d) => {
                Reply::ok("application/octet-stream", read_blob(&layout, d))
            }
            _ => Reply::new(404),
        }
    };
    let far_cdn = Scripted::start("127.0.0.1:0", cdn_handler.clone());
    let near_cdn = Scripted::start(&format!("{ip}:0"), cdn_handler);
    // Redirect targets that are loopback and not configured: a name, and an IP literal (`::1`:
    // 127.0.0.1 is configured, for the far CDN, on whatever port).
    let by_name = Scripted::sentinel("127.0.0.1:0");
    let by_literal = std::net::TcpListener::bind("[::1]:0")
        .is_ok()
        .then(|| Scripted::sentinel("[::1]:0"));
    let mut refused = vec![(
        sha256_digest(b"redirected to a name nobody configured"),
        format!("http://localhost:{}", by_name.addr.port()),
        &by_name,
    )];
    if let Some(s) = &by_literal {
        refused.push((
            sha256_digest(b"redirected to a literal nobody configured"),
            format!("http://[::1]:{}", s.addr.port()),
            s,
        ));
    }

    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let (manifest, digest) = (img.manifest_bytes(), img.manifest_digest.clone());
    let (layout, config_digest) = (img.layout.clone(), img.config_digest.clone());
    let mut redirects = vec![
        (img.layers[0].clone(), format!("http://{}", far_cdn.addr)),
        (img.layers[1].clone(), format!("http://{}", near_cdn.addr)),
    ];
    redirects.extend(refused.iter().map(|(d, to, _)| (d.clone(), to.clone())));
    let up = Scripted::start_with_heads(&format!("{ip}:0"), move |head, r| {
        if head.header("authorization") != Some(expected.as_str()) {
            return Reply::oci_error(401, "UNAUTHORIZED")
                .header("WWW-Authenticate", "Basic realm=\"trow-tests\"");
        }
        let Some(rest) = r.path().strip_prefix(&format!("/v2/{REDIR_REPO}/")) else {
            return Reply::oci_error(404, "NAME_UNKNOWN");
        };
        if let Some(reference) = rest.strip_prefix("manifests/") {
            return if reference == "1.0" || reference == digest {
                Reply::ok(OCI_MANIFEST, manifest.clone()).header("Docker-Content-Digest", &digest)
            } else {
                Reply::oci_error(404, "MANIFEST_UNKNOWN")
            };
        }
        let blob = rest.strip_prefix("blobs/").unwrap_or_default();
        if let Some((_, to)) = redirects.iter().find(|(d, _)| d == blob) {
            return Reply::new(307).header("Location", &format!("{to}/blob-data/{blob}"));
        }
        if blob == config_digest {
            return Reply::ok("application/octet-stream", read_blob(&layout, blob))
                .header("Docker-Content-Digest", blob);
        }
        Reply::oci_error(404, "BLOB_UNKNOWN")
    });
    let config = ProxyConfig::new([
        Entry::insecure(&up.addr_string())
            .alias("redir")
            .credentials(USER, PASSWORD),
        Entry::insecure(&far_cdn.addr_string()),
        Entry::insecure(&near_cdn.addr_string()),
    ]);
    let mut p = Proxy::start(topology, &config, tmp.path());
    let repo = format!("f/redir/{REDIR_REPO}");

    let out = tmp.path().join("out");
    skopeo_pull(&p.image(&format!("{repo}:1.0")), &out, "1.0");
    assert_layout_holds(&out, "1.0", &img);

    // The upstream got the credentials (so there were some to leak) and the layer GETs it
    // redirected; each CDN got its layer, without any Authorization.
    let origin = up.requests.all();
    for layer in &img.layers {
        assert!(
            origin
                .iter()
                .any(|r| r.path().ends_with(&format!("/blobs/{layer}")) && r.authorization),
            "the upstream never got an authenticated GET of {layer}:\n{}",
            describe(&origin)
        );
    }
    for (cdn, layer) in [(&far_cdn, &img.layers[0]), (&near_cdn, &img.layers[1])] {
        let got = cdn.requests.all();
        assert!(
            got.iter()
                .any(|r| r.is("GET", &format!("/blob-data/{layer}"))),
            "CDN {} never got {layer}:\n{}",
            cdn.addr,
            describe(&got)
        );
        assert!(
            got.iter().all(|r| !r.authorization),
            "the credentials for {} went to CDN {} with the redirect:\n{}",
            up.addr,
            cdn.addr,
            describe(&got)
        );
        assert!(p.storage_has_blob(&repo, layer).await);
    }
    // Cached: later reads of the layers touch neither the upstream nor the CDNs.
    let marks = (
        up.requests.mark(),
        far_cdn.requests.mark(),
        near_cdn.requests.mark(),
    );
    for layer in &img.layers {
        let r = p.get(&format!("{repo}/blobs/{layer}")).await;
        r.assert_status(200);
        assert_cache(&r, "hit");
        assert_eq!(r.body, read_blob(&img.layout, layer));
    }
    assert!(up.requests.since(marks.0).is_empty());
    assert!(far_cdn.requests.since(marks.1).is_empty());
    assert!(near_cdn.requests.since(marks.2).is_empty());

    // Redirects to unconfigured loopback targets: refused, and never connected to.
    for (digest, to, sentinel) in &refused {
        let start = Instant::now();
        let r = p.get(&format!("{repo}/blobs/{digest}")).await;
        assert!(start.elapsed() < Duration::from_secs(10), "{to}: {r}");
        assert!(
            r.status >= 400 && r.status != 500 && !r.error_codes().is_empty(),
            "a redirect to unconfigured {to} must be refused: {r}"
        );
        assert!(
            up.requests
                .all()
                .iter()
                .any(|r| r.path().ends_with(&format!("/blobs/{digest}"))),
            "the upstream was never asked for {digest}"
        );
        assert_eq!(
            sentinel.requests.connections(),
            0,
            "Trow followed a redirect to unconfigured {to}:\n{}",
            sentinel.requests.describe()
        );
        assert!(!p.storage_has_blob(&repo, digest).await);
    }
    p.stop_and_fsck();
}

/// Whether `digest` is a blob of the layout (a CDN serves those and nothing else).
fn img_has(layout: &std::path::Path, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && layout.join("blobs/sha256").join(hex).is_file()
}
