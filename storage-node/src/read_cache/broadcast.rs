//! The writer's side of the read cache: after a write commits and before it is acknowledged,
//! what it made stale is dropped from this node's cache and from every node that may hold a
//! lease, over the internal API. A node that does not confirm within [`CONFIRM_WITHIN`] is
//! fenced, and the write waits until that node's lease has surely run out.

use std::time::Duration;

use futures::future::join_all;

use super::Invalidation;
use super::lease::LEASE;
use crate::catalog::CatalogError;
use crate::node_state::NodeId;
use crate::store::{ChunkStore, StoreError};

/// How long a peer may take to confirm an invalidation before it is fenced.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(1);
/// The writer asks every node that stamped its lease within this (a quarter more than a lease,
/// for clocks that run at slightly different rates), and waits this long after fencing one: a
/// node's lease runs [`LEASE`] from before its stamp, and a renewal that reads the raised fence
/// empties the cache.
pub const SEEN_WITHIN: Duration = Duration::from_millis(LEASE.as_millis() as u64 * 5 / 4);
/// How many times the catalog is asked before the write gives up on confirming (it is
/// committed; the client sees a 503 and may retry).
const CATALOG_ATTEMPTS: usize = 5;

/// A peer that may hold a lease: its id and where its internal API is, if anywhere.
struct Leased {
    node: NodeId,
    url: Option<String>,
}

/// Drops `what` from every node's read cache: this one's at once, each leased peer's over the
/// internal API, fencing and waiting out the peers that do not confirm.
///
/// # Errors
/// [`StoreError::Catalog`] when the catalog cannot say which peers hold a lease, or fence one,
/// after a few attempts.
pub async fn everywhere(store: &ChunkStore, what: &Invalidation) -> Result<(), StoreError> {
    store.read_cache().invalidate(what);
    let peers = with_retries(|| leased_peers(store)).await?;
    if peers.is_empty() {
        return Ok(());
    }
    let asked = peers.into_iter().map(|peer| async move {
        let confirmed = match &peer.url {
            Some(url) => confirm(store, peer.node, url, what).await,
            None => false,
        };
        (peer.node, confirmed)
    });
    let unconfirmed: Vec<NodeId> =
        join_all(asked).await.into_iter().filter(|(_, confirmed)| !confirmed).map(|(node, _)| node).collect();
    if unconfirmed.is_empty() {
        return Ok(());
    }
    with_retries(|| fence(store, &unconfirmed)).await?;
    for _ in &unconfirmed {
        store.read_cache().note_fence();
    }
    tracing::warn!(
        nodes = ?unconfirmed.iter().map(|node| node.0).collect::<Vec<_>>(),
        "peers did not confirm a read cache invalidation; fenced them, waiting out their lease"
    );
    tokio::time::sleep(SEEN_WITHIN).await;
    Ok(())
}

/// Whether `node` at `url` confirmed the invalidation in time.
async fn confirm(store: &ChunkStore, node: NodeId, url: &str, what: &Invalidation) -> bool {
    let Ok(client) = store.peer(node, url) else { return false };
    match tokio::time::timeout(CONFIRM_WITHIN, client.invalidate_reads(what)).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::debug!(node = node.0, error = %err, "a peer refused a read cache invalidation");
            false
        }
        Err(_) => false,
    }
}

/// The other nodes that stamped a lease lately.
async fn leased_peers(store: &ChunkStore) -> Result<Vec<Leased>, CatalogError> {
    let client = store.catalog().get().await?;
    let rows = client
        .query(
            "SELECT id, internal_url FROM storage_nodes \
             WHERE id <> $1 AND cache_lease_at > now() - make_interval(secs => $2)",
            &[&store.node().0, &SEEN_WITHIN.as_secs_f64()],
        )
        .await?;
    Ok(rows.iter().map(|row| Leased { node: NodeId(row.get(0)), url: row.get(1) }).collect())
}

/// Raises the fence of `nodes`: each empties its cache at its next renewal.
async fn fence(store: &ChunkStore, nodes: &[NodeId]) -> Result<(), CatalogError> {
    let ids: Vec<i32> = nodes.iter().map(|node| node.0).collect();
    let client = store.catalog().get().await?;
    client
        .execute("UPDATE storage_nodes SET cache_fence = cache_fence + 1 WHERE id = ANY($1)", &[&ids])
        .await?;
    Ok(())
}

/// `call`, again after a short pause while the catalog fails, up to [`CATALOG_ATTEMPTS`] times.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CatalogError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt >= CATALOG_ATTEMPTS => return Err(err.into()),
            Err(err) => {
                tracing::debug!(error = %err, attempt, "the catalog failed confirming a read cache invalidation");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
