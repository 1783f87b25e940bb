//! Taking a storage node out of service: [`drain`] marks it `draining` (it takes no new packs;
//! its copies stop counting as healthy, so the repairer copies its packs elsewhere and then
//! drops its rows, while its copies stay readable meanwhile), and [`remove`] marks it `removed`
//! and drops the rows of its copies, refused while it holds the last healthy copy of any pack.
//!
//! A healthy copy elsewhere is `ok`, on another `active` node whose heartbeat is within the
//! repairer's grace period (a node down for longer may never come back).

use std::time::Duration;

use serde::Serialize;

use super::node::NodeState;
use crate::catalog::{CatalogError, CatalogPool};
use crate::repair::ReplicaState;

/// Removals take turns on this transaction-level advisory lock ("RM"), so two nodes holding
/// each other's last copies cannot both go.
const REMOVE_LOCK: i64 = 0x524d_0000;

/// Why a node could not be drained or removed.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no storage node named {0:?}")]
    UnknownNode(String),
    #[error("the storage node {0:?} is removed; start it again to bring it back")]
    Removed(String),
    #[error(
        "the storage node {name:?} holds the last healthy copy of {packs} pack(s); drain it \
         first (`silo node drain {name}`) and remove it once repair has copied them elsewhere"
    )]
    LastCopies { name: String, packs: i64 },
}

impl From<tokio_postgres::Error> for RetireError {
    fn from(err: tokio_postgres::Error) -> Self {
        RetireError::Catalog(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for RetireError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        RetireError::Catalog(err.into())
    }
}

/// A node being drained or removed, as the API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retiring {
    pub name: String,
    pub state: NodeState,
    /// The packs it still holds a copy of.
    pub packs: i64,
    /// Those of its packs that have no healthy copy elsewhere yet (0: it can be removed).
    pub last_copies: i64,
}

/// Packs not retired that `node` holds a copy of (any state; a pack without any copy row counts
/// as held by its writer), and those of them with no healthy copy on another node.
const HELD: &str = "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS ( \
         SELECT 1 FROM pack_replicas o JOIN storage_nodes n ON n.id = o.node_id \
         WHERE o.pack_id = h.pack_id AND o.node_id <> $1 AND o.state = $2 AND n.state = $3 \
           AND n.heartbeat_at > now() - make_interval(secs => $4))) \
     FROM (SELECT r.pack_id FROM pack_replicas r JOIN packs p ON p.id = r.pack_id \
           WHERE r.node_id = $1 AND p.state <> 'retired' \
           UNION \
           SELECT p.id FROM packs p WHERE p.node_id = $1 AND p.state <> 'retired' \
              AND NOT EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = p.id)) h";

/// Marks the node `name` draining (again: no change), and says what it holds.
///
/// # Errors
/// [`RetireError::UnknownNode`], [`RetireError::Removed`], catalog errors.
pub async fn drain(pool: &CatalogPool, name: &str, grace: Duration) -> Result<Retiring, RetireError> {
    let client = pool.get().await?;
    let row = client
        .query_opt("SELECT id, state FROM storage_nodes WHERE name = $1", &[&name])
        .await?
        .ok_or_else(|| RetireError::UnknownNode(name.to_string()))?;
    let (id, state): (i32, NodeState) = (row.get(0), row.get(1));
    if state == NodeState::Removed {
        return Err(RetireError::Removed(name.to_string()));
    }
    client
        .execute(
            "UPDATE storage_nodes SET state = $2 WHERE id = $1 AND state = $3",
            &[&id, &NodeState::Draining, &NodeState::Active],
        )
        .await?;
    let held =
        client.query_one(HELD, &[&id, &ReplicaState::Ok, &NodeState::Active, &grace.as_secs_f64()]).await?;
    tracing::info!(node = name, "draining the storage node");
    Ok(Retiring {
        name: name.to_string(),
        state: NodeState::Draining,
        packs: held.get(0),
        last_copies: held.get(1),
    })
}

/// Marks the node `name` removed and drops the rows of its copies (removing a removed node is
/// done already), refused while it holds the last healthy copy of any pack.
///
/// # Errors
/// [`RetireError::LastCopies`] with the count, [`RetireError::UnknownNode`], catalog errors.
pub async fn remove(pool: &CatalogPool, name: &str, grace: Duration) -> Result<Retiring, RetireError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REMOVE_LOCK]).await?;
    let row = tx
        .query_opt("SELECT id FROM storage_nodes WHERE name = $1 FOR UPDATE", &[&name])
        .await?
        .ok_or_else(|| RetireError::UnknownNode(name.to_string()))?;
    let id: i32 = row.get(0);
    let held =
        tx.query_one(HELD, &[&id, &ReplicaState::Ok, &NodeState::Active, &grace.as_secs_f64()]).await?;
    let (packs, last_copies): (i64, i64) = (held.get(0), held.get(1));
    if last_copies > 0 {
        return Err(RetireError::LastCopies { name: name.to_string(), packs: last_copies });
    }
    tx.execute("UPDATE storage_nodes SET state = $2 WHERE id = $1", &[&id, &NodeState::Removed]).await?;
    tx.execute("DELETE FROM pack_replicas WHERE node_id = $1", &[&id]).await?;
    tx.commit().await?;
    tracing::info!(node = name, dropped_copies = packs, "removed the storage node");
    Ok(Retiring { name: name.to_string(), state: NodeState::Removed, packs: 0, last_copies: 0 })
}
