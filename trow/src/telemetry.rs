//! Logs always; traces over OTLP when the standard `OTEL_*` variables ask for them.
//!
//! Traces are off by default and then cost nothing: the subscriber is the plain log formatter
//! it always was, no OpenTelemetry layer is installed, and the trace-context hooks on every
//! gRPC client and server ([`trow_proto::trace`]) stay inert. They are on when
//! `OTEL_TRACES_EXPORTER=otlp`, or when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_TRACES_EXPORTER` is not `none`. The exporter
//! itself reads the endpoint, headers and timeout variables (compression is not built in: asking
//! for it leaves traces off, said in the log), the SDK reads
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*`.
//!
//! Spans go out in batches from a thread of the SDK's; [`Telemetry::shutdown`] sends what is
//! left when the process stops.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How spans travel to the collector (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`, the default (port 4318, `/v1/traces`).
    HttpProtobuf,
    /// `grpc` (port 4317).
    Grpc,
}

/// What the environment asks for: `Ok(None)` no traces, `Ok(Some(_))` OTLP traces over that
/// protocol, `Err` a setting Trow cannot honour (traces stay off and the reason is logged).
pub fn wanted(env: impl Fn(&str) -> Option<String>) -> Result<Option<Protocol>, String> {
    let var = |k: &str| {
        env(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").map(|v| v.to_ascii_lowercase()) {
        Some(e) if e == "none" => return Ok(None),
        Some(e) if e == "otlp" => {}
        Some(e) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={e} is not supported (otlp or none)"
            ));
        }
        None => {
            if var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
                && var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            {
                return Ok(None);
            }
        }
    }
    let protocol =
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match protocol.as_deref() {
        None | Some("http/protobuf") => Ok(Some(Protocol::HttpProtobuf)),
        Some("grpc") => Ok(Some(Protocol::Grpc)),
        Some(p) => Err(format!(
            "OTLP protocol {p} is not supported (http/protobuf or grpc)"
        )),
    }
}

/// The tracer provider to flush at shutdown; none when traces are off.
#[must_use = "call shutdown() when the process stops, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The log filter: `RUST_LOG`, or Trow's default; never above `error` for kube's client,
/// whatever `RUST_LOG` says: it logs whole API responses at `warn` (one it cannot parse) and
/// `trace`, and those carry Secrets' keys (`trow webhook-certs`) and TokenReviews' tokens (the
/// gateway).
/// Colour codes only for a person at a terminal: in a pod's or a file's log they are noise for
/// every reader and parser, and formatting them cost the audit log's one line per pull.
fn colours() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn log_filter() -> tracing_subscriber::EnvFilter {
    filter_of(std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV).ok())
}

fn filter_of(rust_log: Option<String>) -> tracing_subscriber::EnvFilter {
    rust_log
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| "info,tower_http=warn".into())
        .add_directive(QUIET_KUBE_CLIENT.parse().expect("a valid directive"))
}

/// The directive [`log_filter`] always adds.
const QUIET_KUBE_CLIENT: &str = "kube_client=error";

/// Installs the global subscriber: logs, plus traces when the environment asks for them.
/// `service` names this process in traces unless `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) does; None: a command that is never traced (fsck, gc).
/// Call it inside the tokio runtime: the gRPC exporter's channel lives there.
pub fn init(service: Option<&'static str>) -> Telemetry {
    let built = match service.map(|name| (name, wanted(|k| std::env::var(k).ok()))) {
        None | Some((_, Ok(None))) => Ok(None),
        Some((_, Err(e))) => Err(e),
        Some((name, Ok(Some(protocol)))) => provider(name, protocol)
            .map(Some)
            .map_err(|e| format!("the OTLP exporter cannot be built: {e}")),
    };
    let provider = match built {
        Ok(Some(provider)) => provider,
        off => {
            // Exactly the subscriber Trow had before traces: nothing else to pay for.
            tracing_subscriber::fmt()
                .with_env_filter(log_filter())
                .with_ansi(colours())
                .init();
            if let Err(e) = off {
                tracing::error!("traces are off: {e}");
            }
            return Telemetry { provider: None };
        }
    };
    // Trow's own inner spans are DEBUG so that they cost nothing in logs; traces take them.
    // Events (which become span events) stay at INFO: DEBUG ones would be built for nothing.
    let spans = tracing_subscriber::filter::filter_fn(|m| {
        let most = if m.is_span() && m.target().starts_with("trow") {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        };
        *m.level() <= most
    });
    // Busy/idle times would read the clock at every poll of every span, and source locations
    // add attributes the span names make needless.
    let traces = tracing_opentelemetry::layer()
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
        .with_tracer(provider.tracer("trow"))
        .with_filter(spans);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(colours())
                .with_filter(log_filter()),
        )
        .with(traces)
        .init();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    trow_proto::trace::enable();
    tracing::info!("traces are on: exporting spans over OTLP");
    Telemetry {
        provider: Some(provider),
    }
}

/// The provider exporting in batches over `protocol`, naming the service `service` unless the
/// environment names it.
fn provider(
    service: &'static str,
    protocol: Protocol,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match protocol {
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?,
        Protocol::Grpc => builder
            .with_tonic()
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .build()?,
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service))
        .build())
}

/// The SDK's resource (from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`), with
/// `service` as the name when those give none.
fn resource(service: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|n| n.as_str() != "unknown_service");
    if named {
        detected
    } else {
        Resource::builder().with_service_name(service).build()
    }
}

impl Telemetry {
    /// Sends the spans still queued and stops the exporter; waits at most the exporter's
    /// timeout. Runs off the async threads: the SDK blocks while it flushes.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "flushing the last spans failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_client_never_logs_above_error() {
        use tracing::Level;
        use tracing_subscriber::layer::SubscriberExt;
        for rust_log in [
            None,
            Some("trace"),
            Some("kube_client=trace,info"),
            Some("debug,kube=trace"),
        ] {
            let subscriber =
                tracing_subscriber::registry().with(filter_of(rust_log.map(str::to_string)));
            tracing::subscriber::with_default(subscriber, || {
                assert!(
                    !tracing::enabled!(target: "kube_client::client", Level::WARN),
                    "{rust_log:?}: kube_client's warn (whole responses) is shown"
                );
                assert!(tracing::enabled!(target: "kube_client::client", Level::ERROR));
                assert!(
                    tracing::enabled!(target: "trow_gateway::auth", Level::INFO),
                    "{rust_log:?}: the rest of the log is gone"
                );
            });
        }
    }

    fn with(vars: &[(&str, &str)]) -> Result<Option<Protocol>, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wanted(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn off_unless_asked() {
        assert_eq!(with(&[]), Ok(None));
        assert_eq!(with(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]), Ok(None));
    }

    #[test]
    fn on_by_endpoint_or_exporter() {
        let http = Ok(Some(Protocol::HttpProtobuf));
        assert_eq!(
            with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]),
            http
        );
        assert_eq!(
            with(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )]),
            http
        );
        assert_eq!(with(&[("OTEL_TRACES_EXPORTER", "otlp")]), http);
        assert_eq!(
            with(&[
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            ]),
            Ok(Some(Protocol::Grpc))
        );
        assert_eq!(
            with(&[
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
            ]),
            http
        );
    }

    #[test]
    fn none_and_disabled_win() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(
            with(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(None)
        );
        assert_eq!(with(&[endpoint, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
    }

    #[test]
    fn unsupported_settings_are_errors() {
        assert!(with(&[("OTEL_TRACES_EXPORTER", "zipkin")]).is_err());
        assert!(
            with(&[
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            ])
            .is_err()
        );
    }
}
