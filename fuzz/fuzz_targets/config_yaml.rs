//! The `--config-file` YAML (`trow/src/config.rs`, handing `registry_proxies` to
//! `trow-upstreams` and the admission sections to `trow-admission`): an operator's typo must
//! stop the start-up with a message, never a panic. Beyond that: an accepted `registry_proxies`
//! passes its own validation again unchanged, and an accepted file's proxy policy and webhooks
//! build without panicking.
//!
//! (Not compared with `trow_upstreams::config::from_yaml_section`, which only tests use: it
//! reads through `serde_yaml::Value`, which types a scalar before the struct sees it, so it
//! refuses `path_prefix: false` or `password: 0123` that the real loader reads as written.)
//!
//! `password_file` and `ca_file` make the parser read files: inputs that could name one
//! (any key ending in `_file` once YAML's escapes are undone) are skipped, so a generated path
//! such as `/dev/stdin` cannot block the run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_yaml::Value;
use trow::config::FileConfig;

/// Whether any mapping key in `v`, at any depth, ends in `_file`.
fn names_a_file(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m.iter().any(|(k, v)| {
            k.as_str().is_some_and(|k| k.ends_with("_file")) || names_a_file(k) || names_a_file(v)
        }),
        Value::Sequence(s) => s.iter().any(names_a_file),
        Value::Tagged(t) => names_a_file(&t.value),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let value = serde_yaml::from_str::<Value>(text);
    // Without a backslash no escape can spell `_file`; with one, judge the parsed keys.
    let safe = match &value {
        _ if !text.contains("_file") && !text.contains('\\') => true,
        Ok(v) => !names_a_file(v),
        Err(_) => false,
    };
    if !safe {
        return;
    }
    let Ok(config) = FileConfig::parse(text) else {
        return;
    };
    let proxy = config.proxy();
    assert_eq!(proxy.clone().validate().ok().as_ref(), Some(&proxy));
    let _ = config.proxy_policy(Some("trow.example.com"));
    let _ = config.webhooks(Some("trow.example.com".to_string()));
});
