//! The read cache's lease: a node stamps `storage_nodes.cache_lease_at` every [`RENEW_EVERY`]
//! and answers from its cache for [`LEASE`] after it sent the stamp that succeeded.
//!
//! A node that peers cannot reach (it has no internal URL) gets a lease only while no other
//! live node shares the catalog: the embedded default, alone, caches; a second node's writes
//! could not tell it what they replaced.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::ReadCache;
use crate::catalog::{CatalogError, CatalogPool};
use crate::node_state::{LIVE_WITHIN, NodeId};

/// How long a lease runs from the moment its renewal was sent.
pub const LEASE: Duration = Duration::from_secs(2);
/// How often a node renews its lease: a renewal may fail or be slow three times in a row
/// before the lease lapses.
pub const RENEW_EVERY: Duration = Duration::from_millis(500);

/// Renews `cache`'s lease for `node` until `stop`, then gives it up in the catalog, so that
/// writers stop asking this node at once.
pub async fn keep_leased(cache: ReadCache, pool: CatalogPool, node: NodeId, stop: CancellationToken) {
    let mut failing = false;
    loop {
        let sent = Instant::now();
        match tokio::time::timeout(LEASE, renew(&pool, node)).await {
            Ok(Ok(Some(fence))) => {
                cache.renewed(sent, fence);
                failing = false;
            }
            Ok(Ok(None)) => cache.unleased(),
            Ok(Err(err)) if !failing => {
                tracing::warn!(error = %err, "cannot renew the read cache's lease; reads go to the catalog");
                failing = true;
            }
            Ok(Err(_)) => {}
            Err(_) if !failing => {
                tracing::warn!("renewing the read cache's lease took too long; reads go to the catalog");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
    }
    cache.unleased();
    if let Err(err) = release(&pool, node).await {
        tracing::debug!(error = %err, "could not give up the read cache's lease; it lapses");
    }
}

/// Stamps the lease and returns the node's fence; `None` when this node may not cache (peers
/// cannot reach it, and it is not alone).
async fn renew(pool: &CatalogPool, node: NodeId) -> Result<Option<i64>, CatalogError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "UPDATE storage_nodes SET cache_lease_at = now() \
             WHERE id = $1 AND (internal_url IS NOT NULL OR NOT EXISTS ( \
                 SELECT 1 FROM storage_nodes o WHERE o.id <> $1 AND o.stopped_at IS NULL \
                    AND o.heartbeat_at > now() - make_interval(secs => $2))) \
             RETURNING cache_fence",
            &[&node.0, &LIVE_WITHIN.as_secs_f64()],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}

async fn release(pool: &CatalogPool, node: NodeId) -> Result<(), CatalogError> {
    let client = pool.get().await?;
    client.execute("UPDATE storage_nodes SET cache_lease_at = NULL WHERE id = $1", &[&node.0]).await?;
    Ok(())
}
