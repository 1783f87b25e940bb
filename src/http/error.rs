//! JSON errors of the management API: `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to an API client: a status, a stable machine code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    /// A failure of Silo itself. The details go to the log, not to the client.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

/// The answer for a path that names nothing.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {}", uri.path()))
}

impl From<storage_node::store::StoreError> for ApiError {
    fn from(err: storage_node::store::StoreError) -> Self {
        use storage_node::store::StoreError as E;
        let err = match err {
            E::Placement(placement) => return ApiError::from(placement),
            other => other,
        };
        let (status, code) = match &err {
            E::UnknownTenant(_) | E::NoSuchObject(_) => (StatusCode::NOT_FOUND, "not_found"),
            E::InvalidRange { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "invalid_range"),
            E::QuotaExceeded { .. } => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
            E::StorageFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            E::Truncated { .. } | E::LongerThanAnnounced { .. } | E::Source(_) => {
                (StatusCode::BAD_REQUEST, "incomplete_body")
            }
            E::ChunkVanished { .. }
            | E::CopyFailed { .. }
            | E::Retry(_)
            | E::MemoryBusy { .. }
            | E::Unconfirmed(_) => (StatusCode::SERVICE_UNAVAILABLE, "retry"),
            E::Catalog(_) => (StatusCode::SERVICE_UNAVAILABLE, "catalog_unavailable"),
            E::Integrity { .. }
            | E::ChunkUnavailable { .. }
            | E::Io { .. }
            | E::Task(_)
            | E::NeedsExclusive
            | E::Placement(_)
            | E::Config(_)
            | E::DataDir(_) => {
                return ApiError::internal(err);
            }
        };
        ApiError::new(status, code, err.to_string())
    }
}

impl From<db_manager::DbError> for ApiError {
    fn from(err: db_manager::DbError) -> Self {
        use db_manager::DbError as E;
        let (status, code) = match &err {
            E::InvalidName(_) | E::InvalidServerName(_) | E::ReservedName { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_name")
            }
            E::UnknownPlan { .. } => (StatusCode::BAD_REQUEST, "unknown_plan"),
            E::UnknownZone { .. } => (StatusCode::BAD_REQUEST, "unknown_zone"),
            E::InvalidServer(_) => (StatusCode::BAD_REQUEST, "invalid_server"),
            E::TenantNotFound(_) | E::NotFound { .. } | E::ServerNotFound(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            E::Exists { .. } | E::ServerExists(_) | E::RoleTaken { .. } | E::DatabaseTaken { .. } => {
                (StatusCode::CONFLICT, "already_exists")
            }
            E::Busy { .. } => (StatusCode::CONFLICT, "busy"),
            E::DeletionProtected { .. } => (StatusCode::CONFLICT, "deletion_protected"),
            E::TenantNotEmpty { .. } => (StatusCode::CONFLICT, "tenant_not_empty"),
            E::TenantOwnsNodes { .. } => (StatusCode::CONFLICT, "tenant_owns_nodes"),
            E::TenantDeleting(_) => (StatusCode::CONFLICT, "tenant_deleting"),
            E::BackupNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            E::BackupNotComplete { .. } => (StatusCode::CONFLICT, "backup_not_complete"),
            E::BackupBusy { .. } => (StatusCode::CONFLICT, "busy"),
            E::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            E::Integrity { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "backup_damaged"),
            E::Dump { .. } => (StatusCode::BAD_GATEWAY, "backup_failed"),
            E::BackupOverQuota { .. } => (StatusCode::CONFLICT, "quota_exceeded"),
            E::Restore { .. } => (StatusCode::BAD_GATEWAY, "restore_failed"),
            E::Store(inner) => {
                return match inner {
                    storage_node::store::StoreError::QuotaExceeded { .. } => {
                        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded", err.to_string())
                    }
                    _ => ApiError::internal(err),
                };
            }
            E::ServerInUse { .. } => (StatusCode::CONFLICT, "server_in_use"),
            E::IdempotencyMismatch => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            E::NoServer { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_server"),
            E::ServerUnreachable { .. } => (StatusCode::BAD_GATEWAY, "server_unreachable"),
            E::Server { .. } => (StatusCode::BAD_GATEWAY, "server_error"),
            E::Catalog(_) => (StatusCode::SERVICE_UNAVAILABLE, "catalog_unavailable"),
            E::SealedSecret | E::Instance(_) | E::DataDir(_) => return ApiError::internal(err),
        };
        ApiError::new(status, code, err.to_string())
    }
}
