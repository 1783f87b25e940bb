//! The repairer's catalog reads and writes (its SQL is all here): the registered nodes and the
//! rules of each placement domain ([`Cluster`]), the packs that need work ([`work`]), and the
//! rows a copy adds or a finished repair drops.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio_postgres::GenericClient;

use super::{RepairError, ReplicaState};
use crate::TenantId;
use crate::node_state::{NodeId, NodeState};
use crate::pack::PackId;
use crate::placement::catalog::{POLICY_COLUMNS, candidates, policy_from};
use crate::placement::{Candidate, Domain, PlacementMode, PlacementPolicy, rules};

/// What a placement domain wants of its packs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRule {
    /// The policy whose allowed zones its copies must be in (the shared domain's allows all).
    pub policy: PlacementPolicy,
    /// Its effective replication factor.
    pub copies: u8,
}

/// The registered nodes (not removed), which of them are gone, and each domain's rule.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub nodes: Vec<Candidate>,
    /// Nodes silent for longer than the grace period.
    pub gone: HashSet<NodeId>,
    pub rules: HashMap<Domain, DomainRule>,
}

impl Cluster {
    /// `nodes` and the policies of the tenants that own some, as the catalog holds them.
    pub fn new(nodes: Vec<Candidate>, gone: HashSet<NodeId>, owners: &[(TenantId, PlacementPolicy)]) -> Self {
        let mut cluster = Cluster { nodes, gone, rules: HashMap::new() };
        let shared = PlacementPolicy::default();
        cluster.add_rule(Domain::Shared, shared);
        for (tenant, policy) in owners {
            cluster.add_rule(Domain::Owned(*tenant), policy.clone());
        }
        cluster
    }

    fn add_rule(&mut self, domain: Domain, policy: PlacementPolicy) {
        let zones = rules::zones(domain, &policy, &self.nodes).len();
        let copies = rules::replication_factor(&policy, zones);
        self.rules.insert(domain, DomainRule { policy, copies });
    }

    /// Counts a new copy of `bytes` on `node`, so that the next choice in the same pass sees
    /// the room it took.
    pub fn add_held(&mut self, node: NodeId, bytes: u64) {
        if let Some(node) = self.nodes.iter_mut().find(|candidate| candidate.node == node) {
            node.held_bytes = node.held_bytes.saturating_add(bytes);
        }
    }

    /// The node `id`, when it is registered and not removed.
    pub fn node(&self, id: NodeId) -> Option<&Candidate> {
        self.nodes.iter().find(|node| node.node == id)
    }

    /// The rule of `domain` (the default policy for a tenant whose own nodes are all removed).
    pub fn rule(&self, domain: Domain) -> DomainRule {
        self.rules.get(&domain).cloned().unwrap_or_else(|| {
            let policy = PlacementPolicy { mode: PlacementMode::Owned, ..PlacementPolicy::default() };
            DomainRule { policy, copies: 1 }
        })
    }

    /// Whether `node` belongs where copies of `domain`'s packs may be: the domain's own nodes
    /// in its allowed zones, in any state.
    pub fn in_domain(&self, node: &Candidate, domain: Domain) -> bool {
        node.owner == domain.owner() && self.rule(domain).policy.allows(&node.zone)
    }

    /// Whether a copy on `node` can count as healthy: in the domain, active and not gone.
    pub fn keeps_copies(&self, node: &Candidate, domain: Domain) -> bool {
        self.in_domain(node, domain) && node.state == NodeState::Active && !self.gone.contains(&node.node)
    }
}

/// The domain of a pack whose `packs.owner_tenant_id` is `owner`.
pub fn domain_of(owner: Option<i64>) -> Domain {
    owner.map_or(Domain::Shared, |tenant| Domain::Owned(TenantId(tenant)))
}

/// The key of a domain in the work query's arrays: 0 for the shared domain.
fn key(domain: Domain) -> i64 {
    domain.owner().map_or(0, |tenant| tenant.0)
}

/// Seals the open packs whose writer is gone (silent for longer than `grace`): no upload of it
/// can commit any more, every copy holds the pack's recorded size (each commit raised it to
/// what every copy had fsynced), and sealed, the pack is repaired like any other. Returns how
/// many were sealed.
///
/// # Errors
/// Catalog errors.
pub async fn seal_orphans<C: GenericClient + Sync>(client: &C, grace: Duration) -> Result<u64, RepairError> {
    let row = client
        .query_one(
            "WITH orphans AS ( \
                UPDATE packs p SET state = 'sealed' FROM storage_nodes n \
                WHERE p.state = 'open' AND n.id = p.node_id \
                  AND coalesce(n.heartbeat_at <= now() - make_interval(secs => $1), true) \
                RETURNING p.id), \
             copies AS ( \
                UPDATE pack_replicas r SET state = 'ok' FROM orphans o \
                WHERE r.pack_id = o.id AND r.state = 'writing') \
             SELECT count(*) FROM orphans",
            &[&grace.as_secs_f64()],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Reads the registered nodes, which are gone (silent for longer than `grace`), and the
/// policies of the tenants that own nodes.
///
/// # Errors
/// Catalog errors.
pub async fn cluster<C: GenericClient + Sync>(client: &C, grace: Duration) -> Result<Cluster, RepairError> {
    let nodes = candidates(client).await?;
    let gone = client
        .query(
            "SELECT id FROM storage_nodes \
             WHERE state <> $2 AND coalesce(heartbeat_at <= now() - make_interval(secs => $1), true)",
            &[&grace.as_secs_f64(), &NodeState::Removed],
        )
        .await?
        .iter()
        .map(|row| NodeId(row.get(0)))
        .collect();
    let owners: Vec<i64> = nodes.iter().filter_map(|node| node.owner.map(|tenant| tenant.0)).collect();
    let rows =
        client.query(&format!("SELECT {POLICY_COLUMNS} FROM tenants WHERE id = ANY($1)"), &[&owners]).await?;
    let policies: Vec<(TenantId, PlacementPolicy)> =
        rows.iter().map(|row| (TenantId(row.get(0)), policy_from(row))).collect();
    Ok(Cluster::new(nodes, gone, &policies))
}

/// A pack that needs work, with its copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackWork {
    pub id: PackId,
    pub domain: Domain,
    /// The copies it was written for.
    pub replicas_wanted: u8,
    pub size: u64,
    /// Every copy the catalog records, with its state.
    pub replicas: Vec<(NodeId, ReplicaState)>,
}

/// The packs that need work, and how many packs in all are below their wanted copies.
#[derive(Debug, Clone, Default)]
pub struct Work {
    /// Fewest healthy copies first; at most one batch.
    pub packs: Vec<PackWork>,
    pub backlog: i64,
}

/// A pack without any `pack_replicas` row (written before the store recorded its copies) counts
/// as one whole copy on its writer (`packs.node_id`), here and in [`record_copy`].
///
/// The sealed packs that need work under `cluster`: fewer healthy copies in distinct zones than
/// wanted (the domain's replication factor, the pack's `replicas_wanted` as a floor), a damaged
/// copy, a copy on a draining node, one on a node outside its domain, or more healthy copies
/// than wanted (a node back after its copies were made again elsewhere); fewest healthy copies
/// first, at most `limit`.
///
/// # Errors
/// Catalog errors.
pub async fn work<C: GenericClient + Sync>(
    client: &C,
    cluster: &Cluster,
    limit: i64,
) -> Result<Work, RepairError> {
    // Every node that belongs to a domain, with whether it keeps healthy copies.
    let mut member: (Vec<i64>, Vec<i32>, Vec<String>, Vec<bool>) = Default::default();
    for node in &cluster.nodes {
        let domain = node.owner.map_or(Domain::Shared, Domain::Owned);
        if cluster.in_domain(node, domain) {
            member.0.push(key(domain));
            member.1.push(node.node.0);
            member.2.push(node.zone.clone());
            member.3.push(cluster.keeps_copies(node, domain));
        }
    }
    let (domains, copies): (Vec<i64>, Vec<i32>) =
        cluster.rules.iter().map(|(domain, rule)| (key(*domain), i32::from(rule.copies))).unzip();
    let rows = client
        .query(
            "WITH member AS (SELECT * FROM unnest($1::int8[], $2::int4[], $3::text[], $4::bool[]) \
                             AS m(domain, node, zone, healthy)), \
                  rule AS (SELECT * FROM unnest($5::int8[], $6::int4[]) AS r(domain, copies)), \
                  assessed AS ( \
                 SELECT p.id, p.owner_tenant_id, p.replicas_wanted, p.size, \
                        greatest(p.replicas_wanted, coalesce(r.copies, 1)) AS wanted, \
                        count(DISTINCT m.zone) FILTER (WHERE x.state = $7 AND m.healthy) AS healthy, \
                        count(*) FILTER (WHERE x.state = $7 AND m.healthy) AS healthy_copies, \
                        count(*) FILTER (WHERE x.state = $8 OR n.state = $11 \
                                            OR (m.node IS NULL AND n.state <> $9)) AS odd, \
                        array_agg(x.node_id) FILTER (WHERE x.node_id IS NOT NULL) AS nodes, \
                        array_agg(x.state) FILTER (WHERE x.node_id IS NOT NULL) AS states \
                 FROM packs p \
                 LEFT JOIN LATERAL ( \
                     SELECT node_id, state FROM pack_replicas WHERE pack_id = p.id \
                     UNION ALL \
                     SELECT p.node_id, $7 WHERE NOT EXISTS (SELECT 1 FROM pack_replicas WHERE pack_id = p.id) \
                 ) x ON true \
                 LEFT JOIN storage_nodes n ON n.id = x.node_id \
                 LEFT JOIN member m ON m.node = x.node_id AND m.domain = coalesce(p.owner_tenant_id, 0) \
                 LEFT JOIN rule r ON r.domain = coalesce(p.owner_tenant_id, 0) \
                 WHERE p.state = 'sealed' \
                 GROUP BY p.id, r.copies) \
             SELECT id, owner_tenant_id, replicas_wanted, size, nodes, states, \
                    count(*) FILTER (WHERE healthy < wanted) OVER () \
             FROM assessed WHERE healthy < wanted OR odd > 0 OR healthy_copies > wanted \
             ORDER BY healthy, wanted - healthy DESC, id LIMIT $10",
            &[
                &member.0,
                &member.1,
                &member.2,
                &member.3,
                &domains,
                &copies,
                &ReplicaState::Ok,
                &ReplicaState::Damaged,
                &NodeState::Removed,
                &limit,
                &NodeState::Draining,
            ],
        )
        .await?;
    let mut work = Work::default();
    for row in &rows {
        work.backlog = row.get(6);
        let nodes: Vec<i32> = row.get::<_, Option<Vec<i32>>>(4).unwrap_or_default();
        let states: Vec<String> = row.get::<_, Option<Vec<String>>>(5).unwrap_or_default();
        let replicas = nodes
            .into_iter()
            .zip(states)
            .filter_map(|(node, state)| Some((NodeId(node), state.parse().ok()?)))
            .collect();
        work.packs.push(PackWork {
            id: PackId(row.get(0)),
            domain: domain_of(row.get(1)),
            replicas_wanted: u8::try_from(row.get::<_, i16>(2)).unwrap_or(1),
            size: row.get::<_, i64>(3).max(0) as u64,
            replicas,
        });
    }
    Ok(work)
}

/// Records a whole copy of `pack` on `node` (a new row, or a damaged one made whole), unless
/// the pack is no longer sealed (GC retired or dropped it meanwhile). Returns whether it did. A
/// pack without rows gets its writer's copy recorded too (see [`work`]).
///
/// # Errors
/// Catalog errors.
pub async fn record_copy<C: GenericClient + Sync>(
    client: &C,
    pack: PackId,
    node: NodeId,
) -> Result<bool, RepairError> {
    let recorded = client
        .execute(
            "WITH pack AS (SELECT id, node_id FROM packs WHERE id = $1 AND state = 'sealed'), \
                  writer AS (INSERT INTO pack_replicas (pack_id, node_id, state) \
                             SELECT id, node_id, $3 FROM pack WHERE node_id <> $2 \
                                AND NOT EXISTS (SELECT 1 FROM pack_replicas WHERE pack_id = $1)) \
             INSERT INTO pack_replicas (pack_id, node_id, state) SELECT id, $2, $3 FROM pack \
             ON CONFLICT (pack_id, node_id) DO UPDATE SET state = EXCLUDED.state",
            &[&pack.0, &node.0, &ReplicaState::Ok],
        )
        .await?;
    Ok(recorded == 1)
}

/// Drops the row of the copy of `pack` on `node` (a damaged or misplaced copy, once the pack
/// has its copies elsewhere).
///
/// # Errors
/// Catalog errors.
pub async fn drop_copy<C: GenericClient + Sync>(
    client: &C,
    pack: PackId,
    node: NodeId,
) -> Result<(), RepairError> {
    client
        .execute("DELETE FROM pack_replicas WHERE pack_id = $1 AND node_id = $2", &[&pack.0, &node.0])
        .await?;
    Ok(())
}
