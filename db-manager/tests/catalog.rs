//! Catalog migrations against the shared throwaway Postgres.

use db_manager::catalog::migrate_all;
use storage_node::catalog::{CatalogError, connect_pool};

async fn pool_for(label: &str) -> storage_node::catalog::CatalogPool {
    let url = pg_local::testing::shared().fresh_database(label).await;
    connect_pool(url.parse().unwrap(), 8).unwrap()
}

#[tokio::test]
async fn concurrent_replicas_migrate_once_and_agree() {
    let pool = pool_for("concurrent").await;
    let runs = (0..4).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move { migrate_all(&pool).await })
    });
    let mut versions = Vec::new();
    for run in runs {
        versions.push(run.await.unwrap().unwrap());
    }
    assert!(versions.windows(2).all(|w| w[0] == w[1]));
    let client = pool.get().await.unwrap();
    let rows: i64 = client.query_one("SELECT count(*) FROM silo_meta", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1, "the first migration ran exactly once");
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    let pool = pool_for("twice").await;
    migrate_all(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    let id: String = client.query_one("SELECT catalog_id::text FROM silo_meta", &[]).await.unwrap().get(0);
    drop(client);
    migrate_all(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    let again: String = client.query_one("SELECT catalog_id::text FROM silo_meta", &[]).await.unwrap().get(0);
    assert_eq!(id, again);
}

#[tokio::test]
async fn a_catalog_newer_than_this_binary_is_refused() {
    let pool = pool_for("too_new").await;
    migrate_all(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO storage_node_schema_history (version, name, applied_on, checksum) \
             VALUES (9999, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let err = migrate_all(&pool).await.unwrap_err();
    assert!(matches!(err, CatalogError::TooNew { applied: 9999, .. }), "{err}");
    assert!(err.to_string().contains("newer than this Silo"), "{err}");
}
