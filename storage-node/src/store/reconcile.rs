//! Reconciling the catalog with the packs on disk, after the catalog went back in time.
//!
//! A catalog restored from a backup (or rolled back by point-in-time recovery) describes the
//! packs as they were when it was taken. Since then GC may have compacted packs: their live
//! records were copied into newer packs the restored catalog never heard of, and the old files
//! are gone. This module owns the repair, run by [`ChunkStore::open`] before anything else uses
//! the store:
//!
//! - pack ids are allocated past every pack file on disk, so a new pack can never take the
//!   name of one that exists;
//! - pack files the catalog does not know are registered (sealed), never deleted blindly;
//! - every chunk location whose record is not where the catalog says is found again by the
//!   chunk's id in the packs' own records, verified (keyed BLAKE3), and repointed;
//! - packs' live bytes and sizes are recounted from the locations and the files.
//!
//! It runs in full when `silo catalog restore` left its marker in the data directory, or when
//! the catalog and the disk disagree (a pack file without a row, or a live row without a file).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::verify::{ChunkLocation, LOCATIONS_SELECT, ReadMode};
use super::{ChunkStore, StoreError};
use crate::pack::scan::{pack_ids_on_disk, scan_pack};
use crate::pack::{PackId, RECORD_HEADER_LEN, pack_path};
use crate::{ChunkId, TenantId};

/// The file `silo catalog restore` leaves in the data directory: the next start reconciles.
pub use crate::data_dir::CATALOG_RESTORED_MARKER as RESTORED_MARKER;

/// Asks the next start of the store in `data_dir` to reconcile the catalog with the packs.
///
/// # Errors
/// The I/O error of writing the marker.
pub fn mark_catalog_restored(data_dir: &Path) -> std::io::Result<()> {
    crate::data_dir::write_atomically(&data_dir.join(RESTORED_MARKER), b"reconcile at next start\n", 0o600)
}

/// Where chunks have records in the packs on disk: (tenant, chunk) → (pack, offset)s.
pub(crate) type PackIndex = HashMap<(TenantId, ChunkId), Vec<(PackId, u64)>>;

/// A location the catalog has, and where its chunk really is (if anywhere).
type Moved = (ChunkLocation, Option<(PackId, u64)>);

/// What a reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    /// Pack files on disk that the catalog did not know, now registered.
    pub packs_registered: u64,
    /// Chunk locations that named a pack or offset without the chunk, now repointed.
    pub locations_repointed: u64,
    /// Chunks the catalog names that no pack on disk holds (their objects cannot be read).
    pub chunks_missing: u64,
    /// Packs the catalog had as live whose files are gone, now retired.
    pub packs_retired: u64,
}

impl ChunkStore {
    /// Brings pack ids past the files on disk and reconciles the catalog when it is needed.
    /// Called by [`ChunkStore::open`], before the store serves anything.
    pub(super) async fn reconcile_at_start(&self, data_dir: &Path) -> Result<(), StoreError> {
        let marker = data_dir.join(RESTORED_MARKER);
        let forced = marker.exists();
        let on_disk = self.packs_on_disk().await?;
        self.advance_pack_ids(on_disk.iter().max().copied()).await?;
        if forced || self.disagrees_with_disk(&on_disk).await? {
            let report = self.reconcile(&on_disk).await?;
            if report.chunks_missing > 0 {
                tracing::error!(?report, "reconciled the catalog with the packs; some chunks are on no pack");
            } else {
                tracing::info!(?report, "reconciled the catalog with the packs on disk");
            }
        }
        if forced {
            std::fs::remove_file(&marker).map_err(|err| StoreError::io(&marker, err))?;
        }
        Ok(())
    }

    async fn packs_on_disk(&self) -> Result<Vec<PackId>, StoreError> {
        let dir = self.inner.packs_dir.clone();
        tokio::task::spawn_blocking(move || pack_ids_on_disk(&dir).map_err(|err| StoreError::io(dir, err)))
            .await?
    }

    /// Makes the next pack id greater than `max_on_disk` (and than every row): a restored
    /// catalog's sequence is as old as its backup, and ids after it name files that exist.
    /// The sequence only ever moves forward.
    pub(super) async fn advance_pack_ids(&self, max_on_disk: Option<PackId>) -> Result<(), StoreError> {
        let client = self.inner.pool.get().await?;
        // Postgres names (and quotes) the sequence itself, so the name is safe to splice in.
        // The next id it would hand out must be past `floor`.
        let sequence: String =
            client.query_one("SELECT pg_get_serial_sequence('packs', 'id')", &[]).await?.get(0);
        let floor = max_on_disk.map_or(0, |id| id.0);
        client
            .query(
                &format!(
                    "SELECT setval($1::text::regclass, f.floor) \
                     FROM (SELECT greatest($2::int8, (SELECT coalesce(max(id), 0) FROM packs)) AS floor) f \
                     WHERE f.floor >= (SELECT last_value + CASE WHEN is_called THEN 1 ELSE 0 END FROM {sequence})"
                ),
                &[&sequence, &floor],
            )
            .await?;
        Ok(())
    }

    /// Whether a pack file has no row, or a live row of this node has no file.
    async fn disagrees_with_disk(&self, on_disk: &[PackId]) -> Result<bool, StoreError> {
        let client = self.inner.pool.get().await?;
        let ids: Vec<i64> = on_disk.iter().map(|id| id.0).collect();
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM unnest($1::int8[]) AS f(id) WHERE NOT EXISTS \
                    (SELECT 1 FROM packs WHERE packs.id = f.id)) \
                 OR EXISTS (SELECT 1 FROM packs p JOIN pack_replicas r ON r.pack_id = p.id AND r.node_id = $2 \
                    WHERE p.state <> 'retired' \
                    AND NOT EXISTS (SELECT 1 FROM unnest($1::int8[]) AS f(id) WHERE f.id = p.id))",
                &[&ids, &self.inner.node.0],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Registers unknown pack files, repoints moved chunks, recounts the packs.
    async fn reconcile(&self, on_disk: &[PackId]) -> Result<ReconcileReport, StoreError> {
        let _no_gc = self.inner.gc_lock.lock().await;
        let mut report = ReconcileReport::default();
        let client = self.inner.pool.get().await?;
        let known: HashSet<i64> =
            client.query("SELECT id FROM packs", &[]).await?.iter().map(|row| row.get(0)).collect();
        for id in on_disk.iter().filter(|id| !known.contains(&id.0)) {
            let size = std::fs::metadata(pack_path(&self.inner.packs_dir, *id)).map_or(0, |m| m.len() as i64);
            client
                .execute(
                    "WITH pack AS (INSERT INTO packs (id, node_id, state, size, live_bytes) OVERRIDING SYSTEM VALUE \
                        VALUES ($1, $2, 'sealed', $3, 0) ON CONFLICT (id) DO NOTHING RETURNING id) \
                     INSERT INTO pack_replicas (pack_id, node_id, state) SELECT id, $2, 'ok' FROM pack",
                    &[&id.0, &self.inner.node.0, &size],
                )
                .await?;
            tracing::warn!(pack = id.0, size, "registered a pack file the catalog did not know");
            report.packs_registered += 1;
        }
        let locations: Vec<ChunkLocation> = client
            .query(
                &format!("{LOCATIONS_SELECT} WHERE l.pack_id IN (SELECT pack_id FROM pack_replicas WHERE node_id = $1)"),
                &[&self.inner.node.0],
            )
            .await?
            .iter()
            .map(ChunkLocation::from_row)
            .collect();
        drop(client);
        let store = self.clone();
        let ids = on_disk.to_vec();
        let moves = tokio::task::spawn_blocking(move || store.find_moved(&locations, &ids)).await??;
        report.chunks_missing = moves.iter().filter(|(_, found)| found.is_none()).count() as u64;
        let found: Vec<_> = moves.iter().filter_map(|(at, found)| found.map(|to| (*at, to))).collect();
        report.locations_repointed = found.len() as u64;
        for (at, _) in moves.iter().filter(|(_, found)| found.is_none()) {
            tracing::error!(tenant = at.tenant.0, chunk = %at.chunk, pack = at.pack.0, offset = at.offset,
                "no pack on disk holds this chunk");
        }
        report.packs_retired = self.repoint_and_recount(&found, on_disk).await?;
        Ok(report)
    }

    /// For every location whose record is not there, the verified record of that chunk in
    /// another pack, if any. Blocking.
    fn find_moved(&self, locations: &[ChunkLocation], on_disk: &[PackId]) -> Result<Vec<Moved>, StoreError> {
        let moved: Vec<ChunkLocation> = locations
            .iter()
            .filter(|at| match self.inner.maps.record(at.pack, at.offset) {
                Ok(record) => {
                    let header = record.header;
                    header.chunk != at.chunk
                        || header.tenant != at.tenant
                        || header.stored_len != at.stored_len
                        || header.compression != at.compression
                }
                Err(_) => true,
            })
            .copied()
            .collect();
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let resolve = |index: &PackIndex, at: &ChunkLocation| {
            let candidates = index.get(&(at.tenant, at.chunk)).map(Vec::as_slice).unwrap_or_default();
            candidates.iter().copied().find(|(pack, offset)| {
                let there = ChunkLocation { pack: *pack, offset: *offset, ..*at };
                self.read_record_verified(&there, ReadMode::Audit).is_ok()
            })
        };
        let dir = &self.inner.packs_dir;
        let wanted: HashSet<(TenantId, ChunkId)> = moved.iter().map(|at| (at.tenant, at.chunk)).collect();
        let quick = index_packs(dir, on_disk, &wanted, Scan::UntilFound);
        let mut out: Vec<Moved> = moved.into_iter().map(|at| (at, resolve(&quick, &at))).collect();
        let unresolved: HashSet<_> =
            out.iter().filter(|(_, found)| found.is_none()).map(|(at, _)| (at.tenant, at.chunk)).collect();
        if !unresolved.is_empty() {
            // The newest record of some chunk did not verify: look at every copy on disk.
            let full = index_packs(dir, on_disk, &unresolved, Scan::Everything);
            for (at, found) in out.iter_mut().filter(|(_, found)| found.is_none()) {
                *found = resolve(&full, at);
            }
        }
        Ok(out)
    }

    /// Repoints `found` locations, revives retired packs that hold live chunks, retires live
    /// rows whose files are gone and hold nothing, and recounts sizes and live bytes. Returns
    /// how many rows were retired.
    async fn repoint_and_recount(
        &self,
        found: &[(ChunkLocation, (PackId, u64))],
        on_disk: &[PackId],
    ) -> Result<u64, StoreError> {
        let mut client = self.inner.pool.get().await?;
        let txn = client.transaction().await?;
        let tenants: Vec<i64> = found.iter().map(|(at, _)| at.tenant.0).collect();
        let chunks: Vec<&[u8]> = found.iter().map(|(at, _)| at.chunk.0.as_slice()).collect();
        let packs: Vec<i64> = found.iter().map(|(_, (pack, _))| pack.0).collect();
        let offsets: Vec<i64> = found.iter().map(|(_, (_, offset))| *offset as i64).collect();
        txn.execute(
            "UPDATE chunk_locations l SET pack_id = v.p, pack_offset = v.o \
             FROM unnest($1::int8[], $2::bytea[], $3::int8[], $4::int8[]) AS v(t, c, p, o) \
             WHERE l.tenant_id = v.t AND l.chunk_id = v.c",
            &[&tenants, &chunks, &packs, &offsets],
        )
        .await?;
        let ids: Vec<i64> = on_disk.iter().map(|id| id.0).collect();
        let sizes: Vec<i64> = on_disk
            .iter()
            .map(|id| std::fs::metadata(pack_path(&self.inner.packs_dir, *id)).map_or(0, |m| m.len() as i64))
            .collect();
        txn.execute(
            "UPDATE packs p SET size = v.s FROM unnest($1::int8[], $2::int8[]) AS v(id, s) \
             WHERE p.id = v.id AND p.state <> 'open' \
               AND EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = p.id AND r.node_id = $3)",
            &[&ids, &sizes, &self.inner.node.0],
        )
        .await?;
        // A retired pack that holds the only copy of a live chunk must not be deleted.
        txn.execute(
            "UPDATE packs p SET state = 'sealed', retired_at = NULL WHERE p.state = 'retired' \
             AND EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = p.id AND r.node_id = $1) \
             AND EXISTS (SELECT 1 FROM chunk_locations l WHERE l.pack_id = p.id)",
            &[&self.inner.node.0],
        )
        .await?;
        let retired = txn
            .execute(
                "UPDATE packs p SET state = 'retired', retired_at = now(), live_bytes = 0 \
                 WHERE p.state <> 'retired' AND EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = p.id AND r.node_id = $1) \
                 AND NOT EXISTS (SELECT 1 FROM unnest($2::int8[]) AS f(id) WHERE f.id = p.id) \
                 AND NOT EXISTS (SELECT 1 FROM chunk_locations l WHERE l.pack_id = p.id)",
                &[&self.inner.node.0, &ids],
            )
            .await?;
        txn.execute(
            "WITH live AS ( \
                SELECT l.pack_id, sum($2::int8 + c.stored_len)::int8 AS bytes \
                FROM chunk_locations l JOIN chunks c ON c.tenant_id = l.tenant_id AND c.id = l.chunk_id \
                GROUP BY l.pack_id) \
             UPDATE packs p SET live_bytes = coalesce((SELECT bytes FROM live WHERE live.pack_id = p.id), 0) \
             WHERE p.state <> 'retired' AND EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = p.id AND r.node_id = $1)",
            &[&self.inner.node.0, &(RECORD_HEADER_LEN as i64)],
        )
        .await?;
        txn.commit().await?;
        for (at, _) in found {
            self.forget_verified(at.tenant, at.chunk);
        }
        Ok(retired)
    }
}

/// How far [`index_packs`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Stop once every wanted chunk has a record (its newest, since compaction copies forward).
    UntilFound,
    /// Read every pack, for every copy.
    Everything,
}

/// Where each of the `wanted` chunks has records, by scanning the packs `on_disk` in `dir`,
/// newest (highest id) first, so each chunk's records come newest first. Unreadable packs are
/// skipped (and logged). Blocking.
pub(crate) fn index_packs(
    dir: &Path,
    on_disk: &[PackId],
    wanted: &HashSet<(TenantId, ChunkId)>,
    scan: Scan,
) -> PackIndex {
    let mut index = PackIndex::new();
    for id in on_disk.iter().rev() {
        if scan == Scan::UntilFound && index.len() == wanted.len() {
            break;
        }
        let path: PathBuf = pack_path(dir, *id);
        let scanned = match scan_pack(&path, *id) {
            Ok(scanned) => scanned,
            Err(err) => {
                tracing::warn!(pack = id.0, error = %err, "skipped an unreadable pack file");
                continue;
            }
        };
        for (offset, header) in scanned.records {
            let key = (header.tenant, header.chunk);
            if wanted.contains(&key) {
                index.entry(key).or_default().push((*id, offset));
            }
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::pack::{PackWriter, RecordHeader};

    #[test]
    fn the_index_lists_the_newest_copy_first_and_stops_once_everything_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunk = |n: u8| RecordHeader {
            compression: Compression::None,
            tenant: TenantId(5),
            chunk: ChunkId([n; 32]),
            raw_len: 3,
            stored_len: 3,
        };
        // Pack 1 holds chunks 1 and 2; compaction copied chunk 1 into pack 2.
        let mut old = PackWriter::create(dir.path(), PackId(1), 1).expect("create");
        old.append(&chunk(1), b"one").expect("append");
        let old_two = old.append(&chunk(2), b"two").expect("append");
        let mut new = PackWriter::create(dir.path(), PackId(2), 1).expect("create");
        let new_one = new.append(&chunk(1), b"one").expect("append");
        let on_disk = pack_ids_on_disk(dir.path()).expect("ids");

        let one: HashSet<_> = [(TenantId(5), ChunkId([1; 32]))].into();
        let quick = index_packs(dir.path(), &on_disk, &one, Scan::UntilFound);
        assert_eq!(quick[&(TenantId(5), ChunkId([1; 32]))], [(PackId(2), new_one)], "pack 1 is never read");
        let full = index_packs(dir.path(), &on_disk, &one, Scan::Everything);
        assert_eq!(full[&(TenantId(5), ChunkId([1; 32]))].len(), 2, "every copy, newest first");
        assert_eq!(full[&(TenantId(5), ChunkId([1; 32]))][0].0, PackId(2));

        let two: HashSet<_> = [(TenantId(5), ChunkId([2; 32]))].into();
        let found = index_packs(dir.path(), &on_disk, &two, Scan::UntilFound);
        assert_eq!(found[&(TenantId(5), ChunkId([2; 32]))], [(PackId(1), old_two)]);
    }
}
