//! A lying upstream: it serves a manifest whose layer is blob X, and for X returns other bytes
//! of the same length, so only a digest check can tell. Asked for a manifest by any digest, it
//! answers with that same manifest, which then does not match the digest asked for.

use trow_tests::images::Rng;
use trow_tests::oci::{
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, config_blob, desc, oci_manifest, to_bytes,
};
use trow_tests::sha256_digest;
use trow_tests::upstream::{Reply, Scripted};

/// The repository the liar serves.
pub const REPO: &str = "lie/app";

pub struct Liar {
    pub server: Scripted,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    /// An honest blob: the config.
    pub config: Vec<u8>,
    pub config_digest: String,
    /// The layer the manifest names, and the bytes served for it instead.
    pub layer_digest: String,
    pub lie: Vec<u8>,
}

impl Liar {
    /// Starts the liar on `listen` (`IP:0`).
    pub fn start(listen: &str) -> Liar {
        let mut rng = Rng::new();
        let config = config_blob(&format!("liar {}", rng.next_u64()));
        let real = rng.bytes(256 << 10);
        let mut lie = real.clone();
        lie[100_000] ^= 0xff; // one byte off, same length
        let config_digest = sha256_digest(&config);
        let layer_digest = sha256_digest(&real);
        let manifest = to_bytes(&oci_manifest(
            desc(OCI_CONFIG, &config_digest, config.len()),
            &[desc(OCI_LAYER, &layer_digest, real.len())],
        ));
        let manifest_digest = sha256_digest(&manifest);

        let (m, md, c, cd, l, ld) = (
            manifest.clone(),
            manifest_digest.clone(),
            config.clone(),
            config_digest.clone(),
            lie.clone(),
            layer_digest.clone(),
        );
        let manifests = format!("/v2/{REPO}/manifests/");
        let blobs = format!("/v2/{REPO}/blobs/");
        let server = Scripted::start(listen, move |r| {
            let path = r.path();
            if path == "/v2/" {
                Reply::ok("application/json", b"{}".to_vec())
            } else if path.starts_with(&manifests) {
                Reply::ok(OCI_MANIFEST, m.clone()).header("Docker-Content-Digest", &md)
            } else if path == format!("{blobs}{cd}") {
                Reply::ok("application/octet-stream", c.clone())
                    .header("Docker-Content-Digest", &cd)
            } else if path == format!("{blobs}{ld}") {
                Reply::ok("application/octet-stream", l.clone())
                    .header("Docker-Content-Digest", &ld)
            } else if path == format!("/v2/{REPO}/tags/list") {
                let body = serde_json::json!({"name": REPO, "tags": ["1.0"]});
                Reply::ok("application/json", body.to_string().into_bytes())
            } else {
                Reply::oci_error(404, "NAME_UNKNOWN")
            }
        });
        Liar {
            server,
            manifest,
            manifest_digest,
            config,
            config_digest,
            layer_digest,
            lie,
        }
    }

    /// `IP:PORT`, the config's `host`.
    pub fn authority(&self) -> String {
        self.server.addr_string()
    }

    /// Its name in `/v2/f/<name>/...`.
    pub fn path_name(&self) -> String {
        self.authority().replace(':', "_")
    }
}
