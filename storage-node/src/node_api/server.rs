//! The internal API's routes on axum. Handlers parse the request, call [`super::receive`],
//! [`super::append`] or [`super::packs`] and answer; one middleware in front of every route (and of the fallback,
//! so unknown paths are not revealed either) checks the cluster token, then the version, and
//! stamps every answer with this node's version and accepted range.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{post, put};
use axum::{Json, Router};
use tokio_util::io::ReaderStream;

use super::append::{self, Append, OFFSET_HEADER, PackLocks, parse_offset};
use super::auth::{ClusterToken, presents};
use super::error::{internal, refuse, refused_append, refused_transfer};
use super::pack_id::parse_pack_id;
use super::packs::{self, ReadError};
use super::receive::{self, Received};
use super::version::{
    ACCEPTS_HEADER, APPEND_VERSION, MAX_VERSION, READS_VERSION, VERSION_HEADER, VersionRange, parse_version,
};
use super::writing::{ThisNode, holds_live_copy};
use crate::ServerSecret;
use crate::pack::PackId;
use crate::read_cache::{Addressed, ReadCache};

/// The route of one pack.
pub const PACK_ROUTE: &str = "/internal/v1/packs/{id}";
/// The route that drops entries of the node's read cache.
pub const INVALIDATE_ROUTE: &str = "/internal/v1/reads/invalidate";
/// How much of a pack is read from disk at a time for a GET.
const READ_CHUNK: usize = 256 * 1024;

/// The internal API of one node: its packs directory, the secret that verifies received packs,
/// the cluster token's digest and the largest pack it takes.
pub struct NodeApi {
    packs_dir: PathBuf,
    secret: ServerSecret,
    token_digest: [u8; 32],
    max_pack_bytes: u64,
    /// This node in the catalog, which says which packs here are live (no peer may delete
    /// them) and which ones peers may append to.
    this: Option<ThisNode>,
    /// Serializes the appends to each pack.
    locks: PackLocks,
    /// The node's read cache, which peers' writes invalidate.
    reads: Option<ReadCache>,
}

impl NodeApi {
    /// The API over `packs_dir` (which must exist), for the cluster whose nodes share `secret`.
    /// (Transfers a crash left unfinished were swept when the chunk store opened.)
    pub fn new(packs_dir: &FsPath, secret: ServerSecret, max_pack_bytes: u64) -> Self {
        let token_digest = ClusterToken::of(&secret).digest();
        NodeApi {
            packs_dir: packs_dir.to_path_buf(),
            secret,
            token_digest,
            max_pack_bytes,
            this: None,
            locks: PackLocks::default(),
            reads: None,
        }
    }

    /// Drops from `reads` what peers' writes invalidate (without it, invalidations are
    /// confirmed with nothing to drop).
    pub fn invalidating(mut self, reads: ReadCache) -> Self {
        self.reads = Some(reads);
        self
    }

    /// Refuses DELETE of the packs the catalog records a live copy of on `this` node, and
    /// takes appends to the packs it records a `writing` copy of here (without it, every append
    /// is refused).
    pub fn protecting(mut self, this: ThisNode) -> Self {
        self.this = Some(this);
        self
    }

    /// The router that serves the API.
    pub fn router(self) -> Router {
        let api = Arc::new(self);
        Router::new()
            .route(
                PACK_ROUTE,
                put(put_pack).get(get_pack).head(head_pack).delete(delete_pack).patch(append_to_pack),
            )
            .route(INVALIDATE_ROUTE, post(invalidate_reads))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(api.clone(), guard))
            .with_state(api)
    }
}

type Api = State<Arc<NodeApi>>;

/// Lets through only requests with the cluster token and a version this node accepts.
async fn guard(State(api): Api, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let mut response = if !presents(authorization, &api.token_digest) {
        let mut refused = refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the internal API needs the cluster token: `Authorization: Bearer <token>`",
        );
        refused.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        refused
    } else {
        let version = headers.get(VERSION_HEADER).and_then(|value| value.to_str().ok());
        match version.and_then(parse_version) {
            Some(version) if VersionRange::OURS.accepts(version) => next.run(request).await,
            _ => refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_version",
                format!(
                    "this node speaks internal API versions {}; the request said {}",
                    VersionRange::OURS,
                    version.map_or_else(|| format!("nothing in {VERSION_HEADER}"), |v| format!("{v:?}"))
                ),
            ),
        }
    };
    let headers = response.headers_mut();
    headers.insert(VERSION_HEADER, HeaderValue::from(MAX_VERSION));
    if let Ok(range) = HeaderValue::from_str(&VersionRange::OURS.to_string()) {
        headers.insert(ACCEPTS_HEADER, range);
    }
    response
}

fn pack_id(segment: Result<Path<String>, PathRejection>) -> Option<PackId> {
    segment.ok().and_then(|Path(segment)| parse_pack_id(&segment))
}

fn invalid_pack_id() -> Response {
    refuse(StatusCode::BAD_REQUEST, "invalid_pack_id", "a pack id is a positive decimal integer")
}

async fn put_pack(
    State(api): Api,
    segment: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, Response> {
    let id = pack_id(segment).ok_or_else(invalid_pack_id)?;
    if declared_length(&headers).is_some_and(|len| len > api.max_pack_bytes) {
        return Err(refused_transfer(receive::ReceiveError::TooLarge { limit: api.max_pack_bytes }));
    }
    let stream = body.into_data_stream();
    match receive::receive_pack(&api.packs_dir, id, stream, api.max_pack_bytes, &api.secret)
        .await
        .map_err(refused_transfer)?
    {
        Received::Created => Ok(StatusCode::CREATED),
        Received::AlreadyHeld => Ok(StatusCode::OK),
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
}

async fn append_to_pack(
    State(api): Api,
    segment: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, Response> {
    let id = pack_id(segment).ok_or_else(invalid_pack_id)?;
    if let Some(refused) = older_than(&headers, APPEND_VERSION, "appends") {
        return Err(refused);
    }
    let offset = headers.get(OFFSET_HEADER).and_then(|value| value.to_str().ok()).and_then(parse_offset);
    let offset = offset.ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid_offset",
            "Silo-Pack-Offset is 0 or the pack's length here (past its 32-byte header), in decimal digits",
        )
    })?;
    let limit = api.max_pack_bytes;
    if declared_length(&headers).is_some_and(|len| offset.saturating_add(len) > limit) {
        return Err(refused_append(append::AppendError::TooLarge { limit }));
    }
    let append = Append { dir: api.packs_dir.clone(), id, offset, limit, secret: api.secret.clone() };
    let len = append::append(api.this.as_ref(), &api.locks, append, body.into_data_stream())
        .await
        .map_err(refused_append)?;
    Ok(Json(serde_json::json!({ "len": len })))
}

/// The version a request speaks, from its header (the guard let only accepted ones through).
fn version_of(headers: &HeaderMap) -> Option<u32> {
    headers.get(VERSION_HEADER).and_then(|value| value.to_str().ok()).and_then(parse_version)
}

/// The refusal of a request in a version older than `needs`, the one that introduced its route.
fn older_than(headers: &HeaderMap, needs: u32, what: &str) -> Option<Response> {
    version_of(headers).is_none_or(|version| version < needs).then(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_version",
            format!("{what} need internal API version {needs} or later"),
        )
    })
}

async fn invalidate_reads(
    State(api): Api,
    headers: HeaderMap,
    body: Result<Json<Addressed>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, Response> {
    if let Some(refused) = older_than(&headers, READS_VERSION, "read cache invalidations") {
        return Err(refused);
    }
    let Json(addressed) = body.map_err(|err| {
        refuse(StatusCode::BAD_REQUEST, "invalid_invalidation", format!("a JSON invalidation: {err}"))
    })?;
    // Confirmed only by the node meant, and only with a cache to drop from: anything else is
    // refused, and the writer fences the node it meant.
    let Some(reads) = &api.reads else {
        return Err(refuse(StatusCode::CONFLICT, "no_read_cache", "this node keeps no read cache"));
    };
    if api.this.as_ref().is_none_or(|this| this.node.0 != addressed.node) {
        return Err(refuse(
            StatusCode::CONFLICT,
            "wrong_node",
            format!("this is not node {}; its URL in the catalog is stale", addressed.node),
        ));
    }
    reads.invalidate(&addressed.what);
    Ok(StatusCode::NO_CONTENT)
}

async fn get_pack(
    State(api): Api,
    segment: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let id = pack_id(segment).ok_or_else(invalid_pack_id)?;
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(value) => {
            Some(value.to_str().ok().and_then(|text| s3s::dto::Range::parse(text).ok()).ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_range",
                    "one range: `bytes=<first>-[<last>]` or `bytes=-<suffix>`",
                )
            })?)
        }
    };
    if let Some(range) = range {
        match packs::read_range(&api.packs_dir, id, range).await {
            Ok(Some((bytes, span, len))) => {
                return pack_answer(StatusCode::PARTIAL_CONTENT, &span, len)
                    .body(Body::from(bytes))
                    .map_err(internal);
            }
            Ok(None) => {}
            Err(err) => return Ok(refused_read(id, err)),
        }
    }
    let read = match packs::open_pack(&api.packs_dir, id, range).await {
        Ok(read) => read,
        Err(err) => return Ok(refused_read(id, err)),
    };
    let status = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    pack_answer(status, &read.span, read.len)
        .body(Body::from_stream(ReaderStream::with_capacity(read.bytes, READ_CHUNK)))
        .map_err(internal)
}

/// The head of an answer with `span` of a pack of `len` bytes (a range of it when `status` is
/// 206).
fn pack_answer(status: StatusCode, span: &std::ops::Range<u64>, len: u64) -> axum::http::response::Builder {
    let response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, span.end - span.start);
    if status == StatusCode::PARTIAL_CONTENT {
        response.header(header::CONTENT_RANGE, format!("bytes {}-{}/{}", span.start, span.end - 1, len))
    } else {
        response
    }
}

/// The answer to a read of pack `id` that cannot be given.
fn refused_read(id: PackId, err: ReadError) -> Response {
    match err {
        ReadError::NoSuchPack(_) => no_such_pack(id),
        ReadError::Unsatisfiable { len } => {
            let mut response = refuse(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "invalid_range",
                format!("the pack has {len} bytes"),
            );
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            response
        }
        ReadError::Io(err) => internal(err),
    }
}

async fn head_pack(
    State(api): Api,
    segment: Result<Path<String>, PathRejection>,
) -> Result<Response, Response> {
    let id = pack_id(segment).ok_or_else(invalid_pack_id)?;
    match packs::pack_len(&api.packs_dir, id).await.map_err(internal)? {
        Some(len) => Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_LENGTH, len)
            .body(Body::empty())
            .map_err(internal),
        None => Err(no_such_pack(id)),
    }
}

async fn delete_pack(
    State(api): Api,
    segment: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Response> {
    let id = pack_id(segment).ok_or_else(invalid_pack_id)?;
    // Not in the middle of an append to it.
    let _turn = api.locks.lock(id).await;
    if let Some(this) = &api.this
        && holds_live_copy(&this.catalog, id, this.node).await.map_err(internal)?
    {
        return Err(refuse(
            StatusCode::CONFLICT,
            "pack_in_use",
            format!("pack {} holds chunks this node's objects need; it is not deleted", id.0),
        ));
    }
    let removed = packs::delete_pack(&api.packs_dir, id).await.map_err(internal)?;
    if removed {
        tracing::info!(pack = id.0, "deleted a pack at a peer's request");
    }
    Ok(StatusCode::NO_CONTENT)
}

fn no_such_pack(id: PackId) -> Response {
    refuse(StatusCode::NOT_FOUND, "no_such_pack", format!("no pack {} on this node", id.0))
}

async fn not_found(uri: axum::http::Uri) -> Response {
    refuse(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {}", uri.path()))
}
