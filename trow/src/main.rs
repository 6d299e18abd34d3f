//! `trow`: the registry in one process by default, or one of its services alone.
//!
//! ```text
//! trow [--bind 0.0.0.0:8000] [--data-dir ./data]        everything in one process
//! trow storage --listen 0.0.0.0:7000 --data-dir DIR [--config-file F]
//!                                                        the storage service alone (gRPC)
//! trow proxy --listen 0.0.0.0:7001 --storage URL [--hostname NAME]
//!                                                        the pull-through cache alone (gRPC)
//! trow admission --listen 0.0.0.0:7002 [--proxy URL]     the admission webhooks alone (gRPC)
//! trow gateway --bind 0.0.0.0:8000 --storage URL [--proxy URL,...] [--admission URL] [--config-file F]
//!                                                        the HTTP gateway alone
//! trow fsck --data-dir DIR                               check a store, read-only
//! trow gc --storage URL [--dry-run]                      collect garbage in a running store
//! trow containerd-config --mirror-url URL [--registry HOST]... [--out-dir DIR [--wait]]
//!                                                        a node's containerd hosts.toml files
//! trow webhook-certs --namespace NS --secret NAME --service SVC [--validating-webhook NAME]
//!                    [--mutating-webhook NAME]           the webhooks' TLS Secret and caBundle
//! ```
//!
//! The default mode and `trow gateway` also take the HTTP server's limits: `--max-connections`,
//! `--header-timeout`, `--idle-timeout`, `--body-timeout`, `--send-timeout`, and `--tls=CERT,KEY`;
//! and authentication: `--user`/`--password`, `--htpasswd`, `--anonymous-pull`,
//! `--token-lifetime`, `--token-key-file`; and the audit log's `--audit-blob-idle`,
//! `--audit-trusted-proxies` (its files' `--audit-max-file-size`, `--audit-max-files` and
//! `--audit-sync` go with storage's limits). Every service mode takes `--metrics-listen ADDR`.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use trow::grpc_trust::GrpcTrustArgs;
use trow_gateway::server::{ServerConfig, parse_duration};
use trow_gateway::tls::TlsFiles;

#[derive(Parser)]
#[command(
    name = "trow",
    version,
    about = "Image management and caching for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    all: AllInOne,
}

#[derive(Subcommand)]
enum Command {
    /// Run only the storage service (gRPC), for the split deployment.
    Storage(StorageArgs),
    /// Run only the pull-through cache (gRPC), caching into a storage service.
    Proxy(ProxyArgs),
    /// Run only the admission webhooks' service (gRPC), pre-warming through a proxy service.
    Admission(AdmissionArgs),
    /// Run only the HTTP gateway, calling a storage service over gRPC.
    Gateway(Box<GatewayArgs>),
    /// Check a store for inconsistencies (read-only). Exit status: 0 clean, 1 problems found,
    /// 2 could not run.
    Fsck(FsckArgs),
    /// Collect garbage now, in a running storage service: delete the manifests, links and blobs
    /// no tag, manifest or referrer reaches. Exit status: 0 done, 2 could not run.
    Gc(GcArgs),
    /// Print (or write under --out-dir) the containerd hosts.toml files that make a node pull
    /// through Trow as a mirror. Exit status: 0 done, 2 bad input or cannot write.
    ContainerdConfig(trow::containerd::ContainerdConfigArgs),
    /// Make sure a Secret holds a CA and a serving certificate for the webhooks' Service, and
    /// that the webhook configurations carry that CA as caBundle. Exit status: 0 done, 2 failed.
    WebhookCerts(trow::webhook_certs::WebhookCertsArgs),
}

/// The one-process default.
#[derive(Args)]
struct AllInOne {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TROW_BIND", default_value = "0.0.0.0:8000")]
    bind: SocketAddr,
    /// Where images are stored.
    #[arg(long, env = "TROW_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Where the in-process storage service also listens for gRPC tools (grpcurl, probes);
    /// port 0: any free port on loopback. The gateway reaches storage in memory.
    #[arg(long, env = "TROW_STORAGE_LISTEN", default_value = "127.0.0.1:0")]
    storage_listen: SocketAddr,
    /// Where the in-process proxy service also listens for gRPC tools; port 0: any free port
    /// on loopback.
    #[arg(long, env = "TROW_PROXY_LISTEN", default_value = "127.0.0.1:0")]
    proxy_listen: SocketAddr,
    /// Where the in-process admission service also listens for gRPC tools; port 0: any free
    /// port on loopback.
    #[arg(long, env = "TROW_ADMISSION_LISTEN", default_value = "127.0.0.1:0")]
    admission_listen: SocketAddr,
    /// Don't answer the webhooks (`/validate-image`, `/mutate-image`) on --bind: a `trow
    /// gateway --tls ... --admission http://<--admission-listen>` beside this process serves
    /// them over HTTPS (the helm chart's single mode), so the registry's port never takes an
    /// AdmissionReview from whoever reaches it.
    #[arg(long, env = "TROW_NO_WEBHOOKS_ON_BIND")]
    no_webhooks_on_bind: bool,
    /// The name clients (and the kubelet) use to reach this registry: `?ns=<hostname>` reads
    /// are local, and the mutating webhook rewrites images to `<hostname>/f/...`.
    #[arg(long, env = "TROW_HOSTNAME")]
    hostname: Option<String>,
    /// The YAML config (`registry_proxies`: upstreams and their credentials;
    /// `image_validation` and `image_mutation`: the admission webhooks; `retention`: which tags
    /// and untagged manifests garbage collection removes).
    #[arg(long, env = "TROW_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    limits: StorageLimits,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    grpc_trust: GrpcTrustArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    audit: AuditArgs,
}

/// How the gateway puts requests on record in the audit log (gateway and default mode).
#[derive(Args)]
struct AuditArgs {
    /// Blob pulls are summarised, one `pull_blobs` event per user, client and repository, sent
    /// once that key has been quiet this long (and at shutdown). [default: 5s]
    #[arg(long, env = "TROW_AUDIT_BLOB_IDLE", value_parser = parse_duration)]
    audit_blob_idle: Option<Duration>,
    /// Addresses of load balancers whose `X-Forwarded-For` names the client in the audit log
    /// (comma-separated IPs); anyone else's header is ignored.
    #[arg(long, env = "TROW_AUDIT_TRUSTED_PROXIES", value_delimiter = ',')]
    audit_trusted_proxies: Vec<std::net::IpAddr>,
}

impl AuditArgs {
    fn settings(&self) -> trow_gateway::audit::AuditSettings {
        let d = trow_gateway::audit::AuditSettings::default();
        trow_gateway::audit::AuditSettings {
            blob_idle: self.audit_blob_idle.unwrap_or(d.blob_idle),
            trusted_proxies: self.audit_trusted_proxies.clone(),
            hostname: None,
        }
    }
}

/// Who may use the registry (gateway and default mode). Without a user, there is no
/// authentication at all.
#[derive(Args)]
struct AuthArgs {
    /// A user who may log in (with --password); clients then need credentials, through the
    /// Docker token protocol (`podman login`, `oras login`, ...).
    #[arg(short = 'U', long, env = "TROW_USER", requires = "password")]
    user: Option<String>,
    /// The user's password, or `file:///path` to read it from that file at start-up.
    #[arg(
        short = 'P',
        long,
        env = "TROW_PASSWORD",
        requires = "user",
        hide_env_values = true
    )]
    password: Option<String>,
    /// An htpasswd file of more users (bcrypt entries only: `htpasswd -B`), read at start-up.
    #[arg(long, env = "TROW_HTPASSWD")]
    htpasswd: Option<PathBuf>,
    /// With users configured: let clients without credentials pull (manifests, blobs, tags,
    /// referrers, catalog); pushes and deletes still need a login.
    #[arg(long, env = "TROW_ANONYMOUS_PULL")]
    anonymous_pull: bool,
    /// How long a token from `/v2/token` is valid. [default: 5m]
    #[arg(long, env = "TROW_TOKEN_LIFETIME", value_parser = parse_duration)]
    token_lifetime: Option<Duration>,
    /// The key tokens are signed with (at least 32 bytes): give every gateway replica the same
    /// file so each accepts the others' tokens. Without it, a random key per process.
    #[arg(long, env = "TROW_TOKEN_KEY_FILE")]
    token_key_file: Option<PathBuf>,
}

impl AuthArgs {
    /// The gateway's authentication; None when no user is configured. `hostname` is the name
    /// in challenges and tokens; `https`: the realm is an https URL; `file`: the config file,
    /// whose `authorization` section holds the rules.
    async fn config(
        &self,
        hostname: Option<&str>,
        https: bool,
        file: &trow::config::FileConfig,
    ) -> Result<Option<trow_gateway::auth::AuthConfig>, trow::Error> {
        use trow_gateway::auth::{rules::Rules, token, users::Users};
        let mut users = Users::default();
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            users.add(user, password)?;
        }
        if let Some(path) = &self.htpasswd {
            users.load_htpasswd(path)?;
        }
        if users.is_empty() {
            if self.anonymous_pull || self.token_key_file.is_some() {
                tracing::warn!(
                    "--anonymous-pull and --token-key-file have no effect without users: \
                     authentication is off"
                );
            }
            if file.authorization.is_some() {
                return Err("the config file has `authorization` rules but no user is \
                            configured (--user/--password or --htpasswd): rules need \
                            authentication"
                    .into());
            }
            return Ok(None);
        }
        let rules = match &file.authorization {
            Some(section) => Rules::new(section, self.anonymous_pull)?,
            None => Rules::authenticated_only(self.anonymous_pull),
        };
        let kubernetes = match file
            .authorization
            .as_ref()
            .and_then(|a| a.kubernetes.clone())
        {
            Some(k) => Some(std::sync::Arc::new(
                trow_gateway::auth::kubernetes::Kubernetes::connect(k).await?,
            )),
            None => None,
        };
        let token_key = match &self.token_key_file {
            Some(path) => token::key_from_file(path)?,
            None => token::random_key()?,
        };
        Ok(Some(trow_gateway::auth::AuthConfig {
            users,
            token_key,
            token_lifetime: self
                .token_lifetime
                .unwrap_or(Duration::from_secs(5 * 60))
                .max(Duration::from_secs(1)),
            rules,
            service: hostname.unwrap_or("trow").to_string(),
            hostname: hostname.map(str::to_string),
            kubernetes,
            https,
        }))
    }
}

/// Where `/metrics` is served on a listener of its own (every mode).
#[derive(Args)]
struct MetricsArgs {
    /// Also serve Prometheus `GET /metrics` here, plain HTTP without authentication, for an
    /// address only the cluster's Prometheus reaches (e.g. the pod IP, `0.0.0.0:9090`). The
    /// gateway's HTTP port serves `/metrics` too, behind its login when users are configured.
    #[arg(long, env = "TROW_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

/// The HTTP server's limits against slow, stalled and hostile clients (gateway and default mode).
/// Durations are seconds (`30`) or humantime (`30s`, `2m`).
#[derive(Args)]
struct ServerArgs {
    /// Open client connections at most; more get a 503. Lowered to fit the open-files limit.
    /// [default: 1024]
    #[arg(long, env = "TROW_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// HTTP/1.1: time a client has to send a request head, including the keep-alive wait for
    /// the next one. [default: 30s]
    #[arg(long, env = "TROW_HEADER_TIMEOUT", value_parser = parse_duration)]
    header_timeout: Option<Duration>,
    /// A connection with no request in flight this long is closed. [default: 60s]
    #[arg(long, env = "TROW_IDLE_TIMEOUT", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// A request body that sends no bytes this long fails; an upload stays resumable.
    /// [default: 60s]
    #[arg(long, env = "TROW_BODY_TIMEOUT", value_parser = parse_duration)]
    body_timeout: Option<Duration>,
    /// A client that reads none of its response this long is disconnected. [default: 60s]
    #[arg(long, env = "TROW_SEND_TIMEOUT", value_parser = parse_duration)]
    send_timeout: Option<Duration>,
    /// Serve HTTPS with this PEM certificate (chain) and key, as CERT,KEY; the files are
    /// re-read when they change (cert-manager rotation). Without it: plain HTTP.
    #[arg(long, env = "TROW_TLS", value_parser = TlsFiles::parse)]
    tls: Option<TlsFiles>,
    /// Memory for manifests and tags, so manifest GETs skip storage (`0`: off). Kept correct
    /// across gateways: storage tells each of them of every tag move and delete before the
    /// write returns. [default: 8MiB]
    #[arg(long, env = "TROW_MANIFEST_CACHE_SIZE", value_parser = parse_size)]
    manifest_cache_size: Option<u64>,
}

impl ServerArgs {
    /// The server's config; loading the TLS files (once, here) is what can fail.
    fn config(&self) -> Result<ServerConfig, trow::Error> {
        let d = ServerConfig::default();
        let tls = match &self.tls {
            Some(files) => Some(trow_gateway::tls::server_config(files.clone())?),
            None => None,
        };
        Ok(ServerConfig {
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            header_timeout: self.header_timeout.unwrap_or(d.header_timeout),
            idle_timeout: self.idle_timeout.unwrap_or(d.idle_timeout),
            body_timeout: self.body_timeout.unwrap_or(d.body_timeout),
            send_timeout: self.send_timeout.unwrap_or(d.send_timeout),
            tls,
            manifest_cache_size: self.manifest_cache_size.map_or(d.manifest_cache_size, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
            ..d
        })
    }
}

/// Limits of the storage service.
#[derive(Args)]
struct StorageLimits {
    /// Upload sessions open at once at most; beyond, pushes are told TOOMANYREQUESTS (429).
    #[arg(long, env = "TROW_MAX_UPLOADS", default_value_t = trow_storage::Limits::default().max_uploads)]
    max_uploads: usize,
    /// A cache fill that makes no progress this long is stalled: its readers give up and the
    /// next proxy to ask takes it over. [default: 10s]
    #[arg(long, env = "TROW_FILL_TIMEOUT", value_parser = parse_duration)]
    fill_timeout: Option<Duration>,
    /// Garbage collection keeps what was written or used more recently than this, so that
    /// a push in progress never loses a blob it is about to reference. [default: 1h]
    #[arg(long, env = "TROW_GC_GRACE", value_parser = parse_duration)]
    gc_grace: Option<Duration>,
    /// How often storage collects garbage by itself (`0`: only on `trow gc`). [default: 1h]
    #[arg(long, env = "TROW_GC_EVERY", value_parser = parse_duration)]
    gc_every: Option<Duration>,
    /// Free space the data volume keeps (e.g. `2GiB`; `0`: none): below it the cache evicts its
    /// least recently pulled images, and below half of it pushes are refused (507) before
    /// they write. [default: 5% of the volume, at most 256MiB]
    #[arg(long, env = "TROW_MIN_FREE_SPACE", value_parser = parse_size)]
    min_free_space: Option<u64>,
    /// A cached image pulled this recently is never evicted: its pull may be in progress.
    /// [default: 60s]
    #[arg(long, env = "TROW_PULL_GUARD", value_parser = parse_duration)]
    pull_guard: Option<Duration>,
    /// The audit log (`<data dir>/audit/`) starts a new file past this size. [default: 64MiB]
    #[arg(long, env = "TROW_AUDIT_MAX_FILE_SIZE", value_parser = parse_size)]
    audit_max_file_size: Option<u64>,
    /// Audit files kept; the oldest are deleted beyond. [default: 8]
    #[arg(long, env = "TROW_AUDIT_MAX_FILES")]
    audit_max_files: Option<usize>,
    /// When audit events reach the disk. Every mode writes an event before its request is
    /// answered (a kill -9 of any process loses none); `changes` fdatasyncs the events of
    /// pushes, deletes, evictions, refusals and admission decisions before the answer and those
    /// of pulls within 1 s; `all` (or `batch`) fdatasyncs every event before the answer; a
    /// period (`1s`) fdatasyncs at most that often. [default: changes]
    #[arg(long, env = "TROW_AUDIT_SYNC", value_parser = parse_audit_sync)]
    audit_sync: Option<trow_storage::audit::SyncMode>,
}

/// `changes`, `all` (`batch`, its name before `changes` existed), or a period.
fn parse_audit_sync(s: &str) -> Result<trow_storage::audit::SyncMode, String> {
    use trow_storage::audit::SyncMode;
    match s {
        "changes" => Ok(SyncMode::Changes),
        "all" | "batch" => Ok(SyncMode::All),
        s => parse_duration(s)
            .map(SyncMode::Every)
            .map_err(|e| format!("{e}; or `changes` or `all`")),
    }
}

/// A size: bytes, or a number with a unit (`512MiB`, `2GB`).
fn parse_size(s: &str) -> Result<u64, String> {
    Ok(trow_proxy::size::parse(s)?.unwrap_or(u64::MAX))
}

impl StorageLimits {
    /// The store's limits; the cache's size comes from the config file's `registry_proxies`,
    /// the retention rules from its `retention` (checked against the grace period here).
    fn limits(
        &self,
        config: &trow::config::FileConfig,
    ) -> Result<trow_storage::Limits, trow_storage::retention::RetentionError> {
        let d = trow_storage::Limits::default();
        let gc_grace = self.gc_grace.unwrap_or(d.gc_grace);
        Ok(trow_storage::Limits {
            max_uploads: self.max_uploads,
            fill_timeout: self.fill_timeout.unwrap_or(d.fill_timeout),
            gc_grace,
            gc_every: self.gc_every.unwrap_or(d.gc_every),
            cache_max_size: config.proxy().max_size,
            min_free_space: self.min_free_space.or(d.min_free_space),
            pull_guard: self.pull_guard.unwrap_or(d.pull_guard),
            retention: config.retention(gc_grace)?,
            audit: trow_storage::audit::AuditConfig {
                max_file_size: self.audit_max_file_size.unwrap_or(d.audit.max_file_size),
                max_files: self.audit_max_files.unwrap_or(d.audit.max_files).max(1),
                sync: self.audit_sync.unwrap_or(d.audit.sync),
            },
        })
    }
}

#[derive(Args)]
struct StorageArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "TROW_STORAGE_LISTEN", default_value = "0.0.0.0:7000")]
    listen: SocketAddr,
    /// Where images are stored.
    #[arg(long, env = "TROW_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The YAML config (`registry_proxies.max_size`: the cache's bound; `retention`: which tags
    /// and untagged manifests garbage collection removes).
    #[arg(long, env = "TROW_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    limits: StorageLimits,
    #[command(flatten)]
    grpc_trust: GrpcTrustArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args)]
struct ProxyArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "TROW_PROXY_LISTEN", default_value = "0.0.0.0:7001")]
    listen: SocketAddr,
    /// URL of the storage service, e.g. http://trow-storage:7000.
    #[arg(long, env = "TROW_STORAGE_URL")]
    storage: String,
    /// The YAML config (`registry_proxies`: upstreams and their credentials;
    /// `image_validation`: images the proxy refuses to fetch or serve).
    #[arg(long, env = "TROW_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// The name the kubelet reaches the registry by: `<hostname>/f/<image>` is judged by
    /// `image_validation` as `<image>`.
    #[arg(long, env = "TROW_HOSTNAME")]
    hostname: Option<String>,
    #[command(flatten)]
    grpc_trust: GrpcTrustArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args)]
struct AdmissionArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "TROW_ADMISSION_LISTEN", default_value = "0.0.0.0:7002")]
    listen: SocketAddr,
    /// URL of a proxy service to pre-warm admitted pods' images through; without one, nothing
    /// is pre-warmed.
    #[arg(long, env = "TROW_PROXY_URL")]
    proxy: Option<String>,
    /// The name the kubelet reaches the registry by: images are rewritten to `<hostname>/f/...`.
    #[arg(long, env = "TROW_HOSTNAME")]
    hostname: Option<String>,
    /// The YAML config (`image_validation`, `image_mutation`, and `registry_proxies` for which
    /// registries are proxied).
    #[arg(long, env = "TROW_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    grpc_trust: GrpcTrustArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args)]
struct GatewayArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TROW_BIND", default_value = "0.0.0.0:8000")]
    bind: SocketAddr,
    /// URL of the storage service, e.g. http://trow-storage:7000.
    #[arg(long, env = "TROW_STORAGE_URL")]
    storage: String,
    /// URLs of proxy services (comma-separated; calls are spread over them). A host name is
    /// resolved every 5 s and each of its addresses used (a headless Service's pods). Without
    /// one, reads under `f/` and with `?ns=` are refused.
    #[arg(long, env = "TROW_PROXY_URL", value_delimiter = ',')]
    proxy: Vec<String>,
    /// URL of the admission service; without one, `/validate-image` and `/mutate-image`
    /// answer 404.
    #[arg(long, env = "TROW_ADMISSION_URL")]
    admission: Option<String>,
    /// The name clients use to reach this registry: `?ns=<hostname>` reads are local.
    #[arg(long, env = "TROW_HOSTNAME")]
    hostname: Option<String>,
    /// The YAML config; the gateway reads its `authorization` section (who may do what).
    #[arg(long, env = "TROW_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    grpc_trust: GrpcTrustArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    audit: AuditArgs,
}

#[derive(Args)]
struct GcArgs {
    /// URL of the storage service's gRPC, e.g. http://127.0.0.1:7000 (in the one-process
    /// default, the address it prints as `trow storage: gRPC on ...`).
    #[arg(long, env = "TROW_STORAGE_URL")]
    storage: String,
    /// Delete nothing: list what would go, and how many bytes.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    grpc_trust: GrpcTrustArgs,
}

#[derive(Args)]
struct FsckArgs {
    /// The store to check.
    #[arg(long, env = "TROW_DATA_DIR")]
    data_dir: PathBuf,
}

/// Runs `trow fsck`: every problem on its own line, then a summary; returns the exit status.
async fn fsck(a: FsckArgs) -> i32 {
    match trow_storage::fsck::data_dir_in_use(&a.data_dir) {
        Ok(false) => {}
        Ok(true) => eprintln!(
            "fsck: warning: {} is in use by a running Trow; writes in progress may show as problems",
            a.data_dir.display()
        ),
        Err(e) => eprintln!("fsck: warning: cannot probe the data dir's lock: {e}"),
    }
    match trow_storage::fsck::check_dir(&a.data_dir, std::time::SystemTime::now()).await {
        Ok(report) => {
            for p in &report.problems {
                println!("{p}");
            }
            println!("{}", report.summary());
            if report.is_clean() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("fsck: cannot check {}: {e}", a.data_dir.display());
            2
        }
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let telemetry = trow::telemetry::init(service_name(&cli));
    let result = run(cli).await;
    telemetry.shutdown().await;
    if let Err(e) = result {
        // Said plainly: this is what an operator sees when Trow cannot start.
        eprintln!("trow: {e}");
        std::process::exit(1);
    }
}

/// The name a mode's traces carry (unless `OTEL_SERVICE_NAME` says otherwise); None: not traced.
fn service_name(cli: &Cli) -> Option<&'static str> {
    match cli.command {
        None => Some("trow"),
        Some(Command::Storage(_)) => Some("trow-storage"),
        Some(Command::Proxy(_)) => Some("trow-proxy"),
        Some(Command::Admission(_)) => Some("trow-admission"),
        Some(Command::Gateway(_)) => Some("trow-gateway"),
        Some(
            Command::Fsck(_)
            | Command::Gc(_)
            | Command::ContainerdConfig(_)
            | Command::WebhookCerts(_),
        ) => None,
    }
}

async fn run(cli: Cli) -> Result<(), trow::Error> {
    match cli.command {
        None => {
            let a = cli.all;
            let config = trow::config::FileConfig::load(a.config_file.as_deref())?;
            let webhooks = config.webhooks(a.hostname.clone())?;
            let proxy_policy = config.proxy_policy(a.hostname.as_deref())?;
            let server = a.server.config()?;
            let auth = a
                .auth
                .config(a.hostname.as_deref(), server.tls.is_some(), &config)
                .await?;
            trow::run_all(trow::AllInOne {
                bind: a.bind,
                storage_listen: a.storage_listen,
                proxy_listen: a.proxy_listen,
                admission_listen: a.admission_listen,
                webhooks_on_bind: !a.no_webhooks_on_bind,
                webhooks,
                data_dir: a.data_dir,
                hostname: a.hostname,
                limits: a.limits.limits(&config)?,
                server,
                proxy: config.proxy(),
                proxy_policy,
                auth,
                trust: a.grpc_trust.load()?,
                metrics_listen: a.metrics.metrics_listen,
                audit: a.audit.settings(),
            })
            .await
        }
        Some(Command::Storage(a)) => {
            let config = trow::config::FileConfig::load(a.config_file.as_deref())?;
            let trust = a.grpc_trust.load()?;
            let limits = a.limits.limits(&config)?;
            let metrics = a.metrics.metrics_listen;
            trow::run_storage(a.listen, &a.data_dir, limits, trust, metrics).await
        }
        Some(Command::Proxy(a)) => {
            let config = trow::config::FileConfig::load(a.config_file.as_deref())?;
            let policy = config.proxy_policy(a.hostname.as_deref())?;
            let trust = a.grpc_trust.load()?;
            let metrics = a.metrics.metrics_listen;
            trow::run_proxy(
                a.listen,
                &a.storage,
                &config.proxy(),
                policy,
                trust,
                metrics,
            )
            .await
        }
        Some(Command::Admission(a)) => {
            let config = trow::config::FileConfig::load(a.config_file.as_deref())?;
            let webhooks = config.webhooks(a.hostname)?;
            let trust = a.grpc_trust.load()?;
            let metrics = a.metrics.metrics_listen;
            trow::run_admission(a.listen, webhooks, a.proxy.as_deref(), trust, metrics).await
        }
        Some(Command::Gateway(a)) => {
            let file = trow::config::FileConfig::load(a.config_file.as_deref())?;
            let config = a.server.config()?;
            let auth = a
                .auth
                .config(a.hostname.as_deref(), config.tls.is_some(), &file)
                .await?;
            let admission = a.admission.as_deref();
            trow::run_gateway(trow::Gateway {
                bind: a.bind,
                storage_url: &a.storage,
                proxy_urls: &a.proxy,
                admission_url: admission,
                hostname: a.hostname,
                server: config,
                auth,
                trust: a.grpc_trust.load()?,
                metrics_listen: a.metrics.metrics_listen,
                audit: a.audit.settings(),
            })
            .await
        }
        Some(Command::Fsck(a)) => std::process::exit(fsck(a).await),
        Some(Command::ContainerdConfig(a)) => std::process::exit(trow::containerd::run(a).await),
        Some(Command::WebhookCerts(a)) => std::process::exit(trow::webhook_certs::run(a).await),
        Some(Command::Gc(a)) => {
            let mut out = std::io::stdout();
            let trust = a.grpc_trust.load()?;
            match trow::gc::run(&a.storage, a.dry_run, &trust, &mut out).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    eprintln!("trow gc: {e}");
                    std::process::exit(2);
                }
            }
        }
    }
}
