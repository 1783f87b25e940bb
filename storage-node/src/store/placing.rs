//! Where a new pack's copies go: the class of a tenant's packs (which packs its uploads may
//! share), and the placement plan for a new one.

use super::open_pack::PackClass;
use super::{ChunkStore, StoreError};
use crate::TenantId;
use crate::placement::{self, Plan};

/// The owner of the placement domain of the tenant `tenant` now, as `placement::plan` decides
/// it for node `node` (both SQL expressions: a parameter such as `$1`, or a column): the tenant
/// itself when its policy is `owned`, or when it owns nodes and no shared node can take a copy
/// (the writing node, or a peer with an internal URL); NULL for the shared nodes. An SQL scalar
/// subquery over those two expressions.
pub(crate) fn domain_owner_sql(tenant: &str, node: &str) -> String {
    // Aliases of its own, so that a caller's column (`d.id`, say) is never captured.
    format!(
        "SELECT CASE WHEN dom_t.placement = 'owned' \
            OR (NOT EXISTS (SELECT 1 FROM storage_nodes dom_n WHERE dom_n.owner_tenant_id IS NULL \
                            AND dom_n.state <> 'removed' AND (dom_n.internal_url IS NOT NULL OR dom_n.id = {node})) \
                AND EXISTS (SELECT 1 FROM storage_nodes dom_o WHERE dom_o.owner_tenant_id = dom_t.id \
                            AND dom_o.state <> 'removed')) \
            THEN dom_t.id END FROM tenants dom_t WHERE dom_t.id = {tenant}"
    )
}

impl ChunkStore {
    /// The class of `tenant`'s packs under its placement policy now. Its domain is the one
    /// `placement` gives: the tenant's own nodes when its policy is `owned`, or when no shared
    /// node exists and it owns some.
    pub(crate) async fn pack_class(&self, tenant: TenantId) -> Result<PackClass, StoreError> {
        let client = self.inner.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT ({}), t.replication_factor, t.allowed_zones FROM tenants t WHERE t.id = $1",
                    domain_owner_sql("$1", "$2")
                ),
                &[&tenant.0, &self.inner.node.0],
            )
            .await?
            .ok_or(StoreError::UnknownTenant(tenant.0))?;
        Ok(PackClass {
            owner: row.get::<_, Option<i64>>(0).map(TenantId),
            replicas: row.get(1),
            zones: row.get(2),
        })
    }

    /// The nodes that take the copies of a new pack opened by an upload of `tenant`, leaving
    /// out the peers that failed lately.
    ///
    /// # Errors
    /// [`StoreError::Placement`] when too few zones can take it and the policy refuses.
    pub(crate) async fn place_pack(&self, tenant: TenantId) -> Result<Plan, StoreError> {
        let client = self.inner.pool.get().await?;
        let suspects = self.inner.peers.suspects();
        let plan = placement::plan(
            &**client,
            tenant,
            self.inner.node,
            self.inner.config.pack_target_bytes,
            &suspects,
        )
        .await?;
        if plan.degraded {
            tracing::warn!(
                tenant = tenant.0,
                wanted = plan.wanted,
                copies = plan.targets.len(),
                "a new pack has fewer copies than its policy wants; repair tops it up"
            );
        }
        Ok(plan)
    }
}
