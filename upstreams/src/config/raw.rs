//! The `registry_proxies` section as written (serde's shape of it), before `password_file` is
//! read and the rules are checked; and the duration syntax its timeouts take.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{
    ConfigError, DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_BLOB_SIZE, DEFAULT_REVALIDATE_TIMEOUT,
    ProxyConfig, RegistryConfig, Secret, invalid, key, unreadable,
};

/// The section as written, before `password_file` is read and the rules are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxyConfig {
    #[serde(default)]
    offline: bool,
    #[serde(default)]
    configured_only: bool,
    #[serde(
        default = "default_revalidate_timeout",
        deserialize_with = "deserialize_duration"
    )]
    revalidate_timeout: Duration,
    #[serde(
        default = "default_fetch_timeout",
        deserialize_with = "deserialize_duration"
    )]
    fetch_timeout: Duration,
    #[serde(
        default = "default_max_blob_size",
        deserialize_with = "crate::size::deserialize"
    )]
    max_blob_size: Option<u64>,
    #[serde(default, deserialize_with = "crate::size::deserialize")]
    max_size: Option<u64>,
    #[serde(default)]
    registries: Vec<RawRegistryConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistryConfig {
    host: String,
    alias: Option<String>,
    path_prefix: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    ignore_repos: Vec<String>,
}

impl RawProxyConfig {
    pub(super) fn resolve(self) -> Result<ProxyConfig, ConfigError> {
        let registries = self
            .registries
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.resolve(i))
            .collect::<Result<_, _>>()?;
        ProxyConfig {
            offline: self.offline,
            configured_only: self.configured_only,
            revalidate_timeout: self.revalidate_timeout,
            fetch_timeout: self.fetch_timeout,
            max_blob_size: self.max_blob_size,
            max_size: self.max_size,
            registries,
        }
        .validate()
    }
}

impl RawRegistryConfig {
    /// Reads `password_file` into `password`.
    fn resolve(self, i: usize) -> Result<RegistryConfig, ConfigError> {
        let password = match (self.password, self.password_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key(i, "password_file"),
                    "password and password_file are mutually exclusive",
                ));
            }
            (Some(p), None) => Some(Secret(p)),
            (None, Some(path)) => {
                if self.username.is_none() {
                    return Err(invalid(key(i, "password_file"), "is set without username"));
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|error| unreadable(key(i, "password_file"), &path, error))?;
                let text = text.trim_end_matches(['\r', '\n']);
                if text.is_empty() {
                    return Err(invalid(
                        key(i, "password_file"),
                        format!("{} is empty", path.display()),
                    ));
                }
                Some(Secret(text.to_string()))
            }
            (None, None) => None,
        };
        Ok(RegistryConfig {
            host: self.host,
            alias: self.alias,
            path_prefix: self.path_prefix,
            username: self.username,
            password,
            insecure: self.insecure,
            ca_file: self.ca_file,
            ignore_repos: self.ignore_repos,
        })
    }
}

fn default_revalidate_timeout() -> Duration {
    DEFAULT_REVALIDATE_TIMEOUT
}

fn default_fetch_timeout() -> Duration {
    DEFAULT_FETCH_TIMEOUT
}

fn default_max_blob_size() -> Option<u64> {
    Some(DEFAULT_MAX_BLOB_SIZE)
}

/// A humantime duration (`3s`, `500ms`, `1m 30s`) or a number of seconds (`3`, `2.5`).
fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 3s or 500ms, or a number of seconds")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{v} is negative")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v).map_err(|_| E::custom(format!("{v} is not a duration")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            if let Ok(secs) = v.trim().parse::<f64>() {
                return self.visit_f64(secs);
            }
            humantime_serde::re::humantime::parse_duration(v)
                .map_err(|e| E::custom(format!("{v:?} is not a duration: {e}")))
        }
    }

    d.deserialize_any(DurationVisitor)
}
