//! The proxy's side of `image_validation`: the cache refuses to fetch, or serve from what it
//! holds, an image the policy denies (`403 DENIED`, before any upstream request or cache read).
//!
//! The validating webhook judges images under the names pods write, but Trow answers to names
//! the webhook never sees (`localhost:8000/f/...`, a pod IP, a Service name), so a pull through
//! any of them would reach a denied image if only the webhook judged. The proxy judges the
//! request as it resolved it, with the webhook's own code (`trow_names::policy`): the registry
//! as the policy names it (Docker Hub is `docker.io`, a mirror's alias that is a registry name
//! is that registry), the repository, and the tag or digest when the request names one. What
//! a request without a tag may reach (blobs, tag lists, manifests by digest) is
//! [`trow_names::policy::check_request`]'s rule.

use trow_names::image::normalize_registry;
use trow_names::policy::{Verdict, check_request};
use trow_names::validation::invalid;
use trow_names::{ConfigError, ImageRef, ValidationConfig};

use crate::reference::{Resolver, Target, policy_registry};

/// A request the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("image {image:?} is denied by image_validation: {verdict}")]
pub struct Denied {
    /// The image as judged: `registry/repository`, with the request's tag or digest.
    pub image: String,
    pub verdict: Verdict,
}

/// The policy as the proxy enforces it.
#[derive(Debug)]
pub struct Enforcer {
    cfg: ValidationConfig,
    /// Trow's `--hostname` as an image's registry, to judge `<trow>/f/...` as its origin.
    hostname: Option<String>,
}

impl Enforcer {
    /// The enforcer for `cfg`, or `None` when `cfg.enforce_in_proxy` is off. `hostname` is
    /// Trow's `--hostname`; one that is not a registry name is an error naming it.
    pub fn new(
        cfg: ValidationConfig,
        hostname: Option<&str>,
    ) -> Result<Option<Enforcer>, ConfigError> {
        if !cfg.enforce_in_proxy {
            return Ok(None);
        }
        let hostname = hostname
            .map(|h| normalize_registry(h).map_err(|e| invalid("--hostname", e.to_string())))
            .transpose()?;
        Ok(Some(Enforcer { cfg, hostname }))
    }

    /// Whether the policy lets the proxy serve `target` (named `written`, the segment after
    /// `f/` or the `ns` parameter) at `reference` (a tag or digest; none for blobs and tag
    /// lists).
    pub fn judge(
        &self,
        resolver: &Resolver,
        written: &str,
        target: &Target,
        reference: Option<&str>,
    ) -> Result<(), Denied> {
        let image = policy_registry(target, written)
            .and_then(|r| {
                ImageRef::of_request(&r, &target.repository, reference).map_err(|e| e.to_string())
            })
            .map_err(|why| Denied {
                image: format!("{}/{}", target.upstream.host, target.repository),
                verdict: Verdict {
                    allowed: false,
                    reason: trow_names::policy::Reason::Invalid(why),
                    judged_as: None,
                },
            })?;
        let verdict = check_request(&self.cfg, &image, self.hostname.as_deref(), resolver);
        if verdict.allowed {
            Ok(())
        } else {
            Err(Denied {
                image: image.to_string(),
                verdict,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProxyConfig, RegistryConfig};
    use trow_names::Decision;
    use trow_names::policy::check;

    const TROW: &str = "trow.example.com";

    fn cfg(default: Decision, allow: &[&str], deny: &[&str]) -> ValidationConfig {
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        ValidationConfig::new(default, strings(allow), strings(deny))
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

    /// Requests as the gateway passes them: the written registry, the repository.
    fn judge(e: &Enforcer, written: &str, repository: &str, reference: Option<&str>) -> bool {
        let r = resolver();
        let t = if written.contains(':') {
            r.resolve_ns(written, repository)
        } else {
            r.resolve_path(&format!("{written}/{repository}"))
        }
        .unwrap();
        e.judge(&r, written, &t, reference).is_ok()
    }

    #[test]
    fn every_spelling_of_a_denied_image_is_refused() {
        let policy = cfg(
            Decision::Allow,
            &[],
            &["quay.io/evil/", "docker.io/library/busybox", "gcr.io/bad/"],
        );
        let e = Enforcer::new(policy, Some(TROW)).unwrap().unwrap();
        for (written, repository) in [
            ("quay.io", "evil/x"),
            ("quay.io:443", "evil/x"),
            ("quay.io_443", "evil/x"),
            ("QUAY.IO", "evil/x"),
            ("docker.io", "busybox"),
            ("docker.io:443", "library/busybox"),
            ("registry-1.docker.io_443", "library/busybox"),
            ("index.docker.io", "library/busybox"),
            ("gcr.io", "bad/x"),
            (TROW, "f/quay.io/evil/x"),
        ] {
            for reference in [None, Some("1")] {
                assert!(
                    !judge(&e, written, repository, reference),
                    "{written}/{repository} {reference:?}"
                );
            }
        }
        assert!(judge(&e, "quay.io", "good/x", Some("1")));
        assert!(judge(&e, "example", "x", None));
        let off = ValidationConfig {
            enforce_in_proxy: false,
            ..cfg(Decision::Deny, &[], &[])
        };
        assert!(Enforcer::new(off, None).unwrap().is_none());
        let e = Enforcer::new(cfg(Decision::Deny, &[], &[]), Some("trow example"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--hostname: "), "{e}");
        let denied = Enforcer::new(cfg(Decision::Deny, &[], &[]), None)
            .unwrap()
            .unwrap();
        let r = resolver();
        let t = r.resolve_path("quay.io/evil/x").unwrap();
        let msg = denied
            .judge(&r, "quay.io", &t, Some("1"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "image \"quay.io/evil/x:1\" is denied by image_validation: neither explicitly \
             allowed nor denied: denied by the default (Deny)"
        );
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
