//! Property tests of what storage accepts from a client before anything becomes a path or a
//! record: digests, repository names and tags, and pushed manifests. Whatever arrives, parsing
//! never panics; what is accepted is exactly what the grammar allows, and a manifest is
//! accepted with the references it really has (they decide what must be in the repository).

use proptest::prelude::*;
use serde_json::{Value, json};
use trow_names::grammar::{MAX_REPOSITORY_LEN, valid_repository, valid_tag};
use trow_storage::digest::{Algorithm, Digest};
use trow_storage::manifest::{
    self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Reference,
};
use trow_storage::names::{validate_repository, validate_tag};

/// Digests Trow accepts, and near misses: wrong length, upper case, other algorithms.
fn digest_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "sha256:[0-9a-f]{64}",
        2 => "sha512:[0-9a-f]{128}",
        1 => "sha256:[0-9a-fA-F]{63,65}",
        1 => "sha384:[0-9a-f]{96}",
        1 => "(sha256|sha512|md5|)[:@]?[0-9a-f]{0,8}",
        1 => any::<String>(),
    ]
}

fn valid(d: &str) -> bool {
    Digest::parse(d).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn digests_are_exactly_the_lowercase_hex_ones(s in digest_like()) {
        let hex_ok = |h: &str, n: usize| {
            h.len() == n && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let expected = match s.split_once(':') {
            Some(("sha256", h)) => hex_ok(h, 64),
            Some(("sha512", h)) => hex_ok(h, 128),
            _ => false,
        };
        match Digest::parse(&s) {
            Ok(d) => {
                prop_assert!(expected, "{:?}", s);
                // Its text is the file name: the same bytes back.
                prop_assert_eq!(d.to_string(), s);
            }
            Err(_) => prop_assert!(!expected, "{:?}", s),
        }
    }

    #[test]
    fn algorithms_are_two(s in "(sha256|sha512|SHA256|sha384|)[a-z0-9]{0,2}") {
        let expected = match s.as_str() {
            "" | "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        };
        prop_assert_eq!(Algorithm::parse(&s).ok(), expected);
    }

    #[test]
    fn names_and_tags_follow_the_grammar(
        s in prop_oneof![
            "[a-z0-9._/-]{0,24}",
            "[a-z0-9]{1,100}(/[a-z0-9]{1,100}){0,3}",
            "[a-zA-Z0-9_][a-zA-Z0-9._-]{120,135}",
            "(\\.\\.|\\.|/|[a-z]{1,3})(/(\\.\\.|\\.|[a-z]{1,3})){0,3}",
            any::<String>(),
        ]
    ) {
        let repo_ok = s.len() <= MAX_REPOSITORY_LEN && valid_repository(&s);
        prop_assert_eq!(validate_repository(&s).is_ok(), repo_ok, "{:?}", s);
        if repo_ok {
            // Nothing accepted can leave its directory.
            prop_assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
        }
        prop_assert_eq!(validate_tag(&s).is_ok(), valid_tag(&s), "{:?}", s);
    }

    #[test]
    fn manifest_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        content_type in content_type(),
    ) {
        let _ = manifest::parse(&bytes, &content_type);
    }

    #[test]
    fn manifest_json_never_panics(v in json_value(), content_type in content_type()) {
        let _ = manifest::parse(&serde_json::to_vec(&v).unwrap(), &content_type);
    }
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(OCI_MANIFEST.to_string()),
        Just(OCI_INDEX.to_string()),
        Just(DOCKER_MANIFEST.to_string()),
        Just(format!("{DOCKER_LIST}; charset=utf-8")),
        "[ -~]{0,40}",
    ]
}

/// JSON of any shape, its keys mostly the ones manifests use.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!(2)),
        digest_like().prop_map(Value::String),
        prop_oneof![
            Just(OCI_MANIFEST),
            Just(OCI_INDEX),
            Just(DOCKER_MANIFEST),
            Just(DOCKER_LIST)
        ]
        .prop_map(Value::from),
    ];
    let key = prop_oneof![
        "(mediaType|schemaVersion|config|layers|manifests|subject|digest|size|urls|annotations|artifactType)",
        "[a-z]{0,6}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..7)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn descriptor(digest: &str, foreign: bool) -> Value {
    let mut d = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": digest,
        "size": 1,
    });
    if foreign {
        d["urls"] = json!(["https://example.com/layer"]);
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// An image manifest is accepted iff its digests are valid, and then it claims as blobs
    /// exactly its config and its non-foreign layers.
    #[test]
    fn manifests_claim_their_references(
        config in digest_like(),
        layers in prop::collection::vec((digest_like(), prop::bool::weighted(0.2)), 0..5),
        subject in prop::option::of(digest_like()),
        declared in any::<bool>(),
        docker in any::<bool>(),
    ) {
        let media_type = if docker { DOCKER_MANIFEST } else { OCI_MANIFEST };
        let mut m = json!({
            "schemaVersion": 2,
            "config": descriptor(&config, false),
            "layers": layers.iter().map(|(d, f)| descriptor(d, *f)).collect::<Vec<_>>(),
        });
        if let Some(s) = &subject {
            m["subject"] = descriptor(s, false);
        }
        let content_type = if declared {
            m["mediaType"] = json!(media_type);
            ""
        } else {
            media_type
        };
        let checked = std::iter::once(&config)
            .chain(layers.iter().filter(|(_, f)| !f).map(|(d, _)| d))
            .chain(subject.iter());
        let all_valid = checked.clone().all(|d| valid(d));
        let every_digest_valid = all_valid && layers.iter().all(|(d, _)| valid(d));
        match manifest::parse(&serde_json::to_vec(&m).unwrap(), content_type) {
            Ok(p) => {
                prop_assert!(all_valid);
                prop_assert_eq!(p.media_type, media_type);
                let expected: Vec<Reference> = std::iter::once(&config)
                    .chain(layers.iter().filter(|(_, f)| !f).map(|(d, _)| d))
                    .map(|d| Reference::Blob(Digest::parse(d).unwrap()))
                    .collect();
                prop_assert_eq!(p.references, expected);
                prop_assert_eq!(p.subject, subject.map(|s| Digest::parse(&s).unwrap()));
            }
            Err(e) => prop_assert!(!every_digest_valid, "refused: {}", e),
        }
    }

    /// An index is accepted iff its digests are valid, and then it claims exactly its
    /// children, in order, as manifests.
    #[test]
    fn indexes_claim_their_children(
        children in prop::collection::vec(digest_like(), 0..6),
        subject in prop::option::of(digest_like()),
        docker in any::<bool>(),
    ) {
        let media_type = if docker { DOCKER_LIST } else { OCI_INDEX };
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": children.iter().map(|d| descriptor(d, false)).collect::<Vec<_>>(),
        });
        if let Some(s) = &subject {
            m["subject"] = descriptor(s, false);
        }
        let all_valid = children.iter().chain(subject.iter()).all(|d| valid(d));
        match manifest::parse(&serde_json::to_vec(&m).unwrap(), media_type) {
            Ok(p) => {
                prop_assert!(all_valid);
                let expected: Vec<Reference> = children
                    .iter()
                    .map(|d| Reference::Manifest(Digest::parse(d).unwrap()))
                    .collect();
                prop_assert_eq!(p.references, expected);
                prop_assert_eq!(p.subject, subject.map(|s| Digest::parse(&s).unwrap()));
            }
            Err(e) => prop_assert!(!all_valid, "refused: {}", e),
        }
    }
}
