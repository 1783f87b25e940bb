//! Range reads of pack records from a peer, on hyper's own client rather than reqwest's.
//!
//! Why apart: reqwest's connection reads each answer into a buffer that grows to about 400 KiB,
//! and allocates a new one while the body's last piece is still held. Past glibc's mmap
//! threshold (128 KiB, `store::allocator`) each is a fresh mapping, faulted in page by page and
//! unmapped with a TLB shootdown: about 13% of a remote GET's CPU on the reading node
//! (docs/benchmarks.md). hyper's client takes a fixed read size, [`READ_BUFFER`], which glibc
//! serves from its heap and reuses. Only a read that gets its `206` goes through here; any
//! other answer is left to [`super::NodeClient`], which asks again and tells the refusal apart.

use std::ops;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ClientError;
use super::tls::PeerTls;
use super::transfer::{read_to_end, within_idle_pieces};

/// The read size of a peer's connection: under glibc's mmap threshold.
const READ_BUFFER: usize = 64 * 1024;

/// A pooled HTTP/1 client for record reads, plain or over the cluster's TLS.
#[derive(Debug, Clone)]
pub(super) enum RangeClient {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

/// A record read's answer, as far as this client takes it.
pub(super) enum RangeAnswer {
    /// The bytes asked for, in a buffer of the pool (`buffer_pool::freeze` it).
    Read(Vec<u8>),
    /// Another status: the caller asks again the way that tells refusals apart.
    Other,
}

impl RangeClient {
    pub fn new(tls: Option<&PeerTls>, connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .http1_read_buf_exact_size(READ_BUFFER)
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(super::client::POOL_IDLE);
        match tls {
            None => RangeClient::Plain(builder.build(http)),
            Some(tls) => {
                http.enforce_http(false);
                // The cluster's config as it is: its CA alone, and HTTP/1.1 by ALPN. A plain
                // `http://` peer is reached without TLS, as reqwest does.
                let https = hyper_rustls::HttpsConnector::from((http, tls.client_config().clone()));
                RangeClient::Tls(builder.build(https))
            }
        }
    }

    /// GETs the resource at `url` with `headers` (its `Range` among them): the bytes of `range`
    /// when the peer answers `206` with exactly that range, waiting at most `idle` for the
    /// answer and for each piece.
    pub async fn get(
        &self,
        url: &str,
        headers: HeaderMap,
        range: &ops::Range<u64>,
        idle: Duration,
    ) -> Result<(RangeAnswer, HeaderMap), ClientError> {
        let mut request =
            Request::get(url).body(Empty::new()).map_err(|err| ClientError::Unexpected(err.to_string()))?;
        *request.headers_mut() = headers;
        let sent = match self {
            RangeClient::Plain(client) => client.request(request),
            RangeClient::Tls(client) => client.request(request),
        };
        let response = tokio::time::timeout(idle, sent)
            .await
            .map_err(|_| ClientError::Stalled(idle))?
            .map_err(|err| ClientError::Io(failed(url, "cannot be reached", &err)))?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::PARTIAL_CONTENT {
            return Ok((RangeAnswer::Other, parts.headers));
        }
        let len = check_range_answer(&parts.headers, range)?;
        let url = url.to_string();
        let pieces = body.into_data_stream().map_err(move |err| failed(&url, "cut the answer short", &err));
        let bytes = read_to_end(within_idle_pieces(pieces, idle), len, len).await?;
        if bytes.len() != len {
            return Err(ClientError::Unexpected(format!("{} bytes for a range of {len}", bytes.len())));
        }
        Ok((RangeAnswer::Read(bytes), parts.headers))
    }
}

/// A transport failure, with the peer's URL and every cause (the TLS error under hyper's).
fn failed(url: &str, what: &str, err: &(dyn std::error::Error + 'static)) -> std::io::Error {
    let mut text = format!("the peer at {url} {what}: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    std::io::Error::other(text)
}

/// Checks a `206` answer to a read of `range` before its body is read: the range asked for,
/// and that many bytes, no more. Returns the length.
pub(super) fn check_range_answer(headers: &HeaderMap, range: &ops::Range<u64>) -> Result<usize, ClientError> {
    let expected = format!("bytes {}-{}/", range.start, range.end - 1);
    let content_range = headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
    if !content_range.is_some_and(|value| value.starts_with(&expected)) {
        return Err(ClientError::Unexpected(format!(
            "a range read answered Content-Range {content_range:?}"
        )));
    }
    let length: Option<u64> =
        headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse().ok());
    let len = range.end - range.start;
    if length != Some(len) {
        return Err(ClientError::Unexpected("a range read answered another length".into()));
    }
    usize::try_from(len).map_err(|_| ClientError::Unexpected("a range past memory".into()))
}
