//! Prometheus metrics of the storage service: garbage collections and what they removed,
//! evictions of cached images, and audit events written. Counted once per collection, eviction
//! pass or audit batch, never per request: they cost nothing on the read and write paths.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::LazyLock;

use crate::store::{EvictSummary, GcSummary};

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

struct StorageMetrics {
    gc_runs: Family<Outcome, Counter>,
    gc_duration: Histogram,
    gc_manifests: Counter,
    gc_blobs: Counter,
    gc_bytes: Counter,
    gc_tags: Counter,
    evictions: Counter,
    evicted_images: Counter,
    evicted_blobs: Counter,
    evicted_bytes: Counter,
    audit_events: Counter,
    audit_syncs: Counter,
}

static STORAGE: LazyLock<StorageMetrics> = LazyLock::new(|| StorageMetrics {
    gc_runs: Family::default(),
    // From a few milliseconds (an empty store) to an hour.
    gc_duration: Histogram::new([0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0]),
    gc_manifests: Counter::default(),
    gc_blobs: Counter::default(),
    gc_bytes: Counter::default(),
    gc_tags: Counter::default(),
    evictions: Counter::default(),
    evicted_images: Counter::default(),
    evicted_blobs: Counter::default(),
    evicted_bytes: Counter::default(),
    audit_events: Counter::default(),
    audit_syncs: Counter::default(),
});

/// Registers the storage service's metrics in `registry`.
pub fn register(registry: &mut Registry) {
    let m = &*STORAGE;
    registry.register(
        "trow_storage_gc_runs",
        "Garbage collections run (not dry runs), by outcome (ok, error)",
        m.gc_runs.clone(),
    );
    registry.register_with_unit(
        "trow_storage_gc_duration",
        "Time garbage collections took",
        Unit::Seconds,
        m.gc_duration.clone(),
    );
    registry.register(
        "trow_storage_gc_removed_manifests",
        "Manifest records garbage collection removed",
        m.gc_manifests.clone(),
    );
    registry.register(
        "trow_storage_gc_removed_blobs",
        "Blobs garbage collection removed",
        m.gc_blobs.clone(),
    );
    registry.register_with_unit(
        "trow_storage_gc_removed",
        "Bytes of the blobs garbage collection removed",
        Unit::Bytes,
        m.gc_bytes.clone(),
    );
    registry.register(
        "trow_storage_gc_removed_tags",
        "Tags garbage collection removed by retention rules",
        m.gc_tags.clone(),
    );
    registry.register(
        "trow_storage_evictions",
        "Eviction passes that evicted cached images",
        m.evictions.clone(),
    );
    registry.register(
        "trow_storage_evicted_images",
        "Cached images evicted (least recently pulled first)",
        m.evicted_images.clone(),
    );
    registry.register(
        "trow_storage_evicted_blobs",
        "Blobs deleted by evictions",
        m.evicted_blobs.clone(),
    );
    registry.register_with_unit(
        "trow_storage_evicted",
        "Bytes freed by evictions",
        Unit::Bytes,
        m.evicted_bytes.clone(),
    );
    registry.register(
        "trow_audit_events",
        "Audit events written to the audit log (and acknowledged)",
        m.audit_events.clone(),
    );
    registry.register(
        "trow_audit_syncs",
        "fdatasyncs of the audit log (--audit-sync decides which events wait for one)",
        m.audit_syncs.clone(),
    );
}

/// A batch of `n` audit events was written.
pub(crate) fn audit_written(n: u64) {
    STORAGE.audit_events.inc_by(n);
}

/// The audit log was fdatasync'd.
pub(crate) fn audit_synced() {
    STORAGE.audit_syncs.inc();
}

/// A collection (not a dry run) ended: `Ok` with what it removed; it took `elapsed`, waiting
/// for the one before it included.
pub(crate) fn gc_done(result: Result<&GcSummary, ()>, elapsed: std::time::Duration) {
    let m = &*STORAGE;
    m.gc_duration.observe(elapsed.as_secs_f64());
    let outcome = match result {
        Ok(s) => {
            m.gc_manifests.inc_by(s.manifests);
            m.gc_blobs.inc_by(s.blobs);
            m.gc_bytes.inc_by(s.bytes);
            m.gc_tags.inc_by(s.tags);
            "ok"
        }
        Err(()) => "error",
    };
    m.gc_runs.get_or_create(&Outcome { outcome }).inc();
}

/// An eviction pass ended with `s`.
pub(crate) fn evicted(s: &EvictSummary) {
    if s.images == 0 {
        return;
    }
    let m = &*STORAGE;
    m.evictions.inc();
    m.evicted_images.inc_by(s.images);
    m.evicted_blobs.inc_by(s.blobs);
    m.evicted_bytes.inc_by(s.bytes);
}
