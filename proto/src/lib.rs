//! Trow's gRPC contracts, generated from `proto/` by tonic-prost-build. Nothing generated is
//! edited by hand; the hand-written pieces are [`oci_code`], the convention by which a status
//! carries its OCI Distribution error code across the wire, [`cache`], the cache's namespace,
//! [`transport`], the sizes both ends share, [`server`], what every gRPC server carries,
//! [`trust`], who may call a service (mutual TLS, a shared token), [`tls`], certificates
//! from files reloaded when they change (also the gateway's HTTPS), [`trace`], the trace
//! context across the hops, [`blob_body`], blob bytes as a plain HTTP/2 body beside the
//! storage service's gRPC, and [`in_process`], a server in this process called directly.

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

    /// Longest text kept in an event's short fields (user, client, action, outcome, source,
    /// digest) and its long ones (repository, reference, user agent, detail). Paths and headers
    /// are the caller's to choose: bounded, an event stays small, a batch of them fits a gRPC
    /// message, and a flood of refusals cannot make one query page too big to send.
    pub const SHORT_FIELD: usize = 160;
    pub const LONG_FIELD: usize = 512;

    impl Event {
        /// The event with every text field cut to its bound (at a character boundary, marked
        /// with `…`).
        pub fn bounded(mut self) -> Event {
            for (f, max) in [
                (&mut self.user, SHORT_FIELD),
                (&mut self.client, SHORT_FIELD),
                (&mut self.action, SHORT_FIELD),
                (&mut self.outcome, SHORT_FIELD),
                (&mut self.source, SHORT_FIELD),
                (&mut self.digest, SHORT_FIELD),
                (&mut self.repository, LONG_FIELD),
                (&mut self.reference, LONG_FIELD),
                (&mut self.user_agent, LONG_FIELD),
                (&mut self.detail, LONG_FIELD),
            ] {
                if f.len() > max {
                    let mut end = max - '…'.len_utf8();
                    while !f.is_char_boundary(end) {
                        end -= 1;
                    }
                    f.truncate(end);
                    f.push('…');
                }
            }
            self
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn events_are_bounded() {
            let e = super::Event {
                repository: "é".repeat(1000),
                user: "u".repeat(10),
                ..Default::default()
            }
            .bounded();
            assert!(e.repository.len() <= super::LONG_FIELD && e.repository.ends_with('…'));
            assert_eq!(e.user, "u".repeat(10));
        }
    }
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

pub mod blob_body;
pub mod cache;
pub mod in_process;
pub mod oci_code;
pub mod server;
pub mod tls;
pub mod trace;
pub mod transport;
pub mod trust;
