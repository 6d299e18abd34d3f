//! Image references, registry authorities, policy prefixes and the repository/tag grammar, as
//! pods, clients and configs write them (`trow-names`). Beyond "never panics": the grammar
//! agrees with a regex written from the OCI spec, storage's name check adds only the length
//! limit, and every accepted value is in its one canonical form (it parses back to itself).

#![no_main]

use libfuzzer_sys::fuzz_target;
use regex::Regex;
use std::sync::LazyLock;
use trow_names::authority::is_docker_hub;
use trow_names::grammar::{MAX_REPOSITORY_LEN, valid_repository, valid_tag};
use trow_names::image::{MAX_NAME_LEN, normalize_registry};
use trow_names::validation::normalize_prefix;
use trow_names::{Authority, ImageRef};
use trow_storage::digest::Digest;
use trow_storage::names::{validate_repository, validate_tag};

fn anchored(re: &str) -> Regex {
    Regex::new(&format!("^(?:{re})$")).unwrap()
}

/// The spec's `<name>` path component grammar and `<reference>` tag grammar.
static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    anchored(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
});
static TAG: LazyLock<Regex> = LazyLock::new(|| anchored(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"));

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    // The grammar, against the spec's regex; storage's checks are the same plus 255 bytes.
    let repository = valid_repository(s);
    assert_eq!(repository, REPOSITORY.is_match(s), "repository {s:?}");
    assert_eq!(valid_tag(s), TAG.is_match(s), "tag {s:?}");
    assert_eq!(
        validate_repository(s).is_ok(),
        repository && s.len() <= MAX_REPOSITORY_LEN
    );
    assert_eq!(validate_tag(s).is_ok(), valid_tag(s));
    if repository {
        // Nothing accepted can climb out of a directory or name an empty one.
        assert!(s.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
    }

    // Image references: the normalized form re-parses to itself and fits the grammar.
    if let Ok(r) = ImageRef::parse(s) {
        let shown = r.to_string();
        assert_eq!(
            ImageRef::parse(&shown).as_ref(),
            Ok(&r),
            "{s:?} shown as {shown:?}"
        );
        assert!(r.name().len() <= MAX_NAME_LEN);
        assert!(valid_repository(r.repository()));
        assert!(r.tag().is_none_or(valid_tag));
        assert!(
            r.tag().is_some() || r.digest().is_some(),
            "{s:?}: no default tag"
        );
        assert_eq!(
            normalize_registry(r.registry()).as_deref(),
            Ok(r.registry())
        );
        assert!(!is_docker_hub(r.registry()) || r.registry() == "docker.io");
        // The names crate and storage agree on what a digest is.
        if let Some(d) = r.digest() {
            assert_eq!(
                Digest::parse(d).ok().map(|d| d.to_string()).as_deref(),
                Some(d)
            );
        }
    }

    // Registry authorities: case-blind, shown in lowercase, shown form and cache name read back.
    if let Ok(a) = Authority::parse(s) {
        assert_eq!(Authority::parse(&s.to_ascii_uppercase()).as_ref(), Ok(&a));
        let shown = a.to_string();
        assert_eq!(shown, shown.to_ascii_lowercase());
        assert_eq!(
            Authority::parse(&shown).as_ref(),
            Ok(&a),
            "{s:?} shown as {shown:?}"
        );
        match Authority::from_cache_name(&a.cache_name()) {
            Some(b) => assert_eq!(b, a),
            None => assert_eq!(Authority::parse(&a.cache_name()), Ok(a)),
        }
    }

    // Policy prefixes: normalization is idempotent.
    if let Ok(n) = normalize_prefix(s) {
        assert_eq!(
            normalize_prefix(&n).as_ref(),
            Ok(&n),
            "{s:?} normalized to {n:?}"
        );
    }
});
