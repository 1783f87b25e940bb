//! Placement over a real catalog: nodes registered directly in `storage_nodes` (acme's own
//! nodes in zones a and b; shared nodes in a, b and c, c's being one dead and one draining),
//! packs held on some of them, and the policies and plans over them.

use super::*;
use crate::placement::{OnShortage, PlacementError};

const MB: i64 = 1 << 20;

struct Catalog {
    pool: CatalogPool,
    acme: TenantId,
    bob: TenantId,
}

async fn node(pool: &CatalogPool, name: &str, zone: &str, owner: Option<TenantId>, extra: &str) -> NodeId {
    let client = pool.get().await.expect("client");
    let sql = format!(
        "INSERT INTO storage_nodes (name, zone, owner_tenant_id, internal_url, capacity_bytes, \
                                    heartbeat_at, started_at) \
         VALUES ($1, $2, $3, 'http://' || $1 || ':7000', 1024 * {MB}, now(), now()) RETURNING id"
    );
    let id = NodeId(client.query_one(&sql, &[&name, &zone, &owner.map(|t| t.0)]).await.expect(name).get(0));
    if !extra.is_empty() {
        let sql = format!("UPDATE storage_nodes SET {extra} WHERE id = $1");
        client.execute(&sql, &[&id.0]).await.expect(&sql);
    }
    id
}

async fn pack_on(pool: &CatalogPool, node: NodeId, size: i64, replica_state: &str) {
    let client = pool.get().await.expect("client");
    let pack: i64 = client
        .query_one(
            "INSERT INTO packs (node_id, state, size) VALUES ($1, 'sealed', $2) RETURNING id",
            &[&node.0, &size],
        )
        .await
        .expect("pack")
        .get(0);
    client
        .execute(
            "INSERT INTO pack_replicas (pack_id, node_id, state) VALUES ($1, $2, $3)",
            &[&pack, &node.0, &replica_state],
        )
        .await
        .expect("replica");
}

/// The nodes by name.
struct Nodes {
    s1: NodeId,
    s2: NodeId,
    s5: NodeId,
    o1: NodeId,
    o2: NodeId,
}

async fn catalog() -> (Catalog, Nodes) {
    let url = pg_local::testing::shared().fresh_database("placement").await;
    let pool = crate::catalog::connect_pool(url.parse().expect("url"), 4).expect("pool");
    crate::catalog::migrate(&mut pool.get().await.expect("client")).await.expect("migrate");
    let acme = crate::catalog::tenants::create(&pool, "acme", None).await.expect("acme");
    let bob = crate::catalog::tenants::create(&pool, "bob", None).await.expect("bob");
    let nodes = Nodes {
        s1: node(&pool, "s1", "a", None, "").await,
        s2: node(&pool, "s2", "b", None, "").await,
        s5: node(&pool, "s5", "a", None, "").await,
        o1: node(&pool, "o1", "a", Some(acme), "").await,
        o2: node(&pool, "o2", "b", Some(acme), "").await,
    };
    node(&pool, "s3-dead", "c", None, "heartbeat_at = now() - interval '1 minute'").await;
    node(&pool, "s4-draining", "c", None, "state = 'draining'").await;
    node(&pool, "s6-stopped", "d", None, "stopped_at = now()").await;
    node(&pool, "s7-removed", "e", None, "state = 'removed'").await;
    // s1 holds 600 MB; s5's only pack is damaged there, so it counts for nothing.
    pack_on(&pool, nodes.s1, 600 * MB, "ok").await;
    pack_on(&pool, nodes.s5, 800 * MB, "damaged").await;
    (Catalog { pool, acme, bob }, nodes)
}

fn change(json: &str) -> PolicyChange {
    serde_json::from_str(json).expect("a change")
}

fn targets(plan: &Plan) -> Vec<NodeId> {
    plan.targets.iter().map(|target| target.node).collect()
}

async fn plan_for(catalog: &Catalog, tenant: TenantId, writer: NodeId) -> Result<Plan, PlacementError> {
    let client = catalog.pool.get().await.expect("client");
    plan(&**client, tenant, writer, 64 * MB as u64, &[]).await
}

#[tokio::test]
async fn policies_are_checked_against_the_registered_nodes_and_plans_follow_them() {
    let (catalog, nodes) = catalog().await;
    let pool = &catalog.pool;

    let shown = show_policy(pool, "bob").await.expect("bob's placement");
    assert_eq!(shown.policy, PlacementPolicy::default());
    assert_eq!(shown.zones, ["a", "b", "c", "d"], "dead, draining and stopped nodes are registered");
    assert_eq!((shown.effective_replication_factor, shown.domain), (2, PlacementMode::Shared));
    let json = serde_json::to_value(&shown).expect("json");
    assert_eq!((json["tenant"].as_str(), json["mode"].as_str()), (Some("bob"), Some("shared")), "{json}");

    // The default plan: b's node, then a's with the most room (s5: its damaged pack counts not).
    let plan = plan_for(&catalog, catalog.bob, NodeId(9999)).await.expect("a plan");
    assert_eq!((plan.wanted, plan.degraded, plan.domain), (2, false, Domain::Shared));
    let mut chosen = targets(&plan);
    chosen.sort_by_key(|node| node.0);
    assert_eq!(chosen, [nodes.s2, nodes.s5]);
    assert_eq!(plan.targets[0].internal_url.as_deref().map(|u| u.ends_with(":7000")), Some(true));
    // The writer first when it is eligible, even with less room.
    let plan = plan_for(&catalog, catalog.bob, nodes.s1).await.expect("a plan");
    assert_eq!(targets(&plan), [nodes.s1, nodes.s2]);
    let plan = plan_for(&catalog, catalog.bob, nodes.o1).await.expect("a plan");
    assert!(!targets(&plan).contains(&nodes.o1), "acme's node holds no shared pack");

    // RF 3 is met by the registered zones, not by the live ones: a refused shortage, then degraded.
    set_policy(pool, "bob", &change(r#"{"replication_factor": 3}"#)).await.expect("three zones");
    let refused = plan_for(&catalog, catalog.bob, nodes.s1).await;
    assert!(
        matches!(&refused, Err(PlacementError::Shortage { wanted: 3, zones }) if zones == &["a", "b"]),
        "{refused:?}"
    );
    let degraded = set_policy(pool, "bob", &change(r#"{"on_shortage": "degraded"}"#)).await.expect("set");
    assert_eq!(
        (degraded.policy.replication_factor, degraded.policy.on_shortage),
        (Some(3), OnShortage::Degraded)
    );
    let plan = plan_for(&catalog, catalog.bob, nodes.s1).await.expect("degraded plan");
    assert_eq!((targets(&plan), plan.wanted, plan.degraded), (vec![nodes.s1, nodes.s2], 3, true));

    // Bad policies are refused, and nothing changes.
    let err = set_policy(pool, "bob", &change(r#"{"replication_factor": 5}"#)).await.expect_err("5 zones");
    assert!(err.to_string().contains("the shared nodes are in 4 (a, b, c, d)"), "{err}");
    let err = set_policy(pool, "bob", &change(r#"{"mode": "owned"}"#)).await.expect_err("no own node");
    assert!(matches!(&err, PlacementError::NoOwnedNodes { tenant } if tenant == "bob"), "{err}");
    let err = set_policy(pool, "bob", &change(r#"{"allowed_zones": ["a", "e"]}"#)).await.expect_err("e");
    assert!(matches!(&err, PlacementError::ZoneWithoutNode { zone, .. } if zone == "e"), "{err}");
    let err = set_policy(pool, "bob", &change(r#"{"allowed_zones": ["a b"]}"#)).await.expect_err("name");
    assert!(matches!(err, PlacementError::InvalidZone(_)), "{err}");
    let err = set_policy(pool, "nobody", &change("{}")).await.expect_err("unknown");
    assert!(matches!(err, PlacementError::UnknownTenant(_)), "{err}");
    assert_eq!(show_policy(pool, "bob").await.expect("bob").policy, degraded.policy);

    // acme's own nodes: in a and b only.
    let err = set_policy(pool, "acme", &change(r#"{"mode": "owned", "replication_factor": 3}"#))
        .await
        .expect_err("3 owned zones");
    assert_eq!(
        err.to_string(),
        "replication factor 3 needs nodes in 3 zones; tenant acme's own nodes are in 2 (a, b); \
         lower the replication factor, or add nodes in other zones"
    );
    let owned = set_policy(pool, "acme", &change(r#"{"mode": "owned"}"#)).await.expect("owned");
    assert_eq!((owned.domain, owned.effective_replication_factor), (PlacementMode::Owned, 2));
    let plan = plan_for(&catalog, catalog.acme, nodes.s1).await.expect("owned plan");
    assert_eq!(plan.domain, Domain::Owned(catalog.acme));
    let mut chosen = targets(&plan);
    chosen.sort_by_key(|node| node.0);
    assert_eq!(chosen, [nodes.o1, nodes.o2], "a shared writer relays acme's pack, it holds none");
    let narrowed =
        set_policy(pool, "acme", &change(r#"{"allowed_zones": ["b"], "replication_factor": null}"#)).await;
    let narrowed = narrowed.expect("only b");
    assert_eq!((narrowed.zones, narrowed.effective_replication_factor), (vec!["b".to_string()], 1));
    let plan = plan_for(&catalog, catalog.acme, nodes.o1).await.expect("b only");
    assert_eq!(targets(&plan), [nodes.o2], "the writer is in a zone not allowed");
}
