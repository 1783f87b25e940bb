//! The storage nodes registered in the catalog, under `/v1/nodes`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use storage_node::model::node::{self, Node};
use storage_node::store::StoreError;

use super::{ApiError, AppState};

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/nodes", get(list))
}

/// `GET /v1/nodes`: every node by name, with its heartbeat and what it holds.
async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Vec<Node>>, ApiError> {
    Ok(Json(node::list(&state.catalog).await.map_err(StoreError::Catalog)?))
}
