//! What the catalog says about a pack on this node: whether this node holds a `writing`
//! replica of it (and the placement domain of the pack and of this node) for an append, and
//! whether it holds a live copy, which a peer may not delete. These are the only catalog reads
//! of the internal API; everything else it does is on files.

use crate::TenantId;
use crate::catalog::CatalogPool;
use crate::node_state::NodeId;
use crate::pack::PackId;

/// A `writing` replica of a pack on this node, with the two owners that decide its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WritingReplica {
    /// The tenant whose nodes alone hold the pack (`packs.owner_tenant_id`); `None`: shared.
    pub pack_owner: Option<TenantId>,
    /// The tenant this node belongs to (`storage_nodes.owner_tenant_id`); `None`: shared.
    pub node_owner: Option<TenantId>,
    /// Whether this node is the pack's writer (`packs.node_id`): its own writer appends to the
    /// file, so a peer may not.
    pub written_here: bool,
}

/// Why the catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CatalogReadError {
    #[error("the catalog cannot be reached: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("the catalog refused the read: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// The `writing` replica of pack `id` on `node`, or `None` when the catalog records none.
pub(crate) async fn writing_replica(
    pool: &CatalogPool,
    id: PackId,
    node: NodeId,
) -> Result<Option<WritingReplica>, CatalogReadError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT p.owner_tenant_id, n.owner_tenant_id, p.node_id = n.id
               FROM pack_replicas r
               JOIN packs p ON p.id = r.pack_id
               JOIN storage_nodes n ON n.id = r.node_id
              WHERE r.pack_id = $1 AND r.node_id = $2 AND r.state = 'writing'",
            &[&id.0, &node.0],
        )
        .await?;
    Ok(row.map(|row| WritingReplica {
        pack_owner: row.get::<_, Option<i64>>(0).map(TenantId),
        node_owner: row.get::<_, Option<i64>>(1).map(TenantId),
        written_here: row.get(2),
    }))
}

/// This node as the catalog knows it: the pool and its id.
#[derive(Debug, Clone)]
pub struct ThisNode {
    pub catalog: CatalogPool,
    pub node: NodeId,
}

/// Whether the catalog records a copy of pack `id` on `node` and the pack is not retired: its
/// file holds chunks that objects need, so no peer may delete it.
pub(crate) async fn holds_live_copy(
    pool: &CatalogPool,
    id: PackId,
    node: NodeId,
) -> Result<bool, CatalogReadError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM packs p JOIN pack_replicas r ON r.pack_id = p.id \
             WHERE p.id = $1 AND r.node_id = $2 AND p.state <> 'retired')",
            &[&id.0, &node.0],
        )
        .await?;
    Ok(row.get(0))
}
