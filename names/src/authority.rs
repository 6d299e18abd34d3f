//! Registry authorities (`host[:port]`) in one canonical form, and the OCI repository grammar.
//!
//! A registry can be written many ways: `Quay.IO`, `quay.io:443`, `registry-1.docker.io:443`,
//! `host_5000` (the cache's spelling). The pull-through cache must put every spelling of one
//! upstream in one cached repository, and the validation policy must judge every spelling of
//! one image alike, or a deny could be bypassed by rewording the registry. So an authority is
//! parsed into one value:
//!
//! - the host is lowercase (IPv6 in its canonical spelling);
//! - a default port (`:443`, `:80`) is dropped: the scheme picks the port (https, or http for an
//!   `insecure` upstream), so `host:443`, `host_443`, `host:80` and `host` are one registry.
//!   The port stays on a one-label name other than `localhost` (`myreg:443`), since without it
//!   the name would read as a Docker Hub namespace, not a registry;
//! - Docker Hub's names (`docker.io`, `index.docker.io`, `registry-1.docker.io`) are one
//!   registry, whatever port was written after them.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_UPSTREAM: &str = "registry-1.docker.io";
/// Docker Hub's cache name, the name clients know it by.
pub const DOCKER_HUB_NAME: &str = "docker.io";
/// Whether a (lowercase, port-less) host is one of Docker Hub's names.
pub fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Ports a URL's scheme implies (https, http): written or not, they name the same registry.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// The host part of an upstream's authority.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Host {
    /// A DNS name, lowercase.
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// A parsed `host[:port]`: one value per upstream, whatever spelling named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    host: Host,
    port: Option<u16>,
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
            return Ok(Authority::canonical(Host::V6(ip), port));
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return Err("an IPv6 address goes in brackets, e.g. [::1]:5000".into());
        }
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (s.as_str(), None),
        };
        Ok(Authority::canonical(parse_host(host)?, port))
    }

    /// The one value for `host` and `port`: a default port is dropped unless the host would
    /// then no longer read as a registry (see the module doc).
    fn canonical(host: Host, port: Option<u16>) -> Authority {
        let bare = Authority { host, port: None };
        match port {
            Some(p) if DEFAULT_PORTS.contains(&p) && bare.looks_like_registry() => bare,
            port => Authority { port, ..bare },
        }
    }

    /// Reads back a cache name that differs from its host's spelling (`host_5000`,
    /// `ipv6-...`); `None` for anything else.
    pub fn from_cache_name(s: &str) -> Option<Authority> {
        if let Some(rest) = s.strip_prefix("ipv6-") {
            let (groups, port) = match rest.split_once('_') {
                Some((g, p)) => (g, Some(p)),
                None => (rest, None),
            };
            if let Some(ip) = ipv6_of_groups(groups) {
                let port = port.map(parse_port).transpose().ok()?;
                return Some(Authority::canonical(Host::V6(ip), port));
            }
            // Not eight groups: a host name that begins with `ipv6-`, read below.
        }
        let (host, port) = s.split_once('_')?;
        Some(Authority::canonical(
            parse_host(host).ok()?,
            Some(parse_port(port).ok()?),
        ))
    }

    /// The cache's spelling of this authority: one OCI path component (see the module doc).
    pub fn cache_name(&self) -> String {
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
    pub fn looks_like_registry(&self) -> bool {
        match &self.host {
            Host::Name(n) => self.port.is_some() || n.contains('.') || n == "localhost",
            Host::V4(_) | Host::V6(_) => true,
        }
    }

    /// Docker Hub under any of its names (with no port but a default one).
    pub fn is_docker_hub(&self) -> bool {
        matches!(&self.host, Host::Name(n) if self.port.is_none() && is_docker_hub(n))
    }

    /// The host as a URL carries it; Docker Hub's names all become [`DOCKER_HUB_UPSTREAM`].
    pub fn upstream_host(&self) -> String {
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

/// The address the cache spells `ipv6-<8 hex groups joined by '-'>` (the part after `ipv6-`).
fn ipv6_of_groups(groups: &str) -> Option<Ipv6Addr> {
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
    (n == 8).then(|| Ipv6Addr::from(segments))
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
    // The cache spells `[1:2::8]` as `ipv6-1-2-0-0-0-0-0-8`: a host of that name would share
    // its cached repositories.
    if let Some(ip) = h.strip_prefix("ipv6-").and_then(ipv6_of_groups) {
        return Err(format!(
            "{h:?} is how the cache spells the IPv6 address {ip}; write [{ip}]"
        ));
    }
    Ok(Host::Name(h.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_parsing() {
        // The default port is dropped (see `default_ports_are_dropped`): it was kept before.
        let a = Authority::parse("Registry.Example.com:443").unwrap();
        assert_eq!(a.to_string(), "registry.example.com");
        assert_eq!(a.cache_name(), "registry.example.com");
        assert_eq!(
            Authority::from_cache_name("registry.example.com_443"),
            Some(a)
        );
        let b = Authority::parse("Registry.Example.com:5000").unwrap();
        assert_eq!(b.to_string(), "registry.example.com:5000");
        assert_eq!(b.cache_name(), "registry.example.com_5000");
        assert_eq!(
            Authority::from_cache_name("registry.example.com_5000"),
            Some(b)
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

    #[test]
    fn default_ports_are_dropped() {
        let one = |s: &str| Authority::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        for s in ["quay.io", "Quay.IO", "quay.io:443", "QUAY.io:80"] {
            assert_eq!(one(s), one("quay.io"), "{s}");
            assert_eq!(one(s).to_string(), "quay.io", "{s}");
        }
        for s in ["127.0.0.2:80", "127.0.0.2:443", "[::1]:443", "localhost:80"] {
            let a = one(s);
            assert_eq!(a.to_string(), s.rsplit_once(':').unwrap().0, "{s}");
            assert_eq!(a.cache_name(), one(&a.to_string()).cache_name(), "{s}");
        }
        assert_eq!(
            Authority::from_cache_name("127.0.0.2_80"),
            Some(one("127.0.0.2"))
        );
        assert_eq!(
            Authority::from_cache_name("ipv6-0-0-0-0-0-0-0-1_443"),
            Some(one("[::1]"))
        );
        // Other ports stay, and one-label names keep even a default port: without it
        // `myreg/app` would be a Docker Hub namespace.
        assert_eq!(one("quay.io:8443").to_string(), "quay.io:8443");
        assert_eq!(one("myreg:443").to_string(), "myreg:443");
        assert_eq!(one("myreg:443").cache_name(), "myreg_443");
        assert!(one("myreg:443").looks_like_registry());
        assert!(!one("myreg").looks_like_registry());
        // Every Docker Hub spelling is one registry, fetched from one host.
        for s in [
            "docker.io",
            "docker.io:443",
            "Index.Docker.IO:443",
            "registry-1.docker.io:443",
            "registry-1.docker.io:80",
        ] {
            let a = one(s);
            assert!(a.is_docker_hub(), "{s}");
            assert_eq!(a.upstream_host(), DOCKER_HUB_UPSTREAM, "{s}");
        }
        assert!(!one("docker.io:5000").is_docker_hub());
    }

    /// Found by the fuzz target `names_reference`: a host named `ipv6-...` with a port got the
    /// cache name `ipv6-..._4`, which did not read back (`f/ipv6-fv6cker8io_4/...` resolved to
    /// nothing), and a host named like the cache's spelling of an IPv6 address shared that
    /// address's cached repositories.
    #[test]
    fn host_names_beginning_with_ipv6_read_back() {
        let a = Authority::parse("ipv6-fv6cker8io:4").unwrap();
        assert_eq!(a.cache_name(), "ipv6-fv6cker8io_4");
        assert_eq!(Authority::from_cache_name(&a.cache_name()), Some(a));
        let e = Authority::parse("ipv6-1-2-3-4-5-6-7-8:5000").unwrap_err();
        assert!(e.contains("[1:2:3:4:5:6:7:8]"), "{e}");
        let v6 = Authority::parse("[1:2:3:4:5:6:7:8]:5000").unwrap();
        assert_eq!(Authority::from_cache_name(&v6.cache_name()), Some(v6));
        // Not eight groups, or with a dot: a name like any other.
        assert!(Authority::parse("ipv6-1-2-3:5000").is_ok());
        assert!(Authority::parse("ipv6-1-2-3-4-5-6-7-8.example.com").is_ok());
    }
}
