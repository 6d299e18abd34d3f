//! Pushed manifests and indexes (`storage-svc/src/manifest.rs`): any bytes under any of the
//! Content-Types clients send. Beyond "never panics": what is accepted is schemaVersion 2 of one
//! of the four manifest media types (the JSON's own `mediaType` when it has one), and the
//! references the store will require are exactly the config and the non-foreign layers, or the
//! index's children in order, each with the digest the JSON holds, plus the subject.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trow_storage::digest::Digest;
use trow_storage::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Reference, parse,
};

/// The Content-Types a push may carry; the first byte of the input picks one.
const CONTENT_TYPES: [&str; 8] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    "",
    "application/json",
    "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The digest a descriptor in the JSON holds.
fn digest_at(descriptor: &Value) -> Digest {
    let d = descriptor["digest"]
        .as_str()
        .expect("an accepted descriptor has a digest");
    Digest::parse(d).expect("an accepted descriptor's digest is valid")
}

fn is_foreign(layer: &Value) -> bool {
    layer["urls"].as_array().is_some_and(|u| !u.is_empty())
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, content)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    let Ok(p) = parse(content, content_type) else {
        return;
    };
    let json: Value = serde_json::from_slice(content).expect("accepted, so JSON");
    assert_eq!(json["schemaVersion"].as_u64(), Some(2));
    assert!(
        [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&p.media_type.as_str()),
        "{}",
        p.media_type
    );
    if let Some(declared) = json["mediaType"].as_str() {
        assert_eq!(p.media_type, declared);
    }
    let expected: Vec<Reference> =
        if [OCI_MANIFEST, DOCKER_MANIFEST].contains(&p.media_type.as_str()) {
            let layers = json["layers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            std::iter::once(&json["config"])
                .chain(layers.iter().filter(|l| !is_foreign(l)))
                .map(|d| Reference::Blob(digest_at(d)))
                .collect()
        } else {
            json["manifests"]
                .as_array()
                .expect("an accepted index lists manifests")
                .iter()
                .map(|d| Reference::Manifest(digest_at(d)))
                .collect()
        };
    assert_eq!(p.references, expected);
    let subject = json.get("subject").filter(|s| !s.is_null()).map(digest_at);
    assert_eq!(p.subject, subject);
    // The same bytes get the same answer.
    let again = parse(content, content_type).expect("accepted once, accepted again");
    assert_eq!(again.references, p.references);
    assert_eq!(again.media_type, p.media_type);
});
