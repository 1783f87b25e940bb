//! The open packs of this node: which pack an upload appends to, and when a pack is sealed.
//!
//! Uploads of one pack class share a few open packs ([`PACKS_PER_CLASS`]) instead of taking
//! one each: a burst of two hundred concurrent uploads writes into two packs, not two hundred,
//! so open files, append streams to peers (and the records they buffer) and fsyncs grow with
//! the classes, not with the uploads. An upload stays on its pack while the pack takes
//! records, so its chunks still sit close together. Each record is appended under the pack's
//! lock; an upload syncs a pack its record filled, and at its end each other pack it wrote
//! into, unless a sync of another upload already covered its records: concurrent uploads share
//! one `fdatasync` (group commit).
//!
//! Every upload that wrote into a pack holds a [`PackLease`] on it until it commits or gives
//! up. A pack is sealed (and so becomes visible to GC compaction) only when it takes no more
//! records and no lease on it remains: GC can never mistake the not-yet-committed chunks of a
//! running upload for garbage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::open_pack::{OpenPack, PackClass, RemoteCopy};
use super::{ChunkStore, NodeId, StoreError};
use crate::TenantId;
use crate::pack::{PackId, PackWriter, RecordHeader};

/// How many packs of one class take records at once. Two let one pack sync while the other
/// takes records, and keep a compaction that holds one from stalling the class's uploads.
pub const PACKS_PER_CLASS: usize = 2;
/// How long after it opened a pack is still handed to new uploads.
const MAX_REUSE_AGE: Duration = Duration::from_secs(300);

/// An open pack that uploads of its class share.
pub(crate) struct SharedPack {
    id: PackId,
    class: PackClass,
    /// The peers that hold a copy.
    remote_nodes: Vec<NodeId>,
    opened_at: Instant,
    /// Taken by one writer only (a GC pass's, or one with fewer copies than its policy
    /// wanted): never in the open set.
    private: bool,
    /// Set once the pack takes no more records: full, broken or retired.
    closed: AtomicBool,
    pack: tokio::sync::Mutex<OpenPack>,
}

/// Proof that an upload wrote into a pack and has not finished yet; also its way to the pack.
#[derive(Clone)]
pub struct PackLease(Arc<SharedPack>);

impl std::fmt::Debug for PackLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PackLease").field(&self.0.id).finish()
    }
}

impl PackLease {
    fn new(pack: OpenPack, private: bool) -> Self {
        PackLease(Arc::new(SharedPack {
            id: pack.id(),
            class: pack.class().clone(),
            remote_nodes: pack.remote_nodes(),
            opened_at: Instant::now(),
            private: private || pack.is_degraded(),
            closed: AtomicBool::new(false),
            pack: tokio::sync::Mutex::new(pack),
        }))
    }

    pub fn pack(&self) -> PackId {
        self.0.id
    }

    /// Whether the pack takes no more records.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// Makes the pack take no more records; it is sealed once its last lease ends.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
    }

    /// The pack itself, for as long as the guard lives; no one else appends or syncs meanwhile.
    pub(super) async fn lock(&self) -> tokio::sync::MutexGuard<'_, OpenPack> {
        self.0.pack.lock().await
    }

    /// Appends one record and returns its offset and the pack's length after it, or `None`
    /// when the pack was closed before its turn came. It runs in a task of its own: an upload
    /// cancelled meanwhile (its client gone) never leaves a shared pack half-written.
    ///
    /// # Errors
    /// As [`OpenPack::append`]; the pack is then closed.
    pub(super) async fn append(
        &self,
        header: RecordHeader,
        data: Bytes,
        target_bytes: u64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let lease = self.clone();
        tokio::spawn(async move {
            let mut pack = lease.lock().await;
            if lease.is_closed() {
                return Ok(None);
            }
            let written = pack.append(header, data).await;
            if written.is_err() || pack.is_broken() || pack.len() >= target_bytes {
                lease.close();
            }
            written.map(|offset| Some((offset, pack.len())))
        })
        .await?
    }

    /// Makes the pack durable in every copy through byte `end`: nothing to do when another
    /// writer's sync already got there (group commit). Runs in a task of its own, as
    /// [`PackLease::append`] does.
    ///
    /// Returns whether this call synced (`false`: an earlier sync covered `end`).
    ///
    /// # Errors
    /// As [`OpenPack::sync`], or [`StoreError::Retry`] when the pack broke before `end` was
    /// durable; the pack is then closed.
    pub(super) async fn sync_through(&self, end: u64) -> Result<bool, StoreError> {
        let lease = self.clone();
        tokio::spawn(async move {
            let mut pack = lease.lock().await;
            if pack.synced_len() >= end {
                return Ok(false);
            }
            if pack.is_broken() {
                lease.close();
                return Err(StoreError::Retry(format!(
                    "pack {} failed before this upload's records in it were durable ({})",
                    lease.pack().0,
                    pack.failure()
                )));
            }
            let synced = pack.sync().await;
            if synced.is_err() {
                lease.close();
            }
            synced.map(|()| true)
        })
        .await?
    }

    /// Where an upload may rescue its records from: the length durable in every copy, when
    /// a copy on a peer failed and this node's own copy is whole (see `upload`).
    pub(super) async fn rescue_point(&self) -> Option<u64> {
        let pack = self.lock().await;
        (pack.is_broken() && pack.local_intact()).then(|| pack.synced_len())
    }

    /// Whether the pack should take no new uploads: closed, too old to follow today's nodes
    /// and policies (a zone added since, a node drained since), or with a copy on a suspect.
    fn worn(&self, suspects: &[NodeId]) -> bool {
        self.is_closed()
            || self.0.opened_at.elapsed() >= MAX_REUSE_AGE
            || self.0.remote_nodes.iter().any(|node| suspects.contains(node))
    }

    /// How many holders the pack has besides the pool.
    fn holders(&self) -> usize {
        Arc::strong_count(&self.0) - 1
    }
}

/// What the pack writers did, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackWriterStats {
    /// Packs that take records now.
    pub open_packs: u64,
    /// Uploads that synced the packs they wrote into.
    pub syncs: u64,
    /// Uploads whose records another upload's sync had already made durable.
    pub syncs_shared: u64,
}

/// The packs that take uploads, and those waiting for their leases to end to be sealed.
#[derive(Default)]
pub struct WriterPool {
    syncs: AtomicU64,
    syncs_shared: AtomicU64,
    open: Mutex<Vec<PackLease>>,
    draining: Mutex<Vec<PackLease>>,
    /// Seals that failed, to try again.
    unsealed: Mutex<Vec<(PackId, u64)>>,
    /// Per class, held while a new pack of it is opened, so that a burst opens
    /// [`PACKS_PER_CLASS`], not one per upload; a slow open (a peer slow to answer) holds back
    /// only its own class.
    opening: Mutex<HashMap<PackClass, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for WriterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterPool").field("open", &lock(&self.open).len()).finish_non_exhaustive()
    }
}

impl WriterPool {
    /// Counts an upload's sync of a pack: its own (`synced`), or shared with an earlier one.
    pub(super) fn count_sync(&self, synced: bool) {
        let counter = if synced { &self.syncs } else { &self.syncs_shared };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> PackWriterStats {
        PackWriterStats {
            open_packs: lock(&self.open).len() as u64,
            syncs: self.syncs.load(Ordering::Relaxed),
            syncs_shared: self.syncs_shared.load(Ordering::Relaxed),
        }
    }

    /// The open pack of `class` with the fewest holders and how many it has (moving worn
    /// packs to draining on the way), and whether the class has room for another open pack.
    fn pick(&self, class: &PackClass, suspects: &[NodeId]) -> (Option<(PackLease, usize)>, bool) {
        let mut open = lock(&self.open);
        let (worn, kept): (Vec<_>, Vec<_>) =
            open.drain(..).partition(|lease| lease.0.class == *class && lease.worn(suspects));
        *open = kept;
        let ours = || open.iter().filter(|lease| lease.0.class == *class);
        let room = ours().count() < PACKS_PER_CLASS;
        let best = ours().map(|lease| (lease.holders(), lease)).min_by_key(|(holders, _)| *holders);
        let best = best.map(|(holders, lease)| (lease.clone(), holders));
        drop(open);
        self.retire(worn);
        (best, room)
    }

    /// The lock held while a pack of `class` is opened. The locks no task holds or waits on
    /// are dropped on the way, so that the map keeps only the classes being opened now, not
    /// every class (one per owning tenant's policy) ever opened.
    fn opening(&self, class: &PackClass) -> Arc<tokio::sync::Mutex<()>> {
        let mut opening = lock(&self.opening);
        opening.retain(|_, held| Arc::strong_count(held) > 1);
        opening.entry(class.clone()).or_default().clone()
    }

    /// Adds a newly opened pack: to the open set, or (private) straight to draining.
    fn add(&self, pack: OpenPack, private: bool) -> PackLease {
        let lease = PackLease::new(pack, private);
        if lease.0.private {
            lock(&self.draining).push(lease.clone());
        } else {
            lock(&self.open).push(lease.clone());
        }
        lease
    }

    fn retire(&self, packs: Vec<PackLease>) {
        for lease in &packs {
            lease.close();
        }
        lock(&self.draining).extend(packs);
    }

    /// The packs that are ready to seal now (closed or private, and no upload holds a lease),
    /// with the length durable in every copy. They are removed from the pool; the caller
    /// records the seal in the catalog. Closed and aged packs leave the open set on the way.
    pub fn take_sealable(&self) -> Vec<(PackId, u64)> {
        let mut open = lock(&self.open);
        let (worn, kept): (Vec<_>, Vec<_>) = open.drain(..).partition(|lease| lease.worn(&[]));
        *open = kept;
        drop(open);
        self.retire(worn);
        let mut ready = std::mem::take(&mut *lock(&self.unsealed));
        let mut draining = lock(&self.draining);
        let mut waiting = Vec::with_capacity(draining.len());
        for lease in draining.drain(..) {
            // No holder left: nothing else can reach the pack, so its lock is free.
            let sealable = match (lease.holders(), lease.0.pack.try_lock()) {
                (0, Ok(mut pack)) => {
                    pack.abandon_unsynced();
                    Some(pack.synced_len())
                }
                _ => None,
            };
            match sealable {
                Some(size) => ready.push((lease.pack(), size)),
                None => waiting.push(lease),
            }
        }
        *draining = waiting;
        ready
    }

    /// Puts back packs taken by [`WriterPool::take_sealable`] whose seal failed, to try again.
    fn keep_sealable(&self, packs: Vec<(PackId, u64)>) {
        lock(&self.unsealed).extend(packs);
    }

    /// Closes the open packs no upload is writing into (`busy_too`: every one, at shutdown),
    /// so that they are sealed; a busy pack is left to its uploads, which GC must not push onto
    /// new packs at every pass.
    pub fn retire_idle(&self, busy_too: bool) {
        let mut open = lock(&self.open);
        let (done, kept): (Vec<_>, Vec<_>) =
            open.drain(..).partition(|lease| busy_too || lease.holders() == 0);
        *open = kept;
        drop(open);
        self.retire(done);
    }
}

impl ChunkStore {
    /// Seals the packs that take no more records (full, broken, degraded, aged or closed by
    /// GC) and whose last upload has ended; returns how many. Until then a
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

    /// A pack of `class` to append to: an idle open one; else a new one while the class has
    /// fewer than [`PACKS_PER_CLASS`] (and no other task is opening one); else the open one
    /// with the fewest uploads on it. One client's uploads in a row fill one pack; concurrent
    /// ones share two.
    ///
    /// # Errors
    /// As [`ChunkStore::open_pack`].
    pub(super) async fn writable_pack(
        &self,
        class: &PackClass,
        tenant: TenantId,
    ) -> Result<PackLease, StoreError> {
        let pool = &self.inner.writers;
        let suspects = self.inner.peers.suspects();
        let (best, room) = pool.pick(class, &suspects);
        let best = match best {
            Some((lease, holders)) if holders == 0 || !room => return Ok(lease),
            best => best.map(|(lease, _)| lease),
        };
        let opening = pool.opening(class);
        let _opening = match (opening.try_lock(), best) {
            (Ok(guard), _) => guard,
            (Err(_), Some(lease)) => return Ok(lease),
            (Err(_), None) => opening.lock().await,
        };
        if let (Some((lease, holders)), room) = pool.pick(class, &suspects)
            && (holders == 0 || !room)
        {
            return Ok(lease);
        }
        Ok(pool.add(self.open_pack(class, tenant).await?, false))
    }

    /// A new pack of `class` that no upload shares (GC copies into it): sealed once its
    /// lease is dropped.
    ///
    /// # Errors
    /// As [`ChunkStore::open_pack`].
    pub(super) async fn private_pack(
        &self,
        class: &PackClass,
        tenant: TenantId,
    ) -> Result<PackLease, StoreError> {
        let pack = self.open_pack(class, tenant).await?;
        Ok(self.inner.writers.add(pack, true))
    }

    /// A new pack.
    ///
    /// A new pack's file is created with `O_EXCL`: a file under the new id (left by packs the
    /// catalog does not know, as after a catalog restore) is never opened, overwritten or,
    /// through a retired row, deleted. The id is dropped, ids move past every file on disk,
    /// and a fresh id is tried.
    async fn open_pack(&self, class: &PackClass, tenant: TenantId) -> Result<OpenPack, StoreError> {
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn class(owner: i64) -> PackClass {
        PackClass { owner: Some(crate::TenantId(owner)), replicas: None, zones: None }
    }

    #[test]
    fn the_opening_locks_of_classes_no_task_holds_are_forgotten() {
        let pool = WriterPool::default();
        let held = pool.opening(&class(1));
        drop(pool.opening(&class(2)));
        let _third = pool.opening(&class(3));
        let kept: HashSet<PackClass> = lock(&pool.opening).keys().cloned().collect();
        assert_eq!(kept, HashSet::from([class(1), class(3)]));
        // A class being opened keeps its one lock.
        assert!(Arc::ptr_eq(&held, &pool.opening(&class(1))));
    }
}
