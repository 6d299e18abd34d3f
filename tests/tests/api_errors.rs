//! OCI Distribution API: bad input — the error body format, repository name validation
//! (including path segments an HTTP client would normalise), and malformed manifests.

use serde_json::json;
use trow_tests::Topology;
use trow_tests::oci::{OCI_MANIFEST, Reg, error_code_of, raw_request, send, to_bytes, with_query};
use trow_tests::sha256_digest;

#[tokio::test]
async fn error_body_is_oci_json() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("err/body");
    reg.push_image(&repo, "t", "body").await;
    let r = reg
        .get_m(&reg.v2(&format!("{repo}/manifests/nosuchtag")))
        .await;
    r.assert_error(404, "MANIFEST_UNKNOWN");
    let v = r.json();
    let errs = v["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 1, "{r}");
    let obj = errs[0].as_object().unwrap();
    assert!(obj["message"].is_string(), "{r}");
    for k in obj.keys() {
        assert!(
            ["code", "message", "detail"].contains(&k.as_str()),
            "unexpected key {k} in {r}"
        );
    }
    assert_eq!(
        r.header("docker-distribution-api-version").as_deref(),
        Some("registry/2.0"),
        "{r}"
    );
}

#[tokio::test]
async fn head_errors_have_no_body() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("err/head");
    reg.push_image(&repo, "t", "head").await;
    let d = sha256_digest(b"missing");
    for path in [
        format!("{repo}/manifests/missing"),
        format!("{repo}/manifests/{d}"),
        format!("{repo}/blobs/{d}"),
    ] {
        let r = reg.head_m(&reg.v2(&path)).await;
        r.assert_status(404);
        assert!(r.body.is_empty(), "HEAD error has a body: {r}");
    }
    // Also for an invalid name.
    let r = reg.head(&reg.v2(&format!("Upper/blobs/{d}"))).await;
    r.assert_status(400);
    assert!(r.body.is_empty(), "HEAD error has a body: {r}");
}

/// Names that break the spec's repository grammar (client-safe: nothing a URL parser rewrites).
fn invalid_names() -> Vec<String> {
    vec![
        "Upper".into(),
        "lower/Upper".into(),
        "a..b".into(),
        "a___b".into(),
        "_a".into(),
        "a-".into(),
        "-a".into(),
        "a.-b".into(),
        "a/.b".into(),
        "a:b".into(),
        "a@b".into(),
        "a%20b".into(),
        "x".repeat(256),
        format!("{}/{}", "y".repeat(200), "z".repeat(60)),
    ]
}

#[tokio::test]
async fn invalid_names_are_name_invalid_on_every_endpoint() {
    let reg = Reg::start(Topology::OneProcess);
    let d = sha256_digest(b"x");
    for name in invalid_names() {
        let base = reg.v2(&name);
        reg.get_m(&format!("{base}/manifests/latest"))
            .await
            .assert_error(400, "NAME_INVALID");
        reg.get(&format!("{base}/blobs/{d}"))
            .await
            .assert_error(400, "NAME_INVALID");
        reg.get(&format!("{base}/tags/list"))
            .await
            .assert_error(400, "NAME_INVALID");
        reg.start_upload(&name)
            .await
            .assert_error(400, "NAME_INVALID");
        reg.put_manifest(&name, "latest", OCI_MANIFEST, b"{}")
            .await
            .assert_error(400, "NAME_INVALID");
        reg.get(&format!("{base}/referrers/{d}"))
            .await
            .assert_error(400, "NAME_INVALID");
    }
}

#[tokio::test]
async fn valid_edge_case_names_are_accepted() {
    let reg = Reg::start(Topology::OneProcess);
    let max = format!("{}/{}", "m".repeat(127), "n".repeat(127));
    assert_eq!(max.len(), 255);
    for name in [
        "a",
        "a__b",
        "a---b",
        "a.b_c-d/e",
        "0/1/2/3/4/5",
        "x.y.z",
        max.as_str(),
    ] {
        let repo = reg.repo(name);
        if repo.len() > 255 {
            continue;
        }
        let (d, _) = reg.push_image(&repo, "t", name).await;
        reg.get_m(&reg.v2(&format!("{repo}/manifests/{d}")))
            .await
            .assert_status(200);
        let r = reg.get(&reg.v2(&format!("{repo}/tags/list"))).await;
        r.assert_status(200);
        assert_eq!(r.json()["name"], repo.as_str());
    }
}

#[tokio::test]
async fn dot_dot_path_segments_are_name_invalid() {
    let reg = Reg::start(Topology::OneProcess);
    // Make sure the target names exist, so a traversal would find something.
    reg.push_image(&reg.repo("b"), "latest", "dotdot-b").await;
    for path in [
        "/v2/a/../b/tags/list",
        "/v2/../b/tags/list",
        "/v2/a/../b/manifests/latest",
        "/v2/a/./b/tags/list",
        "/v2/a/%2e%2e/b/tags/list",
    ] {
        let (status, body) = raw_request(&reg.url, "GET", path).await;
        assert_eq!(status, 400, "GET {path}: {body}");
        assert_eq!(
            error_code_of(&body).as_deref(),
            Some("NAME_INVALID"),
            "GET {path}: {body}"
        );
    }
    let (status, _) = raw_request(&reg.url, "POST", "/v2/x/../y/blobs/uploads/").await;
    assert_eq!(status, 400, "POST with .. segment");
}

#[tokio::test]
async fn malformed_manifest_content_is_manifest_invalid() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("err/manifest");
    let m = reg.image_manifest(&repo, "valid").await;
    let cases = [
        // Valid JSON, but not a manifest.
        json!({}),
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST}),
        // A layer with a malformed digest.
        {
            let mut x = m.clone();
            x["layers"][0]["digest"] = json!("sha256:nothex");
            x
        },
        // A config that is not a descriptor.
        {
            let mut x = m.clone();
            x["config"] = json!("config");
            x
        },
    ];
    for c in &cases {
        let r = reg
            .put_manifest(&repo, "bad", OCI_MANIFEST, &to_bytes(c))
            .await;
        r.assert_error(400, "MANIFEST_INVALID");
    }
    reg.head_m(&reg.v2(&format!("{repo}/manifests/bad")))
        .await
        .assert_status(404);
    // The valid one goes through.
    let r = reg
        .put_manifest(&repo, "good", OCI_MANIFEST, &to_bytes(&m))
        .await;
    r.assert_status(201);
}

#[tokio::test]
async fn malformed_digest_references_are_rejected() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("err/digestref");
    let (_, body) = reg.push_image(&repo, "t", "digestref").await;
    // A reference with a ':' is a digest and must be a valid one.
    let r = reg
        .put_manifest(&repo, "sha256:abc", OCI_MANIFEST, &body)
        .await;
    r.assert_status(400);
    let r = send(
        reg.client
            .put(reg.v2(&format!("{repo}/manifests/sha256:{}", "A".repeat(64))))
            .header("Content-Type", OCI_MANIFEST)
            .body(body.clone()),
    )
    .await;
    r.assert_status(400);
}

#[tokio::test]
async fn errors_in_split_topology_keep_their_codes() {
    let reg = Reg::start(Topology::Split);
    let repo = reg.repo("err/split");
    reg.push_image(&repo, "t", "split").await;
    let d = sha256_digest(b"missing");
    reg.get_m(&reg.v2(&format!("{repo}/manifests/none")))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    reg.get(&reg.v2(&format!("{repo}/blobs/{d}")))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    reg.get(&reg.v2(&format!("{repo}/blobs/uploads/nosuch")))
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    reg.get(&reg.v2(&format!("{}/tags/list", reg.repo("err/none"))))
        .await
        .assert_error(404, "NAME_UNKNOWN");
    reg.get(&reg.v2("Bad/tags/list"))
        .await
        .assert_error(400, "NAME_INVALID");
    reg.put_manifest(&repo, "x", OCI_MANIFEST, b"nope")
        .await
        .assert_error(400, "MANIFEST_INVALID");
    let missing = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": 7},
        "layers": [],
    });
    reg.put_manifest(&repo, "x", OCI_MANIFEST, &to_bytes(&missing))
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    let loc = reg.upload_location(&repo).await;
    send(
        reg.client
            .put(with_query(
                &loc,
                &format!("digest={}", sha256_digest(b"other")),
            ))
            .body(b"data".to_vec()),
    )
    .await
    .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn malformed_digests_in_paths_are_digest_invalid() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("err/pathdigest");
    reg.push_image(&repo, "t", "pathdigest").await;
    let hex = "a".repeat(64);
    for d in [
        "sha256:xyz".to_string(),
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{}", hex.to_uppercase()),
        "notadigest".to_string(),
    ] {
        reg.get(&reg.v2(&format!("{repo}/blobs/{d}")))
            .await
            .assert_error(400, "DIGEST_INVALID");
        let h = reg.head(&reg.v2(&format!("{repo}/blobs/{d}"))).await;
        h.assert_status(400);
        assert!(h.body.is_empty(), "HEAD error has a body: {h}");
        reg.delete(&reg.v2(&format!("{repo}/blobs/{d}")))
            .await
            .assert_error(400, "DIGEST_INVALID");
        reg.get(&reg.v2(&format!("{repo}/referrers/{d}")))
            .await
            .assert_error(400, "DIGEST_INVALID");
        if d.contains(':') {
            // Without a ':' it would be a tag, and valid.
            reg.get_m(&reg.v2(&format!("{repo}/manifests/{d}")))
                .await
                .assert_error(400, "DIGEST_INVALID");
        }
    }
}

#[tokio::test]
async fn bad_pagination_parameters_are_400() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("err/paging");
    reg.push_image(&repo, "t", "paging").await;
    for q in ["n=abc", "n=-1", "n=1.5"] {
        let r = reg.get(&reg.v2(&format!("{repo}/tags/list?{q}"))).await;
        r.assert_status(400);
        r.error_codes();
        let r = reg.get(&reg.v2(&format!("_catalog?{q}"))).await;
        r.assert_status(400);
        r.error_codes();
    }
}
