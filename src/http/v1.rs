//! The management API under `/v1` (admin token required; see `docs/openapi.yaml`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::{AppState, ServerInfo};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/info", get(info))
        .merge(super::storage::router())
        .merge(super::tenants::router())
        .merge(super::buckets::router())
        .merge(super::databases::router())
        .merge(super::backups::router())
        .merge(super::nodes::router())
        .merge(super::placement::router())
}

/// `GET /v1/info`: the version, the catalog this server is attached to, and its Postgres.
async fn info(State(state): State<Arc<AppState>>) -> Json<ServerInfo> {
    Json(state.info.clone())
}
