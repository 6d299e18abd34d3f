//! The one place that says where everything lives in the store.
//!
//! Keys are `/`-separated paths relative to the backend's root. Names and digests are validated
//! before they get here (see `names` and `digest`), so no key can escape the root.
//!
//! ```text
//! blobs/<alg>/<hex[..2]>/<hex>                        content, immutable, shared by all repositories
//! uploads/<id>/data                                   scratch bytes of an upload in progress
//! uploads/<id>/repository                             the repository the upload belongs to
//! repositories/<name>/_blobs/<alg>/<hex>              the blob is in this repository (empty link)
//! repositories/<name>/_manifests/<alg>/<hex>          a manifest of this repository (JSON ManifestMeta)
//! repositories/<name>/_tags/<tag>                     the digest the tag points to
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>
//!                                                     a referrer of subject <alg>:<hex> (JSON descriptor)
//! catalog/<name, each `/` as `+`>                     the repository exists (the catalog index: one
//!                                                     flat listing instead of a walk of repositories/)
//! gc/blobs/<alg>-<hex>                                a collection is deciding on this blob (tombstone)
//! gc/repositories/<name, each `/` as `+`>             a collection is deleting in this repository
//! audit/events-<seq>.jsonl                          the audit log, append-only JSON lines (see `audit`)
//! state/pulls                                         when each cached image was last pulled
//! state/leases                                        until when gateways may serve from their
//!                                                     caches (see `store::changes`)
//! tmp/<uuid>                                          a small object being written, renamed into place
//! .lock                                               locked by the storage service using this store
//! ```
//! Manifests' bytes are stored as blobs; `_`-prefixed directories can't clash with repository
//! path components, which never start with `_`. Everything under `tmp/` and every upload without
//! its `repository` record is a leftover of a crash and may be deleted.

use crate::digest::Digest;

pub const REPOSITORIES: &str = "repositories";
pub const UPLOADS: &str = "uploads";
pub const CATALOG: &str = "catalog";
pub const TMP: &str = "tmp";
/// When cached images were last pulled, saved now and then (see `store::pulls`).
pub const PULLS: &str = "state/pulls";
/// Until when (milliseconds since the epoch) leases granted to gateways in other processes may
/// run: a storage service started after a crash waits that out before a change returns.
pub const LEASES: &str = "state/leases";
pub const LOCK: &str = ".lock";
/// The audit log's files (see `audit`); not objects of the store.
pub const AUDIT: &str = "audit";
/// Tombstones of blobs a garbage collection is deciding on (see `store::gc`).
pub const GC_BLOBS: &str = "gc/blobs";
/// Repositories a garbage collection is deleting in (see `store::gc`).
pub const GC_REPOSITORIES: &str = "gc/repositories";
/// Marker children that make a directory under `repositories/` a repository.
pub const REPO_MARKERS: [&str; 3] = ["_blobs", "_manifests", "_tags"];

pub fn blob(d: &Digest) -> String {
    format!("blobs/{}/{}/{}", d.algorithm.name(), &d.hex[..2], d.hex)
}

pub fn upload_dir(id: &str) -> String {
    format!("{UPLOADS}/{id}")
}

pub fn upload_data(id: &str) -> String {
    format!("{UPLOADS}/{id}/data")
}

pub fn upload_repository(id: &str) -> String {
    format!("{UPLOADS}/{id}/repository")
}

pub fn repository(name: &str) -> String {
    format!("{REPOSITORIES}/{name}")
}

pub fn blob_link(name: &str, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{name}/_blobs/{}/{}",
        d.algorithm.name(),
        d.hex
    )
}

pub fn manifest(name: &str, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{name}/_manifests/{}/{}",
        d.algorithm.name(),
        d.hex
    )
}

pub fn tags(name: &str) -> String {
    format!("{REPOSITORIES}/{name}/_tags")
}

pub fn tag(name: &str, tag: &str) -> String {
    format!("{REPOSITORIES}/{name}/_tags/{tag}")
}

pub fn referrers(name: &str, subject: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{name}/_referrers/{}/{}",
        subject.algorithm.name(),
        subject.hex
    )
}

pub fn referrer(name: &str, subject: &Digest, d: &Digest) -> String {
    format!(
        "{}/{}-{}",
        referrers(name, subject),
        d.algorithm.name(),
        d.hex
    )
}

/// The catalog index entry of a repository: one flat file name, so `/` becomes `+`, which never
/// occurs in repository names and keeps a 255-byte name within a file name's 255-byte limit.
pub fn catalog_entry(name: &str) -> String {
    format!("{CATALOG}/{}", name.replace('/', "+"))
}

/// The repository a catalog entry's file name stands for.
pub fn catalog_name(entry: &str) -> String {
    entry.replace('+', "/")
}

pub fn tmp(id: &str) -> String {
    format!("{TMP}/{id}")
}

/// The tombstone a collection puts before it decides on a blob's bytes; a writer that makes the
/// blob reachable waits until it is gone (see `store::gc`).
pub fn gc_tombstone(d: &Digest) -> String {
    format!("{GC_BLOBS}/{}-{}", d.algorithm.name(), d.hex)
}

/// The marker of a repository a garbage collection is deleting in (the collection's cutoff).
pub fn gc_marker(name: &str) -> String {
    format!("{GC_REPOSITORIES}/{}", name.replace('/', "+"))
}

/// The digest string a `<alg>-<hex>` file name (a referrer entry, a tombstone) stands for.
pub fn dashed_digest(name: &str) -> Option<String> {
    name.split_once('-')
        .map(|(alg, hex)| format!("{alg}:{hex}"))
}

/// The manifest records of a repository: `<prefix>/<alg>/<hex>`.
pub fn manifests(name: &str) -> String {
    format!("{REPOSITORIES}/{name}/_manifests")
}

/// The blob links of a repository: `<prefix>/<alg>/<hex>`.
pub fn blob_links(name: &str) -> String {
    format!("{REPOSITORIES}/{name}/_blobs")
}

/// The blobs whose names start with `xx`, under their algorithm.
pub fn blob_dir(algorithm: &str, xx: &str) -> String {
    format!("blobs/{algorithm}/{xx}")
}
