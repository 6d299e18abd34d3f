//! The `trow` command's modes, each wiring the service libraries together: the one-process
//! default runs the same gateway, storage, proxy and admission code as the split deployment,
//! calling the same gRPC services directly instead of over TCP (`trow_proto::in_process`), so
//! both topologies exercise one code path.

pub mod config;
pub mod containerd;
pub mod gc;
pub mod grpc_trust;
pub mod metrics;
pub mod telemetry;
pub mod webhook_certs;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use trow_proto::trust::Trust;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Resolves on SIGTERM or Ctrl-C, and tells every receiver of the returned channel.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: finishing requests in flight");
        let _ = tx.send(true);
    });
    rx
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for {what}: {e}").into())
}

fn scheme(server: &trow_gateway::ServerConfig) -> &'static str {
    if server.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// What the one-process default runs with.
pub struct AllInOne {
    pub bind: SocketAddr,
    /// Where the in-process storage service also listens for gRPC tools.
    pub storage_listen: SocketAddr,
    /// Where the in-process proxy service also listens for gRPC tools.
    pub proxy_listen: SocketAddr,
    /// Where the in-process admission service also listens for gRPC tools.
    pub admission_listen: SocketAddr,
    /// Whether `--bind` also answers the webhooks (`/validate-image`, `/mutate-image`);
    /// false when a `trow gateway --tls` beside this process serves them.
    pub webhooks_on_bind: bool,
    pub data_dir: std::path::PathBuf,
    pub hostname: Option<String>,
    pub limits: trow_storage::Limits,
    pub server: trow_gateway::ServerConfig,
    pub proxy: trow_proxy::config::ProxyConfig,
    /// `image_validation` as the proxy enforces it; `None`: the proxy serves every image.
    pub proxy_policy: Option<trow_proxy::policy::Enforcer>,
    pub webhooks: trow_admission::Webhooks,
    /// Authentication at the gateway; None: none (no users configured).
    pub auth: Option<trow_gateway::auth::AuthConfig>,
    /// How the gateway puts requests on record in the audit log.
    pub audit: trow_gateway::audit::AuditSettings,
    /// Where `/metrics` is also served, without authentication (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Who may call the services' TCP listeners (calls within the process need nothing).
    pub trust: Trust,
}

/// Says at start-up what a gRPC server requires of its callers (never the token).
fn log_trust(trust: &Trust) {
    tracing::info!("gRPC callers must present {}", trust.describe());
}

/// Says at start-up whether the gateway authenticates, and how (never with a secret).
fn auth(config: Option<trow_gateway::auth::AuthConfig>) -> Option<Arc<trow_gateway::auth::Auth>> {
    let Some(c) = config else {
        tracing::info!("authentication is off: anyone who reaches the gateway may push and pull");
        return None;
    };
    tracing::info!(
        users = c.users.len(),
        rules = ?c.rules,
        token_lifetime = ?c.token_lifetime,
        service = %c.service,
        "authentication is on: the token endpoint is /v2/token"
    );
    Some(Arc::new(trow_gateway::auth::Auth::new(c)))
}

/// The admission service, pre-warming through `proxy` when there is one; says at start-up what
/// its webhooks will do.
fn admission_service(
    webhooks: trow_admission::Webhooks,
    proxy: Option<trow_proto::trust::Channel>,
) -> Arc<trow_admission::server::AdmissionService> {
    let m = webhooks.mutation();
    let prewarm = proxy.filter(|_| m.prewarm).map(|c| {
        Arc::new(trow_admission::prewarm::Prewarmer::new(
            trow_gateway::proxy(c),
            m.prewarm_concurrency,
            m.prewarm_platforms.clone(),
        ))
    });
    let service = trow_admission::server::AdmissionService {
        hooks: webhooks,
        prewarm,
    };
    service.log_startup();
    Arc::new(service)
}

/// Gateway, storage, proxy and admission in one process: the default.
///
/// The gateway reaches storage and proxy, and the proxy reaches storage, by calling their gRPC
/// services directly (same clients and services, no connection); the TCP listeners serve
/// operators' tools (grpcurl, health probes).
pub async fn run_all(a: AllInOne) -> Result<(), Error> {
    let stop = shutdown_signal();
    let data = trow_storage::open(&a.data_dir, a.limits).await?;
    let store = data.store.clone();
    let grpc = bind(a.storage_listen, "storage gRPC").await?;
    let grpc_addr = grpc.local_addr()?;
    let proxy_grpc = bind(a.proxy_listen, "proxy gRPC").await?;
    let proxy_addr = proxy_grpc.local_addr()?;
    let admission_grpc = bind(a.admission_listen, "admission gRPC").await?;
    let admission_addr = admission_grpc.local_addr()?;
    let http = bind(a.bind, "the HTTP API").await?;
    let registry = metrics::registry(&[
        metrics::Service::Gateway,
        metrics::Service::Storage,
        metrics::Service::Proxy,
        metrics::Service::Admission,
    ]);
    let metrics_server =
        metrics::listen(a.metrics_listen, registry.clone(), wait(stop.clone())).await?;
    println!(
        "trow storage: gRPC on {grpc_addr}, data in {}",
        store.backend().root().display()
    );
    println!("trow proxy: gRPC on {proxy_addr}");
    println!("trow admission: gRPC on {admission_addr}");
    log_trust(&a.trust);
    println!(
        "trow gateway: OCI registry on {}://{}{}",
        scheme(&a.server),
        http.local_addr()?,
        a.hostname
            .as_ref()
            .map(|h| format!(" (as {h})"))
            .unwrap_or_default()
    );
    // Storage stops only after the proxy, and the proxy only after the gateway drained, so
    // requests in flight at SIGTERM still reach them.
    let janitor = data.spawn_janitor();
    let (gateway_done, services_stop) = watch::channel(false);
    // In this process the services call each other directly (see `trow_proto::in_process`);
    // their TCP listeners serve other processes and operators' tools.
    let local_storage = trow_storage::in_process(store.clone(), wait(services_stop.clone())).await;
    let to_storage = || trow_proto::trust::in_process(local_storage.clone());
    // The gateway reads blob bodies straight from the store (see `trow_proto::blob_body`).
    let blob_store = store.clone();
    let storage = {
        let (trust, stop) = (a.trust.clone(), wait(services_stop.clone()));
        tokio::spawn(async move { trow_storage::serve(grpc, store, stop, &trust).await })
    };
    let proxy_service = Arc::new(
        trow_proxy::ProxyService::new(&a.proxy, trow_gateway::storage(to_storage()))?
            .with_policy(log_policy(a.proxy_policy))
            .with_audit(to_storage()),
    );
    let local_proxy = trow_proxy::in_process(proxy_service.clone()).await;
    let to_proxy = || trow_proto::trust::in_process(local_proxy.clone());
    let proxy = {
        let (trust, stop) = (a.trust.clone(), wait(services_stop.clone()));
        tokio::spawn(
            async move { trow_proxy::serve(proxy_grpc, proxy_service, stop, &trust).await },
        )
    };
    let admission_service = admission_service(a.webhooks, Some(to_proxy()));
    let local_admission = trow_admission::server::in_process(admission_service.clone()).await;
    let admission = {
        let (trust, stop) = (a.trust.clone(), wait(services_stop));
        tokio::spawn(async move {
            trow_admission::server::serve(admission_grpc, admission_service, stop, &trust).await
        })
    };
    let audit = trow_gateway::audit::Auditor::new(
        to_storage(),
        &trow_gateway::audit::AuditSettings {
            hostname: a.hostname.clone(),
            ..a.audit.clone()
        },
    );
    let storage_client = trow_gateway::storage(to_storage());
    let state = trow_gateway::AppState::new(trow_gateway::AppServices {
        audit: audit.clone(),
        manifests: trow_gateway::manifest_cache::ManifestCache::start(
            storage_client.clone(),
            a.server.manifest_cache_size,
        ),
        storage: storage_client,
        blobs: trow_proto::blob_body::BlobBodyClient::local(Arc::new(
            trow_storage::service::BlobBytes(blob_store),
        )),
        proxy: Some(trow_gateway::proxy_pool::ProxyPool::new(vec![
            trow_gateway::proxy(to_proxy()),
        ])),
        hostname: a.hostname,
        admission: a
            .webhooks_on_bind
            .then(|| trow_gateway::admission(trow_proto::trust::in_process(local_admission))),
        auth: auth(a.auth),
        metrics: Some(registry),
    });
    let served = trow_gateway::serve(http, state, wait(stop), a.server).await;
    // Blob-pull summaries still pending go on record before storage stops.
    audit.flush().await;
    let _ = gateway_done.send(true);
    admission.await??;
    proxy.await??;
    storage.await??;
    janitor.abort();
    save_pulls(&data.store).await;
    stopped(metrics_server).await;
    served?;
    Ok(())
}

/// Keeps the cache's last-pull times across the restart (see `trow_storage::store::pulls`).
async fn save_pulls(store: &trow_storage::Store<trow_storage::backend::FsBackend>) {
    if let Err(e) = store.save_pulls().await {
        tracing::warn!(error = %e, "saving last-pull times failed");
    }
}

/// Waits for the metrics listener to finish (it stops with the process's shutdown signal).
async fn stopped(server: Option<tokio::task::JoinHandle<std::io::Result<()>>>) {
    if let Some(s) = server
        && let Ok(Err(e)) = s.await
    {
        tracing::warn!(error = %e, "the metrics listener failed");
    }
}

/// The storage service alone; `/metrics` on `metrics_listen` if given.
pub async fn run_storage(
    listen: SocketAddr,
    data_dir: &Path,
    limits: trow_storage::Limits,
    trust: Trust,
    metrics_listen: Option<SocketAddr>,
) -> Result<(), Error> {
    let stop = shutdown_signal();
    let data = trow_storage::open(data_dir, limits).await?;
    let store = data.store.clone();
    let janitor = data.spawn_janitor();
    let grpc = bind(listen, "storage gRPC").await?;
    println!(
        "trow storage: gRPC on {}, data in {}",
        grpc.local_addr()?,
        store.backend().root().display()
    );
    log_trust(&trust);
    let registry = metrics::registry(&[metrics::Service::Storage]);
    let metrics_server = metrics::listen(metrics_listen, registry, wait(stop.clone())).await?;
    trow_storage::serve(grpc, store, wait(stop), &trust).await?;
    janitor.abort();
    save_pulls(&data.store).await;
    stopped(metrics_server).await;
    Ok(())
}

/// Says at start-up whether the proxy enforces `image_validation`.
fn log_policy(
    policy: Option<trow_proxy::policy::Enforcer>,
) -> Option<trow_proxy::policy::Enforcer> {
    match &policy {
        Some(_) => tracing::info!(
            "the proxy enforces image_validation: denied images are neither fetched nor served"
        ),
        None => tracing::info!("the proxy serves every image (no image_validation to enforce)"),
    }
    policy
}

/// The proxy service alone, caching into the storage service at `storage_url`, refusing what
/// `policy` denies; `/metrics` on `metrics_listen` if given.
pub async fn run_proxy(
    listen: SocketAddr,
    storage_url: &str,
    cfg: &trow_proxy::config::ProxyConfig,
    policy: Option<trow_proxy::policy::Enforcer>,
    trust: Trust,
    metrics_listen: Option<SocketAddr>,
) -> Result<(), Error> {
    let stop = shutdown_signal();
    let storage = trow_gateway::storage_client(storage_url, &trust)
        .map_err(|e| format!("invalid storage URL {storage_url}: {e}"))?;
    let audit = trow_gateway::channel(storage_url, &trust)?;
    let service = Arc::new(
        trow_proxy::ProxyService::new(cfg, storage)?
            .with_policy(log_policy(policy))
            .with_audit(audit),
    );
    let grpc = bind(listen, "proxy gRPC").await?;
    println!(
        "trow proxy: gRPC on {}, storage at {storage_url}",
        grpc.local_addr()?
    );
    log_trust(&trust);
    let registry = metrics::registry(&[metrics::Service::Proxy]);
    let metrics_server = metrics::listen(metrics_listen, registry, wait(stop.clone())).await?;
    trow_proxy::serve(grpc, service, wait(stop), &trust).await?;
    stopped(metrics_server).await;
    Ok(())
}

/// The admission service alone, pre-warming through the proxy at `proxy_url` (none: no
/// pre-warming); `/metrics` on `metrics_listen` if given.
pub async fn run_admission(
    listen: SocketAddr,
    webhooks: trow_admission::Webhooks,
    proxy_url: Option<&str>,
    trust: Trust,
    metrics_listen: Option<SocketAddr>,
) -> Result<(), Error> {
    let stop = shutdown_signal();
    let proxy = proxy_url
        .map(|url| {
            trow_gateway::channel(url, &trust).map_err(|e| format!("invalid proxy URL {url}: {e}"))
        })
        .transpose()?;
    let service = admission_service(webhooks, proxy);
    let grpc = bind(listen, "admission gRPC").await?;
    println!("trow admission: gRPC on {}", grpc.local_addr()?);
    log_trust(&trust);
    let registry = metrics::registry(&[metrics::Service::Admission]);
    let metrics_server = metrics::listen(metrics_listen, registry, wait(stop.clone())).await?;
    trow_admission::server::serve(grpc, service, wait(stop), &trust).await?;
    stopped(metrics_server).await;
    Ok(())
}

/// What the HTTP gateway alone runs with.
pub struct Gateway<'a> {
    pub bind: SocketAddr,
    /// The storage service.
    pub storage_url: &'a str,
    /// The proxies (calls spread over them; none: `f/` and `?ns=` reads are refused).
    pub proxy_urls: &'a [String],
    /// The admission service (none: the webhook paths answer 404).
    pub admission_url: Option<&'a str>,
    pub hostname: Option<String>,
    pub server: trow_gateway::ServerConfig,
    /// Authentication; None: none (no users configured).
    pub auth: Option<trow_gateway::auth::AuthConfig>,
    /// How the services are called (mutual TLS, token).
    pub trust: Trust,
    /// Where `/metrics` is also served, without authentication (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// How requests are put on record in the audit log (the storage service's).
    pub audit: trow_gateway::audit::AuditSettings,
}

/// The HTTP gateway alone, calling the services `g` names.
pub async fn run_gateway(g: Gateway<'_>) -> Result<(), Error> {
    let Gateway {
        bind: bind_addr,
        storage_url,
        proxy_urls,
        admission_url,
        hostname,
        server,
        auth: auth_config,
        trust,
        metrics_listen,
        audit: audit_settings,
    } = g;
    let stop = shutdown_signal();
    let storage_channel = trow_gateway::channel(storage_url, &trust)
        .map_err(|e| format!("invalid storage URL {storage_url}: {e}"))?;
    let storage = trow_gateway::storage(storage_channel.clone());
    let proxy = match proxy_urls {
        [] => None,
        urls => Some(trow_gateway::proxy_pool::ProxyPool::connect(urls, &trust).await?),
    };
    let admission = admission_url
        .map(|url| {
            trow_gateway::channel(url, &trust)
                .map(trow_gateway::admission)
                .map_err(|e| format!("invalid admission URL {url}: {e}"))
        })
        .transpose()?;
    let http = bind(bind_addr, "the HTTP API").await?;
    println!(
        "trow gateway: OCI registry on {}://{}{}, storage at {storage_url}",
        scheme(&server),
        http.local_addr()?,
        hostname
            .as_ref()
            .map(|h| format!(" (as {h})"))
            .unwrap_or_default()
    );
    let registry = metrics::registry(&[metrics::Service::Gateway]);
    let metrics_server =
        metrics::listen(metrics_listen, registry.clone(), wait(stop.clone())).await?;
    let audit = trow_gateway::audit::Auditor::new(
        trow_gateway::channel(storage_url, &trust)?,
        &trow_gateway::audit::AuditSettings {
            hostname: hostname.clone(),
            ..audit_settings
        },
    );
    let state = trow_gateway::AppState::new(trow_gateway::AppServices {
        manifests: trow_gateway::manifest_cache::ManifestCache::start(
            storage.clone(),
            server.manifest_cache_size,
        ),
        storage,
        blobs: trow_proto::blob_body::BlobBodyClient::new(storage_channel),
        proxy,
        hostname,
        admission,
        auth: auth(auth_config),
        metrics: Some(registry),
        audit: audit.clone(),
    });
    let served = trow_gateway::serve(http, state, wait(stop), server).await;
    audit.flush().await;
    stopped(metrics_server).await;
    served?;
    Ok(())
}
