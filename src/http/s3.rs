//! Hands a request to the S3 data plane (`s3s`: signatures, XML, routing), after
//! [`storage_node::s3::guard`] has checked its head (and [`storage_node::s3::sig_v2`] a SigV2
//! signature, in constant time), and caps what of its body may be buffered. Every answer gets
//! its request ids ([`storage_node::s3::request_id`]); a `304 Not Modified` goes out with no
//! body, and an error to a request with a body closes the connection.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use storage_node::s3::guard::{self, BodyPolicy, Refusal};
use storage_node::s3::request_id::RequestIds;

use super::{ApiError, AppState};

/// `s3s` answers every path the other routes do not; every answer carries its request ids.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let ids = RequestIds::new();
    let has_body = has_body(request.headers());
    stamp(answer(state, request).await, &ids, has_body).await
}

/// Whether the request announces a body (a length above zero, or a chunked one).
fn has_body(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length.trim() != "0")
}

/// The answer's `x-amz-request-id` and `x-amz-id-2`, and the same ids in an error's body. An
/// error to a request with a body closes the connection: many are answered before the body is
/// read (a signature, a condition, a quota, a busy budget), and a client that reused the
/// connection would have its next request read after the unread body (boto3 got
/// `SignatureDoesNotMatch` for the HEAD it sent after a refused PUT).
async fn stamp(response: Response, ids: &RequestIds, has_body: bool) -> Response {
    let (mut parts, body) = response.into_parts();
    for (name, value) in [("x-amz-request-id", &ids.request_id), ("x-amz-id-2", &ids.host_id)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            parts.headers.insert(name, value);
        }
    }
    if parts.status == StatusCode::NOT_MODIFIED {
        // s3s answers 304 as an error, with an XML document for a body: a 304 has none (its
        // `Content-Length`, set by the handler, is the object's).
        parts.headers.remove(header::CONTENT_TYPE);
        return Response::from_parts(parts, Body::empty());
    }
    if !parts.status.is_client_error() && !parts.status.is_server_error() {
        return Response::from_parts(parts, body);
    }
    if has_body {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // Error documents are small: read it whole and add the ids.
    let bytes = match Limited::new(body, guard::MAX_XML_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Default::default(),
    };
    let body = match ids.stamp_error(&bytes) {
        Some(stamped) => Body::from(stamped),
        None => Body::from(bytes),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

async fn answer(state: Arc<AppState>, request: Request) -> Response {
    let policy = match guard::precheck(request.method(), request.uri(), request.headers(), SystemTime::now())
    {
        Ok(policy) => policy,
        Err(refusal) => return refused(&refusal),
    };
    let (method, uri, headers) = (request.method(), request.uri(), request.headers());
    if let Err(refusal) =
        storage_node::s3::sig_v2::verify(&state.store, state.s3.keys(), method, uri, headers).await
    {
        return refused(&refusal);
    }
    let request = match policy {
        BodyPolicy::Stream => request,
        BodyPolicy::Buffer { limit } => match buffer_unsized(request, limit).await {
            Ok(request) => request,
            Err(refusal) => return refused(&refusal),
        },
    };
    match state.s3.call(request.map(s3s::Body::http_body_unsync)).await {
        Ok(response) => response.map(Body::new),
        Err(err) => {
            tracing::error!(error = ?err, "the S3 service failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error").into_response()
        }
    }
}

/// A body without `Content-Length` (chunked) that `s3s` would buffer is read here, at most
/// `limit` bytes of it, and handed on whole with its length. (A `Content-Length` over the limit
/// was refused by the guard; hyper reads no more than it says.)
async fn buffer_unsized(request: Request, limit: usize) -> Result<Request, Refusal> {
    if request.headers().contains_key(header::CONTENT_LENGTH) {
        return Ok(request);
    }
    let (mut parts, body) = request.into_parts();
    if HttpBody::size_hint(&body).exact() == Some(0) {
        return Ok(Request::from_parts(parts, body));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => return Err(Refusal::body_too_large()),
        Err(_) => {
            return Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                code: "IncompleteBody",
                message: "the request body was cut short".into(),
            });
        }
    };
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn refused(refusal: &Refusal) -> Response {
    tracing::debug!(code = refusal.code, "refused an S3 request before s3s");
    (refusal.status, [(header::CONTENT_TYPE, "application/xml")], refusal.xml()).into_response()
}
