//! Property tests of names: whatever a client, a pod or a config writes, parsing never panics,
//! and what is accepted is in the one canonical form (so a deny cannot be spelled around).
//! The grammar is checked against a regex oracle written from the OCI Distribution spec.

use proptest::prelude::*;
use regex::Regex;
use serde::Deserialize;
use trow_names::authority::{DOCKER_HUB_UPSTREAM, is_docker_hub};
use trow_names::grammar::{valid_repository, valid_tag};
use trow_names::image::{MAX_NAME_LEN, names_registry, normalize_registry};
use trow_names::policy::prefix_matches;
use trow_names::validation::normalize_prefix;
use trow_names::{Authority, ImageRef, ValidationConfig};

/// The spec's `<name>` path component grammar, as a regex.
const REPOSITORY_RE: &str =
    r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*";
/// The spec's `<reference>` tag grammar.
const TAG_RE: &str = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}";

fn anchored(re: &str) -> Regex {
    Regex::new(&format!("^(?:{re})$")).unwrap()
}

/// Text near the grammar's edges: the characters names are made of, and a few that are not.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._:/@\\[\\]-]{0,40}",
        "[a-z0-9._/-]{0,24}",
        any::<String>(),
    ]
}

/// Authorities as users write them: names, IPs, brackets, ports, any case.
fn authority_like() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,8}){0,3}",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        "\\[[0-9a-fA-F:.]{2,24}\\]",
        "(docker\\.io|index\\.docker\\.io|registry-1\\.docker\\.io|localhost)",
    ];
    let port = prop_oneof!["", ":(443|80|5000|0|65535|65536|[0-9]{1,6})"];
    (host, port).prop_map(|(h, p)| h + &p)
}

/// `s` with the case of each ASCII letter flipped where `mask` says.
fn recase(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn authority_parse_is_canonical(s in prop_oneof![authority_like(), name_like()], mask: u64) {
        let parsed = Authority::parse(&s);
        // Case never matters.
        prop_assert_eq!(&parsed, &Authority::parse(&recase(&s, mask)));
        let Ok(a) = parsed else { return Ok(()) };
        let shown = a.to_string();
        prop_assert_eq!(Authority::parse(&shown), Ok(a.clone()), "{} shown as {}", s, shown);
        prop_assert_eq!(&shown, &shown.to_ascii_lowercase());
        // A default port is shown only where dropping it would make a Docker Hub namespace.
        if shown.ends_with(":443") || shown.ends_with(":80") {
            let host = shown.rsplit_once(':').unwrap().0;
            prop_assert!(!host.contains(['.', '[']) && host != "localhost", "{}", shown);
        }
        // The cache's spelling reads back as the same registry.
        match Authority::from_cache_name(&a.cache_name()) {
            Some(b) => prop_assert_eq!(b, a),
            None => prop_assert_eq!(Authority::parse(&a.cache_name()), Ok(a)),
        }
    }

    #[test]
    fn docker_hub_is_one_registry(
        name in "(docker\\.io|index\\.docker\\.io|registry-1\\.docker\\.io)",
        port in "(|:443|:80)",
        mask: u64,
    ) {
        let a = Authority::parse(&recase(&format!("{name}{port}"), mask)).unwrap();
        prop_assert!(a.is_docker_hub());
        prop_assert_eq!(a.upstream_host(), DOCKER_HUB_UPSTREAM);
        prop_assert_eq!(normalize_registry(&a.to_string()).unwrap(), "docker.io");
    }

    #[test]
    fn image_parse_is_idempotent(s in name_like()) {
        let Ok(r) = ImageRef::parse(&s) else { return Ok(()) };
        let shown = r.to_string();
        prop_assert_eq!(ImageRef::parse(&shown), Ok(r.clone()), "{} shown as {}", s, shown);
        prop_assert!(r.name().len() <= MAX_NAME_LEN);
        prop_assert!(valid_repository(r.repository()));
        prop_assert!(r.tag().is_none_or(valid_tag));
        let again = normalize_registry(r.registry());
        prop_assert_eq!(again.as_deref(), Ok(r.registry()));
        prop_assert!(!is_docker_hub(r.registry()) || r.registry() == "docker.io");
    }

    #[test]
    fn images_built_by_the_grammar_parse(
        registry in prop_oneof![Just(String::new()), authority_like().prop_map(|a| a + "/")],
        repository in REPOSITORY_RE,
        long in 0usize..4,
        tag in prop_oneof![Just(String::new()), ":[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"],
        digest in prop_oneof!["", "@sha256:[0-9a-f]{64}", "@sha512:[0-9a-f]{128}"],
    ) {
        // Now and then past the 255 limit.
        let repository = format!("{repository}{}", "/abcdefghij".repeat(long * 8));
        let s = format!("{registry}{repository}{tag}{digest}");
        // Without a registry, a first component like `a.b` is one (Docker's rule).
        let names_one = registry.is_empty()
            && repository.contains('/')
            && names_registry(repository.split('/').next().unwrap());
        match ImageRef::parse(&s) {
            Ok(r) => {
                prop_assert_eq!(ImageRef::parse(&r.to_string()), Ok(r.clone()));
                prop_assert!(r.name().len() <= MAX_NAME_LEN);
                prop_assert!(names_one || r.repository().ends_with(&repository));
                prop_assert_eq!(r.digest(), digest.strip_prefix('@'));
            }
            // Only the registry or the length may be refused.
            Err(e) => prop_assert!(
                !registry.is_empty() || names_one || repository.len() + 18 > MAX_NAME_LEN,
                "{}: {}", s, e
            ),
        }
    }

    #[test]
    fn grammar_agrees_with_the_spec(s in prop_oneof![name_like(), REPOSITORY_RE, TAG_RE, "[a-zA-Z0-9_][a-zA-Z0-9._-]{120,135}"]) {
        let repo = anchored(REPOSITORY_RE);
        let tag = anchored(TAG_RE);
        prop_assert_eq!(valid_repository(&s), repo.is_match(&s), "repository {:?}", s);
        prop_assert_eq!(valid_tag(&s), tag.is_match(&s), "tag {:?}", s);
    }

    #[test]
    fn prefixes_end_only_at_a_boundary(
        p in "[a-z0-9./:@-]{0,12}",
        next in "[a-z0-9._-]",
        sep in "[/:@]",
        rest in "[a-z0-9./:@-]{0,8}",
    ) {
        prop_assert!(prefix_matches(&p, &p));
        if !p.ends_with('/') {
            // `nginx` never covers `nginx-evil`.
            let longer = format!("{p}{next}{rest}");
            prop_assert!(!prefix_matches(&p, &longer));
        }
        let below = format!("{p}{sep}{rest}");
        prop_assert!(prefix_matches(&p, &below));
        if prefix_matches(&p, &rest) {
            prop_assert!(rest.starts_with(&p));
        }
    }

    #[test]
    fn prefix_normalization_is_idempotent(p in name_like()) {
        if let Ok(n) = normalize_prefix(&p) {
            prop_assert_eq!(normalize_prefix(&n), Ok(n.clone()), "{} normalized to {}", p, n);
        }
    }
}

/// YAML values of any shape, a few levels deep.
fn yaml_value() -> impl Strategy<Value = serde_yaml::Value> {
    use serde_yaml::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        prop_oneof![
            "(Allow|Deny|allow|default|deny|enforce_in_proxy)",
            any::<String>(),
            "[a-z.:/]{0,12}"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Sequence),
            prop::collection::vec((inner.clone(), inner), 0..6)
                .prop_map(|kv| Value::Mapping(kv.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read only through Debug
struct File {
    image_validation: Option<ValidationConfig>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn validation_config_never_panics(v in yaml_value()) {
        let _ = serde_yaml::from_value::<ValidationConfig>(v);
    }

    #[test]
    fn unknown_validation_keys_are_named(key in "[a-z_]{1,16}", v in yaml_value()) {
        prop_assume!(!["default", "allow", "deny", "enforce_in_proxy"].contains(&key.as_str()));
        let mut m = serde_yaml::Mapping::new();
        m.insert("default".into(), "Allow".into());
        m.insert(key.as_str().into(), v);
        let e = serde_yaml::from_value::<ValidationConfig>(m.into()).unwrap_err().to_string();
        prop_assert!(e.contains(&format!("unknown field `{key}`")), "{}", e);
    }
}
