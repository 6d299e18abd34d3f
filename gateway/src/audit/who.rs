//! Who made a request, for the audit log: the authenticated user (from the auth guard's
//! [`Identity`]), the client's address and its user agent.
//!
//! The client address is the TCP peer's. Behind a load balancer that is the balancer, so a
//! peer listed in `trusted_proxies` may say who its client was in `X-Forwarded-For` (the
//! right-most address not itself trusted); anyone else's header is ignored, since a client can
//! write whatever it likes there.

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, header};
use base64::Engine;
use std::net::{IpAddr, SocketAddr};

use crate::auth::Identity;

/// The who of an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Who {
    pub user: String,
    pub client: String,
    pub user_agent: String,
}

/// User agents are cut to this many bytes: a header is not a place to store data.
const MAX_USER_AGENT: usize = 256;

impl Who {
    /// Who sent a request: `identity` as the guard found it, the connection's peer, headers.
    pub fn of(
        identity: Option<&Identity>,
        peer: Option<&ConnectInfo<SocketAddr>>,
        headers: &HeaderMap,
        trusted_proxies: &[IpAddr],
    ) -> Who {
        let user = identity.and_then(|i| i.user.clone()).unwrap_or_default();
        let mut user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if user_agent.len() > MAX_USER_AGENT {
            let mut cut = MAX_USER_AGENT;
            while !user_agent.is_char_boundary(cut) {
                cut -= 1;
            }
            user_agent.truncate(cut);
        }
        let client = match peer {
            Some(ConnectInfo(addr)) => forwarded_for(addr.ip(), headers, trusted_proxies)
                .unwrap_or(addr.ip())
                .to_string(),
            None => String::new(),
        };
        Who {
            user,
            client,
            user_agent,
        }
    }
}

/// The client a trusted proxy says it forwards: the right-most `X-Forwarded-For` address that
/// is not itself a trusted proxy.
fn forwarded_for(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    if !trusted.contains(&peer) {
        return None;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        for part in v.to_str().ok()?.split(',') {
            hops.push(part.trim().parse().ok()?);
        }
    }
    hops.into_iter().rev().find(|ip| !trusted.contains(ip))
}

/// The user name a refused request claimed with Basic credentials (never the password), for
/// the record of the refusal.
pub fn claimed_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _password) = text.split_once(':')?;
    Some(user.chars().take(128).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let lb: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8"),
        );
        assert_eq!(forwarded_for(lb, &h, &[]), None);
        assert_eq!(
            forwarded_for(lb, &h, &[lb]),
            Some("5.6.7.8".parse().unwrap())
        );
        let inner: IpAddr = "5.6.7.8".parse().unwrap();
        assert_eq!(
            forwarded_for(lb, &h, &[lb, inner]),
            Some("1.2.3.4".parse().unwrap())
        );
    }

    #[test]
    fn claims_the_user_never_the_password() {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode("ann:s3cret");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        assert_eq!(claimed_user(&h).as_deref(), Some("ann"));
    }
}
