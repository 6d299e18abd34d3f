//! Online garbage collection through real processes: `trow gc` against a running storage
//! service (dry run, then for real), a collection loop racing real pushes and pulls, and the
//! storage process killed in the middle of a collection. Each ends with `trow fsck`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trow_tests::clients::{LogsOnPanic, run, skopeo};
use trow_tests::fsck::stop_and_fsck;
use trow_tests::images::{build_image_sized, read_blob};
use trow_tests::oci::{
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Reg, desc, oci_manifest, send, to_bytes,
};
use trow_tests::{Flags, Topology, Trow, both_topologies, sha256_digest, trow_bin};

/// `trow gc` against `trow`'s storage service; its status and output.
fn trow_gc(trow: &Trow, dry_run: bool) -> (bool, String) {
    trow_tests::trow_gc(&trow.storage_addr, dry_run)
}

/// The numbers of a `gc: ... blobs (N bytes) ...` summary line: (manifests, links, blobs, bytes).
fn summary(out: &str) -> (u64, u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("gc: "))
        .unwrap_or_else(|| panic!("no summary in:\n{out}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3])
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                pending.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

fn no_grace() -> Flags {
    Flags::storage(&["--gc-grace", "0s", "--gc-every", "0"])
}

mod cli {
    use super::*;

    /// Two images pushed with skopeo, one deleted: the dry run lists its blobs and deletes
    /// nothing; the collection frees exactly those bytes; the other pulls byte-identical.
    pub async fn frees_what_a_deleted_image_held(topology: Topology) {
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        let keep = build_image_sized(&layout, "keep", "amd64", 256 * 1024);
        let gone = build_image_sized(&layout, "gone", "amd64", 1024 * 1024);
        let mut trow = Trow::start_with(topology, no_grace());
        let _logs = LogsOnPanic::trow(&trow);
        for image in [&keep, &gone] {
            run(&mut skopeo([
                "copy",
                "--dest-tls-verify=false",
                &image.oci_ref(),
                &format!("docker://{}", trow.image(&format!("gc/app:{}", image.tag))),
            ]));
        }
        run(&mut skopeo([
            "delete",
            "--tls-verify=false",
            &format!("docker://{}", trow.image("gc/app:gone")),
        ]));
        let blobs = trow.data_dir.join("blobs");
        let before = du(&blobs);

        let (ok, dry) = trow_gc(&trow, true);
        assert!(ok, "{dry}");
        // The image's own layers and config, and its manifest's bytes; not what both share.
        let own: Vec<&String> = gone
            .layers
            .iter()
            .chain([&gone.config_digest, &gone.manifest_digest])
            .filter(|d| !keep.layers.contains(d) && **d != keep.config_digest)
            .collect();
        for d in &own {
            assert!(
                dry.contains(&format!("would delete blob {d}")),
                "{d} not listed:\n{dry}"
            );
        }
        let (_, _, dry_blobs, dry_bytes) = summary(&dry);
        assert_eq!(dry_blobs, own.len() as u64, "{dry}");
        assert_eq!(du(&blobs), before, "a dry run deletes nothing");

        let (ok, done) = trow_gc(&trow, false);
        assert!(ok, "{done}");
        let (_, _, blobs_freed, bytes) = summary(&done);
        assert_eq!((blobs_freed, bytes), (dry_blobs, dry_bytes), "{done}");
        assert!(bytes > 1024 * 1024, "the 1 MiB layer was freed: {done}");
        assert_eq!(
            du(&blobs),
            before - bytes,
            "the bytes it reports are the bytes freed"
        );

        let pulled = work.path().join("pulled");
        run(&mut skopeo([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}", trow.image("gc/app:keep")),
            &format!("oci:{}:keep", pulled.display()),
        ]));
        for d in keep.layers.iter().chain([&keep.config_digest]) {
            assert_eq!(read_blob(&pulled, d), read_blob(&layout, d), "{d}");
        }
        let (ok, again) = trow_gc(&trow, false);
        assert!(ok, "{again}");
        assert_eq!(summary(&again), (0, 0, 0, 0), "{again}");
        stop_and_fsck(&mut trow);
    }
}
both_topologies!(cli::frees_what_a_deleted_image_held);

/// What a real client does for a blob: HEAD, else a mount from `from`, else an upload.
async fn put_blob_as_a_client(reg: &Reg, repo: &str, from: &str, data: &[u8]) -> String {
    let d = sha256_digest(data);
    let head = reg.head(&reg.v2(&format!("{repo}/blobs/{d}"))).await;
    if head.status == 200 {
        return d;
    }
    let mount = send(
        reg.client
            .post(reg.v2(&format!("{repo}/blobs/uploads/?mount={d}&from={from}"))),
    )
    .await;
    if mount.status == 201 {
        return d;
    }
    assert_eq!(mount.status, 202, "{}", mount.text());
    let loc = reg.abs(&mount.must_header("location"));
    let sep = if loc.contains('?') { '&' } else { '?' };
    send(
        reg.client
            .put(format!("{loc}{sep}digest={d}"))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
    )
    .await
    .assert_status(201);
    d
}

/// An image from a base shared by many and a layer of its own; returns (digest, manifest bytes,
/// blobs with their bytes).
async fn push(reg: &Reg, repo: &str, from: &str, tag: &str, base: u32, own: &str) -> Pushed {
    let config =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"x\":\"{own}\"}}").into_bytes();
    let base_layer = format!("base layer {base} ").repeat(2000).into_bytes();
    let own_layer = format!("own layer {own} ").repeat(500).into_bytes();
    let mut blobs = Vec::new();
    for b in [&config, &base_layer, &own_layer] {
        let d = put_blob_as_a_client(reg, repo, from, b).await;
        blobs.push((d, b.clone()));
    }
    let m = oci_manifest(
        desc(OCI_CONFIG, &blobs[0].0, config.len()),
        &[
            desc(OCI_LAYER, &blobs[1].0, base_layer.len()),
            desc(OCI_LAYER, &blobs[2].0, own_layer.len()),
        ],
    );
    let body = to_bytes(&m);
    let r = reg.put_manifest(repo, tag, OCI_MANIFEST, &body).await;
    assert_eq!(r.status, 201, "push {repo}:{tag}: {}", r.text());
    Pushed {
        repo: repo.to_string(),
        tag: tag.to_string(),
        digest: sha256_digest(&body),
        manifest: body,
        blobs,
    }
}

struct Pushed {
    repo: String,
    tag: String,
    digest: String,
    manifest: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
}

/// Pulls an image as a client does and checks every byte.
async fn assert_pulls_whole(reg: &Reg, p: &Pushed) {
    let m = reg
        .get_m(&reg.v2(&format!("{}/manifests/{}", p.repo, p.tag)))
        .await;
    assert_eq!(m.status, 200, "{}:{}: {}", p.repo, p.tag, m.text());
    assert_eq!(m.body, p.manifest, "{}:{}", p.repo, p.tag);
    for (d, bytes) in &p.blobs {
        let b = reg.get(&reg.v2(&format!("{}/blobs/{d}", p.repo))).await;
        assert_eq!(b.status, 200, "{}@{d}", p.repo);
        assert_eq!(&b.body, bytes, "{}@{d}", p.repo);
    }
}

mod race {
    use super::*;

    /// Garbage made old (its files dated two hours back, past the default grace period of one
    /// hour), then `trow gc` in a loop while four clients push images that share blobs with
    /// that garbage (found by HEAD, mounted, or uploaded again) and others pull: every push
    /// succeeds, every image pulls byte-identical, the garbage nobody reused is freed.
    pub async fn collections_in_a_loop_under_pushes_and_pulls(topology: Topology) {
        let trow = Trow::start_with(topology, Flags::storage(&["--gc-every", "0"]));
        let _logs = LogsOnPanic::trow(&trow);
        let reg = Arc::new(Reg::with_trow(trow));
        let mut kept = Vec::new();
        let mut garbage = Vec::new();
        for i in 0..16u32 {
            let repo = format!("race/r{}", i % 4);
            let p = push(
                &reg,
                &repo,
                "race/r0",
                &format!("old{i}"),
                i % 3,
                &format!("old{i}"),
            )
            .await;
            if i % 2 == 0 {
                kept.push(p);
            } else {
                garbage.push(p);
            }
        }
        for g in &garbage {
            reg.delete(&reg.v2(&format!("{}/manifests/{}", g.repo, g.digest)))
                .await
                .assert_status(202);
        }
        let data_dir = reg.trow.as_ref().unwrap().data_dir.clone();
        run(Command::new("find").arg(&data_dir).args([
            "-type",
            "f",
            "-exec",
            "touch",
            "-m",
            "-d",
            "2 hours ago",
            "{}",
            "+",
        ]));

        let stop = Arc::new(AtomicBool::new(false));
        let collector = {
            let stop = stop.clone();
            let trow_addr = reg.trow.as_ref().unwrap().storage_addr.clone();
            std::thread::spawn(move || {
                let (mut runs, mut bytes) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let (ok, text) = trow_tests::trow_gc(&trow_addr, false);
                    assert!(ok, "trow gc: {text}");
                    bytes += summary(&text).3;
                    runs += 1;
                }
                (runs, bytes)
            })
        };
        let pulls = Arc::new(AtomicU64::new(0));
        let puller = {
            let (reg, stop, pulls) = (reg.clone(), stop.clone(), pulls.clone());
            let sample: Vec<(String, String, Vec<u8>)> = kept
                .iter()
                .map(|p| (p.repo.clone(), p.blobs[1].0.clone(), p.blobs[1].1.clone()))
                .collect();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for (repo, d, bytes) in &sample {
                        let b = reg.get(&reg.v2(&format!("{repo}/blobs/{d}"))).await;
                        assert_eq!(b.status, 200, "pull of {repo}@{d} during a collection");
                        assert_eq!(&b.body, bytes);
                        pulls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let started = Instant::now();
        let mut pushers = Vec::new();
        for c in 0..4u32 {
            let reg = reg.clone();
            pushers.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..8u32 {
                    let n = c * 8 + i;
                    let repo = format!("race/r{}", n % 4);
                    // Half reuse the deleted images' own layers (odd numbers were deleted).
                    let own = if n % 2 == 0 {
                        format!("old{}", (n % 16) | 1)
                    } else {
                        format!("new{n}")
                    };
                    out.push(push(&reg, &repo, "race/r1", &format!("new{n}"), n % 3, &own).await);
                }
                out
            }));
        }
        for p in pushers {
            kept.extend(p.await.unwrap());
        }
        let push_time = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        puller.await.unwrap();
        let (runs, freed_during) = collector.join().unwrap();
        let trow = reg.trow.as_ref().unwrap();
        let (ok, last) = trow_gc(trow, false);
        assert!(ok, "{last}");
        let freed = freed_during + summary(&last).3;
        eprintln!(
            "gc race ({topology:?}): {runs} collections during 32 pushes ({push_time:?}), \
             {} blob pulls served during them, {freed} bytes freed",
            pulls.load(Ordering::Relaxed)
        );
        assert!(runs >= 2, "only {runs} collections ran during the pushes");
        for p in &kept {
            assert_pulls_whole(&reg, p).await;
        }
        // The deleted images' layers nobody pushed again are gone.
        let reused: Vec<String> = (0..32u32)
            .filter(|n| n % 2 == 0)
            .map(|n| format!("own layer old{} ", (n % 16) | 1))
            .collect();
        for g in &garbage {
            let own = &g.blobs[2];
            let text = String::from_utf8_lossy(&own.1);
            if !reused.iter().any(|r| text.starts_with(r.as_str())) {
                let path = data_dir.join(format!("blobs/sha256/{}/{}", &own.0[7..9], &own.0[7..]));
                assert!(
                    !path.exists(),
                    "garbage {} of {} was not freed",
                    own.0,
                    g.tag
                );
            }
        }
        assert!(freed > 0);
        let mut reg = Arc::into_inner(reg).expect("one owner");
        stop_and_fsck(reg.trow.as_mut().unwrap());
    }
}
both_topologies!(race::collections_in_a_loop_under_pushes_and_pulls);

/// The storage process killed (SIGKILL) while a collection is deleting: after a restart the
/// store checks clean, the next collection finishes the job, and what was kept pulls whole.
#[tokio::test(flavor = "multi_thread")]
async fn storage_killed_during_a_collection() {
    let trow = Trow::start_with(Topology::Split, no_grace());
    let _logs = LogsOnPanic::trow(&trow);
    let reg = Reg::with_trow(trow);
    let mut kept = Vec::new();
    for i in 0..150u32 {
        let repo = format!("crash/r{}", i % 15);
        let p = push(
            &reg,
            &repo,
            "crash/r0",
            &format!("t{i}"),
            i % 4,
            &format!("c{i}"),
        )
        .await;
        if i % 10 == 0 {
            kept.push(p);
        } else {
            reg.delete(&reg.v2(&format!("{}/manifests/{}", p.repo, p.digest)))
                .await
                .assert_status(202);
        }
    }
    let mut reg = reg;
    let trow = reg.trow.as_mut().unwrap();
    let gc_dir = trow.data_dir.join("gc");
    let mut gc = Command::new(trow_bin())
        .args(["gc", "--storage", &format!("http://{}", trow.storage_addr)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // In the middle: once the collection has a marker or a tombstone on disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    let busy = |d: &Path| {
        ["repositories", "blobs"]
            .iter()
            .any(|s| std::fs::read_dir(d.join(s)).is_ok_and(|mut e| e.next().is_some()))
    };
    while !busy(&gc_dir) {
        assert!(
            Instant::now() < deadline,
            "the collection never started deleting"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    trow.kill_storage();
    let status = gc.wait().unwrap();
    assert!(
        !status.success(),
        "trow gc must fail when storage dies under it"
    );
    let log = trow.storage.as_ref().unwrap().log_text();
    assert!(
        !log.contains("garbage collection finished"),
        "killed too late:\n{log}"
    );
    trow.restart_storage();
    trow_tests::fsck::fsck(&trow.data_dir);
    let (ok, out) = trow_gc(trow, false);
    assert!(ok, "{out}");
    assert!(
        summary(&out).2 > 0,
        "the next collection finishes the job: {out}"
    );
    for p in &kept {
        assert_pulls_whole(&reg, p).await;
    }
    let (ok, out) = trow_gc(reg.trow.as_ref().unwrap(), false);
    assert!(ok, "{out}");
    assert_eq!(summary(&out), (0, 0, 0, 0), "{out}");
    stop_and_fsck(reg.trow.as_mut().unwrap());
}
