//! Validation of repository names and tags, by the OCI Distribution grammar.
//!
//! Every name reaches the filesystem layout only through here, which is what keeps `..`, upper
//! case and stray slashes out of paths.

use crate::error::StorageError;

/// Longest repository name accepted, as distribution does.
pub const MAX_NAME_LEN: usize = 255;

/// Checks `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn validate_repository(name: &str) -> Result<(), StorageError> {
    let invalid = || StorageError::NameInvalid(name.to_string());
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid());
    }
    if name.split('/').all(valid_component) {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or any number of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__`, or `-+`.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Checks `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), StorageError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::TagInvalid(tag.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in [
            "a",
            "library/alpine",
            "a.b/c_d/e__f/g---h",
            "x1/y2",
            "f/docker.io/lib",
        ] {
            assert!(validate_repository(ok).is_ok(), "{ok} rejected");
        }
        let long = "a".repeat(256);
        for bad in [
            "", "A", "a..b", "a/../b", "..", "a/", "/a", "a//b", "a-", "_a", "a___b", "a.-b", &long,
        ] {
            assert!(validate_repository(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0", "_x", "A-b_c.d"] {
            assert!(validate_tag(ok).is_ok());
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad} accepted");
        }
    }
}
