//! Trow's gRPC contracts, generated from `proto/` by tonic-prost-build. Nothing generated is
//! edited by hand; the hand-written pieces are [`oci_code`], the convention by which a status
//! carries its OCI Distribution error code across the wire, [`cache`], the cache's namespace,
//! [`transport`], the sizes both ends share, [`server`], what every gRPC server carries,
//! [`trust`], who may call a service (mutual TLS, a shared token), [`tls`], certificates
//! from files reloaded when they change (also the gateway's HTTPS), and [`trace`], the trace
//! context across the hops.

pub mod storage {
    tonic::include_proto!("trow.storage.v1");
}

pub mod proxy {
    tonic::include_proto!("trow.proxy.v1");
}

pub mod admission {
    tonic::include_proto!("trow.admission.v1");
}

/// The audit log, served by the storage process.
pub mod audit {
    tonic::include_proto!("trow.audit.v1");
}

/// The OCI Distribution error codes, shared by every service.
pub mod oci {
    tonic::include_proto!("trow.oci.v1");
}

/// Encoded descriptors of each service alone (with its imports), for its server's reflection.
pub mod descriptors {
    /// Storage and the audit log (one process serves both).
    pub const STORAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/storage_descriptor.bin"));
    pub const PROXY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/proxy_descriptor.bin"));
    pub const ADMISSION: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/admission_descriptor.bin"));
}

pub mod cache;
pub mod oci_code;
pub mod server;
pub mod tls;
pub mod trace;
pub mod transport;
pub mod trust;
