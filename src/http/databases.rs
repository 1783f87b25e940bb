//! Client databases under `/v1/tenants/{tenant}/databases`, and the Postgres servers they live
//! on under `/v1/servers`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use db_manager::databases::{CreateRequest, Credentials, DatabaseInfo, UpdateRequest};
use db_manager::dedicated::DedicatedRequest;
use db_manager::servers::{Registration, Server};
use serde::Deserialize;

use super::{ApiError, AppState};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/servers", get(list_servers).post(add_server))
        .route("/servers/{server}", get(show_server).delete(remove_server))
        .route("/tenants/{tenant}/databases", get(list).post(create))
        .route("/tenants/{tenant}/databases/{database}", get(show).patch(update).delete(remove))
        .route("/tenants/{tenant}/databases/{database}/rotate-credentials", post(rotate))
}

/// `POST /v1/tenants/{tenant}/databases` → 201 with the credentials, shown here and on
/// rotation only. An `Idempotency-Key` header makes a retry return the first result.
async fn create(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Json(request): Json<CreateRequest>,
) -> Result<(StatusCode, Json<Credentials>), ApiError> {
    let key = match headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|key| !key.is_empty() && key.len() <= 255)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1-255 visible ASCII characters",
                    )
                })?
                .to_string(),
        ),
        None => None,
    };
    let created = state.databases.databases().create_database(&tenant, request, key).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/tenants/{tenant}/databases`.
async fn list(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<DatabaseInfo>>, ApiError> {
    Ok(Json(state.databases.databases().list_databases(&tenant).await?))
}

/// `GET /v1/tenants/{tenant}/databases/{database}`, with its recent state changes.
async fn show(
    State(state): State<Arc<AppState>>,
    Path((tenant, database)): Path<(String, String)>,
) -> Result<Json<DatabaseInfo>, ApiError> {
    Ok(Json(state.databases.databases().database(&tenant, &database).await?))
}

/// `PATCH /v1/tenants/{tenant}/databases/{database}` `{"plan": ..., "deletion_protection": ...}`.
async fn update(
    State(state): State<Arc<AppState>>,
    Path((tenant, database)): Path<(String, String)>,
    Json(update): Json<UpdateRequest>,
) -> Result<Json<DatabaseInfo>, ApiError> {
    Ok(Json(state.databases.databases().update_database(&tenant, &database, update).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long sessions opened with the old password may go on, in seconds.
    #[serde(default)]
    grace_secs: u64,
}

/// `POST .../rotate-credentials` `{"grace_secs": n}` (optional body) → the new credentials.
async fn rotate(
    State(state): State<Arc<AppState>>,
    Path((tenant, database)): Path<(String, String)>,
    body: Option<Json<RotateRequest>>,
) -> Result<Json<Credentials>, ApiError> {
    let grace = Duration::from_secs(body.map(|Json(b)| b.grace_secs).unwrap_or_default());
    Ok(Json(state.databases.databases().rotate_credentials(&tenant, &database, grace).await?))
}

#[derive(Debug, Default, Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    skip_final_backup: bool,
}

/// `DELETE /v1/tenants/{tenant}/databases/{database}[?skip_final_backup=true]`.
async fn remove(
    State(state): State<Arc<AppState>>,
    Path((tenant, database)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    state.databases.backups().delete_database(&tenant, &database, query.skip_final_backup).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/servers`.
async fn list_servers(State(state): State<Arc<AppState>>) -> Result<Json<Vec<Server>>, ApiError> {
    Ok(Json(state.databases.fleet().list().await?))
}

/// `GET /v1/servers/{server}`.
async fn show_server(
    State(state): State<Arc<AppState>>,
    Path(server): Path<String>,
) -> Result<Json<Server>, ApiError> {
    Ok(Json(db_manager::servers::get(state.databases.pool(), &server).await?))
}

/// `POST /v1/servers`: either a registration `{"name", "url", "zone", "owner"}` or a dedicated
/// instance `{"dedicated_for", "plan"}`.
async fn add_server(
    State(state): State<Arc<AppState>>,
    Json(body): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<Server>), ApiError> {
    let invalid =
        |err: serde_json::Error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", err.to_string());
    let server = if body.get("dedicated_for").is_some() {
        state
            .databases
            .fleet()
            .create_dedicated(serde_json::from_value::<DedicatedRequest>(body).map_err(invalid)?)
            .await?
    } else {
        state
            .databases
            .fleet()
            .register(serde_json::from_value::<Registration>(body).map_err(invalid)?)
            .await?
    };
    Ok((StatusCode::CREATED, Json(server)))
}

/// `DELETE /v1/servers/{server}`: refused while it holds databases.
async fn remove_server(
    State(state): State<Arc<AppState>>,
    Path(server): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.databases.fleet().remove(&server).await?;
    Ok(StatusCode::NO_CONTENT)
}
