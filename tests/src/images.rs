//! Test images built offline with umoci: no base image is downloaded. Every image gets files with
//! fresh random content, so no two images (or test runs) share a digest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clients::{output, run};
use crate::sha256_digest;

pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A small non-cryptographic generator (xorshift64*), seeded differently on every call.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = t
            ^ (u64::from(std::process::id()) << 32)
            ^ COUNTER
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Rng::seeded(seed)
    }

    pub fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

/// An image manifest in an OCI layout.
#[derive(Clone, Debug)]
pub struct Image {
    pub layout: PathBuf,
    pub tag: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<String>,
    pub architecture: String,
}

impl Image {
    /// `oci:LAYOUT:TAG`, the skopeo/podman reference.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    /// The manifest bytes as stored in the layout.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        read_blob(&self.layout, &self.manifest_digest)
    }
}

/// A multi-platform image index in an OCI layout.
#[derive(Clone, Debug)]
pub struct Index {
    pub layout: PathBuf,
    pub tag: String,
    pub index_digest: String,
    pub images: Vec<Image>,
}

impl Index {
    /// `oci:LAYOUT:TAG`, the skopeo reference.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    /// The index bytes as stored in the layout.
    pub fn index_bytes(&self) -> Vec<u8> {
        read_blob(&self.layout, &self.index_digest)
    }
}

fn umoci(args: &[&str]) -> String {
    let mut cmd = Command::new("umoci");
    cmd.args(args);
    run(&mut cmd)
}

/// The bytes of blob `digest` in `layout`.
pub fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let p = layout.join("blobs/sha256").join(hex);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Writes `data` as a blob of `layout`; returns its digest.
pub fn write_blob(layout: &Path, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let p = layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    digest
}

fn read_index_json(layout: &Path) -> serde_json::Value {
    let p = layout.join("index.json");
    serde_json::from_slice(
        &std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
    )
    .expect("index.json is JSON")
}

/// The descriptor `index.json` holds for `tag`.
fn tag_descriptor(layout: &Path, tag: &str) -> serde_json::Value {
    let index = read_index_json(layout);
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][REF_NAME] == tag)
        .cloned()
        .unwrap_or_else(|| panic!("no tag {tag} in {}/index.json: {index}", layout.display()))
}

/// Creates an empty OCI layout at `layout`.
pub fn init_layout(layout: &Path) {
    if let Some(parent) = layout.parent() {
        std::fs::create_dir_all(parent).expect("create layout parent");
    }
    umoci(&["init", "--layout", &layout.to_string_lossy()]);
}

/// Builds a linux/`arch` image tagged `tag` in `layout` (created if missing): two layers of a few
/// random files each, and a config with a command. `layout`'s parent holds the scratch bundle.
pub fn build_image(layout: &Path, tag: &str, arch: &str) -> Image {
    build_image_sized(layout, tag, arch, 0)
}

/// As [`build_image`], with an extra file of `big` random bytes in the second layer (so that
/// layer is about `big` bytes even compressed).
pub fn build_image_sized(layout: &Path, tag: &str, arch: &str, big: usize) -> Image {
    if !layout.join("index.json").exists() {
        init_layout(layout);
    }
    let image = format!("{}:{tag}", layout.display());
    umoci(&["new", "--image", &image]);
    let bundle = layout.with_file_name(format!(
        "{}-bundle-{tag}",
        layout.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&bundle);
    umoci(&["unpack", "--image", &image, &bundle.to_string_lossy()]);
    let rootfs = bundle.join("rootfs");
    let mut rng = Rng::new();
    for layer in 0..2 {
        let dir = rootfs.join(format!("data/layer{layer}"));
        std::fs::create_dir_all(&dir).expect("create dir in rootfs");
        for f in 0..3 {
            let size = 1024 + (rng.next_u64() % (24 * 1024)) as usize;
            std::fs::write(dir.join(format!("file{f}.bin")), rng.bytes(size)).expect("write file");
        }
        if layer == 1 && big > 0 {
            std::fs::write(dir.join("big.bin"), rng.bytes(big)).expect("write big file");
        }
        std::fs::write(
            dir.join("id.txt"),
            format!("{tag} {arch} {:016x}\n", rng.next_u64()),
        )
        .expect("write file");
        umoci(&[
            "repack",
            "--refresh-bundle",
            "--image",
            &image,
            "--history.comment",
            &format!("layer {layer}"),
            &bundle.to_string_lossy(),
        ]);
    }
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/data/layer0/id.txt",
        "--config.env",
        &format!("TROW_TEST_IMAGE={tag}"),
        "--architecture",
        arch,
        "--os",
        "linux",
    ]);
    let _ = std::fs::remove_dir_all(&bundle);

    let desc = tag_descriptor(layout, tag);
    let manifest_digest = desc["digest"].as_str().expect("digest").to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_blob(layout, &manifest_digest)).expect("manifest JSON");
    let img = Image {
        layout: layout.to_path_buf(),
        tag: tag.to_string(),
        config_digest: manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_string(),
        layers: manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("layer digest").to_string())
            .collect(),
        manifest_digest,
        architecture: arch.to_string(),
    };
    assert_eq!(img.layers.len(), 2, "manifest: {manifest}");
    verify_with_skopeo(layout, tag, &img.manifest_digest);
    img
}

/// Builds a two-platform (linux/amd64 + linux/arm64) image index tagged `tag` in `layout`: two
/// images (tagged `TAG-amd64` and `TAG-arm64`) and an index blob listing them with their
/// platforms, referenced from `index.json`.
pub fn build_index(layout: &Path, tag: &str) -> Index {
    let images: Vec<Image> = ["amd64", "arm64"]
        .iter()
        .map(|arch| build_image(layout, &format!("{tag}-{arch}"), arch))
        .collect();
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|img| {
            let size = read_blob(layout, &img.manifest_digest).len();
            serde_json::json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": img.manifest_digest,
                "size": size,
                "platform": { "architecture": img.architecture, "os": "linux" },
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
        "annotations": { "org.opencontainers.image.description": format!("trow test {tag}") },
    });
    let bytes = serde_json::to_vec(&index).expect("serialize index");
    let index_digest = write_blob(layout, &bytes);

    let mut top = read_index_json(layout);
    let list = top["manifests"].as_array_mut().expect("manifests array");
    list.retain(|m| m["annotations"][REF_NAME] != tag);
    list.push(serde_json::json!({
        "mediaType": INDEX_MEDIA_TYPE,
        "digest": index_digest,
        "size": bytes.len(),
        "annotations": { REF_NAME: tag },
    }));
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&top).expect("serialize index.json"),
    )
    .expect("write index.json");
    verify_with_skopeo(layout, tag, &index_digest);
    Index {
        layout: layout.to_path_buf(),
        tag: tag.to_string(),
        index_digest,
        images,
    }
}

/// `skopeo inspect --raw oci:LAYOUT:TAG` must succeed and return bytes with digest `digest`.
fn verify_with_skopeo(layout: &Path, tag: &str, digest: &str) {
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "inspect",
        "--raw",
        &format!("oci:{}:{tag}", layout.display()),
    ]);
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "{}",
        crate::clients::describe(&cmd, &out)
    );
    assert_eq!(
        sha256_digest(&out.stdout),
        digest,
        "skopeo reads a different manifest for {tag}"
    );
}
