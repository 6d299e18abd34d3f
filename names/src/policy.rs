//! The validation policy's decision: may a pod run this image, may the cache fetch it?
//!
//! The image is normalized first ([`crate::image`]), and the prefixes of `image_validation`
//! were normalized at start-up the same way, so `nginx`, `docker.io/nginx` and
//! `index.docker.io/library/nginx:latest` are all judged as `docker.io/library/nginx:latest`.
//!
//! **Matching.** A prefix `P` covers a normalized reference `R` when `R` starts with `P` and `P`
//! ends in `/`, or `R` is `P`, or the character of `R` right after `P` is `/`, `:` or `@`. So a
//! prefix only ever ends at a boundary: `docker.io/library/nginx` covers `nginx:1.27`,
//! `nginx@sha256:...` and `docker.io/library/nginx/x`, but not `docker.io/library/nginx-evil`,
//! and `quay.io/lib` does not cover `quay.io/library/x`. (A bare registry would also cover
//! its other ports, `quay.io` covering `quay.io:8443/x`; the config refuses it as ambiguous and
//! asks for `quay.io/`, which covers that registry on its default port only.)
//!
//! **Precedence.** The longest covering prefix wins, whichever list it is in; when an allow
//! and a deny prefix are equally long (the same prefix in both), deny wins. With no covering
//! prefix the `default` decides. An image that cannot be parsed is denied, with the reason.
//!
//! **Trow's own cache.** An image `<trow-hostname>/f/<registry>/<repository>` is pulled from
//! Trow, which fetches `<registry>/<repository>`; it is judged as that image, resolved as the
//! proxy resolves it (`f/host_5000/app` is `host:5000/app`, an alias is its host). So the
//! mutating webhook's rewrite needs no policy entry of its own, and `f/` is no way around a
//! deny. An alias that is itself a registry name (`gcr.io` for a mirror standing in for it) is
//! judged under that name, as the image was before the rewrite. Nested `f/` (Trow proxying
//! itself) is unwrapped too. What `f/<path>` fetches is the proxy's to say ([`CacheOrigin`],
//! implemented by its resolver), so this crate depends on neither proxy nor admission.
//!
//! **Requests to the proxy** ([`check_request`]) are judged like images, with one difference:
//! a manifest by tag is judged as `name:tag`, but a request that names no tag (a blob, a tag
//! list, a manifest by digest: what an allowed image's pull asks for after its tag) is refused
//! only when *no* reference of the repository could be allowed, or when a prefix names that
//! very digest. So `allow: [docker.io/library/nginx:1.27]` under `default: Deny` lets the
//! blobs and index children of `nginx:1.27` through, while `nginx:1.28` by tag is refused.

use std::fmt;

use crate::image::ImageRef;
use crate::validation::{Decision, ValidationConfig};

/// How many `<trow>/f/` layers are unwrapped before the image is refused.
const MAX_NESTING: usize = 4;

/// Whether prefix `p` covers the normalized reference `r` (the boundary rule above).
pub fn prefix_matches(p: &str, r: &str) -> bool {
    r.strip_prefix(p).is_some_and(|rest| {
        p.ends_with('/') || rest.is_empty() || rest.starts_with(['/', ':', '@'])
    })
}

/// Why an image was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The longest covering prefix, from the allow list when allowed, else from the deny list.
    Prefix(String),
    /// No prefix covers the image.
    Default(Decision),
    /// The image (or, under Trow's cache, the image it caches) cannot be understood.
    Invalid(String),
}

/// The decision on one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: Reason,
    /// For an image in Trow's cache: the normalized image it caches, which was judged.
    pub judged_as: Option<String>,
}

/// `allowed by prefix "quay.io/"`, `neither explicitly allowed nor denied: denied by the
/// default (Deny)`, `not a valid image reference: ...`, then for a cached image
/// ` (judged as "docker.io/library/nginx:1", the image it caches)`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.allowed { "allowed" } else { "denied" };
        match &self.reason {
            Reason::Prefix(p) => write!(f, "{how} by prefix {p:?}")?,
            Reason::Default(d) => write!(
                f,
                "neither explicitly allowed nor denied: {how} by the default ({d})"
            )?,
            Reason::Invalid(why) => write!(f, "not a valid image reference: {why}")?,
        }
        match &self.judged_as {
            Some(origin) => write!(f, " (judged as {origin:?}, the image it caches)"),
            None => Ok(()),
        }
    }
}

/// What an image in Trow's cache fetches: for the path after `<trow>/f/`
/// (`docker.io/library/nginx`, `host_5000/app`, `<alias>/app`), the registry (normalized as an
/// image's, see [`crate::image::normalize_registry`]) and the repository there. The error says
/// why the cache could not serve it. The proxy's resolver implements it.
pub trait CacheOrigin {
    fn origin(&self, path: &str) -> Result<(String, String), String>;
}

/// Judges an image as a pod wrote it. `trow_hostname` is Trow's `--hostname`, normalized
/// (lowercase) as an image's registry; `cache` says what images in Trow's cache fetch.
pub fn check(
    cfg: &ValidationConfig,
    image: &str,
    trow_hostname: Option<&str>,
    cache: &dyn CacheOrigin,
) -> Verdict {
    match ImageRef::parse(image) {
        Ok(r) => check_ref(cfg, &r, trow_hostname, cache),
        Err(e) => invalid(e.to_string(), None),
    }
}

/// Judges a parsed image; see [`check`].
pub fn check_ref(
    cfg: &ValidationConfig,
    image: &ImageRef,
    trow_hostname: Option<&str>,
    cache: &dyn CacheOrigin,
) -> Verdict {
    judge(image, trow_hostname, cache, |judged| {
        decide(cfg, &judged.to_string())
    })
}

/// Judges what the proxy is asked for: `image` as [`ImageRef::of_request`] builds it (the tag
/// or digest of a manifest request, neither for blobs and tag lists); see the module doc.
pub fn check_request(
    cfg: &ValidationConfig,
    image: &ImageRef,
    trow_hostname: Option<&str>,
    cache: &dyn CacheOrigin,
) -> Verdict {
    judge(image, trow_hostname, cache, |judged| {
        decide_request(cfg, judged)
    })
}

/// Unwraps `<trow>/f/` layers, then decides on the image they cache.
fn judge(
    image: &ImageRef,
    trow_hostname: Option<&str>,
    cache: &dyn CacheOrigin,
    decide: impl Fn(&ImageRef) -> (bool, Reason),
) -> Verdict {
    let mut judged = image.clone();
    let mut layers = 0;
    if let Some(host) = trow_hostname {
        loop {
            match cached_origin(&judged, host, cache) {
                Ok(Some(origin)) if layers == MAX_NESTING => {
                    let why = format!("more than {MAX_NESTING} layers of Trow's cache ({origin})");
                    return invalid(why, Some(origin.to_string()));
                }
                Ok(Some(origin)) => {
                    judged = origin;
                    layers += 1;
                }
                Ok(None) => break,
                Err(why) => return invalid(why, None),
            }
        }
    }
    let judged_as = (layers > 0).then(|| judged.to_string());
    let (allowed, reason) = decide(&judged);
    Verdict {
        allowed,
        reason,
        judged_as,
    }
}

fn invalid(why: String, judged_as: Option<String>) -> Verdict {
    Verdict {
        allowed: false,
        reason: Reason::Invalid(why),
        judged_as,
    }
}

/// The longest covering prefix (deny on a tie), else the default.
fn decide(cfg: &ValidationConfig, normalized: &str) -> (bool, Reason) {
    let mut best: Option<(bool, &str)> = None;
    let lists = [(false, &cfg.deny), (true, &cfg.allow)];
    for (allow, prefixes) in lists {
        for p in prefixes.iter().filter(|p| prefix_matches(p, normalized)) {
            // Deny is scanned first, so an allow must be strictly longer to take over.
            if best.is_none_or(|(_, b)| p.len() > b.len()) {
                best = Some((allow, p));
            }
        }
    }
    match best {
        Some((allowed, p)) => (allowed, Reason::Prefix(p.to_string())),
        None => (cfg.default == Decision::Allow, Reason::Default(cfg.default)),
    }
}

/// A request without a tag: denied only when the policy denies the repository as a whole (or
/// this very digest) and allows none of its tags or digests by name.
fn decide_request(cfg: &ValidationConfig, judged: &ImageRef) -> (bool, Reason) {
    let (allowed, reason) = decide(cfg, &judged.to_string());
    if allowed || judged.tag().is_some() {
        return (allowed, reason);
    }
    let name = judged.name();
    // A longer prefix than the name covering it can only be `name@<this digest>`.
    if matches!(&reason, Reason::Prefix(p) if p.len() > name.len()) {
        return (allowed, reason);
    }
    let names_a_reference = |p: &&String| {
        p.strip_prefix(name.as_str())
            .is_some_and(|rest| rest.starts_with([':', '@']))
    };
    match cfg
        .allow
        .iter()
        .filter(names_a_reference)
        .find(|p| decide(cfg, p).0)
    {
        Some(p) => (true, Reason::Prefix(p.clone())),
        None => (allowed, reason),
    }
}

/// For `<trow>/f/<registry>/<repository>`, the image Trow's cache fetches; `None` for any other
/// image. Fails when the proxy could not serve it (the pull would fail too).
fn cached_origin(
    image: &ImageRef,
    trow_hostname: &str,
    cache: &dyn CacheOrigin,
) -> Result<Option<ImageRef>, String> {
    if image.registry() != trow_hostname {
        return Ok(None);
    }
    let Some(rest) = image.repository().strip_prefix("f/") else {
        return Ok(None);
    };
    let (registry, repository) = cache
        .origin(rest)
        .map_err(|e| format!("it is in Trow's cache (f/), which cannot serve it: {e}"))?;
    Ok(Some(image.with_name(&registry, &repository)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const TROW: &str = "trow.example.com";

    fn cfg(default: Decision, allow: &[&str], deny: &[&str]) -> ValidationConfig {
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        ValidationConfig::new(default, strings(allow), strings(deny))
            .validate()
            .unwrap()
    }

    /// Images of these tests are never in Trow's cache, but one of them may claim to be.
    struct NoCache;

    impl CacheOrigin for NoCache {
        fn origin(&self, path: &str) -> Result<(String, String), String> {
            Err(format!("no cache here ({path})"))
        }
    }

    fn verdict(c: &ValidationConfig, image: &str) -> Verdict {
        check(c, image, Some(TROW), &NoCache)
    }

    #[test]
    fn the_boundary_rule() {
        assert!(prefix_matches(
            "docker.io/library/nginx",
            "docker.io/library/nginx:1"
        ));
        assert!(prefix_matches(
            "docker.io/library/nginx",
            "docker.io/library/nginx"
        ));
        assert!(prefix_matches(
            "docker.io/library/nginx",
            &format!("docker.io/library/nginx@{D}")
        ));
        assert!(prefix_matches(
            "docker.io/library/",
            "docker.io/library/nginx:1"
        ));
        assert!(prefix_matches("quay.io", "quay.io/x:1"));
        assert!(prefix_matches("quay.io", "quay.io:8443/x:1"));
        assert!(!prefix_matches("quay.io/", "quay.io:8443/x:1"));
        assert!(!prefix_matches(
            "docker.io/lib",
            "docker.io/library/nginx:1"
        ));
        assert!(!prefix_matches(
            "docker.io/library/nginx",
            "docker.io/library/nginx-evil:1"
        ));
        assert!(!prefix_matches(
            "docker.io/library/nginx:1",
            "docker.io/library/nginx:1.27"
        ));
        assert!(prefix_matches(
            "docker.io/library/nginx:1",
            &format!("docker.io/library/nginx:1@{D}")
        ));
    }

    #[test]
    fn allow_and_deny_table() {
        use Decision::{Allow, Deny};
        let hub_lib = cfg(Deny, &["docker.io/library/"], &[]);
        let nginx = cfg(Deny, &["docker.io/library/nginx"], &[]);
        let lib = cfg(Deny, &["quay.io/lib"], &[]);
        let hub_short = cfg(Deny, &["docker.io/lib"], &[]);
        let nested = cfg(
            Allow,
            &["evil.example.com/ok/", "quay.io/team/app"],
            &[
                "evil.example.com/",
                "quay.io/team/",
                "docker.io/library/nginx",
            ],
        );
        let tie = cfg(Allow, &["quay.io/x/"], &["quay.io/x/"]);
        let deny_all = cfg(Deny, &[], &[]);
        let allow_all = cfg(Allow, &[], &[]);
        let digest = format!("nginx@{D}");
        let cases: &[(&ValidationConfig, &str, bool, &str)] = &[
            (
                &hub_lib,
                "nginx",
                true,
                "allowed by prefix \"docker.io/library/\"",
            ),
            (&hub_lib, "nginx:1.27", true, "allowed by prefix"),
            (&hub_lib, "docker.io/nginx", true, "allowed by prefix"),
            (
                &hub_lib,
                "index.docker.io/library/nginx",
                true,
                "allowed by prefix",
            ),
            (
                &hub_lib,
                "bitnami/redis",
                false,
                "denied by the default (Deny)",
            ),
            (
                &nginx,
                "nginx:1.27",
                true,
                "allowed by prefix \"docker.io/library/nginx\"",
            ),
            (&nginx, &digest, true, "allowed by prefix"),
            (
                &nginx,
                "docker.io/library/nginx-evil",
                false,
                "neither explicitly",
            ),
            (&nginx, "nginx-evil:1", false, "neither explicitly"),
            (&lib, "quay.io/library/x", false, "neither explicitly"),
            (
                &hub_short,
                "docker.io/library/nginx",
                false,
                "neither explicitly",
            ),
            (&hub_short, "docker.io/lib:1", true, "allowed by prefix"),
            (&lib, "quay.io/lib/x", true, "allowed by prefix"),
            (
                &nested,
                "evil.example.com/x:1",
                false,
                "denied by prefix \"evil.example.com/\"",
            ),
            (
                &nested,
                "evil.example.com/ok/x",
                true,
                "allowed by prefix \"evil.example.com/ok/\"",
            ),
            (
                &nested,
                "quay.io/team/app:2",
                true,
                "allowed by prefix \"quay.io/team/app\"",
            ),
            (
                &nested,
                "quay.io/team/other",
                false,
                "denied by prefix \"quay.io/team/\"",
            ),
            (
                &nested,
                "nginx",
                false,
                "denied by prefix \"docker.io/library/nginx\"",
            ),
            (
                &nested,
                "ghcr.io/x/y",
                true,
                "allowed by the default (Allow)",
            ),
            (
                &tie,
                "quay.io/x/y",
                false,
                "denied by prefix \"quay.io/x/\"",
            ),
            (
                &deny_all,
                "quay.io/x/y",
                false,
                "neither explicitly allowed nor denied: denied by the default (Deny)",
            ),
            (
                &allow_all,
                "quay.io/x/y",
                true,
                "neither explicitly allowed nor denied: allowed by the default (Allow)",
            ),
            (
                &allow_all,
                "Nginx",
                false,
                "not a valid image reference: \"Nginx\" is not a valid repository",
            ),
            (
                &allow_all,
                "nginx@sha256:abc",
                false,
                "not a valid image reference: \"sha256:abc\"",
            ),
            (
                &allow_all,
                "",
                false,
                "not a valid image reference: it is empty",
            ),
        ];
        for (c, image, allowed, reason) in cases {
            let v = verdict(c, image);
            assert_eq!(v.allowed, *allowed, "{image}: {v}");
            assert!(
                v.to_string().contains(reason),
                "{image}: {v} (wanted {reason})"
            );
            assert_eq!(v.judged_as, None);
        }
    }

    #[test]
    fn default_ports_cannot_spell_around_a_deny() {
        let c = cfg(
            Decision::Allow,
            &[],
            &["quay.io/evil/", "docker.io/library/busybox"],
        );
        for image in [
            "quay.io:443/evil/x",
            "QUAY.IO:80/evil/x:1",
            "docker.io:443/library/busybox",
            "registry-1.docker.io:443/library/busybox",
            "index.docker.io:443/busybox:1.36",
        ] {
            let v = verdict(&c, image);
            assert!(!v.allowed, "{image}: {v}");
            assert!(v.to_string().contains("denied by prefix"), "{image}: {v}");
        }
        assert!(verdict(&c, "quay.io:8443/evil/x").allowed);
    }

    fn request(c: &ValidationConfig, name: &str, reference: Option<&str>) -> Verdict {
        let (registry, repository) = name.split_once('/').unwrap();
        let image = ImageRef::of_request(registry, repository, reference).unwrap();
        check_request(c, &image, Some(TROW), &NoCache)
    }

    #[test]
    fn requests_without_a_tag_follow_the_repository() {
        const NGINX: &str = "docker.io/library/nginx";
        // Only one tag allowed: its blobs and index children (by digest) must still pull.
        let one_tag = cfg(Decision::Deny, &["nginx:1.27"], &[]);
        assert!(request(&one_tag, NGINX, Some("1.27")).allowed);
        let v = request(&one_tag, NGINX, Some("1.28"));
        assert!(
            !v.allowed && v.to_string().contains("default (Deny)"),
            "{v}"
        );
        for reference in [None, Some(D)] {
            let v = request(&one_tag, NGINX, reference);
            assert!(v.allowed, "{reference:?}: {v}");
            assert_eq!(v.reason, Reason::Prefix(format!("{NGINX}:1.27")));
        }
        // Nothing of the repository allowed: every request refused.
        for reference in [None, Some(D), Some("1.27")] {
            let v = request(&one_tag, "docker.io/library/redis", reference);
            assert!(!v.allowed, "{reference:?}: {v}");
        }
        // A tag allowed and denied alike is denied (deny wins the tie), so nothing is allowed.
        let tie = cfg(Decision::Deny, &["nginx:1.27"], &["nginx:1.27"]);
        assert!(!request(&tie, NGINX, None).allowed);
        // A longer allow inside a denied repository opens it for blobs, not for other tags.
        let inside = cfg(Decision::Allow, &["nginx:1.27"], &["nginx"]);
        assert!(request(&inside, NGINX, None).allowed);
        assert!(request(&inside, NGINX, Some("1.27")).allowed);
        assert!(!request(&inside, NGINX, Some("latest")).allowed);
        // A prefix naming the digest decides for that digest.
        let digest = cfg(Decision::Allow, &["nginx:1.27"], &[&format!("nginx@{D}")]);
        let v = request(&digest, NGINX, Some(D));
        assert!(!v.allowed && v.to_string().contains(D), "{v}");
        assert!(request(&digest, NGINX, None).allowed);
        // A denied tag leaves the rest of an allowed repository alone.
        let deny_tag = cfg(Decision::Allow, &[], &["nginx:1.27"]);
        assert!(!request(&deny_tag, NGINX, Some("1.27")).allowed);
        assert!(request(&deny_tag, NGINX, None).allowed);
        // Whole repositories and registries are judged as for images.
        let evil = cfg(Decision::Allow, &[], &["quay.io/evil/"]);
        for reference in [None, Some(D), Some("1")] {
            assert!(!request(&evil, "quay.io/evil/x", reference).allowed);
            assert!(request(&evil, "quay.io/good/x", reference).allowed);
        }
    }
}
