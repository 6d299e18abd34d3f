//! Digests (`storage-svc/src/digest.rs`), as clients write them in URLs, headers and
//! descriptors. Accepted exactly when the text is `sha256:` or `sha512:` with 64 or 128 lowercase
//! hex digits; an accepted digest prints back byte for byte (it names a file); the names crate's
//! own digest check in image references agrees.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trow_names::ImageRef;
use trow_storage::digest::{Algorithm, Digest};

/// The oracle: the two registered algorithms, written out by hand.
fn well_formed(s: &str) -> bool {
    let hex = |h: &str, n: usize| {
        h.len() == n && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    match s.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha512", h)) => hex(h, 128),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Digest::parse(s);
    assert_eq!(parsed.is_ok(), well_formed(s), "{s:?}: {parsed:?}");
    if let Ok(d) = &parsed {
        assert_eq!(d.to_string(), s);
        assert_eq!(Algorithm::parse(d.algorithm.name()).ok(), Some(d.algorithm));
        assert_eq!(Digest::parse(&d.to_string()).ok().as_ref(), Some(d));
    }
    // `name@digest` is accepted by the names crate exactly when storage accepts the digest.
    assert_eq!(
        ImageRef::parse(&format!("x@{s}")).is_ok(),
        parsed.is_ok(),
        "{s:?}"
    );
});
