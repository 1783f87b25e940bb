//! The cap on management API (`/v1`) request bodies: JSON, at most [`MAX_JSON_BODY`].
//!
//! A `Content-Length` over the cap is refused before the body is read; a body without one is
//! cut off at the cap by axum's `DefaultBodyLimit`, which the JSON extractor obeys.

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The largest JSON body the management API reads.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// The layer that caps bodies read by extractors.
pub fn default_body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_JSON_BODY)
}

/// Refuses a declared body over the cap with 413, before anything of it is read.
pub async fn refuse_large_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_JSON_BODY as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are at most {MAX_JSON_BODY} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}
