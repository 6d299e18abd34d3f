//! `WWW-Authenticate` challenges from upstream registries (`proxy-svc/src/challenge.rs`): a
//! remote server chose these bytes. Beyond "never panics": scheme and keys come back in lower
//! case, and whatever parameters were read, written out again as RFC 9110 quoted-strings
//! (`\"` and `\\` escaped) they read back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trow_proxy::challenge::parse_challenge;

/// An RFC 9110 token: what a scheme or a parameter name may be.
fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn quoted(v: &str) -> String {
    let mut q = String::from('"');
    for c in v.chars() {
        if matches!(c, '"' | '\\') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (scheme, params) = parse_challenge(s);
    assert_eq!(scheme, scheme.to_ascii_lowercase());
    assert!(params.keys().all(|k| *k == k.to_ascii_lowercase()));
    if token(&scheme) && params.keys().all(|k| token(k)) {
        let mut keys: Vec<&String> = params.keys().collect();
        keys.sort();
        let written: Vec<String> = keys
            .iter()
            .map(|k| format!("{k}={}", quoted(&params[*k])))
            .collect();
        let again = format!("{scheme} {}", written.join(", "));
        assert_eq!(
            parse_challenge(&again),
            (scheme, params),
            "{s:?} written as {again:?}"
        );
    }
});
