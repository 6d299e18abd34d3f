//! OCI Distribution API v1.1: the referrers API (`GET /v2/<name>/referrers/<digest>`).

use serde_json::{Value, json};
use trow_tests::Topology;
use trow_tests::oci::{
    OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Reg, Resp, desc, encode, oci_index, send, to_bytes,
};
use trow_tests::sha256_digest;

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG: &str = "application/vnd.example.signature.v1";

/// GETs the referrers of `subject` in `repo`, with an optional artifactType filter; asserts 200,
/// the index Content-Type and shape, and returns the response and its `manifests`.
async fn referrers(
    reg: &Reg,
    repo: &str,
    subject: &str,
    filter: Option<&str>,
) -> (Resp, Vec<Value>) {
    let mut url = reg.v2(&format!("{repo}/referrers/{subject}"));
    if let Some(f) = filter {
        url = format!("{url}?artifactType={}", encode(f));
    }
    let r = reg.get(&url).await;
    r.assert_status(200)
        .assert_header("content-type", OCI_INDEX);
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2, "{r}");
    assert_eq!(v["mediaType"], OCI_INDEX, "{r}");
    let ms = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests is not an array: {r}"))
        .clone();
    (r, ms)
}

/// The descriptor in `ms` with `digest`, or a panic listing them.
fn find<'a>(ms: &'a [Value], digest: &str) -> &'a Value {
    ms.iter()
        .find(|m| m["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not among referrers {ms:?}"))
}

fn digests(ms: &[Value]) -> Vec<String> {
    let mut d: Vec<String> = ms
        .iter()
        .map(|m| m["digest"].as_str().expect("digest").to_string())
        .collect();
    d.sort();
    d
}

#[tokio::test]
async fn referrers_lists_manifests_whose_subject_is_the_digest() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("ref/basic");
    let (sd, sb) = reg.push_image(&repo, "app", "subject").await;
    let subject = desc(OCI_MANIFEST, &sd, sb.len());
    let (sbom, sbom_size) = reg
        .push_referrer(
            &repo,
            &subject,
            Some(SBOM),
            "application/vnd.oci.empty.v1+json",
            json!({"org.example.sbom.format": "json", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"}),
        )
        .await;
    let (sig, sig_size) = reg
        .push_referrer(
            &repo,
            &subject,
            Some(SIG),
            "application/vnd.oci.empty.v1+json",
            json!({"org.example.sig": "abcd"}),
        )
        .await;
    // A manifest with a different subject is not listed.
    let (_other_subject_ref, _) = reg
        .push_referrer(
            &repo,
            &desc(OCI_MANIFEST, &sha256_digest(b"another subject"), 10),
            Some(SBOM),
            "application/vnd.oci.empty.v1+json",
            json!({}),
        )
        .await;

    let (_, ms) = referrers(&reg, &repo, &sd, None).await;
    let mut want = vec![sbom.clone(), sig.clone()];
    want.sort();
    assert_eq!(digests(&ms), want);

    let s = find(&ms, &sbom);
    assert_eq!(s["mediaType"], OCI_MANIFEST);
    assert_eq!(s["size"], sbom_size);
    assert_eq!(s["artifactType"], SBOM);
    assert_eq!(
        s["annotations"],
        json!({"org.example.sbom.format": "json", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    );
    let g = find(&ms, &sig);
    assert_eq!(g["mediaType"], OCI_MANIFEST);
    assert_eq!(g["size"], sig_size);
    assert_eq!(g["artifactType"], SIG);
    assert_eq!(g["annotations"], json!({"org.example.sig": "abcd"}));

    // The descriptors are right: each resolves to a manifest of that size.
    for m in &ms {
        let d = m["digest"].as_str().unwrap();
        let r = reg.get_m(&reg.v2(&format!("{repo}/manifests/{d}"))).await;
        r.assert_status(200);
        assert_eq!(r.body.len() as u64, m["size"].as_u64().unwrap());
    }
}

#[tokio::test]
async fn artifact_type_falls_back_to_config_media_type() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("ref/fallback");
    let subject_digest = sha256_digest(b"subject not pushed");
    let subject = desc(OCI_MANIFEST, &subject_digest, 321);
    let cfg_type = "application/vnd.example.config.v1+json";
    let (d, _) = reg
        .push_referrer(&repo, &subject, None, cfg_type, json!({"k": "v"}))
        .await;
    let (_, ms) = referrers(&reg, &repo, &subject_digest, None).await;
    assert_eq!(ms.len(), 1, "{ms:?}");
    assert_eq!(ms[0]["digest"], d);
    assert_eq!(ms[0]["artifactType"], cfg_type);
    // The filter matches on the effective artifact type.
    let (_, ms) = referrers(&reg, &repo, &subject_digest, Some(cfg_type)).await;
    assert_eq!(digests(&ms), [d]);
}

#[tokio::test]
async fn artifact_type_filter() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("ref/filter");
    let (sd, sb) = reg.push_image(&repo, "app", "filter").await;
    let subject = desc(OCI_MANIFEST, &sd, sb.len());
    let (sbom1, _) = reg
        .push_referrer(&repo, &subject, Some(SBOM), OCI_CONFIG, json!({"n": "1"}))
        .await;
    let (sbom2, _) = reg
        .push_referrer(&repo, &subject, Some(SBOM), OCI_CONFIG, json!({"n": "2"}))
        .await;
    let (sig, _) = reg
        .push_referrer(&repo, &subject, Some(SIG), OCI_CONFIG, json!({}))
        .await;

    let (r, ms) = referrers(&reg, &repo, &sd, Some(SBOM)).await;
    r.assert_header("oci-filters-applied", "artifactType");
    let mut want = vec![sbom1, sbom2];
    want.sort();
    assert_eq!(digests(&ms), want);
    assert!(ms.iter().all(|m| m["artifactType"] == SBOM));

    let (r, ms) = referrers(&reg, &repo, &sd, Some(SIG)).await;
    r.assert_header("oci-filters-applied", "artifactType");
    assert_eq!(digests(&ms), [sig]);

    let (r, ms) = referrers(&reg, &repo, &sd, Some("application/vnd.example.none")).await;
    r.assert_header("oci-filters-applied", "artifactType");
    assert!(ms.is_empty(), "{ms:?}");

    // No filter: no OCI-Filters-Applied.
    let (r, ms) = referrers(&reg, &repo, &sd, None).await;
    assert_eq!(ms.len(), 3);
    assert_eq!(r.header("oci-filters-applied"), None, "{r}");
}

#[tokio::test]
async fn unknown_subject_has_an_empty_list() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("ref/empty");
    let (sd, _) = reg.push_image(&repo, "app", "empty").await;
    // A subject with no referrers, and one that does not exist at all.
    for subject in [sd, sha256_digest(b"nothing here")] {
        let (_, ms) = referrers(&reg, &repo, &subject, None).await;
        assert!(ms.is_empty(), "{ms:?}");
    }
    // And in a repository that does not exist.
    let (_, ms) = referrers(
        &reg,
        &reg.repo("ref/nosuchrepo"),
        &sha256_digest(b"x"),
        None,
    )
    .await;
    assert!(ms.is_empty(), "{ms:?}");
}

#[tokio::test]
async fn deleting_a_referrer_removes_it_from_the_list() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("ref/delete");
    let (sd, sb) = reg.push_image(&repo, "app", "delete").await;
    let subject = desc(OCI_MANIFEST, &sd, sb.len());
    let (a, _) = reg
        .push_referrer(&repo, &subject, Some(SBOM), OCI_CONFIG, json!({}))
        .await;
    let (b, _) = reg
        .push_referrer(&repo, &subject, Some(SIG), OCI_CONFIG, json!({}))
        .await;
    let (_, ms) = referrers(&reg, &repo, &sd, None).await;
    assert_eq!(ms.len(), 2, "{ms:?}");
    reg.delete(&reg.v2(&format!("{repo}/manifests/{a}")))
        .await
        .assert_status(202);
    let (_, ms) = referrers(&reg, &repo, &sd, None).await;
    assert_eq!(digests(&ms), [b]);
}

#[tokio::test]
async fn referrers_are_scoped_to_the_repository() {
    let reg = Reg::start(Topology::OneProcess);
    let a = reg.repo("ref/scope-a");
    let b = reg.repo("ref/scope-b");
    let subject_digest = sha256_digest(b"shared subject");
    let subject = desc(OCI_MANIFEST, &subject_digest, 99);
    let (in_a, _) = reg
        .push_referrer(&a, &subject, Some(SBOM), OCI_CONFIG, json!({}))
        .await;
    let (in_b, _) = reg
        .push_referrer(&b, &subject, Some(SBOM), OCI_CONFIG, json!({}))
        .await;
    let (_, ms) = referrers(&reg, &a, &subject_digest, None).await;
    assert_eq!(digests(&ms), [in_a]);
    let (_, ms) = referrers(&reg, &b, &subject_digest, None).await;
    assert_eq!(digests(&ms), [in_b]);
}

#[tokio::test]
async fn index_with_subject_is_a_referrer() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("ref/index");
    let (sd, sb) = reg.push_image(&repo, "app", "index-subject").await;
    let (cd, cb) = reg.push_image(&repo, "child", "index-child").await;
    let mut idx = oci_index(&[desc(OCI_MANIFEST, &cd, cb.len())]);
    idx["artifactType"] = json!("application/vnd.example.bundle.v1");
    idx["subject"] = desc(OCI_MANIFEST, &sd, sb.len());
    idx["annotations"] = json!({"bundle": "yes"});
    let body = to_bytes(&idx);
    let d = sha256_digest(&body);
    let r = reg.put_manifest(&repo, &d, OCI_INDEX, &body).await;
    r.assert_status(201).assert_header("oci-subject", &sd);
    let (_, ms) = referrers(&reg, &repo, &sd, None).await;
    assert_eq!(ms.len(), 1, "{ms:?}");
    assert_eq!(ms[0]["digest"], d);
    assert_eq!(ms[0]["mediaType"], OCI_INDEX);
    assert_eq!(ms[0]["size"], body.len());
    assert_eq!(ms[0]["artifactType"], "application/vnd.example.bundle.v1");
    assert_eq!(ms[0]["annotations"], json!({"bundle": "yes"}));
}

#[tokio::test]
async fn referrer_pushed_by_tag_is_listed() {
    let reg = Reg::start(Topology::OneProcess);
    let repo = reg.repo("ref/tagged");
    let (sd, sb) = reg.push_image(&repo, "app", "tagged").await;
    let empty = reg.push_empty_config(&repo).await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIG,
        "config": empty,
        "layers": [empty],
        "subject": desc(OCI_MANIFEST, &sd, sb.len()),
    });
    let body = to_bytes(&m);
    let r = send(
        reg.client
            .put(reg.v2(&format!("{repo}/manifests/sig-tag")))
            .header("Content-Type", OCI_MANIFEST)
            .body(body.clone()),
    )
    .await;
    r.assert_status(201).assert_header("oci-subject", &sd);
    let (_, ms) = referrers(&reg, &repo, &sd, None).await;
    assert_eq!(digests(&ms), [sha256_digest(&body)]);
    assert_eq!(ms[0]["artifactType"], SIG);
}

async fn referrers_flow(topology: Topology) {
    let reg = Reg::start(topology);
    let repo = reg.repo("split/ref");
    let (sd, sb) = reg.push_image(&repo, "app", "split").await;
    let subject = desc(OCI_MANIFEST, &sd, sb.len());
    let (a, _) = reg
        .push_referrer(&repo, &subject, Some(SBOM), OCI_CONFIG, json!({"x": "y"}))
        .await;
    let (b, _) = reg
        .push_referrer(
            &repo,
            &subject,
            None,
            "application/vnd.example.cfg",
            json!({}),
        )
        .await;
    let (_, ms) = referrers(&reg, &repo, &sd, None).await;
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(digests(&ms), want);
    assert_eq!(find(&ms, &b)["artifactType"], "application/vnd.example.cfg");
    let (r, ms) = referrers(&reg, &repo, &sd, Some(SBOM)).await;
    r.assert_header("oci-filters-applied", "artifactType");
    assert_eq!(digests(&ms), [a.as_str()]);
    reg.delete(&reg.v2(&format!("{repo}/manifests/{a}")))
        .await
        .assert_status(202);
    let (_, ms) = referrers(&reg, &repo, &sd, None).await;
    assert_eq!(digests(&ms), [b]);
}

#[tokio::test]
async fn referrers_split() {
    referrers_flow(Topology::Split).await;
}

#[tokio::test]
async fn referrers_one_process() {
    referrers_flow(Topology::OneProcess).await;
}
