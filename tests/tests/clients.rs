//! Real clients against a real registry: skopeo, podman and containerd push and pull images built
//! offline with umoci, and the digests must survive the round trip bit for bit.
//!
//! Each scenario takes only the registry's `host:port`, and runs against Trow in both topologies.
//! The `distribution` variants (ignored by default) run the same scenarios against CNCF
//! distribution, to tell a Trow bug from a harness problem:
//! `cargo nextest run -p trow-tests --test clients --run-ignored only`.

use std::path::Path;

use trow_tests::clients::{
    Containerd, Podman, assert_layout_blobs_intact, describe, layout_tag_digest, output,
    registry_raw_manifest, run, skopeo,
};
use trow_tests::images::{self, INDEX_MEDIA_TYPE, Image, Index, MANIFEST_MEDIA_TYPE};
use trow_tests::sha256_digest;

const DOCKER_V2S2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Runs `scenario` against Trow in both topologies and (ignored) against distribution.
macro_rules! against_registries {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn one_process() {
                let t = trow_tests::Trow::start(trow_tests::Topology::OneProcess);
                let _logs = trow_tests::clients::LogsOnPanic::trow(&t);
                super::$scenario(&t.addr);
            }

            #[test]
            fn split() {
                let t = trow_tests::Trow::start(trow_tests::Topology::Split);
                let _logs = trow_tests::clients::LogsOnPanic::trow(&t);
                super::$scenario(&t.addr);
            }

            #[test]
            #[ignore = "reference run against CNCF distribution"]
            fn distribution() {
                let d = trow_tests::Distribution::start();
                let _logs = trow_tests::clients::LogsOnPanic::distribution(&d);
                super::$scenario(&d.addr);
            }
        }
    };
}

against_registries!(skopeo_copy);
against_registries!(podman_push_pull);
against_registries!(containerd_pull_push);

/// `skopeo copy` to the registry of `src` (a transport reference) to `docker://dst`.
fn copy_in(src: &str, dst: &str, extra: &[&str]) {
    let mut cmd = skopeo(["copy", "--dest-tls-verify=false"]);
    cmd.args(extra).arg(src).arg(format!("docker://{dst}"));
    run(&mut cmd);
}

/// `skopeo copy` from `docker://src` to `dst` (a transport reference).
fn copy_out(src: &str, dst: &str, extra: &[&str]) {
    let mut cmd = skopeo(["copy", "--src-tls-verify=false"]);
    cmd.args(extra).arg(format!("docker://{src}")).arg(dst);
    run(&mut cmd);
}

/// The registry serves exactly `expected` for `reference`, by tag and by digest.
fn assert_served_manifest(addr: &str, repo: &str, tag: &str, expected: &[u8]) {
    let digest = sha256_digest(expected);
    let by_tag = registry_raw_manifest(&format!("{addr}/{repo}:{tag}"));
    assert_eq!(
        sha256_digest(&by_tag),
        digest,
        "{addr}/{repo}:{tag} serves different manifest bytes:\n{}\nexpected:\n{}",
        String::from_utf8_lossy(&by_tag),
        String::from_utf8_lossy(expected)
    );
    let by_digest = registry_raw_manifest(&format!("{addr}/{repo}@{digest}"));
    assert_eq!(sha256_digest(&by_digest), digest, "{repo}@{digest}");
}

/// A copied-out layout holds `img` under `tag`, with all its blobs intact.
fn assert_layout_has_image(layout: &Path, img: &Image) {
    for d in img
        .layers
        .iter()
        .chain([&img.config_digest, &img.manifest_digest])
    {
        let p = layout
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap());
        assert!(p.exists(), "{} missing after copy-out", p.display());
    }
}

fn skopeo_copy(addr: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // A layer of several MiB, so clients upload it in more than one write.
    let img = images::build_image_sized(&src, "single", "amd64", 12 << 20);
    let idx = images::build_index(&src, "multi");

    // Single image, digests preserved.
    let repo = "clients/skopeo/single";
    copy_in(
        &img.oci_ref(),
        &format!("{addr}/{repo}:v1"),
        &["--all", "--preserve-digests"],
    );
    assert_served_manifest(addr, repo, "v1", &img.manifest_bytes());
    let out = tmp.path().join("out-single");
    copy_out(
        &format!("{addr}/{repo}:v1"),
        &format!("oci:{}:v1", out.display()),
        &["--all", "--preserve-digests"],
    );
    assert_eq!(layout_tag_digest(&out, "v1"), img.manifest_digest);
    assert_layout_has_image(&out, &img);
    assert_layout_blobs_intact(&out);

    // Two-platform index, every child manifest preserved.
    let repo = "clients/skopeo/multi";
    copy_in(
        &idx.oci_ref(),
        &format!("{addr}/{repo}:v1"),
        &["--all", "--preserve-digests"],
    );
    assert_index_served(addr, repo, "v1", &idx);
    let out = tmp.path().join("out-multi");
    copy_out(
        &format!("{addr}/{repo}:v1"),
        &format!("oci:{}:v1", out.display()),
        &["--all", "--preserve-digests"],
    );
    assert_eq!(layout_tag_digest(&out, "v1"), idx.index_digest);
    for child in &idx.images {
        assert_layout_has_image(&out, child);
    }
    assert_layout_blobs_intact(&out);

    // Registry to registry, into another repository: skopeo tries cross-repository blob mounts.
    let mounted = "clients/skopeo/mounted";
    let mut cmd = skopeo([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
    ]);
    cmd.arg(format!("docker://{addr}/{repo}:v1"))
        .arg(format!("docker://{addr}/{mounted}:v2"));
    run(&mut cmd);
    assert_index_served(addr, mounted, "v2", &idx);

    // Docker v2 schema 2: skopeo converts the manifest; the registry must keep its bytes.
    let repo = "clients/skopeo/v2s2";
    let digestfile = tmp.path().join("v2s2.digest");
    copy_in(
        &img.oci_ref(),
        &format!("{addr}/{repo}:v1"),
        &[
            "--format",
            "v2s2",
            "--digestfile",
            &digestfile.to_string_lossy(),
        ],
    );
    let pushed = std::fs::read_to_string(&digestfile).unwrap();
    let raw = registry_raw_manifest(&format!("{addr}/{repo}:v1"));
    assert_eq!(sha256_digest(&raw), pushed.trim(), "v2s2 digest");
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], DOCKER_V2S2, "{m}");
    let dir = tmp.path().join("out-v2s2");
    copy_out(
        &format!("{addr}/{repo}:v1"),
        &format!("dir:{}", dir.display()),
        &[],
    );
    let copied = std::fs::read(dir.join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&copied), pushed.trim(), "v2s2 copied out");

    // Tags, as skopeo lists them.
    copy_in(
        &img.oci_ref(),
        &format!("{addr}/{repo}:v2"),
        &["--format", "v2s2"],
    );
    assert_eq!(list_tags(addr, repo), ["v1", "v2"]);
    assert_eq!(
        sha256_digest(&registry_raw_manifest(&format!("{addr}/{repo}:v2"))),
        pushed.trim(),
        "the same conversion twice gives the same manifest"
    );

    // skopeo delete resolves the tag and deletes the manifest by digest: both tags go.
    run(&mut skopeo([
        "delete",
        "--tls-verify=false",
        &format!("docker://{addr}/{repo}:v1"),
    ]));
    let mut cmd = skopeo([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{addr}/{repo}:v1"),
    ]);
    let out = output(&mut cmd);
    assert!(
        !out.status.success(),
        "deleted manifest still served: {}",
        describe(&cmd, &out)
    );
    let mut cmd = skopeo([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{addr}/{repo}:v2"),
    ]);
    let out = output(&mut cmd);
    assert!(
        !out.status.success(),
        "tag v2 of the deleted manifest still served: {}",
        describe(&cmd, &out)
    );
    // Other repositories are untouched.
    assert_served_manifest(addr, "clients/skopeo/single", "v1", &img.manifest_bytes());
}

/// `skopeo list-tags`, sorted.
fn list_tags(addr: &str, repo: &str) -> Vec<String> {
    let out = run(&mut skopeo([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{addr}/{repo}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("list-tags JSON");
    let mut tags: Vec<String> = v["Tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no Tags in {v}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

/// The registry serves `idx` under `repo:tag` and each child manifest by digest.
fn assert_index_served(addr: &str, repo: &str, tag: &str, idx: &Index) {
    let bytes = idx.index_bytes();
    assert_served_manifest(addr, repo, tag, &bytes);
    let served: serde_json::Value =
        serde_json::from_slice(&registry_raw_manifest(&format!("{addr}/{repo}:{tag}"))).unwrap();
    assert_eq!(served["mediaType"], INDEX_MEDIA_TYPE);
    for child in &idx.images {
        let raw = registry_raw_manifest(&format!("{addr}/{repo}@{}", child.manifest_digest));
        assert_eq!(
            raw,
            child.manifest_bytes(),
            "{repo}@{}",
            child.manifest_digest
        );
    }
}

fn podman_push_pull(addr: &str) {
    // podman names an image pulled from `oci:PATH` after PATH, which must then be a valid
    // (lowercase, no leading dot) repository name.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            "trow-podman-{:016x}",
            images::Rng::new().next_u64()
        ))
        .rand_bytes(0)
        .tempdir()
        .unwrap();
    let img = images::build_image(&tmp.path().join("src"), "podman", "amd64");
    let p = Podman::new();

    let pulled = p.run(["pull", &img.oci_ref()]);
    let id = pulled.lines().last().unwrap_or("").trim().to_string();
    assert_eq!(
        format!("sha256:{id}"),
        img.config_digest,
        "image ID from the layout"
    );

    let reference = format!("{addr}/clients/podman/img:v1");
    p.run(["tag", &id, &reference]);
    let digestfile = p.path("pushed.digest");
    p.run([
        "push",
        "--tls-verify=false",
        "--digestfile",
        &digestfile.to_string_lossy(),
        &reference,
    ]);
    let pushed = std::fs::read_to_string(&digestfile)
        .unwrap()
        .trim()
        .to_string();
    let raw = registry_raw_manifest(&reference);
    assert_eq!(
        sha256_digest(&raw),
        pushed,
        "served manifest vs pushed digest"
    );
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["config"]["digest"], img.config_digest.as_str(), "{m}");

    // Forget the image, then pull it back by tag.
    p.run(["rmi", "--all", "--force"]);
    assert_eq!(p.run(["images", "--quiet"]).trim(), "", "rmi left images");
    p.run(["pull", "--tls-verify=false", &reference]);
    let info = p.run([
        "image",
        "inspect",
        "--format",
        "{{.ID}} {{.Digest}}",
        &reference,
    ]);
    assert_eq!(info.trim(), format!("{id} {pushed}"), "pulled by tag");

    // And by digest.
    p.run(["rmi", "--all", "--force"]);
    let by_digest = format!("{addr}/clients/podman/img@{pushed}");
    p.run(["pull", "--tls-verify=false", &by_digest]);
    let info = p.run(["image", "inspect", "--format", "{{.ID}}", &by_digest]);
    assert_eq!(info.trim(), id, "pulled by digest");

    // A second push of the same image elsewhere: every blob already exists in the registry.
    let second = format!("{addr}/clients/podman/other:v2");
    p.run([
        "push",
        "--tls-verify=false",
        &by_digest,
        &format!("docker://{second}"),
    ]);
    assert_eq!(
        sha256_digest(&registry_raw_manifest(&second)),
        sha256_digest(&raw),
        "second push"
    );

    // A manifest list assembled by podman from two single-platform images, pushed as an OCI index
    // with its images.
    let idx = images::build_index(&tmp.path().join("src"), "multi");
    p.run(["manifest", "create", "trow-list"]);
    for child in &idx.images {
        p.run(["manifest", "add", "trow-list", &child.oci_ref()]);
    }
    let list = format!("{addr}/clients/podman/list:v1");
    let digestfile = p.path("list.digest");
    p.run([
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "--format",
        "oci",
        "--digestfile",
        &digestfile.to_string_lossy(),
        "trow-list",
        &format!("docker://{list}"),
    ]);
    let pushed = std::fs::read_to_string(&digestfile).unwrap();
    let raw = registry_raw_manifest(&list);
    assert_eq!(sha256_digest(&raw), pushed.trim(), "pushed list digest");
    let served: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(served["mediaType"], INDEX_MEDIA_TYPE, "{served}");
    for child in &idx.images {
        assert!(
            served["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["digest"] == child.manifest_digest.as_str()),
            "{} not in the pushed list: {served}",
            child.manifest_digest
        );
        let by_digest = format!("{addr}/clients/podman/list@{}", child.manifest_digest);
        assert_eq!(registry_raw_manifest(&by_digest), child.manifest_bytes());
    }
    // podman picks the platform it is asked for out of the index.
    p.run(["rmi", "--all", "--force"]);
    p.run(["pull", "--tls-verify=false", "--arch", "arm64", &list]);
    let info = p.run([
        "image",
        "inspect",
        "--format",
        "{{.ID}} {{.Architecture}}",
        &list,
    ]);
    let arm = &idx.images[1];
    assert_eq!(arm.architecture, "arm64");
    assert_eq!(
        info.trim(),
        format!(
            "{} arm64",
            arm.config_digest.strip_prefix("sha256:").unwrap()
        )
    );
}

fn containerd_pull_push(addr: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let img = images::build_image_sized(&src, "single", "amd64", 12 << 20);
    let idx = images::build_index(&src, "multi");
    let single = format!("{addr}/clients/ctr/single:v1");
    let multi = format!("{addr}/clients/ctr/multi:v1");
    copy_in(&img.oci_ref(), &single, &["--preserve-digests"]);
    copy_in(&idx.oci_ref(), &multi, &["--all", "--preserve-digests"]);

    let c = Containerd::start();

    // Single-platform image: fetched and unpacked.
    c.run(["images", "pull", "--plain-http", &single]);
    let got = c.image(&single);
    assert_eq!(got.digest, img.manifest_digest, "{got:?}");
    assert_eq!(got.media_type, MANIFEST_MEDIA_TYPE, "{got:?}");

    // The index, all platforms.
    c.run(["images", "pull", "--plain-http", "--all-platforms", &multi]);
    let got = c.image(&multi);
    assert_eq!(got.digest, idx.index_digest, "{got:?}");
    assert_eq!(got.media_type, INDEX_MEDIA_TYPE, "{got:?}");
    assert!(
        got.platforms.contains("linux/amd64") && got.platforms.contains("linux/arm64"),
        "{got:?}"
    );
    let content = c.run(["content", "ls", "--quiet"]);
    for child in &idx.images {
        for d in child
            .layers
            .iter()
            .chain([&child.config_digest, &child.manifest_digest])
        {
            assert!(
                content.contains(d.as_str()),
                "{d} not in content store:\n{content}"
            );
        }
    }

    // The index by digest, one platform.
    let by_digest = format!("{addr}/clients/ctr/multi@{}", idx.index_digest);
    c.run([
        "images",
        "pull",
        "--plain-http",
        "--platform",
        "linux/arm64",
        &by_digest,
    ]);
    assert_eq!(c.image(&by_digest).digest, idx.index_digest);

    // containerd's own pusher, into new repositories.
    for (from, to, digest) in [
        (
            &single,
            "clients/ctr/pushed-single:v1",
            &img.manifest_digest,
        ),
        (&multi, "clients/ctr/pushed-multi:v1", &idx.index_digest),
    ] {
        let to = format!("{addr}/{to}");
        c.run(["images", "tag", from.as_str(), &to]);
        c.run(["images", "push", "--plain-http", &to]);
        let raw = registry_raw_manifest(&to);
        assert_eq!(&sha256_digest(&raw), digest, "{to} after ctr push");
    }
    assert_index_served(addr, "clients/ctr/pushed-multi", "v1", &idx);
}
