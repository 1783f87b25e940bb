//! Accepting HTTP connections: the connection cap, load shedding, the header and idle timeouts,
//! and graceful shutdown.
//!
//! `axum::serve` turns off hyper's header-read timeout and accepts without limit, so a client
//! that opens connections and sends nothing, or sends its headers a byte at a time, holds them
//! for ever. Here each connection is served by hyper's HTTP/1 server, with two timeouts:
//!
//! - idle: hyper's `header_read_timeout`, whose clock starts when hyper waits for a request (on
//!   a new connection, or a kept-alive one after its last response), closes a connection that
//!   sends no complete request head within `idle_timeout`;
//! - header: once the first byte of a request arrives, its whole head must follow within
//!   `header_timeout` ([`HeadClock`], checked every [`WATCH_EVERY`]), so a slowloris client is
//!   dropped sooner than an idle one, and a kept-alive client can idle longer than a slow one
//!   may trickle;
//! - body: a request body that sends nothing for `idle_timeout` is cut ([`StallTimeout`]), so a
//!   client cannot hold a connection (and an upload's resources) by stalling mid-body.
//!
//! At most `max_connections` are served at once; one over the cap gets `503 SlowDown` with
//! `Retry-After` and is closed, without its request being read.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How many shed connections may be answered at once; past that they are closed at once.
const SHED_CONCURRENCY: usize = 64;
/// How long answering a shed connection may take.
const SHED_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a connection's header clock is checked.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The body of the answer to a connection over the cap.
const BUSY_BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Too many connections; retry later</Message></Error>";

/// The whole answer to a connection over the cap.
fn busy() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BUSY_BODY}",
        BUSY_BODY.len()
    )
}

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are shed with 503.
    pub max_connections: usize,
    /// How long a request's head may take from its first byte to its last.
    pub header_timeout: Duration,
    /// How long a connection may wait, with no request in progress, for the next request head;
    /// also how long a request body may stall.
    pub idle_timeout: Duration,
}

/// Serves `app` on `listener` until `stop`, then waits for the open connections to finish
/// their requests (the caller bounds that wait).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shedding = Arc::new(Semaphore::new(SHED_CONCURRENCY));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // pause rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Small responses (range reads, probes) must not wait on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shed(tcp, &shedding);
            continue;
        };
        let clock = Arc::new(HeadClock::new());
        let body_timeout = limits.idle_timeout;
        let (began, answered) = (clock.clone(), clock.clone());
        let service = app
            .clone()
            .map_request(move |request: Request<hyper::body::Incoming>| {
                began.request_began();
                // A body that stalls for the idle timeout is cut (the handler sees an error).
                request.map(|body| Body::new(StallTimeout { body, timeout: body_timeout, sleep: None }))
            })
            .map_response(move |response: axum::response::Response| {
                let clock = answered.clone();
                response.map(|body| Body::new(Answering { body, clock: Some(clock) }))
            });
        let io = TokioIo::new(Watched { tcp, clock: clock.clone() });
        let connection = graceful.watch(builder.serve_connection(io, TowerToHyperService::new(service)));
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let mut watch = tokio::time::interval(WATCH_EVERY);
            loop {
                tokio::select! {
                    served = &mut connection => {
                        if let Err(err) = served {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    _ = watch.tick() => if clock.overdue(header_timeout) {
                        tracing::debug!("a request head took longer than the header timeout; closing");
                        break;
                    },
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// When the head of the request now arriving on a connection began to arrive.
struct HeadClock {
    opened: Instant,
    /// Milliseconds after `opened`, plus one, that the first byte of the coming request head
    /// arrived; 0 while none is arriving.
    head_since: AtomicU64,
    /// Set from a request's head until its response body is done: bytes then are its body.
    in_request: AtomicBool,
}

impl HeadClock {
    fn new() -> Self {
        HeadClock {
            opened: Instant::now(),
            head_since: AtomicU64::new(0),
            in_request: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn bytes_arrived(&self) {
        if !self.in_request.load(Ordering::Acquire) {
            let _ = self.head_since.compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn request_began(&self) {
        self.in_request.store(true, Ordering::Release);
        self.head_since.store(0, Ordering::Release);
    }

    fn request_answered(&self) {
        self.in_request.store(false, Ordering::Release);
    }

    fn overdue(&self, timeout: Duration) -> bool {
        let since = self.head_since.load(Ordering::Acquire);
        since != 0 && u128::from(self.now() - since) > timeout.as_millis()
    }
}

/// A connection's socket, which starts the header clock when bytes arrive between requests.
struct Watched {
    tcp: TcpStream,
    clock: Arc<HeadClock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A response body that ends its request on the header clock when it is done or dropped, so
/// that bytes arriving while a long download streams are not taken for a slow request head.
struct Answering {
    body: Body,
    clock: Option<Arc<HeadClock>>,
}

impl Answering {
    fn done(&mut self) {
        if let Some(clock) = self.clock.take() {
            clock.request_answered();
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.done();
    }
}

impl HttpBody for Answering {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails when the client sends nothing for `timeout` while the handler waits
/// for data. (tower-http's `TimeoutBody` does this too, but hides the body's length from its
/// size hint, which s3s reads as the object's length.)
struct StallTimeout {
    body: hyper::body::Incoming,
    timeout: Duration,
    /// Runs while the handler waits for a frame; reset when one comes.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error of a stalled request body.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for {0:?}")]
struct Stalled(Duration);

impl HttpBody for StallTimeout {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.sleep = None;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Stalled(timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Answers 503 to a connection over the cap, then closes it. The request is not read; what the
/// client sent is drained briefly after the answer, so that closing does not reset the
/// connection before the client reads the 503.
fn shed(mut tcp: TcpStream, shedding: &Arc<Semaphore>) {
    let Ok(permit) = shedding.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(SHED_TIMEOUT, async {
            tcp.write_all(busy().as_bytes()).await?;
            tcp.shutdown().await?;
            let mut sink = [0u8; 4096];
            while tcp.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_has_the_right_length() {
        let text = busy();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{}", body.len());
    }

    #[test]
    fn the_header_clock_runs_only_between_requests() {
        let clock = HeadClock::new();
        assert!(!clock.overdue(Duration::ZERO), "no bytes, no clock");
        clock.bytes_arrived();
        std::thread::sleep(Duration::from_millis(5));
        assert!(clock.overdue(Duration::from_millis(1)));
        clock.request_began();
        clock.bytes_arrived();
        assert!(!clock.overdue(Duration::ZERO), "a request's body does not start the clock");
        clock.request_answered();
        clock.bytes_arrived();
        std::thread::sleep(Duration::from_millis(5));
        assert!(clock.overdue(Duration::from_millis(1)), "the next head does");
    }
}
