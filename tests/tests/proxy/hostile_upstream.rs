//! Upstreams that attack Trow (issue 25): a bearer challenge naming a token realm on Trow's own
//! loopback or the metadata endpoint. Each upstream is a scripted server; what must never be
//! contacted is a sentinel.

use std::sync::Arc;

use crate::support::{Proxy, assert_oci_error_status, error_message};
use trow_tests::oci::{
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, config_blob, desc, oci_manifest, to_bytes,
};
use trow_tests::upstream::{Entry, PASSWORD, ProxyConfig, Reply, Scripted, TokenRealm, USER};
use trow_tests::{Topology, sha256_digest};

/// A small manifest and its digest (its blobs are never asked for).
fn manifest(seed: &str) -> (Vec<u8>, String) {
    let config = config_blob(seed);
    let layer = sha256_digest(seed.as_bytes());
    let m = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, &sha256_digest(&config), config.len()),
        &[desc(OCI_LAYER, &layer, seed.len())],
    ));
    let d = sha256_digest(&m);
    (m, d)
}

/// A 502 naming the upstream.
fn assert_bad_gateway(r: &trow_tests::oci::Resp, upstream: &str) {
    assert_oci_error_status(r, &[502]);
    assert!(
        error_message(r).contains(upstream),
        "{}: the error must name the upstream {upstream}: {r}",
        r.what
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 2: token realms go through the SSRF guard

/// An upstream whose bearer challenge names, per repository, a realm Trow must not contact: an
/// unconfigured loopback address in four spellings, `localhost`, the metadata endpoint, and a
/// realm of its own that redirects to loopback. A realm on a configured host (the test's
/// [`TokenRealm`], on the upstream's address) keeps working.
pub async fn token_realms_pass_the_ssrf_guard(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    // 127.0.0.1 is configured for nobody here; `ip` is, for the upstream.
    let sentinel = Scripted::sentinel("127.0.0.1:0");
    let port = sentinel.addr.port();
    let realm = TokenRealm::start(&format!("{ip}:0"));
    let (m, digest) = manifest("realms");
    let up_addr = Arc::new(std::sync::OnceLock::<String>::new());
    let refused: Vec<(&str, String)> = vec![
        ("loopback", format!("http://127.0.0.1:{port}/token")),
        ("mapped", format!("http://[::ffff:127.0.0.1]:{port}/token")),
        ("decimal", format!("http://2130706433:{port}/token")),
        ("unspecified", format!("http://0.0.0.0:{port}/token")),
        ("name", format!("http://localhost:{port}/token")),
        (
            "metadata",
            "http://169.254.169.254/latest/token".to_string(),
        ),
        ("redirect", "REDIRECT".to_string()),
    ];
    let realms: Vec<(String, String)> = refused
        .iter()
        .map(|(repo, realm)| (format!("{repo}/app"), realm.clone()))
        .chain([("ok/app".to_string(), realm.url())])
        .collect();
    let addr = up_addr.clone();
    let up = Scripted::start_with_heads(&format!("{ip}:0"), move |head, r| {
        let own = addr.get().cloned().unwrap_or_default();
        if r.path() == "/token-redirect" {
            return Reply::new(307).header("Location", &format!("http://127.0.0.1:{port}/token"));
        }
        let bearer = head
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "));
        let Some((repo, realm)) = realms
            .iter()
            .find(|(repo, _)| r.path().starts_with(&format!("/v2/{repo}/")))
        else {
            return Reply::oci_error(404, "NAME_UNKNOWN");
        };
        if !bearer {
            let realm = match realm.as_str() {
                "REDIRECT" => format!("http://{own}/token-redirect"),
                other => other.to_string(),
            };
            let challenge = format!(
                "Bearer realm=\"{realm}\",service=\"{}\",scope=\"repository:{repo}:pull\"",
                trow_tests::upstream::token::SERVICE
            );
            return Reply::oci_error(401, "UNAUTHORIZED").header("WWW-Authenticate", &challenge);
        }
        Reply::ok(OCI_MANIFEST, m.clone()).header("Docker-Content-Digest", &digest)
    });
    up_addr.set(up.addr_string()).unwrap();
    let config = ProxyConfig::new([Entry::insecure(&up.addr_string())
        .alias("up")
        .credentials(USER, PASSWORD)]);
    let mut p = Proxy::start(topology, &config, tmp.path());

    // A realm on a configured host: the token flow works.
    let r = p.get_m("f/up/ok/app/manifests/1.0").await;
    r.assert_status(200);
    assert!(
        realm.trow_requests().iter().any(|t| t.granted),
        "{}",
        realm.describe()
    );

    for (repo, to) in &refused {
        let r = p.get_m(&format!("f/up/{repo}/app/manifests/1.0")).await;
        eprintln!("realm {to}: {r}");
        assert_bad_gateway(&r, &up.addr_string());
        assert!(
            error_message(&r).contains("token realm"),
            "{to}: the error must say it is about the token realm: {r}"
        );
        assert!(
            !p.storage_has_manifest(&format!("f/up/{repo}/app"), "1.0")
                .await
        );
    }
    assert_eq!(
        sentinel.requests.connections(),
        0,
        "Trow contacted a token realm on unconfigured loopback:\n{}",
        sentinel.requests.describe()
    );
    p.stop_and_fsck();
}
