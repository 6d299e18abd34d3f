//! The repository namespace the pull-through cache owns, shared by every service: the gateway
//! sends reads under it to the proxy and refuses writes, storage lets only the proxy write there
//! (cached manifests may lack their blobs until a client asks), fsck checks it accordingly.

/// Cached repositories are named `f/<registry>/<repository>`, as clients address them.
pub const NAMESPACE: &str = "f";

/// Whether `repository` is a cached copy of another registry's repository.
pub fn is_cached(repository: &str) -> bool {
    repository
        .strip_prefix(NAMESPACE)
        .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_f_namespace_is_cached() {
        assert!(super::is_cached("f/docker.io/library/nginx"));
        assert!(!super::is_cached("f"));
        assert!(!super::is_cached("fa/b"));
        assert!(!super::is_cached("team/f/b"));
    }
}
