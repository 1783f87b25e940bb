//! The work query and node removal over a real catalog: nodes, packs and copies inserted
//! directly (shared nodes in zones a, b and c, one of them gone; acme's own nodes in a and b).

use std::time::Duration;

use super::work::{self, Cluster};
use super::{DEFAULT_GRACE, ReplicaState};
use crate::TenantId;
use crate::catalog::CatalogPool;
use crate::model::node_retire::{self, RetireError};
use crate::pack::PackId;
use crate::store::NodeId;

async fn node(
    pool: &CatalogPool,
    name: &str,
    zone: &str,
    owner: Option<TenantId>,
    heartbeat: &str,
) -> NodeId {
    let client = pool.get().await.expect("client");
    let sql = format!(
        "INSERT INTO storage_nodes (name, zone, owner_tenant_id, internal_url, capacity_bytes, \
                                    heartbeat_at, started_at) \
         VALUES ($1, $2, $3, 'http://' || $1 || ':7000', 1 << 40, {heartbeat}, now()) RETURNING id"
    );
    NodeId(client.query_one(&sql, &[&name, &zone, &owner.map(|t| t.0)]).await.expect(name).get(0))
}

/// A sealed pack of `domain` written by `copies[0]`, with a copy on each of `copies`.
async fn pack(
    pool: &CatalogPool,
    owner: Option<TenantId>,
    wanted: i16,
    copies: &[(NodeId, ReplicaState)],
) -> PackId {
    let client = pool.get().await.expect("client");
    let id: i64 = client
        .query_one(
            "INSERT INTO packs (node_id, state, size, owner_tenant_id, replicas_wanted) \
             VALUES ($1, 'sealed', 1000, $2, $3) RETURNING id",
            &[&copies[0].0.0, &owner.map(|t| t.0), &wanted],
        )
        .await
        .expect("pack")
        .get(0);
    for (node, state) in copies {
        client
            .execute(
                "INSERT INTO pack_replicas (pack_id, node_id, state) VALUES ($1, $2, $3)",
                &[&id, &node.0, state],
            )
            .await
            .expect("replica");
    }
    PackId(id)
}

async fn cluster(pool: &CatalogPool) -> Cluster {
    work::cluster(&**pool.get().await.expect("client"), DEFAULT_GRACE).await.expect("cluster")
}

use ReplicaState::{Damaged, Ok as Whole};

#[tokio::test]
async fn the_work_query_finds_what_needs_repair_fewest_copies_first_and_remove_keeps_last_copies() {
    let url = pg_local::testing::shared().fresh_database("repair").await;
    let pool = crate::catalog::connect_pool(url.parse().expect("url"), 4).expect("pool");
    crate::catalog::migrate(&mut pool.get().await.expect("client")).await.expect("migrate");
    let acme = crate::catalog::tenants::create(&pool, "acme", None).await.expect("acme");
    let client = pool.get().await.expect("client");
    client.execute("UPDATE tenants SET placement = 'owned' WHERE id = $1", &[&acme.0]).await.expect("owned");
    let s1 = node(&pool, "s1", "a", None, "now()").await;
    let s2 = node(&pool, "s2", "b", None, "now()").await;
    let s3 = node(&pool, "s3", "c", None, "now()").await;
    // Silent for a minute: still within the grace. Silent for an hour: gone.
    let s4 = node(&pool, "s4-silent", "c", None, "now() - interval '1 minute'").await;
    let s5 = node(&pool, "s5-gone", "b", None, "now() - interval '1 hour'").await;
    let o1 = node(&pool, "o1", "a", Some(acme), "now()").await;
    let o2 = node(&pool, "o2", "b", Some(acme), "now()").await;

    let fine = pack(&pool, None, 2, &[(s1, Whole), (s2, Whole)]).await;
    let silent_copy_counts = pack(&pool, None, 2, &[(s1, Whole), (s4, Whole)]).await;
    let one_gone = pack(&pool, None, 2, &[(s1, Whole), (s5, Whole)]).await;
    let same_zone = pack(&pool, None, 2, &[(s2, Whole), (s5, Whole)]).await;
    let damaged = pack(&pool, None, 2, &[(s1, Whole), (s2, Whole), (s3, Damaged)]).await;
    let only_one = pack(&pool, None, 1, &[(s3, Whole)]).await;
    let owned_fine = pack(&pool, Some(acme), 2, &[(o1, Whole), (o2, Whole)]).await;
    let owned_on_shared = pack(&pool, Some(acme), 2, &[(o1, Whole), (o2, Whole), (s3, Whole)]).await;
    let open = pack(&pool, None, 2, &[(s1, ReplicaState::Writing)]).await;
    // Written before the store recorded copies: no row, its writer's copy counts.
    let legacy: i64 = client
        .query_one(
            "INSERT INTO packs (node_id, state, size) VALUES ($1, 'sealed', 1000) RETURNING id",
            &[&s1.0],
        )
        .await
        .expect("legacy pack")
        .get(0);
    let legacy = PackId(legacy);
    client.execute("UPDATE packs SET state = 'open' WHERE id = $1", &[&open.0]).await.expect("open");

    let cluster = cluster(&pool).await;
    assert_eq!(cluster.gone.iter().copied().collect::<Vec<_>>(), [s5]);
    let found = work::work(&**client, &cluster, 100).await.expect("work");
    let ids: Vec<PackId> = found.packs.iter().map(|pack| pack.id).collect();
    // One healthy zone first (by id), then the two-zone packs with odd copies.
    assert_eq!(ids, [one_gone, same_zone, only_one, legacy, damaged, owned_on_shared], "{found:?}");
    assert_eq!(found.backlog, 4, "four packs lack a copy");
    assert_eq!(found.packs[3].replicas, [(s1, Whole)], "the legacy pack's copy is its writer's");
    for pack in [fine, silent_copy_counts, owned_fine, open] {
        assert!(!ids.contains(&pack), "pack {} needs nothing", pack.0);
    }
    let limited = work::work(&**client, &cluster, 1).await.expect("work");
    assert_eq!((limited.packs.len(), limited.backlog), (1, 4), "the backlog counts past the batch");
    // A copy of the legacy pack records its writer's copy too.
    assert!(work::record_copy(&**client, legacy, s2).await.expect("record"));
    let rows: i64 = client
        .query_one("SELECT count(*) FROM pack_replicas WHERE pack_id = $1 AND state = 'ok'", &[&legacy.0])
        .await
        .expect("rows")
        .get(0);
    assert_eq!(rows, 2);
    assert!(!work::record_copy(&**client, open, s2).await.expect("record"), "an open pack is not repaired");

    // s3 holds the last copy of `only_one`: not removable. s1's packs all have copies elsewhere.
    let refused = node_retire::remove(&pool, "s3", DEFAULT_GRACE).await;
    assert!(matches!(refused, Err(RetireError::LastCopies { packs: 1, .. })), "{refused:?}");
    assert!(refused.err().is_some_and(|err| err.to_string().contains("silo node drain s3")));
    let drained = node_retire::drain(&pool, "s3", DEFAULT_GRACE).await.expect("drain");
    assert_eq!((drained.packs, drained.last_copies), (3, 1));
    // Draining, s3's copies stop counting: `only_one` lacks its only copy now; the damaged and
    // misplaced packs still need work.
    let found = work::work(&**client, &self::cluster(&pool).await, 100).await.expect("work");
    assert_eq!(found.packs.first().map(|pack| pack.id), Some(only_one));
    assert_eq!(found.backlog, 3, "only_one, one_gone, same_zone");
    // A copy of `only_one` elsewhere: s3 may go, and its rows with it.
    client
        .execute(
            "INSERT INTO pack_replicas (pack_id, node_id, state) VALUES ($1, $2, 'ok')",
            &[&only_one.0, &s1.0],
        )
        .await
        .expect("copy");
    let removed = node_retire::remove(&pool, "s3", DEFAULT_GRACE).await.expect("remove");
    assert_eq!(removed.state, crate::model::node::NodeState::Removed);
    let left: i64 = client
        .query_one("SELECT count(*) FROM pack_replicas WHERE node_id = $1", &[&s3.0])
        .await
        .expect("n")
        .get(0);
    assert_eq!(left, 0);
    // A copy on a gone node is no copy elsewhere: s1 holds the last healthy copy of `one_gone`.
    let refused = node_retire::remove(&pool, "s1", Duration::from_secs(600)).await;
    assert!(matches!(refused, Err(RetireError::LastCopies { .. })), "{refused:?}");
    assert!(matches!(
        node_retire::drain(&pool, "nope", DEFAULT_GRACE).await,
        Err(RetireError::UnknownNode(_))
    ));
    assert!(matches!(node_retire::drain(&pool, "s3", DEFAULT_GRACE).await, Err(RetireError::Removed(_))));
}

#[tokio::test]
async fn one_node_repairs_at_a_time_and_another_takes_over_when_it_dies() {
    let url = pg_local::testing::shared().fresh_database("repair_lock").await;
    let pool = crate::catalog::connect_pool(url.parse().expect("url"), 4).expect("pool");
    crate::catalog::migrate(&mut pool.get().await.expect("client")).await.expect("migrate");
    let secret = crate::ServerSecret::from_bytes([3; 32]);
    let first = super::Repairer::new(pool.clone(), secret.clone(), NodeId(1), super::RepairConfig::default());
    let second = super::Repairer::new(pool.clone(), secret, NodeId(2), super::RepairConfig::default());
    let held = first.hold_lock(None).await.expect("lock").expect("the first node repairs");
    assert!(second.hold_lock(None).await.expect("lock").is_none(), "one at a time");
    let held = first.hold_lock(Some(held)).await.expect("lock").expect("kept across passes");
    assert!(second.hold_lock(None).await.expect("lock").is_none());
    // The holder dies: its connection closes, and with it the lock.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while second.hold_lock(None).await.expect("lock").is_none() {
        assert!(std::time::Instant::now() < deadline, "nobody took the lock over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A pass over an empty catalog does nothing.
    assert_eq!(second.pass().await.expect("pass"), super::run::PassReport::default());
}
