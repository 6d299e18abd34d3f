//! An OTLP trace receiver for the trace tests, on a loopback address the test picks: what a
//! collector would get from Trow, decoded into flat [`Span`]s with their service's name.
//!
//! It speaks both transports Trow exports over: OTLP/HTTP with protobuf bodies
//! (`POST /v1/traces`, [`Receiver::http`]) and OTLP/gRPC ([`Receiver::grpc`]), with the message
//! types and gRPC service of `opentelemetry-proto`, the collector's own contract. It also counts
//! every request it gets, decodable or not, so that a test can check nothing was sent at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::io::{AsyncWriteExt, BufReader};

use crate::upstream::background::Background;
use crate::upstream::http1;

/// One span as received.
#[derive(Clone, Debug)]
pub struct Span {
    /// The `service.name` of the resource it came with.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's `SpanKind`: 2 server, 3 client.
    pub kind: i32,
    /// Attributes with string, integer and boolean values, as text.
    pub attributes: Vec<(String, String)>,
}

impl Span {
    /// The attribute `key`'s value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<Span>>,
    requests: AtomicUsize,
}

impl Received {
    fn add(&self, req: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("spans lock");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                spans.push(Span {
                    service: service.clone(),
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attributes: s
                        .attributes
                        .iter()
                        .filter_map(|kv| {
                            Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)?))
                        })
                        .collect(),
                });
            }
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// A running receiver; stopped when dropped.
pub struct Receiver {
    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to: `http://IP:PORT`.
    pub endpoint: String,
    received: Arc<Received>,
    _bg: Background,
}

impl Receiver {
    /// OTLP/HTTP with protobuf bodies on `ip` (any free port).
    pub fn http(ip: &str) -> Receiver {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the OTLP receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let received = Arc::new(Received::default());
        let rec = received.clone();
        let bg = Background::spawn(&format!("otlp-http-{endpoint}"), move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(serve_http(s, rec.clone()));
            }
        });
        Receiver {
            endpoint,
            received,
            _bg: bg,
        }
    }

    /// OTLP/gRPC on `ip` (any free port).
    pub fn grpc(ip: &str) -> Receiver {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the OTLP receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let received = Arc::new(Received::default());
        let rec = received.clone();
        let bg = Background::spawn(&format!("otlp-grpc-{endpoint}"), move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Grpc(rec)))
                .serve_with_incoming(incoming)
                .await;
        });
        Receiver {
            endpoint,
            received,
            _bg: bg,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received.spans.lock().expect("spans lock").clone()
    }

    /// How many export requests arrived (decodable or not).
    pub fn requests(&self) -> usize {
        self.received.requests.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` until `done` holds of the spans received; returns them either way.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) || start.elapsed() > timeout {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One OTLP/HTTP connection: each `POST /v1/traces` body decoded, answered with an empty
/// `ExportTraceServiceResponse`.
async fn serve_http(s: tokio::net::TcpStream, rec: Arc<Received>) {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    while let Ok(Some(head)) = http1::read_head(&mut r).await {
        let mut body = Vec::new();
        if http1::copy_body(&head, &mut r, &mut body).await.is_err() {
            return;
        }
        rec.requests.fetch_add(1, Ordering::SeqCst);
        let status = match ExportTraceServiceRequest::decode(&body[..]) {
            Ok(req) if head.method == "POST" && head.path() == "/v1/traces" => {
                rec.add(req);
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if w.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

struct Grpc(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        self.0.add(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}
