//! Property tests of the `registry_proxies` section: whatever YAML an operator writes, reading
//! it never panics, an unknown key is refused naming it (a typo must not silently drop a
//! setting), what is accepted passes its own validation again unchanged, and sizes mean the
//! bytes they say.

use proptest::prelude::*;
use serde_yaml::{Mapping, Value};
use trow_upstreams::config::from_yaml_section;
use trow_upstreams::size;

const SECTION_KEYS: [&str; 6] = [
    "offline",
    "configured_only",
    "revalidate_timeout",
    "fetch_timeout",
    "max_blob_size",
    "registries",
];
/// The entry keys, less `password_file` and `ca_file`: a generated path must not read files.
const ENTRY_KEYS: [&str; 7] = [
    "host",
    "alias",
    "path_prefix",
    "username",
    "password",
    "insecure",
    "ignore_repos",
];

/// Scalars, lists and maps a few levels deep, the strings mostly ones the section means
/// something by.
fn yaml_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        prop_oneof![
            "[0-9.]{1,6} ?(|b|kb|MiB|GiB|TB|ms|s|m|h|unlimited|x)",
            "[A-Za-z0-9.:_/-]{1,16}",
            "(quay\\.io|docker\\.io|localhost:5000|\\[::1\\]:5000|mirror|a_b)",
            any::<String>(),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(&SECTION_KEYS[..]).prop_map(Value::from),
            prop::sample::select(&ENTRY_KEYS[..]).prop_map(Value::from),
            inner.clone(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Mapping(kv.into_iter().collect())),
        ]
    })
}

/// A section of the right shape, its values arbitrary.
fn section() -> impl Strategy<Value = Value> {
    let host = "(Quay\\.io|docker\\.io:443|localhost:5000|\\[::1\\]|mirror_5000|gcr\\.io)";
    let entry = (
        host,
        prop::collection::vec((prop::sample::select(&ENTRY_KEYS[1..]), yaml_value()), 0..3),
    )
        .prop_map(|(host, kv)| {
            let mut m: Mapping = kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect();
            m.insert("host".into(), host.into());
            Value::Mapping(m)
        });
    (
        prop::collection::vec(
            (prop::sample::select(&SECTION_KEYS[..5]), yaml_value()),
            0..4,
        ),
        prop::collection::vec(entry, 0..4),
    )
        .prop_map(|(kv, registries)| {
            let mut m: Mapping = kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect();
            m.insert("registries".into(), Value::Sequence(registries));
            Value::Mapping(m)
        })
}

fn unknown_key() -> impl Strategy<Value = String> {
    "[a-z_]{1,16}".prop_filter("a known key", |k| {
        !SECTION_KEYS.contains(&k.as_str())
            && !ENTRY_KEYS.contains(&k.as_str())
            && k != "password_file"
            && k != "ca_file"
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_value_is_answered(v in prop_oneof![yaml_value(), section()]) {
        if let Ok(cfg) = from_yaml_section(v) {
            // Accepted means valid: validation is idempotent on it.
            prop_assert_eq!(cfg.clone().validate().map_err(|e| e.to_string()), Ok(cfg));
        }
    }

    #[test]
    fn unknown_section_keys_are_named(key in unknown_key(), v in yaml_value()) {
        let mut m = Mapping::new();
        m.insert(key.as_str().into(), v);
        let e = from_yaml_section(Value::Mapping(m)).unwrap_err().to_string();
        prop_assert!(e.contains(&format!("unknown field `{key}`")), "{}", e);
    }

    #[test]
    fn unknown_entry_keys_are_named(key in unknown_key(), v in yaml_value()) {
        let mut entry = Mapping::new();
        entry.insert("host".into(), "quay.io".into());
        entry.insert(key.as_str().into(), v);
        let mut m = Mapping::new();
        m.insert("registries".into(), Value::Sequence(vec![Value::Mapping(entry)]));
        let e = from_yaml_section(Value::Mapping(m)).unwrap_err().to_string();
        prop_assert!(e.contains(&format!("unknown field `{key}`")), "{}", e);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn sizes_never_panic(s in prop_oneof![
        "[0-9.]{0,25} ?[a-zA-Z]{0,9}",
        any::<String>(),
    ], n: u64) {
        let _ = size::parse(&s);
        let _ = size::show(n);
    }

    #[test]
    fn sizes_mean_their_bytes(
        n in 0u64..1 << 20,
        (unit, scale) in prop::sample::select(vec![
            ("", 1u64), ("B", 1), ("kb", 1_000), ("MB", 1_000_000), ("gb", 1_000_000_000),
            ("TB", 1_000_000_000_000), ("KiB", 1 << 10), ("mib", 1 << 20), ("GiB", 1 << 30),
            ("TiB", 1 << 40),
        ]),
        space in "( ?)",
    ) {
        // Exact below 2^53, where an f64 holds every integer.
        prop_assert_eq!(size::parse(&format!("{n}{space}{unit}")), Ok(Some(n * scale)));
    }
}
