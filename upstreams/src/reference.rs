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
//! Registries are read as [`Authority`] values, in their canonical form (`trow_names`):
//! lowercase, default ports dropped (`host:443`, `host_80` are `host`; the scheme picks the
//! port), Docker Hub's names as one. Cache names are single OCI path components:
//! - Docker Hub (`docker.io`, `index.docker.io`, `registry-1.docker.io`): `docker.io`;
//! - an upstream whose config entry has an alias: the alias;
//! - a host, optionally with a port other than a default one: the host with `:` replaced by `_`
//!   (`host:5000` → `host_5000`). Host names cannot contain `_`, so this reads back
//!   unambiguously;
//! - an IPv6 literal: `ipv6-` and its eight groups in hex joined by `-`, then `_<port>` if any
//!   (`[::1]:5000` → `ipv6-0-0-0-0-0-0-0-1_5000`), since `:`, `[` and `]` cannot appear in a
//!   repository name.

use std::collections::HashMap;
use std::sync::Arc;

pub use trow_names::authority::{Authority, DOCKER_HUB_NAME, DOCKER_HUB_UPSTREAM, is_docker_hub};
pub use trow_names::grammar::{MAX_REPOSITORY_LEN, valid_component, valid_repository};

use trow_names::image::{names_registry, normalize_registry};
use trow_names::policy::CacheOrigin;

use crate::config::{ProxyConfig, RegistryConfig};

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

/// What the cache fetches for `<trow>/f/<path>`: lets the policy judge images in Trow's cache
/// as the images they cache.
impl CacheOrigin for Resolver {
    fn origin(&self, path: &str) -> Result<(String, String), String> {
        let target = self.resolve_path(path).map_err(|e| e.to_string())?;
        let written = path.split('/').next().unwrap_or(path);
        Ok((policy_registry(&target, written)?, target.repository))
    }
}

/// The registry the policy knows `target` by, `written` being how the request named it: the
/// upstream normalized as an image's registry, except that an alias which is itself a registry
/// name (`gcr.io` for a mirror standing in for it) is that registry, as the image was written
/// before the mutating webhook's rewrite.
pub fn policy_registry(target: &Target, written: &str) -> Result<String, String> {
    let by_alias = target.registry.as_ref().and_then(|r| r.alias.as_deref()) == Some(written);
    match &target.registry {
        Some(_) if by_alias && names_registry(written) => {
            normalize_registry(written).or_else(|_| normalize_registry(&target.upstream.host))
        }
        _ => normalize_registry(&target.upstream.host),
    }
    .map_err(|e| e.to_string())
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
    fn default_ports_share_one_cache_and_one_entry() {
        let mut e = entry("127.0.0.2");
        e.insecure = true;
        let r = resolver(vec![e, entry("quay.io:443")], true);
        let t = r.resolve_path("127.0.0.2/app").unwrap();
        assert_eq!(t.upstream.base_url(), "http://127.0.0.2");
        assert_eq!(t.cache_repository, "f/127.0.0.2/app");
        assert!(t.registry.is_some());
        for other in [
            r.resolve_path("127.0.0.2_80/app").unwrap(),
            r.resolve_path("127.0.0.2_443/app").unwrap(),
            r.resolve_ns("127.0.0.2:80", "app").unwrap(),
        ] {
            assert_eq!(other, t);
        }
        let q = r.resolve_path("quay.io/team/app").unwrap();
        assert_eq!(q.upstream.base_url(), "https://quay.io");
        assert_eq!(q.cache_repository, "f/quay.io/team/app");
        assert!(q.registry.is_some());
        assert_eq!(r.resolve_ns("Quay.IO:443", "team/app").unwrap(), q);
        assert_eq!(r.resolve_path("quay.io_443/team/app").unwrap(), q);
        // Docker Hub under a default port is Docker Hub.
        let open = resolver(vec![], false);
        let hub = open.resolve_path("docker.io/library/busybox").unwrap();
        assert_eq!(
            open.resolve_ns("registry-1.docker.io:443", "busybox")
                .unwrap(),
            hub
        );
        assert_eq!(open.resolve_path("docker.io_443/busybox").unwrap(), hub);
        // Other ports are other registries.
        let other = open.resolve_path("quay.io_8443/team/app").unwrap();
        assert_eq!(other.cache_repository, "f/quay.io_8443/team/app");
    }
}
