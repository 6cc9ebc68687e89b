//! The HTTP server loop: hyper's HTTP/1 connection driver under limits a
//! careless or hostile client cannot talk its way around.
//!
//! - At most `max_connections` connections are served at once (a semaphore
//!   taken before `accept`, so the surplus waits in the listen backlog
//!   instead of costing memory here).
//! - A request head must arrive within `header_read_timeout` of its first
//!   byte, and a keep-alive connection with no request in flight is closed
//!   after `idle_timeout`. hyper's own header timer starts when a connection
//!   becomes idle, so it cannot tell the two apart; a small watchdog per
//!   connection does, from what the socket reads and writes and whether a
//!   request is being handled.
//! - Whole requests are bounded by the router's request timeout, so a body
//!   trickled byte by byte does not hold a connection either.
//! - Shutdown stops accepting, lets requests in flight finish and closes
//!   idle connections at once.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::config::HttpSettings;

/// Serves `router` on `listener` until `shutdown` completes, then waits for
/// the requests in flight.
///
/// # Errors
/// Never for a single connection's failure; only if the listener is gone.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // Out of file descriptors or a connection reset before it
                // was accepted: wait a little and go on, never spin or exit.
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            stop_rx.clone(),
            permit,
        ));
        while connections.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// What a connection has been doing, for its watchdog.
#[derive(Debug)]
struct Activity {
    start: Instant,
    // Nanoseconds since `start` of the last write (an answer going out).
    last_write: AtomicU64,
    // Nanoseconds since `start` of the first byte read since that write, or
    // u64::MAX while nothing has been read since.
    reading_since: AtomicU64,
    in_flight: AtomicUsize,
}

const NOT_READING: u64 = u64::MAX;

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_write: AtomicU64::new(0),
            reading_since: AtomicU64::new(NOT_READING),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn read(&self) {
        let now = self.now();
        let _ = self.reading_since.compare_exchange(
            NOT_READING,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn wrote(&self) {
        self.last_write.store(self.now(), Ordering::Relaxed);
        self.reading_since.store(NOT_READING, Ordering::Relaxed);
    }

    /// Why the connection should be dropped now, if it should.
    fn overdue(&self, limits: &HttpSettings) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // The router's request timeout governs a request being handled.
            return None;
        }
        let now = self.now();
        let reading = self.reading_since.load(Ordering::Relaxed);
        if reading != NOT_READING {
            let waited = Duration::from_nanos(now.saturating_sub(reading));
            return (waited > limits.header_read_timeout).then_some("request head too slow");
        }
        let idle =
            Duration::from_nanos(now.saturating_sub(self.last_write.load(Ordering::Relaxed)));
        (idle > limits.idle_timeout).then_some("idle")
    }
}

/// A socket that tells its [`Activity`] what it reads and writes.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request as in flight until its answer is ready.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Arc<HttpSettings>,
    mut stop: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let for_requests = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let busy = InFlight::new(&for_requests);
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await;
            drop(busy);
            resp
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    // Checked often enough that a limit is enforced within a quarter of it.
    let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(25), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
            () = tokio::time::sleep(tick) => {
                if let Some(why) = activity.overdue(&limits) {
                    tracing::debug!(peer = %peer, why, "closing connection");
                    // Dropping the connection closes the socket: nothing is
                    // in flight on it.
                    return;
                }
            }
        }
    }
}
