//! Placement over the catalog: a tenant's policy in its `tenants` columns (read, and set
//! after the checks against the registered nodes), the registered nodes as candidates (one
//! query), and [`plan`], the choice of nodes for a new pack.

use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use super::choice::{Candidate, Plan, choose};
use super::{Domain, LIVE_WITHIN, PlacementError, PlacementMode, PlacementPolicy, PolicyChange, rules};
use crate::TenantId;
use crate::catalog::CatalogPool;
use crate::node_state::NodeId;
use crate::node_state::NodeState;

/// A tenant's placement as the management API shows it: its policy, and what it comes to over
/// the registered nodes now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementView {
    pub tenant: String,
    #[serde(flatten)]
    pub policy: PlacementPolicy,
    /// The copies each new pack gets now (the policy's, or the default over `zones`).
    pub effective_replication_factor: u8,
    /// Whose nodes its new packs go to: `owned` also for a shared tenant whose catalog has no
    /// shared node but which owns nodes.
    pub domain: PlacementMode,
    /// The distinct zones of that domain's registered nodes (not removed) that it allows.
    pub zones: Vec<String>,
}

/// The `tenants` columns a policy is read from, in [`policy_from`]'s order.
pub(crate) const POLICY_COLUMNS: &str = "id, placement, replication_factor, allowed_zones, on_shortage";

/// The policy in a row of [`POLICY_COLUMNS`].
pub(crate) fn policy_from(row: &Row) -> PlacementPolicy {
    PlacementPolicy {
        mode: row.get(1),
        // The column's CHECK keeps it within 1 to 8.
        replication_factor: row.get::<_, Option<i16>>(2).and_then(|n| u8::try_from(n).ok()),
        allowed_zones: row.get(3),
        on_shortage: row.get(4),
    }
}

/// Every registered node that is not removed, with its liveness and the bytes it holds (also
/// what repair chooses its targets among).
pub async fn candidates<C: GenericClient + Sync>(client: &C) -> Result<Vec<Candidate>, PlacementError> {
    let rows = client
        .query(
            "SELECT n.id, n.zone, n.owner_tenant_id, n.internal_url, n.state, \
                    n.stopped_at IS NULL \
                        AND coalesce(n.heartbeat_at > now() - make_interval(secs => $1), false), \
                    n.capacity_bytes, \
                    (SELECT coalesce(sum(p.size), 0)::int8 FROM pack_replicas r \
                     JOIN packs p ON p.id = r.pack_id \
                     WHERE r.node_id = n.id AND r.state <> 'damaged') \
             FROM storage_nodes n WHERE n.state <> $2 ORDER BY n.id",
            &[&LIVE_WITHIN.as_secs_f64(), &NodeState::Removed],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Candidate {
            node: NodeId(row.get(0)),
            zone: row.get(1),
            owner: row.get::<_, Option<i64>>(2).map(TenantId),
            internal_url: row.get(3),
            state: row.get(4),
            live: row.get(5),
            capacity_bytes: row.get::<_, Option<i64>>(6).map(|n| n.max(0) as u64),
            held_bytes: row.get::<_, i64>(7).max(0) as u64,
        })
        .collect())
}

/// The nodes for a new pack of about `pack_bytes` that `this_node` writes for `tenant`: the
/// tenant's policy and the registered nodes, read through `client` (a connection or a
/// transaction: `&**client` of a pooled connection, `&*tx` of a pooled transaction), then
/// [`choose`] among the nodes that can take a copy (this node, and the peers with an internal
/// URL). The nodes in `suspects` (peers that failed this node lately, whose heartbeat
/// may not have gone stale yet) count as not live.
///
/// # Errors
/// [`PlacementError::Shortage`] (the caller answers 503 with Retry-After),
/// [`PlacementError::UnknownTenant`], catalog errors.
pub async fn plan<C: GenericClient + Sync>(
    client: &C,
    tenant: TenantId,
    this_node: NodeId,
    pack_bytes: u64,
    suspects: &[NodeId],
) -> Result<Plan, PlacementError> {
    let row = client
        .query_opt(&format!("SELECT {POLICY_COLUMNS} FROM tenants WHERE id = $1"), &[&tenant.0])
        .await?
        .ok_or_else(|| PlacementError::UnknownTenant(format!("#{}", tenant.0)))?;
    let policy = policy_from(&row);
    let mut nodes = candidates(client).await?;
    // A peer that serves no internal API can take no copy (nor count as a zone for one).
    nodes.retain(|node| node.node == this_node || node.internal_url.is_some());
    for node in nodes.iter_mut().filter(|node| suspects.contains(&node.node)) {
        node.live = false;
    }
    choose(&policy, tenant, this_node, pack_bytes, &nodes)
}

/// The placement of the tenant `name`.
///
/// # Errors
/// [`PlacementError::UnknownTenant`], catalog errors.
pub async fn show_policy(pool: &CatalogPool, name: &str) -> Result<PlacementView, PlacementError> {
    let client = pool.get().await?;
    let sql = format!("SELECT {POLICY_COLUMNS} FROM tenants WHERE name = $1");
    let row =
        client.query_opt(&sql, &[&name]).await?.ok_or_else(|| PlacementError::UnknownTenant(name.into()))?;
    let nodes = candidates(&**client).await?;
    Ok(view(name, TenantId(row.get(0)), policy_from(&row), &nodes))
}

/// Changes the placement of the tenant `name` (absent fields keep their value), after checking
/// the new policy against the registered nodes; the new packs follow it at once. The packs
/// already written keep their copies until repair moves them, and chunks left in packs of
/// another domain (shared packs after the tenant became owned) until GC rewrites those packs
/// (a trigger bumps the tenant's `placement_epoch` for it, migration V15).
///
/// # Errors
/// [`PlacementError::UnknownTenant`]; a bad value ([`PlacementError::InvalidZone`], ...); a
/// policy the registered nodes cannot meet ([`PlacementError::NoOwnedNodes`],
/// [`PlacementError::ZoneWithoutNode`], [`PlacementError::TooFewZones`]); catalog errors.
pub async fn set_policy(
    pool: &CatalogPool,
    name: &str,
    change: &PolicyChange,
) -> Result<PlacementView, PlacementError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let sql = format!("SELECT {POLICY_COLUMNS} FROM tenants WHERE name = $1 FOR UPDATE");
    let row =
        tx.query_opt(&sql, &[&name]).await?.ok_or_else(|| PlacementError::UnknownTenant(name.into()))?;
    let tenant = TenantId(row.get(0));
    let policy = change.apply(&policy_from(&row))?;
    let nodes = candidates(&*tx).await?;
    rules::check(&policy, tenant, name, &nodes)?;
    tx.execute(
        "UPDATE tenants SET placement = $2, replication_factor = $3, allowed_zones = $4, on_shortage = $5 \
         WHERE id = $1",
        &[
            &tenant.0,
            &policy.mode,
            &policy.replication_factor.map(i16::from),
            &policy.allowed_zones,
            &policy.on_shortage,
        ],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(tenant = name, ?policy, "set the placement policy");
    Ok(view(name, tenant, policy, &nodes))
}

/// What `policy` comes to over `nodes`.
fn view(name: &str, tenant: TenantId, policy: PlacementPolicy, nodes: &[Candidate]) -> PlacementView {
    let domain = rules::domain(&policy, tenant, nodes);
    let zones = rules::zones(domain, &policy, nodes);
    PlacementView {
        tenant: name.to_string(),
        effective_replication_factor: rules::replication_factor(&policy, zones.len()),
        domain: match domain {
            Domain::Shared => PlacementMode::Shared,
            Domain::Owned(_) => PlacementMode::Owned,
        },
        zones,
        policy,
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
