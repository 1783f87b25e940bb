//! The client side of the internal API: what one node calls on another.
//!
//! Built on reqwest (a pooled HTTP/1 client with connect and read timeouts). A pack is sent
//! from its file as a stream (`Body::wrap` over the file's reader), never held in memory. The
//! client speaks the highest version that both it and the peer accept: it starts with its own,
//! and when a peer answers `unsupported_version` with an older range it retries once in the
//! version they share, and keeps using it for that peer (see [`super::version`]).

use std::ops;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use http_body::Frame;
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use tokio_util::io::ReaderStream;

use super::auth::ClusterToken;
use super::version::{ACCEPTS_HEADER, VERSION_HEADER, VersionRange};
use crate::ServerSecret;
use crate::pack::PackId;

use super::receive::Received;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a response may send nothing before the call fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a pack file is read at a time when sending it.
const SEND_CHUNK: usize = 256 * 1024;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the peer cannot be reached: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the peer refused the request ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("the peer speaks internal API versions {theirs}, this node {ours}: no version in common")]
    NoCommonVersion { ours: VersionRange, theirs: VersionRange },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the peer's answer is not what was asked for: {0}")]
    Unexpected(String),
}

/// A client of one peer's internal API.
#[derive(Debug)]
pub struct NodeClient {
    base: String,
    http: reqwest::Client,
    token: ClusterToken,
    version: AtomicU32,
}

impl NodeClient {
    /// A client of the peer whose internal API is at `base_url` (`http://host:port`), for the
    /// cluster whose nodes share `secret`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base_url: &str, secret: &ServerSecret) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .tcp_nodelay(true)
            // The bearer token goes to the peer named, never through a proxy or a redirect.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(NodeClient {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            token: ClusterToken::of(secret),
            version: AtomicU32::new(VersionRange::OURS.max),
        })
    }

    /// The version this client speaks to the peer now.
    pub fn version(&self) -> u32 {
        self.version.load(Ordering::Relaxed)
    }

    /// Sends the sealed pack `id` from the file at `path`.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with the peer's reason (`pack_conflict`, `invalid_pack`,
    /// `pack_too_large`, ...), or a transport error.
    pub async fn put_pack(&self, id: PackId, path: &Path) -> Result<Received, ClientError> {
        let response = self
            .call(Method::PUT, id, |request| async move {
                let file = tokio::fs::File::open(path).await?;
                let len = file.metadata().await?.len();
                let frames = ReaderStream::with_capacity(file, SEND_CHUNK).map_ok(Frame::data);
                let body = reqwest::Body::wrap(http_body_util::StreamBody::new(frames));
                Ok(request.header(header::CONTENT_LENGTH, len).body(body))
            })
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(Received::Created),
            StatusCode::OK => Ok(Received::AlreadyHeld),
            status => Err(ClientError::Unexpected(format!("PUT answered {status}"))),
        }
    }

    /// The length of pack `id` at the peer, or `None` when it does not hold it.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn pack_len(&self, id: PackId) -> Result<Option<u64>, ClientError> {
        let response = match self.call(Method::HEAD, id, |request| async move { Ok(request) }).await {
            Err(ClientError::Refused { status: 404, .. }) => return Ok(None),
            response => response?,
        };
        Ok(Some(content_length(&response)?))
    }

    /// The bytes `range` of pack `id` at the peer.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `no_such_pack` or `invalid_range`, or a transport error.
    pub async fn read_range(&self, id: PackId, range: ops::Range<u64>) -> Result<Bytes, ClientError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let spec = format!("bytes={}-{}", range.start, range.end - 1);
        let spec = spec.as_str();
        let response = self
            .call(Method::GET, id, |request| async move { Ok(request.header(header::RANGE, spec)) })
            .await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Err(ClientError::Unexpected(format!("a range read answered {}", response.status())));
        }
        // The peer's answer is checked before anything is read: the range asked for, no more.
        let expected = format!("bytes {}-{}/", range.start, range.end - 1);
        let content_range = response.headers().get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
        if !content_range.is_some_and(|value| value.starts_with(&expected)) {
            return Err(ClientError::Unexpected(format!(
                "a range read answered Content-Range {content_range:?}"
            )));
        }
        if content_length(&response)? != range.end - range.start {
            return Err(ClientError::Unexpected("a range read answered another length".into()));
        }
        let bytes = response.bytes().await?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(ClientError::Unexpected(format!(
                "{} bytes for a range of {}",
                bytes.len(),
                range.end - range.start
            )));
        }
        Ok(bytes)
    }

    /// Deletes pack `id` at the peer; done as well when it did not hold it.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete_pack(&self, id: PackId) -> Result<(), ClientError> {
        self.call(Method::DELETE, id, |request| async move { Ok(request) }).await.map(drop)
    }

    /// Sends the request that `finish` completes, in the version the peer accepts: once more in
    /// an older version when the peer refuses this one. Answers other than 2xx are errors.
    async fn call<F, Fut>(&self, method: Method, id: PackId, finish: F) -> Result<Response, ClientError>
    where
        F: Fn(RequestBuilder) -> Fut,
        Fut: Future<Output = Result<RequestBuilder, ClientError>>,
    {
        let url = format!("{}/internal/v1/packs/{}", self.base, id.0);
        let mut retried = false;
        loop {
            let version = self.version();
            let request = self
                .http
                .request(method.clone(), &url)
                .header(header::AUTHORIZATION, self.token.authorization())
                .header(VERSION_HEADER, version);
            let response = finish(request).await?.send().await?;
            let theirs = response
                .headers()
                .get(ACCEPTS_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(VersionRange::parse);
            if response.status().is_success() {
                if let Some(common) = theirs.and_then(|theirs| VersionRange::OURS.common(theirs)) {
                    self.version.store(common, Ordering::Relaxed);
                }
                return Ok(response);
            }
            let refused = refusal(response).await;
            let ClientError::Refused { code, .. } = &refused else { return Err(refused) };
            if code != "unsupported_version" || retried {
                return Err(refused);
            }
            let Some(theirs) = theirs else { return Err(refused) };
            let ours = VersionRange::OURS;
            let common = ours.common(theirs).ok_or(ClientError::NoCommonVersion { ours, theirs })?;
            if common == version {
                return Err(refused);
            }
            self.version.store(common, Ordering::Relaxed);
            retried = true;
        }
    }
}

/// The largest error body read from a peer.
const MAX_ERROR_BODY: usize = 64 * 1024;

fn content_length(response: &Response) -> Result<u64, ClientError> {
    response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .ok_or_else(|| ClientError::Unexpected("no Content-Length".into()))
}

/// The error a refusal carries (`{"error": {"code", "message"}}`), or its status alone.
async fn refusal(mut response: Response) -> ClientError {
    let status = response.status().as_u16();
    // An error body is small; a peer that sends more is not read past this.
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY {
            body.clear();
            break;
        }
    }
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |name: &str| body["error"][name].as_str().unwrap_or_default().to_string();
    ClientError::Refused { status, code: field("code"), message: field("message") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    /// A peer that accepts only `accepts` and says so, as a node of another build would; it
    /// answers `DELETE` with 204 and records the versions it was sent.
    async fn peer(accepts: &'static str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler = move |headers: HeaderMap| {
            let log = log.clone();
            async move {
                let sent =
                    headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                log.lock().expect("log").push(sent.clone());
                let ok = sent
                    .parse()
                    .ok()
                    .is_some_and(|v| VersionRange::parse(accepts).expect("range").accepts(v));
                let status = if ok { StatusCode::NO_CONTENT } else { StatusCode::BAD_REQUEST };
                let body = if ok {
                    String::new()
                } else {
                    r#"{"error":{"code":"unsupported_version","message":"no"}}"#.into()
                };
                (status, [(ACCEPTS_HEADER, accepts)], body)
            }
        };
        let app = axum::Router::new().route("/internal/v1/packs/{id}", axum::routing::delete(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    #[tokio::test]
    async fn the_client_speaks_a_version_the_peer_accepts_or_says_there_is_none() {
        let secret = ServerSecret::from_bytes([2; 32]);
        // A peer of the same build, and one a version ahead that still accepts ours.
        for accepts in ["1-1", "1-2"] {
            let (url, seen) = peer(accepts).await;
            let client = NodeClient::new(&url, &secret).expect("client");
            client.delete_pack(PackId(1)).await.expect("DELETE");
            assert_eq!(client.version(), 1);
            assert_eq!(*seen.lock().expect("log"), ["1"]);
        }
        // A peer two versions ahead, which no longer accepts ours: one try, a clear error.
        let (url, seen) = peer("3-4").await;
        let client = NodeClient::new(&url, &secret).expect("client");
        let err = client.delete_pack(PackId(1)).await.expect_err("no common version");
        assert!(matches!(err, ClientError::NoCommonVersion { .. }), "{err}");
        assert!(err.to_string().contains("3-4"), "{err}");
        assert_eq!(*seen.lock().expect("log"), ["1"]);
    }
}
