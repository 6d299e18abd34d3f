//! Names: registries, repositories and images in one canonical form, and the validation policy
//! judged on them.
//!
//! The pull-through cache and the validating webhook must agree on what an image is called, or
//! a deny could be bypassed by writing the same image another way (`quay.io:443/evil/x`,
//! `registry-1.docker.io:443/library/busybox`), or by pulling it through the cache under a name
//! of Trow the webhook does not know. So both use this crate, which depends on neither:
//!
//! - [`grammar`]: the OCI grammar of repository names and tags.
//! - [`authority`]: `host[:port]` in one canonical form (lowercase, default ports dropped,
//!   Docker Hub's names as one), and the cache's spelling of it.
//! - [`image`]: image references as pods write them, normalized.
//! - [`validation`]: the `image_validation` config section.
//! - [`policy`]: allow or deny one image (for the webhook) or one request (for the proxy), and
//!   why.

pub mod authority;
pub mod grammar;
pub mod image;
pub mod policy;
pub mod validation;

pub use authority::Authority;
pub use image::{ImageError, ImageRef};
pub use policy::{CacheOrigin, Verdict};
pub use validation::{ConfigError, Decision, ValidationConfig};
