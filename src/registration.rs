//! This node in the catalog's node registry while it serves: its registration at start (one
//! node per catalog until replication lands, see `storage_node::model::node`), the heartbeat
//! task, and the stop mark of a clean shutdown.

use anyhow::{Context, bail};
use storage_node::catalog::CatalogPool;
use storage_node::model::node::{self, HEARTBEAT_EVERY, Registration};
use storage_node::store::NodeId;
use storage_node::{DataDir, ServerSecret};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;

/// How long a heartbeat or the stop mark may wait for the catalog.
const CATALOG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// This node, registered, with its heartbeat running until [`Registered::stop`].
pub struct Registered {
    pub id: NodeId,
    pool: CatalogPool,
    stop: CancellationToken,
    heartbeat: JoinHandle<()>,
}

/// Registers this node as `config` describes it and starts its heartbeat.
///
/// # Errors
/// A refusal that says what differs (another node, another server secret, an unknown owner, a
/// node with data moved to another zone or owner), or a catalog or data directory failure.
pub async fn register(
    config: &ServeConfig,
    pool: &CatalogPool,
    data_dir: &DataDir,
) -> anyhow::Result<Registered> {
    if let Some(url) = &config.internal_url {
        let parsed = url::Url::parse(url).map_err(|err| anyhow::anyhow!("--internal-url {url:?}: {err}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--internal-url {url:?}: an http:// or https:// URL");
        }
    }
    let capacity_bytes = match config.capacity_bytes {
        Some(bytes) => bytes,
        None => filesystem_bytes(data_dir)?,
    };
    let secret = ServerSecret::load_or_create(data_dir)?;
    let registration = Registration {
        name: config.node_name.clone(),
        zone: config.zone.clone(),
        owner: config.owner.clone(),
        internal_url: config.internal_url.clone(),
        capacity_bytes,
        version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir_id: data_dir.identity()?,
    };
    let id = node::register(pool, &secret, &registration)
        .await
        .with_context(|| format!("cannot start the storage node {:?}", config.node_name))?;
    tracing::info!(node = config.node_name, zone = config.zone, owner = ?config.owner, capacity_bytes, "registered this storage node");
    let stop = CancellationToken::new();
    let heartbeat = tokio::spawn(beat(pool.clone(), id, stop.clone()));
    Ok(Registered { id, pool: pool.clone(), stop, heartbeat })
}

impl Registered {
    /// Stops the heartbeat and marks the node stopped (a clean shutdown).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.heartbeat.await;
        // A catalog that does not answer must not hold up the shutdown.
        match tokio::time::timeout(CATALOG_WAIT, node::mark_stopped(&self.pool, self.id)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "could not mark this node stopped in the catalog"),
            Err(_) => tracing::warn!("the catalog did not answer; this node is not marked stopped"),
        }
    }
}

/// Writes the heartbeat every [`HEARTBEAT_EVERY`] until `stop`; a failure is logged and the
/// next beat tries again.
async fn beat(pool: CatalogPool, id: NodeId, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            beat = tokio::time::timeout(CATALOG_WAIT, node::heartbeat(&pool, id)) => match beat {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "could not write this node's heartbeat"),
                Err(_) => tracing::warn!("the catalog did not answer this node's heartbeat in time"),
            },
        }
    }
}

/// The size of the filesystem that holds the data directory.
fn filesystem_bytes(data_dir: &DataDir) -> anyhow::Result<u64> {
    let stats = nix::sys::statvfs::statvfs(data_dir.path()).with_context(|| {
        format!("cannot read the size of the filesystem of {}", data_dir.path().display())
    })?;
    Ok(stats.blocks().saturating_mul(stats.fragment_size()))
}
