//! OCI Distribution API: manifests — push by tag and digest for every supported media type,
//! pull (GET/HEAD) by tag and digest, validation of references and content, subjects, and
//! deletion by digest and by tag.

use serde_json::json;
use trow_tests::Topology;
use trow_tests::oci::{
    ACCEPT_ALL, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX,
    OCI_LAYER, OCI_MANIFEST, Reg, Resp, config_blob, desc, oci_index, oci_manifest, path_only, raw,
    send, to_bytes,
};
use trow_tests::sha256_digest;

/// Asserts a successful manifest PUT: 201, Location `/v2/<repo>/manifests/<digest>`,
/// Docker-Content-Digest `<digest>`.
fn assert_pushed(r: &Resp, repo: &str, digest: &str) {
    r.assert_status(201)
        .assert_header("docker-content-digest", digest);
    assert_eq!(
        path_only(&r.location_path()),
        format!("/v2/{repo}/manifests/{digest}"),
        "{r}"
    );
}

/// Asserts GET and HEAD of `reference` serve exactly `body` as `media_type`.
async fn assert_served(reg: &Reg, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
    let url = reg.v2(&format!("{repo}/manifests/{reference}"));
    let digest = sha256_digest(body);
    let g = reg.get_m(&url).await;
    g.assert_status(200)
        .assert_header("content-type", media_type)
        .assert_header("docker-content-digest", &digest)
        .assert_header("content-length", &body.len().to_string());
    assert!(
        g.body == body,
        "GET {reference}: body differs from what was pushed:\n{}\nvs\n{}",
        g.text(),
        String::from_utf8_lossy(body)
    );
    let h = reg.head_m(&url).await;
    h.assert_status(200)
        .assert_header("content-type", media_type)
        .assert_header("docker-content-digest", &digest)
        .assert_header("content-length", &body.len().to_string());
    assert!(h.body.is_empty(), "HEAD has a body: {h}");
}

#[tokio::test]
async fn oci_manifest_push_by_tag_and_pull_by_tag_and_digest() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/oci");
    let m = reg.image_manifest(&repo, "oci").await;
    // Pretty-printed with a trailing newline: the registry must keep the bytes, not re-encode.
    let mut body = serde_json::to_vec_pretty(&m).unwrap();
    body.extend_from_slice(b"\n");
    let d = sha256_digest(&body);
    let r = reg.put_manifest(&repo, "v1", OCI_MANIFEST, &body).await;
    assert_pushed(&r, &repo, &d);
    assert_served(&reg, &repo, "v1", OCI_MANIFEST, &body).await;
    assert_served(&reg, &repo, &d, OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn manifest_push_by_digest() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/bydigest");
    let m = reg.image_manifest(&repo, "bydigest").await;
    let body = to_bytes(&m);
    let d = sha256_digest(&body);
    let r = reg.put_manifest(&repo, &d, OCI_MANIFEST, &body).await;
    assert_pushed(&r, &repo, &d);
    assert_served(&reg, &repo, &d, OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn put_by_digest_not_matching_body_is_digest_invalid() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/digest-mismatch");
    let m = reg.image_manifest(&repo, "mismatch").await;
    let body = to_bytes(&m);
    let wrong = sha256_digest(b"not the manifest");
    let r = reg.put_manifest(&repo, &wrong, OCI_MANIFEST, &body).await;
    r.assert_error(400, "DIGEST_INVALID");
    for reference in [wrong, sha256_digest(&body)] {
        reg.head_m(&reg.v2(&format!("{repo}/manifests/{reference}")))
            .await
            .assert_status(404);
    }
}

#[tokio::test]
async fn oci_index_push_and_pull() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/index");
    let (d1, b1) = reg.push_image(&repo, "amd64-img", "amd64").await;
    let (d2, b2) = reg.push_image(&repo, "arm64-img", "arm64").await;
    let mut m1 = desc(OCI_MANIFEST, &d1, b1.len());
    m1["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut m2 = desc(OCI_MANIFEST, &d2, b2.len());
    m2["platform"] = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
    let body = to_bytes(&oci_index(&[m1, m2]));
    let d = sha256_digest(&body);
    let r = reg.put_manifest(&repo, "multi", OCI_INDEX, &body).await;
    assert_pushed(&r, &repo, &d);
    assert_served(&reg, &repo, "multi", OCI_INDEX, &body).await;
    assert_served(&reg, &repo, &d, OCI_INDEX, &body).await;
    // The children stay fetchable by digest with their own type.
    assert_served(&reg, &repo, &d1, OCI_MANIFEST, &b1).await;
}

#[tokio::test]
async fn docker_schema2_manifest_push_and_pull() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/docker");
    let config = config_blob("docker");
    let layer = b"docker layer".to_vec();
    let cd = reg.push_blob(&repo, &config).await;
    let ld = reg.push_blob(&repo, &layer).await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, &cd, config.len()),
        "layers": [desc(DOCKER_LAYER, &ld, layer.len())],
    });
    let body = serde_json::to_vec_pretty(&m).unwrap();
    let d = sha256_digest(&body);
    let r = reg
        .put_manifest(&repo, "latest", DOCKER_MANIFEST, &body)
        .await;
    assert_pushed(&r, &repo, &d);
    assert_served(&reg, &repo, "latest", DOCKER_MANIFEST, &body).await;
    assert_served(&reg, &repo, &d, DOCKER_MANIFEST, &body).await;
}

#[tokio::test]
async fn docker_manifest_list_push_and_pull() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/dockerlist");
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = config_blob(arch);
        let layer = format!("{arch} layer").into_bytes();
        let cd = reg.push_blob(&repo, &config).await;
        let ld = reg.push_blob(&repo, &layer).await;
        let m = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": desc(DOCKER_CONFIG, &cd, config.len()),
            "layers": [desc(DOCKER_LAYER, &ld, layer.len())],
        });
        let body = to_bytes(&m);
        let d = reg.push_manifest(&repo, arch, DOCKER_MANIFEST, &body).await;
        let mut c = desc(DOCKER_MANIFEST, &d, body.len());
        c["platform"] = json!({"architecture": arch, "os": "linux"});
        children.push(c);
    }
    let list = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": children,
    });
    let body = to_bytes(&list);
    let d = sha256_digest(&body);
    let r = reg.put_manifest(&repo, "latest", DOCKER_LIST, &body).await;
    assert_pushed(&r, &repo, &d);
    assert_served(&reg, &repo, "latest", DOCKER_LIST, &body).await;
    assert_served(&reg, &repo, &d, DOCKER_LIST, &body).await;
}

#[tokio::test]
async fn oci_manifest_without_media_type_field_uses_content_type() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/nomediatype");
    let mut m = reg.image_manifest(&repo, "nomt").await;
    m.as_object_mut().unwrap().remove("mediaType");
    let body = to_bytes(&m);
    assert!(
        !String::from_utf8_lossy(&body)
            .contains("\"mediaType\":\"application/vnd.oci.image.manifest")
    );
    let d = sha256_digest(&body);
    let r = reg.put_manifest(&repo, "t", OCI_MANIFEST, &body).await;
    assert_pushed(&r, &repo, &d);
    assert_served(&reg, &repo, "t", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn oci_index_without_media_type_field_uses_content_type() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/index-nomt");
    let (d1, b1) = reg.push_image(&repo, "child", "child").await;
    let mut idx = oci_index(&[desc(OCI_MANIFEST, &d1, b1.len())]);
    idx.as_object_mut().unwrap().remove("mediaType");
    let body = to_bytes(&idx);
    let d = sha256_digest(&body);
    let r = reg.put_manifest(&repo, "idx", OCI_INDEX, &body).await;
    assert_pushed(&r, &repo, &d);
    assert_served(&reg, &repo, "idx", OCI_INDEX, &body).await;
}

#[tokio::test]
async fn manifest_referencing_a_missing_blob_is_manifest_blob_unknown() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/missing-blob");
    let other = reg.repo("man/missing-blob-other");
    let config = config_blob("missing");
    let layer = b"present layer".to_vec();
    let cd = reg.push_blob(&repo, &config).await;
    let ld = reg.push_blob(&repo, &layer).await;
    let absent = b"absent layer".to_vec();
    let only_other = b"layer only in the other repo".to_vec();
    reg.push_blob(&other, &only_other).await;

    let cases = [
        // A missing layer.
        oci_manifest(
            desc(OCI_CONFIG, &cd, config.len()),
            &[
                desc(OCI_LAYER, &ld, layer.len()),
                desc(OCI_LAYER, &sha256_digest(&absent), absent.len()),
            ],
        ),
        // A missing config.
        oci_manifest(
            desc(OCI_CONFIG, &sha256_digest(b"no config"), 9),
            &[desc(OCI_LAYER, &ld, layer.len())],
        ),
        // A layer that exists, but in another repository.
        oci_manifest(
            desc(OCI_CONFIG, &cd, config.len()),
            &[desc(
                OCI_LAYER,
                &sha256_digest(&only_other),
                only_other.len(),
            )],
        ),
    ];
    for m in &cases {
        let body = to_bytes(m);
        let r = reg.put_manifest(&repo, "bad", OCI_MANIFEST, &body).await;
        r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
        reg.head_m(&reg.v2(&format!("{repo}/manifests/{}", sha256_digest(&body))))
            .await
            .assert_status(404);
    }
    reg.head_m(&reg.v2(&format!("{repo}/manifests/bad")))
        .await
        .assert_status(404);
}

#[tokio::test]
async fn index_referencing_a_missing_manifest_is_manifest_blob_unknown() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/index-missing");
    let other = reg.repo("man/index-missing-other");
    let (d1, b1) = reg.push_image(&repo, "here", "here").await;
    // A manifest pushed only to another repository.
    let (d2, b2) = reg.push_image(&other, "there", "there").await;
    for children in [
        vec![
            desc(OCI_MANIFEST, &d1, b1.len()),
            desc(OCI_MANIFEST, &d2, b2.len()),
        ],
        vec![desc(OCI_MANIFEST, &sha256_digest(b"no such manifest"), 100)],
    ] {
        let body = to_bytes(&oci_index(&children));
        let r = reg.put_manifest(&repo, "idx", OCI_INDEX, &body).await;
        r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    }
    reg.head_m(&reg.v2(&format!("{repo}/manifests/idx")))
        .await
        .assert_status(404);
}

#[tokio::test]
async fn invalid_json_is_manifest_invalid() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/invalid");
    reg.push_image(&repo, "exists", "exists").await;
    for body in [
        &b"{not json"[..],
        b"",
        b"[1,2,3]",
        b"\"a string\"",
        b"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"config\": 5",
    ] {
        let r = reg.put_manifest(&repo, "bad", OCI_MANIFEST, body).await;
        r.assert_error(400, "MANIFEST_INVALID");
    }
    reg.head_m(&reg.v2(&format!("{repo}/manifests/bad")))
        .await
        .assert_status(404);
}

#[tokio::test]
async fn manifest_over_4mib_is_413() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/huge");
    let mut m = reg.image_manifest(&repo, "huge").await;
    m["annotations"] = json!({"padding": "x".repeat(4 * 1024 * 1024 + 1)});
    let body = to_bytes(&m);
    assert!(body.len() > 4 * 1024 * 1024);
    let r = reg.put_manifest(&repo, "huge", OCI_MANIFEST, &body).await;
    r.assert_error(413, "MANIFEST_INVALID");
    reg.head_m(&reg.v2(&format!("{repo}/manifests/huge")))
        .await
        .assert_status(404);
    // Just under the limit is fine.
    let mut m = reg.image_manifest(&repo, "big").await;
    m["annotations"] = json!({"padding": ""});
    let base = to_bytes(&m).len();
    m["annotations"] = json!({"padding": "y".repeat(4 * 1024 * 1024 - base - 16)});
    let body = to_bytes(&m);
    assert!(body.len() < 4 * 1024 * 1024);
    let r = reg.put_manifest(&repo, "big", OCI_MANIFEST, &body).await;
    assert_pushed(&r, &repo, &sha256_digest(&body));
    assert_served(&reg, &repo, "big", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn manifest_with_subject_gets_oci_subject_header() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/subject");
    // The subject does not exist in the registry.
    let subject_digest = sha256_digest(b"a subject that was never pushed");
    let subject = desc(OCI_MANIFEST, &subject_digest, 1234);
    let empty = reg.push_empty_config(&repo).await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": empty,
        "layers": [empty],
        "subject": subject,
        "annotations": {"org.example.kind": "sbom"},
    });
    let body = to_bytes(&m);
    let d = sha256_digest(&body);
    let r = reg.put_manifest(&repo, &d, OCI_MANIFEST, &body).await;
    assert_pushed(&r, &repo, &d);
    r.assert_header("oci-subject", &subject_digest);
    assert_served(&reg, &repo, &d, OCI_MANIFEST, &body).await;

    // A manifest without a subject gets no OCI-Subject.
    let m = reg.image_manifest(&repo, "plain").await;
    let r = reg
        .put_manifest(&repo, "plain", OCI_MANIFEST, &to_bytes(&m))
        .await;
    r.assert_status(201);
    assert_eq!(r.header("oci-subject"), None, "{r}");
}

#[tokio::test]
async fn artifact_type_is_accepted() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/artifact");
    let payload = b"{\"sbom\":true}".to_vec();
    let pd = reg.push_blob(&repo, &payload).await;
    let empty = reg.push_empty_config(&repo).await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": empty,
        "layers": [desc("application/vnd.example.sbom.v1+json", &pd, payload.len())],
    });
    let body = to_bytes(&m);
    let d = sha256_digest(&body);
    let r = reg.put_manifest(&repo, "sbom", OCI_MANIFEST, &body).await;
    assert_pushed(&r, &repo, &d);
    assert_served(&reg, &repo, "sbom", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn unknown_manifest_is_404_manifest_unknown() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/unknown");
    reg.push_image(&repo, "exists", "exists").await;
    let d = sha256_digest(b"no such manifest");
    for reference in ["nosuchtag", d.as_str()] {
        let url = reg.v2(&format!("{repo}/manifests/{reference}"));
        reg.get_m(&url).await.assert_error(404, "MANIFEST_UNKNOWN");
        let h = reg.head_m(&url).await;
        h.assert_status(404);
        assert!(h.body.is_empty(), "HEAD error has a body: {h}");
        reg.delete(&url).await.assert_status(404);
    }
    // In a repository that does not exist at all.
    let url = reg.v2(&format!("{}/manifests/latest", reg.repo("man/nosuchrepo")));
    reg.get_m(&url)
        .await
        .assert_error_in(404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]);
}

#[tokio::test]
async fn delete_by_digest_removes_manifest_and_its_tags() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/delete");
    let (d, body) = reg.push_image(&repo, "one", "delete").await;
    reg.push_manifest(&repo, "two", OCI_MANIFEST, &body).await;
    let (keep, keep_body) = reg.push_image(&repo, "keep", "keep").await;
    reg.delete(&reg.v2(&format!("{repo}/manifests/{d}")))
        .await
        .assert_status(202);
    for reference in [d.as_str(), "one", "two"] {
        let url = reg.v2(&format!("{repo}/manifests/{reference}"));
        reg.get_m(&url).await.assert_error(404, "MANIFEST_UNKNOWN");
        reg.head_m(&url).await.assert_status(404);
    }
    assert_served(&reg, &repo, "keep", OCI_MANIFEST, &keep_body).await;
    assert_served(&reg, &repo, &keep, OCI_MANIFEST, &keep_body).await;
    reg.delete(&reg.v2(&format!("{repo}/manifests/{d}")))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/untag");
    let (d, body) = reg.push_image(&repo, "a", "untag").await;
    reg.push_manifest(&repo, "b", OCI_MANIFEST, &body).await;
    reg.delete(&reg.v2(&format!("{repo}/manifests/a")))
        .await
        .assert_status(202);
    reg.get_m(&reg.v2(&format!("{repo}/manifests/a")))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_served(&reg, &repo, &d, OCI_MANIFEST, &body).await;
    assert_served(&reg, &repo, "b", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn tag_moves_to_the_latest_push() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/retag");
    let (d1, b1) = reg.push_image(&repo, "latest", "first").await;
    let (d2, b2) = reg.push_image(&repo, "latest", "second").await;
    assert_ne!(d1, d2);
    assert_served(&reg, &repo, "latest", OCI_MANIFEST, &b2).await;
    // The old manifest is still there by digest.
    assert_served(&reg, &repo, &d1, OCI_MANIFEST, &b1).await;
    // Pushing identical content again is idempotent.
    let r = reg.put_manifest(&repo, "latest", OCI_MANIFEST, &b2).await;
    assert_pushed(&r, &repo, &d2);
}

#[tokio::test]
async fn tag_names_follow_the_spec_grammar() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/tags");
    let m = reg.image_manifest(&repo, "tags").await;
    let body = to_bytes(&m);
    let d = sha256_digest(&body);
    let longest = format!("a{}", "b".repeat(127));
    for good in ["_under", "v1.2.3-rc.1_x", "UPPER", "9", longest.as_str()] {
        let r = reg.put_manifest(&repo, good, OCI_MANIFEST, &body).await;
        assert_pushed(&r, &repo, &d);
        assert_served(&reg, &repo, good, OCI_MANIFEST, &body).await;
    }
    let too_long = "c".repeat(129);
    for bad in ["-dash", ".dot", "a+b", too_long.as_str()] {
        let r = reg.put_manifest(&repo, bad, OCI_MANIFEST, &body).await;
        r.assert_status(400);
    }
}

#[tokio::test]
async fn manifest_is_not_served_from_another_repo() {
    let reg = Reg::start(Topology::OneProcess);
    let a = reg.repo("man/scope-a");
    let b = reg.repo("man/scope-b");
    let (d, _) = reg.push_image(&a, "t", "scope").await;
    reg.push_image(&b, "t", "other").await;
    reg.get_m(&reg.v2(&format!("{b}/manifests/{d}")))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

async fn manifest_lifecycle(topology: Topology) {
    let reg = Reg::start(topology);
    let repo = reg.repo("split/man");
    let (d1, b1) = reg.push_image(&repo, "v1", "split1").await;
    let (d2, b2) = reg.push_image(&repo, "v2", "split2").await;
    let idx = to_bytes(&oci_index(&[
        desc(OCI_MANIFEST, &d1, b1.len()),
        desc(OCI_MANIFEST, &d2, b2.len()),
    ]));
    let di = sha256_digest(&idx);
    let r = reg.put_manifest(&repo, "multi", OCI_INDEX, &idx).await;
    assert_pushed(&r, &repo, &di);
    assert_served(&reg, &repo, "multi", OCI_INDEX, &idx).await;
    assert_served(&reg, &repo, &d1, OCI_MANIFEST, &b1).await;
    assert_served(&reg, &repo, "v2", OCI_MANIFEST, &b2).await;
    let bad = reg.put_manifest(&repo, "bad", OCI_MANIFEST, b"{nope").await;
    bad.assert_error(400, "MANIFEST_INVALID");
    reg.delete(&reg.v2(&format!("{repo}/manifests/v1")))
        .await
        .assert_status(202);
    reg.get_m(&reg.v2(&format!("{repo}/manifests/v1")))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    reg.delete(&reg.v2(&format!("{repo}/manifests/{di}")))
        .await
        .assert_status(202);
    reg.get_m(&reg.v2(&format!("{repo}/manifests/multi")))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn manifest_lifecycle_split() {
    manifest_lifecycle(Topology::Split).await;
}

#[tokio::test]
async fn manifest_lifecycle_one_process() {
    manifest_lifecycle(Topology::OneProcess).await;
}

#[tokio::test]
async fn accept_header_negotiation() {
    // Trow never converts manifests: it serves the stored type to any Accept that admits it
    // (none, a wildcard, or the type among others) and, like distribution, answers
    // MANIFEST_UNKNOWN to one that does not.
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("man/accept");
    let (d, body) = reg.push_image(&repo, "t", "accept").await;
    let idx = to_bytes(&oci_index(&[desc(OCI_MANIFEST, &d, body.len())]));
    let di = reg.push_manifest(&repo, "i", OCI_INDEX, &idx).await;
    for (reference, mt, b, dg) in [("t", OCI_MANIFEST, &body, &d), ("i", OCI_INDEX, &idx, &di)] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        // No Accept header at all.
        let r = raw(&reg.url, "GET", &path, &[]).await;
        assert_eq!(r.status, 200, "GET {path} without Accept: {r:?}");
        assert_eq!(r.header("content-type"), Some(mt), "{r:?}");
        assert_eq!(
            r.header("docker-content-digest"),
            Some(dg.as_str()),
            "{r:?}"
        );
        assert_eq!(r.body.as_bytes(), b.as_slice());
        let url = reg.v2(&format!("{repo}/manifests/{reference}"));
        let with_q = format!("{DOCKER_MANIFEST}; q=0.9, {mt}; q=0.5");
        for accept in ["*/*", "application/*", mt, ACCEPT_ALL, with_q.as_str()] {
            for head in [false, true] {
                let req = if head {
                    reg.client.head(&url)
                } else {
                    reg.client.get(&url)
                };
                let r = send(req.header("Accept", accept)).await;
                r.assert_status(200)
                    .assert_header("content-type", mt)
                    .assert_header("docker-content-digest", dg)
                    .assert_header("content-length", &b.len().to_string());
                if !head {
                    assert_eq!(&r.body, b);
                }
            }
        }
        // Accept split over several header lines.
        let r = send(
            reg.client
                .get(&url)
                .header("Accept", DOCKER_MANIFEST)
                .header("Accept", mt),
        )
        .await;
        r.assert_status(200).assert_header("content-type", mt);
        // An Accept that excludes the stored type.
        let r = send(reg.client.get(&url).header("Accept", DOCKER_LIST)).await;
        r.assert_error(404, "MANIFEST_UNKNOWN");
    }
}
