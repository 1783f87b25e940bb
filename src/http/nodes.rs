//! The storage nodes registered in the catalog, under `/v1/nodes`: the list, and draining and
//! removing a node (`storage_node::model::node_retire`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use storage_node::model::node::{self, Node};
use storage_node::model::node_retire::{self, RetireError, Retiring};
use storage_node::store::StoreError;

use super::{ApiError, AppState};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/nodes", get(list))
        .route("/nodes/{node}/drain", post(drain))
        .route("/nodes/{node}/remove", post(remove))
}

/// `GET /v1/nodes`: every node by name, with its heartbeat and what it holds.
async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Vec<Node>>, ApiError> {
    Ok(Json(node::list(&state.catalog).await.map_err(StoreError::Catalog)?))
}

/// `POST /v1/nodes/{node}/drain`: the node takes no new packs; repair copies its packs away.
async fn drain(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Retiring>, ApiError> {
    Ok(Json(node_retire::drain(&state.catalog, &name, state.repair_grace).await?))
}

/// `POST /v1/nodes/{node}/remove`: refused (409, with the count) while the node holds the last
/// healthy copy of a pack.
async fn remove(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Retiring>, ApiError> {
    Ok(Json(node_retire::remove(&state.catalog, &name, state.repair_grace).await?))
}

impl From<RetireError> for ApiError {
    fn from(err: RetireError) -> Self {
        let (status, code) = match &err {
            RetireError::Catalog(_) => (StatusCode::SERVICE_UNAVAILABLE, "catalog_unavailable"),
            RetireError::UnknownNode(_) => (StatusCode::NOT_FOUND, "not_found"),
            RetireError::Removed(_) => (StatusCode::CONFLICT, "node_removed"),
            RetireError::LastCopies { .. } => (StatusCode::CONFLICT, "last_copies"),
        };
        ApiError::new(status, code, err.to_string())
    }
}
