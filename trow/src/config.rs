//! The `--config-file` YAML: one section per service (the proxy's `registry_proxies`,
//! admission's `image_validation` and `image_mutation`; the proxy enforces `image_validation`
//! too; storage's `retention`; the gateway's `authorization`), in the format of the original Trow. Unknown keys and
//! bad values stop the start-up with the key named, rather than running with a silent default.

use std::path::Path;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The pull-through cache: which upstreams, with which credentials (see `trow_proxy::config`).
    #[serde(default)]
    pub registry_proxies: Option<trow_proxy::config::ProxyConfig>,
    /// Which images pods may run (see `trow_admission::config`).
    #[serde(default)]
    pub image_validation: Option<trow_admission::ValidationConfig>,
    /// Which images the mutating webhook rewrites to pull through the cache.
    #[serde(default)]
    pub image_mutation: Option<trow_admission::MutationConfig>,
    /// Which tags and untagged manifests each repository keeps (see `trow_storage::retention`).
    #[serde(default)]
    pub retention: Option<trow_storage::retention::Retention>,
    /// Who may pull, push, delete and read the audit log (see `trow_gateway::auth::rules`).
    #[serde(default)]
    pub authorization: Option<trow_gateway::auth::rules::AuthorizationConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("config file {0}: {1}")]
    Invalid(String, serde_yaml::Error),
}

impl FileConfig {
    /// The config in `path`; no path is the defaults.
    pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(shown.clone(), e))?;
        FileConfig::parse(&text).map_err(|e| ConfigError::Invalid(shown, e))
    }

    pub fn parse(text: &str) -> Result<FileConfig, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        serde_yaml::from_str(text)
    }

    /// The proxy's config; the defaults when the file has none.
    pub fn proxy(&self) -> trow_proxy::config::ProxyConfig {
        self.registry_proxies.clone().unwrap_or_default()
    }

    /// `image_validation` as the proxy enforces it (`None`: no section, or
    /// `enforce_in_proxy: false`), for Trow known to the kubelet as `hostname`.
    pub fn proxy_policy(
        &self,
        hostname: Option<&str>,
    ) -> Result<Option<trow_proxy::policy::Enforcer>, trow_admission::ConfigError> {
        match &self.image_validation {
            Some(v) => trow_proxy::policy::Enforcer::new(v.clone(), hostname),
            None => Ok(None),
        }
    }

    /// The retention rules for a store whose garbage collection has grace period `gc_grace`,
    /// which no rule may undercut (see `trow_storage::retention`).
    pub fn retention(
        &self,
        gc_grace: std::time::Duration,
    ) -> Result<trow_storage::retention::Retention, trow_storage::retention::RetentionError> {
        let retention = self.retention.clone().unwrap_or_default();
        retention.check_grace(gc_grace)?;
        Ok(retention)
    }

    /// The admission webhooks, for Trow known to the kubelet as `hostname`.
    pub fn webhooks(
        &self,
        hostname: Option<String>,
    ) -> Result<trow_admission::Webhooks, trow_admission::ConfigError> {
        trow_admission::Webhooks::new(
            self.image_validation.clone(),
            self.image_mutation.clone().unwrap_or_default(),
            &self.proxy(),
            hostname,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = FileConfig::parse("registry_proxie:\n  offline: true\n").unwrap_err();
        assert!(e.to_string().contains("registry_proxie"), "{e}");
        let e = FileConfig::parse(
            "registry_proxies:\n  registries:\n    - host: a.example\n      pasword: x\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("pasword"), "{e}");
        let c = FileConfig::parse(
            "registry_proxies:\n  offline: true\n  registries:\n    - host: A.example:5000\n      alias: a\n",
        )
        .unwrap();
        let p = c.proxy();
        assert!(p.offline);
        assert_eq!(p.registries[0].host, "a.example:5000");
        assert!(FileConfig::parse("").unwrap().registry_proxies.is_none());
    }

    #[test]
    fn retention_is_checked_at_load_and_against_the_grace_period() {
        use std::time::Duration;
        let e = FileConfig::parse("retention:\n  - repositories: a/\n    keep_tags: [\"[\"]\n")
            .unwrap_err();
        assert!(e.to_string().contains("retention[0].keep_tags[0]"), "{e}");
        let e =
            FileConfig::parse("retention:\n  - repositories: a/\n    keep_las: 1\n").unwrap_err();
        assert!(e.to_string().contains("keep_las"), "{e}");
        let c = FileConfig::parse(
            "retention:\n  - repositories: team/\n    keep_last: 2\n    untagged_older_than: 2h\n",
        )
        .unwrap();
        let r = c.retention(Duration::from_secs(3600)).unwrap();
        assert_eq!(r.rule_for("team/app").unwrap().keep_last, Some(2));
        let e = c.retention(Duration::from_secs(3 * 3600)).unwrap_err();
        assert_eq!(e.key, "retention[0].untagged_older_than");
        let none = FileConfig::parse("").unwrap();
        assert!(none.retention(Duration::ZERO).unwrap().rules().is_empty());
    }

    #[test]
    fn admission_sections_are_checked_at_load() {
        let e = FileConfig::parse("image_validation:\n  default: Maybe\n").unwrap_err();
        assert!(e.to_string().contains("image_validation.default"), "{e}");
        let e = FileConfig::parse("image_validation:\n  allow: []\n").unwrap_err();
        assert!(e.to_string().contains("default"), "{e}");
        let e = FileConfig::parse("image_mutation:\n  prewarm_concurency: 2\n").unwrap_err();
        assert!(e.to_string().contains("prewarm_concurency"), "{e}");
        let c = FileConfig::parse(
            "image_validation:\n  default: Deny\n  allow: [registry.k8s.io/]\nimage_mutation:\n  prewarm: false\n",
        )
        .unwrap();
        let hooks = c.webhooks(Some("trow.example.com".into())).unwrap();
        assert!(hooks.validation().is_some());
        assert!(!hooks.mutation().prewarm);
        assert!(c.proxy_policy(Some("trow.example.com")).unwrap().is_some());
        let off =
            FileConfig::parse("image_validation:\n  default: Deny\n  enforce_in_proxy: false\n")
                .unwrap();
        assert!(off.proxy_policy(None).unwrap().is_none());
        assert!(
            FileConfig::parse("")
                .unwrap()
                .proxy_policy(None)
                .unwrap()
                .is_none()
        );
    }
}
