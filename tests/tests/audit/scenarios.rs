//! The scenarios of `tests/audit.rs`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use trow_tests::clients::LogsOnPanic;
use trow_tests::fsck::stop_and_fsck;
use trow_tests::images::build_image;
use trow_tests::oci::{
    ACCEPT_ALL, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Resp, bytes, client, config_blob, desc,
    oci_manifest, send, to_bytes, unique,
};
use trow_tests::upstream::{ProxyConfig, Upstream};
use trow_tests::{Flags, Topology, Trow};

/// Credentials for a request: (user, password) or none.
type Creds<'a> = Option<(&'a str, &'a str)>;

struct Client {
    url: String,
    http: reqwest::Client,
}

impl Client {
    fn new(url: &str) -> Client {
        Client {
            url: url.to_string(),
            http: client(),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str, creds: Creds) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("user-agent", "audit-test/1.0");
        match creds {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn push_blob(&self, repo: &str, data: &[u8], creds: Creds<'_>) -> String {
        let digest = trow_tests::sha256_digest(data);
        let r = send(self.req(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            creds,
        ))
        .await;
        r.assert_status(202);
        let loc = r.must_header("location");
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = send(
            self.req(
                reqwest::Method::PUT,
                &format!("{loc}{sep}digest={digest}"),
                creds,
            )
            .header("content-type", "application/octet-stream")
            .body(data.to_vec()),
        )
        .await;
        r.assert_status(201);
        digest
    }

    /// Pushes a small image as `repo:tag`; returns the manifest's digest and the blobs' digests.
    async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        seed: &str,
        creds: Creds<'_>,
    ) -> (String, Vec<String>) {
        let config = config_blob(seed);
        let layer = bytes(4096, seed.len() as u64 * 7919);
        let cd = self.push_blob(repo, &config, creds).await;
        let ld = self.push_blob(repo, &layer, creds).await;
        let m = to_bytes(&oci_manifest(
            desc(OCI_CONFIG, &cd, config.len()),
            &[desc(OCI_LAYER, &ld, layer.len())],
        ));
        let r = self.put_manifest(repo, tag, &m, creds).await;
        r.assert_status(201);
        (trow_tests::sha256_digest(&m), vec![cd, ld])
    }

    async fn put_manifest(&self, repo: &str, tag: &str, m: &[u8], creds: Creds<'_>) -> Resp {
        send(
            self.req(
                reqwest::Method::PUT,
                &format!("/v2/{repo}/manifests/{tag}"),
                creds,
            )
            .header("content-type", OCI_MANIFEST)
            .body(m.to_vec()),
        )
        .await
    }

    async fn get(&self, path: &str, creds: Creds<'_>) -> Resp {
        send(
            self.req(reqwest::Method::GET, path, creds)
                .header("accept", ACCEPT_ALL),
        )
        .await
    }

    async fn delete(&self, path: &str, creds: Creds<'_>) -> Resp {
        send(self.req(reqwest::Method::DELETE, path, creds)).await
    }

    /// Every event of a query, read in pages of `page`; asserts the pages join up.
    async fn all_events(&self, query: &str, page: u32, creds: Creds<'_>) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = format!("/audit/v1/events?limit={page}{query}");
        loop {
            let r = self.get(&path, creds).await;
            r.assert_status(200);
            let body = r.json();
            let events = body["events"].as_array().unwrap().clone();
            assert!(events.len() <= page as usize, "{body}");
            out.extend(events);
            match body["next"].as_str() {
                Some(next) => {
                    let link = r.must_header("link");
                    assert!(
                        link.contains("rel=\"next\"") && link.contains("cursor="),
                        "{link}"
                    );
                    // Follow the Link header, as a client would.
                    let target = link
                        .trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap()
                        .to_string();
                    assert!(!next.is_empty());
                    path = target;
                }
                None => {
                    assert!(r.header("link").is_none());
                    break;
                }
            }
        }
        out
    }
}

/// Counts of events by (action, user, repository).
fn counts(events: &[Value]) -> BTreeMap<(String, String, String), usize> {
    let mut m = BTreeMap::new();
    for e in events {
        let key = (
            e["action"].as_str().unwrap().to_string(),
            e["user"].as_str().unwrap().to_string(),
            e["repository"].as_str().unwrap().to_string(),
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

fn key(action: &str, user: &str, repository: &str) -> (String, String, String) {
    (action.into(), user.into(), repository.into())
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                pending.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn kill_all(t: &mut Trow) {
    t.main.kill9();
    for p in &mut t.proxies {
        p.kill9();
    }
    if let Some(a) = t.admission.as_mut() {
        a.kill9();
    }
    if let Some(s) = t.storage.as_mut() {
        s.kill9();
    }
}

/// Waits until `check` holds of the events query, or panics after 20 s.
async fn eventually(c: &Client, creds: Creds<'_>, what: &str, check: impl Fn(&[Value]) -> bool) {
    let start = std::time::Instant::now();
    loop {
        let all = c.all_events("", 1000, creds).await;
        if check(&all) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: not on record after 20s:\n{all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn a_scripted_series_is_on_record(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let img = build_image(&tmp.path().join("up1"), "1.0", "amd64");
    let moved = build_image(&tmp.path().join("up2"), "2.0", "arm64");
    let mut up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&img.oci_ref(), "team/app:1.0");
    let config = ProxyConfig::new([up.entry().alias("up").path_prefix("team")])
        .write(&tmp.path().join("config.yml"));
    let password = format!("alice-pw-{}", unique());
    let wrong = format!("wrong-pw-{}", unique());
    let args = [
        "-U",
        "alice",
        "-P",
        &password,
        "--anonymous-pull",
        "--audit-blob-idle",
        "1s",
    ];
    let flags = Flags {
        config_file: Some(config.clone()),
        ..Flags::gateway(&args)
            .with_env("RUST_LOG", "debug")
            .with_admission(&[])
    };
    let data = tmp.path().join("data");
    let mut trow = Trow::start_in_with(topology, &data, flags.clone());
    let logs = LogsOnPanic::trow(&trow);
    let c = Client::new(&trow.url);
    let alice = Some(("alice", password.as_str()));

    // Pushes.
    let (one, one_blobs) = c.push_image("app/one", "v1", "one", alice).await;
    let (two, _) = c.push_image("app/two", "v1", "two", alice).await;
    // Pulls: alice thrice, its blobs once; anonymous twice; HEADs are not pulls.
    for _ in 0..3 {
        c.get("/v2/app/one/manifests/v1", alice)
            .await
            .assert_status(200);
    }
    for b in &one_blobs {
        c.get(&format!("/v2/app/one/blobs/{b}"), alice)
            .await
            .assert_status(200);
    }
    for _ in 0..2 {
        c.get("/v2/app/two/manifests/v1", None)
            .await
            .assert_status(200);
    }
    send(c.req(reqwest::Method::HEAD, "/v2/app/two/manifests/v1", None))
        .await
        .assert_status(200);
    // Through the cache: a miss (one upstream fetch), then a revalidation.
    for _ in 0..2 {
        c.get("/v2/f/up/team/app/manifests/1.0", alice)
            .await
            .assert_status(200);
    }
    // And one layer through the cache: filled from the upstream while it is read.
    let layer = img.layers[0].clone();
    c.get(&format!("/v2/f/up/team/app/blobs/{layer}"), alice)
        .await
        .assert_status(200);
    // A delete.
    c.delete("/v2/app/two/manifests/v1", alice)
        .await
        .assert_status(202);
    // Refusals: a push without credentials, a wrong password on a pull and at the token
    // endpoint, and the audit API without credentials.
    let m = to_bytes(&oci_manifest(desc(OCI_CONFIG, &one_blobs[0], 1), &[]));
    c.put_manifest("app/one", "evil", &m, None)
        .await
        .assert_status(401);
    c.get("/v2/app/one/manifests/v1", Some(("alice", &wrong)))
        .await
        .assert_status(401);
    c.get(
        "/v2/token?service=trow&scope=repository:app/one:pull",
        Some(("alice", &wrong)),
    )
    .await
    .assert_status(401);
    c.get("/audit/v1/events", None).await.assert_status(401);
    // An admission decision (the API server calls the webhook without credentials).
    let review = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../admission-svc/tests/fixtures/pod-create.json"),
    )
    .unwrap();
    send(
        c.req(reqwest::Method::POST, "/validate-image", None)
            .header("content-type", "application/json")
            .body(review),
    )
    .await
    .assert_status(200);

    // The blob-pull summary goes out after a second of quiet; the proxy's fetch shortly after.
    eventually(
        &c,
        alice,
        "the blob summaries and the upstream fetches",
        |all| {
            let n = |action: &str| all.iter().filter(|e| e["action"] == action).count();
            n("pull_blobs") == 2 && n("proxy_fetch") == 2
        },
    )
    .await;
    let all = c.all_events("", 1000, alice).await;
    let cached_repo = all.iter().find(|e| e["action"] == "proxy_fetch").unwrap()["repository"]
        .as_str()
        .unwrap()
        .to_string();
    let mut want = BTreeMap::new();
    want.insert(key("push", "alice", "app/one"), 1);
    want.insert(key("push", "alice", "app/two"), 1);
    want.insert(key("pull", "alice", "app/one"), 3);
    want.insert(key("pull", "", "app/two"), 2);
    want.insert(key("pull", "alice", "f/up/team/app"), 2);
    want.insert(key("pull_blobs", "alice", "app/one"), 1);
    want.insert(key("pull_blobs", "alice", "f/up/team/app"), 1);
    want.insert(key("delete", "alice", "app/two"), 1);
    // A wrong password proves no user: the name it claimed is in the detail, not the user.
    want.insert(key("refused", "", "app/one"), 2);
    want.insert(key("refused", "", ""), 2);
    want.insert(key("proxy_fetch", "", &cached_repo), 2);
    want.insert(key("admission", "", ""), 1);
    assert_eq!(counts(&all), want, "{all:#?}");

    // What the events say.
    let pushes: Vec<&Value> = all.iter().filter(|e| e["action"] == "push").collect();
    assert!(pushes.iter().any(|e| e["digest"] == one.as_str()));
    assert!(pushes.iter().any(|e| e["digest"] == two.as_str()));
    for e in &all {
        if e["source"] == "gateway" && e["action"] != "pull_blobs" {
            assert_eq!(e["user_agent"], "audit-test/1.0", "{e}");
        }
        if e["source"] == "gateway" {
            assert!(e["client"].as_str().unwrap().starts_with("127."), "{e}");
        }
    }
    let blobs = all
        .iter()
        .find(|e| e["action"] == "pull_blobs" && e["repository"] == "app/one")
        .unwrap();
    assert_eq!(blobs["count"], 2, "{blobs}");
    assert_eq!(blobs["bytes"], 4096 + config_blob("one").len(), "{blobs}");
    let refused_pw = all
        .iter()
        .find(|e| {
            e["action"] == "refused"
                && e["repository"] == "app/one"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("(credentials named \"alice\")")
        })
        .unwrap();
    assert_eq!(refused_pw["user"], "", "{refused_pw}");
    assert_eq!(refused_pw["status"], 401);
    assert_eq!(refused_pw["outcome"], "refused");
    let admission = all.iter().find(|e| e["action"] == "admission").unwrap();
    assert_eq!(admission["outcome"], "allowed", "{admission}");
    assert!(
        admission["reference"].as_str().unwrap().starts_with("Pod "),
        "{admission}"
    );
    let fetch = |what: &str| {
        all.iter()
            .find(|e| {
                e["action"] == "proxy_fetch" && e["detail"].as_str().unwrap().starts_with(what)
            })
            .unwrap_or_else(|| panic!("a {what} fetch in {all:#?}"))
    };
    assert_eq!(fetch("manifest ")["digest"], img.manifest_digest.as_str());
    let blob_fetch = fetch("blob ");
    assert_eq!(blob_fetch["digest"], layer.as_str(), "{blob_fetch}");
    assert_eq!(blob_fetch["outcome"], "ok", "{blob_fetch}");
    let cached_blobs = all
        .iter()
        .find(|e| e["action"] == "pull_blobs" && e["repository"] == "f/up/team/app")
        .unwrap();
    assert_eq!(cached_blobs["count"], 1);
    assert_eq!(cached_blobs["bytes"], blob_fetch["bytes"], "{cached_blobs}");
    let cached: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "pull" && e["repository"] == "f/up/team/app")
        .collect();
    // Newest first: the revalidation, then the miss.
    assert_eq!(cached[0]["detail"], "cache: revalidated");
    assert_eq!(cached[1]["detail"], "cache: miss");

    // Pages of 4 hold exactly what one page of 1000 holds, in the same order.
    let paged = c.all_events("", 4, alice).await;
    assert_eq!(paged, all);
    // Filters, also paged.
    let f = c.all_events("&action=pull&user=alice", 2, alice).await;
    assert_eq!(f.len(), 5, "{f:#?}");
    let f = c.all_events("&repository=app", 3, alice).await;
    assert_eq!(f.len(), 11, "{f:#?}");
    assert!(
        f.iter()
            .all(|e| e["repository"].as_str().unwrap().starts_with("app/"))
    );
    let f = c.all_events("&repository=app/on", 100, alice).await;
    assert!(f.is_empty(), "prefixes end at a `/`: {f:#?}");
    let f = c.all_events("&user=", 3, alice).await;
    assert_eq!(
        f.len(),
        2 + 4 + 2 + 1,
        "anonymous: two pulls, four refusals (two without credentials, two with a wrong \
         password, which proves no user), two fetches, one admission: {f:#?}"
    );
    // Times in one format compare as strings; a summary is written after events newer than it.
    let times: Vec<String> = all
        .iter()
        .map(|e| e["time"].as_str().unwrap().to_string())
        .collect();
    let newest = times.iter().max().unwrap().clone();
    let oldest = times.iter().min().unwrap().clone();
    let f = c
        .all_events(&format!("&since={oldest}&until={newest}"), 5, alice)
        .await;
    let at_newest = all.iter().filter(|e| e["time"] == newest.as_str()).count();
    assert_eq!(f.len(), all.len() - at_newest, "until is exclusive");
    assert_eq!(c.all_events("&since=4102444800", 5, alice).await.len(), 0);
    // Bad parameters are 400s with OCI error JSON.
    for bad in [
        "/audit/v1/events?action=steal",
        "/audit/v1/events?since=yesterday",
        "/audit/v1/events?limit=0",
        "/audit/v1/events?cursor=zz",
        "/audit/v1/events?repo=app",
        "/audit/v1/pulls?upstream=maybe",
    ] {
        let r = c.get(bad, alice).await;
        r.assert_status(400);
        assert!(!r.error_codes().is_empty(), "{bad}: {r}");
    }

    // The pull view: which images, how often, by whom, when last; the cached tag is current.
    let pulls = c.get("/audit/v1/pulls?upstream=check", alice).await;
    pulls.assert_status(200);
    let images = pulls.json()["images"].as_array().unwrap().clone();
    let image = |repo: &str| {
        images
            .iter()
            .find(|i| i["repository"] == repo)
            .unwrap_or_else(|| panic!("{repo} in {images:#?}"))
            .clone()
    };
    let last_pull = |repo: &str| {
        all.iter()
            .find(|e| e["action"] == "pull" && e["repository"] == repo)
            .unwrap()["time"]
            .clone()
    };
    let i = image("app/one");
    assert_eq!(
        (i["reference"].clone(), i["pulls"].clone()),
        ("v1".into(), 3.into())
    );
    assert_eq!(i["digest"], one.as_str());
    assert_eq!(i["last_pull"], last_pull("app/one"));
    assert_eq!(i["users"][0]["user"], "alice");
    assert_eq!(i["users"][0]["pulls"], 3);
    assert_eq!(i["behind"], "unknown", "not a cached image");
    let i = image("app/two");
    assert_eq!(i["pulls"], 2);
    assert_eq!(i["users"][0]["user"], "");
    assert_eq!(i["last_pull"], last_pull("app/two"));
    let i = image("f/up/team/app");
    assert_eq!(
        (i["reference"].clone(), i["pulls"].clone()),
        ("1.0".into(), 2.into())
    );
    assert_eq!(i["behind"], false, "{i}");
    // The tag moves upstream: the cached one is behind.
    up.push(&moved.oci_ref(), "team/app:1.0");
    let pulls = c
        .get("/audit/v1/pulls?upstream=check&repository=f", alice)
        .await;
    let images = pulls.json()["images"].as_array().unwrap().clone();
    assert_eq!(images.len(), 1, "{images:#?}");
    assert_eq!(images[0]["behind"], true, "{:#?}", images[0]);
    assert_eq!(images[0]["upstream_digest"], moved.manifest_digest.as_str());
    // The upstream goes away: the cached tag is served stale, and that is on record.
    up.kill();
    let r = c.get("/v2/f/up/team/app/manifests/1.0", alice).await;
    r.assert_status(200);
    assert_eq!(r.header("trow-cache").as_deref(), Some("stale"));
    eventually(&c, alice, "the stale serve", |all| {
        all.iter().any(|e| e["action"] == "stale")
    })
    .await;
    let all = c.all_events("", 1000, alice).await;
    let stale: Vec<&Value> = all.iter().filter(|e| e["action"] == "stale").collect();
    assert_eq!(stale.len(), 1, "{all:#?}");
    assert_eq!(stale[0]["reference"], "1.0");
    assert_eq!(stale[0]["digest"], img.manifest_digest.as_str());
    let cached_pulls: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "pull" && e["repository"] == "f/up/team/app")
        .collect();
    assert_eq!(cached_pulls.len(), 3);
    assert_eq!(cached_pulls[0]["detail"], "cache: stale");
    let pulls_before = c.get("/audit/v1/pulls", alice).await.json();

    // kill -9 of every process, a restart on the same data dir: the same answers.
    drop(logs);
    kill_all(&mut trow);
    let old_logs: Vec<PathBuf> = trow
        .processes()
        .iter()
        .map(|(_, p)| p.log.clone())
        .collect();
    drop(trow);
    let mut trow = Trow::start_in_with(topology, &data, flags);
    let _logs = LogsOnPanic::trow(&trow);
    let c = Client::new(&trow.url);
    let after = c.all_events("", 3, alice).await;
    assert_eq!(after, all, "the same events after a kill -9 and restart");
    assert_eq!(c.get("/audit/v1/pulls", alice).await.json(), pulls_before);

    // No password anywhere: logs (at debug) and audit files.
    let mut texts: Vec<(PathBuf, String)> = old_logs
        .iter()
        .chain(trow.processes().iter().map(|(_, p)| &p.log))
        .map(|p| (p.clone(), std::fs::read_to_string(p).unwrap_or_default()))
        .collect();
    for f in files_under(&data.join("audit")) {
        texts.push((f.clone(), std::fs::read_to_string(&f).unwrap()));
    }
    assert!(texts.len() >= 2);
    for (path, text) in &texts {
        for secret in [&password, &wrong] {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a password",
                path.display()
            );
        }
    }
    stop_and_fsck(&mut trow);
}

pub async fn rotation_and_a_torn_line(topology: Topology) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = Flags::storage(&["--audit-max-file-size", "2048", "--audit-max-files", "3"]);
    let mut trow = Trow::start_in_with(topology, &data, flags.clone());
    let logs = LogsOnPanic::trow(&trow);
    let c = Client::new(&trow.url);
    c.push_image("rot/app", "v1", "rot", None).await;
    for _ in 0..60 {
        c.get("/v2/rot/app/manifests/v1", None)
            .await
            .assert_status(200);
    }
    let dir = data.join("audit");
    let lines_on_disk = |dir: &Path| -> usize {
        files_under(dir)
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
            .sum()
    };
    let files = files_under(&dir);
    assert_eq!(files.len(), 3, "{files:?}");
    let kept = lines_on_disk(&dir);
    assert!(kept < 61, "older files were removed: {kept}");
    let all = c.all_events("", 7, None).await;
    assert_eq!(all.len(), kept, "every retained event is seen");
    assert!(
        all.iter().all(|e| e["action"] == "pull"),
        "the push rotated away"
    );

    // Stopped, with a torn line at the end of the newest file.
    drop(logs);
    stop_and_fsck(&mut trow);
    let mut newest = files_under(&dir);
    newest.sort();
    let newest = newest.last().unwrap().clone();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&newest)
            .unwrap();
        f.write_all(b"{\"time\":\"2026-01-01T00:00:00Z\",\"action\":\"pu")
            .unwrap();
    }
    let trow = Trow::start_in_with(topology, &data, flags);
    let _logs = LogsOnPanic::trow(&trow);
    let c = Client::new(&trow.url);
    c.get("/v2/rot/app/manifests/v1", None)
        .await
        .assert_status(200);
    let after = c.all_events("", 1000, None).await;
    assert_eq!(after.len(), lines_on_disk(&dir), "{after:#?}");
    assert_eq!(after[0]["action"], "pull");
    assert_eq!(&after[1..], &all[..after.len() - 1]);
    for f in files_under(&dir) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.ends_with('\n'), "{}", f.display());
        for line in text.lines() {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("{}: {line}: {e}", f.display()));
        }
    }
}
