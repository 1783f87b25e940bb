//! The write path: chunk, name, dedup, compress, append and fsync; [`super::commit`] then
//! records the object in the catalog.
//!
//! First the upload reserves its working set from the node's memory budget (see
//! [`super::memory_budget`]): a chunker buffer sized by its announced length and room for the
//! chunks it has in flight; it waits for that memory before it reads a byte of its body. Then
//! three stages overlap. A task chunks the source (and computes its MD5 in order). Up to
//! [`PARALLEL`] chunks at a time (as many as its reservation covers) are then prepared concurrently on blocking threads: named with
//! the tenant's key, looked up (a chunk the tenant already has is pinned against GC and not
//! stored again), and compressed where that pays. Finally, in order, new chunks are appended to
//! a pack this upload shares with the other uploads of its class (see [`super::writers`]).
//! When the source ends, the packs it wrote into are fsynced, once for all the uploads whose
//! records they hold; nothing is committed yet, so a crash here leaves no object, only
//! unreferenced bytes that GC reclaims.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use md5::Digest;
use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::memory_budget::{MemoryCharge, WorkingSet};
use super::upload::Upload;
use super::writers::PackLease;
use super::{ChunkStore, StoreError};
use crate::chunk_tree::ChunkTree;
use crate::chunker::Chunker;
use crate::compress::Compression;
use crate::pack::PackId;
use crate::{ChunkId, ChunkKey, TenantId};

/// How many chunks are prepared (hashed, looked up, compressed) at once.
const PARALLEL: usize = 4;

/// An upload whose whole body is one chunk smaller than this keeps that chunk in the catalog
/// (`chunks.inline_data`) instead of a pack, as MinIO inlines objects under 128 KiB: no pack
/// writer and no fsync of ours, the catalog's commit is the durability point (and Postgres's
/// group commit shares one WAL flush among concurrent commits). 64 KiB covers the thumbnails,
/// icons, CSS and JS a website serves most, while keeping the catalog's rows (TOASTed, at most
/// this much each) small beside its indexes; a larger body is better served from a pack's map.
pub const INLINE_MAX_BYTES: usize = 64 * 1024;

/// Options of one upload.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// The announced length (Content-Length). A shorter body fails as truncated, and a body
    /// that would exceed the quota fails before a byte is read (one small enough to go inline
    /// fails at its commit instead).
    pub expected_len: Option<u64>,
    /// Compute the MD5 of the body (the S3 ETag of a single PUT).
    pub md5: bool,
}

/// A chunk this upload stored.
#[derive(Debug, Clone)]
pub(super) struct NewChunk {
    pub id: ChunkId,
    pub raw_len: i32,
    pub stored_len: i32,
    pub compression: Compression,
    pub place: Place,
    pub tree: Option<ChunkTree>,
}

/// Where a new chunk's stored bytes are.
#[derive(Debug, Clone)]
pub(super) enum Place {
    /// Appended (and fsynced) to a pack, at this offset.
    Pack { pack: PackId, offset: u64 },
    /// Not written anywhere yet: the commit puts these bytes in the catalog's row.
    Inline(Bytes),
}

/// A small first chunk held back from the pack until the body is known to be that one chunk.
pub(super) struct Fresh {
    pub(super) id: ChunkId,
    pub(super) raw: Bytes,
    pub(super) compressed: Option<Vec<u8>>,
    /// The values that verify part of it ([`crate::chunk_tree`]), for more than one block.
    pub(super) tree: Option<ChunkTree>,
}

/// An upload whose bytes are durable in packs but not yet committed to the catalog. Commit it
/// with [`ChunkStore::commit`], or give it up with [`ChunkStore::abandon`].
#[derive(Debug)]
pub struct Ingested {
    pub(super) tenant: TenantId,
    pub(super) size: u64,
    pub(super) md5: Option<[u8; 16]>,
    /// The manifest: each chunk's logical offset and id, in order.
    pub(super) manifest: Vec<(i64, ChunkId)>,
    pub(super) new_chunks: Vec<NewChunk>,
    /// Chunks the tenant already had (and this upload did not store again).
    pub(super) reused: HashSet<ChunkId>,
    /// The pins this upload holds, per chunk.
    pub(super) pins: HashMap<ChunkId, i32>,
    pub(super) _leases: Vec<PackLease>,
}

impl Ingested {
    /// The number of bytes ingested.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The MD5 of the body, when asked for.
    pub fn md5(&self) -> Option<[u8; 16]> {
        self.md5
    }
}

/// What the tenant's quota leaves for an upload.
pub(super) struct QuotaRoom {
    pub used: u64,
    pub quota: Option<u64>,
}

impl QuotaRoom {
    pub fn check(&self, needed: u64) -> Result<(), StoreError> {
        match self.quota {
            Some(quota) if self.used.saturating_add(needed) > quota => {
                Err(StoreError::QuotaExceeded { used: self.used, quota, needed })
            }
            _ => Ok(()),
        }
    }
}

/// A chunk after the concurrent stage.
pub(super) enum Prepared {
    /// The tenant has it already; this upload now holds a pin on it.
    Known { id: ChunkId, len: u64 },
    /// New to the tenant, with its compressed form where that pays.
    New(Fresh),
}

impl ChunkStore {
    /// Streams `source` into packs and makes it durable, without committing an object. Pass
    /// the result to [`ChunkStore::commit`], inside the caller's own transaction if it has
    /// more to record atomically with the object.
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`], [`StoreError::StorageFull`], [`StoreError::Truncated`],
    /// [`StoreError::LongerThanAnnounced`], [`StoreError::Source`] and catalog errors. In every
    /// case no object is created.
    pub async fn ingest<R>(
        &self,
        tenant: TenantId,
        source: R,
        options: PutOptions,
    ) -> Result<Ingested, StoreError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        // Only a body announced as one small chunk may go inline; the small last chunk of a
        // larger body goes to a pack, and is looked up like any other.
        let may_go_inline = options.expected_len.is_some_and(|len| len < INLINE_MAX_BYTES as u64);
        // Such a body is not checked against the quota before it is read: its commit checks it
        // exactly, and reading those few bytes first costs less than a catalog round trip.
        let room = match may_go_inline {
            true => QuotaRoom { used: 0, quota: None },
            false => super::usage::quota_room(&**self.inner.pool.get().await?, tenant).await?,
        };
        if let Some(expected) = options.expected_len {
            room.check(expected)?;
        }
        let sizes = self.inner.config.chunk_sizes;
        let (working_set, memory, slots) = self.reserve_memory(options.expected_len).await?;
        let key = self.inner.secret.chunk_key(tenant);
        let (chunks_tx, mut chunks_rx) = tokio::sync::mpsc::channel::<std::io::Result<InFlight>>(slots);
        let chunking = tokio::spawn(chunk_source(
            Chunker::with_buffer(source, sizes, key.gear_seed(), working_set.buffer),
            Arc::new(Semaphore::new(slots)),
            options.md5,
            chunks_tx,
        ));
        let chunks = futures::stream::poll_fn(move |cx| chunks_rx.poll_recv(cx));
        // Each preparation is a task of its own: it must finish (and hand back its catalog
        // connection) even while this loop waits on something else, such as a connection for a
        // new pack. Futures merely buffered here would sit on their connections un-polled, and
        // enough concurrent uploads would then deadlock the pool.
        let mut prepared = chunks
            .map(|chunk| {
                let (store, key) = (self.clone(), key.clone());
                let task = tokio::spawn(async move {
                    let InFlight { raw, slot } = chunk.map_err(StoreError::Source)?;
                    store.prepare(tenant, key, raw, may_go_inline).await.map(|prepared| (prepared, slot))
                });
                async move { task.await.map_err(StoreError::from).and_then(|prepared| prepared) }
            })
            .buffered(slots);
        let mut upload = Upload::new(self.clone(), tenant);
        let result = async {
            while let Some(chunk) = prepared.next().await {
                // The chunk's slot goes back once its bytes are stored and sent to every copy.
                let (chunk, slot) = chunk?;
                let chunk = chunk.holding(slot);
                // A body longer than announced stops at once (an aws-chunked body's decoded
                // length is not enforced below us), so a small one stays small.
                let received = upload.size + chunk.len();
                let refused = match options.expected_len {
                    Some(expected) if received > expected => {
                        Err(StoreError::LongerThanAnnounced { expected })
                    }
                    _ => room.check(received),
                };
                if let Err(err) = refused {
                    if let Prepared::Known { id, .. } = chunk {
                        // Its pin was taken: release it with the others.
                        *upload.pins.entry(id).or_insert(0) += 1;
                    }
                    return Err(err);
                }
                upload.accept(chunk).await?;
            }
            if let Some(expected) = options.expected_len
                && upload.size != expected
            {
                return Err(StoreError::Truncated { expected, received: upload.size });
            }
            Ok(())
        }
        .await;
        // Let in-flight preparations finish, so that every pin they took is known.
        while let Some(chunk) = prepared.next().await {
            if let Ok((Prepared::Known { id, .. }, _)) = chunk {
                *upload.pins.entry(id).or_insert(0) += 1;
            }
        }
        drop(prepared);
        let md5 = chunking.await.ok().flatten();
        let outcome = match result {
            Ok(()) => upload.finish(md5).await,
            Err(err) => {
                upload.abandon().await;
                Err(err)
            }
        };
        // The chunks' bytes are written and sent to every copy by now: the memory is free.
        drop(memory);
        outcome
    }

    /// Reserves an upload's working set from the node's memory budget, waiting for it if it
    /// must; then, only from memory free now, room for more chunks in flight (up to
    /// [`PARALLEL`], and no more than the object can have). Returns the working set, the charge
    /// and how many chunks may be in flight.
    async fn reserve_memory(
        &self,
        expected: Option<u64>,
    ) -> Result<(WorkingSet, MemoryCharge, usize), StoreError> {
        let sizes = self.inner.config.chunk_sizes;
        let working_set = WorkingSet::new(expected, sizes);
        let mut charge = self.inner.memory.reserve(working_set.base()).await?;
        let most =
            expected.map_or(PARALLEL as u64, |len| len.div_ceil(sizes.min as u64)).clamp(1, PARALLEL as u64);
        let mut slots = 1;
        while slots < most as usize {
            let Some(more) = self.inner.memory.try_reserve(working_set.slot) else { break };
            charge.merge(more);
            slots += 1;
        }
        Ok((working_set, charge, slots))
    }

    /// Names a chunk, pins it if the tenant has it, and otherwise compresses it.
    async fn prepare(
        &self,
        tenant: TenantId,
        key: ChunkKey,
        raw: Bytes,
        may_go_inline: bool,
    ) -> Result<Prepared, StoreError> {
        let policy = self.inner.config.compression;
        // The chunk of a body that goes inline is not looked up: the commit stores or references
        // it either way (one catalog round trip fewer for a small upload). It is named and
        // compressed in one step: right here at a quick level (under 64 KiB, tens of
        // microseconds, less than a hand-off to the blocking pool and back), else in one trip.
        if may_go_inline && raw.len() < INLINE_MAX_BYTES {
            let prepare = move || {
                let (id, tree) = key.chunk_id_and_tree(&raw);
                let compressed = policy.compress(&raw);
                Prepared::New(Fresh { id, raw, compressed, tree })
            };
            return match policy.is_quick() {
                true => Ok(prepare()),
                false => Ok(tokio::task::spawn_blocking(prepare).await?),
            };
        }
        let ((id, tree), raw) =
            tokio::task::spawn_blocking(move || (key.chunk_id_and_tree(&raw), raw)).await?;
        // Any other chunk is looked up, so that a chunk the tenant has is never written to a
        // pack again.
        if self.pin_existing(tenant, id).await? {
            return Ok(Prepared::Known { id, len: raw.len() as u64 });
        }
        let (raw, compressed) = tokio::task::spawn_blocking(move || {
            let compressed = policy.compress(&raw);
            (raw, compressed)
        })
        .await?;
        Ok(Prepared::New(Fresh { id, raw, compressed, tree }))
    }

    /// Pins `id` if the tenant already stores it, so that GC leaves it until the commit. The
    /// pin and GC's delete take the same row lock, so exactly one of them wins.
    async fn pin_existing(&self, tenant: TenantId, id: ChunkId) -> Result<bool, StoreError> {
        let client = self.inner.pool.get().await?;
        let seconds = self.inner.config.pin_duration.as_secs_f64().max(1.0);
        let pinned = client
            .execute(
                "UPDATE chunks SET pin_count = pin_count + 1, \
                    pinned_until = greatest(pinned_until, now() + make_interval(secs => $3)) \
                 WHERE tenant_id = $1 AND id = $2",
                &[&tenant.0, &id.0.as_slice(), &seconds],
            )
            .await?;
        Ok(pinned == 1)
    }
}

impl Prepared {
    /// The chunk with `slot` held by its raw bytes (and so by every clone of them, such as
    /// those queued for the pack's copies on peers) until the last of them is dropped.
    fn holding(self, slot: OwnedSemaphorePermit) -> Prepared {
        match self {
            Prepared::New(fresh) => Prepared::New(Fresh {
                raw: Bytes::from_owner(Charged { bytes: fresh.raw, _slot: slot }),
                ..fresh
            }),
            known @ Prepared::Known { .. } => known,
        }
    }

    pub(super) fn len(&self) -> u64 {
        match self {
            Prepared::Known { len, .. } => *len,
            Prepared::New(fresh) => fresh.raw.len() as u64,
        }
    }
}

/// Bytes that hold a slot of their upload's working set.
struct Charged {
    bytes: Bytes,
    _slot: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A chunk on its way to its pack, with the slot of the upload's working set it takes.
struct InFlight {
    raw: Bytes,
    slot: OwnedSemaphorePermit,
}

/// Chunks `source` into `chunks`, computing the MD5 of the whole body on the way. A chunk is
/// cut only once one of the upload's `slots` is free, so that no more chunks are in flight
/// than its memory reservation covers.
async fn chunk_source<R: AsyncRead + Unpin>(
    mut chunker: Chunker<R>,
    slots: Arc<Semaphore>,
    md5: bool,
    chunks: tokio::sync::mpsc::Sender<std::io::Result<InFlight>>,
) -> Option<[u8; 16]> {
    let mut md5 = md5.then(md5::Md5::new);
    loop {
        let slot = slots.clone().acquire_owned().await.ok()?;
        let Some(next) = chunker.next_chunk().await.transpose() else { break };
        if let (Ok(chunk), Some(md5)) = (&next, md5.as_mut()) {
            md5.update(chunk);
        }
        let failed = next.is_err();
        if chunks.send(next.map(|raw| InFlight { raw, slot })).await.is_err() || failed {
            return None;
        }
    }
    md5.map(|hasher| hasher.finalize().into())
}

/// The bytes a chunk is stored as: its compressed form when that paid, else the raw bytes.
pub(super) fn stored_form(raw: &Bytes, compressed: Option<Vec<u8>>) -> (Compression, Bytes) {
    match compressed {
        Some(bytes) => (Compression::Zstd, Bytes::from(bytes)),
        None => (Compression::None, raw.clone()),
    }
}

pub(super) fn chunk_id(chunk: &Prepared) -> ChunkId {
    match chunk {
        Prepared::Known { id, .. } | Prepared::New(Fresh { id, .. }) => *id,
    }
}
