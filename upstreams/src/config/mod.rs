//! The `registry_proxies` section of Trow's `--config-file` YAML, as the original Trow spelled it:
//!
//! ```yaml
//! registry_proxies:
//!   offline: false            # serve from the cache only, never contact an upstream
//!   configured_only: false    # proxy only the hosts listed below
//!   revalidate_timeout: 3s    # bound on the HEAD that revalidates a tag (humantime or seconds)
//!   fetch_timeout: 30s        # bound on a manifest, tag list or token exchange, whole
//!   max_blob_size: 64GiB      # blobs announced bigger are refused (bytes, or B/KB/KiB/.../TiB;
//!                             # `unlimited` for no cap)
//!   max_size: 20GiB           # the cache's bytes at most: the least recently pulled images
//!                             # are evicted past it (default: unlimited)
//!   registries:
//!     - host: registry.example.com:5000
//!       alias: example         # /f/example/... means this host
//!       path_prefix: project-a # for repositories under this prefix
//!       username: user
//!       password_file: /run/secrets/pw   # or password: ...
//!       insecure: false        # plain http
//!       ca_file: /etc/ca.pem   # extra CA for this upstream
//!       ignore_repos: [team/base]   # the mutating webhook leaves these images alone
//! ```
//!
//! Everything is checked at start-up, with errors that name the key (`registry_proxies.
//! registries[2].alias: ...`), so a typo stops Trow rather than surfacing as a failed pull. Files
//! named by the config (`password_file`, `ca_file`) are read then too: a missing secret mount is
//! a start-up error, not a 401 an hour later. Indexes in key paths count from 0.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use trow_names::authority::{Authority, is_docker_hub};
use trow_names::grammar::valid_repository;

mod raw;
mod secret;

use raw::RawProxyConfig;
pub use secret::Secret;

/// How long a tag revalidation may wait on the upstream unless configured.
pub const DEFAULT_REVALIDATE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a whole upstream exchange read into memory may take unless configured: generous
/// for a 4 MiB manifest on a slow link, short enough that an upstream trickling bytes cannot
/// hold a request (and its connection) for long.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The biggest blob fetched unless configured: several times the 5–10 GiB layers of model
/// images, far below what a lying or broken upstream may announce (a fill reserves nothing, but
/// it does write what arrives to disk before the digest can be checked).
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 64 << 30;

/// The validated `registry_proxies` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Serve from the cache only; never contact an upstream.
    pub offline: bool,
    /// Proxy only upstreams (and repositories) that have an entry in `registries`.
    pub configured_only: bool,
    /// Bound on the upstream `HEAD` that revalidates a cached tag.
    pub revalidate_timeout: Duration,
    /// Bound on every upstream exchange read into memory, whole (a manifest GET with its token
    /// request, a tag list with all its pages, a token request), and on the wait for a blob's
    /// response headers; a blob body must bring at least 64 KiB per `fetch_timeout` (see
    /// `upstream::min_rate`).
    pub fetch_timeout: Duration,
    /// Blobs an upstream announces bigger than this are refused before anything is stored;
    /// `None`: no cap.
    pub max_blob_size: Option<u64>,
    /// The bytes of cached content at most (blobs shared with pushed content not counted):
    /// storage evicts the least recently pulled images past it. `None`: no bound.
    pub max_size: Option<u64>,
    pub registries: Vec<RegistryConfig>,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            offline: false,
            configured_only: false,
            revalidate_timeout: DEFAULT_REVALIDATE_TIMEOUT,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_blob_size: Some(DEFAULT_MAX_BLOB_SIZE),
            max_size: None,
            registries: Vec::new(),
        }
    }
}

/// One upstream registry entry (or one repository prefix of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// `host` or `host:port`, lowercase once validated (IPv6 in brackets).
    pub host: String,
    /// One repository path component standing for `host` in `/f/<alias>/...` and `?ns=<alias>`.
    pub alias: Option<String>,
    /// The entry applies to repositories under this prefix (longest wins; none = fallback).
    pub path_prefix: Option<String>,
    pub username: Option<String>,
    /// The password, read from `password_file` when that was given.
    pub password: Option<Secret>,
    /// Plain `http` to this upstream.
    pub insecure: bool,
    /// An extra CA (PEM) to trust for this upstream.
    pub ca_file: Option<PathBuf>,
    /// Repository prefixes the admission service's mutating webhook never rewrites to go
    /// through the cache, matched at `/` boundaries (`team` covers `team` and `team/app`, not
    /// `teams`) against the repository as the upstream names it (`library/alpine` on Docker
    /// Hub, not `alpine`). Reads under `f/` are not affected: this only keeps pods pulling
    /// those images straight from the upstream.
    pub ignore_repos: Vec<String>,
}

/// Why the section was refused. Every message starts with the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML did not have the section's shape; serde_yaml's text names the field (and, when
    /// parsed from text, the line).
    #[error("registry_proxies: {0}")]
    Yaml(serde_yaml::Error),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("{key}: cannot read {}: {error}", path.display())]
    Unreadable {
        key: String,
        path: PathBuf,
        error: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Deserializes and validates the value of the `registry_proxies` key; an empty value (`null`)
/// is the default config.
pub fn from_yaml_section(value: serde_yaml::Value) -> Result<ProxyConfig, ConfigError> {
    if value.is_null() {
        return Ok(ProxyConfig::default());
    }
    let raw: RawProxyConfig = serde_yaml::from_value(value).map_err(ConfigError::Yaml)?;
    raw.resolve()
}

/// Deserializing a `ProxyConfig` also validates it (reading `password_file` and checking
/// `ca_file`), so a config file struct may hold `registry_proxies: Option<ProxyConfig>`
/// directly and get serde_yaml's line numbers in every error.
impl<'de> Deserialize<'de> for ProxyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ProxyConfig, D::Error> {
        RawProxyConfig::deserialize(d)?
            .resolve()
            .map_err(de::Error::custom)
    }
}

impl ProxyConfig {
    /// Checks every rule and normalizes hosts to lowercase. Idempotent, so a config built in
    /// code can be passed through it too.
    pub fn validate(mut self) -> Result<ProxyConfig, ConfigError> {
        if self.revalidate_timeout.is_zero() {
            return Err(invalid(
                "registry_proxies.revalidate_timeout",
                "must be greater than zero",
            ));
        }
        if self.fetch_timeout.is_zero() {
            return Err(invalid(
                "registry_proxies.fetch_timeout",
                "must be greater than zero",
            ));
        }
        if self.max_size == Some(0) {
            return Err(invalid(
                "registry_proxies.max_size",
                "must be greater than zero (`unlimited` for no bound)",
            ));
        }
        if self.max_blob_size == Some(0) {
            return Err(invalid(
                "registry_proxies.max_blob_size",
                "must be greater than zero (`unlimited` for no cap)",
            ));
        }
        let mut upstreams = Vec::with_capacity(self.registries.len());
        for (i, r) in self.registries.iter_mut().enumerate() {
            upstreams.push(validate_entry(i, r)?);
        }
        let regs = &self.registries;
        for (i, r) in regs.iter().enumerate() {
            if let Some(j) = (0..i)
                .find(|&j| upstreams[j] == upstreams[i] && regs[j].path_prefix == r.path_prefix)
            {
                return Err(invalid(
                    key(i, ""),
                    format!("same host and path_prefix as registries[{j}]"),
                ));
            }
        }
        let mut aliases: HashMap<&str, usize> = HashMap::new();
        for (i, r) in regs.iter().enumerate() {
            let Some(alias) = r.alias.as_deref() else {
                continue;
            };
            if let Some(j) = aliases.insert(alias, i) {
                return Err(invalid(
                    key(i, "alias"),
                    format!("{alias:?} is already the alias of registries[{j}]"),
                ));
            }
            check_alias_shadowing(i, alias, regs, &upstreams)?;
        }
        Ok(self)
    }
}

/// The key path of a field of entry `i` (or of the entry itself for an empty field).
fn key(i: usize, field: &str) -> String {
    match field {
        "" => format!("registry_proxies.registries[{i}]"),
        _ => format!("registry_proxies.registries[{i}].{field}"),
    }
}

/// Checks one entry on its own and lowercases its host; returns the upstream host it means
/// (Docker Hub's names all mean one).
fn validate_entry(i: usize, r: &mut RegistryConfig) -> Result<String, ConfigError> {
    let authority = Authority::parse(&r.host)
        .map_err(|reason| invalid(key(i, "host"), format!("{:?}: {reason}", r.host)))?;
    // Default ports are dropped and the scheme picks the port, so the other scheme's default
    // port would be silently replaced: refuse it rather than contact another port.
    let port = r
        .host
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let scheme_port = if r.insecure { 80 } else { 443 };
    if let Some(p @ (80 | 443)) = port
        && p != scheme_port
        && !authority.to_string().ends_with(&format!(":{p}"))
    {
        return Err(invalid(
            key(i, "host"),
            format!(
                "{:?}: port {p} is not the port of {} (insecure: {}), which Trow would use; \
                 write the host without a port, or set insecure to match",
                r.host,
                if r.insecure { "http" } else { "https" },
                r.insecure
            ),
        ));
    }
    r.host = authority.to_string();
    if let Some(alias) = &r.alias
        && !valid_alias(alias)
    {
        return Err(invalid(
            key(i, "alias"),
            format!(
                "{alias:?} is not a valid alias (lowercase letters, digits, '.', '-', '_' only; \
                 no ':' or '/')"
            ),
        ));
    }
    if let Some(p) = &r.path_prefix
        && !valid_repository(p)
    {
        return Err(invalid(
            key(i, "path_prefix"),
            format!(
                "{p:?} is not a valid repository prefix (lowercase components joined by '/', \
                 no leading or trailing '/')"
            ),
        ));
    }
    for (j, p) in r.ignore_repos.iter().enumerate() {
        if !valid_repository(p) {
            return Err(invalid(
                key(i, &format!("ignore_repos[{j}]")),
                format!(
                    "{p:?} is not a valid repository prefix (lowercase components joined by \
                     '/', no leading or trailing '/')"
                ),
            ));
        }
    }
    if r.username.as_deref() == Some("") {
        return Err(invalid(key(i, "username"), "is empty"));
    }
    if r.password.is_some() && r.username.is_none() {
        return Err(invalid(key(i, "password"), "is set without username"));
    }
    if let Some(path) = &r.ca_file {
        std::fs::read(path).map_err(|error| unreadable(key(i, "ca_file"), path, error))?;
    }
    Ok(authority.upstream_host())
}

/// An alias is looked up before host names, so it must not take over a host another entry
/// configures, Docker Hub, or the cache name of another host (`x_5000` is `x:5000`'s cache):
/// that would put two upstreams in one cached repository.
fn check_alias_shadowing(
    i: usize,
    alias: &str,
    regs: &[RegistryConfig],
    upstreams: &[String],
) -> Result<(), ConfigError> {
    let own = &upstreams[i];
    for (j, other) in regs.iter().enumerate() {
        let same_name = other.host == alias || (is_docker_hub(alias) && is_docker_hub(&other.host));
        if upstreams[j] != *own && same_name {
            return Err(invalid(
                key(i, "alias"),
                format!("{alias:?} is the host of registries[{j}]"),
            ));
        }
    }
    if is_docker_hub(alias) && !is_docker_hub(own) {
        return Err(invalid(
            key(i, "alias"),
            format!("{alias:?} is a name of Docker Hub"),
        ));
    }
    if let Some(a) = Authority::from_cache_name(alias)
        && a.upstream_host() != *own
    {
        return Err(invalid(
            key(i, "alias"),
            format!("{alias:?} is how the cache names {a}; choose another alias"),
        ));
    }
    Ok(())
}

/// `[a-z0-9]+([._-][a-z0-9]+)*`: one repository path component, with single separators.
fn valid_alias(alias: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = alias.as_bytes();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.windows(2).all(|w| alnum(w[0]) || alnum(w[1]))
        && b.iter().all(|&c| alnum(c) || b"._-".contains(&c))
}

fn unreadable(key: String, path: &Path, error: std::io::Error) -> ConfigError {
    ConfigError::Unreadable {
        key,
        path: path.to_path_buf(),
        error,
    }
}

#[cfg(test)]
mod tests;
