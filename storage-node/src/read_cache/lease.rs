//! The read cache's lease: a node stamps `storage_nodes.cache_lease_at` every [`RENEW_EVERY`]
//! and answers from its cache for [`LEASE`] after it sent the stamp that succeeded.
//!
//! No lease is granted:
//! - while a live node of an older release shares the catalog (its writes would not invalidate
//!   anything; `storage_nodes.invalidates_reads` is false for it): during a rolling upgrade the
//!   cache is off everywhere;
//! - to a node that peers cannot reach (it has no internal URL) while any other live node shares
//!   the catalog: the embedded default, alone, caches;
//! - for [`FENCED_FOR`] after a writer fenced this node: a peer that cannot reach it would
//!   otherwise fence it, and wait, at every write.
//!
//! A renewal never clears the stamp itself: writers must go on asking a node until it has
//! stopped answering from its cache. A refused or fenced node first gives up its lease here,
//! then clears its stamp, so that writers stop asking it.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::ReadCache;
use crate::catalog::{CatalogError, CatalogPool};
use crate::node_state::{LIVE_WITHIN, NodeId};

/// How long a lease runs from the moment its renewal was sent.
pub const LEASE: Duration = Duration::from_secs(2);
/// How often a node renews its lease: a renewal may fail outright twice in a row, or take up
/// to about 1.5 s, before the lease lapses.
pub const RENEW_EVERY: Duration = Duration::from_millis(500);
/// How long a fenced node goes without a lease.
pub const FENCED_FOR: Duration = Duration::from_secs(10);

/// What a renewal found.
enum Renewal {
    /// Stamped: the lease runs, under this fence.
    Leased(i64),
    /// A writer raised the fence to this since the last renewal: no lease (the stamp is left
    /// as it was; it is cleared once the cache is emptied).
    Fenced(i64),
    /// This node may not cache now (see the module's doc): no lease (the stamp is cleared
    /// once the cache is emptied).
    Refused,
}

/// Renews `cache`'s lease for `node` until `stop`, then gives it up in the catalog, so that
/// writers stop asking this node at once.
pub async fn keep_leased(cache: ReadCache, pool: CatalogPool, node: NodeId, stop: CancellationToken) {
    let mut fence = None;
    let mut fenced_until: Option<Instant> = None;
    let mut failing = false;
    loop {
        if fenced_until.is_none_or(|until| Instant::now() >= until) {
            let sent = Instant::now();
            match tokio::time::timeout(LEASE, renew(&pool, node, fence)).await {
                // Not once the internal API stopped: peers could not tell this node anything.
                Ok(Ok(Renewal::Leased(_))) if stop.is_cancelled() => break,
                Ok(Ok(Renewal::Leased(now))) => {
                    cache.renewed(sent, now);
                    (fence, fenced_until, failing) = (Some(now), None, false);
                }
                Ok(Ok(Renewal::Fenced(now))) => {
                    cache.unleased();
                    release_logged(&pool, node).await;
                    (fence, fenced_until) = (Some(now), Some(Instant::now() + FENCED_FOR));
                    tracing::warn!(
                        "a peer could not tell this node what its write replaced: the read cache is off for {}s",
                        FENCED_FOR.as_secs()
                    );
                }
                Ok(Ok(Renewal::Refused)) => {
                    if cache.leased() {
                        cache.unleased();
                        release_logged(&pool, node).await;
                    }
                }
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
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
    }
    cache.unleased();
    release_logged(&pool, node).await;
}

/// Clears this node's stamp once it answers from its cache no more; a failure only means that
/// writers go on asking it until the stamp is old.
async fn release_logged(pool: &CatalogPool, node: NodeId) {
    match tokio::time::timeout(LEASE, release(pool, node)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "could not clear the read cache's stamp; it ages out"),
        Err(_) => tracing::debug!("clearing the read cache's stamp took too long; it ages out"),
    }
}

/// Stamps the lease if this node may cache and its fence is still `fence` (any fence on the
/// first renewal); otherwise leaves the stamp as it is (see the module's doc). A stamp never
/// moves back (a renewal that committed late, after the next one).
async fn renew(pool: &CatalogPool, node: NodeId, fence: Option<i64>) -> Result<Renewal, CatalogError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "WITH allowed AS ( \
                 SELECT NOT EXISTS ( \
                     SELECT 1 FROM storage_nodes me, storage_nodes o \
                     WHERE me.id = $1 AND o.id <> $1 AND o.stopped_at IS NULL \
                       AND o.heartbeat_at > now() - make_interval(secs => $2) \
                       AND (me.internal_url IS NULL OR NOT o.invalidates_reads)) AS ok) \
             UPDATE storage_nodes SET cache_lease_at = \
                 CASE WHEN (SELECT ok FROM allowed) AND ($3::int8 IS NULL OR cache_fence = $3) \
                      THEN greatest(cache_lease_at, now()) ELSE cache_lease_at END \
             WHERE id = $1 \
             RETURNING cache_fence, (SELECT ok FROM allowed), \
                       (SELECT ok FROM allowed) AND ($3::int8 IS NULL OR cache_fence = $3)",
            &[&node.0, &LIVE_WITHIN.as_secs_f64(), &fence],
        )
        .await?;
    Ok(match row {
        None => Renewal::Refused,
        Some(row) if !row.get::<_, bool>(1) => Renewal::Refused,
        Some(row) if row.get::<_, bool>(2) => Renewal::Leased(row.get(0)),
        Some(row) => Renewal::Fenced(row.get(0)),
    })
}

async fn release(pool: &CatalogPool, node: NodeId) -> Result<(), CatalogError> {
    let client = pool.get().await?;
    client.execute("UPDATE storage_nodes SET cache_lease_at = NULL WHERE id = $1", &[&node.0]).await?;
    Ok(())
}
