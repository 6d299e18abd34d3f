//! A server task on a thread of its own with its own single-threaded tokio runtime.
//!
//! Tests may be plain `#[test]`s or `#[tokio::test]`s of either flavor, and may block their own
//! runtime's threads on a `skopeo` run; a fake upstream must keep serving meanwhile, so it never
//! shares the test's runtime. Stopping it drops the runtime, which drops every connection task:
//! all its sockets close at once, as when a process dies, and the port is free again on return.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub(crate) struct Background {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs the future `make()` returns until it ends or [`Background::stop`].
    pub(crate) fn spawn<F, Fut>(name: &str, make: F) -> Background
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a runtime for a test server");
                rt.block_on(async move {
                    tokio::select! {
                        _ = make() => {}
                        _ = rx => {}
                    }
                });
                // Dropping the runtime drops every task it spawned, closing their sockets.
                drop(rt);
            })
            .expect("spawn a test server thread");
        Background {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stops the server and waits until its sockets are closed. Idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr` (`IP:PORT`, port 0 for any free one) now, so the address is taken before the
/// constructor returns; the listener moves into the server's runtime later.
pub(crate) fn bind(addr: &str) -> std::net::TcpListener {
    let l = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    l.set_nonblocking(true).expect("non-blocking listener");
    l
}
