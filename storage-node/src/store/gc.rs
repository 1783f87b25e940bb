//! Garbage collection: unreferenced chunks go, and packs with little left alive are compacted.
//!
//! 1. Seal the idle open packs and the full ones that no running upload holds a lease on, so
//!    their dead bytes become reclaimable (the next upload starts a fresh pack).
//! 2. Delete chunks with no references and no pins (from uploads about to reference them, or
//!    expired), and take their bytes off their packs' live counts.
//! 3. Compact sealed packs whose live share fell below the threshold: copy their live records
//!    (verified on the way, so damage is never copied) into an open pack, fsync, repoint the
//!    locations in one transaction, and retire the old pack.
//!    When the disk is too full to copy into, punch holes in the pack's dead ranges instead
//!    (`fallocate(PUNCH_HOLE)`): that frees their blocks without writing anything new.
//! 4. Delete the files of packs retired longer ago than the grace period, which covers readers
//!    that looked a chunk's location up just before it moved. Only a pack that was sealed
//!    (its size recorded) can have been retired by compaction; the file of a row retired
//!    without ever being sealed is someone else's and is left for the start-up reconcile.
//!
//! Only one GC runs at a time in a process, and uploads run alongside it. Phases 2 and 3 work
//! on the whole cluster's chunks and packs, so one node at a time runs them (an advisory lock);
//! phases 1 and 4 are each node's own (its open packs, its copies of retired packs).

use super::open_pack::OpenPack;
use super::verify::{ChunkLocation, LOCATIONS_SELECT, ReadMode};
use super::writers::PackLease;
use super::{ChunkStore, StoreError};
use crate::TenantId;
use crate::pack::{PackId, RECORD_HEADER_LEN, pack_path};

/// The advisory lock key that lets one node at a time run the cluster-wide phases of GC
/// ("gc" in ASCII, apart from the migration and sampler keys).
const GC_LOCK: i64 = 0x6763_0000;

/// What one GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    pub packs_sealed: u64,
    pub chunks_deleted: u64,
    pub stored_bytes_released: u64,
    pub packs_compacted: u64,
    pub packs_skipped_damaged: u64,
    /// Packs whose dead ranges were punched out because the disk was too full to compact.
    pub packs_punched: u64,
    pub packs_deleted: u64,
    pub disk_bytes_reclaimed: u64,
    /// Packs not compacted because their live chunks' tenants are in different placements now.
    #[serde(default)]
    pub packs_skipped_mixed: u64,
    /// Packs not compacted because their new pack could not be placed or written in this pass.
    #[serde(default)]
    pub packs_skipped_unplaced: u64,
    /// Another node was deleting and compacting (the cluster-wide phases) when this pass ran.
    #[serde(default)]
    pub cluster_phases_skipped: bool,
}

const COMPACT_BATCH: i64 = 16;

impl ChunkStore {
    /// Runs one full GC pass.
    ///
    /// # Errors
    /// Catalog and I/O errors; a pack with a damaged chunk is skipped and counted, not an error.
    pub async fn gc(&self) -> Result<GcReport, StoreError> {
        let _one_at_a_time = self.inner.gc_lock.lock().await;
        let mut report = GcReport::default();
        self.inner.writers.retire_idle(false);
        self.seal_ready(&mut report).await?;
        // Chunks and packs are the cluster's: one node at a time deletes and compacts, and a
        // node that finds another one at it (or hung holding the lock) leaves that to it.
        if let Some(_cluster_wide) = self.cluster_gc_lock().await? {
            self.delete_unreferenced(&mut report).await?;
            self.compact(&mut report).await?;
        } else {
            report.cluster_phases_skipped = true;
        }
        // Each node deletes its own copies of retired packs.
        self.delete_retired(&mut report).await?;
        Ok(report)
    }

    /// Closes every open pack and seals those no upload holds (at shutdown, so that the next
    /// start finds nothing open).
    ///
    /// # Errors
    /// Catalog errors.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.inner.writers.retire_idle(true);
        self.seal_ready(&mut GcReport::default()).await
    }

    /// The cluster-wide GC lock, if no other node holds it: a session-level advisory lock on
    /// a catalog connection of its own, which ends when the returned connection is dropped,
    /// however the pass ends (an error, a cancelled task, a crash).
    async fn cluster_gc_lock(&self) -> Result<Option<deadpool_postgres::ClientWrapper>, StoreError> {
        let client = deadpool_postgres::Object::take(self.inner.pool.get().await?);
        let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&GC_LOCK]).await?.get(0);
        Ok(locked.then_some(client))
    }

    async fn seal_ready(&self, report: &mut GcReport) -> Result<(), StoreError> {
        report.packs_sealed += self.seal_finished_packs().await?;
        Ok(())
    }

    async fn delete_unreferenced(&self, report: &mut GcReport) -> Result<(), StoreError> {
        let mut client = self.inner.pool.get().await?;
        let tenants: Vec<i64> = client
            .query("SELECT DISTINCT tenant_id FROM chunks WHERE refcount = 0", &[])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for tenant in tenants {
            let txn = client.transaction().await?;
            super::usage::lock_tenant(&txn, TenantId(tenant)).await?;
            let row = txn
                .query_one(
                    "WITH dead AS ( \
                        DELETE FROM chunks WHERE tenant_id = $1 AND refcount = 0 \
                          AND (pin_count = 0 OR pinned_until < now()) \
                        RETURNING id, raw_len, stored_len), \
                     freed AS ( \
                        SELECT l.pack_id, sum($2::int8 + d.stored_len)::int8 AS bytes \
                        FROM dead d JOIN chunk_locations l ON l.tenant_id = $1 AND l.chunk_id = d.id \
                        GROUP BY l.pack_id), \
                     shrunk AS ( \
                        UPDATE packs p SET live_bytes = p.live_bytes - f.bytes \
                        FROM freed f WHERE p.id = f.pack_id RETURNING p.id) \
                     SELECT count(*)::int8, coalesce(sum(raw_len), 0)::int8, coalesce(sum(stored_len), 0)::int8, \
                            (SELECT count(*) FROM shrunk)::int8 \
                     FROM dead",
                    &[&tenant, &(RECORD_HEADER_LEN as i64)],
                )
                .await?;
            let (count, raw, stored): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            txn.execute(
                "UPDATE tenants SET unique_raw_bytes = unique_raw_bytes - $2, stored_bytes = stored_bytes - $3 \
                 WHERE id = $1",
                &[&tenant, &raw, &stored],
            )
            .await?;
            txn.commit().await?;
            report.chunks_deleted += count as u64;
            report.stored_bytes_released += stored as u64;
        }
        Ok(())
    }

    async fn compact(&self, report: &mut GcReport) -> Result<(), StoreError> {
        let client = self.inner.pool.get().await?;
        let candidates: Vec<i64> = client
            .query(
                "SELECT id FROM packs p WHERE state = 'sealed' AND live_bytes::float8 < size::float8 * $2::float8 \
                   AND EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = p.id AND r.node_id = $1 AND r.state = 'ok') \
                 ORDER BY live_bytes LIMIT $3",
                &[&self.inner.node.0, &self.inner.config.compact_below_live_share, &COMPACT_BATCH],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        drop(client);
        for pack in candidates {
            match self.compact_pack(PackId(pack)).await {
                Ok(Compaction::Done) => report.packs_compacted += 1,
                Ok(Compaction::Damaged) => report.packs_skipped_damaged += 1,
                Ok(Compaction::Mixed) => report.packs_skipped_mixed += 1,
                Ok(Compaction::Unplaced) => report.packs_skipped_unplaced += 1,
                Err(StoreError::StorageFull { .. }) => {
                    tracing::warn!(pack, "the disk is too full to compact into; punching out dead ranges");
                    self.punch_dead_ranges(PackId(pack)).await?;
                    report.packs_punched += 1;
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    async fn compact_pack(&self, old: PackId) -> Result<Compaction, StoreError> {
        // No connection is held across `open_pack`, which may need one of its own.
        let client = self.inner.pool.get().await?;
        let live: Vec<ChunkLocation> = client
            .query(&format!("{LOCATIONS_SELECT} WHERE l.pack_id = $1 ORDER BY l.pack_offset"), &[&old.0])
            .await?
            .iter()
            .map(ChunkLocation::from_row)
            .collect();
        drop(client);
        let mut moves = Vec::new();
        let mut target: Option<PackLease> = None;
        if let Some(first) = live.first() {
            // A pack holds chunks of one class of tenants, whose policies now say where the live
            // chunks go. Should their policies have come apart since (one tenant's placement
            // changed), no single pack can take them all: the pack is left as it is.
            let class = self.pack_class(first.tenant).await?;
            let mut tenants: Vec<TenantId> = live.iter().map(|at| at.tenant).collect();
            tenants.sort_unstable_by_key(|tenant| tenant.0);
            tenants.dedup();
            for tenant in tenants.iter().filter(|tenant| **tenant != first.tenant) {
                if self.pack_class(*tenant).await? != class {
                    tracing::warn!(
                        pack = old.0,
                        "the live chunks of this pack now belong to different placements; not compacting it"
                    );
                    return Ok(Compaction::Mixed);
                }
            }
            // Into a pack with room for all of them: a peer refuses a pack past the size limit.
            // The pack is held for the whole copy, so that no upload's record lands in between.
            let needed: u64 = live.iter().map(|at| RECORD_HEADER_LEN + u64::from(at.stored_len)).sum();
            let target_bytes = self.inner.config.pack_target_bytes;
            let copied = loop {
                let lease = match self.writable_pack(&class, first.tenant).await {
                    Ok(lease) => lease,
                    Err(err) => return self.unplaced(old, err),
                };
                // In a task of its own, as an upload's append: a GC pass cancelled meanwhile
                // (its client gone) never leaves the shared pack half-written.
                let (store, held, records) = (self.clone(), lease.clone(), live.clone());
                let outcome = tokio::spawn(async move {
                    let mut pack = held.lock().await;
                    if held.is_closed() {
                        return None;
                    }
                    if pack.len() > crate::pack::PACK_HEADER_LEN && pack.len() + needed > target_bytes {
                        held.close();
                        return None;
                    }
                    let copied = store.copy_records(&mut pack, &records).await;
                    // A damaged old pack is no reason to stop taking records; a failed copy is.
                    if pack.is_broken() || pack.len() >= target_bytes {
                        held.close();
                    }
                    Some(copied)
                })
                .await?;
                if let Some(copied) = outcome {
                    target = Some(lease);
                    break copied;
                }
            };
            match copied {
                Ok(copied) => moves = copied,
                Err(err) => {
                    drop(target.take());
                    match err {
                        StoreError::Integrity { .. } | StoreError::ChunkUnavailable { .. } => {
                            tracing::error!(
                                pack = old.0,
                                "a live chunk in this pack is damaged: not compacting it (see scrub)"
                            );
                            return Ok(Compaction::Damaged);
                        }
                        // The old pack's file is gone (its chunks are lost; the start-up reconcile
                        // and scrub report them): as uncompactable as a damaged pack, and it must
                        // not fail every GC pass.
                        StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                            tracing::error!(
                                pack = old.0,
                                "this pack's file is gone: not compacting it (see scrub)"
                            );
                            return Ok(Compaction::Damaged);
                        }
                        other => return self.unplaced(old, other),
                    }
                }
            }
        }
        let mut client = self.inner.pool.get().await?;
        let txn = client.transaction().await?;
        if let Some(new) = target.as_ref().map(PackLease::pack) {
            let tenants: Vec<i64> = moves.iter().map(|(at, _)| at.tenant.0).collect();
            let ids: Vec<Vec<u8>> = moves.iter().map(|(at, _)| at.chunk.0.to_vec()).collect();
            let offsets: Vec<i64> = moves.iter().map(|(_, offset)| *offset as i64).collect();
            let sizes: Vec<i64> =
                moves.iter().map(|(at, _)| RECORD_HEADER_LEN as i64 + i64::from(at.stored_len)).collect();
            txn.execute(
                "WITH moved AS ( \
                    UPDATE chunk_locations l SET pack_id = $1, pack_offset = v.o \
                    FROM unnest($3::int8[], $4::bytea[], $5::int8[], $6::int8[]) AS v(t, c, o, s) \
                    WHERE l.tenant_id = v.t AND l.chunk_id = v.c AND l.pack_id = $2 \
                    RETURNING v.s) \
                 UPDATE packs SET live_bytes = live_bytes + (SELECT coalesce(sum(s), 0) FROM moved)::int8 WHERE id = $1",
                &[&new.0, &old.0, &tenants, &ids, &offsets, &sizes],
            )
            .await?;
        }
        txn.execute(
            "UPDATE packs SET state = 'retired', retired_at = now(), live_bytes = 0 \
             WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM chunk_locations WHERE pack_id = $1)",
            &[&old.0],
        )
        .await?;
        txn.commit().await?;
        // The new pack's lease ends only now: it is not sealed (and so compacted) before the
        // moves that reference it are committed.
        drop(target);
        Ok(Compaction::Done)
    }

    /// A compaction that could not place or write its new pack: a failed peer or too few zones
    /// skip this pack (the next pass tries again) instead of failing the whole GC pass, and the
    /// peer is left out of new packs for a while. Any other error is the pass's.
    fn unplaced(&self, old: PackId, err: StoreError) -> Result<Compaction, StoreError> {
        match err {
            StoreError::CopyFailed { .. } | StoreError::Retry(_) | StoreError::Placement(_) => {
                self.note_copy_failure(&err);
                tracing::warn!(pack = old.0, error = %err, "cannot write the compacted copy now; not compacting this pack in this pass");
                Ok(Compaction::Unplaced)
            }
            other => Err(other),
        }
    }

    /// Copies `live` records into `pack` as stored (no recompression), verifying each, then
    /// makes them durable in every copy. Returns each chunk with its new offset.
    async fn copy_records(
        &self,
        pack: &mut OpenPack,
        live: &[ChunkLocation],
    ) -> Result<Vec<(ChunkLocation, u64)>, StoreError> {
        let mut moves = Vec::with_capacity(live.len());
        for at in live {
            let (store, location) = (self.clone(), *at);
            let (record, _raw) =
                tokio::task::spawn_blocking(move || store.read_record_verified(&location, ReadMode::Audit))
                    .await??;
            moves.push((*at, pack.append(record.header, record.data).await?));
        }
        pack.sync().await?;
        Ok(moves)
    }

    /// Frees the blocks of `pack`'s dead ranges in place. Needs no free space.
    async fn punch_dead_ranges(&self, pack: PackId) -> Result<(), StoreError> {
        let client = self.inner.pool.get().await?;
        let live: Vec<(u64, u64)> = client
            .query(
                "SELECT l.pack_offset, $2::int8 + c.stored_len \
                 FROM chunk_locations l JOIN chunks c ON c.tenant_id = l.tenant_id AND c.id = l.chunk_id \
                 WHERE l.pack_id = $1 ORDER BY l.pack_offset",
                &[&pack.0, &(RECORD_HEADER_LEN as i64)],
            )
            .await?
            .iter()
            .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
            .collect();
        drop(client);
        let path = pack_path(&self.inner.packs_dir, pack);
        let punching = path.clone();
        tokio::task::spawn_blocking(move || punch_holes(&punching, &live))
            .await?
            .map_err(|err| StoreError::io(path, err))
    }

    async fn delete_retired(&self, report: &mut GcReport) -> Result<(), StoreError> {
        let client = self.inner.pool.get().await?;
        let grace = self.inner.config.retire_grace.as_secs_f64();
        let retired: Vec<(i64, i64)> = client
            .query(
                "SELECT id, size FROM packs p WHERE state = 'retired' \
                   AND retired_at <= now() - make_interval(secs => $2) \
                   AND (EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = p.id AND r.node_id = $1) \
                        OR NOT EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = p.id))",
                &[&self.inner.node.0, &grace],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        for (id, recorded) in retired {
            let path = pack_path(&self.inner.packs_dir, PackId(id));
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            // Compaction retires only sealed packs, whose size is recorded. A row retired
            // straight from open (an older Silo did so when the file could not be created,
            // e.g. because a file of that id existed) never wrote the file under its name:
            // the file is not GC's to delete. The next start registers and reconciles it.
            let ours = recorded >= crate::pack::PACK_HEADER_LEN as i64;
            if ours {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(StoreError::io(path, err)),
                }
                report.disk_bytes_reclaimed += size;
            } else if size > 0 {
                tracing::warn!(pack = id, "kept a pack file whose retired row never wrote it");
            }
            self.inner.maps.forget(PackId(id));
            // This node's copy is gone; the row goes with the last copy.
            client
                .execute(
                    "WITH gone AS (DELETE FROM pack_replicas WHERE pack_id = $1 AND node_id = $2) \
                     DELETE FROM packs p WHERE p.id = $1 \
                       AND NOT EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = $1 AND r.node_id <> $2)",
                    &[&id, &self.inner.node.0],
                )
                .await?;
            report.packs_deleted += 1;
        }
        Ok(())
    }
}

enum Compaction {
    Done,
    Damaged,
    /// Its live chunks' tenants are in different placements now.
    Mixed,
    /// Its new pack could not be placed or written now.
    Unplaced,
}

/// Punches holes between the `live` records (offset, length; sorted) of the pack at `path`.
fn punch_holes(path: &std::path::Path, live: &[(u64, u64)]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut cursor = crate::pack::PACK_HEADER_LEN;
    let mut gaps = Vec::new();
    for (offset, size) in live.iter().copied().chain(std::iter::once((len, 0))) {
        if offset > cursor {
            gaps.push((cursor, offset - cursor));
        }
        cursor = cursor.max(offset + size);
    }
    for (offset, size) in gaps {
        // SAFETY: a plain syscall on an open fd; the ranges hold no live record.
        let punched = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                size as libc::off_t,
            )
        };
        if punched != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
