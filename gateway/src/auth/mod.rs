//! Authentication at the gateway, by the Docker token protocol that podman, skopeo, oras,
//! crane, containerd and docker speak:
//!
//! 1. a request without valid credentials gets `401 UNAUTHORIZED` and
//!    `WWW-Authenticate: Bearer realm="<scheme>://<host>/v2/token",service="<name>",scope="..."`;
//! 2. the client asks the realm (`GET /v2/token?service=..&scope=..`, see [`Auth::token`]) with
//!    Basic credentials (or none, for anonymous pulls) for a token;
//! 3. it sends the token as `Authorization: Bearer` on its requests, which [`layer`] checks.
//!
//! `Authorization: Basic` is accepted on `/v2/` routes too (curl, some scripts). The accounts
//! are in [`users`]; tokens in [`token`]; scopes and what a request needs in [`scope`].
//!
//! Who may do what is decided by [`rules`], on every request (so a change of rules applies to
//! tokens already issued): a caller who is not allowed gets `401 UNAUTHORIZED` and the
//! challenge when it sent no credentials (it may log in), `403 DENIED` when it did. A token
//! still has to grant the scope a request needs. The webhooks (`/validate-image`,
//! `/mutate-image`) and the health endpoints are not behind authentication: the API server and
//! the kubelet call them.

pub mod kubernetes;
pub mod layer;
pub mod rules;
pub mod scope;
pub mod token;
pub mod users;

use axum::http::HeaderMap;
use base64::Engine;
use futures::FutureExt;
use std::time::Duration;

use kubernetes::Kubernetes;
use rules::{Action, Rules};
use scope::{Access, Need};
use std::sync::Arc;
use token::{TokenError, Tokens};
use users::Users;

/// What authentication runs with.
pub struct AuthConfig {
    /// Who may log in; at least one.
    pub users: Users,
    /// The tokens' HMAC key (see [`token::key_from_file`], [`token::random_key`]).
    pub token_key: Vec<u8>,
    pub token_lifetime: Duration,
    /// Who may do what (see [`rules`]).
    pub rules: Rules,
    /// The name in challenges and tokens (`service`, a token's `aud`).
    pub service: String,
    /// The gateway serves HTTPS: the realm is an `https` URL.
    pub https: bool,
    /// The name clients use for this registry (`?ns=<hostname>` is a local read).
    pub hostname: Option<String>,
    /// The cluster's TokenReview and SubjectAccessReview, when the rules ask for them.
    pub kubernetes: Option<Arc<Kubernetes>>,
}

/// Who made a request, as the guard found it. The guard puts it in the request's extensions,
/// where rules, handlers and the audit log read it; it is absent when authentication is off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user's name; None: anonymous (no credentials, with anonymous pull on).
    pub user: Option<String>,
    /// Groups the user is in besides those the rules define (a TokenReview's).
    pub groups: Vec<String>,
    /// Authenticated by the cluster (a TokenReview), not as one of Trow's own users: only such
    /// identities are asked of the cluster's RBAC, so a Trow user never inherits the rights of
    /// a cluster user of the same name.
    pub kubernetes: bool,
    /// When the credentials that proved it expire (a Kubernetes token's `exp`): Trow's token
    /// for it ends no later.
    pub expires: Option<std::time::SystemTime>,
}

impl Identity {
    /// The identity of a request that went through the guard, if any.
    pub fn of(extensions: &axum::http::Extensions) -> Option<&Identity> {
        extensions.get::<Identity>()
    }

    fn user(name: String) -> Identity {
        Identity {
            user: Some(name),
            groups: Vec::new(),
            kubernetes: false,
            expires: None,
        }
    }
}

/// Why a request or a token request is refused. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required")]
    Missing,
    #[error("malformed Authorization header")]
    Malformed,
    #[error("invalid username or password")]
    BadCredentials,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the token does not grant {0}")]
    InsufficientScope(String),
    /// Authenticated (as `user`, for the audit log), but the rules do not allow it (the
    /// scope): `403 DENIED`, no challenge.
    #[error("{scope} is not allowed")]
    Denied { scope: String, user: String },
    #[error("cannot issue a token")]
    Issue,
}

/// A refusal and the `WWW-Authenticate` challenge that goes with it; `crate::error` makes it
/// the 401 answer.
#[derive(Debug)]
pub struct Refusal {
    pub error: AuthError,
    pub challenge: String,
}

/// The token endpoint's answer (distribution's shape: `token` and its OAuth2 name
/// `access_token`, `expires_in` seconds, `issued_at` RFC 3339).
#[derive(Debug, serde::Serialize)]
pub struct TokenAnswer {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

/// What the `Authorization` header says.
enum Credentials<'a> {
    None,
    Basic(String, String),
    Bearer(&'a str),
    Malformed,
}

fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Credentials::None;
    };
    let Ok(value) = value.to_str() else {
        return Credentials::Malformed;
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Credentials::Bearer(rest);
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Malformed;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    match decoded.as_deref().and_then(|s| s.split_once(':')) {
        Some((user, password)) => Credentials::Basic(user.to_string(), password.to_string()),
        None => Credentials::Malformed,
    }
}

/// Authentication for one gateway.
pub struct Auth {
    users: Users,
    tokens: Tokens,
    rules: Rules,
    kubernetes: Option<Arc<Kubernetes>>,
    scheme: &'static str,
    hostname: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users)
            .field("tokens", &self.tokens)
            .field("rules", &self.rules)
            .field("kubernetes", &self.kubernetes)
            .finish()
    }
}

impl Auth {
    pub fn new(c: AuthConfig) -> Auth {
        Auth {
            users: c.users,
            tokens: Tokens::new(c.token_key, c.token_lifetime, c.service),
            rules: c.rules,
            kubernetes: c.kubernetes,
            hostname: c.hostname,
            scheme: if c.https { "https" } else { "http" },
        }
    }

    /// The name clients use for this registry.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// [`Auth::check`], when it can answer without waiting, as it can for a token (or no
    /// credentials) judged by the rules alone; None: call `check`. A password waits for bcrypt
    /// on the blocking pool, the cluster's RBAC for the API server.
    pub fn check_now(
        &self,
        headers: &HeaderMap,
        need: &Need,
    ) -> Option<Result<Identity, AuthError>> {
        let credentials = credentials(headers);
        match &credentials {
            Credentials::Basic(..) => return None,
            // The cluster is asked only of its own identities.
            Credentials::Bearer(t)
                if self.kubernetes.is_some()
                    && self.tokens.verify(t).is_ok_and(|c| c.kubernetes) =>
            {
                return None;
            }
            _ => {}
        }
        // Nothing in `judge` waits for this caller, so its first poll finishes it; a future
        // change that made it wait would only make this None.
        self.judge(credentials, need).now_or_never()
    }

    /// Who sent a request with `headers`, if it may do what `need` says.
    pub async fn check(&self, headers: &HeaderMap, need: &Need) -> Result<Identity, AuthError> {
        self.judge(credentials(headers), need).await
    }

    async fn judge(
        &self,
        credentials: Credentials<'_>,
        need: &Need,
    ) -> Result<Identity, AuthError> {
        let (identity, claims) = match credentials {
            // `/v2/` challenges callers without credentials, so clients learn to log in.
            Credentials::None if need.access.is_some() && self.rules.grants_anonymous() => {
                (Identity::default(), None)
            }
            Credentials::None => return Err(AuthError::Missing),
            Credentials::Malformed => return Err(AuthError::Malformed),
            Credentials::Basic(user, password) => (self.login(user, &password).await?, None),
            Credentials::Bearer(t) => {
                let claims = self.tokens.verify(t)?;
                let identity = match claims.sub.is_empty() {
                    true => Identity::default(),
                    false => Identity {
                        user: Some(claims.sub.clone()),
                        groups: claims.groups.clone(),
                        kubernetes: claims.kubernetes,
                        expires: None,
                    },
                };
                (identity, Some(claims))
            }
        };
        if need.user && identity.user.is_none() {
            return Err(AuthError::Missing);
        }
        let Some(access) = &need.access else {
            return Ok(identity);
        };
        if !self
            .allowed(&identity, access, need.target.as_deref())
            .await
        {
            return Err(match identity.user {
                None => AuthError::Missing,
                Some(user) => AuthError::Denied {
                    scope: access.scope(),
                    user,
                },
            });
        }
        match claims {
            Some(c) if !c.access.iter().any(|g| g.covers(access)) => {
                Err(AuthError::InsufficientScope(access.scope()))
            }
            _ => Ok(identity),
        }
    }

    /// Who logs in with `user` and `password`: one of Trow's users, or, with TokenReview on, the
    /// owner of a Kubernetes token given as the password (the user name is then ignored, as
    /// docker's credential helpers fill it with anything).
    async fn login(&self, user: String, password: &str) -> Result<Identity, AuthError> {
        if self.users.verify(&user, password).await {
            return Ok(Identity::user(user));
        }
        // Only what looks like a Kubernetes token (a JWT), and not a Trow user's mistyped
        // password, goes to the API server: a typo must not travel to another system's logs,
        // nor every wrong password cost a review.
        if let Some(k) = self.kubernetes.as_ref().filter(|k| k.token_review())
            && !self.users.contains(&user)
            && looks_like_jwt(password)
            && let Some(identity) = k.review(password).await
        {
            return Ok(identity);
        }
        Err(AuthError::BadCredentials)
    }

    /// Whether `who` may `action` on `repository`: the rules, or the cluster's RBAC.
    pub async fn may(&self, who: &Identity, repository: &str, action: Action) -> bool {
        if self.rules.allows(who, repository, action) {
            return true;
        }
        match &self.kubernetes {
            // The cache's own rules are not RBAC's to widen: `cache_pull` decides them.
            Some(k) if who.kubernetes && !trow_proto::cache::is_cached(repository) => {
                k.allows(who, Some(repository), action).await
            }
            _ => false,
        }
    }

    /// Whether `who` may pull every repository (RBAC's `pull` on the resource with no name):
    /// then the catalog needs no filter.
    pub async fn may_pull_all(&self, who: &Identity) -> bool {
        match &self.kubernetes {
            Some(k) if who.kubernetes => k.allows(who, None, Action::Pull).await,
            _ => false,
        }
    }

    /// Whether `who` may have `access`; `target` is the repository judged (the cache's
    /// `f/<registry>/...` for a `?ns=` read), when it is not the scope's own name.
    async fn allowed(&self, who: &Identity, access: &Access, target: Option<&str>) -> bool {
        match (access.kind.as_str(), access.name.as_str()) {
            ("registry", "catalog") => true,
            ("registry", "audit") => {
                self.rules.allows_audit(who)
                    || match &self.kubernetes {
                        Some(k) if who.kubernetes => k.allows(who, None, Action::Audit).await,
                        _ => false,
                    }
            }
            ("repository", name) => {
                for a in &access.actions {
                    let Some(a) = Action::from_scope(a) else {
                        return false;
                    };
                    if !self.may(who, target.unwrap_or(name), a).await {
                        return false;
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// The part of `requested` a token for `who` grants. Pull is granted on any name the caller
    /// could pull through the cache as well, since a containerd mirror read (`?ns=`) asks for
    /// the upstream's name; each request is judged by the rules again anyway.
    async fn grant(&self, who: &Identity, requested: Vec<Access>) -> Vec<Access> {
        let cache_pull = self.rules.allows_some_cache_pull(who);
        let mut granted = Vec::new();
        for mut a in requested {
            if a.kind == "repository" {
                let mut kept = Vec::new();
                for x in std::mem::take(&mut a.actions) {
                    let ok = match Action::from_scope(&x) {
                        Some(Action::Pull) if cache_pull => true,
                        Some(action) => self.may(who, &a.name, action).await,
                        None => false,
                    };
                    if ok {
                        kept.push(x);
                    }
                }
                a.actions = kept;
            } else if !self.allowed(who, &a, None).await {
                a.actions.clear();
            }
            if !a.actions.is_empty() {
                granted.push(a);
            }
        }
        granted
    }

    /// The Bearer challenge for a request to `host` that needs `need`, refused for `error`.
    /// `https`: what `X-Forwarded-Proto` says the client used, if anything.
    pub fn challenge(
        &self,
        host: Option<&str>,
        https: Option<bool>,
        need: &Need,
        error: &AuthError,
    ) -> String {
        let scheme = match https {
            Some(true) => "https",
            Some(false) => "http",
            None => self.scheme,
        };
        let mut c = format!(
            "Bearer realm=\"{}://{}/v2/token\",service=\"{}\"",
            scheme,
            realm_host(host, self.tokens.service()),
            self.tokens.service()
        );
        if let Some(a) = &need.access {
            c.push_str(&format!(",scope=\"{}\"", a.scope()));
        }
        match error {
            AuthError::InsufficientScope(_) => c.push_str(",error=\"insufficient_scope\""),
            AuthError::Token(_) => c.push_str(",error=\"invalid_token\""),
            _ => {}
        }
        c
    }

    /// The token endpoint: a token for the caller of `headers` granting what the `scope`
    /// parameters of `query` ask for, as far as it may have it. Basic credentials must be
    /// right; without any, the caller is anonymous and gets pulls only, and only with anonymous
    /// pull on.
    pub async fn token(&self, headers: &HeaderMap, query: &str) -> Result<TokenAnswer, Refusal> {
        let refuse = |error| Refusal {
            challenge: format!("Basic realm=\"{}\"", self.tokens.service()),
            error,
        };
        let requested = scopes(query);
        let identity = match credentials(headers) {
            Credentials::Basic(user, password) => match self.login(user, &password).await {
                Ok(identity) => identity,
                Err(e) => {
                    tracing::debug!("token request refused: invalid username or password");
                    return Err(refuse(e));
                }
            },
            Credentials::None if self.rules.grants_anonymous() => Identity::default(),
            Credentials::None => return Err(refuse(AuthError::Missing)),
            Credentials::Bearer(_) | Credentials::Malformed => {
                return Err(refuse(AuthError::Malformed));
            }
        };
        let access = self.grant(&identity, requested).await;
        let subject = identity.user.unwrap_or_default();
        let issued = self
            .tokens
            .issue(
                &subject,
                identity.groups,
                identity.kubernetes,
                identity.expires,
                access,
            )
            .map_err(|_| refuse(AuthError::Issue))?;
        Ok(TokenAnswer {
            access_token: issued.token.clone(),
            token: issued.token,
            expires_in: issued.expires_in,
            issued_at: humantime::format_rfc3339_seconds(issued.issued_at).to_string(),
        })
    }
}

/// Whether `s` has a JWT's shape: three non-empty base64url parts.
fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The host of the realm: the one the client reached us by, if it is a plain `host[:port]`
/// (anything else could break out of the quoted challenge), else the service name.
fn realm_host<'a>(host: Option<&'a str>, service: &'a str) -> &'a str {
    match host {
        Some(h)
            if !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b)) =>
        {
            h
        }
        _ => service,
    }
}

/// The scopes a token request asks for: every `scope` parameter, each possibly several
/// space-separated scopes (form encoding: `+` is a space). Unparseable scopes are ignored.
fn scopes(query: &str) -> Vec<Access> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .filter_map(|(_, v)| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })
        .flat_map(|v| v.split(' ').filter_map(Access::parse).collect::<Vec<_>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_scope_parameter() {
        let q = "service=trow&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=repository:c:pull+registry:catalog:*&scope=bad";
        assert_eq!(
            scopes(q),
            vec![
                Access::repository("a/b", &["pull", "push"]),
                Access::repository("c", &["pull"]),
                Access::catalog(),
            ]
        );
    }

    #[test]
    fn only_jwt_shapes_go_to_a_token_review() {
        assert!(looks_like_jwt(
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_x"
        ));
        assert!(!looks_like_jwt("my password"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c="));
    }

    #[test]
    fn realm_hosts_cannot_break_the_challenge() {
        assert_eq!(
            realm_host(Some("reg.example:8000"), "trow"),
            "reg.example:8000"
        );
        assert_eq!(realm_host(Some("[::1]:8000"), "trow"), "[::1]:8000");
        assert_eq!(realm_host(Some("a\",x=\"y"), "trow"), "trow");
        assert_eq!(realm_host(None, "trow"), "trow");
    }
}
