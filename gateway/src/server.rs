//! The gateway's HTTP server: our own accept loop instead of `axum::serve`, because a registry
//! faces clients that are slow, stalled or hostile, and `axum::serve` times nothing out and
//! accepts connections until the process runs out of file descriptors.
//!
//! What a client may hold, and for how long:
//! - at most [`ServerConfig::max_connections`] connections; the next one gets a fast `503` and is
//!   closed, so it costs no connection task and its fd is returned within a second;
//! - HTTP/1.1: the request head must be complete within `header_timeout`. hyper starts that
//!   timer as soon as a connection waits for a head (hyper 1.12, `proto/h1/conn.rs`
//!   `poll_read_head`; it re-arms it when a keep-alive connection goes idle), so it also bounds
//!   the wait for the *next* request on an idle keep-alive connection;
//! - any connection with no request in flight for `idle_timeout` is shut down gracefully. This
//!   is what closes idle HTTP/2 (h2c) connections, which have no header timer, and HTTP/1.1 ones
//!   when `idle_timeout < header_timeout`;
//! - a request body that delivers no bytes for `body_timeout` fails the request
//!   ([`crate::body::Stalling`]); an upload keeps the bytes received so far and stays resumable;
//! - a client that reads nothing of its response for `send_timeout` is disconnected
//!   ([`SendTimeout`]): a stalled reader would otherwise hold its connection, its storage stream
//!   and the megabytes buffered for it for as long as it stays connected;
//! - HTTP/2: keep-alive pings find dead peers, and streams per connection are capped.
//!
//! Shutdown is what `axum::serve` with graceful shutdown did: stop accepting, ask every
//! connection to finish its requests in flight (HTTP/1.1: close after the current response;
//! HTTP/2: GOAWAY), then wait for all of them. hyper-util's `GracefulShutdown` cannot be used
//! because a connection needs a second trigger (idle) and its `GracefulConnection` trait is
//! sealed; each connection task watches both itself, and the semaphore of connection permits
//! tells when every task has ended.

use axum::Router;
use axum::body::Body;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::body::Stalling;
use crate::error::OciCode;

/// Limits and timeouts of the HTTP server. The defaults suit a registry on a LAN or the internet;
/// each is a `trow` flag.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Open client connections at most. 1024 by default: an fd and a task each, well within the
    /// fd limit most systems give (the soft limit is raised to the hard one at start, as Go's
    /// runtime does); if the limit is lower, the cap is lowered to fit it (see
    /// [`connection_cap`]) rather than let `accept` fail with `EMFILE` for everyone.
    pub max_connections: usize,
    /// HTTP/1.1: time to send a complete request head, counted from the moment the connection
    /// waits for one (so also the keep-alive wait). 30 s, hyper's own default: a request head
    /// is a few hundred bytes, sent in one packet by every real client.
    pub header_timeout: Duration,
    /// Any connection without a request in flight for this long is closed. 60 s: long enough
    /// for clients to reuse connections between the steps of a pull or push (Go clients keep
    /// idle connections 90 s and retry a request that races a close).
    pub idle_timeout: Duration,
    /// A request body that delivers no bytes for this long, while the server is waiting for
    /// them, fails. 60 s, nginx's `client_body_timeout`: a live but congested link still
    /// delivers bytes within TCP's retransmission back-off (about a minute after 6 retries).
    pub body_timeout: Duration,
    /// A response the client takes no bytes of for this long is abandoned and the connection
    /// closed. 60 s, nginx's `send_timeout`, for the same reason as `body_timeout`; a slow
    /// reader that takes bytes at all is never cut off.
    pub send_timeout: Duration,
    /// HTTP/2: ping an idle peer this often...
    pub h2_keep_alive_interval: Duration,
    /// ...and close the connection if the ping is not answered within this.
    pub h2_keep_alive_timeout: Duration,
    /// HTTP/2: concurrent streams (requests) per connection. Parallel layer pulls use a few.
    pub h2_max_streams: u32,
    /// Serve HTTPS with this (see [`crate::tls`]); None: plain HTTP. The handshake must end
    /// within `header_timeout`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bytes of manifests and tags kept in memory (see [`crate::manifest_cache`]); 0: none.
    pub manifest_cache_size: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            h2_keep_alive_interval: Duration::from_secs(30),
            h2_keep_alive_timeout: Duration::from_secs(20),
            h2_max_streams: 100,
            tls: None,
            manifest_cache_size: crate::manifest_cache::DEFAULT_SIZE,
        }
    }
}

/// Why a duration flag was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {0:?}: give seconds (30) or a duration (30s, 2m, 500ms)")]
pub struct InvalidDuration(String);

/// Parses a flag value: plain seconds (`30`) or a humantime duration (`30s`, `2m`, `1m 30s`).
pub fn parse_duration(s: &str) -> Result<Duration, InvalidDuration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|_| InvalidDuration(s.to_string()))
}

/// File descriptors a Trow process needs besides client connections: stdio, epoll, listeners,
/// storage's connections and, in one process, the files of blobs being read or written. About
/// 14 are open when idle (measured), the rest is headroom.
const RESERVED_FDS: u64 = 32;

/// A served connection may cost two fds: its socket and, in one process, the blob file its
/// request streams from or to.
const FDS_PER_CONNECTION: u64 = 2;

/// Connections refused with a 503 that are given a moment to read it (see [`refuse`]); beyond
/// that, refused connections are closed at once. Their fds are part of the budget.
const REFUSING: usize = 8;

/// How long an idle connection told to close may take to do so (an h2 peer that never answers
/// the GOAWAY's ping) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The connection cap to use: `configured`, lowered to what the fd limit allows.
pub fn connection_cap(configured: usize) -> usize {
    let Some(limit) = raise_fd_limit() else {
        return configured;
    };
    let spare = limit.saturating_sub(RESERVED_FDS + REFUSING as u64);
    let fit = (spare / FDS_PER_CONNECTION).max(1);
    let fit = usize::try_from(fit).unwrap_or(usize::MAX);
    if fit < configured {
        tracing::warn!(
            configured,
            fd_limit = limit,
            cap = fit,
            "the open-files limit is too low for --max-connections; capping connections lower"
        );
        fit
    } else {
        configured
    }
}

/// Raises the soft open-files limit to the hard one and returns it. The common soft default of
/// 1024 is a relic of `select(2)`, which tokio does not use.
fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // At least one; at most what a semaphore (and `acquire_many`) can count.
    let cap = connection_cap(config.max_connections).clamp(1, u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(cap));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let busy = Arc::new(busy_response());
    let builder = Arc::new(builder(&config));
    let config = Arc::new(config);
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(connection(
                    stream,
                    peer,
                    app.clone(),
                    builder.clone(),
                    config.clone(),
                    stopped.clone(),
                    permit,
                ));
            }
            Err(_) => refuse(stream, &refusing, &busy),
        }
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection task holds a permit until it ends.
    let _ = permits
        .acquire_many(u32::try_from(cap).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

fn builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.h2_keep_alive_interval)
        .keep_alive_timeout(config.h2_keep_alive_timeout)
        .max_concurrent_streams(config.h2_max_streams);
    b
}

/// A failed `accept`: the peer gave up (try the next one at once), or the process is out of
/// fds or memory (wait a little for connections to end, rather than spin).
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The answer to a connection over the cap: plain HTTP/1.1 written straight to the socket.
fn busy_response() -> Vec<u8> {
    let body = serde_json::json!({"errors": [{
        "code": OciCode::Toomanyrequests.as_str_name(),
        "message": "too many open connections; retry later",
        "detail": null,
    }]})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection over the cap with a 503 and closes it. A fresh socket's send buffer is
/// empty, so the write does not block. If the client already sent its request, closing with
/// unread bytes would send a reset that can destroy the 503 before the client reads it; so a
/// few refused connections get a second to send their request, which is read and dropped.
fn refuse(stream: TcpStream, refusing: &Arc<Semaphore>, busy: &Arc<Vec<u8>>) {
    let _ = stream.try_write(busy);
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    });
}

/// Serves one connection until it ends, is idle too long, or the server stops.
async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    config: Arc<ServerConfig>,
    stopped: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    // Below TLS, so a client that stops reading is timed out on the socket's own writes.
    let io = SendTimeout::new(stream, config.send_timeout);
    let Some(tls) = &config.tls else {
        return serve_io(TokioIo::new(io), peer, app, &builder, &config, stopped).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
    match tokio::time::timeout(config.header_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => serve_io(TokioIo::new(tls), peer, app, &builder, &config, stopped).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// HTTP over one connection's byte stream (plain or TLS).
async fn serve_io<I>(
    io: I,
    peer: std::net::SocketAddr,
    app: Router,
    builder: &auto::Builder<TokioExecutor>,
    config: &ServerConfig,
    mut stopped: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        let body_timeout = config.body_timeout;
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = activity.begin();
            let mut req = req.map(|b| Body::new(Stalling::new(b, body_timeout)));
            // Who is at the other end, for the audit log.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await?;
                Ok::<_, Infallible>(resp.map(|body| {
                    Body::new(Tracked {
                        inner: body,
                        _in_flight: in_flight,
                    })
                }))
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = tokio::select! {
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stopped.wait_for(|s| *s) => false,
        _ = activity.idle(config.idle_timeout) => true,
    };
    conn.as_mut().graceful_shutdown();
    if idle {
        let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, conn).await;
    } else {
        let _ = conn.await;
    }
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: std::sync::Mutex<Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// How long the connection has had no request in flight; `None` while it has one.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.idle_since.lock().expect("idle clock").elapsed())
    }

    /// Resolves once the connection has had no request in flight for `timeout`. Wakes at most
    /// once per `timeout` while requests are in flight.
    async fn idle(&self, timeout: Duration) {
        loop {
            let wait = match self.idle_for() {
                Some(d) if d >= timeout => return,
                Some(d) => timeout - d,
                None => timeout,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request in flight, from its head until its response body is sent or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().expect("idle clock");
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is sent or dropped:
/// a blob download is not idle however long it takes.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client socket whose writes fail with `TimedOut` once the client has taken no bytes for
/// `timeout`: the kernel's send buffer stayed full, so the peer is not reading. The timer runs
/// only while a write waits; it is polled with the write, so its expiry wakes the connection
/// even though the socket never becomes writable again.
pub struct SendTimeout<IO> {
    io: IO,
    timeout: Duration,
    /// Armed when a write finds the socket full, disarmed when a write goes through.
    deadline: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<IO> SendTimeout<IO> {
    pub fn new(io: IO, timeout: Duration) -> SendTimeout<IO> {
        SendTimeout {
            io,
            timeout,
            deadline: None,
            waiting: false,
        }
    }

    /// Called when a write is pending: arms the timer, or fails once it has expired.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let at = Instant::now() + self.timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if !self.waiting {
            deadline.as_mut().reset(at);
            self.waiting = true;
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {:?}", self.timeout),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendTimeout<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx),
            done => {
                self.waiting = false;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx),
            done => {
                self.waiting = false;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_humantime() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
    }
}
