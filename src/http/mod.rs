//! The HTTP surface on one listener: probes, metrics and the management API (`/v1`).
//!
//! `/healthz` and `/readyz` are open, as probes expect. Metrics (which name every tenant,
//! database and server) are served only on their own listener (`metrics_listen`), never on the
//! public port. Everything under `/v1` needs the admin bearer token. Every other path is the S3
//! data plane (SigV4-signed by tenants' access keys); bucket names that would collide with these
//! routes are reserved.

mod auth;
mod backups;
mod buckets;
mod databases;
mod error;
mod health;
mod limits;
pub mod listener;
mod metrics;
mod nodes;
mod placement;
mod s3;
mod storage;
mod tenants;
mod timeouts;
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
pub use metrics::{ConnectionMetrics, Metrics};

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
    /// This storage node.
    pub node: NodeInfo,
}

/// This storage node as it registered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub zone: String,
    /// The tenant whose own node this is (shown behind the admin token only).
    pub owner: Option<String>,
    /// The nodes the catalog held at start (not removed).
    pub nodes_in_catalog: i64,
    /// The copies a shared tenant's pack got by default at start: one on a one-node (or
    /// one-zone) deployment, two where the shared nodes span two zones.
    pub copies: i64,
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
    /// What this node's repairer did (`/metrics`).
    pub repair: Arc<storage_node::repair::RepairStats>,
    /// How long a silent node's copies still count (`remove` refuses by it).
    pub repair_grace: std::time::Duration,
}

/// The whole application router.
pub fn router(state: Arc<AppState>) -> Router {
    let management = v1::router()
        .fallback(error::not_found)
        .layer(limits::default_body_limit())
        .layer(axum::middleware::from_fn(limits::refuse_large_bodies))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_admin));
    Router::new()
        // Other methods on the probe paths go to S3, which answers InvalidBucketName.
        .route("/healthz", get(health::healthz).fallback(s3::handle))
        .route("/readyz", get(health::readyz).fallback(s3::handle))
        .route("/metrics", get(metrics::elsewhere).fallback(s3::handle))
        .nest("/v1", management)
        .fallback(s3::handle)
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// The router of the metrics listener: `GET /metrics` alone.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new().route("/metrics", get(metrics::render)).with_state(state)
}
