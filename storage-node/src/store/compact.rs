//! Compaction and relocation (GC phase 3): rewriting a sealed pack's live records into open
//! packs, then retiring it.
//!
//! A pack is rewritten for one of two reasons:
//! - **Sparse:** less than `compact_below_live_share` of it is alive (a pack with a copy on this
//!   node, read locally).
//! - **Misplaced:** it holds chunks of a tenant whose placement changed since they were written,
//!   so they sit in another domain's pack: a tenant that became `owned` still has old chunks on
//!   the shared nodes, or one that became `shared` on its own nodes. A policy change bumps the
//!   tenant's `placement_epoch`; each pass rewrites such packs (up to a batch) wherever their
//!   copies are, reading a record from a peer when this node has no copy, and records the epoch
//!   as caught up (`placed_epoch`) once none is left, open ones included.
//!
//! Either way the live records are grouped by the class their tenants' policies give now, and
//! each group is copied, as stored and verified on the way (damage is never copied), into a
//! pack of its class that the GC pass opened for itself (no upload waits behind the copy); the locations move in one transaction and the old pack is retired.
//! Its files on every node go after the retire grace (`delete_retired`), so an owned tenant's
//! live chunks leave the shared disks for good. The records of its chunks deleted before the
//! change are not looked for: they go when their packs are compacted as sparse. When the disk is too full to copy into, the dead
//! ranges of a sparse pack are punched out instead (`fallocate(PUNCH_HOLE)`). A copy into a
//! pack with a copy on this node first checks this disk's room for the records plus a pack's
//! worth left for uploads, so that a full disk does not have records copied only for the copy
//! to fail part-way, pass after pass; a pack written only to peers needs no room here.

use std::collections::HashMap;

use super::gc::GcReport;
use super::open_pack::{OpenPack, PackClass};
use super::placing::domain_owner_sql;
use super::read_chunk::is_not_found;
use super::verify::{ChunkLocation, LOCATIONS_SELECT, ReadMode};
use super::writers::PackLease;
use super::{ChunkStore, StoreError};
use crate::TenantId;
use crate::pack::{PackId, RECORD_HEADER_LEN, RecordView, pack_path};

/// The most packs of each kind (sparse, misplaced) one pass rewrites.
const COMPACT_BATCH: i64 = 16;

/// How long a pack punched for want of room is left out of the sparse packs while the disk
/// still has less than a pack's worth free: the next passes punch the others (the sparse packs
/// come fewest live bytes first, a batch at a time), not the same ones again.
const PUNCHED_REST: std::time::Duration = std::time::Duration::from_secs(3600);

/// The packs this node punched lately, and when (kept by the GC lock across passes).
#[derive(Debug, Default)]
pub(super) struct Punched(HashMap<i64, std::time::Instant>);

impl Punched {
    /// The packs punched less than [`PUNCHED_REST`] ago (the others are forgotten).
    fn resting(&mut self) -> Vec<i64> {
        self.0.retain(|_, at| at.elapsed() < PUNCHED_REST);
        self.0.keys().copied().collect()
    }
}

/// How the rewrite of one pack ended.
enum Compaction {
    /// Its live records moved; `relocated` when some went to another placement domain.
    Done {
        relocated: bool,
    },
    Damaged,
    /// A new pack could not be placed or written now.
    Unplaced,
}

/// What one GC pass keeps from pack to pack: its own open pack of each class, and each
/// tenant's class.
#[derive(Default)]
struct Pass {
    targets: HashMap<PackClass, PackLease>,
    classes: HashMap<TenantId, PackClass>,
}

/// One class's share of a pack's live records, and the tenant whose policy placed them.
struct Group {
    class: PackClass,
    tenant: TenantId,
    records: Vec<ChunkLocation>,
}

impl ChunkStore {
    /// Rewrites the sparse packs this node holds a copy of and the misplaced packs of tenants
    /// whose placement changed.
    pub(super) async fn compact(
        &self,
        report: &mut GcReport,
        punched: &mut Punched,
    ) -> Result<(), StoreError> {
        let pending = self.placements_to_catch_up().await?;
        // With less than a pack's worth free, the packs punched lately wait their turn.
        let resting = if self.room_to_copy(0) { Vec::new() } else { punched.resting() };
        let sparse = self.sparse_packs(&resting).await?;
        let mut candidates = sparse.clone();
        let mut misplaced = 0;
        for (tenant, _) in &pending {
            if misplaced >= COMPACT_BATCH {
                break;
            }
            for pack in self.misplaced_packs(*tenant, COMPACT_BATCH - misplaced).await? {
                if !candidates.contains(&pack) {
                    candidates.push(pack);
                    misplaced += 1;
                }
            }
        }
        // Packs of this pass's own, one open per class at a time: uploads never wait behind a
        // copy, and the copies of several small packs fill one new pack.
        let mut pass = Pass::default();
        for pack in candidates {
            match self.compact_pack(PackId(pack), &mut pass).await {
                Ok(Compaction::Done { relocated: false }) => report.packs_compacted += 1,
                Ok(Compaction::Done { relocated: true }) => report.packs_relocated += 1,
                Ok(Compaction::Damaged) => report.packs_skipped_damaged += 1,
                Ok(Compaction::Unplaced) => report.packs_skipped_unplaced += 1,
                // Punching frees a sparse pack's dead ranges in this node's copy; a misplaced
                // pack (which may have no copy here) waits for room.
                Err(StoreError::StorageFull { .. }) if sparse.contains(&pack) => {
                    tracing::warn!(pack, "the disk is too full to compact into; punching out dead ranges");
                    // One pack that cannot be punched does not stop the pass (nor the deletion
                    // of retired packs after it, which frees room).
                    match self.punch_dead_ranges(PackId(pack)).await {
                        Ok(()) => {
                            punched.0.insert(pack, std::time::Instant::now());
                            report.packs_punched += 1;
                        }
                        Err(err) => tracing::warn!(pack, error = %err, "could not punch out dead ranges"),
                    }
                }
                Err(err @ StoreError::StorageFull { .. }) => {
                    tracing::warn!(pack, error = %err, "no room to move this pack's chunks into their domain now");
                    report.packs_skipped_unplaced += 1;
                }
                Err(err) => return Err(err),
            }
        }
        // Sealed once no lease is left, after every move into them is committed.
        drop(pass);
        for (tenant, epoch) in pending {
            self.note_caught_up(tenant, epoch).await?;
        }
        Ok(())
    }

    /// Whether this node's disk has room to copy `bytes` and still leave a pack's worth
    /// (`pack_target_bytes`) for uploads. A disk whose free space cannot be read counts as
    /// roomy: a copy that then fails is handled as any full disk is.
    fn room_to_copy(&self, bytes: u64) -> bool {
        match nix::sys::statvfs::statvfs(&self.inner.packs_dir) {
            Ok(stats) => {
                let free = stats.blocks_available().saturating_mul(stats.fragment_size());
                bytes.saturating_add(self.inner.config.pack_target_bytes) <= free
            }
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the packs' disk's free space");
                true
            }
        }
    }

    /// Sealed packs with a sound copy here whose live share fell below the threshold, but
    /// those `resting`.
    async fn sparse_packs(&self, resting: &[i64]) -> Result<Vec<i64>, StoreError> {
        let client = self.inner.pool.get().await?;
        let rows = client
            .query(
                "SELECT id FROM packs p WHERE state = 'sealed' AND live_bytes::float8 < size::float8 * $2::float8 \
                   AND EXISTS (SELECT 1 FROM pack_replicas r WHERE r.pack_id = p.id AND r.node_id = $1 AND r.state = 'ok') \
                   AND NOT (id = ANY($4::int8[])) \
                 ORDER BY live_bytes LIMIT $3",
                &[&self.inner.node.0, &self.inner.config.compact_below_live_share, &COMPACT_BATCH, &resting],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// The tenants whose placement changed since GC last found all their chunks in its domain,
    /// with the epoch of that change.
    async fn placements_to_catch_up(&self) -> Result<Vec<(TenantId, i64)>, StoreError> {
        let client = self.inner.pool.get().await?;
        let rows = client
            .query("SELECT id, placement_epoch FROM tenants WHERE placement_epoch > placed_epoch", &[])
            .await?;
        Ok(rows.iter().map(|row| (TenantId(row.get(0)), row.get(1))).collect())
    }

    /// Up to `limit` sealed packs outside `tenant`'s placement domain that hold some of its
    /// chunks, drawn at random: packs that cannot be rewritten now (damaged, or no room in
    /// their domain) do not hold back the others pass after pass.
    async fn misplaced_packs(&self, tenant: TenantId, limit: i64) -> Result<Vec<i64>, StoreError> {
        let client = self.inner.pool.get().await?;
        let sql = format!(
            "SELECT pack_id FROM ( \
                SELECT DISTINCT l.pack_id FROM chunk_locations l JOIN packs p ON p.id = l.pack_id \
                WHERE l.tenant_id = $1 AND p.state = 'sealed' AND p.owner_tenant_id IS DISTINCT FROM ({})) m \
             ORDER BY random() LIMIT $3",
            domain_owner_sql("$1", "$2")
        );
        let rows = client.query(&sql, &[&tenant.0, &self.inner.node.0, &limit]).await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Records that `tenant`'s chunks caught up with its placement change `epoch`, if no pack
    /// but a retired one outside its domain holds any of them (an open one is sealed, then
    /// rewritten, by a later pass). A change made since leaves the tenant pending.
    async fn note_caught_up(&self, tenant: TenantId, epoch: i64) -> Result<(), StoreError> {
        let client = self.inner.pool.get().await?;
        let sql = format!(
            "UPDATE tenants SET placed_epoch = greatest(placed_epoch, $2) WHERE id = $1 AND NOT EXISTS ( \
                SELECT 1 FROM chunk_locations l JOIN packs p ON p.id = l.pack_id \
                WHERE l.tenant_id = $1 AND p.state <> 'retired' AND p.owner_tenant_id IS DISTINCT FROM ({}))",
            domain_owner_sql("$1", "$3")
        );
        let caught_up = client.execute(&sql, &[&tenant.0, &epoch, &self.inner.node.0]).await?;
        if caught_up > 0 {
            tracing::info!(tenant = tenant.0, "every chunk of the tenant is in its placement domain now");
        }
        Ok(())
    }

    async fn compact_pack(&self, old: PackId, pass: &mut Pass) -> Result<Compaction, StoreError> {
        // No connection is held across `open_pack`, which may need one of its own.
        let client = self.inner.pool.get().await?;
        let live: Vec<ChunkLocation> = client
            .query(&format!("{LOCATIONS_SELECT} WHERE l.pack_id = $1 ORDER BY l.pack_offset"), &[&old.0])
            .await?
            .iter()
            .map(ChunkLocation::from_row)
            .collect();
        let old_owner: Option<i64> = client
            .query_opt("SELECT owner_tenant_id FROM packs WHERE id = $1", &[&old.0])
            .await?
            .and_then(|row| row.get(0));
        drop(client);
        let groups = self.group_by_class(&live, &mut pass.classes).await?;
        let relocated = groups.iter().any(|group| group.class.owner.map(|owner| owner.0) != old_owner);
        let mut copied = Vec::with_capacity(groups.len());
        // A group that cannot move now leaves its records where they are (the pack then stays,
        // for a later pass); the groups copied before it still move.
        let mut skipped = None;
        for group in groups {
            match self.copy_group(old, group, &mut pass.targets).await? {
                Ok(target) => copied.push(target),
                Err(outcome) => {
                    skipped = Some(outcome);
                    break;
                }
            }
        }
        let mut client = self.inner.pool.get().await?;
        let txn = client.transaction().await?;
        for (lease, moves) in &copied {
            let tenants: Vec<i64> = moves.iter().map(|(at, _)| at.tenant.0).collect();
            let ids: Vec<Vec<u8>> = moves.iter().map(|(at, _)| at.chunk.0.to_vec()).collect();
            let offsets: Vec<i64> = moves.iter().map(|(_, offset)| *offset as i64).collect();
            let sizes: Vec<i64> =
                moves.iter().map(|(at, _)| RECORD_HEADER_LEN as i64 + i64::from(at.stored_len)).collect();
            // The new pack's recorded size covers the records moved into it, as an upload's
            // commit does: a node that dies before sealing it (and may hold no copy of it)
            // leaves it to be sealed at that size.
            txn.execute(
                "WITH moved AS ( \
                    UPDATE chunk_locations l SET pack_id = $1, pack_offset = v.o \
                    FROM unnest($3::int8[], $4::bytea[], $5::int8[], $6::int8[]) AS v(t, c, o, s) \
                    WHERE l.tenant_id = v.t AND l.chunk_id = v.c AND l.pack_id = $2 \
                    RETURNING v.s, v.o + v.s AS reach) \
                 UPDATE packs SET live_bytes = live_bytes + (SELECT coalesce(sum(s), 0) FROM moved)::int8, \
                                  size = greatest(size, (SELECT coalesce(max(reach), 0) FROM moved)::int8) \
                 WHERE id = $1",
                &[&lease.pack().0, &old.0, &tenants, &ids, &offsets, &sizes],
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
        if let Some(outcome) = skipped {
            return Ok(outcome);
        }
        if relocated {
            tracing::info!(pack = old.0, "moved a pack's chunks into the placement domains of their tenants");
        }
        Ok(Compaction::Done { relocated })
    }

    /// `live` split by the class their tenants' policies give now (looked up once a pass per
    /// tenant, in `classes`), in order of first record.
    async fn group_by_class(
        &self,
        live: &[ChunkLocation],
        classes: &mut HashMap<TenantId, PackClass>,
    ) -> Result<Vec<Group>, StoreError> {
        let mut groups: Vec<Group> = Vec::new();
        for at in live {
            let class = match classes.get(&at.tenant) {
                Some(class) => class.clone(),
                None => {
                    let class = self.pack_class(at.tenant).await?;
                    classes.insert(at.tenant, class.clone());
                    class
                }
            };
            match groups.iter_mut().find(|group| group.class == class) {
                Some(group) => group.records.push(*at),
                None => groups.push(Group { class, tenant: at.tenant, records: vec![*at] }),
            }
        }
        Ok(groups)
    }

    /// Copies `group`'s records of the pack `old` into this pass's pack of its class (in
    /// `targets`; a new one when there is none, or it has no room for all of them: a peer
    /// refuses a pack past the size limit), and makes them durable. Returns the pack's lease
    /// and each record's new offset; or why the pack `old` is left as it is.
    async fn copy_group(
        &self,
        old: PackId,
        group: Group,
        targets: &mut HashMap<PackClass, PackLease>,
    ) -> Result<Result<(PackLease, Vec<(ChunkLocation, u64)>), Compaction>, StoreError> {
        let needed: u64 = group.records.iter().map(|at| RECORD_HEADER_LEN + u64::from(at.stored_len)).sum();
        let target_bytes = self.inner.config.pack_target_bytes;
        let (lease, copied) = loop {
            let lease = match targets.get(&group.class).filter(|lease| !lease.is_closed()) {
                Some(lease) => lease.clone(),
                None => match self.private_pack(&group.class, group.tenant).await {
                    Ok(lease) => {
                        targets.insert(group.class.clone(), lease.clone());
                        lease
                    }
                    Err(err) => return self.unplaced(old, err).map(Err),
                },
            };
            // In a task of its own, as an upload's append: a GC pass cancelled meanwhile (its
            // client gone) never leaves the pack half-written.
            let (store, held, records) = (self.clone(), lease.clone(), group.records.clone());
            let outcome = tokio::spawn(async move {
                let mut pack = held.lock().await;
                if held.is_closed() {
                    return None;
                }
                if pack.len() > crate::pack::PACK_HEADER_LEN && pack.len() + needed > target_bytes {
                    held.close();
                    return None;
                }
                // Nothing is written here that the disk has no room for (the copy would fail
                // part-way, and the next pass copy the same records again).
                if pack.local_intact() && !store.room_to_copy(needed) {
                    return Some(Err(StoreError::StorageFull { path: store.inner.packs_dir.clone() }));
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
                break (lease, copied);
            }
        };
        match copied {
            Ok(moves) => Ok(Ok((lease, moves))),
            Err(StoreError::Integrity { .. } | StoreError::ChunkUnavailable { .. }) => {
                tracing::error!(
                    pack = old.0,
                    "a live chunk in this pack is damaged: not compacting it (see scrub)"
                );
                Ok(Err(Compaction::Damaged))
            }
            // The old pack's file is gone, here and on every peer (its chunks are lost; the
            // start-up reconcile and scrub report them): as uncompactable as a damaged pack, and
            // it must not fail every GC pass.
            Err(err) if is_not_found(&err) => {
                tracing::error!(pack = old.0, "this pack's file is gone: not compacting it (see scrub)");
                Ok(Err(Compaction::Damaged))
            }
            Err(other) => self.unplaced(old, other).map(Err),
        }
    }

    /// A compaction that could not read its records from another node, or place or write its
    /// new pack: a failed peer or too few zones skip this pack (the next pass tries again)
    /// instead of failing the whole GC pass, and the peer is left out of new packs for a
    /// while. Any other error is the pass's.
    fn unplaced(&self, old: PackId, err: StoreError) -> Result<Compaction, StoreError> {
        match err {
            StoreError::CopyFailed { .. } | StoreError::Retry(_) | StoreError::Placement(_) => {
                self.note_copy_failure(&err);
                tracing::warn!(pack = old.0, error = %err, "cannot move this pack's records now; leaving it for a later pass");
                Ok(Compaction::Unplaced)
            }
            other => Err(other),
        }
    }

    /// Copies `live` records into `pack` as stored (no recompression), verifying each, then
    /// makes them durable in every copy. A record is read from this node's copy of its pack,
    /// or, when this node has none, from a peer's. Returns each chunk with its new offset.
    async fn copy_records(
        &self,
        pack: &mut OpenPack,
        live: &[ChunkLocation],
    ) -> Result<Vec<(ChunkLocation, u64)>, StoreError> {
        let mut moves = Vec::with_capacity(live.len());
        let mut peers = None;
        for at in live {
            let (store, location) = (self.clone(), *at);
            let local =
                tokio::task::spawn_blocking(move || store.read_record_verified(&location, ReadMode::Audit))
                    .await?;
            let record: RecordView = match local {
                Ok((record, _raw)) => record,
                Err(err) if is_not_found(&err) => {
                    let copies = match &peers {
                        Some(copies) => Vec::clone(copies),
                        None => peers.insert(self.remote_copies(at.pack).await?).clone(),
                    };
                    // With no copy anywhere, the missing file is the error; copies that do not
                    // answer now are a reason to try again at the next pass.
                    if copies.is_empty() {
                        return Err(err);
                    }
                    // Only copies that do not answer now are worth another pass; any other failure
                    // is told as it is.
                    self.record_from_copies(at, copies).await.map_err(|remote| match remote {
                        StoreError::ChunkUnavailable { .. } => StoreError::Retry(format!(
                            "no copy of pack {} could be read now: {remote}",
                            at.pack.0
                        )),
                        other => other,
                    })?
                }
                Err(err) => return Err(err),
            };
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
