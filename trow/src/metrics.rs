//! Which services' metrics a process shows, and where: one Prometheus [`Registry`] per
//! process holding the metrics of every service it runs (all four in the one-process
//! default), shown by `GET /metrics` on the gateway's HTTP port and, with `--metrics-listen`,
//! on a listener of its own (the only one a split storage, proxy or admission service has).
//!
//! Each service crate keeps its metrics in its own `metrics` module with a `register`
//! function; [`registry`] is the one list of them. A new family (the audit log's
//! `trow_audit_events_total`) is a `metrics` module beside the code that counts, and one line
//! here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// A service whose metrics a process shows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Gateway,
    Storage,
    Proxy,
    Admission,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildInfo {
    version: &'static str,
}

/// The registry of the services this process runs.
pub fn registry(services: &[Service]) -> Arc<Registry> {
    let mut r = Registry::default();
    let info = Family::<BuildInfo, Gauge>::default();
    info.get_or_create(&BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
    })
    .set(1);
    r.register("trow_build_info", "Trow's version (always 1)", info);
    for s in services {
        match s {
            Service::Gateway => trow_gateway::metrics::register(&mut r),
            Service::Storage => trow_storage::metrics::register(&mut r),
            Service::Proxy => trow_proxy::metrics::register(&mut r),
            Service::Admission => trow_admission::metrics::register(&mut r),
        }
    }
    Arc::new(r)
}

/// Serves `registry` on `addr` (`--metrics-listen`) until `shutdown`; nothing without an
/// address. Binds before returning, so a taken port stops the start-up.
pub async fn listen(
    addr: Option<SocketAddr>,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>, crate::Error> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = crate::bind(addr, "metrics").await?;
    println!("trow metrics: http://{}/metrics", listener.local_addr()?);
    Ok(Some(tokio::spawn(trow_gateway::metrics::serve(
        listener, registry, shutdown,
    ))))
}
