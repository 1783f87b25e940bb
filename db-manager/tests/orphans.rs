//! The orphan sweep over a catalog with every component's tables: an object that a crash left
//! unreferenced is deleted once past the grace period, and nothing that a backup, a catalog
//! backup, an S3 key or an upload part names is ever touched.

use std::io::Cursor;
use std::time::Duration;

use db_manager::orphans::{ORPHAN_GRACE, REFERRERS};
use storage_node::catalog::{connect_pool, tenants};
use storage_node::store::{ChunkStore, NodeSpec, ObjectId, PutOptions};

#[tokio::test]
async fn the_sweep_deletes_old_unreferenced_objects_and_nothing_else() {
    let url = pg_local::testing::shared().fresh_database("orphans").await;
    let pool = connect_pool(url.parse().expect("url"), 8).expect("pool");
    db_manager::catalog::migrate_all(&pool).await.expect("migrate");
    let tmp = tempfile::tempdir().expect("tmp");
    let data_dir = storage_node::DataDir::open(&tmp.path().join("data")).expect("data dir");
    let node = NodeSpec { name: "n".into(), zone: "z".into() };
    let store = ChunkStore::open(pool.clone(), &data_dir, &node, Default::default()).await.expect("store");
    let acme = tenants::create(&pool, "acme", None).await.expect("tenant");

    let mut ids = Vec::new();
    for seed in 0..7u8 {
        let object =
            store.put(acme, Cursor::new(vec![seed; 10_000]), PutOptions::default()).await.expect("put");
        ids.push(object.id.0);
    }
    let [orphan, fresh_orphan, backup, catalog_backup, s3_key, part, failed_backup] =
        <[i64; 7]>::try_from(ids).expect("seven");
    let client = pool.get().await.expect("client");
    client
        .batch_execute(&format!(
            "INSERT INTO database_backups (tenant_id, database_name, plan, server_name, kind, status, finished_at, object_id) \
                 VALUES ({t}, 'shop', 'small', 'local', 'final', 'complete', now(), {backup}); \
             INSERT INTO database_backups (tenant_id, database_name, plan, server_name, kind, status, object_id) \
                 VALUES ({t}, 'shop', 'small', 'local', 'manual', 'failed', {failed_backup}); \
             INSERT INTO catalog_backups (status, object_id) VALUES ('running', {catalog_backup}); \
             INSERT INTO buckets (name, tenant_id) VALUES ('media', {t}); \
             INSERT INTO s3_objects (bucket, key, object_id, etag) VALUES ('media', 'k', {s3_key}, 'e'); \
             INSERT INTO multipart_uploads (id, bucket, key, tenant_id) VALUES ('u1', 'media', 'big', {t}); \
             INSERT INTO multipart_parts (upload_id, part_number, object_id, etag, size) VALUES ('u1', 1, {part}, 'e', 10000); \
             UPDATE objects SET created_at = now() - interval '2 days' WHERE id <> {fresh_orphan};",
            t = acme.0
        ))
        .await
        .expect("references");

    let swept = store.sweep_orphans(ORPHAN_GRACE, &REFERRERS).await.expect("sweep");
    assert_eq!(swept, 1, "only the old orphan goes");
    let left: Vec<i64> = client
        .query("SELECT id FROM objects ORDER BY id", &[])
        .await
        .expect("objects")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut expected = vec![fresh_orphan, backup, catalog_backup, s3_key, part, failed_backup];
    expected.sort();
    assert_eq!(left, expected, "the orphan {orphan} went, and nothing else");
    assert_eq!(store.usage(acme).await.expect("usage").objects, 6, "the usage counters follow");
    assert!(matches!(
        store.read(acme, ObjectId(orphan), None).await,
        Err(storage_node::store::StoreError::NoSuchObject(_))
    ));

    // Once past the grace period, the other orphan goes too; a second sweep finds nothing.
    assert_eq!(store.sweep_orphans(Duration::ZERO, &REFERRERS).await.expect("sweep"), 1);
    assert_eq!(store.sweep_orphans(Duration::ZERO, &REFERRERS).await.expect("sweep"), 0);
    assert_eq!(store.usage(acme).await.expect("usage").objects, 5);
}
