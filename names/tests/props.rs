//! Property tests of names: whatever a client, a pod or a config writes, parsing never panics,
//! and what is accepted is in the one canonical form (so a deny cannot be spelled around).
//! The grammar is checked against a regex oracle written from the OCI Distribution spec.

use proptest::prelude::*;
use regex::Regex;
use serde::Deserialize;
use std::sync::LazyLock;
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

/// Compiled once: a debug build spends longer compiling a regex than running a case.
static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| anchored(REPOSITORY_RE));
static TAG: LazyLock<Regex> = LazyLock::new(|| anchored(TAG_RE));

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
        prop_assert_eq!(valid_repository(&s), REPOSITORY.is_match(&s), "repository {:?}", s);
        prop_assert_eq!(valid_tag(&s), TAG.is_match(&s), "tag {:?}", s);
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

/// What Trow's cache fetches does not matter here: no image is under Trow's hostname.
struct NoCache;

impl trow_names::CacheOrigin for NoCache {
    fn origin(&self, path: &str) -> Result<(String, String), String> {
        Err(format!("{path} is not cached"))
    }
}

/// Registries of each kind: Docker Hub, dotted names, a one-label name with a port, IPs.
const REGISTRIES: [&str; 6] = [
    "docker.io",
    "quay.io",
    "localhost:5000",
    "myreg:443",
    "[::1]:5000",
    "127.0.0.1",
];

/// Another spelling of `registry` (`""` for Docker Hub written without one): the other Docker
/// Hub names, a default port written out, any case.
fn respell(registry: &str, variant: u8, mask: u64) -> String {
    let spelled = match (registry, variant % 5) {
        ("docker.io", 0) => String::new(),
        ("docker.io", 1) => "index.docker.io".into(),
        ("docker.io", 2) => "registry-1.docker.io:443".into(),
        ("docker.io", 3) => "docker.io:80".into(),
        ("quay.io" | "127.0.0.1", 1) => format!("{registry}:443"),
        ("quay.io" | "127.0.0.1", 2) => format!("{registry}:80"),
        _ => registry.into(),
    };
    recase(&spelled, mask)
}

/// `registry/repository` as written; Docker Hub's `library/` may be left out.
fn written(registry: &str, repository: &str, short: bool) -> String {
    match registry {
        "" if short && repository.starts_with("library/") => repository["library/".len()..].into(),
        "" => repository.into(),
        r => format!("{r}/{repository}"),
    }
}

fn image_parts() -> impl Strategy<Value = (&'static str, String, String)> {
    (
        prop::sample::select(&REGISTRIES[..]),
        prop_oneof!["library/[ab]{1,2}", "[ab]{1,2}(/[ab]{1,2})?"],
        prop_oneof![Just(String::new()), ":[12]", "@sha256:[0a]{64}"],
    )
}

fn prefix() -> impl Strategy<Value = String> {
    (image_parts(), 0u8..5, any::<u64>(), 0u8..3).prop_map(|((reg, repo, rf), v, mask, cut)| {
        let reg = respell(reg, v, mask);
        match cut {
            0 if !reg.is_empty() => format!("{reg}/"),
            1 => written(&reg, &repo, true),
            _ => written(&reg, &repo, true) + &rf,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The policy's promise: no spelling of an image gets another verdict, so a deny cannot be
    /// written around. Requests by tag are judged as the image with that tag.
    #[test]
    fn every_spelling_gets_one_verdict(
        allow in prop::collection::vec(prefix(), 0..4),
        deny in prop::collection::vec(prefix(), 0..4),
        default_allow: bool,
        (registry, repository, reference) in image_parts(),
        spellings in prop::collection::vec((0u8..5, any::<u64>(), any::<bool>()), 1..4),
    ) {
        use trow_names::policy::{check, check_request};
        use trow_names::Decision;
        let default = if default_allow { Decision::Allow } else { Decision::Deny };
        let Ok(cfg) = ValidationConfig::new(default, allow, deny).validate() else {
            return Ok(()); // e.g. a bare registry: refused as ambiguous
        };
        let canonical = format!("{}{reference}", written(registry, &repository, false));
        let verdict = check(&cfg, &canonical, None, &NoCache);
        prop_assert!(!matches!(verdict.reason, trow_names::policy::Reason::Invalid(_)), "{:?}", verdict);
        for (variant, mask, short) in spellings {
            let image = format!("{}{reference}", written(&respell(registry, variant, mask), &repository, short));
            prop_assert_eq!(&check(&cfg, &image, None, &NoCache), &verdict, "{} vs {}", image, canonical);
        }
        if let Some(tag) = reference.strip_prefix(':') {
            let r = ImageRef::parse(&canonical).unwrap();
            let request = ImageRef::of_request(r.registry(), r.repository(), Some(tag)).unwrap();
            prop_assert_eq!(check_request(&cfg, &request, None, &NoCache), verdict);
        }
    }

    #[test]
    fn prefixes_are_normalized_whatever_the_spelling(
        (registry, repository, reference) in image_parts(),
        variant in 0u8..5,
        mask: u64,
        short: bool,
    ) {
        let canonical = format!("{}{reference}", written(registry, &repository, false));
        let respelled = format!("{}{reference}", written(&respell(registry, variant, mask), &repository, short));
        // `redis:7` without a `/` could be the registry `redis:7`: refused as ambiguous
        // (documented), like `host:5000`. Every other spelling means the one image.
        let ambiguous = !respelled.contains('/') && names_registry(&respelled);
        if !ambiguous {
            prop_assert_eq!(normalize_prefix(&respelled), normalize_prefix(&canonical));
        }
        // As a directory, `bitnami/` is Docker Hub's namespace `bitnami`: `library/` stays.
        let dir = |s: &str| s.to_string() + "/";
        prop_assert_eq!(
            normalize_prefix(&dir(&written(&respell(registry, variant, mask), &repository, false))),
            normalize_prefix(&dir(&written(registry, &repository, false)))
        );
    }
}
