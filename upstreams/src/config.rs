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
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::reference::{Authority, is_docker_hub, valid_repository};

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

/// A credential. It prints as `***` so that no `Debug` of a config, and no log line, shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

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

/// The section as written, before `password_file` is read and the rules are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxyConfig {
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
    fn resolve(self) -> Result<ProxyConfig, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<ProxyConfig, ConfigError> {
        from_yaml_section(serde_yaml::from_str(text).unwrap())
    }

    fn err(text: &str) -> String {
        yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_or_missing_values_are_the_defaults() {
        let d = ProxyConfig::default();
        assert!(!d.offline && !d.configured_only && d.registries.is_empty());
        assert_eq!(d.revalidate_timeout, Duration::from_secs(3));
        assert_eq!(d.fetch_timeout, Duration::from_secs(30));
        assert_eq!(from_yaml_section(serde_yaml::Value::Null).unwrap(), d);
        assert_eq!(yaml("{}").unwrap(), d);
    }

    #[test]
    fn the_full_section_parses_and_reads_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\r\n").unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let cfg = yaml(&format!(
            "offline: true
configured_only: true
revalidate_timeout: 500ms
fetch_timeout: 2s
registries:
  - host: Registry.Example.com:5000
    alias: example
    path_prefix: project-a/team
    username: me
    password_file: {}
    insecure: true
    ca_file: {}
    ignore_repos: [team/base, tools]
  - host: docker.io
    username: hub
    password: inline
",
            pw.display(),
            ca.display()
        ))
        .unwrap();
        assert!(cfg.offline && cfg.configured_only);
        assert_eq!(cfg.revalidate_timeout, Duration::from_millis(500));
        assert_eq!(cfg.fetch_timeout, Duration::from_secs(2));
        let r = &cfg.registries[0];
        assert_eq!(r.host, "registry.example.com:5000");
        assert_eq!(r.alias.as_deref(), Some("example"));
        assert_eq!(r.path_prefix.as_deref(), Some("project-a/team"));
        assert_eq!(r.username.as_deref(), Some("me"));
        assert_eq!(r.password.as_ref().unwrap().expose(), "s3cret");
        assert!(r.insecure);
        assert_eq!(r.ca_file.as_deref(), Some(ca.as_path()));
        assert_eq!(r.ignore_repos, ["team/base", "tools"]);
        assert!(cfg.registries[1].ignore_repos.is_empty());
        assert_eq!(cfg.registries[1].password, Some(Secret::new("inline")));
        assert!(!cfg.registries[1].insecure);
        // Validation is idempotent.
        assert_eq!(cfg.clone().validate().unwrap(), cfg);
    }

    #[test]
    fn revalidate_timeout_takes_humantime_or_seconds() {
        let t = |v: &str| yaml(&format!("revalidate_timeout: {v}")).map(|c| c.revalidate_timeout);
        assert_eq!(t("5").unwrap(), Duration::from_secs(5));
        assert_eq!(t("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(t("'7'").unwrap(), Duration::from_secs(7));
        assert_eq!(t("1m 30s").unwrap(), Duration::from_secs(90));
        for bad in ["-1", "abc", "3x", "true"] {
            let e = t(bad).unwrap_err().to_string();
            assert!(e.starts_with("registry_proxies:"), "{bad}: {e}");
        }
        assert_eq!(
            t("0s").unwrap_err().to_string(),
            "registry_proxies.revalidate_timeout: must be greater than zero"
        );
        assert_eq!(
            err("fetch_timeout: 0").to_string(),
            "registry_proxies.fetch_timeout: must be greater than zero"
        );
    }

    #[test]
    fn max_blob_size_takes_bytes_units_or_unlimited() {
        let m = |v: &str| yaml(&format!("max_blob_size: {v}")).map(|c| c.max_blob_size);
        assert_eq!(
            ProxyConfig::default().max_blob_size,
            Some(DEFAULT_MAX_BLOB_SIZE)
        );
        assert_eq!(m("1048576").unwrap(), Some(1 << 20));
        assert_eq!(m("512MiB").unwrap(), Some(512 << 20));
        assert_eq!(m("'1.5 GB'").unwrap(), Some(1_500_000_000));
        assert_eq!(m("2tib").unwrap(), Some(2 << 40));
        assert_eq!(m("100 B").unwrap(), Some(100));
        assert_eq!(m("unlimited").unwrap(), None);
        for bad in ["-1", "abc", "3x", "true", "1e999 GiB", "MiB"] {
            let e = m(bad).unwrap_err().to_string();
            assert!(e.starts_with("registry_proxies:"), "{bad}: {e}");
        }
        assert_eq!(
            m("0").unwrap_err().to_string(),
            "registry_proxies.max_blob_size: must be greater than zero (`unlimited` for no cap)"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err("offlne: true");
        assert!(e.contains("unknown field `offlne`"), "{e}");
        let e = err("registries:\n  - host: a.io\n    pasword: x\n");
        assert!(e.contains("unknown field `pasword`"), "{e}");
        assert!(matches!(yaml("registries: 3"), Err(ConfigError::Yaml(_))));
    }

    #[test]
    fn embedded_in_a_file_errors_carry_the_line() {
        #[derive(Deserialize)]
        struct File {
            registry_proxies: Option<ProxyConfig>,
        }
        let f: File = serde_yaml::from_str("registry_proxies:\n  offline: true\n").unwrap();
        assert!(f.registry_proxies.unwrap().offline);
        let e = serde_yaml::from_str::<File>("registry_proxies:\n  registries:\n    - hots: x\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("unknown field `hots`") && e.contains("line 3"),
            "{e}"
        );
        let e = serde_yaml::from_str::<File>("registry_proxies:\n  registries:\n    - host: a:b\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("registries[0].host"), "{e}");
    }

    #[test]
    fn hosts_are_checked_and_lowercased() {
        let host = |h: &str| yaml(&format!("registries: [{{host: '{h}'}}]"));
        assert_eq!(host("QUAY.io").unwrap().registries[0].host, "quay.io");
        assert_eq!(host("[::1]:5000").unwrap().registries[0].host, "[::1]:5000");
        // Default ports are dropped (the scheme picks the port): one entry, one cache name.
        assert_eq!(host("10.1.2.3:443").unwrap().registries[0].host, "10.1.2.3");
        assert_eq!(host("Quay.io:443").unwrap().registries[0].host, "quay.io");
        // ...unless it is the other scheme's: that port would be silently replaced.
        let e = host("quay.io:80").unwrap_err().to_string();
        assert!(e.contains("port 80 is not the port of https"), "{e}");
        let insecure = |h: &str| yaml(&format!("registries: [{{host: '{h}', insecure: true}}]"));
        assert_eq!(
            insecure("10.1.2.3:80").unwrap().registries[0].host,
            "10.1.2.3"
        );
        let e = insecure("10.1.2.3:443").unwrap_err().to_string();
        assert!(e.contains("port 443 is not the port of http"), "{e}");
        // A one-label host keeps its port, so nothing is replaced.
        assert_eq!(host("myreg:80").unwrap().registries[0].host, "myreg:80");
        for bad in [
            "",
            "::1",
            "a.io:0",
            "a.io:65536",
            "a.io:x",
            "https://a.io",
            "a_b.io",
            "a.io/x",
        ] {
            let e = host(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("registry_proxies.registries[0].host: "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn aliases_and_prefixes_follow_the_grammar() {
        assert_eq!(
            err("registries:
  - host: a.io
  - host: b.io
  - host: c.io
    alias: Ex
"),
            "registry_proxies.registries[2].alias: \"Ex\" is not a valid alias (lowercase \
             letters, digits, '.', '-', '_' only; no ':' or '/')"
        );
        for bad in ["a:b", "a/b", "a__b", "-a", "a.", ""] {
            let e = err(&format!("registries: [{{host: a.io, alias: '{bad}'}}]"));
            assert!(e.contains("is not a valid alias"), "{bad}: {e}");
        }
        assert!(yaml("registries: [{host: a.io, alias: my.mirror_1-x}]").is_ok());
        for bad in ["/a", "a/", "a//b", "A", ""] {
            let e = err(&format!(
                "registries: [{{host: a.io, path_prefix: '{bad}'}}]"
            ));
            assert!(
                e.starts_with("registry_proxies.registries[0].path_prefix: "),
                "{e}"
            );
        }
    }

    #[test]
    fn ignore_repos_are_repository_prefixes() {
        for bad in [
            "/a",
            "a/",
            "a//b",
            "Library/alpine",
            "",
            "docker.io/library/alpine:3",
        ] {
            let e = err(&format!(
                "registries: [{{host: a.io}}, {{host: b.io, ignore_repos: [ok, '{bad}']}}]"
            ));
            assert!(
                e.starts_with("registry_proxies.registries[1].ignore_repos[1]: "),
                "{bad}: {e}"
            );
        }
        let cfg = yaml("registries: [{host: docker.io, ignore_repos: [library/alpine]}]").unwrap();
        assert_eq!(cfg.registries[0].ignore_repos, ["library/alpine"]);
    }

    #[test]
    fn credentials_rules() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x").unwrap();
        let pw = pw.display();
        assert_eq!(
            err(&format!(
                "registries: [{{host: a.io, username: u, password: p, password_file: {pw}}}]"
            )),
            "registry_proxies.registries[0].password_file: password and password_file are \
             mutually exclusive"
        );
        assert_eq!(
            err("registries: [{host: a.io, password: p}]"),
            "registry_proxies.registries[0].password: is set without username"
        );
        assert_eq!(
            err(&format!(
                "registries: [{{host: a.io, password_file: {pw}}}]"
            )),
            "registry_proxies.registries[0].password_file: is set without username"
        );
        let missing = dir.path().join("missing");
        let e = yaml(&format!(
            "registries: [{{host: a.io, username: u, password_file: {}}}]",
            missing.display()
        ))
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Unreadable { key, .. }
                if key == "registry_proxies.registries[0].password_file"),
            "{e}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = err(&format!(
            "registries: [{{host: a.io, username: u, password_file: {}}}]",
            empty.display()
        ));
        assert!(e.ends_with("is empty"), "{e}");
        assert!(yaml("registries: [{host: a.io, username: u}]").is_ok());
    }

    #[test]
    fn ca_file_must_be_readable() {
        let dir = tempfile::tempdir().unwrap();
        let e = err(&format!(
            "registries: [{{host: a.io}}, {{host: b.io, ca_file: {}}}]",
            dir.path().join("nope.pem").display()
        ));
        assert!(
            e.starts_with("registry_proxies.registries[1].ca_file: cannot read "),
            "{e}"
        );
        // A directory exists but cannot be read as a file.
        assert!(
            err(&format!(
                "registries: [{{host: a.io, ca_file: {}}}]",
                dir.path().display()
            ))
            .contains("ca_file: cannot read")
        );
    }

    #[test]
    fn duplicates_are_refused() {
        assert_eq!(
            err("registries:
  - {host: a.io, path_prefix: x}
  - {host: a.io}
  - {host: A.io, path_prefix: x}
"),
            "registry_proxies.registries[2]: same host and path_prefix as registries[0]"
        );
        // Docker Hub's names are one host.
        assert!(
            err("registries: [{host: docker.io}, {host: index.docker.io}]")
                .contains("same host and path_prefix as registries[0]")
        );
        assert!(
            yaml("registries: [{host: a.io}, {host: 'a.io:5000'}, {host: a.io, path_prefix: y}]")
                .is_ok()
        );
        assert_eq!(
            err("registries: [{host: a.io, alias: m}, {host: b.io, alias: m}]"),
            "registry_proxies.registries[1].alias: \"m\" is already the alias of registries[0]"
        );
    }

    #[test]
    fn aliases_cannot_take_over_other_upstreams() {
        let e = err("registries: [{host: a.io}, {host: b.io, alias: a.io}]");
        assert_eq!(
            e,
            "registry_proxies.registries[1].alias: \"a.io\" is the host of registries[0]"
        );
        assert!(
            err("registries: [{host: mirror.io, alias: docker.io}]")
                .contains("is a name of Docker Hub")
        );
        assert!(
            err("registries: [{host: index.docker.io}, {host: m.io, alias: docker.io}]")
                .contains("is the host of registries[0]")
        );
        assert!(
            err("registries: [{host: m.io, alias: x.io_5000}]")
                .contains("is how the cache names x.io:5000")
        );
        assert!(
            err("registries: [{host: m.io, alias: ipv6-0-0-0-0-0-0-0-1}]")
                .contains("is how the cache names [::1]")
        );
        // Harmless: an alias naming its own upstream, Docker Hub's own names, a public host
        // nobody else configures (a mirror standing in for it).
        assert!(yaml("registries: [{host: 'x.io:5000', alias: x.io_5000}]").is_ok());
        assert!(yaml("registries: [{host: registry-1.docker.io, alias: docker.io}]").is_ok());
        assert!(
            yaml("registries: [{host: a.io}, {host: a.io, path_prefix: p, alias: a.io}]").is_ok()
        );
        assert!(yaml("registries: [{host: mirror.local, alias: gcr.io}]").is_ok());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
        let r = RegistryConfig {
            host: "a.io".into(),
            username: Some("u".into()),
            password: Some(s),
            ..RegistryConfig::default()
        };
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
