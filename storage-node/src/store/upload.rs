//! One upload in progress on its way into packs: its manifest so far, the packs its records
//! went into, and what it does when a copy of one of them fails.
//!
//! A pack whose copy on a peer fails mid-upload (the peer died, hung or refused) is broken: it
//! takes no more records and is sealed at the length every copy had at its last sync. The
//! upload does not fail for that when this node holds a copy of its own: the records it wrote
//! there since that sync are read back from the local file (verified against their ids),
//! appended to a new pack, which placement puts on healthy nodes (the failed peer is suspect
//! now), and the upload goes on. It never drops to fewer copies: a new pack that cannot be
//! placed in enough zones fails the upload as the tenant's policy says. Without a local copy
//! (a tenant's own nodes, reached through a shared one) the upload fails with a retryable error.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::ingest::{Fresh, INLINE_MAX_BYTES, Ingested, NewChunk, Place, Prepared, chunk_id, stored_form};
use super::open_pack::PackClass;
use super::verify::{ChunkLocation, ReadMode};
use super::writers::PackLease;
use super::{ChunkStore, StoreError};
use crate::compress::Compression;
use crate::pack::RecordHeader;
use crate::{ChunkId, TenantId};

/// How far an upload's records in one pack reach, and whether it already made them durable.
#[derive(Clone)]
struct Reach {
    pack: PackLease,
    end: u64,
    durable: bool,
}

/// How many broken packs one upload moves its records off before it gives up.
const MAX_RESCUES: usize = 2;

/// One upload in progress: its manifest so far, the pack it appends to, and how far into each
/// pack its records reach.
pub(super) struct Upload {
    store: ChunkStore,
    tenant: TenantId,
    pub(super) size: u64,
    manifest: Vec<(i64, ChunkId)>,
    new_chunks: Vec<NewChunk>,
    seen: HashSet<ChunkId>,
    reused: HashSet<ChunkId>,
    pub(super) pins: HashMap<ChunkId, i32>,
    /// The tenant's pack class, looked up when the first pack is opened.
    class: Option<PackClass>,
    pack: Option<PackLease>,
    /// Each pack this upload wrote into, and how far.
    written: Vec<Reach>,
    held: Option<Fresh>,
    /// Broken packs this upload moved its records off.
    rescues: usize,
}

impl Upload {
    pub(super) fn new(store: ChunkStore, tenant: TenantId) -> Self {
        Upload {
            store,
            tenant,
            class: None,
            held: None,
            size: 0,
            manifest: Vec::new(),
            new_chunks: Vec::new(),
            seen: HashSet::new(),
            reused: HashSet::new(),
            pins: HashMap::new(),
            pack: None,
            written: Vec::new(),
            rescues: 0,
        }
    }

    /// Adds a prepared chunk to the manifest, and stores it unless it is known or this
    /// upload stored it already.
    pub(super) async fn accept(&mut self, chunk: Prepared) -> Result<(), StoreError> {
        self.manifest.push((self.size as i64, chunk_id(&chunk)));
        self.size += chunk.len();
        match chunk {
            Prepared::Known { id, .. } => {
                *self.pins.entry(id).or_insert(0) += 1;
                if self.seen.insert(id) {
                    self.reused.insert(id);
                }
                Ok(())
            }
            Prepared::New(fresh) => {
                if !self.seen.insert(fresh.id) {
                    return Ok(());
                }
                if self.manifest.len() == 1 && fresh.raw.len() < INLINE_MAX_BYTES {
                    // Held until the body's end says whether it goes inline, its bytes leave
                    // their memory slot (a copy of under 64 KiB): the chunker needs a free slot
                    // to find out whether the body goes on, and would otherwise wait for this
                    // one for ever.
                    let raw = Bytes::copy_from_slice(&fresh.raw);
                    self.held = Some(Fresh { raw, ..fresh });
                    return Ok(());
                }
                self.append_held().await?;
                self.append(fresh).await
            }
        }
    }

    /// Appends the held first chunk to the pack: the body turned out longer than that chunk.
    async fn append_held(&mut self) -> Result<(), StoreError> {
        match self.held.take() {
            Some(fresh) => self.append(fresh).await,
            None => Ok(()),
        }
    }

    /// Appends a new chunk to this upload's pack, or to another of its class once that one is
    /// closed; moves on to a new pack when a copy fails (see the module's doc).
    async fn append(&mut self, fresh: Fresh) -> Result<(), StoreError> {
        let Fresh { id, raw, compressed, tree } = fresh;
        let (compression, data) = stored_form(&raw, compressed);
        let header = RecordHeader {
            compression,
            tenant: self.tenant,
            chunk: id,
            raw_len: raw.len() as u32,
            stored_len: data.len() as u32,
        };
        let (pack, offset) = match self.place_record(header, data.clone()).await {
            Ok(placed) => placed,
            Err((broken, err)) => {
                self.rescue(broken, err).await?;
                self.place_record(header, data).await.map_err(|(_, err)| err)?
            }
        };
        self.new_chunks.push(NewChunk {
            id,
            raw_len: header.raw_len as i32,
            stored_len: header.stored_len as i32,
            compression: header.compression,
            place: Place::Pack { pack: pack.pack(), offset },
            // A compressed chunk is decompressed whole anyway: its tree would verify nothing less.
            tree: tree.filter(|_| header.compression == Compression::None),
        });
        Ok(())
    }

    /// Appends one record to this upload's pack (or a new one of its class once that one is
    /// closed). Returns the pack and the record's offset, or the error with the pack that
    /// failed, if one did.
    async fn place_record(
        &mut self,
        header: RecordHeader,
        data: Bytes,
    ) -> Result<(PackLease, u64), (Option<PackLease>, StoreError)> {
        let target_bytes = self.store.inner.config.pack_target_bytes;
        loop {
            let pack = match self.pack.take().filter(|pack| !pack.is_closed()) {
                Some(pack) => pack,
                None => {
                    let class = match self.class.take() {
                        Some(class) => class,
                        None => self.store.pack_class(self.tenant).await.map_err(|err| (None, err))?,
                    };
                    let opened = self.store.writable_pack(&class, self.tenant).await;
                    self.class = Some(class);
                    opened.map_err(|err| (None, err))?
                }
            };
            match pack.append(header, data.clone(), target_bytes).await {
                Ok(Some((offset, end))) => {
                    self.note_written(&pack, end);
                    if !pack.is_closed() {
                        self.pack = Some(pack.clone());
                        return Ok((pack, offset));
                    }
                    // A pack that takes no more records (this record filled it) is synced
                    // now, as it filled: the upload's last sync then has one pack left to
                    // do, not every pack of a large body one after another.
                    match pack.sync_through(end).await {
                        Ok(synced) => {
                            self.store.inner.writers.count_sync(synced);
                            self.note_durable(&pack);
                            return Ok((pack, offset));
                        }
                        Err(err) => {
                            self.store.note_copy_failure(&err);
                            return Err((Some(pack), err));
                        }
                    }
                }
                // Closed (full, or broken by another upload) before its turn came.
                Ok(None) => continue,
                Err(err) => {
                    self.store.note_copy_failure(&err);
                    return Err((Some(pack), err));
                }
            }
        }
    }

    /// Moves this upload's records past the last sync of `broken` (a pack a copy of which
    /// failed) into a new pack, read back from this node's copy; or gives back `err` when that
    /// cannot be done.
    async fn rescue(&mut self, broken: Option<PackLease>, err: StoreError) -> Result<(), StoreError> {
        let Some(broken) = broken else { return Err(err) };
        if self.rescues >= MAX_RESCUES {
            return Err(err);
        }
        let Some(synced) = broken.rescue_point().await else { return Err(err) };
        self.rescues += 1;
        tracing::warn!(pack = broken.pack().0, error = %err, "a copy of this upload's pack failed; moving its records to a new pack");
        let stranded: Vec<usize> = (0..self.new_chunks.len())
            .filter(|at| {
                matches!(self.new_chunks[*at].place,
                    Place::Pack { pack, offset } if pack == broken.pack() && offset >= synced)
            })
            .collect();
        for at in stranded {
            let chunk = &self.new_chunks[at];
            let Place::Pack { pack, offset } = chunk.place else { continue };
            let location = ChunkLocation {
                tenant: self.tenant,
                chunk: chunk.id,
                pack,
                offset,
                raw_len: chunk.raw_len as u32,
                stored_len: chunk.stored_len as u32,
                compression: chunk.compression,
            };
            let store = self.store.clone();
            let (record, _raw) =
                tokio::task::spawn_blocking(move || store.read_record_verified(&location, ReadMode::Audit))
                    .await??;
            let (moved, offset) =
                self.place_record(record.header, record.data).await.map_err(|(_, err)| err)?;
            self.new_chunks[at].place = Place::Pack { pack: moved.pack(), offset };
        }
        // What is left of this upload in the broken pack is durable in all its copies.
        if let Some(reach) = self.written.iter_mut().find(|reach| reach.pack.pack() == broken.pack()) {
            reach.end = reach.end.min(synced);
        }
        Ok(())
    }

    /// Records that this upload's records in `pack` reach `end`.
    fn note_written(&mut self, pack: &PackLease, end: u64) {
        match self.written.iter_mut().find(|reach| reach.pack.pack() == pack.pack()) {
            Some(reach) => {
                reach.end = end;
                reach.durable = false;
            }
            None => self.written.push(Reach { pack: pack.clone(), end, durable: false }),
        }
    }

    /// Records that this upload's records in `pack` are durable (it synced them itself).
    fn note_durable(&mut self, pack: &PackLease) {
        if let Some(reach) = self.written.iter_mut().find(|reach| reach.pack.pack() == pack.pack()) {
            reach.durable = true;
        }
    }

    /// Makes this upload's records durable in every copy of every pack it wrote into, moving
    /// them off a pack whose copy fails now.
    async fn sync_written(&mut self) -> Result<(), StoreError> {
        self.pack = None;
        let mut at = 0;
        // A rescue appends to `written`: the packs it adds are synced in turn.
        while let Some(Reach { pack, end, durable }) = self.written.get(at).cloned() {
            at += 1;
            if durable {
                continue;
            }
            match pack.sync_through(end).await {
                Ok(synced) => self.store.inner.writers.count_sync(synced),
                Err(err) => {
                    self.store.note_copy_failure(&err);
                    self.rescue(Some(pack), err).await?;
                    self.pack = None;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn finish(mut self, md5: Option<[u8; 16]>) -> Result<Ingested, StoreError> {
        if self.manifest.len() == 1
            && let Some(Fresh { id, raw, compressed, .. }) = self.held.take()
        {
            let (compression, data) = stored_form(&raw, compressed);
            self.new_chunks.push(NewChunk {
                id,
                raw_len: raw.len() as i32,
                stored_len: data.len() as i32,
                compression,
                place: Place::Inline(data),
                tree: None,
            });
        }
        let written = match self.append_held().await {
            Ok(()) => self.sync_written().await,
            Err(err) => Err(err),
        };
        if let Err(err) = written {
            self.abandon().await;
            return Err(err);
        }
        Ok(Ingested {
            tenant: self.tenant,
            size: self.size,
            md5,
            manifest: std::mem::take(&mut self.manifest),
            new_chunks: std::mem::take(&mut self.new_chunks),
            reused: std::mem::take(&mut self.reused),
            pins: std::mem::take(&mut self.pins),
            _leases: self.written.drain(..).map(|reach| reach.pack).collect(),
        })
    }

    /// Gives up: the leases end (the records written stay in their packs, unreferenced, for
    /// GC), the pins go.
    pub(super) async fn abandon(&mut self) {
        self.pack = None;
        self.written.clear();
        let pins = std::mem::take(&mut self.pins);
        self.store.unpin(self.tenant, &pins).await;
    }
}
