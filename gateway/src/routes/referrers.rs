//! `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose `subject` is
//! the digest, optionally filtered by `artifactType`.

use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use trow_proto::storage::ListReferrersRequest;

use super::{OCI_FILTERS_APPLIED, Req};
use crate::error::Result;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub async fn list(r: Req, digest: String) -> Result<Response> {
    let filter = r.param("artifactType").unwrap_or("").to_string();
    let found = r
        .state
        .storage
        .clone()
        .list_referrers(ListReferrersRequest {
            repository: r.repo,
            digest,
            artifact_type: filter.clone(),
        })
        .await?
        .into_inner();
    let manifests: Vec<Value> = found
        .manifests
        .into_iter()
        .map(|d| {
            let mut m = Map::new();
            m.insert("mediaType".into(), d.media_type.into());
            m.insert("digest".into(), d.digest.into());
            m.insert("size".into(), d.size.into());
            if !d.artifact_type.is_empty() {
                m.insert("artifactType".into(), d.artifact_type.into());
            }
            if !d.annotations.is_empty() {
                m.insert("annotations".into(), json!(d.annotations));
            }
            Value::Object(m)
        })
        .collect();
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX);
    if !filter.is_empty() {
        resp = resp.header(OCI_FILTERS_APPLIED, "artifactType");
    }
    Ok(resp
        .body(serde_json::to_vec(&index).expect("serialize index").into())
        .expect("valid response"))
}
