//! Garbage collection: unreferenced chunks go, packs with little left alive are compacted, and
//! chunks left outside their tenant's placement domain move into it.
//!
//! 1. Seal the idle open packs and the full ones that no running upload holds a lease on, so
//!    their dead bytes become reclaimable (the next upload starts a fresh pack).
//! 2. Delete chunks with no references and no pins (from uploads about to reference them, or
//!    expired), and take their bytes off their packs' live counts.
//! 3. Rewrite sealed packs whose live share fell below the threshold, and packs holding chunks
//!    of a tenant whose placement changed ([`super::compact`]).
//! 4. Delete the files of packs retired longer ago than the grace period, which covers readers
//!    that looked a chunk's location up just before it moved. Only a pack that was sealed
//!    (its size recorded) can have been retired by compaction; the file of a row retired
//!    without ever being sealed is someone else's and is left for the start-up reconcile.
//!
//! Only one GC runs at a time in a process, and uploads run alongside it. Phases 2 and 3 work
//! on the whole cluster's chunks and packs, so one node at a time runs them (an advisory lock);
//! phases 1 and 4 are each node's own (its open packs, its copies of retired packs).

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
    /// Packs rewritten because some of their chunks' tenants changed placement since: their
    /// chunks moved into packs of their tenants' domains.
    #[serde(default)]
    pub packs_relocated: u64,
    /// Packs not compacted because their new pack could not be placed or written in this pass.
    #[serde(default)]
    pub packs_skipped_unplaced: u64,
    /// Another node was deleting and compacting (the cluster-wide phases) when this pass ran.
    #[serde(default)]
    pub cluster_phases_skipped: bool,
}

impl ChunkStore {
    /// Runs one full GC pass.
    ///
    /// # Errors
    /// Catalog and I/O errors; a pack with a damaged chunk is skipped and counted, not an error.
    pub async fn gc(&self) -> Result<GcReport, StoreError> {
        let mut one_at_a_time = self.inner.gc_lock.lock().await;
        let mut report = GcReport::default();
        self.inner.writers.retire_idle(false);
        self.seal_ready(&mut report).await?;
        // Chunks and packs are the cluster's: one node at a time deletes and compacts, and a
        // node that finds another one at it (or hung holding the lock) leaves that to it.
        if let Some(_cluster_wide) = self.cluster_gc_lock().await? {
            self.delete_unreferenced(&mut report).await?;
            self.compact(&mut report, &mut one_at_a_time).await?;
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
