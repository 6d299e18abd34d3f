//! Hostile and unlucky storage (issue 12): racing writers, an upload revived after it completed,
//! a full disk, a malformed monolithic digest, listings past the gRPC message limit, a huge tag,
//! two storage processes on one data dir. Every test ends by stopping Trow and running
//! `trow fsck` on what it left.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use trow_tests::clients::LogsOnPanic;
use trow_tests::fsck::stop_and_fsck;
use trow_tests::oci::{
    self, OCI_MANIFEST, Reg, Resp, desc, parse_next_link, send, to_bytes, with_query,
};
use trow_tests::tmpfs::Tmpfs;
use trow_tests::{Flags, Topology, Trow, free_port, sha256_digest, trow_bin};

const MIB: usize = 1024 * 1024;

/// Text that must never reach a client: it names internals (I/O, gRPC, HTTP/2).
const INTERNAL: [&str; 6] = ["os error", "no space", "storage i/o", "h2", "grpc", "tonic"];

fn assert_no_internal_text(r: &Resp) {
    let body = r.text().to_lowercase();
    for bad in INTERNAL {
        assert!(
            !body.contains(bad),
            "{}: body names internals ({bad:?}): {r}",
            r.what
        );
    }
}

fn trow(reg: &mut Reg) -> &mut Trow {
    reg.trow.as_mut().expect("a Trow started by the test")
}

/// Stops the Trow of `reg` and checks its store.
fn finish(mut reg: Reg) {
    stop_and_fsck(trow(&mut reg));
}

/// Every tag listed resolves: GET by tag is 200 (never a listed tag whose manifest is gone).
async fn assert_tags_resolve(reg: &Reg, repo: &str, round: usize) {
    let r = reg.get(&reg.v2(&format!("{repo}/tags/list"))).await;
    if r.status == 404 {
        return; // Nothing left in the repository.
    }
    r.assert_status(200);
    for tag in r.json()["tags"].as_array().cloned().unwrap_or_default() {
        let tag = tag.as_str().expect("tag is a string");
        let m = reg.get_m(&reg.v2(&format!("{repo}/manifests/{tag}"))).await;
        assert_eq!(
            m.status, 200,
            "round {round}: tag {tag} is listed but its manifest is gone: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_by_digest_racing_tag_puts_leaves_no_dangling_tag() {
    let reg = Reg::start(Topology::OneProcess);
    let _logs = LogsOnPanic::trow(reg.trow.as_ref().unwrap());
    let repo = "race/delete-vs-tag";
    let m = reg.image_manifest(repo, "race").await;
    let body = to_bytes(&m);
    let digest = sha256_digest(&body);
    for round in 0..40 {
        reg.put_manifest(repo, &digest, OCI_MANIFEST, &body)
            .await
            .assert_status(201);
        let tags: Vec<String> = (0..4).map(|k| format!("r{round}-{k}")).collect();
        let puts = join_all(
            tags.iter()
                .map(|t| reg.put_manifest(repo, t, OCI_MANIFEST, &body)),
        );
        let by_digest = reg.v2(&format!("{repo}/manifests/{digest}"));
        let delete = reg.delete(&by_digest);
        let (puts, delete) = tokio::join!(puts, delete);
        assert!(
            delete.status == 202 || delete.status == 404,
            "round {round}: {delete}"
        );
        for p in &puts {
            assert!(p.status < 500, "round {round}: {p}");
        }
        assert_tags_resolve(&reg, repo, round).await;
    }
    finish(reg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_pushing_one_tag_leave_it_on_one_of_them() {
    let reg = Reg::start(Topology::OneProcess);
    let _logs = LogsOnPanic::trow(reg.trow.as_ref().unwrap());
    let repo = "race/one-tag";
    let mut bodies = Vec::new();
    for i in 0..16 {
        bodies.push(to_bytes(
            &reg.image_manifest(repo, &format!("writer {i}")).await,
        ));
    }
    let digests: BTreeSet<String> = bodies.iter().map(|b| sha256_digest(b)).collect();
    for round in 0..5 {
        let puts = join_all(
            bodies
                .iter()
                .map(|b| reg.put_manifest(repo, "contended", OCI_MANIFEST, b)),
        )
        .await;
        for p in &puts {
            p.assert_status(201);
        }
        let r = reg
            .get_m(&reg.v2(&format!("{repo}/manifests/contended")))
            .await;
        r.assert_status(200);
        let got = sha256_digest(&r.body);
        assert!(digests.contains(&got), "round {round}: tag ended on {got}");
        assert_eq!(r.header("docker-content-digest"), Some(got));
    }
    finish(reg);
}

/// Waits until the gateway reaches storage again (a storage-backed request is not a 5xx).
async fn wait_storage(reg: &Reg) {
    let start = Instant::now();
    loop {
        let r = reg.get(&reg.v2("never/pushed/tags/list")).await;
        if r.status < 500 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "storage not back: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_upload_cannot_be_revived() {
    const UPLOADS: usize = 24;
    let mut reg = Reg::start(Topology::Split);
    let repo = "revive/upload";
    let first = b"hello ";
    let second = b"evil";
    let mut locations = Vec::new();
    for _ in 0..UPLOADS {
        let loc = reg.upload_location(repo).await;
        let r = send(
            reg.client
                .patch(&loc)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("0-{}", first.len() - 1))
                .body(first.to_vec()),
        )
        .await;
        r.assert_status(202);
        locations.push(reg.abs(&r.must_header("location")));
    }
    // After a restart the service knows the uploads only from disk.
    trow(&mut reg).kill_storage();
    trow(&mut reg).restart_storage();
    let _logs = LogsOnPanic::trow(reg.trow.as_ref().unwrap());
    wait_storage(&reg).await;

    let digest = sha256_digest(first);
    let reg_ref = &reg;
    for loc in &locations {
        // Status requests race the closing PUT, some a little after it started.
        let put = send(reg.client.put(with_query(loc, &format!("digest={digest}"))));
        let statuses = join_all((0..6u64).map(|i| async move {
            tokio::time::sleep(Duration::from_micros(500 * i)).await;
            reg_ref.get(loc).await
        }));
        let (put, statuses) = tokio::join!(put, statuses);
        put.assert_status(201);
        for s in &statuses {
            assert!(s.status == 204 || s.status == 404, "{s}");
        }
    }
    // Once completed, an upload id is gone for good: nothing can append to it or close it again.
    let mut both = first.to_vec();
    both.extend_from_slice(second);
    let revived = sha256_digest(&both);
    for loc in &locations {
        let r = send(
            reg.client
                .patch(loc)
                .header("Content-Type", "application/octet-stream")
                .body(second.to_vec()),
        )
        .await;
        r.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
        let r = send(
            reg.client
                .put(with_query(loc, &format!("digest={revived}"))),
        )
        .await;
        r.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
        reg.get(loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    }
    finish(reg);
}

/// Pushes `data` to `repo` of the registry at `base` with POST then PUT; the PUT's response, or
/// the POST's when that already failed (a full disk may refuse the session itself).
async fn push(client: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> Resp {
    let r = send(
        client
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .header("Content-Length", "0"),
    )
    .await;
    if r.status != 202 {
        return r;
    }
    let loc = r.must_header("location");
    let loc = if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    };
    let digest = sha256_digest(data);
    send(
        client
            .put(with_query(&loc, &format!("digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
    )
    .await
}

/// Bytes of the files under `dir`.
fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_frees_the_failed_push_and_recovers() {
    let fs = Tmpfs::mount("8m");
    // No reserve: this is about a disk that does fill (the reserve is tested with the cache).
    let mut t = Trow::start_in_with(
        Topology::OneProcess,
        &fs.dir,
        Flags::storage(&["--min-free-space", "0"]),
    );
    let _logs = LogsOnPanic::trow(&t);
    let client = oci::client();
    let repo = "full/disk";
    let mut failed = None;
    for i in 0..32 {
        let r = push(&client, &t.url, repo, &oci::bytes(MIB, i + 1)).await;
        if r.status != 201 {
            failed = Some(r);
            break;
        }
    }
    let r = failed.expect("an 8 MiB disk took 32 MiB of blobs");
    // A server fault: 500, or 507 Insufficient Storage, which says exactly this.
    assert!(r.status == 500 || r.status == 507, "{r}");
    assert!(!r.error_codes().is_empty(), "{r}");
    assert_no_internal_text(&r);
    let scratch = du(&fs.dir.join("uploads"));
    assert!(
        scratch < 64 * 1024,
        "the failed push left {scratch} bytes of scratch under uploads/"
    );
    let small = push(&client, &t.url, repo, b"small blob after a full disk").await;
    small.assert_status(201);
    stop_and_fsck(&mut t);
}

#[tokio::test]
async fn a_monolithic_post_with_a_malformed_digest_leaves_nothing() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = "mono/bad-digest";
    let r = send(
        reg.client
            .post(reg.v2(&format!("{repo}/blobs/uploads/?digest=not-a-digest")))
            .header("Content-Type", "application/octet-stream")
            .body(b"some bytes".to_vec()),
    )
    .await;
    r.assert_error(400, "DIGEST_INVALID");
    let uploads = reg.trow.as_ref().unwrap().data_dir.join("uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left under uploads/: {left:?}");
    finish(reg);
}

/// 128 characters, the longest tag: 70,000 of them overflow an 8 MiB message.
fn long_tag(i: usize) -> String {
    format!("tag-{i:06}-{}", "x".repeat(117))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventy_thousand_tags_are_listed_whole_and_in_pages() {
    const TAGS: usize = 70_000;
    let mut reg = Reg::start(Topology::OneProcess);
    let repo = "many/tags";
    let (digest, _) = reg.push_image(repo, "base", "many").await;
    // Tags written straight into the stopped store, with the content the store writes: far
    // faster than 70,000 PUTs. The first Trow is kept (it owns the temp dir) until the end.
    let mut first = reg.trow.take().unwrap();
    assert!(first.main.terminate(Duration::from_secs(10)).is_some());
    let data_dir = first.data_dir.clone();
    let tags_dir = data_dir.join(format!("repositories/{repo}/_tags"));
    let base = std::fs::read(tags_dir.join("base")).unwrap();
    assert_eq!(String::from_utf8_lossy(&base).trim(), digest);
    // Hard links to a few copies of the tag file: 20x faster than writing 70,000 files, and
    // under ext4's 65,000 links per inode.
    let copies: Vec<PathBuf> = (0..4)
        .map(|k| {
            let p = data_dir.parent().unwrap().join(format!("tag-file-{k}"));
            std::fs::write(&p, &base).unwrap();
            p
        })
        .collect();
    for i in 0..TAGS {
        std::fs::hard_link(&copies[i % copies.len()], tags_dir.join(long_tag(i))).unwrap();
    }
    let t = Trow::start_in(Topology::OneProcess, &data_dir);
    let _logs = LogsOnPanic::trow(&t);
    reg.url = t.url.clone();
    reg.trow = Some(t);

    let mut want: Vec<String> = (0..TAGS).map(long_tag).collect();
    want.push("base".into());
    want.sort();
    let all = reg.get(&reg.v2(&format!("{repo}/tags/list"))).await;
    all.assert_status(200);
    assert_same_list(&strings(&all.json()["tags"]), &want, "the whole list");

    let mut paged = Vec::new();
    let mut url = reg.v2(&format!("{repo}/tags/list?n=1000"));
    loop {
        let r = reg.get(&url).await;
        r.assert_status(200);
        let page = strings(&r.json()["tags"]);
        assert!(page.len() <= 1000, "a page of {}", page.len());
        paged.extend(page);
        match r.header("link") {
            Some(link) => url = reg.abs(&parse_next_link(&link)),
            None => break,
        }
    }
    assert_same_list(&paged, &want, "the pages");
    finish(reg);
    first.main.kill9();
}

/// Like `assert_eq!` for long lists, without printing them whole.
fn assert_same_list(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{what}: {} entries, expected {}; first difference at {i}: {:?} instead of {:?}",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_with_large_annotations_are_listed() {
    let reg = Reg::start(Topology::OneProcess);
    let _logs = LogsOnPanic::trow(reg.trow.as_ref().unwrap());
    let repo = "refs/large";
    let (subject, body) = reg.push_image(repo, "v1", "subject").await;
    let subject_desc = desc(OCI_MANIFEST, &subject, body.len());
    let mut digests = BTreeSet::new();
    for k in 0..3 {
        // ~3 MiB each, under the 4 MiB manifest limit; together past an 8 MiB message.
        let annotations = json!({
            "org.example.note": format!("{k}{}", "a".repeat(3 * MIB)),
        });
        let (d, _) = reg
            .push_referrer(
                repo,
                &subject_desc,
                Some("application/x-big"),
                "application/x-big-config",
                annotations,
            )
            .await;
        digests.insert(d);
    }
    let r = reg
        .get(&reg.v2(&format!("{repo}/referrers/{subject}")))
        .await;
    r.assert_status(200);
    let listed: BTreeSet<String> = r.json()["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests array: {r}"))
        .iter()
        .map(|m| m["digest"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(listed, digests);
    finish(reg);
}

/// The error codes of the OCI Distribution spec.
const OCI_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// The first error code of an OCI error body, or "" when the body is not one.
fn codes(r: &Resp) -> String {
    oci::error_code_of(&r.text()).unwrap_or_default()
}

#[tokio::test]
async fn a_twenty_thousand_character_tag_gets_a_clean_oci_error() {
    for topology in [Topology::OneProcess, Topology::Split] {
        let reg = Reg::start(topology);
        let _logs = LogsOnPanic::trow(reg.trow.as_ref().unwrap());
        let repo = "long/tag";
        let (_, body) = reg.push_image(repo, "v1", "long tag").await;
        let tag = "a".repeat(20_000);
        let url = reg.v2(&format!("{repo}/manifests/{tag}"));
        // Messages name the request without its 20,000 characters.
        let mut r = reg.get_m(&url).await;
        r.what = format!("{topology:?}: GET a 20,000-character tag");
        assert_eq!(
            (r.status, codes(&r).as_str()),
            (404, "MANIFEST_UNKNOWN"),
            "{}",
            r.text()
        );
        assert_no_internal_text(&r);
        let mut r = reg.put_manifest(repo, &tag, OCI_MANIFEST, &body).await;
        r.what = format!("{topology:?}: PUT a 20,000-character tag");
        assert!((400..500).contains(&r.status), "{}: {}", r.what, r.text());
        assert!(
            OCI_CODES.contains(&codes(&r).as_str()),
            "{}: {}",
            r.what,
            r.text()
        );
        assert_no_internal_text(&r);
        finish(reg);
    }
}

/// Runs `trow <args> --data-dir data_dir` and expects it to refuse the data dir at once: a
/// non-zero exit within 10 s, with a message naming the data dir and saying it is in use.
fn assert_refused(args: &[&str], data_dir: &Path) {
    let log = data_dir
        .parent()
        .unwrap()
        .join(format!("refused-{}.log", free_port()));
    let out = std::fs::File::create(&log).unwrap();
    let mut second = Command::new(trow_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn a second trow");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("trow {args:?} on a data dir in use is still running after 10 s:\n{text}");
    };
    assert!(
        !status.success(),
        "trow {args:?} exited successfully:\n{text}"
    );
    let canonical = data_dir.canonicalize().unwrap();
    assert!(
        text.contains(&*data_dir.to_string_lossy()) || text.contains(&*canonical.to_string_lossy()),
        "trow {args:?}: the message does not name the data dir:\n{text}"
    );
    assert!(
        text.to_lowercase().contains("in use"),
        "trow {args:?}: the message does not say the data dir is in use:\n{text}"
    );
}

#[tokio::test]
async fn a_second_storage_process_on_one_data_dir_exits_at_once() {
    let mut reg = Reg::start(Topology::Split);
    let _logs = LogsOnPanic::trow(reg.trow.as_ref().unwrap());
    let data_dir = trow(&mut reg).data_dir.clone();
    let listen = format!("127.0.0.1:{}", free_port());
    assert_refused(&["storage", "--listen", &listen], &data_dir);
    // The one-process default opens the same store: refused as well.
    let bind = format!("127.0.0.1:{}", free_port());
    assert_refused(
        &["--bind", &bind, "--storage-listen", "127.0.0.1:0"],
        &data_dir,
    );
    // The first one is unharmed.
    reg.push_blob("still/serving", b"after the second storage gave up")
        .await;
    finish(reg);
}
