//! Liveness and readiness probes.
//!
//! `/healthz` answers while the process serves HTTP. `/readyz` answers 200 only while the
//! catalog takes a query, the data directory takes a write, the embedded Postgres (if any) is
//! up, and the server is not draining; otherwise 503 with the failing checks. It also says which
//! node this is and how many copies it keeps (`node`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use db_manager::instance::InstanceHealth;
use serde_json::{Value, json};

use super::{AppState, CatalogServer};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let (catalog, data_dir) = tokio::join!(check_catalog(&state), check_data_dir(&state));
    let node = this_node(&state);
    let mut checks = vec![("catalog", catalog), ("data_dir", data_dir)];
    if let CatalogServer::Embedded { health, .. } = &state.catalog_server {
        checks.push(("embedded_postgres", check_embedded(&health.borrow())));
    }
    if state.draining.load(Ordering::Relaxed) {
        checks.push(("draining", Err("the server is shutting down".into())));
    }
    let failures: Vec<String> = checks
        .iter()
        .filter_map(|(name, result)| result.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    let details: serde_json::Map<String, Value> = checks
        .into_iter()
        .map(|(name, result)| {
            let value = match result {
                Ok(()) => json!({ "ok": true }),
                Err(error) => json!({ "ok": false, "error": error }),
            };
            (name.to_string(), value)
        })
        .collect();
    state.metrics.set_ready(failures.is_empty());
    if failures.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready", "checks": details, "node": node })))
    } else {
        let reason = failures.join("; ");
        let body = json!({ "status": "unavailable", "reason": reason, "checks": details, "node": node });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}

/// This node, how many nodes the catalog held at start and how many copies of a pack it kept
/// by default then (one on the embedded one-node default). Read from memory: an anonymous probe
/// costs no catalog connection, and names no tenant (the owner is in `/v1/info`).
fn this_node(state: &AppState) -> Value {
    let info = &state.info.node;
    json!({
        "name": info.name,
        "zone": info.zone,
        "nodes_in_catalog": info.nodes_in_catalog,
        "copies": info.copies,
    })
}

async fn check_catalog(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, storage_node::catalog::ping(&state.catalog)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

async fn check_data_dir(state: &Arc<AppState>) -> Result<(), String> {
    let probing = state.clone();
    let probe = tokio::task::spawn_blocking(move || probing.data_dir.check_writable());
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(err))) => Err(err.to_string()),
        Ok(Err(join)) => Err(join.to_string()),
        Err(_) => Err(format!("a write did not finish within {CHECK_TIMEOUT:?}")),
    }
}

fn check_embedded(health: &InstanceHealth) -> Result<(), String> {
    match health {
        InstanceHealth::Up { .. } => Ok(()),
        InstanceHealth::Down { reason } | InstanceHealth::Failed { reason } => Err(reason.clone()),
    }
}
