//! The store against a real filesystem in a temp dir: uploads, restarts, manifests, listings.

use bytes::Bytes;
use futures::StreamExt;
use trow_storage::Store;
use trow_storage::backend::FsBackend;
use trow_storage::digest::Digest;
use trow_storage::error::StorageError;

async fn store(dir: &std::path::Path) -> Store<FsBackend> {
    Store::open(FsBackend::new(dir).unwrap(), Default::default())
        .await
        .unwrap()
}

fn bytes_stream(
    parts: Vec<&'static [u8]>,
) -> impl futures::Stream<Item = Result<Bytes, StorageError>> {
    futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
}

async fn read_all(s: &Store<FsBackend>, repo: &str, digest: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut st = s.read_blob(repo, digest, 0, 0).await.unwrap();
    while let Some(c) = st.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

#[tokio::test]
async fn upload_survives_a_restart_of_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let digest = Digest::sha256_of(b"hello world").to_string();
    let id = {
        let s = store(tmp.path()).await;
        let id = s.start_upload("a/b", "").await.unwrap();
        let n = s
            .append_upload("a/b", &id, Some(0), bytes_stream(vec![b"hello "]))
            .await
            .unwrap();
        assert_eq!(n, 6);
        id
    };
    // A new Store has no in-memory state: it must rebuild the digest state from disk.
    let s = store(tmp.path()).await;
    assert_eq!(s.upload_status("a/b", &id).await.unwrap(), 6);
    let err = s
        .append_upload("a/b", &id, Some(3), bytes_stream(vec![b"x"]))
        .await;
    assert!(matches!(
        err,
        Err(StorageError::UploadOffset { size: 6, offset: 3 })
    ));
    s.append_upload("a/b", &id, Some(6), bytes_stream(vec![b"wor", b"ld"]))
        .await
        .unwrap();
    assert_eq!(s.complete_upload("a/b", &id, &digest).await.unwrap(), 11);
    assert_eq!(read_all(&s, "a/b", &digest).await, b"hello world");
    // Membership: not visible from another repository until mounted.
    assert!(matches!(
        s.stat_blob("c", &digest).await,
        Err(StorageError::BlobUnknown(_))
    ));
    s.mount_blob("c", &digest, "a/b").await.unwrap();
    assert_eq!(s.stat_blob("c", &digest).await.unwrap(), 11);
}

#[tokio::test]
async fn wrong_digest_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path()).await;
    let id = s.start_upload("r", "").await.unwrap();
    s.append_upload("r", &id, None, bytes_stream(vec![b"abc"]))
        .await
        .unwrap();
    let wrong = Digest::sha256_of(b"abd").to_string();
    assert!(matches!(
        s.complete_upload("r", &id, &wrong).await,
        Err(StorageError::DigestInvalid(_))
    ));
    assert!(s.stat_blob("r", &wrong).await.is_err());
    assert!(matches!(
        s.upload_status("r", &id).await,
        Err(StorageError::UploadUnknown(_))
    ));
    let blobs = tmp.path().join("blobs");
    assert!(
        !blobs.exists() || walk(&blobs).is_empty(),
        "a blob file was left behind"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn sha512_upload_and_rehash_on_algorithm_change() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path()).await;
    let d512 = Digest::parse(&format!("sha512:{}", "0".repeat(128)))
        .unwrap()
        .of_same_kind(b"data");
    // Announced sha512: hashed on the stream with sha512.
    let id = s.start_upload("r", "sha512").await.unwrap();
    s.append_upload("r", &id, None, bytes_stream(vec![b"da", b"ta"]))
        .await
        .unwrap();
    s.complete_upload("r", &id, &d512.to_string())
        .await
        .unwrap();
    // Not announced: sha256 on the stream, sha512 computed from the bytes at the end.
    let id = s.start_upload("q", "").await.unwrap();
    s.append_upload("q", &id, None, bytes_stream(vec![b"data"]))
        .await
        .unwrap();
    s.complete_upload("q", &id, &d512.to_string())
        .await
        .unwrap();
    assert_eq!(read_all(&s, "q", &d512.to_string()).await, b"data");
}

#[tokio::test]
async fn manifests_tags_referrers_and_listings() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path()).await;
    let config = Bytes::from_static(b"{}");
    let cd = Digest::sha256_of(&config).to_string();
    let id = s.start_upload("app", "").await.unwrap();
    s.append_upload(
        "app",
        &id,
        None,
        futures::stream::iter([Ok(config.clone())]),
    )
    .await
    .unwrap();
    s.complete_upload("app", &id, &cd).await.unwrap();

    let manifest = |extra: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":2}},"layers":[]{extra}}}"#
        )
    };
    let base = Bytes::from(manifest(""));
    let meta = s.put_manifest("app", "v1", "", base.clone()).await.unwrap();
    s.put_manifest("app", "v2", "", base.clone()).await.unwrap();
    let (got, content) = s.get_manifest("app", "v1").await.unwrap();
    assert_eq!((got, content), (meta.clone(), base));

    let sig = Bytes::from(manifest(&format!(
        r#","artifactType":"application/x-sig","subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1}}"#,
        meta.digest
    )));
    let sig_meta = s
        .put_manifest("app", &Digest::sha256_of(&sig).to_string(), "", sig)
        .await
        .unwrap();
    let refs = s.list_referrers("app", &meta.digest, "").await.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/x-sig"));
    assert!(
        s.list_referrers("app", &meta.digest, "other/type")
            .await
            .unwrap()
            .is_empty()
    );

    // A missing layer is refused with the blob's digest.
    let missing = Digest::sha256_of(b"missing").to_string();
    let bad = manifest("").replace(r#""layers":[]"#, &format!(
        r#""layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{missing}","size":7}}]"#
    ));
    assert!(matches!(
        s.put_manifest("app", "bad", "", bad.into()).await,
        Err(StorageError::ManifestBlobUnknown(d)) if d == missing
    ));

    assert_eq!(
        s.list_tags("app", 1, "").await.unwrap(),
        (vec!["v1".into()], true)
    );
    assert_eq!(
        s.list_tags("app", 1, "v1").await.unwrap(),
        (vec!["v2".into()], false)
    );
    assert!(matches!(
        s.list_tags("nope", 0, "").await,
        Err(StorageError::NameUnknown(_))
    ));

    // Deleting by digest removes both tags; deleting the referrer empties the referrers list.
    s.delete_manifest("app", &meta.digest).await.unwrap();
    assert!(s.get_manifest("app", "v2").await.is_err());
    assert_eq!(
        s.list_tags("app", 0, "").await.unwrap().0,
        Vec::<String>::new()
    );
    s.delete_manifest("app", &sig_meta.digest).await.unwrap();
    assert!(
        s.list_referrers("app", &meta.digest, "")
            .await
            .unwrap()
            .is_empty()
    );

    s.start_upload("x/y-z", "").await.unwrap();
    let id = s.start_upload("x/y", "").await.unwrap();
    s.append_upload(
        "x/y",
        &id,
        None,
        futures::stream::iter([Ok(config.clone())]),
    )
    .await
    .unwrap();
    s.complete_upload("x/y", &id, &cd).await.unwrap();
    assert_eq!(
        s.list_repositories(0, "").await.unwrap().0,
        vec!["app".to_string(), "x/y".to_string()]
    );
}

#[tokio::test]
async fn abandoned_uploads_are_purged_and_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path()).await;
    let old = s.start_upload("r", "").await.unwrap();
    s.append_upload("r", &old, None, bytes_stream(vec![b"partial"]))
        .await
        .unwrap();
    let fresh = s.start_upload("r", "").await.unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600);
    for f in ["data", "repository"] {
        let p = tmp.path().join("uploads").join(&old).join(f);
        std::fs::File::options()
            .append(true)
            .open(&p)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    let day = std::time::Duration::from_secs(24 * 3600);
    assert_eq!(s.purge_uploads(day).await.unwrap(), 1);
    assert!(!tmp.path().join("uploads").join(&old).exists());
    assert!(matches!(
        s.upload_status("r", &old).await,
        Err(StorageError::UploadUnknown(_))
    ));
    assert_eq!(s.upload_status("r", &fresh).await.unwrap(), 0);
    // Even a store that never saw the upload (a restart) finds it on disk and keeps it.
    assert_eq!(store(tmp.path()).await.purge_uploads(day).await.unwrap(), 0);
}
