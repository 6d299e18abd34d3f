//! `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose `subject` is
//! the digest, optionally filtered by `artifactType`.

use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use trow_proto::storage::{Descriptor, ListReferrersRequest, ReferrerList};

use super::listing::streamed_json;
use super::{OCI_FILTERS_APPLIED, Req};
use crate::error::Result;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub async fn list(r: Req, digest: String) -> Result<Response> {
    let filter = r.param("artifactType").unwrap_or("").to_string();
    let pages = r
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
    let prefix = format!("{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[");
    let mut resp = streamed_json(
        prefix,
        pages,
        |page: ReferrerList| page.manifests.into_iter().map(descriptor_json),
        "]}",
    );
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if !filter.is_empty() {
        resp.headers_mut().insert(
            OCI_FILTERS_APPLIED,
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}

/// A referrer as the OCI descriptor JSON the index lists.
fn descriptor_json(d: Descriptor) -> String {
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
    Value::Object(m).to_string()
}
