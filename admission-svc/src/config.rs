//! The admission webhooks' two sections of Trow's `--config-file` YAML:
//!
//! ```yaml
//! image_validation:              # the validating webhook, as the original Trow spelled it
//!   default: Deny                # Allow or Deny (also allow/deny): for images no prefix covers
//!   allow: [my-trow.example.com/, registry.k8s.io/]
//!   deny:  [my-trow.example.com/secret/]
//! image_mutation:                # the mutating webhook
//!   enabled: true                # rewrite images to pull through Trow's cache
//!   all_registries: false        # every registry, not only those in registry_proxies
//!   ignore: [quay.io/internal/]  # images under these prefixes are never rewritten
//!   prewarm: true                # start filling the cache when a pod is admitted
//!   prewarm_concurrency: 4       # images warmed at once, at least 1
//!   prewarm_platforms: [linux/amd64]  # index children warmed; default linux/<Trow's arch>
//! ```
//!
//! As for `registry_proxies`, everything is checked at start-up and errors name the key
//! (`image_validation.allow[2]: ...`; indexes count from 0), so a typo in a policy stops Trow
//! instead of quietly admitting or refusing pods. Unknown keys are errors too.
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

use crate::image::{self, names_registry, normalize_registry};
use trow_proxy::reference::{Authority, DOCKER_HUB_NAME, valid_component, valid_repository};

/// Images warmed at once unless configured.
pub const DEFAULT_PREWARM_CONCURRENCY: usize = 4;

/// A config value that was refused; the message starts with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
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
}

impl ValidationConfig {
    /// Checks and normalizes every prefix. Idempotent, so a config built in code can be passed
    /// through it too.
    pub fn validate(self) -> Result<ValidationConfig, ConfigError> {
        Ok(ValidationConfig {
            default: self.default,
            allow: normalize_all("image_validation.allow", self.allow)?,
            deny: normalize_all("image_validation.deny", self.deny)?,
        })
    }
}

/// The validated `image_mutation` section: which images the mutating webhook rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutationConfig {
    pub enabled: bool,
    /// Rewrite the images of every registry, not only those with a `registry_proxies` entry.
    pub all_registries: bool,
    /// Normalized image prefixes that are never rewritten.
    pub ignore: Vec<String>,
    /// Start filling the cache with an image when a pod using it is admitted.
    pub prewarm: bool,
    /// Images warmed at once (at least 1).
    pub prewarm_concurrency: usize,
    /// The children of an image index that are warmed (`os/arch[/variant]`): the nodes'
    /// platforms. Default: `linux/<this machine's architecture>`.
    pub prewarm_platforms: Vec<String>,
}

/// This machine's platform as OCI names it (Go's GOOS/GOARCH): nodes usually match Trow's own.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        other => other,
    };
    format!("linux/{arch}")
}

impl Default for MutationConfig {
    fn default() -> MutationConfig {
        MutationConfig {
            enabled: true,
            all_registries: false,
            ignore: Vec::new(),
            prewarm: true,
            prewarm_concurrency: DEFAULT_PREWARM_CONCURRENCY,
            prewarm_platforms: vec![host_platform()],
        }
    }
}

impl MutationConfig {
    /// Checks and normalizes; idempotent.
    pub fn validate(self) -> Result<MutationConfig, ConfigError> {
        if self.prewarm_concurrency == 0 {
            return Err(invalid(
                "image_mutation.prewarm_concurrency",
                "must be at least 1",
            ));
        }
        for (i, p) in self.prewarm_platforms.iter().enumerate() {
            let parts: Vec<&str> = p.split('/').collect();
            let fine = (2..=3).contains(&parts.len())
                && parts.iter().all(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                });
            if !fine {
                return Err(invalid(
                    format!("image_mutation.prewarm_platforms[{i}]"),
                    format!("{p:?} is not os/architecture[/variant], e.g. linux/amd64"),
                ));
            }
        }
        Ok(MutationConfig {
            ignore: normalize_all("image_mutation.ignore", self.ignore)?,
            ..self
        })
    }
}

fn normalize_all(key: &str, prefixes: Vec<String>) -> Result<Vec<String>, ConfigError> {
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
        }
        .validate()
        .map_err(de::Error::custom)
    }
}

/// As for [`ValidationConfig`]: `image_mutation: Option<MutationConfig>`.
impl<'de> Deserialize<'de> for MutationConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MutationConfig, D::Error> {
        let raw = RawMutationConfig::deserialize(d)?;
        MutationConfig {
            enabled: raw.enabled,
            all_registries: raw.all_registries,
            ignore: raw.ignore,
            prewarm: raw.prewarm,
            prewarm_concurrency: raw.prewarm_concurrency,
            prewarm_platforms: raw
                .prewarm_platforms
                .unwrap_or_else(|| vec![host_platform()]),
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMutationConfig {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    all_registries: bool,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default = "yes")]
    prewarm: bool,
    #[serde(default = "default_prewarm_concurrency")]
    prewarm_concurrency: usize,
    #[serde(default)]
    prewarm_platforms: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

fn default_prewarm_concurrency() -> usize {
    DEFAULT_PREWARM_CONCURRENCY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        image_validation: Option<ValidationConfig>,
        image_mutation: Option<MutationConfig>,
    }

    fn file(text: &str) -> Result<File, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    fn validation(text: &str) -> Result<ValidationConfig, String> {
        file(&format!("image_validation:\n{text}")).map(|f| f.image_validation.unwrap())
    }

    fn mutation(text: &str) -> Result<MutationConfig, String> {
        file(&format!("image_mutation:\n{text}")).map(|f| f.image_mutation.unwrap())
    }

    #[test]
    fn the_full_sections_parse() {
        let f = file(
            "image_validation:
  default: Deny
  allow: [my-trow.example.com/, registry.k8s.io/, index.docker.io/library/]
  deny: [my-trow.example.com/secret/]
image_mutation:
  enabled: false
  all_registries: true
  ignore: [quay.io/internal/]
  prewarm: false
  prewarm_concurrency: 8
",
        )
        .unwrap();
        let v = f.image_validation.unwrap();
        assert_eq!(v.default, Decision::Deny);
        assert_eq!(
            v.allow,
            [
                "my-trow.example.com/",
                "registry.k8s.io/",
                "docker.io/library/"
            ]
        );
        assert_eq!(v.deny, ["my-trow.example.com/secret/"]);
        assert_eq!(v.clone().validate().unwrap(), v);
        let m = f.image_mutation.unwrap();
        assert!(!m.enabled && m.all_registries && !m.prewarm);
        assert_eq!(m.ignore, ["quay.io/internal/"]);
        assert_eq!(m.prewarm_concurrency, 8);
        assert_eq!(m.clone().validate().unwrap(), m);
    }

    #[test]
    fn defaults() {
        let m = mutation("  {}").unwrap();
        assert_eq!(m, MutationConfig::default());
        assert!(m.enabled && m.prewarm && !m.all_registries);
        assert_eq!(m.prewarm_concurrency, 4);
        let v = validation("  default: allow").unwrap();
        assert_eq!(v.default, Decision::Allow);
        assert!(v.allow.is_empty() && v.deny.is_empty());
        assert_eq!(
            validation("  default: Allow").unwrap().default,
            Decision::Allow
        );
        assert_eq!(
            validation("  default: deny").unwrap().default,
            Decision::Deny
        );
        let f = file("{}").unwrap();
        assert!(f.image_validation.is_none() && f.image_mutation.is_none());
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
    fn unknown_keys_are_named() {
        let e = validation("  default: Deny\n  alow: [quay.io/]").unwrap_err();
        assert!(
            e.contains("unknown field `alow`") && e.contains("line 3"),
            "{e}"
        );
        let e = mutation("  prewarm_concurency: 2").unwrap_err();
        assert!(e.contains("unknown field `prewarm_concurency`"), "{e}");
        let e = mutation("  enabled: maybe").unwrap_err();
        assert!(e.starts_with("image_mutation"), "{e}");
    }

    #[test]
    fn prefixes_are_checked_with_their_index() {
        let e = validation("  default: Deny\n  allow: [quay.io/, 'Quay.io/Team/']").unwrap_err();
        assert!(e.contains("image_validation.allow[1]: "), "{e}");
        let e = validation("  default: Deny\n  deny: ['']").unwrap_err();
        assert!(e.contains("image_validation.deny[0]: is empty"), "{e}");
        let e = mutation("  ignore: [a.io/, 'a..b/']").unwrap_err();
        assert!(e.contains("image_mutation.ignore[1]: "), "{e}");
        let e = mutation("  prewarm_concurrency: 0").unwrap_err();
        assert!(
            e.contains("image_mutation.prewarm_concurrency: must be at least 1"),
            "{e}"
        );
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
