//! The client side of the internal API: what one node calls on another.
//!
//! Built on reqwest (a pooled HTTP/1 client), but for record reads by range, which take
//! hyper's own client first (see [`super::range_client`]). Bodies stream both ways and are
//! never held whole:
//! a pack is sent from its file or from any stream of bytes ([`NodeClient::put_pack_stream`],
//! [`NodeClient::append`]), and read as a stream ([`NodeClient::get_pack_stream`]), so a node
//! can relay a pack between two others through memory alone.
//!
//! **Versions.** The client speaks the highest version that both it and the peer accept: it
//! starts with its own, and when a peer answers `unsupported_version` with an older range it
//! retries once in the version they share, and keeps using it for that peer (see
//! [`super::version`]). A request with a streamed body cannot be sent twice, so the client first
//! learns the peer's range (a `HEAD`) when it does not know it yet. A request that needs a newer
//! version than the peer accepts (an append to a version-1 peer) fails with
//! [`ClientError::PeerTooOld`] before a byte of its body is sent.
//!
//! **Timeouts.** Connecting fails after 2 s. Every call then has an idle timeout (30 s, or what
//! [`NodeClient::with_idle_timeout`] says): a call fails with [`ClientError::Stalled`] once a
//! whole idle timeout passed in which the connection took no piece of the outgoing body and
//! no answer came (noticed within twice the timeout), and a body being read fails (`TimedOut`)
//! when no byte comes for that long. So a peer that hangs (SIGSTOP) fails a call within about
//! twice the idle timeout, while a slow but moving transfer of any size goes on. A caller that
//! wants a total bound on a call wraps it in `tokio::time::timeout`; one that relays a stream
//! (`get_pack_stream` into `put_pack_stream`) is bounded on both sides by each client's idle
//! timeout.
//!
//! **TLS.** A peer at an `https://` URL is reached over TLS with the cluster CA
//! ([`NodeClient::with_tls`], [`PeerTls`]); without a CA such a client is refused at once
//! ([`ClientError::NoClusterCa`]) rather than trusting anything else.

use std::io;
use std::ops;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use reqwest::{Method, Response, StatusCode, header};
use tokio_util::io::ReaderStream;

use super::append::{LENGTH_HEADER, OFFSET_HEADER};
use super::auth::ClusterToken;
use super::range_client::{RangeAnswer, RangeClient, check_range_answer};
use super::receive::Received;
use super::server::INVALIDATE_ROUTE;
use super::tls::PeerTls;
use super::transfer::{Outgoing, Progress, Stalled, incoming, read_to_end, within_idle};
use super::version::{ACCEPTS_HEADER, APPEND_VERSION, READS_VERSION, VERSION_HEADER, VersionRange};
use crate::ServerSecret;
use crate::pack::PackId;
use crate::read_cache::Addressed;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle pooled connection is kept: under the 60 s after which a peer closes it
/// (`--idle-timeout-secs`), so that a request is not sent on a connection as it closes.
pub(super) const POOL_IDLE: Duration = Duration::from_secs(50);
/// How long a call may go without moving a byte before it fails, unless told otherwise.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a pack file is read at a time when sending it.
const SEND_CHUNK: usize = 256 * 1024;
/// The largest error or JSON answer read from a peer.
const MAX_SMALL_BODY: usize = 64 * 1024;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the peer cannot be reached: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the peer refused the request ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("the peer holds {len} bytes of the pack, not as many as the append's offset")]
    OffsetMismatch { len: u64 },
    #[error("the peer speaks internal API versions {theirs}, this node {ours}: no version in common")]
    NoCommonVersion { ours: VersionRange, theirs: VersionRange },
    #[error("the peer speaks internal API versions {theirs}; this request needs version {needs}")]
    PeerTooOld { needs: u32, theirs: VersionRange },
    #[error("the peer took and sent nothing for {0:?}: it is hung or cut off")]
    Stalled(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the peer's answer is not what was asked for: {0}")]
    Unexpected(String),
    #[error("the peer {url} serves HTTPS: this node needs the cluster CA (--internal-tls-ca) to reach it")]
    NoClusterCa { url: String },
}

impl From<Stalled> for ClientError {
    fn from(Stalled(idle): Stalled) -> Self {
        ClientError::Stalled(idle)
    }
}

/// A stream of a pack's bytes, as [`NodeClient::get_pack_stream`] reads it.
pub type PackStream = BoxStream<'static, Result<Bytes, io::Error>>;

/// A client of one peer's internal API.
#[derive(Debug)]
pub struct NodeClient {
    base: String,
    http: reqwest::Client,
    /// Record reads' own client (see [`super::range_client`]).
    ranges: RangeClient,
    token: ClusterToken,
    idle: Duration,
    version: AtomicU32,
    /// The versions the peer said it accepts, once it said so.
    peer: Mutex<Option<VersionRange>>,
}

/// What a request adds to its method and pack: headers, and a body sent once.
#[derive(Default)]
struct Extra {
    headers: Vec<(&'static str, String)>,
    body: Option<PackStream>,
}

impl NodeClient {
    /// A client of the peer whose internal API is at `base_url` (`http://host:port`), for the
    /// cluster whose nodes share `secret`, with the default idle timeout ([`IDLE_TIMEOUT`]).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base_url: &str, secret: &ServerSecret) -> Result<Self, ClientError> {
        Self::with_idle_timeout(base_url, secret, IDLE_TIMEOUT)
    }

    /// A client as [`NodeClient::new`] makes, whose calls fail once nothing moved for `idle`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn with_idle_timeout(
        base_url: &str,
        secret: &ServerSecret,
        idle: Duration,
    ) -> Result<Self, ClientError> {
        Self::with_tls(base_url, secret, idle, None)
    }

    /// A client as [`NodeClient::with_idle_timeout`] makes, that reaches an `https://` peer
    /// trusting only `tls`'s cluster CA (a plain `http://` peer is reached without TLS).
    ///
    /// # Errors
    /// [`ClientError::NoClusterCa`] for an `https://` peer without `tls`; or when the HTTP
    /// client cannot be built.
    pub fn with_tls(
        base_url: &str,
        secret: &ServerSecret,
        idle: Duration,
        tls: Option<&PeerTls>,
    ) -> Result<Self, ClientError> {
        let https = base_url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE)
            .tcp_nodelay(true)
            // The bearer token goes to the peer named, never through a proxy or a redirect.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .tls_built_in_root_certs(false);
        let http = match tls {
            Some(tls) => builder.use_preconfigured_tls(tls.client_config().clone()),
            None if https => return Err(ClientError::NoClusterCa { url: base_url.to_string() }),
            None => builder,
        }
        .build()?;
        Ok(NodeClient {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            ranges: RangeClient::new(tls, CONNECT_TIMEOUT),
            token: ClusterToken::of(secret),
            idle,
            version: AtomicU32::new(VersionRange::OURS.max),
            peer: Mutex::new(None),
        })
    }

    /// The version this client speaks to the peer now.
    pub fn version(&self) -> u32 {
        self.version.load(Ordering::Relaxed)
    }

    /// Sends the sealed pack `id` from the file at `path`.
    ///
    /// # Errors
    /// As [`NodeClient::put_pack_stream`].
    pub async fn put_pack(&self, id: PackId, path: &Path) -> Result<Received, ClientError> {
        let file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        self.put_pack_stream(id, len, ReaderStream::with_capacity(file, SEND_CHUNK)).await
    }

    /// Sends the sealed pack `id`, `len` bytes streamed from `body` (from a file, or from
    /// another peer's [`NodeClient::get_pack_stream`]).
    ///
    /// # Errors
    /// [`ClientError::Refused`] with the peer's reason (`pack_conflict`, `invalid_pack`,
    /// `pack_too_large`, ...), or a transport error.
    pub async fn put_pack_stream(
        &self,
        id: PackId,
        len: u64,
        body: impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    ) -> Result<Received, ClientError> {
        let headers = vec![(header::CONTENT_LENGTH.as_str(), len.to_string())];
        let extra = Extra { headers, body: Some(Box::pin(body)) };
        let response = self.call(Method::PUT, id, 1, extra).await?;
        match response.status() {
            StatusCode::CREATED => Ok(Received::Created),
            StatusCode::OK => Ok(Received::AlreadyHeld),
            status => Err(ClientError::Unexpected(format!("PUT answered {status}"))),
        }
    }

    /// Appends the records streamed from `body` to pack `id` at the peer, at byte `offset` of
    /// its copy (0: `body` starts with the pack header). Returns the copy's length, durable at
    /// the peer. Needs a peer of version 2 or later.
    ///
    /// # Errors
    /// [`ClientError::OffsetMismatch`] with the peer's length when it is shorter than `offset`;
    /// [`ClientError::Refused`] with `not_writing`, `wrong_domain`, `damaged`, `pack_too_large`,
    /// `storage_full`...; [`ClientError::PeerTooOld`]; or a transport error.
    pub async fn append(
        &self,
        id: PackId,
        offset: u64,
        body: impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    ) -> Result<u64, ClientError> {
        let extra = Extra { headers: vec![(OFFSET_HEADER, offset.to_string())], body: Some(Box::pin(body)) };
        let response = self.call(Method::PATCH, id, APPEND_VERSION, extra).await?;
        let answer = read_to_end(incoming(response, self.idle), MAX_SMALL_BODY, 0).await?;
        let answer: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|err| ClientError::Unexpected(format!("an append answered no JSON: {err}")))?;
        answer["len"].as_u64().ok_or_else(|| ClientError::Unexpected(format!("an append answered {answer}")))
    }

    /// Pack `id` at the peer, as its length and a stream of its bytes.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `no_such_pack`, or a transport error; the stream fails
    /// with the I/O error of a cut or stalled transfer.
    pub async fn get_pack_stream(&self, id: PackId) -> Result<(u64, PackStream), ClientError> {
        let response = self.call(Method::GET, id, 1, Extra::default()).await?;
        if response.status() != StatusCode::OK {
            return Err(ClientError::Unexpected(format!("a GET answered {}", response.status())));
        }
        let len = content_length(&response)?;
        Ok((len, incoming(response, self.idle)))
    }

    /// The length of pack `id` at the peer, or `None` when it does not hold it.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn pack_len(&self, id: PackId) -> Result<Option<u64>, ClientError> {
        let response = match self.call(Method::HEAD, id, 1, Extra::default()).await {
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
        // The usual answer, the range itself, comes through hyper's client (see
        // `range_client`); any other is asked again below, where refusals and versions are told
        // apart. A peer that cannot be reached fails the read at once.
        let spec = format!("bytes={}-{}", range.start, range.end - 1);
        let mut headers = http::HeaderMap::new();
        let version = self.version().to_string();
        let sent = [
            (header::AUTHORIZATION.as_str(), self.token.authorization()),
            (VERSION_HEADER, version),
            (header::RANGE.as_str(), spec.clone()),
        ];
        for (name, value) in sent {
            let value = http::HeaderValue::from_str(&value)
                .map_err(|err| ClientError::Unexpected(err.to_string()))?;
            headers.insert(http::HeaderName::from_static(name), value);
        }
        let (answer, answered) = self.ranges.get(&self.pack_url(id), headers, &range, self.idle).await?;
        if let Some(theirs) =
            answered.get(ACCEPTS_HEADER).and_then(|value| value.to_str().ok()).and_then(VersionRange::parse)
        {
            self.peer_accepts(theirs);
        }
        if let RangeAnswer::Read(bytes) = answer {
            return Ok(crate::buffer_pool::freeze(bytes));
        }
        let extra = Extra { headers: vec![(header::RANGE.as_str(), spec)], body: None };
        let response = self.call(Method::GET, id, 1, extra).await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Err(ClientError::Unexpected(format!("a range read answered {}", response.status())));
        }
        // The peer's answer is checked before anything is read: the range asked for, no more.
        let limit = check_range_answer(response.headers(), &range)?;
        let bytes = read_to_end(incoming(response, self.idle), limit, limit).await?;
        if bytes.len() != limit {
            return Err(ClientError::Unexpected(format!("{} bytes for a range of {limit}", bytes.len())));
        }
        Ok(crate::buffer_pool::freeze(bytes))
    }

    /// Deletes pack `id` at the peer; done as well when it did not hold it.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete_pack(&self, id: PackId) -> Result<(), ClientError> {
        self.call(Method::DELETE, id, 1, Extra::default()).await.map(drop)
    }

    /// Has the peer drop `what` from its read cache; done once it answers. Needs a peer of
    /// version 3 or later (only such peers hold read cache leases). The caller bounds the wait.
    ///
    /// # Errors
    /// [`ClientError::Refused`], or a transport error.
    pub async fn invalidate_reads(&self, what: &Addressed) -> Result<(), ClientError> {
        let body = serde_json::to_vec(what).map_err(|err| ClientError::Unexpected(err.to_string()))?;
        let response = self
            .http
            .post(format!("{}{INVALIDATE_ROUTE}", self.base))
            .header(header::AUTHORIZATION, self.token.authorization())
            .header(VERSION_HEADER, self.version().max(READS_VERSION))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.refusal(response).await)
    }

    /// Sends a request on pack `id` that needs at least version `needs`, in the version the
    /// peer accepts: once more in an older version when the peer refuses this one and the
    /// request has no body. Answers other than 2xx are errors.
    async fn call(
        &self,
        method: Method,
        id: PackId,
        needs: u32,
        extra: Extra,
    ) -> Result<Response, ClientError> {
        let Extra { headers, mut body } = extra;
        if body.is_some() {
            self.learn_versions(id, needs).await?;
        }
        let replayable = body.is_none();
        let url = self.pack_url(id);
        let mut retried = false;
        loop {
            let version = self.version().max(needs);
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(header::AUTHORIZATION, self.token.authorization())
                .header(VERSION_HEADER, version);
            for (name, value) in &headers {
                request = request.header(*name, value);
            }
            let progress = Progress::default();
            if let Some(body) = body.take() {
                request = request.body(reqwest::Body::wrap(Outgoing::new(body, progress.clone())));
            }
            let response = within_idle(self.idle, &progress, request.send()).await??;
            let theirs = response
                .headers()
                .get(ACCEPTS_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(VersionRange::parse);
            if let Some(theirs) = theirs {
                self.peer_accepts(theirs);
            }
            if response.status().is_success() {
                return Ok(response);
            }
            let refused = self.refusal(response).await;
            // Refused for its version (a HEAD's refusal has no body to say so).
            let Some(theirs) = theirs.filter(|theirs| !theirs.accepts(version)) else { return Err(refused) };
            let ours = VersionRange::OURS;
            let common = ours.common(theirs).ok_or(ClientError::NoCommonVersion { ours, theirs })?;
            if common < needs {
                return Err(ClientError::PeerTooOld { needs, theirs });
            }
            if common == version || retried || !replayable {
                return Err(refused);
            }
            retried = true;
        }
    }

    /// Where pack `id` is on the peer's internal API.
    fn pack_url(&self, id: PackId) -> String {
        format!("{}/internal/v1/packs/{}", self.base, id.0)
    }

    /// Makes sure the peer's versions are known, and that it accepts `needs`, before a body
    /// that cannot be sent twice goes out.
    async fn learn_versions(&self, id: PackId, needs: u32) -> Result<(), ClientError> {
        if self.known_peer().is_none() {
            match Box::pin(self.call(Method::HEAD, id, 1, Extra::default())).await {
                Ok(_) | Err(ClientError::Refused { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        match self.known_peer() {
            Some(theirs) if VersionRange::OURS.common(theirs).is_none_or(|common| common < needs) => {
                Err(ClientError::PeerTooOld { needs, theirs })
            }
            _ => Ok(()),
        }
    }

    fn known_peer(&self) -> Option<VersionRange> {
        *self.peer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the versions the peer accepts, and speaks the highest both accept from now on.
    fn peer_accepts(&self, theirs: VersionRange) {
        *self.peer.lock().unwrap_or_else(PoisonError::into_inner) = Some(theirs);
        if let Some(common) = VersionRange::OURS.common(theirs) {
            self.version.store(common, Ordering::Relaxed);
        }
    }

    /// The error a refusal carries (`{"error": {"code", "message"}}`), or its status alone.
    async fn refusal(&self, response: Response) -> ClientError {
        let status = response.status().as_u16();
        let length =
            response.headers().get(LENGTH_HEADER).and_then(|value| value.to_str().ok()?.parse().ok());
        // An error body is small; a peer that sends more is not read past this.
        let body = read_to_end(incoming(response, self.idle), MAX_SMALL_BODY, 0).await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let field = |name: &str| body["error"][name].as_str().unwrap_or_default().to_string();
        match length {
            Some(len) if field("code") == "offset_mismatch" => ClientError::OffsetMismatch { len },
            _ => ClientError::Refused { status, code: field("code"), message: field("message") },
        }
    }
}

fn content_length(response: &Response) -> Result<u64, ClientError> {
    response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .ok_or_else(|| ClientError::Unexpected("no Content-Length".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

    /// A peer that accepts only `accepts` and says so, as a node of another build would; it
    /// answers whatever it accepts with 204 (an append with `{"len": 0}`) and records the
    /// methods and versions it was sent.
    async fn peer(accepts: &'static str) -> (String, Log) {
        let seen = Log::default();
        let log = seen.clone();
        let handler = move |method: Method, headers: HeaderMap| {
            let log = log.clone();
            async move {
                let sent =
                    headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                log.lock().expect("log").push(format!("{method} {sent}"));
                let ok = sent
                    .parse()
                    .ok()
                    .is_some_and(|v| VersionRange::parse(accepts).expect("range").accepts(v));
                let (status, body) = match (ok, method) {
                    (true, Method::PATCH) => (StatusCode::OK, r#"{"len":0}"#),
                    (true, _) => (StatusCode::NO_CONTENT, ""),
                    (false, _) => (
                        StatusCode::BAD_REQUEST,
                        r#"{"error":{"code":"unsupported_version","message":"no"}}"#,
                    ),
                };
                (status, [(ACCEPTS_HEADER, accepts)], body)
            }
        };
        let app = axum::Router::new().route("/internal/v1/packs/{id}", axum::routing::any(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn seen(log: &Log) -> Vec<String> {
        log.lock().expect("log").clone()
    }

    fn some_bytes() -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
        futures::stream::iter([Ok(Bytes::from_static(b"records"))])
    }

    #[tokio::test]
    async fn the_client_speaks_a_version_the_peer_accepts_or_says_there_is_none() {
        let secret = ServerSecret::from_bytes([2; 32]);
        // A peer of the same build, and one a version ahead that still accepts ours.
        for (accepts, version) in [("1-3", 3), ("1-4", 3)] {
            let (url, log) = peer(accepts).await;
            let client = NodeClient::new(&url, &secret).expect("client");
            client.delete_pack(PackId(1)).await.expect("DELETE");
            assert_eq!(client.version(), version);
            assert_eq!(seen(&log), ["DELETE 3"]);
        }
        // A peer a version behind: the client moves down once, and stays there.
        let (url, log) = peer("1-1").await;
        let client = NodeClient::new(&url, &secret).expect("client");
        client.delete_pack(PackId(1)).await.expect("DELETE");
        client.delete_pack(PackId(2)).await.expect("DELETE");
        assert_eq!(client.version(), 1);
        assert_eq!(seen(&log), ["DELETE 3", "DELETE 1", "DELETE 1"]);
        // A peer two versions ahead, which no longer accepts ours: one try, a clear error.
        let (url, log) = peer("4-5").await;
        let client = NodeClient::new(&url, &secret).expect("client");
        let err = client.delete_pack(PackId(1)).await.expect_err("no common version");
        assert!(matches!(err, ClientError::NoCommonVersion { .. }), "{err}");
        assert!(err.to_string().contains("4-5"), "{err}");
        assert_eq!(seen(&log), ["DELETE 3"]);
    }

    #[tokio::test]
    async fn a_range_read_of_an_older_peer_moves_down_once_then_reads_on_the_fast_path() {
        use axum::response::IntoResponse;
        // A peer of version 1 that serves ranges of a 100-byte pack of bytes 0..100.
        let requests = Log::default();
        let log = requests.clone();
        let handler = move |headers: HeaderMap| {
            let log = log.clone();
            async move {
                let sent =
                    headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                log.lock().expect("log").push(format!("GET {sent}"));
                if sent != "1" {
                    let refusal = r#"{"error":{"code":"unsupported_version","message":"no"}}"#;
                    return (StatusCode::BAD_REQUEST, [(ACCEPTS_HEADER, "1-1")], refusal).into_response();
                }
                let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
                let (from, to) = range.trim_start_matches("bytes=").split_once('-').expect("a range");
                let (from, to): (u8, u8) = (from.parse().expect("from"), to.parse().expect("to"));
                let headers = [
                    (ACCEPTS_HEADER, "1-1".to_string()),
                    (header::CONTENT_RANGE.as_str(), format!("bytes {from}-{to}/100")),
                ];
                (StatusCode::PARTIAL_CONTENT, headers, (from..=to).collect::<Vec<u8>>()).into_response()
            }
        };
        let app = axum::Router::new().route("/internal/v1/packs/{id}", axum::routing::get(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let client = NodeClient::new(&url, &ServerSecret::from_bytes([2; 32])).expect("client");
        assert_eq!(
            client.read_range(PackId(1), 10..20).await.expect("a range")[..],
            (10..20).collect::<Vec<u8>>()
        );
        assert_eq!(client.version(), 1);
        assert_eq!(
            client.read_range(PackId(1), 50..60).await.expect("a range")[..],
            (50..60).collect::<Vec<u8>>()
        );
        // Refused once at this build's version, asked again at the peer's; then at its version.
        assert_eq!(seen(&requests), ["GET 3", "GET 1", "GET 1"]);
    }

    #[tokio::test]
    async fn an_append_needs_a_peer_of_version_2_and_sends_its_body_once() {
        let secret = ServerSecret::from_bytes([2; 32]);
        let (url, log) = peer("1-1").await;
        let client = NodeClient::new(&url, &secret).expect("client");
        let err = client.append(PackId(1), 0, some_bytes()).await.expect_err("a version-1 peer");
        assert!(matches!(err, ClientError::PeerTooOld { needs: 2, .. }), "{err}");
        assert!(err.to_string().contains("needs version 2"), "{err}");
        // The peer's versions were learned without the body; the append was never sent.
        assert_eq!(seen(&log), ["HEAD 3", "HEAD 1"]);
        client.append(PackId(1), 0, some_bytes()).await.expect_err("again");
        assert_eq!(seen(&log).len(), 2, "known to be too old: nothing sent");

        let (url, log) = peer("1-2").await;
        let client = NodeClient::new(&url, &secret).expect("client");
        assert_eq!(client.append(PackId(1), 0, some_bytes()).await.expect("append"), 0);
        assert_eq!(client.append(PackId(1), 0, some_bytes()).await.expect("append"), 0);
        assert_eq!(seen(&log), ["HEAD 3", "HEAD 2", "PATCH 2", "PATCH 2"]);
    }

    #[tokio::test]
    async fn a_hung_peer_fails_a_streaming_call_within_the_idle_timeout() {
        // A peer that answers HEAD, then takes an append's head and never reads its body nor
        // answers: what a SIGSTOPped node looks like once the kernel's buffers are full.
        let hang = |method: Method| async move {
            if method == Method::PATCH {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            (StatusCode::NOT_FOUND, [(ACCEPTS_HEADER, "1-2")], "")
        };
        let app = axum::Router::new().route("/internal/v1/packs/{id}", axum::routing::any(hang));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let idle = Duration::from_millis(300);
        let client =
            NodeClient::with_idle_timeout(&url, &ServerSecret::from_bytes([2; 32]), idle).expect("client");
        let endless = futures::stream::repeat_with(|| Ok(Bytes::from(vec![7u8; 64 * 1024])));
        let started = std::time::Instant::now();
        let result =
            tokio::time::timeout(Duration::from_secs(20), client.append(PackId(1), 0, endless)).await;
        let err = result.expect("the call ends by itself").expect_err("a hung peer");
        assert!(matches!(err, ClientError::Stalled(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
