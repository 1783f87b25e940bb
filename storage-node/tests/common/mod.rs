//! Fixtures for chunk store tests: a fresh catalog database and data directory per test.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rand::{RngCore, SeedableRng};
use storage_node::DataDir;
use storage_node::TenantId;
use storage_node::catalog::{CatalogPool, connect_pool, tenants};
use storage_node::chunker::ChunkSizes;
use storage_node::store::{ChunkStore, NodeSpec, ObjectId, PutOptions, StoreConfig, StoreError};

pub struct Fixture {
    pub store: ChunkStore,
    pub pool: CatalogPool,
    pub data_dir: DataDir,
    pub url: String,
    _tmp: tempfile::TempDir,
}

/// Small chunks (16/64/256 KiB), so that a few MiB make many chunk boundaries.
pub fn small_chunks() -> StoreConfig {
    StoreConfig {
        chunk_sizes: ChunkSizes { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 },
        retire_grace: Duration::ZERO,
        pack_target_bytes: 4 * 1024 * 1024,
        ..StoreConfig::default()
    }
}

pub async fn catalog(label: &str) -> (CatalogPool, String) {
    catalog_with_pool(label, 40).await
}

/// A fresh catalog whose pool has `size` connections.
pub async fn catalog_with_pool(label: &str, size: usize) -> (CatalogPool, String) {
    let url = pg_local::testing::shared().fresh_database(label).await;
    let pool = connect_pool(url.parse().expect("url"), size).expect("pool");
    let mut client = deadpool_postgres::Object::take(pool.get().await.expect("connect"));
    storage_node::catalog::migrate(&mut client).await.expect("migrate");
    (pool, url)
}

pub async fn fixture(label: &str, config: StoreConfig) -> Fixture {
    fixture_with_pool(label, config, 40).await
}

/// A fixture whose catalog pool has `size` connections.
pub async fn fixture_with_pool(label: &str, config: StoreConfig, size: usize) -> Fixture {
    let (pool, url) = catalog_with_pool(label, size).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let data_dir = DataDir::open(&tmp.path().join("data")).expect("data dir");
    let store = open_store(&pool, &data_dir, config).await;
    Fixture { store, pool, data_dir, url, _tmp: tmp }
}

pub async fn open_store(pool: &CatalogPool, data_dir: &DataDir, config: StoreConfig) -> ChunkStore {
    let node = NodeSpec { name: "test-node".into(), zone: "zone-a".into() };
    ChunkStore::open(pool.clone(), data_dir, &node, config).await.expect("open store")
}

pub async fn tenant(pool: &CatalogPool, name: &str, quota: Option<u64>) -> TenantId {
    tenants::create(pool, name, quota).await.expect("tenant")
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    data
}

pub fn text_bytes(len: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(len);
    let mut line = 0u64;
    while text.len() < len {
        text.extend_from_slice(
            format!("{line:08} INFO request path=/media/{} status=200\n", line % 977).as_bytes(),
        );
        line += 1;
    }
    text.truncate(len);
    text
}

pub async fn put(store: &ChunkStore, tenant: TenantId, data: &[u8]) -> storage_node::store::StoredObject {
    store
        .put(
            tenant,
            std::io::Cursor::new(data.to_vec()),
            PutOptions { expected_len: Some(data.len() as u64), md5: true },
        )
        .await
        .expect("put")
}

/// Reads `range` (or all) of an object into memory.
pub async fn read(
    store: &ChunkStore,
    tenant: TenantId,
    object: ObjectId,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, StoreError> {
    let mut read = store.read(tenant, object, range).await?;
    let mut out = Vec::new();
    while let Some(piece) = read.stream.next().await {
        let piece: Bytes = piece?;
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// Checks every counter the catalog keeps against the rows it summarises.
pub async fn assert_catalog_consistent(pool: &CatalogPool) {
    let client = pool.get().await.unwrap();
    let bad_refcounts: i64 = client
        .query_one(
            "SELECT count(*) FROM chunks c WHERE c.refcount <> \
             (SELECT count(*) FROM object_chunks oc WHERE oc.tenant_id = c.tenant_id AND oc.chunk_id = c.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad_refcounts, 0, "every refcount equals the manifest entries that use the chunk");
    let bad_tenants: i64 = client
        .query_one(
            "SELECT count(*) FROM tenants t, LATERAL ( \
                 SELECT coalesce(sum(objects), 0) AS objects, coalesce(sum(logical_bytes), 0) AS logical, \
                        coalesce(sum(unique_raw_bytes), 0) AS raw, coalesce(sum(stored_bytes), 0) AS stored \
                 FROM tenant_usage_deltas d WHERE d.tenant_id = t.id) d WHERE \
               t.object_count + d.objects <> (SELECT count(*) FROM objects o WHERE o.tenant_id = t.id) \
               OR t.logical_bytes + d.logical <> (SELECT coalesce(sum(size), 0) FROM objects o WHERE o.tenant_id = t.id) \
               OR t.unique_raw_bytes + d.raw <> (SELECT coalesce(sum(raw_len), 0) FROM chunks c WHERE c.tenant_id = t.id) \
               OR t.stored_bytes + d.stored <> (SELECT coalesce(sum(stored_len), 0) FROM chunks c WHERE c.tenant_id = t.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad_tenants, 0, "usage counters equal the rows they count");
    let bad_packs: i64 = client
        .query_one(
            "SELECT count(*) FROM packs p WHERE p.state <> 'retired' AND p.live_bytes <> \
             (SELECT coalesce(sum(56 + c.stored_len), 0) FROM chunk_locations l \
              JOIN chunks c ON c.tenant_id = l.tenant_id AND c.id = l.chunk_id WHERE l.pack_id = p.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad_packs, 0, "every pack's live bytes equal its located chunks");
    let unlocated: i64 = client
        .query_one(
            "SELECT count(*) FROM chunks c WHERE (c.inline_data IS NULL) = NOT EXISTS \
             (SELECT 1 FROM chunk_locations l WHERE l.tenant_id = c.tenant_id AND l.chunk_id = c.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unlocated, 0, "every chunk has a location, or its bytes inline (never both)");
    let pinned: i64 =
        client.query_one("SELECT count(*) FROM chunks WHERE pin_count > 0", &[]).await.unwrap().get(0);
    assert_eq!(pinned, 0, "no upload runs, so no pin is left");
}
