//! Image references as pods write them, in one normalized form.
//!
//! A pod may name one image many ways (`nginx`, `docker.io/nginx`, `index.docker.io/library/
//! nginx:latest`), and the container runtime pulls the same thing for all of them. A policy
//! written against one spelling must catch every other, or it could be bypassed by rewording
//! the image, so every decision here is taken on the normalized form:
//!
//! - the first path component is the registry when it contains `.` or `:` or is `localhost`
//!   (Docker's rule, which containerd and CRI-O follow); otherwise the registry is Docker Hub;
//! - the registry is lowercased (IPv6 in its canonical spelling), its default port (`:443`,
//!   `:80`) dropped, and Docker Hub's names (`index.docker.io`, `registry-1.docker.io`, with or
//!   without a default port) become `docker.io`;
//! - on Docker Hub a one-component repository is an official image: `nginx` is `library/nginx`;
//! - with neither tag nor digest the tag is `latest`; a tag and a digest together are both kept
//!   (the runtime pulls the digest).
//!
//! Registries are parsed as the proxy parses them ([`Authority`]), so an image is only ever
//! judged and rewritten under the registry the cache would actually contact.

use std::fmt;

use crate::authority::{Authority, DOCKER_HUB_NAME, is_docker_hub};
use crate::grammar::{self, valid_repository};

/// Longest `registry/repository` a runtime accepts (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;
/// The tag an image without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";

/// Why an image reference cannot be understood. The messages are shown to whoever created the
/// object (in the denial), so they say what is wrong with what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("it is empty")]
    Empty,
    #[error("it contains whitespace or control characters")]
    Whitespace,
    #[error("{registry:?} is not a valid registry: {reason}")]
    InvalidRegistry { registry: String, reason: String },
    #[error("no repository after the registry {0:?}")]
    MissingRepository(String),
    #[error(
        "{0:?} is not a valid repository (lowercase letters and digits, separated by '.', '_', \
         '__' or dashes, components joined by '/')"
    )]
    InvalidRepository(String),
    #[error("the name is {len} characters long; at most {MAX_NAME_LEN}")]
    NameTooLong { len: usize },
    #[error(
        "{0:?} is not a valid tag (letters, digits, '_', '.' and '-', at most 128, not starting \
         with '.' or '-')"
    )]
    InvalidTag(String),
    #[error("{0:?} is not a valid digest (sha256:<64 hex digits> or sha512:<128 hex digits>)")]
    InvalidDigest(String),
    #[error("more than one '@'")]
    TwoDigests,
}

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses an image as a pod's `image` field holds it.
    pub fn parse(image: &str) -> Result<ImageRef, ImageError> {
        parse(image, true)
    }

    /// The image the proxy is asked for: `registry` and `repository` as it resolved them,
    /// with the request's tag or digest, or neither (blobs, tag lists): no default tag.
    pub fn of_request(
        registry: &str,
        repository: &str,
        reference: Option<&str>,
    ) -> Result<ImageRef, ImageError> {
        let text = match reference {
            Some(d) if d.contains(':') => format!("{registry}/{repository}@{d}"),
            Some(t) => format!("{registry}/{repository}:{t}"),
            None => format!("{registry}/{repository}"),
        };
        parse(&text, false)
    }

    /// The registry, normalized: `docker.io`, `quay.io`, `host:5000`, `[::1]:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository in that registry: `library/nginx`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when neither tag nor digest was written; `None` with a digest alone.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, `algorithm:hex`.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What the runtime pulls: the digest when there is one, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same tag and digest under another name (`registry/repository`).
    pub fn with_name(&self, registry: &str, repository: &str) -> ImageRef {
        ImageRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        }
    }

    /// `:tag@digest`, `:tag` or `@digest`: what follows the name.
    pub fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// The normalized form: `docker.io/library/nginx:latest`, `host:5000/a/b:1@sha256:...`.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.registry, self.repository, self.suffix())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<ImageRef, ImageError> {
        ImageRef::parse(s)
    }
}

/// Whether `first` (the text before the first `/`) names a registry by Docker's rule.
pub fn names_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost"
}

/// A registry as written in an image, normalized (lowercase; Docker Hub's names → `docker.io`).
pub fn normalize_registry(written: &str) -> Result<String, ImageError> {
    let authority = Authority::parse(written).map_err(|reason| ImageError::InvalidRegistry {
        registry: written.to_string(),
        reason,
    })?;
    let shown = authority.to_string();
    Ok(if is_docker_hub(&shown) {
        DOCKER_HUB_NAME.to_string()
    } else {
        shown
    })
}

/// Parses a reference; `default_tag` adds `latest` when neither tag nor digest is given (images
/// do, prefixes do not).
pub(crate) fn parse(image: &str, default_tag: bool) -> Result<ImageRef, ImageError> {
    if image.is_empty() {
        return Err(ImageError::Empty);
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ImageError::Whitespace);
    }
    let (rest, digest) = match image.split_once('@') {
        Some((_, d)) if d.contains('@') => return Err(ImageError::TwoDigests),
        Some((r, d)) => (r, Some(valid_digest(d)?)),
        None => (image, None),
    };
    // A ':' after the last '/' starts the tag; before it, it is the registry's port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => {
            let (n, t) = rest.split_at(last_slash + i);
            (n, Some(valid_tag(&t[1..])?))
        }
        None => (rest, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, path)) if names_registry(first) => (normalize_registry(first)?, path),
        _ => (DOCKER_HUB_NAME.to_string(), name),
    };
    if repository.is_empty() {
        return Err(ImageError::MissingRepository(registry));
    }
    if !valid_repository(repository) {
        return Err(ImageError::InvalidRepository(repository.to_string()));
    }
    let repository = if registry == DOCKER_HUB_NAME && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    };
    let len = registry.len() + 1 + repository.len();
    if len > MAX_NAME_LEN {
        return Err(ImageError::NameTooLong { len });
    }
    let tag = match (tag, &digest) {
        (None, None) if default_tag => Some(DEFAULT_TAG.to_string()),
        (t, _) => t,
    };
    Ok(ImageRef {
        registry,
        repository,
        tag,
        digest,
    })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> Result<String, ImageError> {
    if grammar::valid_tag(t) {
        Ok(t.to_string())
    } else {
        Err(ImageError::InvalidTag(t.to_string()))
    }
}

/// `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`: the digests registries (and
/// Trow's storage) verify.
fn valid_digest(d: &str) -> Result<String, ImageError> {
    let hex = match d.split_once(':') {
        Some(("sha256", hex)) => (hex.len() == 64).then_some(hex),
        Some(("sha512", hex)) => (hex.len() == 128).then_some(hex),
        _ => None,
    };
    match hex {
        Some(hex)
            if hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(d.to_string())
        }
        _ => Err(ImageError::InvalidDigest(d.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        ImageRef::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    #[test]
    fn docker_hub_spellings_are_one_image() {
        for s in [
            "nginx",
            "nginx:latest",
            "library/nginx",
            "docker.io/nginx",
            "docker.io/library/nginx",
            "index.docker.io/library/nginx",
            "registry-1.docker.io/library/nginx:latest",
            "Docker.IO/nginx",
        ] {
            assert_eq!(norm(s), "docker.io/library/nginx:latest", "{s}");
        }
        assert_eq!(norm("bitnami/redis:7"), "docker.io/bitnami/redis:7");
        assert_eq!(
            norm("docker.io/nginx/nginx-ingress"),
            "docker.io/nginx/nginx-ingress:latest"
        );
        let r = ImageRef::parse("nginx:1.27").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            ("docker.io", "library/nginx", Some("1.27"), None)
        );
        assert_eq!(r.name(), "docker.io/library/nginx");
        assert_eq!(r.reference(), "1.27");
    }

    #[test]
    fn registries_follow_dockers_rule() {
        assert_eq!(norm("quay.io/coreos/etcd:v3"), "quay.io/coreos/etcd:v3");
        assert_eq!(norm("host:5000/a/b:1"), "host:5000/a/b:1");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(
            norm("10.0.0.5:5000/team/app"),
            "10.0.0.5:5000/team/app:latest"
        );
        assert_eq!(norm("[::1]:5000/app:2"), "[::1]:5000/app:2");
        assert_eq!(norm("[0:0::0001]/app"), "[::1]/app:latest");
        assert_eq!(
            norm("REGISTRY.example.com/app"),
            "registry.example.com/app:latest"
        );
        // No '.', ':' or localhost: the first component is a Docker Hub namespace.
        assert_eq!(norm("myregistry/app"), "docker.io/myregistry/app:latest");
        // Without a '/', "localhost:5000" is the repository localhost with the tag 5000.
        assert_eq!(norm("localhost:5000"), "docker.io/library/localhost:5000");
        let r = ImageRef::parse("host:5000/a/b").unwrap();
        assert_eq!((r.registry(), r.repository()), ("host:5000", "a/b"));
    }

    #[test]
    fn default_ports_name_the_same_registry() {
        for s in [
            "quay.io:443/evil/x",
            "QUAY.IO:443/evil/x",
            "quay.io:80/evil/x:latest",
        ] {
            assert_eq!(norm(s), "quay.io/evil/x:latest", "{s}");
        }
        for s in [
            "docker.io:443/library/busybox",
            "registry-1.docker.io:443/library/busybox",
            "index.docker.io:80/busybox",
        ] {
            assert_eq!(norm(s), "docker.io/library/busybox:latest", "{s}");
        }
        assert_eq!(norm("127.0.0.2:80/app"), "127.0.0.2/app:latest");
        assert_eq!(norm("quay.io:8443/x"), "quay.io:8443/x:latest");
        assert_eq!(norm("myreg:443/x"), "myreg:443/x:latest");
    }

    #[test]
    fn requests_have_no_default_tag() {
        let blob = ImageRef::of_request("docker.io", "library/nginx", None).unwrap();
        assert_eq!(blob.to_string(), "docker.io/library/nginx");
        assert_eq!((blob.tag(), blob.digest()), (None, None));
        let tag = ImageRef::of_request("quay.io", "a/b", Some("1.0")).unwrap();
        assert_eq!(tag.to_string(), "quay.io/a/b:1.0");
        let digest = ImageRef::of_request("host:5000", "a", Some(D)).unwrap();
        assert_eq!(digest.to_string(), format!("host:5000/a@{D}"));
        assert!(ImageRef::of_request("quay.io", "a", Some("-x")).is_err());
    }

    #[test]
    fn tags_and_digests() {
        let by_digest = ImageRef::parse(&format!("nginx@{D}")).unwrap();
        assert_eq!(by_digest.tag(), None);
        assert_eq!(by_digest.digest(), Some(D));
        assert_eq!(by_digest.reference(), D);
        assert_eq!(
            by_digest.to_string(),
            format!("docker.io/library/nginx@{D}")
        );
        let both = ImageRef::parse(&format!("host:5000/app:1.2@{D}")).unwrap();
        assert_eq!((both.tag(), both.digest()), (Some("1.2"), Some(D)));
        assert_eq!(both.suffix(), format!(":1.2@{D}"));
        assert_eq!(both.to_string(), format!("host:5000/app:1.2@{D}"));
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        assert!(ImageRef::parse(&format!("a.io/x@{sha512}")).is_ok());
        assert!(ImageRef::parse(&format!("a.io/x:{}", "t".repeat(128))).is_ok());
        assert!(ImageRef::parse("a.io/x:_under.score-1").is_ok());
        assert!(ImageRef::parse("a.io/x:UPPER").is_ok());
    }

    #[test]
    fn invalid_references_say_why() {
        let e = |s: &str| ImageRef::parse(s).unwrap_err();
        assert_eq!(e(""), ImageError::Empty);
        assert_eq!(e("nginx "), ImageError::Whitespace);
        assert_eq!(e("Nginx"), ImageError::InvalidRepository("Nginx".into()));
        assert_eq!(
            e("quay.io/a//b"),
            ImageError::InvalidRepository("a//b".into())
        );
        assert_eq!(
            e("quay.io/"),
            ImageError::MissingRepository("quay.io".into())
        );
        assert_eq!(e("nginx:"), ImageError::InvalidTag("".into()));
        assert_eq!(e("nginx:-x"), ImageError::InvalidTag("-x".into()));
        assert_eq!(e("nginx:.x"), ImageError::InvalidTag(".x".into()));
        assert!(matches!(
            e(&format!("a.io/x:{}", "t".repeat(129))),
            ImageError::InvalidTag(_)
        ));
        assert_eq!(e("nginx:a:b"), ImageError::InvalidTag("a:b".into()));
        assert_eq!(
            e("nginx@sha256:abc"),
            ImageError::InvalidDigest("sha256:abc".into())
        );
        let upper = D.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(
            e(&format!("nginx@{upper}")),
            ImageError::InvalidDigest(_)
        ));
        assert!(matches!(
            e(&format!("nginx@md5:{}", &D[7..])),
            ImageError::InvalidDigest(_)
        ));
        assert!(matches!(
            e(&format!("nginx@{}", &D[7..])),
            ImageError::InvalidDigest(_)
        ));
        assert_eq!(e(&format!("nginx@{D}@{D}")), ImageError::TwoDigests);
        assert!(matches!(e("a..b/x"), ImageError::InvalidRegistry { .. }));
        assert!(matches!(
            e("host:99999/x"),
            ImageError::InvalidRegistry { .. }
        ));
        assert!(matches!(e("a_b.io/x"), ImageError::InvalidRegistry { .. }));
        assert!(matches!(e("127.1/x"), ImageError::InvalidRegistry { .. }));
        let long = format!("quay.io/{}", "a".repeat(MAX_NAME_LEN));
        assert!(matches!(e(&long), ImageError::NameTooLong { .. }));
        let msg = e("quay.io/Team/app").to_string();
        assert!(
            msg.starts_with("\"Team/app\" is not a valid repository"),
            "{msg}"
        );
    }
}
