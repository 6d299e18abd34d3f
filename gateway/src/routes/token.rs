//! `GET /v2/token`: the token endpoint the gateway's challenges name as their realm (see
//! [`crate::auth`]). Without authentication configured there is no such endpoint.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{Error, OciCode, Result};

pub async fn issue(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let Some(auth) = &state.auth else {
        return Err(Error::new(OciCode::NameUnknown, "no such endpoint"));
    };
    let answer = auth.token(&headers, query.as_deref().unwrap_or("")).await?;
    Ok(Json(answer).into_response())
}
