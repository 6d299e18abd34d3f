//! Trow's storage service: the only component that touches stored bytes.
//!
//! - [`layout`] says where everything lives; [`backend`] stores objects (filesystem today).
//! - [`store`] is the registry logic: uploads verified by digest before they become visible,
//!   repository links, manifests, tags and the referrers index.
//! - [`service`] and [`server`] put it behind the gRPC contract in `trow-proto`.
//! - [`retention`] is the config of which tags and untagged manifests each repository keeps.
//! - [`audit`] keeps the audit log (`audit/` in the data dir) and serves `trow.audit.v1.Audit`.
//! - [`fsck`] checks a whole store for inconsistencies (`trow fsck`).
//! - [`metrics`]: garbage collections and evictions, for Prometheus.

pub mod audit;
pub mod backend;
pub mod digest;
pub mod error;
pub mod fsck;
pub mod layout;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod retention;
pub mod server;
pub mod service;
pub mod store;

pub use server::{DataDir, OpenError, in_process, open, serve};
pub use store::{Limits, Store};
