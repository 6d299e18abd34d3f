//! Talking to upstream registries: the registry API over reqwest (rustls), with the three ways
//! registries authenticate — none, Basic, and the bearer-token flow (a 401 naming a token realm,
//! a token fetched from it for the repository's pull scope and reused until it expires).
//!
//! Credentials go only where they belong: Basic credentials to the configured host, and to the
//! token realm that host names. Redirects (to blob storage or a CDN) are followed without them:
//! reqwest drops `Authorization` when a redirect leaves the origin. Nothing here logs a secret.
//!
//! An upstream is not trusted to be well-behaved: every address it names (a token realm, a
//! redirect) passes the SSRF guard as an upstream address would, every body read into memory
//! has a size cap, and every exchange has a deadline (`fetch_timeout`), so what an upstream
//! sends costs bounded memory and time.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::challenge::parse_challenge;
use crate::config::ProxyConfig;
use crate::reference::Target;
use crate::ssrf::{self, GuardedResolver};

/// Every manifest type Trow stores, asked for when the client said nothing.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// An upstream failure, said so that a client (and an operator reading the log) knows which
/// upstream failed how. Never carries a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("{host} has no {what}")]
    NotFound { host: String, what: String },
    #[error("{host} refused the credentials ({status})")]
    Unauthorized { host: String, status: u16 },
    #[error("{host} answered 429 Too Many Requests")]
    TooManyRequests { host: String },
    #[error("{host} answered {status}")]
    Status { host: String, status: u16 },
    #[error("{host} did not answer in time")]
    Timeout { host: String },
    #[error("cannot reach {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("{host} sent an invalid answer: {reason}")]
    Invalid { host: String, reason: String },
    #[error("{host} sent a {what} larger than {limit} bytes")]
    TooLarge {
        host: String,
        what: &'static str,
        limit: usize,
    },
    /// A token realm the SSRF guard refuses, as it would refuse the realm as an upstream.
    #[error("{host} named a token realm Trow may not contact: {reason}")]
    RealmRefused { host: String, reason: String },
    #[error("{0}")]
    Refused(String),
}

impl UpstreamError {
    fn from_reqwest(host: &str, e: reqwest::Error) -> UpstreamError {
        let host = host.to_string();
        if e.is_timeout() {
            return UpstreamError::Timeout { host };
        }
        // The innermost cause says what went wrong (refused, DNS, TLS), without URLs.
        let mut source: &dyn std::error::Error = &e;
        while let Some(s) = source.source() {
            source = s;
        }
        UpstreamError::Unreachable {
            host,
            reason: source.to_string(),
        }
    }
}

/// A cached bearer token.
#[derive(Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// The upstream registry API, shared by every request of the proxy.
pub struct Upstreams {
    /// Clients by config entry host (an extra CA makes a client of its own); `default` for the rest.
    clients: HashMap<String, reqwest::Client>,
    default: reqwest::Client,
    /// Bearer tokens by (realm host's registry, scope).
    tokens: Mutex<HashMap<(String, String), Token>>,
    /// Hosts that asked for Basic auth: credentials go with the first request next time.
    basic: Mutex<std::collections::HashSet<String>>,
    /// Trusts the configured hosts; checks token realms.
    guard: Arc<GuardedResolver>,
    /// Bound on a token request, and on the wait for any response's headers.
    fetch_timeout: Duration,
}

/// The largest token answer read: real ones are a JWT or two of a few KiB.
pub const MAX_TOKEN_ANSWER: usize = 256 << 10;

/// How long a connection attempt or one read of an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects are followed (blob storage, CDNs), at most a few, and never to a forbidden IP
/// literal: the resolver guards host names, but IP literals never reach it.
fn redirect_policy(guard: Arc<GuardedResolver>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        let host = attempt.url().host_str().unwrap_or("").to_string();
        match ssrf::check_literal(&host, guard.allows(&host)) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

fn client_builder(resolver: Arc<GuardedResolver>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(redirect_policy(resolver.clone()))
        .dns_resolver(resolver)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("trow/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
}

impl Upstreams {
    pub fn new(cfg: &ProxyConfig) -> Result<Upstreams, String> {
        let resolver = Arc::new(GuardedResolver::for_config(cfg));
        let mut clients = HashMap::new();
        for r in &cfg.registries {
            let Some(ca) = &r.ca_file else { continue };
            let pem =
                std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
            let mut b = client_builder(resolver.clone());
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?
            {
                b = b.add_root_certificate(cert);
            }
            let c = b.build().map_err(|e| e.to_string())?;
            clients.insert(r.host.clone(), c);
        }
        let default = client_builder(resolver.clone())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Upstreams {
            clients,
            default,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(Default::default()),
            guard: resolver,
            fetch_timeout: cfg.fetch_timeout,
        })
    }

    /// See `fetch_timeout` in the config.
    pub fn fetch_timeout(&self) -> Duration {
        self.fetch_timeout
    }

    fn client(&self, t: &Target) -> &reqwest::Client {
        t.registry
            .as_ref()
            .and_then(|r| self.clients.get(&r.host))
            .unwrap_or(&self.default)
    }

    /// Sends `method` to `/v2/<repository>/<path>` of the target's upstream, authenticating as
    /// the upstream asks. Answers other than 2xx come back as errors, except `allow` statuses.
    /// Its span (DEBUG: traces only) names the upstream and path, never the credentials.
    #[tracing::instrument(level = "debug", name = "upstream.request", skip_all, fields(
        otel.kind = "client",
        http.request.method = %method,
        server.address = %t.upstream.host,
        upstream.path = %path,
        http.response.status_code = tracing::field::Empty,
    ))]
    pub async fn send(
        &self,
        t: &Target,
        method: Method,
        path: &str,
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let started = Instant::now();
        let answer = self
            .exchange(t, method.clone(), path, headers, timeout)
            .await;
        crate::metrics::exchange(t, &method, started.elapsed(), answer.as_ref().err());
        answer
    }

    async fn exchange(
        &self,
        t: &Target,
        method: Method,
        path: &str,
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let host = t.upstream.host.clone();
        ssrf::check_literal(host_only(&host), t.registry.is_some())
            .map_err(|e| UpstreamError::Refused(e.to_string()))?;
        let url = format!("{}/v2/{}/{}", t.upstream.base_url(), t.repository, path);
        let scope = format!("repository:{}:pull", t.repository);
        let mut auth = self.known_auth(t, &scope);
        for attempt in 0..2 {
            let mut req = self
                .client(t)
                .request(method.clone(), &url)
                .headers(headers.clone());
            if let Some(a) = &auth {
                req = req.header(header::AUTHORIZATION, a.clone());
            }
            if let Some(d) = timeout {
                req = req.timeout(d);
            }
            // A timeout of its own covers the body too; every answer's headers come in time.
            let head_deadline = timeout.unwrap_or(self.fetch_timeout);
            let resp = tokio::time::timeout(head_deadline, req.send())
                .await
                .map_err(|_| UpstreamError::Timeout { host: host.clone() })?
                .map_err(|e| UpstreamError::from_reqwest(&host, e))?;
            let status = resp.status();
            tracing::Span::current().record("http.response.status_code", status.as_u16());
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                match self.answer_challenge(t, &challenge, &scope).await? {
                    Some(a) => {
                        auth = Some(a);
                        continue;
                    }
                    None => return Err(UpstreamError::Unauthorized { host, status: 401 }),
                }
            }
            return check_status(&host, resp, path);
        }
        Err(UpstreamError::Unauthorized { host, status: 401 })
    }

    /// The `Authorization` to send up front: a live token, or Basic for a host that asked.
    fn known_auth(&self, t: &Target, scope: &str) -> Option<HeaderValue> {
        let key = (t.upstream.host.clone(), scope.to_string());
        if let Some(tok) = self.tokens.lock().expect("tokens lock").get(&key)
            && tok.expires > Instant::now()
        {
            return bearer(&tok.value);
        }
        if self
            .basic
            .lock()
            .expect("basic lock")
            .contains(&t.upstream.host)
        {
            return basic(t);
        }
        None
    }

    /// Answers a 401's challenge: Basic with the configured credentials, or a bearer token from
    /// the realm. None when there is nothing to answer with.
    async fn answer_challenge(
        &self,
        t: &Target,
        challenge: &str,
        scope: &str,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        let host = &t.upstream.host;
        let (scheme, params) = parse_challenge(challenge);
        match scheme.as_str() {
            "basic" => {
                let a = basic(t);
                if a.is_some() {
                    self.basic.lock().expect("basic lock").insert(host.clone());
                }
                Ok(a)
            }
            "bearer" => {
                let Some(realm) = params.get("realm") else {
                    return Err(UpstreamError::Invalid {
                        host: host.clone(),
                        reason: "a Bearer challenge without a realm".into(),
                    });
                };
                let realm = self.check_realm(host, realm)?;
                let mut q: Vec<(&str, &str)> = vec![("scope", scope)];
                if let Some(service) = params.get("service") {
                    q.push(("service", service));
                }
                let mut req = self
                    .client(t)
                    .get(realm)
                    .query(&q)
                    .timeout(self.fetch_timeout);
                if let Some(a) = basic(t) {
                    req = req.header(header::AUTHORIZATION, a);
                }
                let resp =
                    req.send()
                        .await
                        .map_err(|e| match UpstreamError::from_reqwest(host, e) {
                            UpstreamError::Unreachable { host, reason } => {
                                UpstreamError::Unreachable {
                                    host,
                                    reason: format!("its token realm: {reason}"),
                                }
                            }
                            other => other,
                        })?;
                if !resp.status().is_success() {
                    return Err(UpstreamError::Unauthorized {
                        host: host.clone(),
                        status: resp.status().as_u16(),
                    });
                }
                let text = read_limited(host, resp, MAX_TOKEN_ANSWER, "token answer").await?;
                let body: TokenAnswer =
                    serde_json::from_slice(&text).map_err(|e| UpstreamError::Invalid {
                        host: host.clone(),
                        reason: format!("token answer: {e}"),
                    })?;
                let value =
                    body.token
                        .or(body.access_token)
                        .ok_or_else(|| UpstreamError::Invalid {
                            host: host.clone(),
                            reason: "token answer without a token".into(),
                        })?;
                // Tokens live 60 s unless told otherwise; renew a little early.
                let life = Duration::from_secs(body.expires_in.unwrap_or(60).max(10) - 5);
                self.tokens.lock().expect("tokens lock").insert(
                    (host.clone(), scope.to_string()),
                    Token {
                        value: value.clone(),
                        expires: Instant::now() + life,
                    },
                );
                Ok(bearer(&value))
            }
            _ => Ok(None),
        }
    }

    /// The realm an upstream named, if Trow may contact it: an http(s) URL whose host passes
    /// the SSRF guard as an upstream would (configured hosts, any port, are trusted; other IP
    /// literals that are loopback, link-local, metadata or unspecified are refused here, and
    /// names resolving only there are refused by the resolver when the request connects). The
    /// URL is parsed as reqwest will parse it, so `2130706433` or `[::ffff:127.0.0.1]` are
    /// checked as the addresses they are.
    fn check_realm(&self, host: &str, realm: &str) -> Result<reqwest::Url, UpstreamError> {
        let refused = |reason: String| UpstreamError::RealmRefused {
            host: host.to_string(),
            reason,
        };
        let url = reqwest::Url::parse(realm).map_err(|e| refused(format!("{realm:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(format!("{realm:?} is not an http(s) URL")));
        }
        let realm_host = url.host_str().unwrap_or("");
        ssrf::check_literal(realm_host, self.guard.allows(realm_host))
            .map_err(|e| refused(e.to_string()))?;
        Ok(url)
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn host_only(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

fn basic(t: &Target) -> Option<HeaderValue> {
    use base64::Engine;
    let r = t.registry.as_ref()?;
    let user = r.username.as_deref()?;
    let pass = r.password.as_ref().map(|p| p.expose()).unwrap_or("");
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut v = HeaderValue::from_str(&format!("Basic {enc}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

fn check_status(
    host: &str,
    resp: reqwest::Response,
    path: &str,
) -> Result<reqwest::Response, UpstreamError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let host = host.to_string();
    Err(match status {
        StatusCode::NOT_FOUND => UpstreamError::NotFound {
            host,
            what: path.to_string(),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => UpstreamError::Unauthorized {
            host,
            status: status.as_u16(),
        },
        StatusCode::TOO_MANY_REQUESTS => UpstreamError::TooManyRequests { host },
        s => UpstreamError::Status {
            host,
            status: s.as_u16(),
        },
    })
}

/// Reads a whole body of at most `limit` bytes (a manifest, a tag list page, a token answer):
/// refused as soon as its `Content-Length`, or the bytes so far, say it is larger, so an
/// upstream cannot make Trow hold more than `limit` for it.
pub async fn read_limited(
    host: &str,
    mut resp: reqwest::Response,
    limit: usize,
    what: &'static str,
) -> Result<Bytes, UpstreamError> {
    let too_large = || UpstreamError::TooLarge {
        host: host.to_string(),
        what,
        limit,
    };
    let declared = resp.content_length().unwrap_or(0);
    if declared > limit as u64 {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(declared as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| UpstreamError::from_reqwest(host, e))?
    {
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

/// The least a blob body must bring per `fetch_timeout`: about 2 KiB/s at the default 30 s.
pub const MIN_BLOB_PROGRESS: usize = 64 << 10;

/// A blob body that must keep moving: one that brings less than [`MIN_BLOB_PROGRESS`] bytes in
/// a `window` ends there (dropping the connection), as if the upstream had broken off. The
/// fill then stops moving, and storage's stall take-over (`--fill-timeout`) hands it, with the
/// bytes already stored, to the next reader's request. Without this, an upstream trickling a
/// byte a second would keep a fill, and its readers, forever: it never stalls.
pub fn min_rate<S>(
    body: S,
    host: String,
    window: Duration,
) -> impl Stream<Item = reqwest::Result<Bytes>>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    let start = (Box::pin(body), tokio::time::Instant::now() + window, 0usize);
    futures::stream::unfold(start, move |(mut body, mut end, mut got)| {
        let host = host.clone();
        async move {
            loop {
                let next = tokio::time::timeout_at(end, body.next()).await;
                let now = tokio::time::Instant::now();
                if next.is_err() || now >= end {
                    if got < MIN_BLOB_PROGRESS {
                        tracing::warn!(upstream = %host, bytes = got, ?window,
                            "upstream blob too slow: dropping the download");
                        return None;
                    }
                    (end, got) = (now + window, 0);
                }
                match next {
                    Ok(Some(Ok(b))) => {
                        got += b.len();
                        return Some((Ok(b), (body, end, got)));
                    }
                    Ok(Some(Err(e))) => return Some((Err(e), (body, end, got))),
                    Ok(None) => return None,
                    Err(_) => {}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/nginx:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
        assert_eq!(host_only("[::1]:5000"), "::1");
        assert_eq!(host_only("127.0.0.2:80"), "127.0.0.2");
    }

    #[test]
    fn realms_are_held_to_the_upstream_rule() {
        let cfg = ProxyConfig {
            registries: vec![crate::config::RegistryConfig {
                host: "127.0.0.9:5000".into(),
                ..Default::default()
            }],
            ..ProxyConfig::default()
        };
        let u = Upstreams::new(&cfg).unwrap();
        for ok in [
            "http://127.0.0.9:7000/token",
            "https://auth.docker.io/token",
            "http://10.0.0.1/token",
            "http://localhost:1/token", // a name: the resolver refuses it when connecting
        ] {
            assert!(u.check_realm("up", ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://127.0.0.1:8089/token",
            "http://[::ffff:127.0.0.1]:8089/token",
            "http://2130706433:8089/token",
            "http://0x7f.1/token",
            "http://0.0.0.0/token",
            "http://[::1]/token",
            "http://169.254.169.254/latest",
            "file:///etc/passwd",
            "not a url",
        ] {
            let e = u.check_realm("up", refused).unwrap_err().to_string();
            assert!(e.starts_with("up named a token realm"), "{refused}: {e}");
        }
    }

    #[tokio::test]
    async fn a_trickle_is_cut_and_a_steady_body_is_not() {
        // Each piece alone is more than a window's minimum: nothing is cut.
        let steady = futures::stream::iter(0..30).then(|_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, reqwest::Error>(Bytes::from(vec![0u8; 2 * MIN_BLOB_PROGRESS]))
        });
        let got: usize = min_rate(steady, "up".into(), Duration::from_secs(1))
            .map(|b| b.unwrap().len())
            .fold(0, |a, n| async move { a + n })
            .await;
        assert_eq!(got, 30 * 2 * MIN_BLOB_PROGRESS);
        // A byte every 10 ms would take 10 s; it ends with the first 200 ms window.
        let trickle = futures::stream::iter(0..1000).then(|_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, reqwest::Error>(Bytes::from_static(b"x"))
        });
        let got = min_rate(trickle, "up".into(), Duration::from_millis(200))
            .count()
            .await;
        assert!(got < 1000, "a trickle went through whole");
    }
}
