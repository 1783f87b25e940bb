//! The open packs of this node and when they may be sealed.
//!
//! An upload takes an idle writer for as long as it streams, so its chunks sit together in
//! one pack, and hands it back before its catalog commit. Every upload that wrote into a pack
//! holds a [`PackLease`] on it until it commits or gives up. A pack is sealed (and so becomes
//! visible to GC compaction) only when it is full and no lease on it remains: GC can never
//! mistake the not-yet-committed chunks of a running upload for garbage.

use std::sync::{Arc, Mutex};

use super::{ChunkStore, StoreError};
use crate::pack::{PackId, PackWriter};

/// Proof that an upload wrote into a pack and has not finished yet.
#[derive(Debug, Clone)]
pub struct PackLease(Arc<PackId>);

impl PackLease {
    pub fn pack(&self) -> PackId {
        *self.0
    }
}

/// An open pack: its writer and the lease every upload into it clones.
#[derive(Debug)]
pub struct OpenPack {
    pub writer: PackWriter,
    lease: PackLease,
}

impl OpenPack {
    pub fn new(writer: PackWriter) -> Self {
        let lease = PackLease(Arc::new(writer.id()));
        OpenPack { writer, lease }
    }

    /// A lease for one more upload that writes here.
    pub fn lease(&self) -> PackLease {
        self.lease.clone()
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
    /// An idle writer, if any.
    pub fn take(&self) -> Option<OpenPack> {
        lock(&self.idle).pop()
    }

    /// Returns a writer after use: to the idle set, or to draining when it is full or broken.
    pub fn put_back(&self, pack: OpenPack, target_bytes: u64) {
        let full = pack.writer.is_broken() || pack.writer.len() >= target_bytes;
        let mut idle = lock(&self.idle);
        if full || idle.len() >= MAX_IDLE {
            drop(idle);
            let size = pack.writer.len();
            lock(&self.draining).push(Draining { lease: pack.lease, size });
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

    /// Moves every idle writer to draining, so that GC and shutdown can seal them.
    pub fn retire_idle(&self) {
        let idle: Vec<OpenPack> = lock(&self.idle).drain(..).collect();
        let mut draining = lock(&self.draining);
        for pack in idle {
            let size = pack.writer.len();
            draining.push(Draining { lease: pack.lease, size });
        }
    }
}

impl ChunkStore {
    /// An idle open pack, or a new one.
    ///
    /// A new pack's file is created with `O_EXCL`: a file under the new id (left by packs the
    /// catalog does not know, as after a catalog restore) is never opened, overwritten or,
    /// through a retired row, deleted. The id is dropped, ids move past every file on disk,
    /// and a fresh id is tried.
    pub(super) async fn open_pack(&self) -> Result<OpenPack, StoreError> {
        if let Some(pack) = self.inner.writers.take() {
            return Ok(pack);
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let client = self.inner.pool.get().await?;
            let id: i64 = client
                .query_one("INSERT INTO packs (node_id) VALUES ($1) RETURNING id", &[&self.inner.node.0])
                .await?
                .get(0);
            let dir = self.inner.packs_dir.clone();
            let node = self.inner.node.0;
            let created =
                tokio::task::spawn_blocking(move || PackWriter::create(&dir, PackId(id), node)).await?;
            let err = match created {
                Ok(writer) => return Ok(OpenPack::new(writer)),
                Err(err) => err,
            };
            // No file of this row exists: drop the row. (Retiring it would let GC delete
            // whatever file does carry its name.)
            // A failure to do so is logged, never allowed to hide the cause (a full disk must
            // stay StorageFull, which compaction falls back on).
            if let Err(cleanup) =
                client.execute("DELETE FROM packs WHERE id = $1 AND state = 'open'", &[&id]).await
            {
                tracing::warn!(pack = id, error = %cleanup, "cannot drop the row of a pack whose file was not made");
            }
            drop(client);
            if err.kind() != std::io::ErrorKind::AlreadyExists || attempts >= 3 {
                return Err(StoreError::io(self.inner.packs_dir.clone(), err));
            }
            tracing::warn!(
                pack = id,
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
