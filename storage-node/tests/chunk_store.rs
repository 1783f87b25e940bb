//! The chunk store against a real throwaway Postgres: round trips, dedup, compression, ranges,
//! deletes and GC, integrity, quotas and truncated uploads.

use crate::common;

use common::*;
use storage_node::store::{PutOptions, StoreConfig, StoreError};

#[tokio::test]
async fn ranges_read_back_exactly_at_every_edge() {
    let fx = fixture("ranges", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let data = random_bytes(3 * 1024 * 1024 + 17, 1);
    let object = put(&fx.store, acme, &data).await;
    assert_eq!(object.size, data.len() as u64);
    assert!(object.chunk_count > 10, "{} chunks", object.chunk_count);
    assert_eq!(object.md5, Some(md5_of(&data)));

    assert_eq!(read(&fx.store, acme, object.id, None).await.unwrap(), data);
    let client = fx.pool.get().await.unwrap();
    let boundary: i64 = client
        .query_one(
            "SELECT logical_offset FROM object_chunks WHERE object_id = $1 ORDER BY 1 OFFSET 3 LIMIT 1",
            &[&object.id.0],
        )
        .await
        .unwrap()
        .get(0);
    let boundary = boundary as u64;
    let len = data.len() as u64;
    for range in [0..1, len - 1..len, boundary - 1..boundary + 1, boundary..boundary + 1, 10..len - 10, 5..5]
    {
        let got = read(&fx.store, acme, object.id, Some(range.clone())).await.unwrap();
        assert_eq!(got, &data[range.start as usize..range.end as usize], "range {range:?}");
    }
    // A reversed range is one of the bad inputs under test.
    #[allow(clippy::reversed_empty_ranges)]
    let bad_ranges = [len..len + 1, 0..len + 1, 7..3];
    for range in bad_ranges {
        let err = fx.store.read(acme, object.id, Some(range.clone())).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidRange { .. }), "{range:?}: {err}");
    }

    let empty = put(&fx.store, acme, &[]).await;
    assert_eq!((empty.size, empty.chunk_count), (0, 0));
    assert_eq!(read(&fx.store, acme, empty.id, None).await.unwrap(), Vec::<u8>::new());
    assert!(matches!(
        fx.store.read(acme, empty.id, Some(0..1)).await.unwrap_err(),
        StoreError::InvalidRange { .. }
    ));
    assert_catalog_consistent(&fx.pool).await;
}

#[tokio::test]
async fn equal_content_dedups_within_a_tenant_and_never_across_tenants() {
    let fx = fixture("dedup", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let globex = tenant(&fx.pool, "globex", None).await;
    let data = random_bytes(2 * 1024 * 1024, 2);
    let first = put(&fx.store, acme, &data).await;
    let second = put(&fx.store, acme, &data).await;
    assert_eq!(first.new_chunks, first.chunk_count);
    assert_eq!(second.new_chunks, 0, "the second copy stores nothing new");
    let other = put(&fx.store, globex, &data).await;
    assert_eq!(other.new_chunks, other.chunk_count, "another tenant's copy shares nothing");

    let usage = fx.store.usage(acme).await.unwrap();
    assert_eq!(usage.objects, 2);
    assert_eq!(usage.logical_bytes, 2 * data.len() as u64);
    assert_eq!(usage.unique_bytes, data.len() as u64);
    assert!((usage.dedup_ratio - 2.0).abs() < 1e-9, "{usage:?}");
    assert_eq!(fx.store.usage(globex).await.unwrap().objects, 1);
    // A tenant cannot read another tenant's object, even knowing its id.
    assert!(matches!(fx.store.read(globex, first.id, None).await.unwrap_err(), StoreError::NoSuchObject(_)));
    assert!(matches!(fx.store.delete(globex, first.id).await.unwrap_err(), StoreError::NoSuchObject(_)));
    assert_catalog_consistent(&fx.pool).await;
}

#[tokio::test]
async fn text_is_stored_compressed_and_media_raw() {
    let fx = fixture("compression", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let text = text_bytes(2 * 1024 * 1024);
    let stored = put(&fx.store, acme, &text).await;
    assert!(stored.new_stored_bytes < text.len() as u64 / 4, "{stored:?}");
    assert_eq!(read(&fx.store, acme, stored.id, Some(1000..300_000)).await.unwrap(), &text[1000..300_000]);

    let media = random_bytes(2 * 1024 * 1024, 3);
    let stored = put(&fx.store, acme, &media).await;
    assert_eq!(stored.new_stored_bytes, media.len() as u64, "incompressible chunks are kept raw");
    let usage = fx.store.usage(acme).await.unwrap();
    assert!(usage.compression_ratio > 1.5, "{usage:?}");
}

#[tokio::test]
async fn deleted_objects_are_reclaimed_by_gc_and_shared_chunks_survive() {
    let fx = fixture("gc", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let shared = random_bytes(3 * 1024 * 1024, 4);
    let keep = put(&fx.store, acme, &shared).await;
    let mut longer = shared.clone();
    longer.extend(random_bytes(2 * 1024 * 1024, 5));
    let doomed = put(&fx.store, acme, &longer).await;
    let unique = random_bytes(6 * 1024 * 1024, 6);
    let gone = put(&fx.store, acme, &unique).await;

    fx.store.delete(acme, doomed.id).await.unwrap();
    fx.store.delete(acme, gone.id).await.unwrap();
    assert!(matches!(fx.store.read(acme, gone.id, None).await.unwrap_err(), StoreError::NoSuchObject(_)));
    let before = pack_bytes(&fx);
    let report = fx.store.gc().await.unwrap();
    assert!(report.chunks_deleted > 0, "{report:?}");
    assert!(report.packs_compacted > 0 && report.packs_deleted > 0, "{report:?}");
    let after = pack_bytes(&fx);
    // 3 MiB stay live; a pack keeps its dead bytes only while they are under half of it.
    assert!(after < 4 * 1024 * 1024 + 512 * 1024, "packs shrank from {before} to {after}");
    assert!(before - after > 6 * 1024 * 1024, "packs shrank from {before} to {after}");
    assert_eq!(read(&fx.store, acme, keep.id, None).await.unwrap(), shared, "shared chunks survive GC");
    let usage = fx.store.usage(acme).await.unwrap();
    assert_eq!((usage.objects, usage.logical_bytes), (1, shared.len() as u64));
    assert_catalog_consistent(&fx.pool).await;

    fx.store.delete(acme, keep.id).await.unwrap();
    fx.store.gc().await.unwrap();
    fx.store.close().await.unwrap();
    fx.store.gc().await.unwrap();
    let usage = fx.store.usage(acme).await.unwrap();
    assert_eq!((usage.objects, usage.unique_bytes, usage.stored_bytes), (0, 0, 0));
    assert_eq!(pack_bytes(&fx), 0, "every pack file is gone");
    assert_catalog_consistent(&fx.pool).await;
}

#[tokio::test]
async fn a_flipped_byte_fails_the_read_with_an_integrity_error_and_scrub_names_the_object() {
    let fx = fixture("bitflip", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let victim_data = random_bytes(1024 * 1024, 7);
    let victim = put(&fx.store, acme, &victim_data).await;
    let bystander_data = random_bytes(1024 * 1024, 8);
    let bystander = put(&fx.store, acme, &bystander_data).await;

    let client = fx.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT oc.logical_offset, l.pack_id, l.pack_offset FROM object_chunks oc \
             JOIN chunk_locations l ON l.tenant_id = oc.tenant_id AND l.chunk_id = oc.chunk_id \
             WHERE oc.object_id = $1 ORDER BY oc.logical_offset OFFSET 2 LIMIT 1",
            &[&victim.id.0],
        )
        .await
        .unwrap();
    let (logical, pack, offset): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let path = fx.store.packs_dir().join(format!("{pack:016x}.pack"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset as usize + 56 + 100] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let start = logical as u64 + 50;
    let err = read(&fx.store, acme, victim.id, Some(start..start + 100)).await.unwrap_err();
    assert!(matches!(err, StoreError::Integrity { .. }), "{err}");
    assert!(err.to_string().contains("do not hash to its id"), "{err}");
    assert!(read(&fx.store, acme, victim.id, Some(0..10)).await.is_ok(), "other chunks still read");
    assert_eq!(read(&fx.store, acme, bystander.id, None).await.unwrap(), bystander_data);

    let report = fx.store.scrub(1.0).await.unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].objects, vec![victim.id.0]);
    assert!(report.chunks_checked > 10);
}

#[tokio::test]
async fn an_upload_over_the_quota_fails_and_writes_nothing() {
    let fx = fixture("quota", small_chunks()).await;
    let small = tenant(&fx.pool, "small", Some(3 * 1024 * 1024)).await;
    let fits = put(&fx.store, small, &random_bytes(2 * 1024 * 1024, 9)).await;

    // Announced: refused before a byte is read.
    let data = random_bytes(2 * 1024 * 1024, 10);
    let options = PutOptions { expected_len: Some(data.len() as u64), md5: false };
    let err = fx.store.put(small, std::io::Cursor::new(data.clone()), options).await.unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err}");
    // Not announced: refused as soon as the body crosses the quota, even when it starts with
    // chunks the tenant has (their pins are released).
    let mut known_then_new = random_bytes(2 * 1024 * 1024, 9);
    known_then_new.extend(data);
    let err =
        fx.store.put(small, std::io::Cursor::new(known_then_new), PutOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err}");
    assert!(err.to_string().contains("quota"), "{err}");

    let usage = fx.store.usage(small).await.unwrap();
    assert_eq!((usage.objects, usage.logical_bytes), (1, fits.size));
    assert_catalog_consistent(&fx.pool).await;
}

#[tokio::test]
async fn a_truncated_upload_leaves_no_object() {
    let fx = fixture("truncated", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let data = random_bytes(1024 * 1024, 11);
    let options = PutOptions { expected_len: Some(2 * 1024 * 1024), md5: false };
    let err = fx.store.put(acme, std::io::Cursor::new(data), options).await.unwrap_err();
    assert!(matches!(err, StoreError::Truncated { expected: 2097152, received: 1048576 }), "{err}");
    assert_eq!(fx.store.usage(acme).await.unwrap().objects, 0);

    let failing = FailingReader { left: 300_000 };
    let err = fx.store.put(acme, failing, PutOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Source(_)), "{err}");
    assert_eq!(fx.store.usage(acme).await.unwrap().objects, 0);
    fx.store.gc().await.unwrap();
    assert_catalog_consistent(&fx.pool).await;
}

#[tokio::test]
async fn a_copy_shares_chunks_and_outlives_its_source() {
    let fx = fixture("copy", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let data = random_bytes(1024 * 1024, 12);
    let original = put(&fx.store, acme, &data).await;
    let mut client = fx.pool.get().await.unwrap();
    let txn = client.transaction().await.unwrap();
    let copy = fx.store.copy_in(&txn, acme, original.id).await.unwrap();
    txn.commit().await.unwrap();
    fx.store.delete(acme, original.id).await.unwrap();
    fx.store.gc().await.unwrap();
    assert_eq!(read(&fx.store, acme, copy, None).await.unwrap(), data);
    let usage = fx.store.usage(acme).await.unwrap();
    assert_eq!((usage.objects, usage.unique_bytes), (1, data.len() as u64));
    assert_catalog_consistent(&fx.pool).await;
}

fn md5_of(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

fn pack_bytes(fx: &Fixture) -> u64 {
    std::fs::read_dir(fx.store.packs_dir())
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum()
}

/// A body that breaks off with an error, as a client that disconnects.
struct FailingReader {
    left: usize,
}

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "peer left",
            )));
        }
        let n = self.left.min(buf.remaining()).min(4096);
        buf.put_slice(&vec![0x5a; n]);
        self.left -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_range_hashes_only_the_blocks_it_reads_and_a_flipped_bit_in_them_is_caught() {
    let fx = fixture("tree_ranges", StoreConfig::default()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let data = random_bytes(4 * 1024 * 1024, 21);
    let object = put(&fx.store, acme, &data).await;
    let block = storage_node::chunk_tree::BLOCK_LEN as u64;
    let client = fx.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT oc.logical_offset, l.pack_id, l.pack_offset, c.tree IS NOT NULL FROM object_chunks oc \
             JOIN chunks c ON c.tenant_id = oc.tenant_id AND c.id = oc.chunk_id \
             JOIN chunk_locations l ON l.tenant_id = oc.tenant_id AND l.chunk_id = oc.chunk_id \
             WHERE oc.object_id = $1 AND c.raw_len > 3 * $2::int8 ORDER BY oc.logical_offset LIMIT 1",
            &[&object.id.0, &(block as i64)],
        )
        .await
        .unwrap();
    let (logical, pack, offset, has_tree): (i64, i64, i64, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(has_tree, "an uncompressed chunk of several blocks keeps its tree");
    let logical = logical as u64;
    let first_block = logical + 10..logical + 1000;
    let third_block = logical + 2 * block + 1..logical + 2 * block + 100;
    let expect = |range: &std::ops::Range<u64>| data[range.start as usize..range.end as usize].to_vec();
    assert_eq!(
        read(&fx.store, acme, object.id, Some(third_block.clone())).await.unwrap(),
        expect(&third_block)
    );

    // A flipped bit in the chunk's third block: a range in its first block still reads (only
    // that block is hashed), a range in the third fails, and so does the whole object.
    let path = fx.store.packs_dir().join(format!("{pack:016x}.pack"));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = offset as u64 + storage_node::pack::RECORD_HEADER_LEN + 2 * block + 7;
    bytes[at as usize] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(
        read(&fx.store, acme, object.id, Some(first_block.clone())).await.unwrap(),
        expect(&first_block)
    );
    let err = read(&fx.store, acme, object.id, Some(third_block)).await.unwrap_err();
    assert!(matches!(err, StoreError::Integrity { .. }), "{err}");
    let err = read(&fx.store, acme, object.id, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Integrity { .. }), "{err}");
}

#[tokio::test]
async fn concurrent_uploads_share_a_few_packs_and_each_reads_back_exact() {
    let config = StoreConfig { pack_target_bytes: 64 * 1024 * 1024, ..small_chunks() };
    let fx = fixture("shared_packs", config).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let globex = tenant(&fx.pool, "globex", None).await;
    let uploads = 24;
    let bodies: Vec<Vec<u8>> =
        (0..uploads).map(|at| random_bytes(512 * 1024 + at * 999, 100 + at as u64)).collect();
    let puts = bodies.iter().enumerate().map(|(at, body)| {
        let owner = if at % 2 == 0 { acme } else { globex };
        let store = fx.store.clone();
        let body = body.clone();
        tokio::spawn(async move { (owner, put(&store, owner, &body).await) })
    });
    let stored = futures::future::join_all(puts).await;

    // One upload each would have opened 24 packs; they shared the class's few.
    let client = fx.pool.get().await.unwrap();
    let packs: i64 = client.query_one("SELECT count(*) FROM packs", &[]).await.unwrap().get(0);
    assert!(packs as usize <= storage_node::store::PACKS_PER_CLASS, "{packs} packs for {uploads} uploads");
    let stats = fx.store.pack_writer_stats();
    assert_eq!(stats.syncs + stats.syncs_shared, uploads as u64, "{stats:?}");
    for (stored, body) in stored.into_iter().zip(&bodies) {
        let (owner, object) = stored.unwrap();
        assert_eq!(read(&fx.store, owner, object.id, None).await.unwrap(), *body);
        assert_eq!(object.md5, Some(md5_of(body)));
    }
    // Sealed at shutdown with every record durable; GC then finds nothing to reclaim.
    fx.store.close().await.unwrap();
    let open: i64 =
        client.query_one("SELECT count(*) FROM packs WHERE state = 'open'", &[]).await.unwrap().get(0);
    assert_eq!(open, 0);
    let report = fx.store.gc().await.unwrap();
    assert_eq!(report.chunks_deleted, 0, "{report:?}");
    for (at, body) in bodies.iter().enumerate().take(3) {
        let owner = if at % 2 == 0 { acme } else { globex };
        let again = put(&fx.store, owner, body).await;
        assert_eq!(read(&fx.store, owner, again.id, None).await.unwrap(), *body);
    }
    assert_catalog_consistent(&fx.pool).await;
}
