//! The admin bearer token that guards `/v1`.
//!
//! Tokens are compared as BLAKE3 digests in constant time, so neither the content nor the
//! length of the expected token leaks through timing.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// The digest the presented token is compared against.
pub fn digest(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Lets the request through only with `Authorization: Bearer <admin token>`.
pub async fn require_admin(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim);
    let error = match presented {
        None => "missing admin token: send `Authorization: Bearer <token>`",
        Some(token) if bool::from(digest(token).ct_eq(&state.admin_token_digest)) => {
            return next.run(request).await;
        }
        Some(_) => "invalid admin token",
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}
