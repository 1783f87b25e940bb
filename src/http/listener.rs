//! Accepting HTTP connections: the connection cap, load shedding, the header and idle timeouts,
//! and graceful shutdown.
//!
//! `axum::serve` turns off hyper's header-read timeout and accepts without limit, so a client
//! that opens connections and sends nothing, or sends its headers a byte at a time, holds them
//! for ever. Here each connection is served by hyper's HTTP/1 server with
//! `header_read_timeout`: the headers of every request, the first and each later one on a
//! kept-alive connection, must arrive within it, so an idle connection is closed after that
//! long too. At most `max_connections` are served at once; one over the cap gets
//! `503 SlowDown` with `Retry-After` and is closed, without its request being read.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How many shed connections may be answered at once; past that they are closed at once.
const SHED_CONCURRENCY: usize = 64;
/// How long answering a shed connection may take.
const SHED_TIMEOUT: Duration = Duration::from_secs(1);
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
    /// How long a request's headers may take to arrive, and a kept-alive connection may idle.
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `stop`, then waits for the open connections to finish
/// their requests (the caller bounds that wait).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shedding = Arc::new(Semaphore::new(SHED_CONCURRENCY));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
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
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
    #[test]
    fn the_busy_answer_has_the_right_length() {
        let text = super::busy();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{}", body.len());
    }
}
