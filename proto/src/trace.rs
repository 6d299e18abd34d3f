//! The W3C trace context across Trow's gRPC hops, so that one pull through gateway, proxy and
//! storage is one trace: every client stamps the current span's context on its calls as
//! `traceparent` metadata ([`inject_current`], in every client channel's interceptor), every server makes it the parent of its request span
//! ([`ServerLayer`]).
//!
//! Both are always in place, in every topology (the one-process default's in-memory pipes
//! too), so that turning traces on changes no wiring; until [`enable`] is called (by the
//! `trow` binary, when the `OTEL_*` variables ask for traces) each costs a call one relaxed
//! atomic load (and tonic's interceptor wrapper, which takes the request's head apart and puts
//! it back): no span, no header, no allocation.

use futures::future::{BoxFuture, Either};
use opentelemetry::propagation::Injector;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ON: AtomicBool = AtomicBool::new(false);

/// Turns propagation and the gRPC server spans on, for the life of the process. Called once
/// by whoever installs the OpenTelemetry layer and the global text map propagator.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether traces are exported: callers skip building spans nobody would see.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The client side: writes the current span's context into a call's metadata, when traces are
/// on. Called by the interceptor every Trow client channel has (`crate::trust::Credentials`).
pub fn inject_current(metadata: &mut MetadataMap) {
    if enabled() {
        inject(&tracing::Span::current().context(), metadata);
    }
}

/// Writes `cx` into `metadata` with the global propagator (W3C trace context).
pub fn inject(cx: &opentelemetry::Context, metadata: &mut MetadataMap) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut MetadataInjector(metadata))
    });
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The trace context a request's headers carry (`traceparent`, `tracestate`); an empty context
/// (a new trace) when they carry none or a malformed one.
pub fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    })
}

/// The server side: a span per gRPC call (`rpc.service`, `rpc.method`, `rpc.grpc.status_code`),
/// child of the caller's context. Health checks and reflection get none: probes every few
/// seconds would drown the traces that matter.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerLayer;

impl<S> tower::Layer<S> for ServerLayer {
    type Service = ServerSpan<S>;

    fn layer(&self, inner: S) -> ServerSpan<S> {
        ServerSpan { inner }
    }
}

/// See [`ServerLayer`].
#[derive(Clone, Debug)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for ServerSpan<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !enabled() {
            return Either::Left(self.inner.call(req));
        }
        let path = req.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        if service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.") {
            return Either::Left(self.inner.call(req));
        }
        let span = tracing::info_span!(
            target: "trow::grpc",
            "grpc.server",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        // An error here means no OpenTelemetry layer sees the span: nothing to parent.
        let _ = span.set_parent(extract(req.headers()));
        let call = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Either::Right(Box::pin(
            async move {
                let res = call.await;
                // A failure before any message is a trailers-only answer: its status is in the
                // headers. A streamed answer's status comes in trailers, after this span.
                let code = res.as_ref().ok().and_then(|r| {
                    r.headers()
                        .get("grpc-status")?
                        .to_str()
                        .ok()?
                        .parse::<i64>()
                        .ok()
                });
                if let Some(code) = code {
                    let span = tracing::Span::current();
                    span.record("rpc.grpc.status_code", code);
                    if code != 0 {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                res
            }
            .instrument(span),
        ))
    }
}
