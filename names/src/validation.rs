//! The `image_validation` section of Trow's `--config-file` YAML: which images may run (the
//! validating webhook) and may be pulled through the cache (the proxy).
//!
//! ```yaml
//! image_validation:              # as the original Trow spelled it
//!   default: Deny                # Allow or Deny (also allow/deny): for images no prefix covers
//!   allow: [my-trow.example.com/, registry.k8s.io/]
//!   deny:  [my-trow.example.com/secret/]
//!   enforce_in_proxy: true       # the proxy refuses denied images too (the default)
//! ```
//!
//! Everything is checked at start-up and errors name the key (`image_validation.allow[2]:
//! ...`; indexes count from 0), so a typo in a policy stops Trow instead of quietly admitting
//! or refusing pods. Unknown keys are errors too.
//!
//! Prefixes are normalized the way images are (see [`crate::image`]), so that a policy
//! written with one spelling matches every spelling of the image:
//! - `registry/` or `registry/path/` (ending in `/`) covers everything under it; a first
//!   component without `.`, `:` or `localhost` is a Docker Hub namespace (`bitnami/` is
//!   `docker.io/bitnami/`), and Docker Hub's other names become `docker.io`;
//! - anything else is read as an image reference without the default tag: `nginx` is
//!   `docker.io/library/nginx` (and so covers every tag and digest of it), `docker.io/nginx`
//!   too, while `docker.io/nginx/` is the `nginx` namespace;
//! - a prefix without `/` that could be a registry (`quay.io`, `host:5000`) is refused as
//!   ambiguous: write `quay.io/` for the registry.
//!
//! How prefixes match (at component boundaries, longest wins) is [`crate::policy`]'s rule.

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::authority::{Authority, DOCKER_HUB_NAME};
use crate::grammar::{valid_component, valid_repository};
use crate::image::{self, names_registry, normalize_registry};

/// A config value that was refused; the message starts with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

/// A [`ConfigError`] for `key`.
pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// What happens to an image no prefix covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// `Allow` or `Deny`, as the config spells it.
impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decision::Allow => "Allow",
            Decision::Deny => "Deny",
        })
    }
}

impl Decision {
    /// `Allow` or `Deny` as the original Trow wrote them, or all lowercase as YAML users often
    /// do; nothing else (`ALLOW`, `true`, `yes`), so that a typo is an error, not a guess.
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "Allow" | "allow" => Some(Decision::Allow),
            "Deny" | "deny" => Some(Decision::Deny),
            _ => None,
        }
    }
}

/// The validated `image_validation` section: which images pods may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationConfig {
    pub default: Decision,
    /// Normalized prefixes of images that are allowed.
    pub allow: Vec<String>,
    /// Normalized prefixes of images that are denied.
    pub deny: Vec<String>,
    /// The proxy refuses to fetch or serve what the policy denies (`true` unless configured):
    /// without it, any name of Trow the webhook does not know (`localhost:8000/f/...`, a pod
    /// IP) would pull a denied image through the cache.
    pub enforce_in_proxy: bool,
}

impl ValidationConfig {
    /// A policy enforced by the proxy too, prefixes not yet normalized (see
    /// [`ValidationConfig::validate`]).
    pub fn new(default: Decision, allow: Vec<String>, deny: Vec<String>) -> ValidationConfig {
        ValidationConfig {
            default,
            allow,
            deny,
            enforce_in_proxy: true,
        }
    }

    /// Checks and normalizes every prefix. Idempotent, so a config built in code can be passed
    /// through it too.
    pub fn validate(self) -> Result<ValidationConfig, ConfigError> {
        Ok(ValidationConfig {
            allow: normalize_all("image_validation.allow", self.allow)?,
            deny: normalize_all("image_validation.deny", self.deny)?,
            ..self
        })
    }
}

/// Normalizes each prefix of the list at `key`; an error names the entry (`key[i]`).
pub fn normalize_all(key: &str, prefixes: Vec<String>) -> Result<Vec<String>, ConfigError> {
    prefixes
        .iter()
        .enumerate()
        .map(|(i, p)| normalize_prefix(p).map_err(|reason| invalid(format!("{key}[{i}]"), reason)))
        .collect()
}

/// The normalized form of an image prefix (see the module doc), or why it is not one.
pub fn normalize_prefix(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("is empty".into());
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{p:?} contains whitespace"));
    }
    let Some(body) = p.strip_suffix('/') else {
        if !p.contains('/') && names_registry(p) && Authority::parse(p).is_ok() {
            return Err(format!(
                "{p:?} is ambiguous: write {:?} for everything in that registry, or a \
                 repository with its registry (e.g. \"docker.io/library/nginx\")",
                format!("{p}/")
            ));
        }
        return image::parse(p, false)
            .map(|r| r.to_string())
            .map_err(|e| format!("{p:?} is not an image reference prefix: {e}"));
    };
    let (registry, path) = match body.split_once('/') {
        Some((first, path)) if names_registry(first) => (first, Some(path)),
        None if names_registry(body) => (body, None),
        _ => (DOCKER_HUB_NAME, Some(body)),
    };
    let registry =
        normalize_registry(registry).map_err(|e| format!("{p:?} is not a valid prefix: {e}"))?;
    match path {
        None => Ok(format!("{registry}/")),
        Some(path) if valid_repository(path) => Ok(format!("{registry}/{path}/")),
        Some(path) => {
            let bad = path
                .split('/')
                .find(|c| !valid_component(c))
                .unwrap_or(path);
            Err(format!(
                "{p:?} is not a valid prefix: {bad:?} is not a repository path component \
                 (lowercase letters and digits separated by '.', '_', '__' or dashes)"
            ))
        }
    }
}

/// Deserializing also validates, so a config file struct may hold
/// `image_validation: Option<ValidationConfig>` and get serde_yaml's line numbers in errors.
impl<'de> Deserialize<'de> for ValidationConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ValidationConfig, D::Error> {
        let raw = RawValidationConfig::deserialize(d)?;
        let default = Decision::parse(&raw.default).ok_or_else(|| {
            de::Error::custom(invalid(
                "image_validation.default",
                format!("{:?} is neither Allow nor Deny", raw.default),
            ))
        })?;
        ValidationConfig {
            default,
            allow: raw.allow,
            deny: raw.deny,
            enforce_in_proxy: raw.enforce_in_proxy,
        }
        .validate()
        .map_err(de::Error::custom)
    }
}

/// The section as written. `default` is a string so that a bad value is reported with its key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidationConfig {
    default: String,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default = "yes")]
    enforce_in_proxy: bool,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        image_validation: Option<ValidationConfig>,
    }

    fn validation(text: &str) -> Result<ValidationConfig, String> {
        serde_yaml::from_str::<File>(&format!("image_validation:\n{text}"))
            .map(|f| f.image_validation.unwrap())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn default_is_required_and_checked() {
        let e = validation("  allow: [quay.io/]").unwrap_err();
        assert!(e.contains("missing field `default`"), "{e}");
        for bad in ["Permit", "ALLOW", "true", "''", "Allow "] {
            let e = validation(&format!("  default: \"{bad}\"")).unwrap_err();
            assert!(
                e.contains("image_validation.default: ") && e.contains("is neither Allow nor Deny"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_proxy_enforces_unless_told_not_to() {
        let v = validation("  default: Deny\n  allow: [quay.io/]").unwrap();
        assert!(v.enforce_in_proxy);
        assert_eq!(
            v,
            ValidationConfig::new(Decision::Deny, vec!["quay.io/".into()], vec![])
        );
        assert!(
            !validation("  default: Deny\n  enforce_in_proxy: false")
                .unwrap()
                .enforce_in_proxy
        );
        let e = validation("  default: Deny\n  enforce_in_proxy: maybe").unwrap_err();
        assert!(e.contains("enforce_in_proxy"), "{e}");
        let e = validation("  default: Deny\n  enforce_in_prxy: false").unwrap_err();
        assert!(e.contains("unknown field `enforce_in_prxy`"), "{e}");
    }

    #[test]
    fn prefix_normalization() {
        let n = |p: &str| normalize_prefix(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(n("docker.io/"), "docker.io/");
        assert_eq!(n("index.docker.io/"), "docker.io/");
        assert_eq!(n("registry-1.docker.io/library/"), "docker.io/library/");
        assert_eq!(n("Quay.IO/"), "quay.io/");
        assert_eq!(n("host:5000/"), "host:5000/");
        assert_eq!(n("[0::1]:5000/team/"), "[::1]:5000/team/");
        assert_eq!(n("bitnami/"), "docker.io/bitnami/");
        assert_eq!(n("docker.io/nginx/"), "docker.io/nginx/");
        assert_eq!(n("nginx"), "docker.io/library/nginx");
        assert_eq!(n("docker.io/nginx"), "docker.io/library/nginx");
        assert_eq!(
            n("index.docker.io/nginx:1.27"),
            "docker.io/library/nginx:1.27"
        );
        assert_eq!(n("docker.io/lib"), "docker.io/library/lib");
        assert_eq!(n("quay.io/coreos/etcd"), "quay.io/coreos/etcd");
        assert_eq!(n("nginx:1.27"), "docker.io/library/nginx:1.27");
        // Default ports are the registry itself.
        assert_eq!(n("quay.io:443/evil/"), "quay.io/evil/");
        assert_eq!(n("registry-1.docker.io:443/library/"), "docker.io/library/");
        for bad in [
            "",
            " quay.io/",
            "quay.io",
            "host:5000",
            "localhost",
            "quay.io//",
            "/",
            "quay.io/Team/",
            "a..b/",
            "quay.io/x:",
            "quay.io/x@sha256:12",
            "https://quay.io/",
        ] {
            assert!(normalize_prefix(bad).is_err(), "{bad:?}");
        }
        let e = normalize_prefix("quay.io").unwrap_err();
        assert!(e.contains("write \"quay.io/\""), "{e}");
    }
}
