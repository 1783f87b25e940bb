//! The per-connection clocks behind the header and body timeouts of [`super::listener`].
//!
//! [`HeadClock`] times a request head from its first byte: [`Watched`] (the socket) starts it
//! when bytes arrive between requests, the router's entry stops it, and [`Answering`] (the
//! response body) marks the request done when its last byte is written. [`StallTimeout`] cuts a
//! request body that sends nothing for the idle timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// When the head of the request now arriving on a connection began to arrive.
pub(super) struct HeadClock {
    opened: Instant,
    /// Milliseconds after `opened`, plus one, that the first byte of the coming request head
    /// arrived; 0 while none is arriving.
    head_since: AtomicU64,
    /// Set from a request's head until its response body is done: bytes then are its body.
    in_request: AtomicBool,
}

impl HeadClock {
    pub(super) fn new() -> Self {
        HeadClock {
            opened: Instant::now(),
            head_since: AtomicU64::new(0),
            in_request: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    pub(super) fn bytes_arrived(&self) {
        if !self.in_request.load(Ordering::Acquire) {
            let _ = self.head_since.compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Acquire);
        }
    }

    pub(super) fn request_began(&self) {
        self.in_request.store(true, Ordering::Release);
        self.head_since.store(0, Ordering::Release);
    }

    pub(super) fn request_answered(&self) {
        self.in_request.store(false, Ordering::Release);
    }

    pub(super) fn overdue(&self, timeout: Duration) -> bool {
        let since = self.head_since.load(Ordering::Acquire);
        since != 0 && u128::from(self.now() - since) > timeout.as_millis()
    }
}

/// A connection's socket, which starts the header clock when bytes arrive between requests.
pub(super) struct Watched {
    pub(super) tcp: TcpStream,
    pub(super) clock: Arc<HeadClock>,
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
pub(super) struct Answering {
    pub(super) body: Body,
    pub(super) clock: Option<Arc<HeadClock>>,
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
pub(super) struct StallTimeout {
    pub(super) body: hyper::body::Incoming,
    pub(super) timeout: Duration,
    /// Runs while the handler waits for a frame; reset when one comes.
    pub(super) sleep: Option<Pin<Box<tokio::time::Sleep>>>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
