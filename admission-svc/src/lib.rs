//! Trow's Kubernetes admission webhooks: the validating one decides which images pods may run
//! (`image_validation`), the mutating one rewrites images to pull through Trow's cache
//! (`image_mutation`). The logic is bytes in and bytes out, so that the gRPC server and the
//! tests drive the same two calls:
//! [`Webhooks::validate`] and [`Webhooks::mutate`] take the AdmissionReview the API server
//! sent and return the one to answer with, plus an outcome for the caller to log and act on
//! (pre-warm the rewritten images, unless it is a dry run).
//!
//! - [`config`]: the `image_validation` and `image_mutation` sections.
//! - [`image`]: image references as pods write them, normalized.
//! - [`policy`]: allow or deny one image, and why.
//! - [`review`]: the AdmissionReview, and for an UPDATE which images it changed.
//! - [`podspec`]: every image of a pod spec (containers of all three kinds, image volumes) and
//!   where it is.
//! - [`mutate`]: which images to rewrite, to what, as a JSON patch.
//! - [`prewarm`]: filling the cache with admitted pods' images in the background.
//! - [`server`]: the gRPC server (`trow.admission.v1.Admission`) with health and reflection.
//! - [`metrics`]: decisions by webhook and outcome, for Prometheus.

pub mod config;
mod error;
pub mod metrics;
pub use trow_names::image;
pub mod mutate;
pub mod podspec;
pub use trow_names::policy;
pub mod prewarm;
pub mod review;
pub mod server;
#[cfg(test)]
mod testdata;

use kube_core::Status;
use trow_upstreams::config::ProxyConfig;
use trow_upstreams::reference::Resolver;

pub use config::{ConfigError, Decision, MutationConfig, ValidationConfig};
pub use image::{ImageError, ImageRef};
pub use mutate::Rewrite;
pub use podspec::{ImageSite, Place};
pub use policy::Verdict;
pub use review::{Review, ReviewError};

/// One image the validating webhook refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The image as written, and where.
    pub site: ImageSite,
    pub verdict: Verdict,
}

/// `image "evil.example.com/x:1" (container "app") denied by prefix "evil.example.com/"`;
/// `(volume "models")` for an image volume.
impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "image {:?} ({}) {}",
            self.site.image,
            self.site.owner(),
            self.verdict
        )
    }
}

/// What the validating webhook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub dry_run: bool,
    pub uid: String,
    /// `Pod team/web`, for logs.
    pub object: String,
    /// Every refused image; empty when allowed.
    pub denied: Vec<Denial>,
}

/// What the mutating webhook did. It always allows; it only rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutateOutcome {
    pub allowed: bool,
    pub dry_run: bool,
    pub uid: String,
    pub object: String,
    /// The images rewritten, with what the proxy needs to pre-warm each.
    pub rewritten: Vec<Rewrite>,
    /// Every image the kubelet will pull through Trow's cache (the rewritten ones and those
    /// already written as `<trow>/f/...`): what pre-warming fills.
    pub warm: Vec<WarmTarget>,
    /// For the operator's log (e.g. no `--hostname`).
    pub warnings: Vec<String>,
}

/// An image to fill the cache with, as the proxy's `Warm` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WarmTarget {
    /// As the proxy resolves it: a registry (`docker.io`, `host:5000`) or a cache name.
    pub registry: String,
    pub repository: String,
    /// The digest when there is one, else the tag.
    pub reference: String,
}

impl std::fmt::Display for WarmTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// Both webhooks, built once at start-up.
#[derive(Debug)]
pub struct Webhooks {
    validation: Option<ValidationConfig>,
    mutator: mutate::Mutator,
    hostname: Option<String>,
}

impl Webhooks {
    /// `validation: None` allows every image (see [`Webhooks::startup_warnings`]).
    /// `hostname` is Trow's `--hostname`, as the kubelet reaches it (`trow.example.com`,
    /// `trow.example.com:8443`); the configs are validated again (idempotent), and a hostname
    /// that is not a `host[:port]` is refused, naming `--hostname`.
    pub fn new(
        validation: Option<ValidationConfig>,
        mutation: MutationConfig,
        proxy: &ProxyConfig,
        hostname: Option<String>,
    ) -> Result<Webhooks, ConfigError> {
        let validation = validation.map(ValidationConfig::validate).transpose()?;
        let mutation = mutation.validate()?;
        let hostname = hostname.map(|h| normalize_hostname(&h)).transpose()?;
        // Only a name runtimes read as a registry can be rewritten to.
        let rewrite_to = hostname.clone().filter(|h| image::names_registry(h));
        Ok(Webhooks {
            validation,
            mutator: mutate::Mutator::new(mutation, Resolver::new(proxy), rewrite_to),
            hostname,
        })
    }

    /// What an operator should hear at start-up: a webhook that will let everything through
    /// or rewrite nothing, and why.
    pub fn startup_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.validation.is_none() {
            w.push(
                "no image_validation in the config file: the validating webhook allows every image"
                    .to_string(),
            );
        }
        if self.mutation().enabled {
            match &self.hostname {
                None => w.push(mutate::NO_HOSTNAME.to_string()),
                Some(h) if !image::names_registry(h) => w.push(format!(
                    "--hostname {h:?} cannot be used to rewrite images: container runtimes read \
                     a first component without '.' or ':' (other than localhost) as a Docker \
                     Hub namespace; the mutating webhook rewrites nothing (use a name with a \
                     '.' or a port)"
                )),
                Some(_) => {}
            }
        }
        w
    }

    pub fn validation(&self) -> Option<&ValidationConfig> {
        self.validation.as_ref()
    }

    pub fn mutation(&self) -> &MutationConfig {
        self.mutator.config()
    }

    /// Trow's hostname, normalized (lowercase).
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// The validating webhook: denies the object when any image is denied (HTTP 403 in the
    /// answer's status, every denied image in its message). On UPDATE only the images the
    /// update changed are judged (see [`Review::unchanged`]).
    pub fn validate(&self, review_json: &[u8]) -> Result<(Vec<u8>, Outcome), ReviewError> {
        let review = Review::parse(review_json)?;
        let mut denied = Vec::new();
        if let Some(cfg) = &self.validation
            && !review.being_deleted
        {
            for site in &review.images {
                if review.unchanged(site) {
                    tracing::debug!(object = %review.object_name(), image = %site.image,
                        "not judged: unchanged by this update");
                    continue;
                }
                let verdict = policy::check(
                    cfg,
                    &site.image,
                    self.hostname.as_deref(),
                    self.mutator.resolver(),
                );
                tracing::debug!(object = %review.object_name(), image = %site.image, %verdict);
                if !verdict.allowed {
                    denied.push(Denial {
                        site: site.clone(),
                        verdict,
                    });
                }
            }
        }
        let mut response = review.allow();
        if !denied.is_empty() {
            let message = denied
                .iter()
                .map(Denial::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            response = response.deny(&message);
            response.result = Status::failure(&message, "Forbidden").with_code(403);
        }
        let outcome = Outcome {
            allowed: denied.is_empty(),
            dry_run: review.dry_run(),
            uid: review.uid().to_string(),
            object: review.object_name(),
            denied,
        };
        Ok((review::answer(response), outcome))
    }

    /// The mutating webhook: allows, with a JSON patch when any image is rewritten. Images the
    /// validation policy denies are left as written.
    pub fn mutate(&self, review_json: &[u8]) -> Result<(Vec<u8>, MutateOutcome), ReviewError> {
        let review = Review::parse(review_json)?;
        // An image the policy denies is neither rewritten nor warmed: the validating webhook
        // refuses the object anyway, naming the image as the user wrote it, and the cache
        // never fills with what may not run. An image an UPDATE did not change is judged by
        // neither webhook; the plan leaves it as it is.
        let images: Vec<ImageSite> = review
            .images
            .iter()
            .filter(|site| {
                if review.unchanged(site) {
                    return true;
                }
                let denied = self.validation.as_ref().is_some_and(|cfg| {
                    let hostname = self.hostname.as_deref();
                    !policy::check(cfg, &site.image, hostname, self.mutator.resolver()).allowed
                });
                if denied {
                    tracing::debug!(object = %review.object_name(), image = %site.image,
                        "not rewritten: the policy denies it");
                }
                !denied
            })
            .cloned()
            .collect();
        let plan = self.mutator.plan(&images, |site| review.unchanged(site));
        for (site, skip) in &plan.skipped {
            if let mutate::Skip::TooLong(_) = skip {
                // Not the user's mistake, but the cache is bypassed: the operator should know.
                tracing::warn!(object = %review.object_name(), image = %site.image, %skip,
                    "not rewritten");
            } else {
                tracing::debug!(object = %review.object_name(), image = %site.image, %skip,
                    "not rewritten");
            }
        }
        let patch = plan.patch();
        let mut response = review.allow();
        if !patch.is_empty() {
            response = response
                .with_patch(patch)
                .expect("a patch of strings always serializes");
        }
        let mut warm: Vec<WarmTarget> = plan
            .rewrites
            .iter()
            .map(|r| WarmTarget {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                reference: r.reference.clone(),
            })
            .collect();
        warm.extend(
            plan.skipped
                .iter()
                .filter(|(_, skip)| *skip == mutate::Skip::OnTrow)
                .filter_map(|(site, _)| self.cached_on_trow(&site.image)),
        );
        warm.sort_by_key(WarmTarget::to_string);
        warm.dedup();
        let outcome = MutateOutcome {
            allowed: true,
            warm,
            dry_run: review.dry_run(),
            uid: review.uid().to_string(),
            object: review.object_name(),
            rewritten: plan.rewrites,
            warnings: plan.warnings,
        };
        Ok((review::answer(response), outcome))
    }
}

impl Webhooks {
    /// `<trow>/f/<cache-name>/<repository>:<tag>` → what to warm; other images on Trow (its own
    /// repositories) are not cached copies.
    fn cached_on_trow(&self, image: &str) -> Option<WarmTarget> {
        let r = ImageRef::parse(image).ok()?;
        let rest = r.repository().strip_prefix("f/")?;
        let (registry, repository) = rest.split_once('/')?;
        Some(WarmTarget {
            registry: registry.to_string(),
            repository: repository.to_string(),
            reference: r.reference().to_string(),
        })
    }
}

/// Trow's hostname as an image's registry would be written (lowercase `host[:port]`).
fn normalize_hostname(hostname: &str) -> Result<String, ConfigError> {
    image::normalize_registry(hostname).map_err(|e| config::invalid("--hostname", e.to_string()))
}
