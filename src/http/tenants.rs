//! Tenants, their S3 access keys and their usage, under `/v1/tenants`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use db_manager::tenant_deletion::TenantDeletion;
use db_manager::usage::TenantUsage;
use serde::Deserialize;
use storage_node::catalog::access_keys::{self, AccessKey, NewAccessKey};
use storage_node::catalog::tenants::{self, Tenant, TenantError};

use super::{ApiError, AppState};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/tenants", get(list).post(create))
        .route("/tenants/{tenant}", get(show).patch(update).delete(remove))
        .route("/tenants/{tenant}/keys", get(list_keys).post(create_key))
        .route("/tenants/{tenant}/keys/{key}", delete(revoke_key))
        .route("/tenants/{tenant}/usage", get(usage))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    storage_quota_bytes: Option<u64>,
}

/// `POST /v1/tenants` → 201 with the tenant.
async fn create(
    State(state): State<Arc<AppState>>,
    Json(body): Json<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    refuse_system_tenant(&body.name)?;
    tenants::create(&state.catalog, &body.name, body.storage_quota_bytes).await?;
    Ok((StatusCode::CREATED, Json(tenants::get(&state.catalog, &body.name).await?)))
}

/// `GET /v1/tenants`.
async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Vec<Tenant>>, ApiError> {
    Ok(Json(tenants::list(&state.catalog).await?))
}

/// `GET /v1/tenants/{tenant}`.
async fn show(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(tenants::get(&state.catalog, &tenant).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantPatch {
    /// The new quota; `null` lifts it.
    storage_quota_bytes: Option<u64>,
}

/// `PATCH /v1/tenants/{tenant}` `{"storage_quota_bytes": n | null}`.
async fn update(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Json(patch): Json<TenantPatch>,
) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(tenants::set_quota(&state.catalog, &tenant, patch.storage_quota_bytes).await?))
}

#[derive(Debug, Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
    /// `false`: no final backups of its databases.
    #[serde(default = "yes")]
    final_backup: bool,
}

fn yes() -> bool {
    true
}

/// `DELETE /v1/tenants/{tenant}[?force=true][&final_backup=false]`: refused while the tenant
/// stores anything, unless forced, which deletes all it stores (db-manager's tenant_deletion).
async fn remove(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    refuse_system_tenant(&tenant)?;
    let options = TenantDeletion { force: query.force, final_backup: query.final_backup };
    state.databases.tenant_deletions().delete_tenant(&tenant, options).await?;
    state.s3.keys().forget_all();
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/tenants/{tenant}/keys` → 201 with the secret, shown this one time.
async fn create_key(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> Result<(StatusCode, Json<NewAccessKey>), ApiError> {
    let id = tenants::find(&state.catalog, &tenant).await?;
    let key = access_keys::create(&state.catalog, state.store.server_secret(), id).await?;
    tracing::info!(tenant, access_key_id = key.access_key_id, "created access key");
    Ok((StatusCode::CREATED, Json(key)))
}

/// `GET /v1/tenants/{tenant}/keys`: without secrets.
async fn list_keys(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<AccessKey>>, ApiError> {
    let id = tenants::find(&state.catalog, &tenant).await?;
    Ok(Json(access_keys::list(&state.catalog, id).await?))
}

/// `DELETE /v1/tenants/{tenant}/keys/{key}`: revokes the key at once.
async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Path((tenant, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = tenants::find(&state.catalog, &tenant).await?;
    access_keys::revoke(&state.catalog, id, &key).await?;
    state.s3.keys().forget(&key);
    tracing::info!(tenant, access_key_id = key, "revoked access key");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/tenants/{tenant}/usage`.
async fn usage(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> Result<Json<TenantUsage>, ApiError> {
    let id = tenants::find(&state.catalog, &tenant).await?;
    Ok(Json(state.databases.tenant_usage(id).await?))
}

impl From<TenantError> for ApiError {
    fn from(err: TenantError) -> Self {
        let (status, code) = match &err {
            TenantError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            TenantError::InvalidQuota(_) => (StatusCode::BAD_REQUEST, "invalid_quota"),
            TenantError::Exists(_) => (StatusCode::CONFLICT, "tenant_exists"),
            TenantError::NotFound(_) | TenantError::NoSuchKey(_) => (StatusCode::NOT_FOUND, "not_found"),
            TenantError::Catalog(_) => (StatusCode::SERVICE_UNAVAILABLE, "catalog_unavailable"),
        };
        ApiError::new(status, code, err.to_string())
    }
}

/// The system tenant holds Silo's own data (catalog dumps): nobody creates or deletes it.
fn refuse_system_tenant(name: &str) -> Result<(), ApiError> {
    if name == db_manager::backup::catalog::SYSTEM_TENANT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reserved_name",
            format!("the tenant name {name} is reserved for Silo itself"),
        ));
    }
    Ok(())
}
