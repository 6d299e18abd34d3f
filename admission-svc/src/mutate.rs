//! The mutating webhook's rewrite: images go through Trow's pull-through cache.
//!
//! An image `<registry>/<repository>` becomes `<trow-hostname>/f/<cache-name>/<repository>`
//! with its tag and digest as they were, so the kubelet pulls through Trow, which caches what
//! it fetches and serves it again when the upstream is slow, rate-limited or down. The cache
//! name comes from the proxy's [`Resolver`], the same one that serves the pull, so the
//! rewritten image lands exactly on the cached repository the proxy fills (Docker Hub:
//! `f/docker.io/library/nginx`; an alias; `host_5000` for `host:5000`).
//!
//! Rewritten are the images of registries with a `registry_proxies` entry (or of every
//! registry with `all_registries`), except:
//! - images already on Trow (the registry is Trow's hostname): so mutating twice changes
//!   nothing, and Trow's own repositories are left alone;
//! - repositories under the entry's `ignore_repos` (at `/` boundaries, as the upstream names
//!   them) and images under `image_mutation.ignore` (the validation prefix rule);
//! - on UPDATE, an image that is the same at the same place in the old object: rewriting it
//!   would restart a running container or roll a workload out just because a label changed;
//! - images the proxy could not serve (unparsable, or refused by `configured_only`): the pull
//!   would then fail where it would have worked;
//! - images whose rewritten name (`<trow>/f/<cache-name>/<repository>`, Trow's hostname and
//!   port included) would be longer than 255 characters: CRI-O and podman (containers/image)
//!   and containerd up to 1.7.18 refuse such a name ("repository name must not be more than
//!   255 characters"), so the pod would never start there. containerd from 1.7.19
//!   (distribution/reference v0.6.0) counts only the path (`f/<cache-name>/<repository>`,
//!   which is also the proxy's own bound); the whole name is the stricter rule and implies it.
//!
//! Without a hostname nothing can be rewritten: Trow does not know the name the kubelet reaches
//! it by.

use json_patch::jsonptr::PointerBuf;
use json_patch::{Patch, PatchOperation, ReplaceOperation};
use trow_upstreams::reference::{ResolveError, Resolver};

use crate::config::MutationConfig;
use crate::image::{ImageRef, MAX_NAME_LEN};
use crate::podspec::ImageSite;
use crate::policy::prefix_matches;

/// The warning when mutation is enabled but Trow has no hostname.
pub const NO_HOSTNAME: &str = "image_mutation is enabled but Trow has no --hostname: images \
     cannot be rewritten to pull through Trow without the name the kubelet reaches it by";

/// One image rewritten, with what the cache needs to pre-warm it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The image as the object had it, and where (the patch's pointer).
    pub site: ImageSite,
    /// The image as it will be: `<hostname>/f/docker.io/library/nginx:1.27`.
    pub to: String,
    /// The registry as the image names it, normalized (`docker.io`, `host:5000`): what the
    /// proxy resolves (`Warm`'s `registry`).
    pub registry: String,
    /// The repository at the upstream (`library/nginx`).
    pub repository: String,
    /// The digest when the image has one, else the tag: what the kubelet will pull.
    pub reference: String,
    /// Where the cache keeps it: `f/docker.io/library/nginx`.
    pub cache_repository: String,
}

/// Why an image is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    OnTrow,
    /// No `registry_proxies` entry covers it and `all_registries` is off.
    NotConfigured,
    /// Under a prefix of `image_mutation.ignore`.
    Ignored(String),
    /// Under a repository prefix of the entry's `ignore_repos`.
    IgnoredRepo(String),
    /// An UPDATE that did not change this image.
    Unchanged,
    Unparsable(String),
    Unresolvable(ResolveError),
    /// The rewritten name would be this long, more than runtimes accept.
    TooLong(usize),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::OnTrow => f.write_str("already pulled from Trow"),
            Skip::NotConfigured => f.write_str("its registry has no registry_proxies entry"),
            Skip::Ignored(p) => write!(f, "under image_mutation.ignore prefix {p:?}"),
            Skip::IgnoredRepo(p) => write!(f, "under ignore_repos prefix {p:?}"),
            Skip::Unchanged => f.write_str("unchanged by this update"),
            Skip::Unparsable(e) => write!(f, "not a valid image reference: {e}"),
            Skip::Unresolvable(e) => write!(f, "the cache cannot serve it: {e}"),
            Skip::TooLong(len) => write!(
                f,
                "rewritten, its name (<hostname>/f/<cache-name>/<repository>) would be {len} \
                 characters long; container runtimes refuse names longer than {MAX_NAME_LEN}"
            ),
        }
    }
}

/// What to do with an object's images.
#[derive(Debug, Default)]
pub struct Plan {
    pub rewrites: Vec<Rewrite>,
    /// The images left alone, with why (for logs).
    pub skipped: Vec<(ImageSite, Skip)>,
    /// For the operator's log (not for the user who created the object).
    pub warnings: Vec<String>,
}

impl Plan {
    /// `replace` operations at the rewritten images' pointers; empty when nothing changes.
    pub fn patch(&self) -> Patch {
        Patch(
            self.rewrites
                .iter()
                .map(|r| {
                    PatchOperation::Replace(ReplaceOperation {
                        path: PointerBuf::parse(r.site.pointer.as_str())
                            .expect("pointers are built from field names and indexes"),
                        value: serde_json::Value::String(r.to.clone()),
                    })
                })
                .collect(),
        )
    }
}

/// The rewriting rules, built once.
#[derive(Debug)]
pub struct Mutator {
    cfg: MutationConfig,
    resolver: Resolver,
    /// Trow's hostname, normalized as an image's registry.
    hostname: Option<String>,
}

impl Mutator {
    /// `hostname` must already be normalized (see [`crate::Webhooks::new`]).
    pub fn new(cfg: MutationConfig, resolver: Resolver, hostname: Option<String>) -> Mutator {
        Mutator {
            cfg,
            resolver,
            hostname,
        }
    }

    pub fn config(&self) -> &MutationConfig {
        &self.cfg
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Decides for every image; `unchanged` says which ones an UPDATE left as they were.
    pub fn plan(&self, images: &[ImageSite], unchanged: impl Fn(&ImageSite) -> bool) -> Plan {
        let mut plan = Plan::default();
        if !self.cfg.enabled || images.is_empty() {
            return plan;
        }
        let Some(hostname) = self.hostname.as_deref() else {
            plan.warnings.push(NO_HOSTNAME.to_string());
            return plan;
        };
        for site in images {
            let decided = if unchanged(site) {
                Err(Skip::Unchanged)
            } else {
                self.rewrite(hostname, &site.image)
            };
            match decided {
                Ok((to, target)) => plan.rewrites.push(Rewrite {
                    site: site.clone(),
                    to: to.to_string(),
                    registry: target.registry,
                    repository: target.repository,
                    reference: to.reference().to_string(),
                    cache_repository: target.cache_repository,
                }),
                Err(skip) => plan.skipped.push((site.clone(), skip)),
            }
        }
        plan
    }

    /// The image to write instead of `image`, with where it is cached, or why none.
    pub fn rewrite(&self, hostname: &str, image: &str) -> Result<(ImageRef, Cached), Skip> {
        let r = ImageRef::parse(image).map_err(|e| Skip::Unparsable(e.to_string()))?;
        if r.registry() == hostname {
            return Err(Skip::OnTrow);
        }
        let target = match self.resolver.resolve_ns(r.registry(), r.repository()) {
            Ok(t) => t,
            Err(ResolveError::NotConfigured(_)) => return Err(Skip::NotConfigured),
            Err(e) => return Err(Skip::Unresolvable(e)),
        };
        match &target.registry {
            None if !self.cfg.all_registries => return Err(Skip::NotConfigured),
            Some(entry) => {
                if let Some(p) = entry
                    .ignore_repos
                    .iter()
                    .find(|p| repository_under(p, &target.repository))
                {
                    return Err(Skip::IgnoredRepo(p.clone()));
                }
            }
            None => {}
        }
        let normalized = r.to_string();
        if let Some(p) = self
            .cfg
            .ignore
            .iter()
            .find(|p| prefix_matches(p, &normalized))
        {
            return Err(Skip::Ignored(p.clone()));
        }
        let to = r.with_name(hostname, &target.cache_repository);
        let len = to.name().len();
        if len > MAX_NAME_LEN {
            return Err(Skip::TooLong(len));
        }
        Ok((
            to,
            Cached {
                registry: r.registry().to_string(),
                repository: target.repository,
                cache_repository: target.cache_repository,
            },
        ))
    }
}

/// Where a rewritten image is cached, and how to ask the proxy for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub registry: String,
    pub repository: String,
    pub cache_repository: String,
}

/// `prefix` covers `repository` at a `/` boundary (`a` covers `a` and `a/x`, not `ab`).
fn repository_under(prefix: &str, repository: &str) -> bool {
    repository
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podspec::Place;
    use trow_upstreams::config::{ProxyConfig, RegistryConfig};

    const TROW: &str = "trow.example.com";
    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn proxy() -> ProxyConfig {
        ProxyConfig {
            registries: vec![
                RegistryConfig {
                    host: "docker.io".into(),
                    ignore_repos: vec!["library/alpine".into(), "internal".into()],
                    ..RegistryConfig::default()
                },
                RegistryConfig {
                    host: "registry.example.com:5000".into(),
                    ..RegistryConfig::default()
                },
                RegistryConfig {
                    host: "quay.io".into(),
                    alias: Some("q".into()),
                    ..RegistryConfig::default()
                },
            ],
            ..ProxyConfig::default()
        }
    }

    fn mutator(cfg: MutationConfig, hostname: Option<&str>) -> Mutator {
        Mutator::new(
            cfg.validate().unwrap(),
            Resolver::new(&proxy()),
            hostname.map(String::from),
        )
    }

    fn to(m: &Mutator, image: &str) -> Result<String, Skip> {
        m.rewrite(TROW, image).map(|(r, _)| r.to_string())
    }

    #[test]
    fn configured_registries_are_rewritten() {
        let m = mutator(MutationConfig::default(), Some(TROW));
        assert_eq!(
            to(&m, "nginx:1.27").unwrap(),
            "trow.example.com/f/docker.io/library/nginx:1.27"
        );
        assert_eq!(
            to(&m, "nginx").unwrap(),
            "trow.example.com/f/docker.io/library/nginx:latest"
        );
        assert_eq!(
            to(&m, &format!("index.docker.io/library/nginx:1.27@{D}")).unwrap(),
            format!("trow.example.com/f/docker.io/library/nginx:1.27@{D}")
        );
        assert_eq!(
            to(&m, &format!("bitnami/redis@{D}")).unwrap(),
            format!("trow.example.com/f/docker.io/bitnami/redis@{D}")
        );
        assert_eq!(
            to(&m, "registry.example.com:5000/team/app:1").unwrap(),
            "trow.example.com/f/registry.example.com_5000/team/app:1"
        );
        assert_eq!(
            to(&m, "quay.io/coreos/etcd:v3.5").unwrap(),
            "trow.example.com/f/q/coreos/etcd:v3.5"
        );
        let (_, cached) = m.rewrite(TROW, "nginx:1.27").unwrap();
        assert_eq!(
            cached,
            Cached {
                registry: "docker.io".into(),
                repository: "library/nginx".into(),
                cache_repository: "f/docker.io/library/nginx".into(),
            }
        );
    }

    #[test]
    fn what_is_left_alone() {
        let m = mutator(MutationConfig::default(), Some(TROW));
        assert_eq!(to(&m, "ghcr.io/x/y:1"), Err(Skip::NotConfigured));
        assert_eq!(
            to(&m, "trow.example.com/f/docker.io/library/nginx:1"),
            Err(Skip::OnTrow)
        );
        assert_eq!(to(&m, "Trow.Example.com/team/app"), Err(Skip::OnTrow));
        assert_eq!(
            to(&m, "alpine:3"),
            Err(Skip::IgnoredRepo("library/alpine".into()))
        );
        assert_eq!(
            to(&m, "internal/tool"),
            Err(Skip::IgnoredRepo("internal".into()))
        );
        assert!(
            to(&m, "alpine-extra:3").is_ok(),
            "ignore_repos matches at '/' boundaries"
        );
        assert!(to(&m, "internalx/tool").is_ok());
        assert!(matches!(to(&m, "Nginx"), Err(Skip::Unparsable(_))));
        let all = MutationConfig {
            all_registries: true,
            ignore: vec![
                "ghcr.io/private/".into(),
                "registry.example.com:5000/team/app".into(),
            ],
            ..MutationConfig::default()
        };
        let m = mutator(all, Some(TROW));
        assert_eq!(
            to(&m, "ghcr.io/x/y:1").unwrap(),
            "trow.example.com/f/ghcr.io/x/y:1"
        );
        assert_eq!(
            to(&m, "ghcr.io/private/y"),
            Err(Skip::Ignored("ghcr.io/private/".into()))
        );
        assert!(matches!(
            to(&m, "registry.example.com:5000/team/app:2"),
            Err(Skip::Ignored(_))
        ));
        assert!(to(&m, "registry.example.com:5000/team/app-2").is_ok());
        assert_eq!(
            to(&m, "10.1.2.3:5000/app").unwrap(),
            "trow.example.com/f/10.1.2.3_5000/app:latest"
        );
    }

    #[test]
    fn a_rewrite_longer_than_runtimes_accept_is_left_alone() {
        let m = mutator(MutationConfig::default(), Some(TROW));
        // `trow.example.com/f/docker.io/library/` is 37 characters: 218 more make 255.
        let image = |n: usize| format!("{}:1", "a".repeat(n));
        let fits = to(&m, &image(218)).unwrap();
        assert_eq!(fits.len(), 255 + ":1".len());
        assert_eq!(to(&m, &image(219)), Err(Skip::TooLong(256)));
        // The hostname's port counts: `trow.example.com:8443/` is 5 characters longer.
        let (with_port, _) = m.rewrite("trow.example.com:8443", &image(213)).unwrap();
        assert_eq!(with_port.name().len(), 255);
        assert_eq!(
            m.rewrite("trow.example.com:8443", &image(214)),
            Err(Skip::TooLong(256))
        );
        // Tags and digests are not part of the name.
        let pinned = format!("{}:{}@{D}", "a".repeat(218), "t".repeat(128));
        assert!(to(&m, &pinned).is_ok());
        let skip = to(&m, &image(219)).unwrap_err().to_string();
        assert!(
            skip.contains("256 characters") && skip.contains("255"),
            "{skip}"
        );
    }

    #[test]
    fn configured_only_leaves_unlisted_registries() {
        let cfg = ProxyConfig {
            configured_only: true,
            ..proxy()
        };
        let all = MutationConfig {
            all_registries: true,
            ..MutationConfig::default()
        };
        let m = Mutator::new(all, Resolver::new(&cfg), Some(TROW.into()));
        assert_eq!(to(&m, "ghcr.io/x/y:1"), Err(Skip::NotConfigured));
        assert!(to(&m, "nginx").is_ok());
    }

    #[test]
    fn plans_patch_updates_and_hostnames() {
        let site = |i: usize, image: &str| ImageSite {
            pointer: format!("/spec/containers/{i}/image"),
            place: Place::Containers,
            name: format!("c{i}"),
            image: image.into(),
        };
        let images = [
            site(0, "nginx:1.28"),
            site(1, "quay.io/a/b:1"),
            site(2, "ghcr.io/x"),
        ];
        let m = mutator(MutationConfig::default(), Some(TROW));
        let old = |s: &ImageSite| s.pointer == "/spec/containers/1/image";
        let plan = m.plan(&images, old);
        assert_eq!(plan.rewrites.len(), 1);
        let r = &plan.rewrites[0];
        assert_eq!(r.to, "trow.example.com/f/docker.io/library/nginx:1.28");
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("docker.io", "library/nginx", "1.28")
        );
        assert_eq!(
            (r.site.name.as_str(), r.site.image.as_str()),
            ("c0", "nginx:1.28")
        );
        assert_eq!(plan.skipped[0].1, Skip::Unchanged);
        assert_eq!(plan.skipped[1].1, Skip::NotConfigured);
        let patch = serde_json::to_string(&plan.patch()).unwrap();
        assert_eq!(
            patch,
            r#"[{"op":"replace","path":"/spec/containers/0/image","value":"trow.example.com/f/docker.io/library/nginx:1.28"}]"#
        );
        let digest = m.plan(&[site(0, &format!("nginx:1@{D}"))], |_| false);
        assert_eq!(digest.rewrites[0].reference, D);
        let none = mutator(MutationConfig::default(), None).plan(&images, |_| false);
        assert!(none.rewrites.is_empty() && none.patch().is_empty());
        assert_eq!(none.warnings, [NO_HOSTNAME]);
        assert!(none.warnings[0].contains("--hostname"));
        let off = MutationConfig {
            enabled: false,
            ..MutationConfig::default()
        };
        let plan = mutator(off, Some(TROW)).plan(&images, |_| false);
        assert!(plan.rewrites.is_empty() && plan.warnings.is_empty());
    }
}
