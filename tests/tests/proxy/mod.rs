//! What the pull-through cache tests share: a Trow started with a `registry_proxies` config,
//! checks of `Trow-Cache` and of manifests and blobs against the image an upstream holds, and
//! probes of the storage service itself (is this blob cached in that repository?) over its gRPC
//! API, which no proxy answer can fake.

pub mod liar;

use std::path::Path;

use tonic::transport::Channel;
use trow_proto::storage::storage_client::StorageClient;
use trow_proto::storage::{BlobRef, ManifestRef};
use trow_tests::clients::{
    LogsOnPanic, assert_layout_blobs_intact, layout_tag_digest, run, skopeo,
};
use trow_tests::images::{Image, read_blob};
use trow_tests::oci::{ACCEPT_ALL, Reg, Resp, client, send};
use trow_tests::upstream::ProxyConfig;
use trow_tests::{Flags, Topology, Trow, sha256_digest};

/// A Trow whose pull-through cache is configured, with its logs printed if the test fails.
pub struct Proxy {
    // Declared first so it is dropped (and prints) before the Trow and its log dir go.
    _logs: LogsOnPanic,
    pub reg: Reg,
}

impl Proxy {
    /// Writes `config` to `dir/config.yml` and starts Trow with it.
    pub fn start(topology: Topology, config: &ProxyConfig, dir: &Path) -> Proxy {
        Proxy::start_with(topology, config, dir, Flags::default())
    }

    /// As [`Proxy::start`], with other flags too (the config file is set here).
    pub fn start_with(topology: Topology, config: &ProxyConfig, dir: &Path, flags: Flags) -> Proxy {
        let path = config.write(&dir.join("config.yml"));
        let trow = Trow::start_with(
            topology,
            Flags {
                config_file: Some(path),
                ..flags
            },
        );
        Proxy {
            _logs: LogsOnPanic::trow(&trow),
            reg: Reg::with_trow(trow),
        }
    }

    /// As [`Proxy::start_with`], on the data dir `data` (a tmpfs, or one that outlives it).
    pub fn start_in(
        topology: Topology,
        config: &ProxyConfig,
        dir: &Path,
        data: &Path,
        flags: Flags,
    ) -> Proxy {
        let path = config.write(&dir.join("config.yml"));
        let trow = Trow::start_in_with(
            topology,
            data,
            Flags {
                config_file: Some(path),
                ..flags
            },
        );
        Proxy {
            _logs: LogsOnPanic::trow(&trow),
            reg: Reg::with_trow(trow),
        }
    }

    pub fn trow(&self) -> &Trow {
        self.reg.trow.as_ref().expect("a Trow the test started")
    }

    /// `url/v2/` + `path`.
    pub fn v2(&self, path: &str) -> String {
        self.reg.v2(path)
    }

    /// `127.0.0.1:PORT/` + `repo_and_tag`, for clients.
    pub fn image(&self, repo_and_tag: &str) -> String {
        self.trow().image(repo_and_tag)
    }

    /// GET `/v2/<path>` with an `Accept` of every manifest type.
    pub async fn get_m(&self, path: &str) -> Resp {
        self.reg.get_m(&self.v2(path)).await
    }

    /// GET `/v2/<path>`.
    pub async fn get(&self, path: &str) -> Resp {
        self.reg.get(&self.v2(path)).await
    }

    /// The repositories of `GET /v2/_catalog`.
    pub async fn catalog(&self) -> Vec<String> {
        let r = self.get("_catalog").await;
        r.assert_status(200);
        r.json()["repositories"]
            .as_array()
            .unwrap_or_else(|| panic!("catalog without repositories: {r}"))
            .iter()
            .map(|v| v.as_str().expect("repository name").to_string())
            .collect()
    }

    async fn storage(&self) -> StorageClient<Channel> {
        let addr = &self.trow().storage_addr;
        let ch = Channel::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to storage gRPC at {addr}: {e}"));
        StorageClient::new(ch)
    }

    /// Whether storage has blob `digest` linked into `repository` (a fill in progress does not
    /// count). Any answer but found / not found fails the test.
    pub async fn storage_has_blob(&self, repository: &str, digest: &str) -> bool {
        let r = self
            .storage()
            .await
            .stat_blob(BlobRef {
                repository: repository.to_string(),
                digest: digest.to_string(),
            })
            .await;
        found(r, &format!("StatBlob {repository} {digest}"))
    }

    /// Whether storage has manifest `reference` (tag or digest) in `repository`.
    pub async fn storage_has_manifest(&self, repository: &str, reference: &str) -> bool {
        let r = self
            .storage()
            .await
            .stat_manifest(ManifestRef {
                repository: repository.to_string(),
                reference: reference.to_string(),
            })
            .await;
        found(r, &format!("StatManifest {repository} {reference}"))
    }

    /// Stops Trow (gateway, proxies, storage) and runs `trow fsck` on its data dir.
    pub fn stop_and_fsck(&mut self) {
        trow_tests::fsck::stop_and_fsck(self.reg.trow.as_mut().expect("a Trow"));
    }
}

fn found<T>(r: Result<tonic::Response<T>, tonic::Status>, what: &str) -> bool {
    match r {
        Ok(_) => true,
        Err(s) if s.code() == tonic::Code::NotFound => false,
        Err(s) => panic!("{what}: {s:?}"),
    }
}

/// The `Trow-Cache` header; panics with the response when it is missing.
pub fn cache_status(r: &Resp) -> String {
    r.must_header("trow-cache")
}

/// Asserts `Trow-Cache: expected`.
pub fn assert_cache(r: &Resp, expected: &str) {
    assert_eq!(
        cache_status(r),
        expected,
        "{}: Trow-Cache should be {expected}: {r}",
        r.what
    );
}

/// A 200 answer with `img`'s manifest: its bytes, digest header and media type.
pub fn assert_manifest(r: &Resp, img: &Image) {
    r.assert_status(200);
    assert_eq!(
        sha256_digest(&r.body),
        img.manifest_digest,
        "{}: other manifest bytes than the upstream's: {r}",
        r.what
    );
    r.assert_header("docker-content-digest", &img.manifest_digest);
    assert_eq!(
        r.content_type().as_deref(),
        Some(trow_tests::images::MANIFEST_MEDIA_TYPE),
        "{}: {r}",
        r.what
    );
}

/// A 200 answer with the bytes of blob `digest` of `img`'s layout.
pub fn assert_blob(r: &Resp, img: &Image, digest: &str) {
    r.assert_status(200);
    assert!(
        r.body == read_blob(&img.layout, digest),
        "{}: {} bytes that are not blob {digest} (digest {})",
        r.what,
        r.body.len(),
        sha256_digest(&r.body)
    );
    r.assert_header("docker-content-digest", digest);
}

/// Builds a small image tagged `tag` in `dir/name`.
pub fn image(dir: &Path, name: &str, tag: &str) -> Image {
    trow_tests::images::build_image(&dir.join(name), tag, "amd64")
}

/// The config and layer digests of `img`.
pub fn blobs(img: &Image) -> Vec<String> {
    let mut v = vec![img.config_digest.clone()];
    v.extend(img.layers.iter().cloned());
    v
}

/// The first error message of an OCI error body.
pub fn error_message(r: &Resp) -> String {
    r.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Asserts an OCI error body (JSON, a code, a non-empty message) and a status in `statuses`.
pub fn assert_oci_error_status(r: &Resp, statuses: &[u16]) {
    assert!(
        statuses.contains(&r.status),
        "{}: status should be one of {statuses:?}: {r}",
        r.what
    );
    assert_eq!(
        r.content_type().as_deref(),
        Some("application/json"),
        "{}: an error must be OCI error JSON: {r}",
        r.what
    );
    assert!(!r.error_codes().is_empty());
    assert!(
        !error_message(r).is_empty(),
        "{}: the error must say what went wrong: {r}",
        r.what
    );
}

/// `skopeo copy --preserve-digests docker://reference oci:layout:tag` over plain HTTP.
pub fn skopeo_pull(reference: &str, layout: &Path, tag: &str) {
    run(&mut skopeo_pull_cmd(reference, layout, tag));
}

pub fn skopeo_pull_cmd(reference: &str, layout: &Path, tag: &str) -> std::process::Command {
    let mut cmd = skopeo([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--retry-times=0",
    ]);
    cmd.arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:{tag}", layout.display()));
    cmd
}

/// A pulled layout holds `img` under `tag`: the same manifest digest, and every blob byte for
/// byte the upstream's.
pub fn assert_layout_holds(layout: &Path, tag: &str, img: &Image) {
    assert_eq!(layout_tag_digest(layout, tag), img.manifest_digest);
    assert_layout_blobs_intact(layout);
    for d in blobs(img).iter().chain([&img.manifest_digest]) {
        assert_eq!(
            read_blob(layout, d),
            read_blob(&img.layout, d),
            "blob {d} pulled into {} differs from the upstream's",
            layout.display()
        );
    }
}

/// What a GET ended as, body read to the end or to the error that cut it.
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub cache: Option<String>,
    pub body: Result<Vec<u8>, String>,
}

impl Outcome {
    /// A 2xx answer whose body arrived whole.
    pub fn complete_success(&self) -> bool {
        (200..300).contains(&self.status) && self.body.is_ok()
    }
}

/// GETs `url` without panicking on a body cut short (as a server aborting a stream does).
pub async fn get_outcome(url: &str) -> Outcome {
    let r = client()
        .get(url)
        .header("Accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("trow-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| trow_tests::oci::error_chain(&e));
    Outcome {
        status,
        cache,
        body,
    }
}

/// GET `url` with `Accept` of every manifest type, for tasks that own their client.
pub async fn get_with(c: &reqwest::Client, url: &str) -> Resp {
    send(c.get(url).header("Accept", ACCEPT_ALL)).await
}
