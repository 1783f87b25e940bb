//! Buckets under `/v1/buckets`: see one, and mark it public-read for website assets.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use storage_node::model::bucket::{BucketInfo, info as bucket_info};

use super::{ApiError, AppState};

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/buckets/{bucket}", get(show).patch(update))
}

/// `GET /v1/buckets/{bucket}`.
async fn show(
    State(state): State<Arc<AppState>>,
    Path(bucket): Path<String>,
) -> Result<Json<BucketInfo>, ApiError> {
    found(bucket_info(&state.store, &bucket, None).await.map_err(ApiError::internal)?, &bucket)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketPatch {
    public_read: bool,
}

/// `PATCH /v1/buckets/{bucket}` `{"public_read": true}`: anonymous GET and HEAD then work.
async fn update(
    State(state): State<Arc<AppState>>,
    Path(bucket): Path<String>,
    Json(patch): Json<BucketPatch>,
) -> Result<Json<BucketInfo>, ApiError> {
    let info = bucket_info(&state.store, &bucket, Some(patch.public_read)).await.map_err(ApiError::from)?;
    tracing::info!(bucket, public_read = patch.public_read, "changed bucket access");
    found(info, &bucket)
}

fn found(info: Option<BucketInfo>, bucket: &str) -> Result<Json<BucketInfo>, ApiError> {
    info.map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no bucket named {bucket}")))
}
