//! Storage administration under `/v1/storage`: run GC or a scrub now.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use storage_node::store::{GcReport, ScrubReport};

use super::{ApiError, AppState};

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/storage/gc", post(gc)).route("/storage/scrub", post(scrub))
}

/// `POST /v1/storage/gc`: one full GC pass, now.
async fn gc(State(state): State<Arc<AppState>>) -> Result<Json<GcReport>, ApiError> {
    Ok(Json(state.store.gc().await?))
}

#[derive(Debug, Deserialize)]
struct ScrubQuery {
    /// The share of chunks to verify, from 0 to 1 (default 1: all).
    sample: Option<f64>,
}

/// `POST /v1/storage/scrub?sample=0.1`: verify the chunks on this node.
async fn scrub(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ScrubQuery>,
) -> Result<Json<ScrubReport>, ApiError> {
    let sample = query.sample.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample) || sample.is_nan() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_sample",
            "sample must be between 0 and 1",
        ));
    }
    Ok(Json(state.store.scrub(sample).await?))
}
