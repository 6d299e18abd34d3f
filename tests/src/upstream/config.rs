//! The `registry_proxies` section of a Trow config file, built in code and written as YAML.
//!
//! Every string is written as a JSON string, which YAML reads as a double-quoted scalar, so no
//! value (a password with `:` or `#`, a host) can change the document's shape.

use std::path::{Path, PathBuf};

/// `registry_proxies`: the pull-through cache's configuration.
#[derive(Clone, Debug, Default)]
pub struct ProxyConfig {
    pub offline: bool,
    pub configured_only: bool,
    /// e.g. `3s`; Trow's default when `None`.
    pub revalidate_timeout: Option<String>,
    /// e.g. `2s`; Trow's default when `None`.
    pub fetch_timeout: Option<String>,
    /// e.g. `1MiB`; Trow's default when `None`.
    pub max_blob_size: Option<String>,
    /// e.g. `3MiB`: the cache's bound; none when `None`.
    pub max_size: Option<String>,
    pub registries: Vec<Entry>,
}

/// One `registries` entry.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// `host` or `host:port` of the upstream.
    pub host: String,
    pub alias: Option<String>,
    pub path_prefix: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Plain http to the upstream.
    pub insecure: bool,
}

impl Entry {
    /// A plain-http upstream at `host` (`host` or `host:port`).
    pub fn insecure(host: &str) -> Entry {
        Entry {
            host: host.to_string(),
            insecure: true,
            ..Entry::default()
        }
    }

    pub fn alias(mut self, alias: &str) -> Entry {
        self.alias = Some(alias.to_string());
        self
    }

    pub fn path_prefix(mut self, prefix: &str) -> Entry {
        self.path_prefix = Some(prefix.to_string());
        self
    }

    /// Basic credentials, the password inline.
    pub fn credentials(mut self, username: &str, password: &str) -> Entry {
        self.username = Some(username.to_string());
        self.password = Some(password.to_string());
        self.password_file = None;
        self
    }

    /// Basic credentials, the password read from `file`.
    pub fn password_file(mut self, username: &str, file: &Path) -> Entry {
        self.username = Some(username.to_string());
        self.password = None;
        self.password_file = Some(file.to_path_buf());
        self
    }

    fn yaml(&self, out: &mut String) {
        let q = |s: &str| serde_json::to_string(s).expect("quote a string");
        out.push_str(&format!("    - host: {}\n", q(&self.host)));
        let optional = [
            ("alias", self.alias.as_deref()),
            ("path_prefix", self.path_prefix.as_deref()),
            ("username", self.username.as_deref()),
            ("password", self.password.as_deref()),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                out.push_str(&format!("      {key}: {}\n", q(v)));
            }
        }
        if let Some(f) = &self.password_file {
            out.push_str(&format!(
                "      password_file: {}\n",
                q(&f.to_string_lossy())
            ));
        }
        out.push_str(&format!("      insecure: {}\n", self.insecure));
    }
}

impl ProxyConfig {
    /// Defaults (`offline` and `configured_only` false) with these upstreams.
    pub fn new(registries: impl IntoIterator<Item = Entry>) -> ProxyConfig {
        ProxyConfig {
            registries: registries.into_iter().collect(),
            ..ProxyConfig::default()
        }
    }

    pub fn revalidate_timeout(mut self, timeout: &str) -> ProxyConfig {
        self.revalidate_timeout = Some(timeout.to_string());
        self
    }

    pub fn fetch_timeout(mut self, timeout: &str) -> ProxyConfig {
        self.fetch_timeout = Some(timeout.to_string());
        self
    }

    pub fn max_size(mut self, size: &str) -> ProxyConfig {
        self.max_size = Some(size.to_string());
        self
    }

    pub fn max_blob_size(mut self, size: &str) -> ProxyConfig {
        self.max_blob_size = Some(size.to_string());
        self
    }

    pub fn configured_only(mut self, yes: bool) -> ProxyConfig {
        self.configured_only = yes;
        self
    }

    pub fn offline(mut self, yes: bool) -> ProxyConfig {
        self.offline = yes;
        self
    }

    /// The config file's text.
    pub fn yaml(&self) -> String {
        let mut out = format!(
            "registry_proxies:\n  offline: {}\n  configured_only: {}\n",
            self.offline, self.configured_only
        );
        if let Some(t) = &self.revalidate_timeout {
            out.push_str(&format!("  revalidate_timeout: {t}\n"));
        }
        if let Some(t) = &self.fetch_timeout {
            out.push_str(&format!("  fetch_timeout: {t}\n"));
        }
        if let Some(s) = &self.max_size {
            out.push_str(&format!("  max_size: {s}\n"));
        }
        if let Some(s) = &self.max_blob_size {
            out.push_str(&format!("  max_blob_size: {s}\n"));
        }
        if self.registries.is_empty() {
            out.push_str("  registries: []\n");
        } else {
            out.push_str("  registries:\n");
            for r in &self.registries {
                r.yaml(&mut out);
            }
        }
        out
    }

    /// Writes the config file to `path`; returns `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.yaml())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_documented_shape() {
        let c = ProxyConfig::new([
            Entry::insecure("127.0.0.2")
                .alias("up")
                .path_prefix("team")
                .credentials("u", "p: #x"),
            Entry::insecure("127.0.0.3:5000").password_file("u", Path::new("/run/pw")),
        ])
        .revalidate_timeout("3s");
        assert_eq!(
            c.yaml(),
            "registry_proxies:\n  offline: false\n  configured_only: false\n  \
             revalidate_timeout: 3s\n  registries:\n    \
             - host: \"127.0.0.2\"\n      alias: \"up\"\n      path_prefix: \"team\"\n      \
             username: \"u\"\n      password: \"p: #x\"\n      insecure: true\n    \
             - host: \"127.0.0.3:5000\"\n      username: \"u\"\n      \
             password_file: \"/run/pw\"\n      insecure: true\n"
        );
    }
}
