//! Catalog migrations against the shared throwaway Postgres.

use db_manager::catalog::migrate_all;
use storage_node::catalog::{CatalogError, STORAGE_NODE, connect_pool};

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

/// Records that a release of the future migrated the storage node's schema to `version`.
async fn migrated_by_the_future(client: &tokio_postgres::Client, version: i64) {
    let sql = format!(
        "INSERT INTO storage_node_schema_history (version, name, applied_on, checksum) \
         VALUES ({version}, 'from_the_future', '2030-01-01T00:00:00Z', '0')"
    );
    client.execute(&sql, &[]).await.unwrap();
}

async fn floor(client: &tokio_postgres::Client) -> i64 {
    let sql = "SELECT oldest_runnable FROM schema_compat WHERE component = 'storage_node'";
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_catalog_newer_than_this_binary_is_refused() {
    let pool = pool_for("too_new").await;
    migrate_all(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    migrated_by_the_future(&client, 9999).await;
    // A release that said nothing of which releases may run on it.
    client.execute("DELETE FROM schema_compat", &[]).await.unwrap();
    drop(client);
    let err = migrate_all(&pool).await.unwrap_err();
    assert!(matches!(err, CatalogError::TooNew { applied: 9999, .. }), "{err}");
    assert!(err.to_string().contains("newer than this Silo"), "{err}");
}

/// A release that migrated the catalog past this one and allows it (it only added) lets this
/// one run on it, unchanged; one that needs more refuses it with the version to run. The floor
/// a release records is never lowered by an older one.
#[tokio::test]
async fn a_newer_catalog_runs_this_release_only_if_the_release_that_migrated_it_allows_it() {
    let pool = pool_for("runnable").await;
    let ours = migrate_all(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    assert_eq!(floor(&client).await, STORAGE_NODE.runnable_since);
    let newer = ours.storage_node + 1;
    migrated_by_the_future(&client, newer).await;
    let ran = migrate_all(&pool).await.expect("this release runs on a catalog that allows it");
    assert_eq!(ran.storage_node, newer, "the version the catalog is at");
    assert_eq!(floor(&client).await, STORAGE_NODE.runnable_since, "an older release records nothing");

    client.execute("UPDATE schema_compat SET oldest_runnable = $1", &[&newer]).await.unwrap();
    let err = migrate_all(&pool).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::NotRunnable { runnable_since, .. } if runnable_since == newer),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("know version {newer} or later")), "{err}");

    // At its own version, a release raises the floor to its own need but never lowers it.
    client
        .execute("DELETE FROM storage_node_schema_history WHERE version = $1", &[&(newer as i32)])
        .await
        .unwrap();
    migrate_all(&pool).await.unwrap();
    assert_eq!(floor(&client).await, newer, "not lowered");
}
