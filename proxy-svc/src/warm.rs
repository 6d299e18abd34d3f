//! Pre-warming: filling the cache with a whole image before any client asks for it (the
//! admission webhook does this for the images of a pod it admits).
//!
//! Warming goes through the same paths as a client's pull — the manifest through the
//! revalidating read, every blob through `BeginFill` — so a kubelet that pulls while the image
//! warms joins the fills in progress instead of fetching again, and what warming stores is
//! exactly what a pull would have stored. The bytes are not read back: waiting for a blob is
//! a one-byte read at its end, which storage answers only once the fill's digest held.

use futures::StreamExt;
use tonic::{Code, Status};
use trow_proto::proxy as pb;
use trow_proto::storage as st;

use crate::reference::Target;
use crate::service::{ProxyService, RESUMES};

/// Blobs of one image filled at once (containerd's default for a pull is 3).
const BLOBS_AT_ONCE: usize = 3;

/// The parts of a manifest or index that name what else to fill.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Parts {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, serde::Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<Platform>,
}

#[derive(Debug, serde::Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// Whether `wanted` (`os/arch` or `os/arch/variant`) names this platform; without a
    /// variant it names every variant.
    fn matches(&self, wanted: &str) -> bool {
        let mut w = wanted.split('/');
        let (os, arch, variant) = (w.next(), w.next(), w.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && variant.is_none_or(|v| self.variant.as_deref() == Some(v))
    }
}

/// What one warm did, as [`pb::WarmReply`] reports it.
#[derive(Debug, Default)]
struct Tally {
    cached: u32,
    filled: u32,
}

impl Tally {
    fn count(&mut self, was_cached: bool) {
        if was_cached {
            self.cached += 1;
        } else {
            self.filled += 1;
        }
    }
}

impl ProxyService {
    /// Fills the cache with the image `r` names (see the module docs).
    pub async fn warm_image(&self, r: &pb::WarmRequest) -> Result<pb::WarmReply, Status> {
        let t = self.target(&r.registry, &r.repository)?;
        let mut tally = Tally::default();
        let top = self
            .manifest(&pb::ManifestRequest {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                reference: r.reference.clone(),
                head: false,
            })
            .await?;
        tally.count(top.1 != pb::CacheStatus::Miss);
        let parts = parse(&top.0.content)?;
        let mut images = Vec::new();
        if parts.manifests.is_empty() {
            images.push(parts);
        } else {
            for child in parts.manifests.iter().filter(|c| wanted(c, &r.platforms)) {
                let (m, cache) = self
                    .manifest(&pb::ManifestRequest {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        reference: child.digest.clone(),
                        head: false,
                    })
                    .await?;
                tally.count(cache != pb::CacheStatus::Miss);
                images.push(parse(&m.content)?);
            }
        }
        let mut blobs: Vec<Descriptor> = images
            .into_iter()
            .flat_map(|p| p.config.into_iter().chain(p.layers))
            .collect();
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        blobs.dedup_by(|a, b| a.digest == b.digest);
        let mut fills = futures::stream::iter(blobs)
            .map(|b| self.warm_blob(&t, b))
            .buffer_unordered(BLOBS_AT_ONCE);
        while let Some(done) = fills.next().await {
            tally.count(done?);
        }
        Ok(pb::WarmReply {
            cached: tally.cached,
            filled: tally.filled,
        })
    }

    /// Fills one blob and waits until it is stored; says whether it was cached already.
    async fn warm_blob(&self, t: &Target, blob: Descriptor) -> Result<bool, Status> {
        let mut attempts = 0;
        loop {
            let cached = self.join_fill(t, &blob.digest).await?;
            if cached {
                return Ok(true);
            }
            match self.wait_for_fill(t, &blob).await {
                Ok(()) => return Ok(false),
                // Stalled: ask again, and take the fill over if its filler is gone.
                Err(s) if s.code() == Code::Aborted && attempts < RESUMES => attempts += 1,
                Err(s) => return Err(s),
            }
        }
    }

    /// Reads the blob's last byte, which storage sends only once the fill is verified.
    async fn wait_for_fill(&self, t: &Target, blob: &Descriptor) -> Result<(), Status> {
        let mut stream = self
            .storage
            .clone()
            .read_fill(st::ReadBlobRequest {
                repository: t.cache_repository.clone(),
                digest: blob.digest.clone(),
                offset: blob.size.saturating_sub(1),
                length: blob.size.min(1),
            })
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    }
}

fn parse(content: &[u8]) -> Result<Parts, Status> {
    serde_json::from_slice(content)
        .map_err(|e| Status::failed_precondition(format!("the manifest does not parse: {e}")))
}

/// Whether an index child is one of `platforms` (all are when none are given).
fn wanted(child: &Descriptor, platforms: &[String]) -> bool {
    if platforms.is_empty() {
        return true;
    }
    child
        .platform
        .as_ref()
        .is_some_and(|p| platforms.iter().any(|w| p.matches(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_children_are_chosen_by_platform() {
        let index = br#"{"schemaVersion":2,"manifests":[
            {"digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},
            {"digest":"sha256:c","size":1,"platform":{"os":"unknown","architecture":"unknown"}},
            {"digest":"sha256:d","size":1}]}"#;
        let p = parse(index).unwrap();
        let pick = |w: &[&str]| -> Vec<&str> {
            let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            p.manifests
                .iter()
                .filter(|c| wanted(c, &w))
                .map(|c| c.digest.as_str())
                .collect()
        };
        assert_eq!(pick(&["linux/amd64"]), ["sha256:a"]);
        assert_eq!(pick(&["linux/arm"]), ["sha256:b"]);
        assert_eq!(
            pick(&["linux/arm/v7", "linux/amd64"]),
            ["sha256:a", "sha256:b"]
        );
        assert!(pick(&["linux/arm/v6"]).is_empty());
        assert_eq!(pick(&[]).len(), 4);
    }

    #[test]
    fn an_image_names_its_config_and_layers() {
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:c","size":2},
            "layers":[{"digest":"sha256:l1","size":3},{"digest":"sha256:l2","size":0}]}"#;
        let p = parse(m).unwrap();
        assert_eq!(p.config.unwrap().size, 2);
        assert_eq!(p.layers.len(), 2);
        assert!(parse(b"not json").is_err());
    }
}
