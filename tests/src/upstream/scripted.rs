//! A scripted HTTP/1.1 server: answers each request with what a test's handler returns, and
//! records every request like the counting front. For upstreams no real registry can play: one
//! that lies about a blob's bytes, one that fails on cue, a listener that must never be reached,
//! one that answers late, trickles its bytes or sends hundreds of MiB (written as they go,
//! never held whole by the test).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::background::{Background, bind};
use super::http1::{RequestHead, copy_body, read_head};
use super::record::{Request, Requests};

/// An answer: status, headers and body. `Content-Length` is added; a `HEAD` gets no body.
/// The body is `body`, then `padding`, then `tail`.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `count` times `byte`, after `body`: a large body the test need not hold.
    pub padding: Option<(u8, u64)>,
    pub tail: Vec<u8>,
    /// Waits this long before sending anything.
    pub delay: Option<Duration>,
    /// Sends the body one byte per this interval (the head at once).
    pub pace: Option<Duration>,
    /// The `Content-Length` announced instead of the body's length (see [`Reply::announce`]).
    pub announced: Option<u64>,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            padding: None,
            tail: Vec::new(),
            delay: None,
            pace: None,
            announced: None,
        }
    }

    /// 200 with `body` of `content_type`.
    pub fn ok(content_type: &str, body: Vec<u8>) -> Reply {
        Reply::new(200)
            .header("Content-Type", content_type)
            .body(body)
    }

    /// `status` with an OCI error body of `code`.
    pub fn oci_error(status: u16, code: &str) -> Reply {
        let body = serde_json::json!({"errors": [{"code": code, "message": code}]});
        Reply::ok("application/json", body.to_string().into_bytes()).status(status)
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Reply {
        self.body = body;
        self
    }

    /// `count` bytes `byte` after the body, then `tail`.
    pub fn padded(mut self, byte: u8, count: u64, tail: &[u8]) -> Reply {
        self.padding = Some((byte, count));
        self.tail = tail.to_vec();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = Some(delay);
        self
    }

    /// One body byte per `interval`.
    pub fn paced(mut self, interval: Duration) -> Reply {
        self.pace = Some(interval);
        self
    }

    fn len(&self) -> u64 {
        let pad = self.padding.map(|(_, n)| n).unwrap_or(0);
        self.body.len() as u64 + pad + self.tail.len() as u64
    }

    /// Announces `Content-Length: length` whatever the body: an upstream that announces more
    /// than it sends breaks the connection off after the body, as one whose transfer died would.
    pub fn announce(mut self, length: u64) -> Reply {
        self.announced = Some(length);
        self
    }

    /// The `Content-Length` sent.
    fn length(&self) -> u64 {
        self.announced.unwrap_or_else(|| self.len())
    }

    /// The body ends before the announced length: the connection is closed after it.
    fn breaks_off(&self) -> bool {
        self.length() > self.len()
    }

    fn head_bytes(&self) -> Vec<u8> {
        let mut s = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.length()));
        s.into_bytes()
    }

    /// Writes the body as the reply says: at once, or paced; the padding in 64 KiB pieces.
    async fn write_body<W: AsyncWriteExt + Unpin>(&self, w: &mut W) -> std::io::Result<()> {
        write_paced(w, &self.body, self.pace).await?;
        if let Some((byte, mut left)) = self.padding {
            let piece = vec![byte; 64 << 10];
            while left > 0 {
                let n = left.min(piece.len() as u64) as usize;
                write_paced(w, &piece[..n], self.pace).await?;
                left -= n as u64;
            }
        }
        write_paced(w, &self.tail, self.pace).await?;
        w.flush().await
    }
}

async fn write_paced<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    bytes: &[u8],
    pace: Option<Duration>,
) -> std::io::Result<()> {
    let Some(every) = pace else {
        return w.write_all(bytes).await;
    };
    for b in bytes {
        w.write_all(&[*b]).await?;
        w.flush().await?;
        tokio::time::sleep(every).await;
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Status",
    }
}

type Handler = dyn Fn(&RequestHead, &Request) -> Reply + Send + Sync;

/// A scripted server on its own thread; stopped on drop.
pub struct Scripted {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    pub requests: Requests,
    open: Arc<AtomicUsize>,
    bg: Background,
}

impl Scripted {
    /// Listens on `listen` (`IP:PORT`; port 0 for any) and answers with `handler`.
    pub fn start(
        listen: &str,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        Scripted::start_with_heads(listen, move |_, r| handler(r))
    }

    /// As [`Scripted::start`], for handlers that need the request's headers themselves (a
    /// credential's value, a query to parse as sent): they get the head as it arrived too.
    pub fn start_with_heads(
        listen: &str,
        handler: impl Fn(&RequestHead, &Request) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        let listener = bind(listen);
        let addr = listener.local_addr().expect("scripted server address");
        let requests = Requests::default();
        let rec = requests.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        let open = Arc::new(AtomicUsize::new(0));
        let count = open.clone();
        let bg = Background::spawn(&format!("scripted-{addr}"), move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let conn = rec.accepted();
                let open = Open::new(count.clone());
                tokio::spawn(serve(s, rec.clone(), handler.clone(), conn, open));
            }
        });
        Scripted {
            addr,
            requests,
            open,
            bg,
        }
    }

    /// Connections open now: accepted, and neither closed by the client nor failed on a write
    /// (a paced reply notices a client that left at its next byte).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// A listener that must never be reached: it answers 404 to anything, and its
    /// [`Requests::connections`] says whether anyone connected (even without sending a request,
    /// e.g. a TLS handshake).
    pub fn sentinel(listen: &str) -> Scripted {
        Scripted::start(listen, |_| Reply::oci_error(404, "NAME_UNKNOWN"))
    }

    /// `IP:PORT` it listens on.
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Closes the listener and every connection.
    pub fn stop(&mut self) {
        self.bg.stop();
    }
}

/// Counts one open connection while it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: Arc<AtomicUsize>) -> Open {
        count.fetch_add(1, Ordering::SeqCst);
        Open(count)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(s: TcpStream, rec: Requests, handler: Arc<Handler>, conn: usize, _open: Open) {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    while let Ok(Some(head)) = read_head(&mut r).await {
        let req = rec.record(&head, conn);
        if copy_body(&head, &mut r, &mut tokio::io::sink())
            .await
            .is_err()
        {
            return;
        }
        let reply = handler(&head, &req);
        if let Some(d) = reply.delay {
            tokio::time::sleep(d).await;
        }
        if w.write_all(&reply.head_bytes()).await.is_err() {
            return;
        }
        let body = head.method != "HEAD";
        if body && reply.write_body(&mut w).await.is_err() {
            return;
        }
        if head.wants_close() || (body && reply.breaks_off()) {
            return;
        }
    }
}
