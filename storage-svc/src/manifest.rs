//! Reading a pushed manifest: which kind it is, what it references, what it is a referrer of.
//!
//! The storage service parses manifests itself (with `oci-spec`) because it is the component that
//! must refuse a manifest whose references are missing, keep the referrers index, and later
//! garbage-collect by following references.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use std::collections::HashMap;

use crate::digest::Digest;
use crate::error::StorageError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Manifest,
    Index,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// What must already be in the repository for a manifest to be accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Reference {
    Blob(Digest),
    Manifest(Digest),
}

/// A parsed manifest: everything the store needs to know about it.
#[derive(Debug)]
pub struct Parsed {
    pub media_type: String,
    pub references: Vec<Reference>,
    pub subject: Option<Digest>,
    /// The manifest's `artifactType`, else its config's media type (what the referrers API lists).
    pub artifact_type: Option<String>,
    pub annotations: HashMap<String, String>,
}

impl Parsed {
    /// The digests of everything referenced, blobs and child manifests alike, as strings.
    pub fn reference_digests(&self) -> Vec<String> {
        self.references
            .iter()
            .map(|(Reference::Blob(d) | Reference::Manifest(d))| d.to_string())
            .collect()
    }
}

fn digest_of(d: &Descriptor) -> Result<Digest, StorageError> {
    Digest::parse(d.digest().as_ref())
        .map_err(|e| StorageError::ManifestInvalid(format!("descriptor digest: {e}")))
}

/// Parses `content`. The media type is the JSON's `mediaType`, else the request's Content-Type
/// (podman pushes OCI manifests without `mediaType`), else guessed from the JSON's shape.
pub fn parse(content: &[u8], content_type: &str) -> Result<Parsed, StorageError> {
    let invalid = |m: String| StorageError::ManifestInvalid(m);
    let json: serde_json::Value =
        serde_json::from_slice(content).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let declared = json.get("mediaType").and_then(|v| v.as_str());
    let content_type = content_type.split(';').next().unwrap_or("").trim();

    let media_type = match declared {
        Some(d) => {
            if kind_of(content_type).is_some() && content_type != d {
                return Err(invalid(format!(
                    "mediaType {d} does not match Content-Type {content_type}"
                )));
            }
            d.to_string()
        }
        None if kind_of(content_type).is_some() => content_type.to_string(),
        None if json.get("manifests").is_some() => OCI_INDEX.to_string(),
        None if json.get("config").is_some() => OCI_MANIFEST.to_string(),
        None => return Err(invalid("unknown manifest type".into())),
    };
    if json.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(invalid("schemaVersion must be 2".into()));
    }
    let kind = kind_of(&media_type)
        .ok_or_else(|| invalid(format!("unsupported manifest media type {media_type}")))?;

    match kind {
        Kind::Manifest => {
            let m: ImageManifest = serde_json::from_value(json)
                .map_err(|e| invalid(format!("image manifest: {e}")))?;
            let mut references = vec![Reference::Blob(digest_of(m.config())?)];
            for layer in m.layers() {
                // Foreign layers live elsewhere (their `urls`); the registry need not hold them.
                if layer.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                    continue;
                }
                references.push(Reference::Blob(digest_of(layer)?));
            }
            let artifact_type = m
                .artifact_type()
                .as_ref()
                .map(|t| t.to_string())
                .or_else(|| Some(m.config().media_type().to_string()));
            Ok(Parsed {
                media_type,
                references,
                subject: m.subject().as_ref().map(digest_of).transpose()?,
                artifact_type,
                annotations: m.annotations().clone().unwrap_or_default(),
            })
        }
        Kind::Index => {
            let i: ImageIndex =
                serde_json::from_value(json).map_err(|e| invalid(format!("image index: {e}")))?;
            let references = i
                .manifests()
                .iter()
                .map(|d| digest_of(d).map(Reference::Manifest))
                .collect::<Result<_, _>>()?;
            Ok(Parsed {
                media_type,
                references,
                subject: i.subject().as_ref().map(digest_of).transpose()?,
                artifact_type: i.artifact_type().as_ref().map(|t| t.to_string()),
                annotations: i.annotations().clone().unwrap_or_default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn oci_manifest_without_media_type_uses_content_type() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3}}]}}"#,
            d('a'),
            d('b')
        );
        let p = parse(m.as_bytes(), OCI_MANIFEST).unwrap();
        assert_eq!(p.media_type, OCI_MANIFEST);
        assert_eq!(p.references.len(), 2);
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn index_with_subject() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","artifactType":"x/y","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":2}}],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3}}}}"#,
            d('a'),
            d('c')
        );
        let p = parse(m.as_bytes(), "").unwrap();
        assert_eq!(
            p.references,
            vec![Reference::Manifest(Digest::parse(&d('a')).unwrap())]
        );
        assert_eq!(p.subject, Some(Digest::parse(&d('c')).unwrap()));
        assert_eq!(p.artifact_type.as_deref(), Some("x/y"));
    }

    #[test]
    fn rejects_garbage_and_mismatch() {
        assert!(parse(b"{", OCI_MANIFEST).is_err());
        assert!(parse(b"{}", OCI_MANIFEST).is_err());
        let m = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse(m.as_bytes(), OCI_MANIFEST).is_err());
        assert!(parse(m.as_bytes(), OCI_INDEX).is_ok());
    }
}
