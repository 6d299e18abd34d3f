//! Pre-warming: a pod admitted by the mutating webhook has its rewritten image filled into the
//! cache before any client pulls it, from a real upstream (CNCF distribution behind a counting
//! front); the pull that follows fetches no blob again; a dry run fetches nothing. Image
//! volumes are warmed like containers' images.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use trow_proto::storage::BlobRef;
use trow_proto::storage::storage_client::StorageClient;
use trow_tests::Topology;
use trow_tests::clients::{assert_layout_blobs_intact, layout_tag_digest, run, skopeo};
use trow_tests::images::{Image, build_image, read_blob};
use trow_tests::upstream::{ProxyConfig, Requests, Upstream};

use crate::support::{HOSTNAME, Webhooks, images_at, patch_of, patched, pod_create, spec};

/// Waits until storage has every blob of `img` in `repository`, or fails after 15 s with what
/// the upstream was asked.
async fn wait_stored(w: &Webhooks, reqs: &Requests, repository: &str, img: &Image) {
    let start = Instant::now();
    for d in blobs(img) {
        while !stored(&w.trow.storage_addr, repository, &d).await {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "blob {d} not pre-warmed after 15 s; the upstream got:\n{}\n{}",
                reqs.describe(),
                w.admission_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("pre-warmed in {:?}", start.elapsed());
}

/// Whether storage has blob `digest` linked into `repository` (a fill in progress does not
/// count): asked over storage's gRPC, which no proxy answer can fake.
async fn stored(storage: &str, repository: &str, digest: &str) -> bool {
    let ch = Channel::from_shared(format!("http://{storage}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to storage at {storage}: {e}"));
    let r = StorageClient::new(ch)
        .stat_blob(BlobRef {
            repository: repository.to_string(),
            digest: digest.to_string(),
        })
        .await;
    match r {
        Ok(_) => true,
        Err(s) if s.code() == tonic::Code::NotFound => false,
        Err(s) => panic!("StatBlob {repository} {digest}: {s:?}"),
    }
}

fn blobs(img: &Image) -> Vec<String> {
    let mut v = vec![img.config_digest.clone()];
    v.extend(img.layers.iter().cloned());
    v
}

/// Mutates a pod CREATE of `image`; returns the image the answer's patch puts in its place.
async fn mutate(w: &Webhooks, image: &str, dry_run: bool) -> String {
    let review = pod_create(spec(&[("app", image)], &[], &[]), dry_run);
    let r = w.send("mutate-image", &review).await;
    let patch = patch_of(&r).unwrap_or_else(|| panic!("{image} not rewritten: {r}"));
    images_at(&patched(&review["request"]["object"], &patch), "/spec").remove(0)
}

pub async fn admitted_pods_are_prewarmed(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let app = build_image(&tmp.path().join("app"), "1", "amd64");
    let other = build_image(&tmp.path().join("other"), "1", "amd64");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&app.oci_ref(), "team/app:1");
    up.push(&other.oci_ref(), "team/other:1");
    // configured_only: pre-warm can reach this upstream and nothing else.
    let yaml = ProxyConfig::new([up.entry()]).configured_only(true).yaml();
    let mut w = Webhooks::start(topology, &yaml, tmp.path());
    let reqs = up.requests();
    let (authority, cache_name) = (up.authority(), up.path_name());
    let storage = w.trow.storage_addr.clone();

    // A dry run is rewritten like any other but starts nothing.
    let dry_at = Instant::now();
    let to = mutate(&w, &format!("{authority}/team/other:1"), true).await;
    assert_eq!(to, format!("{HOSTNAME}/f/{cache_name}/team/other:1"));

    // An admitted pod: rewritten to the cache, and filled without any client asking.
    let to = mutate(&w, &format!("{authority}/team/app:1"), false).await;
    assert_eq!(to, format!("{HOSTNAME}/f/{cache_name}/team/app:1"));
    let cache_repo = format!("f/{cache_name}/team/app");
    wait_stored(&w, reqs, &cache_repo, &app).await;
    let start = Instant::now();
    while !w
        .admission_log()
        .contains("pre-warmed an admitted pod's image")
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}",
            w.admission_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for d in blobs(&app) {
        assert_eq!(reqs.blob_gets(&d), 1, "GETs of {d}:\n{}", reqs.describe());
    }

    // The kubelet's pull finds everything cached: no blob is fetched again.
    let out = tmp.path().join("pulled");
    let mut pull = skopeo([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--retry-times=0",
    ]);
    pull.arg(format!("docker://{}/{cache_repo}:1", w.trow.addr))
        .arg(format!("oci:{}:1", out.display()));
    run(&mut pull);
    assert_eq!(layout_tag_digest(&out, "1"), app.manifest_digest);
    assert_layout_blobs_intact(&out);
    for d in blobs(&app) {
        assert_eq!(read_blob(&out, &d), read_blob(&app.layout, &d), "blob {d}");
        assert_eq!(
            reqs.blob_gets(&d),
            1,
            "the pull fetched {d} again:\n{}",
            reqs.describe()
        );
    }

    // The dry run's image: nothing asked of the upstream, nothing stored, seconds later.
    let quiet = Duration::from_secs(3);
    if let Some(rest) = quiet.checked_sub(dry_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let asked: Vec<_> = reqs
        .all()
        .into_iter()
        .filter(|r| r.path().starts_with("/v2/team/other/"))
        .collect();
    assert!(
        asked.is_empty(),
        "a dry run fetched from the upstream:\n{}",
        trow_tests::upstream::describe(&asked)
    );
    let other_repo = format!("f/{cache_name}/team/other");
    for d in blobs(&other) {
        assert!(
            !stored(&storage, &other_repo, &d).await,
            "dry run stored {d}"
        );
    }

    trow_tests::fsck::stop_and_fsck(&mut w.trow);
}

/// An image volume (`volumes[].image.reference`) is rewritten and warmed like a container's
/// image.
pub async fn image_volumes_are_prewarmed(topology: Topology, ip: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let model = build_image(&tmp.path().join("model"), "1", "amd64");
    let up = Upstream::start(ip, 0);
    let _up_logs = up.logs_on_panic();
    up.push(&model.oci_ref(), "team/model:1");
    let yaml = ProxyConfig::new([up.entry()]).configured_only(true).yaml();
    let mut w = Webhooks::start(topology, &yaml, tmp.path());
    let reqs = up.requests();
    let (authority, cache_name) = (up.authority(), up.path_name());

    // The container's registry is not proxied (configured_only): only the volume is warmed.
    let mut s = spec(&[("app", "registry.k8s.io/pause:3.9")], &[], &[]);
    s["volumes"] = serde_json::json!([{"name": "model",
        "image": {"reference": format!("{authority}/team/model:1")}}]);
    let review = pod_create(s, false);
    let r = w.send("mutate-image", &review).await;
    let patch = patch_of(&r).unwrap_or_else(|| panic!("the volume was not rewritten: {r}"));
    let after = patched(&review["request"]["object"], &patch);
    assert_eq!(
        after["spec"]["volumes"][0]["image"]["reference"],
        format!("{HOSTNAME}/f/{cache_name}/team/model:1")
    );
    assert_eq!(
        after["spec"]["containers"][0]["image"],
        "registry.k8s.io/pause:3.9"
    );
    wait_stored(&w, reqs, &format!("f/{cache_name}/team/model"), &model).await;
    for d in blobs(&model) {
        assert_eq!(reqs.blob_gets(&d), 1, "GETs of {d}:\n{}", reqs.describe());
    }
    trow_tests::fsck::stop_and_fsck(&mut w.trow);
}
