//! Accepting HTTP connections: the connection cap, load shedding, the header and idle timeouts,
//! and graceful shutdown.
//!
//! `axum::serve` turns off hyper's header-read timeout and accepts without limit, so a client
//! that opens connections and sends nothing, or sends its headers a byte at a time, holds them
//! for ever. Here each connection is served by hyper's HTTP/1 server, with three timeouts:
//!
//! - idle: hyper's `header_read_timeout`, whose clock starts when hyper waits for a request (on
//!   a new connection, or a kept-alive one after its last response), closes a connection that
//!   sends no complete request head within `idle_timeout`;
//! - header: once the first byte of a request arrives, its whole head must follow within
//!   `header_timeout` (`timeouts::HeadClock`, checked every [`WATCH_EVERY`]), so a slowloris
//!   client is dropped sooner than an idle one, and a kept-alive client can idle longer than a
//!   slow one may trickle;
//! - body: a request body that sends nothing for `idle_timeout` is cut
//!   (`timeouts::StallTimeout`), so a client cannot hold a connection (and an upload's
//!   resources) by stalling mid-body.
//!
//! At most `max_connections` are served at once; one over the cap gets `503 SlowDown` with
//! `Retry-After` and is closed, without its request being read.
//!
//! [`serve_tls`] serves HTTPS (the internal node API with its certificate): the TLS handshake
//! runs over the watched socket, so it counts as the head of the first request and must end
//! within `header_timeout`.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::ConnectionMetrics;
use super::timeouts::{Answering, HeadClock, StallTimeout, Watched};

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
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    counts: ConnectionMetrics,
    stop: CancellationToken,
) {
    serve_tls(listener, app, limits, counts, stop, None).await;
}

/// As [`serve`], over TLS with `tls` when given.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    counts: ConnectionMetrics,
    stop: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
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
            counts.shed.inc();
            shed(tcp, &shedding);
            continue;
        };
        counts.open.inc();
        let open = counts.open.clone();
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
        let watched = Watched { tcp, clock: clock.clone() };
        let header_timeout = limits.header_timeout;
        let service = TowerToHyperService::new(service);
        match &tls {
            None => {
                let connection = graceful.watch(builder.serve_connection(TokioIo::new(watched), service));
                tokio::spawn(async move {
                    drive(connection, &clock, header_timeout).await;
                    open.dec();
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let (handshake, builder, watcher) =
                    (acceptor.accept(watched), builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    match tokio::time::timeout(header_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            let connection =
                                watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                            drive(connection, &clock, header_timeout).await;
                        }
                        Ok(Err(err)) => tracing::debug!(error = %err, "a TLS handshake failed"),
                        Err(_) => tracing::debug!("a TLS handshake took longer than the header timeout"),
                    }
                    open.dec();
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Runs one connection until it ends, or until a request head takes longer than `header_timeout`.
async fn drive<E: std::fmt::Display>(
    connection: impl Future<Output = Result<(), E>>,
    clock: &HeadClock,
    header_timeout: Duration,
) {
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
}
