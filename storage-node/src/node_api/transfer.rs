//! How the client's bodies move, and how a hung peer is told from a slow one: an outgoing body
//! counts the pieces the connection takes from it ([`Outgoing`]), a request fails when neither
//! a piece was taken nor an answer came for the idle timeout ([`within_idle`]), and an incoming
//! body fails when no byte comes for that long ([`incoming`], [`within_idle_pieces`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http_body::Frame;

/// The pieces of outgoing bodies taken so far by one request's connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress(Arc<AtomicU64>);

impl Progress {
    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A request body streamed from `stream`, counted in a [`Progress`]. The stream sits behind a
/// mutex only to make the body `Sync`, as reqwest requires; the connection alone polls it, so
/// the mutex is never contended (`get_mut`).
pub(crate) struct Outgoing {
    stream: Mutex<BoxStream<'static, Result<Bytes, io::Error>>>,
    progress: Progress,
}

impl Outgoing {
    pub(crate) fn new(
        stream: impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
        progress: Progress,
    ) -> Self {
        Outgoing { stream: Mutex::new(stream.boxed()), progress }
    }
}

impl http_body::Body for Outgoing {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let stream = this.stream.get_mut().unwrap_or_else(PoisonError::into_inner);
        let polled = stream.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.progress.0.fetch_add(1, Ordering::Relaxed);
        }
        polled.map(|piece| piece.map(|bytes| bytes.map(Frame::data)))
    }
}

/// Runs `work` (a request being sent and answered) until it ends, or fails it once a whole
/// `idle` went by without `progress` counting a piece (noticed within twice `idle`).
pub(crate) async fn within_idle<T, E>(
    idle: Duration,
    progress: &Progress,
    work: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, Stalled> {
    let mut work = std::pin::pin!(work);
    let mut seen = progress.count();
    loop {
        match tokio::time::timeout(idle, &mut work).await {
            Ok(result) => return Ok(result),
            Err(_) if progress.count() == seen => return Err(Stalled(idle)),
            Err(_) => seen = progress.count(),
        }
    }
}

/// A peer that took and sent nothing for the idle timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stalled(pub Duration);

/// The body of `response` as a stream that fails (`TimedOut`) when no byte comes for `idle`.
pub(crate) fn incoming(
    response: reqwest::Response,
    idle: Duration,
) -> BoxStream<'static, Result<Bytes, io::Error>> {
    let pieces = futures::stream::try_unfold(response, |mut response| async move {
        let piece = response.chunk().await.map_err(io::Error::other)?;
        Ok(piece.map(|bytes| (bytes, response)))
    });
    within_idle_pieces(pieces, idle)
}

/// `pieces` as a stream that fails (`TimedOut`) when no piece comes for `idle`.
pub(crate) fn within_idle_pieces(
    pieces: impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    idle: Duration,
) -> BoxStream<'static, Result<Bytes, io::Error>> {
    futures::stream::try_unfold(pieces.boxed(), move |mut pieces| async move {
        match tokio::time::timeout(idle, pieces.next()).await {
            Ok(Some(piece)) => Ok(Some((piece?, pieces))),
            Ok(None) => Ok(None),
            Err(_) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("the peer sent nothing for {idle:?}")))
            }
        }
    })
    .boxed()
}

/// Reads all of `body`, refusing more than `limit` bytes (`InvalidData`), into a buffer made
/// for `expected` bytes (at most `limit`).
pub(crate) async fn read_to_end(
    mut body: BoxStream<'static, Result<Bytes, io::Error>>,
    limit: usize,
    expected: usize,
) -> io::Result<Vec<u8>> {
    // Allocated once at the length announced, from the pool of reused buffers: grown from
    // empty, a record of 2 MiB took four fresh mappings of 256 KiB to 2 MiB (glibc maps blocks
    // past 128 KiB, see `store/allocator.rs`), each faulted in page by page and copied into
    // the next. Hand it on with `buffer_pool::freeze`.
    let mut bytes = crate::buffer_pool::take(expected.min(limit));
    while let Some(piece) = body.next().await {
        bytes.extend_from_slice(&piece?);
        if bytes.len() > limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("more than {limit} bytes")));
        }
    }
    Ok(bytes)
}
