//! No server-side request forgery by default.
//!
//! `/f/<host>/...` and `?ns=<host>` let any client make Trow fetch from any host, so without a
//! guard a client could point Trow at its own loopback services, the node's link-local
//! neighbours or the cloud metadata endpoint (which hands out credentials). Unless an operator
//! configured an upstream, Trow refuses addresses of those kinds. Private RFC 1918 ranges stay
//! allowed: in-cluster registries live there.
//!
//! Names are checked where they are resolved, inside the HTTP client's connector
//! ([`GuardedResolver`]), so the address checked is the address connected to: a name that
//! resolves to a public address when validated and to 127.0.0.1 when connecting (DNS rebinding)
//! gains nothing. The client does not resolve IP literals, so those go through
//! [`check_literal`] before a request is made.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::ProxyConfig;
use crate::reference::Authority;

/// AWS's IPv6 instance metadata endpoint.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// Alibaba Cloud's metadata endpoint (outside link-local, so named on its own).
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);

/// Why an upstream address was refused or could not be found.
#[derive(Debug, thiserror::Error)]
pub enum SsrfError {
    #[error(
        "refusing to connect to {host}: {ip} is a loopback, link-local or metadata address, \
         allowed only for configured registries"
    )]
    ForbiddenAddress { host: String, ip: IpAddr },
    #[error(
        "refusing to connect to {host}: it resolves only to loopback, link-local or metadata \
         addresses, allowed only for configured registries"
    )]
    NoAllowedAddress { host: String },
    #[error("cannot resolve {host}: {error}")]
    Lookup { host: String, error: std::io::Error },
    #[error("cannot resolve {host}: no addresses")]
    NoAddress { host: String },
}

/// Whether an unconfigured upstream may not connect to `ip`: loopback, unspecified, `0/8`,
/// link-local, broadcast, cloud metadata endpoints, and IPv6 addresses that embed any of these
/// (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`).
pub fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    // 0/8 covers 0.0.0.0; 169.254/16 covers 169.254.169.254 (AWS, GCP, Azure, OpenStack...).
    a == 0 || a == 127 || (a == 169 && b == 254) || ip == ALIBABA_METADATA || ip.is_broadcast()
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        // `::` and `::1` land here too, as 0.0.0.0 and 0.0.0.1.
        return forbidden_v4(v4);
    }
    let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
    ip.is_loopback() || ip.is_unspecified() || link_local || ip == AWS_METADATA_V6
}

/// The IPv4 address an IPv6 address stands for, in the forms a dual-stack host or a NAT64
/// gateway would connect to as IPv4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = || Ipv4Addr::from(u128::from(ip) as u32);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6];
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || compatible || nat64).then(v4)
}

/// The host of `host`, `host:port`, `[v6]` or `[v6]:port` (or a bare IPv6 address),
/// lowercase, without a trailing dot.
fn host_only(host: &str) -> String {
    let h = match host.strip_prefix('[') {
        Some(inner) => inner.split(']').next().unwrap_or(inner),
        None => match host.split_once(':') {
            Some((h, port)) if !port.contains(':') => h,
            _ => host,
        },
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// For an upstream host written as an IP literal (the HTTP client never resolves those):
/// refused when it is not configured and [`forbidden_ip`]. Host names pass; the resolver
/// checks them.
pub fn check_literal(host: &str, configured: bool) -> Result<(), SsrfError> {
    if configured {
        return Ok(());
    }
    match host_only(host).parse::<IpAddr>() {
        Ok(ip) if forbidden_ip(ip) => Err(SsrfError::ForbiddenAddress {
            host: host.to_string(),
            ip,
        }),
        _ => Ok(()),
    }
}

/// A DNS resolver for the upstream HTTP client that drops forbidden addresses of hosts not in
/// its allow-set. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allowed: Arc<HashSet<String>>,
}

impl GuardedResolver {
    /// `allowed_hosts` are trusted to resolve anywhere: the configured upstreams, each as
    /// `host` or `host:port` (the port is ignored; case too).
    pub fn new(allowed_hosts: impl IntoIterator<Item = String>) -> GuardedResolver {
        let allowed = allowed_hosts.into_iter().map(|h| host_only(&h)).collect();
        GuardedResolver {
            allowed: Arc::new(allowed),
        }
    }

    /// Trusts every host `cfg` configures, as the HTTP client will name it (an entry for
    /// `docker.io` means `registry-1.docker.io`).
    pub fn for_config(cfg: &ProxyConfig) -> GuardedResolver {
        GuardedResolver::new(
            cfg.registries
                .iter()
                .map(|r| match Authority::parse(&r.host) {
                    Ok(a) => a.upstream_host(),
                    Err(_) => r.host.clone(),
                }),
        )
    }

    /// Whether `host` (with or without a port) is trusted to resolve anywhere.
    pub fn allows(&self, host: &str) -> bool {
        self.allowed.contains(&host_only(host))
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = host_only(name.as_str());
        let trusted = self.allowed.contains(&host);
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|error| SsrfError::Lookup {
                    host: host.clone(),
                    error,
                })?
                .collect();
            let kept = screen(&host, trusted, found)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The addresses of `host` it may connect to: all of them when trusted, else the ones that
/// are not [`forbidden_ip`]; an error when none remain.
fn screen(host: &str, trusted: bool, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, SsrfError> {
    if found.is_empty() {
        return Err(SsrfError::NoAddress {
            host: host.to_string(),
        });
    }
    if trusted {
        return Ok(found);
    }
    let kept: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| !forbidden_ip(a.ip()))
        .collect();
    if kept.is_empty() {
        return Err(SsrfError::NoAllowedAddress {
            host: host.to_string(),
        });
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistryConfig;

    #[test]
    fn the_address_table() {
        let forbidden = [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "169.254.0.1",
            "169.254.169.254",
            "100.100.100.200",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "febf:ffff::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:169.254.169.254",
            "::ffff:100.100.100.200",
            "::ffff:255.255.255.255",
            "::127.0.0.1",
            "::169.254.169.254",
            "::2:1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::169.254.169.254",
        ];
        let allowed = [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "1.0.0.0",
            "100.64.0.1",
            "100.100.100.201",
            "169.253.255.255",
            "169.255.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "255.255.255.254",
            "fd00::1",
            "fc00::1",
            "fec0::1",
            "fd00:ec2::253",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ];
        for a in forbidden {
            assert!(forbidden_ip(a.parse().unwrap()), "{a} should be forbidden");
        }
        for a in allowed {
            assert!(!forbidden_ip(a.parse().unwrap()), "{a} should be allowed");
        }
    }

    #[test]
    fn literals_are_refused_unless_configured() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:5000",
            "[::1]",
            "[::1]:5000",
            "::1",
            "169.254.169.254",
        ] {
            let e = check_literal(h, false).unwrap_err();
            assert!(e.to_string().starts_with("refusing to connect to "), "{e}");
            assert!(check_literal(h, true).is_ok());
        }
        for h in [
            "10.0.0.1:5000",
            "[2001:db8::1]:443",
            "localhost",
            "example.com:5000",
        ] {
            assert!(check_literal(h, false).is_ok(), "{h}");
        }
    }

    #[test]
    fn hosts_lose_ports_case_and_trailing_dots() {
        assert_eq!(host_only("Registry.Local.:5000"), "registry.local");
        assert_eq!(host_only("[::1]:5000"), "::1");
        assert_eq!(host_only("fe80::1"), "fe80::1");
        let r = GuardedResolver::new(["LocalHost:5000".to_string()]);
        assert!(r.allows("localhost") && r.allows("localhost.") && !r.allows("other"));
    }

    #[test]
    fn for_config_trusts_hosts_as_urls_name_them() {
        let cfg = ProxyConfig {
            registries: vec![
                RegistryConfig {
                    host: "docker.io".into(),
                    ..RegistryConfig::default()
                },
                RegistryConfig {
                    host: "reg.local:5000".into(),
                    ..RegistryConfig::default()
                },
            ],
            ..ProxyConfig::default()
        };
        let r = GuardedResolver::for_config(&cfg);
        assert!(r.allows("registry-1.docker.io"));
        assert!(r.allows("reg.local"));
        assert!(!r.allows("quay.io"));
    }

    #[test]
    fn screening_keeps_only_allowed_addresses() {
        let addrs: Vec<SocketAddr> =
            vec!["127.0.0.1:0".parse().unwrap(), "8.8.8.8:0".parse().unwrap()];
        assert_eq!(
            screen("mixed", false, addrs.clone()).unwrap(),
            vec!["8.8.8.8:0".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(screen("mixed", true, addrs.clone()).unwrap(), addrs);
        assert!(matches!(
            screen("lo", false, vec!["[::1]:0".parse().unwrap()]),
            Err(SsrfError::NoAllowedAddress { .. })
        ));
        assert!(matches!(
            screen("none", true, vec![]),
            Err(SsrfError::NoAddress { .. })
        ));
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost_unless_allowed() {
        let name = || "localhost".parse::<Name>().unwrap();
        let err = match GuardedResolver::new(Vec::new()).resolve(name()).await {
            Ok(_) => panic!("localhost resolved although not allowed"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("refusing to connect to localhost"), "{err}");
        let allowed = GuardedResolver::new(["localhost".to_string()]);
        let addrs: Vec<SocketAddr> = allowed.resolve(name()).await.unwrap().collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[test]
    fn it_plugs_into_reqwest() {
        let resolver = Arc::new(GuardedResolver::new(Vec::new()));
        assert!(
            reqwest::Client::builder()
                .dns_resolver(resolver)
                .build()
                .is_ok()
        );
    }
}
