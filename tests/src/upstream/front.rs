//! The counting front: a tiny HTTP/1.1 reverse proxy in front of a real registry that records
//! every request it forwards.
//!
//! Each accepted connection gets its own connection to the backend. Client→backend bytes are
//! read through the [`http1`](super::http1) framing, so every request head on a keep-alive
//! connection is recorded exactly once, then forwarded unchanged; backend→client bytes are copied
//! as they come (optionally throttled). Nothing is rewritten, so `Host`, `Authorization` and
//! `WWW-Authenticate` pass through as sent.
//!
//! Modes, for fault tests: forwarding (the default); hanging, where every request head is
//! recorded and then never forwarded or answered (a black hole, on open and new connections
//! alike); and stopped, where the listener is closed and connections are refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use super::background::{Background, bind};
use super::http1::{copy_body, read_head};
use super::record::Requests;

struct State {
    backend: SocketAddr,
    requests: Requests,
    hang: AtomicBool,
    /// Bytes per second, backend→client; 0 is unlimited.
    throttle: AtomicU64,
}

/// A counting reverse proxy on its own thread; stopped on drop.
pub struct Front {
    /// Where it listens.
    pub addr: SocketAddr,
    pub requests: Requests,
    state: Arc<State>,
    bg: Background,
}

impl Front {
    /// Listens on `listen` (`IP:PORT`; port 0 for any) and forwards to `backend`.
    pub fn start(listen: &str, backend: SocketAddr) -> Front {
        let listener = bind(listen);
        let addr = listener.local_addr().expect("front address");
        let state = Arc::new(State {
            backend,
            requests: Requests::default(),
            hang: AtomicBool::new(false),
            throttle: AtomicU64::new(0),
        });
        let st = state.clone();
        let bg = Background::spawn(&format!("front-{addr}"), move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let conn = st.requests.accepted();
                tokio::spawn(serve(client, st.clone(), conn));
            }
        });
        Front {
            addr,
            requests: state.requests.clone(),
            state,
            bg,
        }
    }

    /// From now on, requests are recorded and then held unanswered (connections stay open).
    pub fn hang(&self) {
        self.state.hang.store(true, Ordering::SeqCst);
    }

    /// Limits backend→client bytes to `bytes_per_sec` on each connection (0: unlimited).
    pub fn set_throttle(&self, bytes_per_sec: u64) {
        self.state.throttle.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Closes the listener and every connection; later connections are refused.
    pub fn stop(&mut self) {
        self.bg.stop();
    }
}

async fn serve(client: TcpStream, st: Arc<State>, conn: usize) {
    let Ok(backend) = TcpStream::connect(st.backend).await else {
        return; // the client sees its connection closed
    };
    let (cr, mut cw) = client.into_split();
    let (br, mut bw) = backend.into_split();
    let mut cr = BufReader::new(cr);
    let up = async {
        while let Ok(Some(head)) = read_head(&mut cr).await {
            st.requests.record(&head, conn);
            if st.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if bw.write_all(&head.raw).await.is_err()
                || copy_body(&head, &mut cr, &mut bw).await.is_err()
            {
                break;
            }
        }
        let _ = bw.shutdown().await;
    };
    let down = async {
        copy_throttled(br, &mut cw, &st.throttle).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

async fn copy_throttled<W: AsyncWrite + Unpin>(
    mut from: OwnedReadHalf,
    to: &mut W,
    throttle: &AtomicU64,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let bps = throttle.load(Ordering::SeqCst);
        // Small writes while throttled, so the rate is smooth rather than bursts per second.
        let max = if bps > 0 { 16 << 10 } else { buf.len() };
        let n = match from.read(&mut buf[..max]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if bps > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bps as f64)).await;
        }
    }
}
