//! A catalog that went back in time (a point-in-time recovery, a dump restored by hand) after
//! GC compacted the packs it names: the store reconciles it with the packs on disk when it
//! opens, with no marker from `silo catalog restore`.

use crate::common;

use std::process::Command;

use common::*;
use storage_node::catalog::connect_pool;

/// Copies the catalog database at `url` into a new database with `pg_dump` and `pg_restore`.
async fn snapshot(url: &str, label: &str, dir: &std::path::Path) -> String {
    let file = dir.join(format!("{label}.dump"));
    let dumped = Command::new("pg_dump")
        .args(["--format=custom", "--dbname", url, "--file"])
        .arg(&file)
        .status()
        .expect("pg_dump");
    assert!(dumped.success());
    let copy = pg_local::testing::shared().fresh_database(label).await;
    let restored = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname", &copy])
        .arg(&file)
        .status()
        .expect("pg_restore");
    assert!(restored.success());
    copy
}

#[tokio::test]
async fn a_catalog_rolled_back_past_a_compaction_is_reconciled_when_the_store_opens() {
    let fx = fixture("rollback", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let kept = random_bytes(1024 * 1024, 30);
    let keep = put(&fx.store, acme, &kept).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let earlier = snapshot(&fx.url, "rollback_earlier", tmp.path()).await;

    // After the snapshot, GC compacts the pack `keep` lives in, and deletes it. (Both objects
    // fit in one pack under the 4 MiB target; `keep` is under half of it.)
    let doomed = put(&fx.store, acme, &random_bytes(5 * 512 * 1024, 31)).await;
    fx.store.delete(acme, doomed.id).await.expect("delete");
    let report = fx.store.gc().await.expect("gc");
    assert!(report.packs_compacted > 0 && report.packs_deleted > 0, "{report:?}");
    fx.store.close().await.expect("close");

    // The catalog goes back to the snapshot: it names deleted packs, misses the new one, and
    // its pack ids restart below the files on disk.
    let pool = connect_pool(earlier.parse().expect("url"), 8).expect("pool");
    let named: Vec<i64> = pool
        .get()
        .await
        .expect("connect")
        .query("SELECT DISTINCT pack_id FROM chunk_locations", &[])
        .await
        .expect("packs")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let packs = fx.data_dir.path().join("packs");
    assert!(
        named.iter().all(|id| !packs.join(format!("{id:016x}.pack")).exists()),
        "every pack the earlier catalog names is gone: {named:?}"
    );
    let store = open_store(&pool, &fx.data_dir, small_chunks()).await;
    assert_eq!(read(&store, acme, keep.id, None).await.expect("read"), kept);
    let fresh = random_bytes(2 * 1024 * 1024, 32);
    let added = put(&store, acme, &fresh).await;
    assert_eq!(read(&store, acme, added.id, None).await.expect("read"), fresh);
    assert_catalog_consistent(&pool).await;
    store.gc().await.expect("gc");
    assert_eq!(read(&store, acme, keep.id, None).await.expect("read after gc"), kept);
    assert_eq!(store.scrub(1.0).await.expect("scrub").damaged, []);
}

#[tokio::test]
async fn gc_never_deletes_a_file_that_its_retired_row_never_wrote() {
    let fx = fixture("foreign_file", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let kept = random_bytes(512 * 1024, 40);
    let keep = put(&fx.store, acme, &kept).await;
    fx.store.close().await.expect("close");
    // What an older Silo left after a catalog restore: a pack file of another timeline under
    // an id whose row it retired straight from open, because creating that file failed.
    let packs = fx.data_dir.path().join("packs");
    let mut foreign = std::fs::read(packs.join(format!("{:016x}.pack", 1))).expect("pack 1");
    foreign[16..24].copy_from_slice(&1000i64.to_le_bytes());
    let path = packs.join(format!("{:016x}.pack", 1000));
    std::fs::write(&path, &foreign).expect("write");
    let client = fx.pool.get().await.expect("connect");
    client
        .execute(
            "INSERT INTO packs (id, node_id, state, retired_at) OVERRIDING SYSTEM VALUE \
             SELECT 1000, node_id, 'retired', now() FROM packs WHERE id = 1",
            &[],
        )
        .await
        .expect("retired row");
    drop(client);

    fx.store.gc().await.expect("gc");
    assert!(path.exists(), "GC deleted a file that its row never wrote");
    // The next start registers the file; from then on GC accounts for it like any pack.
    let store = open_store(&fx.pool, &fx.data_dir, small_chunks()).await;
    let known: i64 = fx
        .pool
        .get()
        .await
        .expect("connect")
        .query_one("SELECT count(*) FROM packs WHERE id = 1000 AND state = 'sealed'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(known, 1, "the file is registered");
    assert_eq!(read(&store, acme, keep.id, None).await.expect("read"), kept);
    assert_catalog_consistent(&fx.pool).await;
}
