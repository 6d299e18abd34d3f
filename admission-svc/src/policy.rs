//! The validating webhook's decision: may a pod run this image?
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
//! itself) is unwrapped too.

use std::fmt;

use trow_proxy::reference::Resolver;

use crate::config::{Decision, ValidationConfig};
use crate::image::{ImageRef, names_registry, normalize_registry};

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

/// Judges an image as a pod wrote it. `trow_hostname` is Trow's `--hostname`, normalized
/// (lowercase) as an image's registry; `resolver` is the proxy's, for images in Trow's cache.
pub fn check(
    cfg: &ValidationConfig,
    image: &str,
    trow_hostname: Option<&str>,
    resolver: &Resolver,
) -> Verdict {
    match ImageRef::parse(image) {
        Ok(r) => check_ref(cfg, &r, trow_hostname, resolver),
        Err(e) => invalid(e.to_string(), None),
    }
}

/// Judges a parsed image; see [`check`].
pub fn check_ref(
    cfg: &ValidationConfig,
    image: &ImageRef,
    trow_hostname: Option<&str>,
    resolver: &Resolver,
) -> Verdict {
    let mut judged = image.clone();
    let mut layers = 0;
    if let Some(host) = trow_hostname {
        loop {
            match cached_origin(&judged, host, resolver) {
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
    let (allowed, reason) = decide(cfg, &judged.to_string());
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

/// For `<trow>/f/<registry>/<repository>`, the image Trow's cache fetches; `None` for any other
/// image. Fails when the proxy could not serve it (the pull would fail too).
fn cached_origin(
    image: &ImageRef,
    trow_hostname: &str,
    resolver: &Resolver,
) -> Result<Option<ImageRef>, String> {
    if image.registry() != trow_hostname {
        return Ok(None);
    }
    let Some(rest) = image.repository().strip_prefix("f/") else {
        return Ok(None);
    };
    let target = resolver
        .resolve_path(rest)
        .map_err(|e| format!("it is in Trow's cache (f/), which cannot serve it: {e}"))?;
    let written = rest.split('/').next().unwrap_or(rest);
    let by_alias = target.registry.as_ref().and_then(|r| r.alias.as_deref()) == Some(written);
    let registry = match &target.registry {
        // A mirror standing in for a registry under its name.
        Some(_) if by_alias && names_registry(written) => {
            normalize_registry(written).or_else(|_| normalize_registry(&target.upstream.host))
        }
        _ => normalize_registry(&target.upstream.host),
    }
    .map_err(|e| e.to_string())?;
    Ok(Some(image.with_name(&registry, &target.repository)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trow_proxy::config::{ProxyConfig, RegistryConfig};

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const TROW: &str = "trow.example.com";

    fn cfg(default: Decision, allow: &[&str], deny: &[&str]) -> ValidationConfig {
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        ValidationConfig {
            default,
            allow: strings(allow),
            deny: strings(deny),
        }
        .validate()
        .unwrap()
    }

    fn resolver() -> Resolver {
        Resolver::new(&ProxyConfig {
            registries: vec![
                RegistryConfig {
                    host: "registry.example.com:5000".into(),
                    alias: Some("example".into()),
                    ..RegistryConfig::default()
                },
                RegistryConfig {
                    host: "mirror.local".into(),
                    alias: Some("gcr.io".into()),
                    ..RegistryConfig::default()
                },
            ],
            ..ProxyConfig::default()
        })
    }

    fn verdict(c: &ValidationConfig, image: &str) -> Verdict {
        check(c, image, Some(TROW), &resolver())
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
    fn images_in_trows_cache_are_judged_as_their_origin() {
        let c = cfg(
            Decision::Deny,
            &[
                "docker.io/library/",
                "registry.example.com:5000/",
                "gcr.io/",
            ],
            &[
                "docker.io/library/evil",
                "registry.example.com:5000/secret/",
            ],
        );
        let ok = verdict(&c, "trow.example.com/f/docker.io/library/nginx:1.27");
        assert!(ok.allowed, "{ok}");
        assert_eq!(
            ok.judged_as.as_deref(),
            Some("docker.io/library/nginx:1.27")
        );
        assert!(ok.to_string().ends_with(
            "allowed by prefix \"docker.io/library/\" (judged as \
             \"docker.io/library/nginx:1.27\", the image it caches)"
        ));
        // Every spelling of the upstream, and of Trow's hostname, comes to the same image.
        for image in [
            "TROW.example.com/f/docker.io/nginx",
            "trow.example.com/f/index.docker.io/library/nginx",
        ] {
            let v = verdict(&c, image);
            assert!(v.allowed, "{image}: {v}");
            assert_eq!(
                v.judged_as.as_deref(),
                Some("docker.io/library/nginx:latest")
            );
        }
        let evil = verdict(&c, "trow.example.com/f/docker.io/library/evil:1");
        assert!(
            !evil.allowed && evil.to_string().contains("denied by prefix"),
            "{evil}"
        );
        // host_port and the alias both name registry.example.com:5000.
        for image in [
            "trow.example.com/f/registry.example.com_5000/secret/x",
            "trow.example.com/f/example/secret/x",
        ] {
            let v = verdict(&c, image);
            assert!(!v.allowed, "{image}: {v}");
            assert_eq!(
                v.judged_as.as_deref(),
                Some("registry.example.com:5000/secret/x:latest")
            );
        }
        assert!(verdict(&c, "trow.example.com/f/example/team/x").allowed);
        // A mirror's alias that is a registry name is judged under that name.
        let mirror = verdict(&c, "trow.example.com/f/gcr.io/proj/x");
        assert_eq!(mirror.judged_as.as_deref(), Some("gcr.io/proj/x:latest"));
        assert!(mirror.allowed, "{mirror}");
        // Nesting does not hide the origin.
        let nested = verdict(
            &c,
            "trow.example.com/f/trow.example.com/f/docker.io/library/evil",
        );
        assert!(!nested.allowed, "{nested}");
        assert_eq!(
            nested.judged_as.as_deref(),
            Some("docker.io/library/evil:latest")
        );
        let deep = format!(
            "trow.example.com{}/docker.io/library/nginx",
            "/f/trow.example.com".repeat(5)
        );
        assert!(
            verdict(&c, &deep)
                .to_string()
                .contains("more than 4 layers")
        );
        // Not under f/, or no hostname: judged as written.
        let own = verdict(&c, "trow.example.com/team/app");
        assert!(!own.allowed && own.judged_as.is_none(), "{own}");
        let no_host = check(
            &c,
            "trow.example.com/f/docker.io/library/nginx",
            None,
            &resolver(),
        );
        assert!(!no_host.allowed && no_host.judged_as.is_none());
        // What the cache cannot serve is refused with the proxy's reason.
        let bad = verdict(&c, "trow.example.com/f/library/nginx");
        assert!(
            !bad.allowed && bad.to_string().contains("Trow's cache"),
            "{bad}"
        );
    }
}
