//! Validation of repository names and tags, by the OCI Distribution grammar (`trow_names::
//! grammar`, the one copy every service checks against), as storage's typed errors.
//!
//! Every name reaches the filesystem layout only through here, which is what keeps `..`, upper
//! case and stray slashes out of paths.

use trow_names::grammar::{MAX_REPOSITORY_LEN, valid_repository, valid_tag};

use crate::error::StorageError;

/// Checks `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most
/// 255 characters.
pub fn validate_repository(name: &str) -> Result<(), StorageError> {
    if name.len() <= MAX_REPOSITORY_LEN && valid_repository(name) {
        Ok(())
    } else {
        Err(StorageError::NameInvalid(name.to_string()))
    }
}

/// Checks `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), StorageError> {
    if valid_tag(tag) {
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
