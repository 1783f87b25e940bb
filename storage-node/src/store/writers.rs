//! The open packs of this node and when they may be sealed.
//!
//! An upload takes an idle writer for as long as it streams, so its chunks sit together in
//! one pack, and hands it back before its catalog commit. Every upload that wrote into a pack
//! holds a [`PackLease`] on it until it commits or gives up. A pack is sealed (and so becomes
//! visible to GC compaction) only when it is full and no lease on it remains: GC can never
//! mistake the not-yet-committed chunks of a running upload for garbage.

use std::sync::{Arc, Mutex};

use super::open_pack::{OpenPack, PackClass, RemoteCopy};
use super::{ChunkStore, StoreError};
use crate::TenantId;
use crate::pack::{PackId, PackWriter};

/// Proof that an upload wrote into a pack and has not finished yet.
#[derive(Debug, Clone)]
pub struct PackLease(Arc<PackId>);

impl PackLease {
    pub(super) fn new(pack: PackId) -> Self {
        PackLease(Arc::new(pack))
    }

    pub fn pack(&self) -> PackId {
        *self.0
    }
}

/// A full (or broken) pack that waits for its leases to end before it is sealed.
#[derive(Debug)]
pub struct Draining {
    lease: PackLease,
    size: u64,
}

/// Idle writers and full packs awaiting their seal.
#[derive(Debug, Default)]
pub struct WriterPool {
    idle: Mutex<Vec<OpenPack>>,
    draining: Mutex<Vec<Draining>>,
}

const MAX_IDLE: usize = 4;

impl WriterPool {
    /// An idle pack of `class`, if any.
    pub fn take(&self, class: &PackClass) -> Option<OpenPack> {
        let mut idle = lock(&self.idle);
        let at = idle.iter().rposition(|pack| pack.class() == class)?;
        Some(idle.swap_remove(at))
    }

    /// Returns a writer after use: to the idle set, or to draining when it is full or broken.
    pub fn put_back(&self, mut pack: OpenPack, target_bytes: u64) {
        pack.abandon_unsynced();
        let full = pack.is_broken() || pack.len() >= target_bytes || !pack.reusable();
        let mut idle = lock(&self.idle);
        if full || idle.len() >= MAX_IDLE {
            drop(idle);
            let size = pack.synced_len();
            lock(&self.draining).push(Draining { lease: pack.lease(), size });
        } else {
            idle.push(pack);
        }
    }

    /// The packs that are ready to seal now (no upload holds a lease), with their sizes.
    /// They are removed from the pool; the caller records the seal in the catalog.
    pub fn take_sealable(&self) -> Vec<(PackId, u64)> {
        let mut draining = lock(&self.draining);
        let (ready, waiting): (Vec<_>, Vec<_>) =
            draining.drain(..).partition(|entry| Arc::strong_count(&entry.lease.0) == 1);
        *draining = waiting;
        ready.into_iter().map(|entry| (entry.lease.pack(), entry.size)).collect()
    }

    /// Puts back packs taken by [`WriterPool::take_sealable`] whose seal failed, to try again.
    fn keep_sealable(&self, packs: Vec<(PackId, u64)>) {
        let mut draining = lock(&self.draining);
        draining.extend(packs.into_iter().map(|(pack, size)| Draining { lease: PackLease::new(pack), size }));
    }

    /// Moves every idle writer to draining, so that GC and shutdown can seal them.
    pub fn retire_idle(&self) {
        let idle: Vec<OpenPack> = lock(&self.idle).drain(..).collect();
        let mut draining = lock(&self.draining);
        for mut pack in idle {
            pack.abandon_unsynced();
            let size = pack.synced_len();
            draining.push(Draining { lease: pack.lease(), size });
        }
    }
}

impl ChunkStore {
    /// Seals the packs whose writers are done with them (full, broken, single-use or beyond
    /// the idle ones kept) and whose last upload has ended; returns how many. Until then a
    /// pack is open, and repair and compaction leave it alone: a degraded pack waiting for
    /// its missing copies is sealed here within seconds, not at the next GC pass.
    ///
    /// # Errors
    /// Catalog errors (the packs not sealed yet are kept for the next call).
    pub async fn seal_finished_packs(&self) -> Result<u64, StoreError> {
        let ready = self.inner.writers.take_sealable();
        if ready.is_empty() {
            return Ok(0);
        }
        let client = match self.inner.pool.get().await {
            Ok(client) => client,
            Err(err) => {
                self.inner.writers.keep_sealable(ready);
                return Err(err.into());
            }
        };
        let mut sealed = 0;
        for (at, (pack, size)) in ready.iter().enumerate() {
            if let Err(err) = seal_pack(&client, *pack, *size).await {
                self.inner.writers.keep_sealable(ready[at..].to_vec());
                return Err(err.into());
            }
            sealed += 1;
        }
        Ok(sealed)
    }

    /// An idle open pack, or a new one.
    ///
    /// A new pack's file is created with `O_EXCL`: a file under the new id (left by packs the
    /// catalog does not know, as after a catalog restore) is never opened, overwritten or,
    /// through a retired row, deleted. The id is dropped, ids move past every file on disk,
    /// and a fresh id is tried.
    pub(super) async fn open_pack(
        &self,
        class: &PackClass,
        tenant: TenantId,
    ) -> Result<OpenPack, StoreError> {
        let suspects = self.inner.peers.suspects();
        while let Some(mut pack) = self.inner.writers.take(class) {
            if !pack.has_copy_on(&suspects) && pack.reusable() {
                return Ok(pack);
            }
            pack.retire();
            self.inner.writers.put_back(pack, self.inner.config.pack_target_bytes);
        }
        let placed = self.place_pack(tenant).await?;
        if placed.domain.owner() != class.owner {
            // The nodes changed between the two reads: this upload's class is stale.
            return Err(StoreError::Retry("the tenant's placement domain changed during the upload".into()));
        }
        let here = placed.targets.iter().any(|target| target.node == self.inner.node);
        let mut remotes = Vec::new();
        for target in placed.targets.iter().filter(|target| target.node != self.inner.node) {
            // `plan` takes no peer without an internal URL.
            let url = target.internal_url.as_deref().unwrap_or_default();
            let client = self.peer(target.node, url).map_err(|err| {
                self.inner.peers.note_failure(target.node);
                StoreError::CopyFailed { node: target.node.0, pack: 0, detail: err.to_string() }
            })?;
            remotes.push(RemoteCopy::new(target.node, client));
        }
        let nodes: Vec<i32> = placed.targets.iter().map(|target| target.node.0).collect();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let client = self.inner.pool.get().await?;
            let id: i64 = client
                .query_one(
                    "WITH pack AS (INSERT INTO packs (node_id, owner_tenant_id, replicas_wanted) \
                                   VALUES ($1, $2, $3) RETURNING id), \
                          copy AS (INSERT INTO pack_replicas (pack_id, node_id) \
                                   SELECT pack.id, n FROM pack, unnest($4::int4[]) AS n) \
                     SELECT id FROM pack",
                    &[
                        &self.inner.node.0,
                        &placed.domain.owner().map(|owner| owner.0),
                        &i16::from(placed.wanted),
                        &nodes,
                    ],
                )
                .await?
                .get(0);
            let id = PackId(id);
            let degraded = placed.degraded;
            if !here {
                return Ok(OpenPack::new(id, class.clone(), self.inner.node, None, remotes, degraded));
            }
            let dir = self.inner.packs_dir.clone();
            let node = self.inner.node.0;
            let created = tokio::task::spawn_blocking(move || PackWriter::create(&dir, id, node)).await?;
            let err = match created {
                Ok(writer) => {
                    return Ok(OpenPack::new(
                        id,
                        class.clone(),
                        self.inner.node,
                        Some(writer),
                        remotes,
                        degraded,
                    ));
                }
                Err(err) => err,
            };
            // No file of this row exists: drop the row. (Retiring it would let GC delete
            // whatever file does carry its name.)
            // A failure to do so is logged, never allowed to hide the cause (a full disk must
            // stay StorageFull, which compaction falls back on).
            if let Err(cleanup) =
                client.execute("DELETE FROM packs WHERE id = $1 AND state = 'open'", &[&id.0]).await
            {
                tracing::warn!(pack = id.0, error = %cleanup, "cannot drop the row of a pack whose file was not made");
            }
            drop(client);
            if err.kind() != std::io::ErrorKind::AlreadyExists || attempts >= 3 {
                return Err(StoreError::io(self.inner.packs_dir.clone(), err));
            }
            tracing::warn!(
                pack = id.0,
                "a pack file with a new pack's id exists; moving pack ids past the files on disk"
            );
            let dir = self.inner.packs_dir.clone();
            let on_disk = tokio::task::spawn_blocking(move || crate::pack::scan::pack_ids_on_disk(&dir))
                .await?
                .map_err(|err| StoreError::io(self.inner.packs_dir.clone(), err))?;
            self.advance_pack_ids(on_disk.into_iter().max()).await?;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records pack `id` as sealed at `size` bytes (if it is still open) and its copies as whole.
///
/// # Errors
/// Catalog errors.
pub(super) async fn seal_pack(
    client: &tokio_postgres::Client,
    id: PackId,
    size: u64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "WITH sealed AS (UPDATE packs SET state = 'sealed', size = $2 WHERE id = $1 AND state = 'open' RETURNING id) \
             UPDATE pack_replicas SET state = 'ok' WHERE pack_id IN (SELECT id FROM sealed) AND state = 'writing'",
            &[&id.0, &(size as i64)],
        )
        .await?;
    Ok(())
}
