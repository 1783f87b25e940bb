//! Backups of client databases under `/v1/backups`: run, list, prune, restore, verify and
//! download.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use db_manager::backup::BackupInfo;
use db_manager::backup::catalog::CatalogBackup;
use db_manager::backup::restore::{RestoreRequest, Restored, VerifyReport};
use db_manager::backup::retention::Pruned;
use db_manager::backup::run::{RunEvent, RunRequest, RunResult};
use db_manager::states::RunStatus;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/backups", get(list))
        .route("/backups/run", post(run))
        .route("/backups/prune", post(prune))
        .route("/backups/catalog", post(catalog))
        .route("/backups/{id}", get(show))
        .route("/backups/{id}/download", get(download))
        .route("/backups/{id}/restore", post(restore))
        .route("/backups/{id}/verify", post(verify))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    tenant: Option<String>,
    database: Option<String>,
}

/// `GET /v1/backups?tenant=T&database=D`, newest first.
async fn list(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<BackupInfo>>, ApiError> {
    Ok(Json(
        state.databases.backups().list_backups(query.tenant.as_deref(), query.database.as_deref()).await?,
    ))
}

/// `GET /v1/backups/{id}`.
async fn show(State(state): State<Arc<AppState>>, Path(id): Path<i64>) -> Result<Json<BackupInfo>, ApiError> {
    Ok(Json(state.databases.backups().backup(id).await?))
}

#[derive(Debug, Default, Deserialize)]
struct RunQuery {
    /// Answer with one JSON line per event as the run goes (`application/x-ndjson`).
    #[serde(default)]
    stream: bool,
}

/// `POST /v1/backups/run` `{"all" | "tenant" | "database", "force", "verify", "concurrency"}`:
/// runs what is due and answers with every database's result. The run goes on to the end even
/// if the caller hangs up.
async fn run(
    State(state): State<Arc<AppState>>,
    Query(query): Query<RunQuery>,
    Json(request): Json<RunRequest>,
) -> Result<Response, ApiError> {
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let manager = state.databases.clone();
    let progress = events.clone();
    let task = tokio::spawn(async move {
        let results = manager
            .backups()
            .run_backups(request, move |event: RunEvent| {
                let _ = progress.send(serde_json::to_value(&event).unwrap_or_default());
            })
            .await;
        if let Ok(results) = &results {
            let _ = events.send(summary(results));
        }
        results
    });
    if !query.stream {
        let results = task.await.map_err(ApiError::internal)??;
        return Ok(Json(summary(&results)).into_response());
    }
    // Errors of the selection itself come before any event: answer them with their status.
    let first = received.recv().await;
    if first.is_none() {
        task.await.map_err(ApiError::internal)??;
    }
    let lines = futures::stream::iter(first)
        .chain(futures::stream::poll_fn(move |cx| received.poll_recv(cx)))
        .map(|event| Ok::<_, std::convert::Infallible>(format!("{event}\n")));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

fn summary(results: &[RunResult]) -> serde_json::Value {
    let failed = results.iter().filter(|r| r.status == RunStatus::Failed).count();
    json!({ "event": "summary", "failed": failed, "results": results })
}

/// `POST /v1/backups/prune`: deletes what the retention policies no longer keep.
async fn prune(State(state): State<Arc<AppState>>) -> Result<Json<Vec<Pruned>>, ApiError> {
    Ok(Json(state.databases.backups().prune_backups().await?))
}

/// `POST /v1/backups/catalog`: backs up Silo's own catalog and writes its offline manifest.
async fn catalog(State(state): State<Arc<AppState>>) -> Result<Json<CatalogBackup>, ApiError> {
    let manager = state.databases.clone();
    let backup = tokio::spawn(async move { manager.backups().backup_catalog().await })
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(backup))
}

/// `POST /v1/backups/{id}/restore` `{"into": "newdb"}` or `{"in_place": true}`.
async fn restore(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Json(request): Json<RestoreRequest>,
) -> Result<(StatusCode, Json<Restored>), ApiError> {
    let manager = state.databases.clone();
    // A task of its own: a restore is not cut short by a caller hanging up.
    let restored = tokio::spawn(async move { manager.backups().restore_backup(id, request).await })
        .await
        .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, Json(restored)))
}

/// `POST /v1/backups/{id}/verify`: restores into a scratch database and compares row counts.
async fn verify(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Json<VerifyReport>, ApiError> {
    let manager = state.databases.clone();
    let report = tokio::spawn(async move { manager.backups().verify_backup(id).await })
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(report))
}

/// `GET /v1/backups/{id}/download`: the `pg_dump -Fc` archive, streamed. A damaged chunk cuts
/// the body short (the client sees a truncated transfer, never wrong bytes).
async fn download(State(state): State<Arc<AppState>>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let (size, stream) = state.databases.backups().backup_archive(id).await?;
    let body = Body::from_stream(stream.map(move |piece| {
        piece.map_err(move |err| {
            tracing::error!(backup = id, error = %err, "a backup download hit a damaged chunk");
            std::io::Error::other(err.to_string())
        })
    }));
    let disposition = format!("attachment; filename=\"backup-{id}.dump\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}
