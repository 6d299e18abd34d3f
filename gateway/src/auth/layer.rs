//! The middleware in front of every `/v2/` route (not the token endpoint, not the webhooks):
//! works out what the request needs ([`super::scope::needed`]), checks its credentials
//! ([`Auth::check`]), hands the request on with the caller's [`super::Identity`], or answers a refusal with `401 UNAUTHORIZED` and the challenge that
//! tells the client where to get a token.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::{Auth, Refusal};
use crate::error::Error;

pub async fn guard(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // The repository exactly as the handlers will read it: what is checked is what is served.
    let repository =
        crate::routes::parse_request_path(crate::routes::after_v2(path)).map(|(name, _)| name);
    let need = super::scope::needed(req.method(), path, repository.as_deref());
    let error = match auth.check(req.headers(), &need).await {
        Ok(identity) => {
            req.extensions_mut().insert(identity.clone());
            let mut resp = next.run(req).await;
            // For the audit log's middleware, which wraps this one.
            resp.extensions_mut().insert(identity);
            return resp;
        }
        Err(error) => error,
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let challenge = auth.challenge(host, &need, &error);
    tracing::debug!(method = %req.method(), path, %error, "request refused");
    let mut resp = Error::from(Refusal { error, challenge }).into_response();
    if req.method() == Method::HEAD {
        *resp.body_mut() = Body::empty();
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    resp
}
