//! The internal API's refusals: a status and `{"error": {"code": "...", "message": "..."}}`,
//! the shape of the management API's errors. Failures of the node itself are logged here and
//! answered without their details.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::append::{AppendError, LENGTH_HEADER};
use super::receive::ReceiveError;

/// A refusal with a stable machine `code` and a `message` for people.
pub(crate) fn refuse(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message.to_string() } });
    (status, Json(body)).into_response()
}

/// A failure of this node; the details go to the log.
pub(crate) fn internal(err: impl std::fmt::Display) -> Response {
    tracing::error!(error = %err, "internal API request failed");
    refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the node's log")
}

/// The refusal of a transfer.
pub(crate) fn refused_transfer(err: ReceiveError) -> Response {
    let (status, code) = match &err {
        ReceiveError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "pack_too_large"),
        ReceiveError::BodyCut(_) => (StatusCode::BAD_REQUEST, "incomplete_body"),
        ReceiveError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_pack"),
        ReceiveError::Conflict(_) => (StatusCode::CONFLICT, "pack_conflict"),
        ReceiveError::StorageFull => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
        ReceiveError::Io { .. } => return internal(err),
    };
    refuse(status, code, err)
}

/// The refusal of an append; an offset that is not the pack's length names that length.
pub(crate) fn refused_append(err: AppendError) -> Response {
    let (status, code) = match &err {
        AppendError::NotWriting(_) => (StatusCode::CONFLICT, "not_writing"),
        AppendError::WrittenHere(_) => (StatusCode::CONFLICT, "written_here"),
        AppendError::WrongDomain(_) => (StatusCode::FORBIDDEN, "wrong_domain"),
        AppendError::OffsetMismatch { len } => {
            let len = *len;
            let mut refused = refuse(StatusCode::CONFLICT, "offset_mismatch", err);
            refused.headers_mut().insert(LENGTH_HEADER, HeaderValue::from(len));
            return refused;
        }
        AppendError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "pack_too_large"),
        AppendError::BodyCut(_) => (StatusCode::BAD_REQUEST, "incomplete_body"),
        AppendError::Damaged(_) => (StatusCode::UNPROCESSABLE_ENTITY, "damaged"),
        AppendError::StorageFull => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
        AppendError::Io { .. } | AppendError::Catalog(_) => return internal(err),
    };
    refuse(status, code, err)
}
