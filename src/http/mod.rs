//! The HTTP surface on one listener: probes, metrics and the management API (`/v1`).
//!
//! `/healthz`, `/readyz` and `/metrics` are open, as probes and scrapers expect. Everything under
//! `/v1` needs the admin bearer token. Every other path is the S3 data plane (SigV4-signed by
//! tenants' access keys); bucket names that would collide with these routes are reserved.

mod auth;
mod backups;
mod buckets;
mod databases;
mod error;
mod health;
mod metrics;
mod storage;
mod tenants;
mod v1;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::get;
use db_manager::instance::InstanceHealth;
use storage_node::DataDir;
use storage_node::catalog::CatalogPool;
use tokio::sync::watch;

pub use auth::digest as auth_digest;
pub use error::ApiError;
pub use metrics::Metrics;

/// Where the catalog Postgres runs, and how healthy it is.
#[derive(Debug, Clone)]
pub enum CatalogServer {
    /// An external server; its health is whatever the catalog ping says.
    External,
    /// The embedded instance, with its supervisor's health feed and restart counter.
    Embedded { health: watch::Receiver<InstanceHealth>, restarts: Arc<std::sync::atomic::AtomicU64> },
}

/// Facts about this server that the API reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerInfo {
    pub version: &'static str,
    pub catalog_id: String,
    pub catalog_schema: db_manager::catalog::SchemaVersions,
    pub postgres_mode: &'static str,
    pub postgres_version: String,
    pub started_at: String,
}

/// Everything a request handler may need.
pub struct AppState {
    pub catalog: CatalogPool,
    pub store: storage_node::store::ChunkStore,
    /// Client databases and the servers they live on.
    pub databases: db_manager::DbManager,
    pub data_dir: Arc<DataDir>,
    pub catalog_server: CatalogServer,
    pub admin_token_digest: [u8; 32],
    pub metrics: Metrics,
    /// Set once shutdown begins, so that `/readyz` sends traffic elsewhere while requests drain.
    pub draining: AtomicBool,
    pub info: ServerInfo,
    /// The S3 data plane, which answers every path the routes above do not.
    pub s3: storage_node::s3::S3Front,
}

/// Hands a request to the S3 data plane (s3s: SigV4, XML, routing).
async fn s3(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.s3.call(request.map(s3s::Body::http_body_unsync)).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(err) => {
            tracing::error!(error = ?err, "the S3 service failed");
            ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
                .into_response()
        }
    }
}

/// The whole application router.
pub fn router(state: Arc<AppState>) -> Router {
    let management = v1::router()
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_admin));
    Router::new()
        // Other methods on the probe paths go to S3, which answers InvalidBucketName.
        .route("/healthz", get(health::healthz).fallback(s3))
        .route("/readyz", get(health::readyz).fallback(s3))
        .route("/metrics", get(metrics::render).fallback(s3))
        .nest("/v1", management)
        .fallback(s3)
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}
