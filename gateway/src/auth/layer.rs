//! The middleware in front of every `/v2/` route (not the token endpoint, not the webhooks):
//! works out what the request needs ([`super::scope::needed`]), checks its credentials
//! ([`Auth::check`]), hands the request on with the caller's [`super::Identity`], or answers a
//! refusal with `401 UNAUTHORIZED` and the challenge that tells the client where to get a token.
//!
//! A tower service rather than `axum::middleware::from_fn`: a request whose check needs no
//! waiting (a token, or none, judged by the rules: nearly every request) is handed to the route
//! at once, where `from_fn` clones the route (the handler and all its state) for each request
//! and awaits the check in a future of its own; those cost more than the check itself.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

use super::scope::Need;
use super::{Auth, AuthError, Identity, Refusal};
use crate::error::Error;

/// Puts [`Guard`] in front of a route.
#[derive(Clone)]
pub struct GuardLayer(pub Arc<Auth>);

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            auth: self.0.clone(),
            inner,
        }
    }
}

/// The route `inner`, behind authentication.
#[derive(Clone)]
pub struct Guard<S> {
    auth: Arc<Auth>,
    inner: S,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let need = need(&self.auth, &req);
        match self.auth.check_now(req.headers(), &need) {
            Some(Ok(identity)) => {
                req.extensions_mut().insert(identity.clone());
                let answer = self.inner.call(req);
                Box::pin(async move { Ok(with_identity(answer.await?, identity)) })
            }
            Some(Err(error)) => {
                let refused = refusal(&self.auth, &req, &need, error);
                Box::pin(std::future::ready(Ok(refused)))
            }
            None => {
                // The check waits (a password's bcrypt, the cluster): the route, ready, goes
                // into the future, and a clone stays for the next request (tower's way).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let auth = self.auth.clone();
                Box::pin(async move {
                    match auth.check(req.headers(), &need).await {
                        Ok(identity) => {
                            req.extensions_mut().insert(identity.clone());
                            Ok(with_identity(inner.call(req).await?, identity))
                        }
                        Err(error) => Ok(refusal(&auth, &req, &need, error)),
                    }
                })
            }
        }
    }
}

/// What `req` needs.
fn need(auth: &Auth, req: &Request) -> Need {
    let path = req.uri().path();
    // The repository exactly as the handlers will read it: what is checked is what is served.
    let repository =
        crate::routes::parse_request_path(crate::routes::after_v2(path)).map(|(name, _)| name);
    let mut need = super::scope::needed(req.method(), path, repository.as_deref());
    // `ns` exactly as the handlers read it: the guard must judge the repository served.
    let ns = ns_of(req.uri());
    need.target = repository.and_then(|r| cache_name(&r, ns.as_deref(), auth.hostname()));
    need
}

/// `resp` with the caller's identity, for the audit log's middleware, which wraps this one.
fn with_identity(mut resp: Response, identity: Identity) -> Response {
    resp.extensions_mut().insert(identity);
    resp
}

/// The answer to `req`, refused for `error`.
fn refusal(auth: &Auth, req: &Request, need: &Need, error: AuthError) -> Response {
    let header = |name| req.headers().get(name).and_then(|h| h.to_str().ok());
    // Behind an ingress that ends TLS, the client reached `https://<its host>`: the realm must
    // say so, or the client would send its password to a URL it never meant to use. A client
    // can only point its own challenge elsewhere with these, so they need no trust.
    let host = header("x-forwarded-host")
        .and_then(|h| h.split(',').next())
        .map(str::trim)
        .or_else(|| header(header::HOST.as_str()))
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let https = header("x-forwarded-proto")
        .and_then(|p| p.split(',').next())
        .map(|p| p.trim().eq_ignore_ascii_case("https"));
    let challenge = auth.challenge(host, https, need, &error);
    tracing::debug!(method = %req.method(), path = req.uri().path(), %error, "request refused");
    // A user the rules refused is on record under the name it proved, not the one it claimed.
    let refused = match &error {
        AuthError::Denied { user, .. } => Some(Identity {
            user: Some(user.clone()),
            ..Default::default()
        }),
        _ => None,
    };
    let mut resp = Error::from(Refusal { error, challenge }).into_response();
    if let Some(identity) = refused {
        resp.extensions_mut().insert(identity);
    }
    if req.method() == Method::HEAD {
        *resp.body_mut() = Body::empty();
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    resp
}

/// The `ns` parameter of `uri` exactly as the handlers read it (the same extractor: the last
/// value wins, keys are decoded).
pub(crate) fn ns_of(uri: &axum::http::Uri) -> Option<String> {
    axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.get("ns").cloned())
}

/// The cache's name for what a request under `repository` reads, when it reads another
/// registry: `f/<registry in its cache spelling>/<repository>` for `f/...` (any spelling of
/// the registry) and for `?ns=<registry>`, so the rules judge one name however it is written.
pub(crate) fn cache_name(
    repository: &str,
    ns: Option<&str>,
    hostname: Option<&str>,
) -> Option<String> {
    let up = crate::routes::proxied::Upstream::of(repository, ns, hostname)?;
    let authority = match up.ns {
        true => trow_names::Authority::parse(&up.registry).ok(),
        false => trow_names::Authority::from_cache_name(&up.registry)
            .or_else(|| trow_names::Authority::parse(&up.registry).ok()),
    };
    let registry = authority.map(|a| a.cache_name()).unwrap_or(up.registry);
    Some(format!(
        "{}/{registry}/{}",
        trow_proto::cache::NAMESPACE,
        up.repository
    ))
}

#[cfg(test)]
mod tests {
    use super::cache_name;

    #[test]
    fn cache_reads_are_judged_by_their_cache_name() {
        assert_eq!(cache_name("team/app", None, None), None);
        assert_eq!(
            cache_name("library/nginx", Some("docker.io"), None).as_deref(),
            Some("f/docker.io/library/nginx")
        );
        assert_eq!(
            cache_name("library/nginx", Some("Quay.IO:443"), None).as_deref(),
            Some("f/quay.io/library/nginx")
        );
        assert_eq!(
            cache_name("f/QUAY.io:443/a/b", None, None).as_deref(),
            Some("f/quay.io/a/b")
        );
        assert_eq!(
            cache_name("f/reg.example_5000/a", None, None).as_deref(),
            Some("f/reg.example_5000/a")
        );
        assert_eq!(
            cache_name("team/app", Some("trow.local"), Some("trow.local")),
            None,
            "?ns= of this registry is a local read"
        );
        assert_eq!(cache_name("team/app", Some(""), None), None);
    }
}
