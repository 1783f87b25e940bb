//! A tenant's placement policy under `/v1/tenants/{tenant}/placement`: which nodes its packs
//! go to (shared or its own), how many copies in distinct zones, in which zones, and what a
//! write does when too few zones can take it (`storage_node::placement`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use storage_node::placement::{self, PlacementError, PlacementView, PolicyChange};

use super::{ApiError, AppState};

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/tenants/{tenant}/placement", get(show).put(update))
}

/// `GET /v1/tenants/{tenant}/placement`: the policy and what it comes to now.
async fn show(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> Result<Json<PlacementView>, ApiError> {
    Ok(Json(placement::show_policy(&state.catalog, &tenant).await?))
}

/// `PUT /v1/tenants/{tenant}/placement` with the fields to change (absent ones keep their
/// value; `null` resets the replication factor or the allowed zones to the default).
async fn update(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Json(change): Json<PolicyChange>,
) -> Result<Json<PlacementView>, ApiError> {
    Ok(Json(placement::set_policy(&state.catalog, &tenant, &change).await?))
}

impl From<PlacementError> for ApiError {
    fn from(err: PlacementError) -> Self {
        use PlacementError as E;
        let (status, code) = match &err {
            E::UnknownTenant(_) => (StatusCode::NOT_FOUND, "not_found"),
            E::InvalidReplicationFactor(_) => (StatusCode::BAD_REQUEST, "invalid_replication_factor"),
            E::InvalidZone(_) | E::NoZones => (StatusCode::BAD_REQUEST, "invalid_zone"),
            E::NoOwnedNodes { .. } | E::ZoneWithoutNode { .. } | E::TooFewZones { .. } => {
                (StatusCode::CONFLICT, "placement_unmet")
            }
            E::Shortage { .. } => (StatusCode::SERVICE_UNAVAILABLE, "placement_shortage"),
            E::Catalog(_) => (StatusCode::SERVICE_UNAVAILABLE, "catalog_unavailable"),
        };
        ApiError::new(status, code, err.to_string())
    }
}
