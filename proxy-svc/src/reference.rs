//! What a client wrote → which upstream, which repository there, which repository here.
//!
//! Clients name an upstream two ways: in the path (`/v2/f/<registry>/<repository>/...`) and, as
//! containerd's mirror support does, in a query (`?ns=<registry>` on `/v2/<repository>/...`).
//! Both must land on the same cached repository for the same upstream repository, whatever
//! spelling was used (`docker.io/nginx`, `?ns=docker.io` + `library/nginx`, an alias, `host:5000`
//! or `host_5000`), or the cache would hold the same image twice; and two different upstreams
//! must never share a cached repository, or one could poison the other. So the cache name is
//! always computed from the parsed upstream (and the config entry chosen), never copied from the
//! client's text.
//!
//! Cache names are single OCI path components:
//! - Docker Hub (`docker.io`, `index.docker.io`, `registry-1.docker.io`): `docker.io`;
//! - an upstream whose config entry has an alias: the alias;
//! - a host, optionally with a port: the host with `:` replaced by `_` (`host:5000` →
//!   `host_5000`). Host names cannot contain `_`, so this reads back unambiguously;
//! - an IPv6 literal: `ipv6-` and its eight groups in hex joined by `-`, then `_<port>` if any
//!   (`[::1]:5000` → `ipv6-0-0-0-0-0-0-0-1_5000`), since `:`, `[` and `]` cannot appear in a
//!   repository name.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::{ProxyConfig, RegistryConfig};

/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_UPSTREAM: &str = "registry-1.docker.io";
/// Docker Hub's cache name, the name clients know it by.
pub const DOCKER_HUB_NAME: &str = "docker.io";
/// Longest repository name storage accepts (as distribution does); the cache repository
/// `f/<cache_name>/<repository>` must fit.
pub const MAX_REPOSITORY_LEN: usize = 255;

/// Whether a (lowercase, port-less) host is one of Docker Hub's names.
pub fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Why a registry or repository a client named cannot be proxied. The messages are meant for
/// the client: they say what was wrong with what it wrote and nothing about Trow's internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "{0:?} does not name a registry: write the registry host first \
         (a host name with a '.', localhost, an IP address, host_port or a configured alias), \
         e.g. f/docker.io/library/nginx"
    )]
    NotARegistry(String),
    #[error("{registry:?} is not a valid registry host: {reason}")]
    InvalidRegistry { registry: String, reason: String },
    #[error("no repository named after the registry {0:?}")]
    MissingRepository(String),
    #[error("{0:?} is not a valid repository name")]
    InvalidRepository(String),
    #[error("repository name too long ({len} characters as cached here; at most {max})")]
    NameTooLong { len: usize, max: usize },
    #[error(
        "registry {0:?} is not configured for proxying: this registry proxies only the \
         registries (and repositories) it is configured for"
    )]
    NotConfigured(String),
}

/// The host part of an upstream's authority.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Host {
    /// A DNS name, lowercase.
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// A parsed `host[:port]`: one value per upstream, whatever spelling named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    pub(crate) host: Host,
    pub(crate) port: Option<u16>,
}

impl Authority {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port` (case-insensitive). The error is a
    /// reason fit to show a user.
    pub fn parse(s: &str) -> Result<Authority, String> {
        let s = s.to_ascii_lowercase();
        if s.is_empty() {
            return Err("it is empty".into());
        }
        if let Some(inner) = s.strip_prefix('[') {
            let (addr, rest) = inner
                .split_once(']')
                .ok_or_else(|| "'[' without a closing ']'".to_string())?;
            let ip: Ipv6Addr = addr
                .parse()
                .map_err(|_| format!("[{addr}] is not an IPv6 address"))?;
            let port = match rest {
                "" => None,
                _ => Some(parse_port(rest.strip_prefix(':').ok_or_else(|| {
                    "only ':<port>' may follow an IPv6 address in brackets".to_string()
                })?)?),
            };
            return Ok(Authority {
                host: Host::V6(ip),
                port,
            });
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return Err("an IPv6 address goes in brackets, e.g. [::1]:5000".into());
        }
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (s.as_str(), None),
        };
        Ok(Authority {
            host: parse_host(host)?,
            port,
        })
    }

    /// Reads back a cache name that differs from its host's spelling (`host_5000`,
    /// `ipv6-...`); `None` for anything else.
    pub(crate) fn from_cache_name(s: &str) -> Option<Authority> {
        if let Some(rest) = s.strip_prefix("ipv6-") {
            let (groups, port) = match rest.split_once('_') {
                Some((g, p)) => (g, Some(parse_port(p).ok()?)),
                None => (rest, None),
            };
            let mut segments = [0u16; 8];
            let mut n = 0;
            for g in groups.split('-') {
                let ok = (1..=4).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_hexdigit());
                if !ok || n == 8 {
                    return None;
                }
                segments[n] = u16::from_str_radix(g, 16).ok()?;
                n += 1;
            }
            return (n == 8).then(|| Authority {
                host: Host::V6(Ipv6Addr::from(segments)),
                port,
            });
        }
        let (host, port) = s.split_once('_')?;
        Some(Authority {
            host: parse_host(host).ok()?,
            port: Some(parse_port(port).ok()?),
        })
    }

    /// The cache's spelling of this authority: one OCI path component (see the module doc).
    pub(crate) fn cache_name(&self) -> String {
        let host = match &self.host {
            Host::Name(n) => n.clone(),
            Host::V4(ip) => ip.to_string(),
            Host::V6(ip) => {
                let groups: Vec<String> = ip.segments().iter().map(|g| format!("{g:x}")).collect();
                format!("ipv6-{}", groups.join("-"))
            }
        };
        match self.port {
            Some(p) => format!("{host}_{p}"),
            None => host,
        }
    }

    /// Whether this could only be a registry, not the first component of a repository path:
    /// a name with a '.', `localhost`, an IP, or anything with a port.
    fn looks_like_registry(&self) -> bool {
        match &self.host {
            Host::Name(n) => self.port.is_some() || n.contains('.') || n == "localhost",
            Host::V4(_) | Host::V6(_) => true,
        }
    }

    /// Docker Hub under any of its names (and no port).
    fn is_docker_hub(&self) -> bool {
        matches!(&self.host, Host::Name(n) if self.port.is_none() && is_docker_hub(n))
    }

    /// The host as a URL carries it; Docker Hub's names all become [`DOCKER_HUB_UPSTREAM`].
    pub(crate) fn upstream_host(&self) -> String {
        if self.is_docker_hub() {
            DOCKER_HUB_UPSTREAM.to_string()
        } else {
            self.to_string()
        }
    }
}

/// `host[:port]` as it goes in a URL (IPv6 in brackets).
impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Name(n) => f.write_str(n)?,
            Host::V4(ip) => write!(f, "{ip}")?,
            Host::V6(ip) => write!(f, "[{ip}]")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// A decimal port, 1..=65535.
fn parse_port(p: &str) -> Result<u16, String> {
    let ok = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    match p.parse::<u16>() {
        Ok(n) if ok && n != 0 => Ok(n),
        _ => Err(format!("{p:?} is not a port (1-65535)")),
    }
}

/// A dotted-quad IPv4 address or a DNS name (lowercase input).
///
/// Names whose last label is a number (`127.1`, `2130706433`, `0x7f000001`) are refused:
/// URL parsers read those as IPv4 addresses, so they would reach an address no check saw.
fn parse_host(h: &str) -> Result<Host, String> {
    if let Ok(ip) = h.parse::<Ipv4Addr>() {
        return Ok(Host::V4(ip));
    }
    let bad = || format!("{h:?} is neither a host name nor an IPv4 address");
    if h.is_empty() || h.len() > 253 {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !h.split('.').all(label_ok) {
        return Err(bad());
    }
    let last = h.rsplit('.').next().unwrap_or(h);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|x| x.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex || last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(Host::Name(h.to_string()))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, any length.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(valid_component)
}

/// One repository path component: alphanumeric runs joined by `.`, `_`, `__` or `-+`.
pub fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// Whether `prefix` covers `repository` at a segment boundary (`a` covers `a` and `a/x`, not
/// `ab`).
fn prefix_matches(prefix: &str, repository: &str) -> bool {
    repository
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Where to fetch from, and under which name the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `"https"`, or `"http"` for an entry with `insecure: true`.
    pub scheme: &'static str,
    /// `host[:port]` as it goes in a URL (IPv6 in brackets).
    pub host: String,
    /// The single path component under `f/` that the cache stores this upstream under.
    pub cache_name: String,
}

impl Upstream {
    /// `https://registry-1.docker.io`: the URL the `/v2/` API hangs off.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

/// One resolved request: the upstream repository and the cached repository that mirrors it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub upstream: Upstream,
    /// The repository at the upstream (`library/nginx` on Docker Hub).
    pub repository: String,
    /// Where Trow caches it: `f/<cache_name>/<repository>`.
    pub cache_repository: String,
    /// The config entry chosen for this repository, if any (credentials, CA, scheme).
    pub registry: Option<Arc<RegistryConfig>>,
}

/// A config entry with the upstream host it applies to, computed once.
#[derive(Debug)]
struct Entry {
    upstream_host: String,
    config: Arc<RegistryConfig>,
}

/// Resolves client names against the `registry_proxies` config. Immutable once built; share it
/// with `Arc`.
#[derive(Debug)]
pub struct Resolver {
    configured_only: bool,
    entries: Vec<Entry>,
    aliases: HashMap<String, Authority>,
}

impl Resolver {
    /// Builds from a validated config. An entry whose host does not parse (validation refuses
    /// those) can never match a request, so it is skipped rather than trusted.
    pub fn new(cfg: &ProxyConfig) -> Resolver {
        let mut entries = Vec::new();
        let mut aliases = HashMap::new();
        for r in &cfg.registries {
            let Ok(authority) = Authority::parse(&r.host) else {
                continue;
            };
            if let Some(alias) = &r.alias {
                aliases
                    .entry(alias.clone())
                    .or_insert_with(|| authority.clone());
            }
            entries.push(Entry {
                upstream_host: authority.upstream_host(),
                config: Arc::new(r.clone()),
            });
        }
        Resolver {
            configured_only: cfg.configured_only,
            entries,
            aliases,
        }
    }

    /// For `/v2/f/<rest>/...`: `rest` is `<registry>/<repository>`, the registry written as a
    /// host, `host_port`, an IPv6 cache name or an alias.
    pub fn resolve_path(&self, rest: &str) -> Result<Target, ResolveError> {
        let (registry, repository) = rest
            .split_once('/')
            .ok_or_else(|| ResolveError::MissingRepository(rest.to_string()))?;
        let authority = self.registry(registry)?;
        self.target(registry, &authority, repository)
    }

    /// For containerd's `?ns=<ns>` on `/v2/<repository>/...`: `ns` is a host, `host:port`,
    /// `[v6]:port`, an IP or an alias.
    pub fn resolve_ns(&self, ns: &str, repository: &str) -> Result<Target, ResolveError> {
        let authority = self.registry(ns)?;
        self.target(ns, &authority, repository)
    }

    /// Which upstream a registry segment names. Aliases win over host names, so an alias can
    /// stand for a mirror of a public host.
    fn registry(&self, segment: &str) -> Result<Authority, ResolveError> {
        if let Some(a) = self.aliases.get(segment) {
            return Ok(a.clone());
        }
        let authority = match Authority::from_cache_name(segment) {
            Some(a) => a,
            None => Authority::parse(segment).map_err(|reason| {
                // A single plain word is most likely a repository written without its registry.
                if segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                {
                    ResolveError::NotARegistry(segment.to_string())
                } else {
                    ResolveError::InvalidRegistry {
                        registry: segment.to_string(),
                        reason,
                    }
                }
            })?,
        };
        if authority.looks_like_registry() {
            Ok(authority)
        } else {
            Err(ResolveError::NotARegistry(segment.to_string()))
        }
    }

    fn target(
        &self,
        written: &str,
        authority: &Authority,
        repository: &str,
    ) -> Result<Target, ResolveError> {
        if repository.is_empty() {
            return Err(ResolveError::MissingRepository(written.to_string()));
        }
        if !valid_repository(repository) {
            return Err(ResolveError::InvalidRepository(repository.to_string()));
        }
        let hub = authority.is_docker_hub();
        let repository = if hub && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        let upstream_host = authority.upstream_host();
        let registry = self.select(&upstream_host, &repository);
        if self.configured_only && registry.is_none() {
            return Err(ResolveError::NotConfigured(written.to_string()));
        }
        let cache_name = match registry.as_ref().and_then(|r| r.alias.clone()) {
            Some(alias) => alias,
            None if hub => DOCKER_HUB_NAME.to_string(),
            None => authority.cache_name(),
        };
        let cache_repository = format!("f/{cache_name}/{repository}");
        if cache_repository.len() > MAX_REPOSITORY_LEN {
            return Err(ResolveError::NameTooLong {
                len: cache_repository.len(),
                max: MAX_REPOSITORY_LEN,
            });
        }
        let scheme = match &registry {
            Some(r) if r.insecure => "http",
            _ => "https",
        };
        Ok(Target {
            upstream: Upstream {
                scheme,
                host: upstream_host,
                cache_name,
            },
            repository,
            cache_repository,
            registry,
        })
    }

    /// The entry for this upstream host whose `path_prefix` covers the repository, longest
    /// first; else the host's entry without a prefix.
    fn select(&self, upstream_host: &str, repository: &str) -> Option<Arc<RegistryConfig>> {
        let mut best: Option<(usize, &Arc<RegistryConfig>)> = None;
        let mut fallback = None;
        for e in self
            .entries
            .iter()
            .filter(|e| e.upstream_host == upstream_host)
        {
            match &e.config.path_prefix {
                None => {
                    fallback.get_or_insert(&e.config);
                }
                Some(p) if prefix_matches(p, repository) => {
                    if best.is_none_or(|(len, _)| p.len() > len) {
                        best = Some((p.len(), &e.config));
                    }
                }
                Some(_) => {}
            }
        }
        best.map(|(_, c)| c).or(fallback).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str) -> RegistryConfig {
        RegistryConfig {
            host: host.to_string(),
            alias: None,
            path_prefix: None,
            username: None,
            password: None,
            insecure: false,
            ca_file: None,
            ignore_repos: Vec::new(),
        }
    }

    fn resolver(registries: Vec<RegistryConfig>, configured_only: bool) -> Resolver {
        Resolver::new(&ProxyConfig {
            configured_only,
            registries,
            ..ProxyConfig::default()
        })
    }

    #[test]
    fn docker_hub_spellings_are_one_target() {
        let r = resolver(vec![], false);
        let a = r.resolve_path("docker.io/nginx").unwrap();
        assert_eq!(a.upstream.host, "registry-1.docker.io");
        assert_eq!(a.upstream.cache_name, "docker.io");
        assert_eq!(a.upstream.base_url(), "https://registry-1.docker.io");
        assert_eq!(a.repository, "library/nginx");
        assert_eq!(a.cache_repository, "f/docker.io/library/nginx");
        assert!(a.registry.is_none());
        for other in [
            r.resolve_path("docker.io/library/nginx").unwrap(),
            r.resolve_path("index.docker.io/nginx").unwrap(),
            r.resolve_path("registry-1.docker.io/library/nginx")
                .unwrap(),
            r.resolve_ns("docker.io", "nginx").unwrap(),
            r.resolve_ns("Docker.IO", "library/nginx").unwrap(),
        ] {
            assert_eq!(other, a);
        }
        let deep = r.resolve_path("docker.io/bitnami/redis").unwrap();
        assert_eq!(deep.cache_repository, "f/docker.io/bitnami/redis");
    }

    #[test]
    fn ports_round_trip_through_cache_names() {
        let r = resolver(vec![], false);
        let ns = r.resolve_ns("host:5000", "app").unwrap();
        assert_eq!(ns.upstream.host, "host:5000");
        assert_eq!(ns.upstream.cache_name, "host_5000");
        assert_eq!(ns.cache_repository, "f/host_5000/app");
        assert_eq!(r.resolve_path("host_5000/app").unwrap(), ns);
        // A port makes even a one-label name a registry, and one-label names stay host names.
        let single = r.resolve_path("myreg_5000/team/app").unwrap();
        assert_eq!(single.upstream.base_url(), "https://myreg:5000");
        let ip = r.resolve_path("127.0.0.2/app").unwrap();
        assert_eq!(ip.upstream.host, "127.0.0.2");
        assert_eq!(ip.cache_repository, "f/127.0.0.2/app");
        assert_eq!(r.resolve_ns("127.0.0.2", "app").unwrap(), ip);
        assert_eq!(
            r.resolve_path("localhost/app").unwrap().upstream.host,
            "localhost"
        );
    }

    #[test]
    fn ipv6_cache_names_are_path_components_that_round_trip() {
        let r = resolver(vec![], false);
        let t = r.resolve_ns("[::1]:5000", "app").unwrap();
        assert_eq!(t.upstream.host, "[::1]:5000");
        assert_eq!(t.upstream.cache_name, "ipv6-0-0-0-0-0-0-0-1_5000");
        assert!(valid_component(&t.upstream.cache_name));
        assert_eq!(r.resolve_path("ipv6-0-0-0-0-0-0-0-1_5000/app").unwrap(), t);
        // Leading zeros or another spelling of the address still land on the canonical name.
        assert_eq!(
            r.resolve_ns("[0:0::0001]:5000", "app")
                .unwrap()
                .cache_repository,
            t.cache_repository
        );
        let no_port = r.resolve_ns("[fe80::1:ABCD]", "app").unwrap();
        assert_eq!(no_port.upstream.host, "[fe80::1:abcd]");
        assert_eq!(no_port.upstream.cache_name, "ipv6-fe80-0-0-0-0-0-1-abcd");
        assert_eq!(
            r.resolve_path("ipv6-fe80-0-0-0-0-0-1-abcd/app").unwrap(),
            no_port
        );
        assert!(matches!(
            r.resolve_ns("::1", "app"),
            Err(ResolveError::InvalidRegistry { .. })
        ));
    }

    #[test]
    fn aliases_share_the_cache_with_their_host() {
        let mut e = entry("Host:5000");
        e.alias = Some("example".into());
        let r = resolver(vec![e], false);
        let by_alias = r.resolve_path("example/team/app").unwrap();
        assert_eq!(by_alias.upstream.host, "host:5000");
        assert_eq!(by_alias.upstream.cache_name, "example");
        assert_eq!(by_alias.repository, "team/app");
        assert_eq!(by_alias.cache_repository, "f/example/team/app");
        assert_eq!(
            by_alias.registry.as_ref().unwrap().alias.as_deref(),
            Some("example")
        );
        assert_eq!(r.resolve_ns("host:5000", "team/app").unwrap(), by_alias);
        assert_eq!(r.resolve_ns("example", "team/app").unwrap(), by_alias);
        assert_eq!(r.resolve_path("host_5000/team/app").unwrap(), by_alias);
    }

    #[test]
    fn an_alias_on_docker_hub_names_its_cache() {
        let mut e = entry("docker.io");
        e.alias = Some("hub".into());
        let r = resolver(vec![e], false);
        let t = r.resolve_path("docker.io/nginx").unwrap();
        assert_eq!(t.upstream.host, "registry-1.docker.io");
        assert_eq!(t.cache_repository, "f/hub/library/nginx");
        assert_eq!(r.resolve_path("hub/nginx").unwrap(), t);
        assert!(t.registry.is_some());
    }

    #[test]
    fn longest_matching_prefix_wins_then_the_fallback() {
        let mut a = entry("reg.example.com");
        a.path_prefix = Some("project-a".into());
        a.username = Some("a".into());
        let mut ab = entry("reg.example.com");
        ab.path_prefix = Some("project-a/b".into());
        ab.username = Some("ab".into());
        let mut fallback = entry("reg.example.com");
        fallback.username = Some("any".into());
        let r = resolver(vec![a, fallback, ab], false);
        let user = |repo: &str| {
            r.resolve_path(&format!("reg.example.com/{repo}"))
                .unwrap()
                .registry
                .and_then(|c| c.username.clone())
        };
        assert_eq!(user("project-a").as_deref(), Some("a"));
        assert_eq!(user("project-a/x").as_deref(), Some("a"));
        assert_eq!(user("project-a/b/c").as_deref(), Some("ab"));
        assert_eq!(user("project-a/bc").as_deref(), Some("a"));
        assert_eq!(user("project-ab").as_deref(), Some("any"));
        assert_eq!(user("other/x").as_deref(), Some("any"));
        assert!(
            r.resolve_path("other.example.com/x")
                .unwrap()
                .registry
                .is_none()
        );
    }

    #[test]
    fn hub_prefixes_match_the_normalized_repository() {
        let mut lib = entry("index.docker.io");
        lib.path_prefix = Some("library".into());
        lib.username = Some("lib".into());
        let r = resolver(vec![lib], true);
        let t = r.resolve_ns("docker.io", "nginx").unwrap();
        assert_eq!(t.registry.unwrap().username.as_deref(), Some("lib"));
        assert_eq!(
            r.resolve_path("docker.io/bitnami/redis"),
            Err(ResolveError::NotConfigured("docker.io".into()))
        );
    }

    #[test]
    fn insecure_entries_use_http() {
        let mut e = entry("10.0.0.5:5000");
        e.insecure = true;
        let r = resolver(vec![e], false);
        let t = r.resolve_path("10.0.0.5_5000/app").unwrap();
        assert_eq!(t.upstream.base_url(), "http://10.0.0.5:5000");
        let other = r.resolve_path("10.0.0.5/app").unwrap();
        assert_eq!(other.upstream.base_url(), "https://10.0.0.5");
    }

    #[test]
    fn configured_only_refuses_unlisted_hosts() {
        let r = resolver(vec![entry("quay.io")], true);
        assert!(r.resolve_path("quay.io/coreos/etcd").is_ok());
        let err = r.resolve_path("ghcr.io/x/y").unwrap_err();
        assert_eq!(err, ResolveError::NotConfigured("ghcr.io".into()));
        assert!(err.to_string().contains("not configured"));
        assert!(r.resolve_ns("docker.io", "nginx").is_err());
    }

    #[test]
    fn the_registry_must_look_like_a_host() {
        let r = resolver(vec![], false);
        let err = r.resolve_path("library/nginx").unwrap_err();
        assert_eq!(err, ResolveError::NotARegistry("library".into()));
        assert!(err.to_string().contains("f/docker.io/library/nginx"));
        assert_eq!(
            r.resolve_ns("library", "nginx"),
            Err(ResolveError::NotARegistry("library".into()))
        );
        for bad in [
            "127.1/app",
            "2130706433/app",
            "0x7f000001/app",
            "a..b/app",
            "-a.com/x",
        ] {
            assert!(
                matches!(
                    r.resolve_path(bad),
                    Err(ResolveError::InvalidRegistry { .. } | ResolveError::NotARegistry(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            r.resolve_path("host_0/app"),
            Err(ResolveError::NotARegistry(_) | ResolveError::InvalidRegistry { .. })
        ));
        assert!(matches!(
            r.resolve_ns("host:70000", "app"),
            Err(ResolveError::InvalidRegistry { .. })
        ));
    }

    #[test]
    fn repositories_follow_the_oci_grammar() {
        let r = resolver(vec![], false);
        assert_eq!(
            r.resolve_path("docker.io"),
            Err(ResolveError::MissingRepository("docker.io".into()))
        );
        assert_eq!(
            r.resolve_path("docker.io/"),
            Err(ResolveError::MissingRepository("docker.io".into()))
        );
        for bad in ["Nginx", "a//b", "a/", "a/../b", "a_-b", "a___b", ".a"] {
            assert_eq!(
                r.resolve_path(&format!("quay.io/{bad}")),
                Err(ResolveError::InvalidRepository(bad.into())),
                "{bad}"
            );
        }
        for good in ["a__b", "a--b", "a.b_c-d/e0", "x/y/z"] {
            assert!(r.resolve_path(&format!("quay.io/{good}")).is_ok(), "{good}");
        }
    }

    #[test]
    fn cache_repository_length_is_bounded() {
        let r = resolver(vec![], false);
        // "f/quay.io/" is 10 characters.
        let fits = "a".repeat(MAX_REPOSITORY_LEN - 10);
        assert!(r.resolve_path(&format!("quay.io/{fits}")).is_ok());
        let long = format!("{fits}b");
        assert_eq!(
            r.resolve_path(&format!("quay.io/{long}")),
            Err(ResolveError::NameTooLong {
                len: MAX_REPOSITORY_LEN + 1,
                max: MAX_REPOSITORY_LEN
            })
        );
    }

    #[test]
    fn authority_parsing() {
        let a = Authority::parse("Registry.Example.com:443").unwrap();
        assert_eq!(a.to_string(), "registry.example.com:443");
        assert_eq!(a.cache_name(), "registry.example.com_443");
        assert_eq!(
            Authority::from_cache_name("registry.example.com_443"),
            Some(a)
        );
        assert_eq!(Authority::from_cache_name("registry.example.com"), None);
        assert_eq!(Authority::from_cache_name("ipv6-1-2-3"), None);
        assert_eq!(Authority::from_cache_name("ipv6-1-2-3-4-5-6-7-8-9"), None);
        assert_eq!(Authority::from_cache_name("my_mirror"), None);
        for bad in [
            "", "a:b", "a:", ":80", "[::1", "[::1]x", "[x]:80", "a b", "a_b.com", "é.com",
        ] {
            assert!(Authority::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Authority::parse("[::FFFF:127.0.0.1]").unwrap().to_string(),
            "[::ffff:127.0.0.1]"
        );
    }
}
