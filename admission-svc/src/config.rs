//! The admission webhooks' two sections of Trow's `--config-file` YAML:
//!
//! ```yaml
//! image_validation:              # the validating webhook (see trow_names::validation)
//!   default: Deny
//!   allow: [my-trow.example.com/, registry.k8s.io/]
//! image_mutation:                # the mutating webhook
//!   enabled: true                # rewrite images to pull through Trow's cache
//!   all_registries: false        # every registry, not only those in registry_proxies
//!   ignore: [quay.io/internal/]  # images under these prefixes are never rewritten
//!   prewarm: true                # start filling the cache when a pod is admitted
//!   prewarm_concurrency: 4       # images warmed at once, at least 1
//!   prewarm_platforms: [linux/amd64]  # index children warmed; default linux/<Trow's arch>
//! ```
//!
//! `image_validation` is shared with the proxy, which enforces it too, so it lives in
//! `trow_names::validation` and is re-exported here. As for `registry_proxies`, everything is
//! checked at start-up and errors name the key (`image_mutation.ignore[2]: ...`; indexes count
//! from 0). Unknown keys are errors too. `ignore` prefixes are normalized as validation's are.

use serde::Deserialize;
use serde::de::{self, Deserializer};

pub use trow_names::validation::{
    ConfigError, Decision, ValidationConfig, invalid, normalize_all, normalize_prefix,
};

/// Images warmed at once unless configured.
pub const DEFAULT_PREWARM_CONCURRENCY: usize = 4;

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
}
