//! Upstreams that attack Trow (issue 25): a bearer challenge naming a token realm on Trow's own
//! loopback or the metadata endpoint, answers of hundreds of MiB, answers trickled a byte at a
//! time, and a lying manifest many clients ask for at once. Each upstream is a scripted server;
//! what must never be contacted is a sentinel; memory is read from `/proc` (VmHWM, the peak).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Proxy, assert_cache, assert_oci_error_status, error_message};
use trow_tests::oci::{
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, client, config_blob, desc, oci_manifest, send, to_bytes,
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

/// The process whose memory an upstream's answers would fill: `trow proxy` in the split
/// topology, the one `trow` otherwise.
fn proxy_pid(p: &Proxy) -> u32 {
    let t = p.trow();
    t.proxies.first().unwrap_or(&t.main).pid()
}

/// A `/proc/PID/status` field in KiB (`VmHWM:`: the peak resident set; `VmRSS:`: now).
fn kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Waits (at most `bound`) until `s` has no connection open; false if one stays open.
async fn all_closed(s: &Scripted, bound: Duration) -> bool {
    let start = Instant::now();
    while s.open_connections() > 0 {
        if start.elapsed() > bound {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
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

// ---------------------------------------------------------------------------------------------
// Finding 4: bodies read into memory are capped

/// Pages of the endless tag list, each just under the 4 MiB a page may be.
const TAG_PAGES: usize = 50;
const PAGE: u64 = (4 << 20) - 64;

/// An upstream whose answers are huge: a tag list of [`TAG_PAGES`] pages of ~4 MiB, a 200 MiB
/// token answer, a 64 MiB manifest, a 64 MiB error body. Each is a 502 naming the upstream,
/// and the proxy's peak memory grows by far less than any of them.
pub async fn huge_answers_are_refused(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let up_addr = Arc::new(std::sync::OnceLock::<String>::new());
    let addr = up_addr.clone();
    let (m, digest) = manifest("huge");
    let up = Scripted::start_with_heads(&format!("{ip}:0"), move |head, r| {
        let own = addr.get().cloned().unwrap_or_default();
        let path = r.path();
        if path == "/token" {
            return Reply::ok("application/json", b"{\"token\":\"".to_vec()).padded(
                b'a',
                200 << 20,
                b"\"}",
            );
        }
        if path.starts_with("/v2/tok/") && head.header("authorization").is_none() {
            let challenge = format!("Bearer realm=\"http://{own}/token\",service=\"x\"");
            return Reply::oci_error(401, "UNAUTHORIZED").header("WWW-Authenticate", &challenge);
        }
        if path.starts_with("/v2/ok/app/manifests/") {
            return Reply::ok(OCI_MANIFEST, m.clone()).header("Docker-Content-Digest", &digest);
        }
        if path == "/v2/big/app/manifests/1.0" {
            return Reply::ok(OCI_MANIFEST, b"{\"x\":\"".to_vec()).padded(b'a', 64 << 20, b"\"}");
        }
        if path == "/v2/err/app/manifests/1.0" {
            return Reply::ok("application/json", b"{\"errors\":\"".to_vec())
                .padded(b'e', 64 << 20, b"\"}")
                .status(500);
        }
        if path == "/v2/tags/app/tags/list" {
            let page: usize = r
                .target
                .split("last=p")
                .nth(1)
                .and_then(|n| n.split('&').next()?.parse().ok())
                .unwrap_or(0);
            let mut reply = Reply::ok("application/json", b"{\"tags\":[\"".to_vec()).padded(
                b't',
                PAGE - 12,
                b"\"]}",
            );
            if page + 1 < TAG_PAGES {
                let next = format!(
                    "</v2/tags/app/tags/list?n=1&last=p{}>; rel=\"next\"",
                    page + 1
                );
                reply = reply.header("Link", &next);
            }
            return reply;
        }
        Reply::oci_error(404, "NAME_UNKNOWN")
    });
    up_addr.set(up.addr_string()).unwrap();
    let config = ProxyConfig::new([Entry::insecure(&up.addr_string()).alias("up")]);
    let mut p = Proxy::start(topology, &config, tmp.path());
    p.get_m("f/up/ok/app/manifests/1.0")
        .await
        .assert_status(200);
    let pid = proxy_pid(&p);
    let before = kib(pid, "VmHWM:");

    let tags = p.get("f/up/tags/app/tags/list").await;
    eprintln!("tag list: {tags}");
    let token = p.get_m("f/up/tok/app/manifests/1.0").await;
    eprintln!("token: {token}");
    let big = p.get_m("f/up/big/app/manifests/1.0").await;
    let err = p.get_m("f/up/err/app/manifests/1.0").await;
    let (peak, now) = (kib(pid, "VmHWM:"), kib(pid, "VmRSS:"));
    eprintln!(
        "proxy VmHWM {before} KiB before, {peak} KiB after (VmRSS {now} KiB); upstream pages \
         fetched: {}",
        up.requests
            .count_where(|r| r.path().ends_with("/tags/list"))
    );
    for r in [&tags, &token, &big, &err] {
        assert_bad_gateway(r, &up.addr_string());
    }
    assert!(
        error_message(&tags).contains("larger than"),
        "say the tag list was too large: {tags}"
    );
    assert!(
        error_message(&token).contains("larger than"),
        "say the token answer was too large: {token}"
    );
    assert!(
        peak < before + (64 << 10),
        "the proxy's peak memory grew from {before} KiB to {peak} KiB"
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// Finding 6: every exchange has a deadline

/// Upstreams that trickle (a byte per 200 ms) or page slowly, with `fetch_timeout: 2s`: a
/// manifest by digest is a 502, a tag whose new manifest trickles is served stale, a token
/// answer that trickles is a 502, a tag list of many slow pages is a 502; and a blob trickled
/// into a fill is dropped (its upstream connection closes) though no client waits for it.
pub async fn slow_upstreams_are_cut_off(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let up_addr = Arc::new(std::sync::OnceLock::<String>::new());
    let addr = up_addr.clone();
    let (m1, d1) = manifest("slow one");
    let (m2, d2) = manifest("slow two");
    let moved = Arc::new(AtomicBool::new(false));
    let tag_moved = moved.clone();
    let slow = Duration::from_millis(200);
    let (digests, d1, d2) = ((d1.clone(), d2.clone()), d1, d2);
    let up = Scripted::start_with_heads(&format!("{ip}:0"), move |head, r| {
        let (d1, d2) = &digests;
        let own = addr.get().cloned().unwrap_or_default();
        let path = r.path();
        if path == "/token" {
            let body = b"{\"token\":\"abcdefghijklmnopqrstuvwxyz0123456789\"}";
            return Reply::ok("application/json", body.to_vec()).paced(slow);
        }
        if path.starts_with("/v2/tok/") && head.header("authorization").is_none() {
            let challenge = format!("Bearer realm=\"http://{own}/token\",service=\"x\"");
            return Reply::oci_error(401, "UNAUTHORIZED").header("WWW-Authenticate", &challenge);
        }
        if let Some(reference) = path.strip_prefix("/v2/app/manifests/") {
            // The tag names d1, then (moved) d2, whose bytes trickle.
            let now = if tag_moved.load(Ordering::SeqCst) {
                (&m2, d2)
            } else {
                (&m1, d1)
            };
            let reply = |(m, d): (&Vec<u8>, &String)| {
                Reply::ok(OCI_MANIFEST, m.clone()).header("Docker-Content-Digest", d)
            };
            return match reference {
                "1.0" if r.method == "HEAD" => reply(now),
                r if r == d1 => reply((&m1, d1)),
                r if r == d2 => reply((&m2, d2)).paced(slow),
                _ => Reply::oci_error(404, "MANIFEST_UNKNOWN"),
            };
        }
        if path == "/v2/paged/app/tags/list" {
            let page: usize = r
                .target
                .split("last=p")
                .nth(1)
                .and_then(|n| n.split('&').next()?.parse().ok())
                .unwrap_or(0);
            let body = format!("{{\"tags\":[\"p{page}\"]}}");
            let next = format!(
                "</v2/paged/app/tags/list?n=1&last=p{}>; rel=\"next\"",
                page + 1
            );
            return Reply::ok("application/json", body.into_bytes())
                .header("Link", &next)
                .delay(Duration::from_millis(500));
        }
        Reply::oci_error(404, "NAME_UNKNOWN")
    });
    up_addr.set(up.addr_string()).unwrap();
    // Blobs on an upstream of their own: its only connection is the fill's (the other one keeps
    // idle connections of Trow's pool open).
    let blob = vec![7u8; 256 << 10];
    let blob_digest = sha256_digest(&blob);
    let bd = blob_digest.clone();
    let blobs = Scripted::start(&format!("{ip}:0"), move |r| {
        if r.path() == format!("/v2/app/blobs/{bd}") {
            return Reply::ok("application/octet-stream", blob.clone()).paced(slow / 10);
        }
        Reply::oci_error(404, "BLOB_UNKNOWN")
    });
    let config = ProxyConfig::new([
        Entry::insecure(&up.addr_string()).alias("up"),
        Entry::insecure(&blobs.addr_string()).alias("blobs"),
    ])
    .fetch_timeout("2s")
    .revalidate_timeout("1s");
    let mut p = Proxy::start(topology, &config, tmp.path());
    let host = up.addr_string();

    // The tag, cached while the upstream is quick.
    let r = p.get_m("f/up/app/manifests/1.0").await;
    r.assert_status(200);
    assert_eq!(sha256_digest(&r.body), d1, "{r}");

    // A manifest by digest that trickles: a 502, not a wait for the last byte.
    let r = p.get_m(&format!("f/up/app/manifests/{d2}")).await;
    eprintln!("trickled manifest: {r}");
    assert_bad_gateway(&r, &host);
    assert!(!p.storage_has_manifest("f/up/app", &d2).await);

    // The tag moves to that manifest: the cached copy is served, stale.
    moved.store(true, Ordering::SeqCst);
    let r = p.get_m("f/up/app/manifests/1.0").await;
    r.assert_status(200);
    assert_cache(&r, "stale");
    assert_eq!(sha256_digest(&r.body), d1, "{r}");

    // A token answer that trickles, and a tag list whose pages never end.
    let r = p.get_m("f/up/tok/app/manifests/1.0").await;
    eprintln!("trickled token: {r}");
    assert_bad_gateway(&r, &host);
    let r = p.get("f/up/paged/app/tags/list").await;
    eprintln!("slow tag pages: {r}");
    assert_bad_gateway(&r, &host);

    // A blob trickled into a fill: the client goes, the fill goes on without it, but not at a
    // byte per 20 ms for ever: the upstream's connection is dropped.
    let resp = client()
        .get(p.v2(&format!("f/blobs/app/blobs/{blob_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    drop(resp);
    assert!(
        all_closed(&blobs, Duration::from_secs(30)).await,
        "an upstream trickling a blob kept {} connection(s) of Trow's open",
        blobs.open_connections()
    );
    assert!(!p.storage_has_blob("f/blobs/app", &blob_digest).await);
    p.stop_and_fsck();
}

/// With a long `fetch_timeout`, a client that gives up on a trickled manifest takes the upstream
/// exchange with it: the upstream's connection closes long before the deadline would end it.
pub async fn an_abandoned_fetch_is_dropped(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (m, d) = manifest("abandoned");
    let up = Scripted::start(&format!("{ip}:0"), move |r| {
        if r.path() == format!("/v2/app/manifests/{d}") {
            return Reply::ok(OCI_MANIFEST, m.clone())
                .header("Docker-Content-Digest", &d)
                .paced(Duration::from_millis(200));
        }
        Reply::oci_error(404, "NAME_UNKNOWN")
    });
    let config =
        ProxyConfig::new([Entry::insecure(&up.addr_string()).alias("up")]).fetch_timeout("10m");
    let mut p = Proxy::start(topology, &config, tmp.path());
    let (_, digest) = manifest("abandoned");
    let gave_up = client()
        .get(p.v2(&format!("f/up/app/manifests/{digest}")))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(gave_up.is_err(), "the trickled manifest came in 2 s?");
    assert!(
        all_closed(&up, Duration::from_secs(30)).await,
        "the upstream exchange went on after the client left: {} connection(s) open",
        up.open_connections()
    );
    p.stop_and_fsck();
}

// ---------------------------------------------------------------------------------------------
// Finding 8: a failed manifest fill fails alike for every request that joined it

/// Five clients ask at once for a manifest by digest that a slow liar answers with other bytes:
/// all get the 502 the filler got (not `409 BLOB_UNKNOWN`), and the liar is asked once. A later
/// request is a new fill attempt: one more GET.
pub async fn a_failed_manifest_fill_fails_alike(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (_, digest) = manifest("asked for");
    let (other, _) = manifest("sent instead");
    let up = Scripted::start(&format!("{ip}:0"), move |r| {
        if r.path().starts_with("/v2/app/manifests/") {
            return Reply::ok(OCI_MANIFEST, other.clone()).delay(Duration::from_secs(3));
        }
        Reply::oci_error(404, "NAME_UNKNOWN")
    });
    let config = ProxyConfig::new([Entry::insecure(&up.addr_string()).alias("up")]);
    let mut p = Proxy::start(topology, &config, tmp.path());
    let url = p.v2(&format!("f/up/app/manifests/{digest}"));
    let gets = || {
        up.requests
            .count("GET", &format!("/v2/app/manifests/{digest}"))
    };

    let first = tokio::spawn(send(client().get(url.clone())));
    let start = Instant::now();
    while gets() == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "no upstream GET");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The filler waits on the liar; these join its fill.
    let followers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(send(client().get(url.clone()))))
        .collect();
    let mut answers = vec![first.await.unwrap()];
    for f in followers {
        answers.push(f.await.unwrap());
    }
    for r in &answers {
        eprintln!("{r}");
        assert_bad_gateway(r, &up.addr_string());
    }
    assert_eq!(
        gets(),
        1,
        "one fill attempt, one upstream GET:\n{}",
        up.requests.describe()
    );

    let r = p.get_m(&format!("f/up/app/manifests/{digest}")).await;
    assert_bad_gateway(&r, &up.addr_string());
    assert_eq!(gets(), 2, "{}", up.requests.describe());
    assert!(!p.storage_has_manifest("f/up/app", &digest).await);
    p.stop_and_fsck();
}
