//! The store checker against real stores in temp dirs: a store built through `Store` is clean;
//! each corruption, made one at a time, is reported as exactly the expected problem.

use bytes::Bytes;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use trow_storage::backend::FsBackend;
use trow_storage::digest::Digest;
use trow_storage::fsck::{self, Problem, Report};
use trow_storage::{Limits, Store};

const HOUR: Duration = Duration::from_secs(3600);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What a test store holds, for building corruptions.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: Store<FsBackend>,
    layer: Digest,
    image: Digest,
    sig: Digest,
}

async fn push_blob(s: &Store<FsBackend>, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    let id = s.start_upload(repo, "").await.unwrap();
    let chunk = Bytes::copy_from_slice(data);
    s.append_upload(repo, &id, None, futures::stream::iter([Ok(chunk)]))
        .await
        .unwrap();
    s.complete_upload(repo, &id, &d.to_string()).await.unwrap();
    d
}

fn desc(media_type: &str, d: &Digest, size: usize) -> String {
    format!(r#"{{"mediaType":"{media_type}","digest":"{d}","size":{size}}}"#)
}

/// Two repositories: `app` with an image (tag v1), an index over it (tag multi) and a signature
/// referring to the image; `x/y` with a blob mounted from `app` and a sha512 blob.
async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = Store::open(FsBackend::new(&dir).unwrap(), Limits::default())
        .await
        .unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer_bytes = b"layer bytes";
    let cd = push_blob(&store, "app", config).await;
    let layer = push_blob(&store, "app", layer_bytes).await;
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        desc(
            "application/vnd.oci.image.config.v1+json",
            &cd,
            config.len()
        ),
        desc(
            "application/vnd.oci.image.layer.v1.tar",
            &layer,
            layer_bytes.len()
        ),
    );
    let image_meta = store
        .put_manifest("app", "v1", OCI_MANIFEST, image.clone().into())
        .await
        .unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        desc(
            OCI_MANIFEST,
            &Digest::parse(&image_meta.digest).unwrap(),
            image.len()
        )
    );
    store
        .put_manifest("app", "multi", OCI_INDEX, index.into())
        .await
        .unwrap();
    let empty = push_blob(&store, "app", b"{}").await;
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x-sig",
        "config":{},"layers":[],"subject":{},"annotations":{{"a":"b"}}}}"#,
        desc("application/vnd.oci.empty.v1+json", &empty, 2),
        desc(
            OCI_MANIFEST,
            &Digest::parse(&image_meta.digest).unwrap(),
            image.len()
        ),
    );
    let sig_d = Digest::sha256_of(sig.as_bytes());
    store
        .put_manifest("app", &sig_d.to_string(), OCI_MANIFEST, sig.into())
        .await
        .unwrap();
    store
        .mount_blob("x/y", &layer.to_string(), "app")
        .await
        .unwrap();
    let d512 = Digest::parse(&format!("sha512:{}", "0".repeat(128)))
        .unwrap()
        .of_same_kind(b"five-twelve");
    let id = store.start_upload("x/y", "sha512").await.unwrap();
    store
        .append_upload(
            "x/y",
            &id,
            None,
            futures::stream::iter([Ok(Bytes::from_static(b"five-twelve"))]),
        )
        .await
        .unwrap();
    store
        .complete_upload("x/y", &id, &d512.to_string())
        .await
        .unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        store,
        layer,
        image: Digest::parse(&image_meta.digest).unwrap(),
        sig: sig_d,
    }
}

async fn check(f: &Fixture, now: SystemTime) -> Report {
    fsck::check_dir(&f.dir, now).await.unwrap()
}

/// Asserts the report lists exactly `expected`, and that its lines say so.
fn assert_problems(report: &Report, expected: &[Problem]) {
    assert_eq!(report.problems, expected, "report:\n{}", lines(report));
}

fn lines(report: &Report) -> String {
    let mut s: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    s.push(report.summary());
    s.join("\n")
}

fn blob_path(f: &Fixture, d: &Digest) -> PathBuf {
    f.dir.join(trow_storage::layout::blob(d))
}

#[tokio::test]
async fn a_store_built_by_store_is_clean() {
    let f = fixture().await;
    let r = check(&f, SystemTime::now()).await;
    assert_problems(&r, &[]);
    // Blobs: config, layer, {} , image, index, sig, the sha512 one.
    assert_eq!(
        (
            r.counts.blobs,
            r.counts.repositories,
            r.counts.tags,
            r.counts.manifests
        ),
        (7, 2, 2, 3),
        "{}",
        lines(&r)
    );
    assert_eq!(
        r.summary(),
        "fsck: 7 blobs, 2 repositories, 2 tags checked; 0 problems"
    );
    // An upload in progress and a fresh temp file are writes in progress, not problems.
    f.store.start_upload("app", "").await.unwrap();
    std::fs::create_dir_all(f.dir.join("tmp")).unwrap();
    std::fs::write(f.dir.join("tmp/0f3c8c1e-5b1e-4d8e-9d8a-2f7c0e0b1a2c"), b"x").unwrap();
    assert_problems(&check(&f, SystemTime::now()).await, &[]);
}

#[tokio::test]
async fn a_flipped_byte_in_a_blob() {
    let f = fixture().await;
    let p = blob_path(&f, &f.layer);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[3] ^= 0x20;
    std::fs::write(&p, &bytes).unwrap();
    assert_problems(
        &check(&f, SystemTime::now()).await,
        &[Problem::BlobCorrupt {
            key: trow_storage::layout::blob(&f.layer),
            actual: Digest::sha256_of(&bytes),
        }],
    );
}

#[tokio::test]
async fn a_blob_in_the_wrong_directory() {
    let f = fixture().await;
    let hex = &f.layer.hex;
    let wrong = if &hex[..2] == "00" { "01" } else { "00" };
    let to = f.dir.join(format!("blobs/sha256/{wrong}/{hex}"));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(blob_path(&f, &f.layer), &to).unwrap();
    assert_problems(
        &check(&f, SystemTime::now()).await,
        &[Problem::BlobMisplaced {
            key: format!("blobs/sha256/{wrong}/{hex}"),
        }],
    );
}

#[tokio::test]
async fn a_deleted_blob_a_manifest_needs() {
    let f = fixture().await;
    std::fs::remove_file(blob_path(&f, &f.layer)).unwrap();
    let r = check(&f, SystemTime::now()).await;
    assert_problems(
        &r,
        &[
            Problem::ManifestBlobMissing {
                repository: "app".into(),
                manifest: f.image.clone(),
                blob: f.layer.clone(),
            },
            Problem::LinkDangling {
                repository: "app".into(),
                blob: f.layer.clone(),
            },
            Problem::LinkDangling {
                repository: "x/y".into(),
                blob: f.layer.clone(),
            },
        ],
    );
    assert!(
        lines(&r).contains(&format!("references blob {}, missing from blobs/", f.layer)),
        "{}",
        lines(&r)
    );
}

#[tokio::test]
async fn an_unlinked_blob_a_manifest_needs() {
    let f = fixture().await;
    f.store
        .delete_blob("app", &f.layer.to_string())
        .await
        .unwrap();
    assert_problems(
        &check(&f, SystemTime::now()).await,
        &[Problem::ManifestBlobNotLinked {
            repository: "app".into(),
            manifest: f.image.clone(),
            blob: f.layer.clone(),
        }],
    );
}

#[tokio::test]
async fn a_tag_pointing_at_a_missing_manifest() {
    let f = fixture().await;
    let ghost = Digest::sha256_of(b"no such manifest");
    std::fs::write(
        f.dir.join("repositories/app/_tags/ghost"),
        ghost.to_string(),
    )
    .unwrap();
    std::fs::write(f.dir.join("repositories/app/_tags/junk"), "not a digest").unwrap();
    assert_problems(
        &check(&f, SystemTime::now()).await,
        &[
            Problem::TagDangling {
                repository: "app".into(),
                tag: "ghost".into(),
                digest: ghost,
            },
            Problem::TagInvalid {
                repository: "app".into(),
                tag: "junk".into(),
                content: "not a digest".into(),
            },
        ],
    );
}

#[tokio::test]
async fn a_missing_child_manifest_and_missing_manifest_bytes() {
    let f = fixture().await;
    // The image's record goes: the index's child is gone, and tag v1 dangles.
    let record = f.dir.join(trow_storage::layout::manifest("app", &f.image));
    std::fs::remove_file(&record).unwrap();
    let r = check(&f, SystemTime::now()).await;
    assert!(
        r.problems.contains(&Problem::TagDangling {
            repository: "app".into(),
            tag: "v1".into(),
            digest: f.image.clone(),
        }),
        "{}",
        lines(&r)
    );
    assert!(
        r.problems.iter().any(|p| matches!(p,
            Problem::ManifestChildMissing { child, .. } if child == &f.image)),
        "{}",
        lines(&r)
    );
    // The signature's subject no longer has a record: its entry is still a valid referrer
    // (referrers may precede their subject), so that alone is no problem.
    assert_eq!(r.problems.len(), 2, "{}", lines(&r));

    let f = fixture().await;
    std::fs::remove_file(blob_path(&f, &f.sig)).unwrap();
    assert_problems(
        &check(&f, SystemTime::now()).await,
        &[Problem::ManifestBytesMissing {
            repository: "app".into(),
            digest: f.sig.clone(),
        }],
    );
}

#[tokio::test]
async fn a_dangling_referrer_entry() {
    let f = fixture().await;
    let record = f.dir.join(trow_storage::layout::manifest("app", &f.sig));
    std::fs::remove_file(record).unwrap();
    assert_problems(
        &check(&f, SystemTime::now()).await,
        &[Problem::ReferrerDangling {
            repository: "app".into(),
            subject: f.image.clone(),
            referrer: f.sig.clone(),
        }],
    );
}

#[tokio::test]
async fn a_referrer_entry_that_disagrees_and_a_missing_one() {
    let f = fixture().await;
    let entry = f
        .dir
        .join(trow_storage::layout::referrer("app", &f.image, &f.sig));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
    v["artifactType"] = "application/x-other".into();
    v["size"] = 1.into();
    std::fs::write(&entry, serde_json::to_vec(&v).unwrap()).unwrap();
    let r = check(&f, SystemTime::now()).await;
    let fields: Vec<&str> = r
        .problems
        .iter()
        .map(|p| match p {
            Problem::ReferrerMismatch {
                field, referrer, ..
            } if referrer == &f.sig => *field,
            other => panic!("unexpected problem {other}"),
        })
        .collect();
    assert_eq!(fields, ["size", "artifactType"], "{}", lines(&r));

    std::fs::remove_file(&entry).unwrap();
    assert_problems(
        &check(&f, SystemTime::now()).await,
        &[Problem::ReferrerMissing {
            repository: "app".into(),
            subject: f.image.clone(),
            manifest: f.sig.clone(),
        }],
    );
}

#[tokio::test]
async fn a_stale_upload_and_an_incomplete_one() {
    let f = fixture().await;
    let id = f.store.start_upload("app", "").await.unwrap();
    let now = SystemTime::now();
    // Within the sweep's 24 h: an upload a client may still resume.
    assert_problems(&check(&f, now + 23 * HOUR).await, &[]);
    let r = check(&f, now + 25 * HOUR).await;
    assert!(
        matches!(r.problems.as_slice(),
            [Problem::UploadStale { id: got, age }] if got == &id && *age > 24 * HOUR),
        "{}",
        lines(&r)
    );

    let f = fixture().await;
    let id = f.store.start_upload("app", "").await.unwrap();
    std::fs::remove_file(f.dir.join(format!("uploads/{id}/data"))).unwrap();
    let now = SystemTime::now();
    // A record written a moment before its data file: fine within the grace.
    assert_problems(&check(&f, now).await, &[]);
    let r = check(&f, now + 2 * HOUR).await;
    assert!(
        matches!(r.problems.as_slice(),
            [Problem::UploadIncomplete { id: got, missing: "data", .. }] if got == &id),
        "{}",
        lines(&r)
    );
}

#[tokio::test]
async fn stale_temp_files_new_and_legacy() {
    let f = fixture().await;
    std::fs::create_dir_all(f.dir.join("tmp")).unwrap();
    let uuid = "0f3c8c1e-5b1e-4d8e-9d8a-2f7c0e0b1a2c";
    std::fs::write(f.dir.join("tmp").join(uuid), b"half").unwrap();
    let legacy = format!(".tmp-{uuid}");
    std::fs::write(f.dir.join("repositories/app/_tags").join(&legacy), b"x").unwrap();
    let now = SystemTime::now();
    assert_problems(&check(&f, now).await, &[]);
    let r = check(&f, now + 2 * HOUR).await;
    let keys: Vec<&str> = r
        .problems
        .iter()
        .map(|p| match p {
            Problem::TempStale { key, .. } => key.as_str(),
            other => panic!("unexpected problem {other}"),
        })
        .collect();
    assert_eq!(
        keys,
        [
            format!("tmp/{uuid}"),
            format!("repositories/app/_tags/{legacy}")
        ],
        "{}",
        lines(&r)
    );
}

#[tokio::test]
async fn a_repository_missing_from_the_catalog_and_a_stray_entry() {
    let f = fixture().await;
    let entry = |name| f.dir.join(trow_storage::layout::catalog_entry(name));
    std::fs::remove_file(entry("x/y")).unwrap();
    std::fs::write(entry("ghost/repo"), b"").unwrap();
    assert_problems(
        &check(&f, SystemTime::now()).await,
        &[
            Problem::CatalogMissing {
                repository: "x/y".into(),
            },
            Problem::CatalogStray {
                repository: "ghost/repo".into(),
            },
        ],
    );
}

#[tokio::test]
async fn a_corrupt_manifest_record() {
    let f = fixture().await;
    let record = f.dir.join(trow_storage::layout::manifest("app", &f.sig));
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    meta["media_type"] = OCI_INDEX.into();
    std::fs::write(&record, serde_json::to_vec(&meta).unwrap()).unwrap();
    let r = check(&f, SystemTime::now()).await;
    assert!(
        matches!(r.problems.first(), Some(Problem::ManifestUnparsable { digest, .. }) if digest == &f.sig),
        "{}",
        lines(&r)
    );
    std::fs::write(&record, b"{").unwrap();
    let r = check(&f, SystemTime::now()).await;
    assert!(
        matches!(r.problems.first(), Some(Problem::ManifestRecordInvalid { digest, .. }) if digest == &f.sig),
        "{}",
        lines(&r)
    );
}

/// Garbage collection follows a record's references: a record that forgot one would let it go.
#[tokio::test]
async fn a_manifest_record_whose_references_differ_from_its_bytes() {
    let f = fixture().await;
    let record = f.dir.join(trow_storage::layout::manifest("app", &f.image));
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(meta["references"].as_array().unwrap().len(), 2, "{meta}");
    meta["references"].as_array_mut().unwrap().pop();
    std::fs::write(&record, serde_json::to_vec(&meta).unwrap()).unwrap();
    let r = check(&f, SystemTime::now()).await;
    assert_problems(
        &r,
        &[Problem::ManifestReferencesMismatch {
            repository: "app".into(),
            digest: f.image.clone(),
        }],
    );
    // A record of an older version, without references, is fine.
    meta.as_object_mut().unwrap().remove("references");
    std::fs::write(&record, serde_json::to_vec(&meta).unwrap()).unwrap();
    assert!(check(&f, SystemTime::now()).await.is_clean());
}

#[tokio::test]
async fn the_lock_of_a_running_store_is_seen_not_taken() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(!fsck::data_dir_in_use(tmp.path()).unwrap());
    let lock = std::fs::File::create(tmp.path().join(".lock")).unwrap();
    assert!(!fsck::data_dir_in_use(tmp.path()).unwrap());
    lock.lock().unwrap();
    assert!(fsck::data_dir_in_use(tmp.path()).unwrap());
    lock.unlock().unwrap();
    // The probe kept nothing: the store can still take its lock.
    assert!(!fsck::data_dir_in_use(tmp.path()).unwrap());
    lock.try_lock().unwrap();
}

#[tokio::test]
async fn a_missing_data_dir_is_an_error_not_a_clean_store() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert!(matches!(
        fsck::check_dir(&missing, SystemTime::now()).await,
        Err(fsck::FsckError::NoDataDir(_))
    ));
    assert!(!missing.exists(), "fsck created the data dir");
}
