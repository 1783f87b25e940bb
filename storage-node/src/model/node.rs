//! Storage nodes in the catalog: the registry every `silo serve` writes itself into at start
//! (name, zone, owner, internal URL, capacity, version), its heartbeat, its clean stop, and the
//! list operators read (`GET /v1/nodes`, `silo node list`).
//!
//! The nodes of one catalog share its server secret: [`register`] refuses a node whose secret
//! is not the one the catalog was first used with (the catalog keeps a fingerprint of it, never
//! the secret), a name started from another data directory, and a node with data moved to
//! another zone or owner.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Transaction;

use crate::catalog::{CatalogError, CatalogPool};
pub use crate::node_state::{LIVE_WITHIN, NodeId, NodeState};
use crate::{ServerSecret, TenantId};

/// The copies of each pack by default: two where the shared nodes span two zones or more.
pub const DEFAULT_COPIES: i64 = 2;

/// How often a running node writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What a starting node says about itself.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub zone: String,
    /// The tenant whose node this is (its name); `None` for the hosting company's.
    pub owner: Option<String>,
    /// Where its peers reach its internal node API.
    pub internal_url: Option<String>,
    pub capacity_bytes: u64,
    /// The Silo version it runs.
    pub version: String,
    /// The identity of its data directory (`DataDir::identity`).
    pub data_dir_id: String,
}

/// A node as the registry lists it, with what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub zone: String,
    /// The owning tenant's name; `None` for the hosting company's.
    pub owner: Option<String>,
    pub state: NodeState,
    pub internal_url: Option<String>,
    pub capacity_bytes: Option<i64>,
    pub version: Option<String>,
    #[serde(with = "crate::timestamp::rfc3339_seconds::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "crate::timestamp::rfc3339_seconds::option")]
    pub heartbeat_at: Option<OffsetDateTime>,
    /// When it last stopped cleanly; `None` while it runs (or after a crash).
    #[serde(with = "crate::timestamp::rfc3339_seconds::option")]
    pub stopped_at: Option<OffsetDateTime>,
    /// Its heartbeat is within [`LIVE_WITHIN`] and it has not stopped.
    pub live: bool,
    /// The packs it holds a copy of (not retired).
    pub packs: i64,
    /// The bytes of those copies (pack files, live and dead records alike).
    pub stored_bytes: i64,
}

/// Why a node may not start as it asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("--owner {0:?}: no tenant has that name; create the tenant first")]
    UnknownOwner(String),
    #[error("--owner {0:?}: the tenant is being deleted")]
    OwnerDeleting(String),
    #[error(
        "the storage node {name:?} is registered with {registered}, not {asked}, and holds {packs} \
         pack(s): moving a node that holds data would break placement; start it with the zone \
         and owner it has, or start the new one as a new node with its own data directory"
    )]
    Moved { name: String, registered: String, asked: String, packs: i64 },
    #[error(
        "the server secret differs from the one this catalog was first used with: access keys \
         and chunk names sealed with that one cannot be read with this one. Start with the data \
         directory that holds the catalog's secret, or set SILO_SERVER_SECRET to it"
    )]
    SecretMismatch,
    #[error(
        "the storage node {name:?} is registered with another data directory, whose packs this one \
         does not hold: start {name:?} with its own data directory, or give this one another \
         --node-name"
    )]
    OtherDataDirectory { name: String },
}

impl From<tokio_postgres::Error> for NodeError {
    fn from(err: tokio_postgres::Error) -> Self {
        NodeError::Catalog(err.into())
    }
}

/// Registers the starting node (by name: a restart updates its row) with its first heartbeat.
///
/// Refused, with nothing written, when the catalog was first used with another server secret
/// (the first start records its fingerprint: every node of a cluster shares one secret), when
/// the name is registered with another data directory, when the owner is not a tenant, or when
/// the node is registered with another zone or owner and holds packs. A removed node that starts
/// again is active again; a draining one stays draining. Registrations take turns on the
/// catalog's `silo_meta` row, so two nodes that start together cannot both pass.
///
/// # Errors
/// [`NodeError`] saying which of these it was.
pub async fn register(
    pool: &CatalogPool,
    secret: &ServerSecret,
    node: &Registration,
) -> Result<NodeId, NodeError> {
    let mut client = pool.get().await.map_err(CatalogError::from)?;
    let tx = client.transaction().await?;
    let recorded: Option<String> =
        tx.query_one("SELECT server_secret_fingerprint FROM silo_meta FOR UPDATE", &[]).await?.get(0);
    let fingerprint = secret.fingerprint();
    match recorded {
        Some(recorded) if recorded != fingerprint => return Err(NodeError::SecretMismatch),
        Some(_) => {}
        None => {
            tx.execute("UPDATE silo_meta SET server_secret_fingerprint = $1", &[&fingerprint]).await?;
        }
    }
    let owner_id = match &node.owner {
        Some(owner) => Some(owner_id(&tx, owner).await?),
        None => None,
    };
    refuse_a_move(&tx, node).await?;
    refuse_another_directory(&tx, node).await?;
    let capacity = i64::try_from(node.capacity_bytes).unwrap_or(i64::MAX);
    let row = tx
        .query_one(
            "INSERT INTO storage_nodes \
                 (name, zone, owner_tenant_id, internal_url, capacity_bytes, version, started_at, \
                  heartbeat_at, data_dir_id, invalidates_reads) \
             VALUES ($1, $2, $3, $4, $5, $6, now(), now(), $7, true) \
             ON CONFLICT (name) DO UPDATE SET zone = EXCLUDED.zone, \
                 owner_tenant_id = EXCLUDED.owner_tenant_id, internal_url = EXCLUDED.internal_url, \
                 capacity_bytes = EXCLUDED.capacity_bytes, version = EXCLUDED.version, \
                 started_at = now(), heartbeat_at = now(), stopped_at = NULL, invalidates_reads = true, \
                 data_dir_id = EXCLUDED.data_dir_id, \
                 state = CASE WHEN storage_nodes.state = $8 THEN $9 ELSE storage_nodes.state END \
             RETURNING id",
            &[
                &node.name,
                &node.zone,
                &owner_id,
                &node.internal_url,
                &capacity,
                &node.version,
                &node.data_dir_id,
                &NodeState::Removed,
                &NodeState::Active,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(NodeId(row.get(0)))
}

/// Refuses a start of a registered node from another data directory than its own. A node
/// registered before directories had identities takes this one's.
async fn refuse_another_directory(tx: &Transaction<'_>, node: &Registration) -> Result<(), NodeError> {
    let registered = tx
        .query_opt("SELECT data_dir_id FROM storage_nodes WHERE name = $1", &[&node.name])
        .await?
        .and_then(|row| row.get::<_, Option<String>>(0));
    match registered {
        Some(id) if id != node.data_dir_id => Err(NodeError::OtherDataDirectory { name: node.name.clone() }),
        _ => Ok(()),
    }
}

/// The id of the owning tenant `name`, which must exist and not be being deleted.
async fn owner_id(tx: &Transaction<'_>, name: &str) -> Result<i64, NodeError> {
    let row = tx
        .query_opt("SELECT id, deleting_at IS NOT NULL FROM tenants WHERE name = $1", &[&name])
        .await?
        .ok_or_else(|| NodeError::UnknownOwner(name.to_string()))?;
    if row.get::<_, bool>(1) {
        return Err(NodeError::OwnerDeleting(name.to_string()));
    }
    Ok(row.get(0))
}

/// Refuses to register `node` in another zone or for another owner while it holds packs.
async fn refuse_a_move(tx: &Transaction<'_>, node: &Registration) -> Result<(), NodeError> {
    let registered = tx
        .query_opt(
            "SELECT n.zone, t.name, (SELECT count(*) FROM pack_replicas r WHERE r.node_id = n.id) \
             FROM storage_nodes n LEFT JOIN tenants t ON t.id = n.owner_tenant_id \
             WHERE n.name = $1 FOR UPDATE OF n",
            &[&node.name],
        )
        .await?;
    let Some(row) = registered else { return Ok(()) };
    let (zone, owner, packs): (String, Option<String>, i64) = (row.get(0), row.get(1), row.get(2));
    if (zone.as_str(), owner.as_deref()) == (node.zone.as_str(), node.owner.as_deref()) || packs == 0 {
        return Ok(());
    }
    Err(NodeError::Moved {
        name: node.name.clone(),
        registered: place(&zone, owner.as_deref()),
        asked: place(&node.zone, node.owner.as_deref()),
        packs,
    })
}

/// `zone "a", owner "acme"` or `zone "a", no owner`.
fn place(zone: &str, owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!("zone {zone:?}, owner {owner:?}"),
        None => format!("zone {zone:?}, no owner"),
    }
}

/// Writes the node's heartbeat now.
///
/// # Errors
/// Catalog errors.
pub async fn heartbeat(pool: &CatalogPool, node: NodeId) -> Result<(), CatalogError> {
    let client = pool.get().await?;
    client.execute("UPDATE storage_nodes SET heartbeat_at = now() WHERE id = $1", &[&node.0]).await?;
    Ok(())
}

/// Marks the node stopped (a clean shutdown); its last heartbeat stays.
///
/// # Errors
/// Catalog errors.
pub async fn mark_stopped(pool: &CatalogPool, node: NodeId) -> Result<(), CatalogError> {
    let client = pool.get().await?;
    client.execute("UPDATE storage_nodes SET stopped_at = now() WHERE id = $1", &[&node.0]).await?;
    Ok(())
}

/// Every registered node by name, with its packs and stored bytes.
///
/// # Errors
/// Catalog errors.
pub async fn list(pool: &CatalogPool) -> Result<Vec<Node>, CatalogError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT n.name, n.zone, t.name, n.state, n.internal_url, n.capacity_bytes, n.version, \
                    n.started_at, n.heartbeat_at, n.stopped_at, \
                    n.stopped_at IS NULL \
                        AND coalesce(n.heartbeat_at > now() - make_interval(secs => $1), false), \
                    h.packs, h.bytes \
             FROM storage_nodes n LEFT JOIN tenants t ON t.id = n.owner_tenant_id \
             CROSS JOIN LATERAL (SELECT count(*) AS packs, coalesce(sum(p.size), 0)::int8 AS bytes \
                 FROM pack_replicas r JOIN packs p ON p.id = r.pack_id \
                 WHERE r.node_id = n.id AND p.state <> 'retired') h \
             ORDER BY n.name",
            &[&LIVE_WITHIN.as_secs_f64()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Node {
            name: row.get(0),
            zone: row.get(1),
            owner: row.get(2),
            state: row.get(3),
            internal_url: row.get(4),
            capacity_bytes: row.get(5),
            version: row.get(6),
            started_at: row.get(7),
            heartbeat_at: row.get(8),
            stopped_at: row.get(9),
            live: row.get(10),
            packs: row.get(11),
            stored_bytes: row.get(12),
        })
        .collect())
}

/// The nodes of the catalog at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Nodes that are not removed.
    pub nodes: i64,
    /// The copies a shared tenant's pack gets by default: [`DEFAULT_COPIES`] where the shared
    /// nodes span that many zones, else one per zone (one on a one-node deployment).
    pub default_copies: i64,
}

/// How many nodes the catalog holds that are not removed, and the default copies they allow.
///
/// # Errors
/// Catalog errors.
pub async fn census(pool: &CatalogPool) -> Result<Census, CatalogError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT zone) FILTER (WHERE owner_tenant_id IS NULL) \
             FROM storage_nodes WHERE state <> $1",
            &[&NodeState::Removed],
        )
        .await?;
    let zones: i64 = row.get(1);
    Ok(Census { nodes: row.get(0), default_copies: zones.clamp(1, DEFAULT_COPIES) })
}

/// The names of the nodes `tenant` owns that are not removed: a tenant that owns such a node
/// cannot be deleted (its packs may be there). A removed node holds no copy any more; its row
/// stays for the packs' history, and the tenant's deletion clears its owner.
///
/// # Errors
/// Catalog errors.
pub async fn owned_by(pool: &CatalogPool, tenant: TenantId) -> Result<Vec<String>, CatalogError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT name FROM storage_nodes WHERE owner_tenant_id = $1 AND state <> $2 ORDER BY name",
            &[&tenant.0, &NodeState::Removed],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_states_round_trip_through_their_words() {
        for state in [NodeState::Active, NodeState::Draining, NodeState::Removed] {
            assert_eq!(state.as_str().parse::<NodeState>().ok(), Some(state));
            assert_eq!(serde_json::to_string(&state).ok(), Some(format!("\"{state}\"")));
        }
        assert!("gone".parse::<NodeState>().is_err());
    }

    fn registration(name: &str) -> Registration {
        Registration {
            name: name.into(),
            zone: "zone-a".into(),
            owner: None,
            internal_url: None,
            capacity_bytes: u64::MAX,
            version: "test".into(),
            data_dir_id: format!("dir-of-{name}"),
        }
    }

    #[tokio::test]
    async fn nodes_share_one_server_secret_and_each_name_keeps_its_directory() {
        let url = pg_local::testing::shared().fresh_database("node_registry").await;
        let pool = crate::catalog::connect_pool(url.parse().expect("url"), 4).expect("pool");
        crate::catalog::migrate(&mut pool.get().await.expect("client")).await.expect("migrate");
        let secret = ServerSecret::from_bytes([1; 32]);
        let alpha = register(&pool, &secret, &registration("alpha")).await.expect("first node");
        let again = register(&pool, &secret, &registration("alpha")).await.expect("a restart");
        assert_eq!(alpha, again);
        let beta = register(&pool, &secret, &registration("beta")).await.expect("a second node");
        assert_ne!(alpha, beta);
        let elsewhere = Registration { data_dir_id: "another-dir".into(), ..registration("alpha") };
        let refused = register(&pool, &secret, &elsewhere).await;
        assert!(
            matches!(&refused, Err(NodeError::OtherDataDirectory { name }) if name == "alpha"),
            "the same name from another data directory: {refused:?}"
        );
        let other_secret = ServerSecret::from_bytes([2; 32]);
        let refused = register(&pool, &other_secret, &registration("alpha")).await;
        assert!(matches!(refused, Err(NodeError::SecretMismatch)), "{refused:?}");

        let client = pool.get().await.expect("client");
        client
            .execute("UPDATE storage_nodes SET state = 'removed' WHERE name = 'alpha'", &[])
            .await
            .expect("remove");
        mark_stopped(&pool, alpha).await.expect("stop");
        let listed = list(&pool).await.expect("list");
        let states: Vec<_> = listed.iter().map(|n| (n.name.as_str(), n.state, n.live)).collect();
        assert_eq!(states, [("alpha", NodeState::Removed, false), ("beta", NodeState::Active, true)]);
        assert_eq!(census(&pool).await.expect("census"), Census { nodes: 1, default_copies: 1 });
        assert_eq!(listed[0].capacity_bytes, Some(i64::MAX), "a capacity past i64 is clamped");
    }

    #[test]
    fn a_refused_move_names_both_places() {
        assert_eq!(place("a", Some("acme")), "zone \"a\", owner \"acme\"");
        assert_eq!(place("b", None), "zone \"b\", no owner");
    }
}
