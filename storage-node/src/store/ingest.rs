//! The write path: chunk, name, dedup, compress, append, fsync, then commit to the catalog.
//!
//! [`ChunkStore::ingest`] streams the source through the chunker (on its own task, so chunking
//! overlaps hashing and writing), names each chunk with the tenant's key, and either reuses a
//! chunk the tenant already has (pinning it against GC) or appends it to an open pack. When
//! the source ends, the packs are fsynced. Only then does [`ChunkStore::commit`] record the
//! object, its manifest and the reference counts in one catalog transaction. A crash before
//! the commit leaves no object, only unreferenced bytes in packs that GC reclaims.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use md5::Digest;
use tokio::io::AsyncRead;
use tokio_postgres::Transaction;

use super::writers::{OpenPack, PackLease};
use super::{ChunkStore, ObjectId, StoreError};
use crate::chunker::Chunker;
use crate::compress::Compression;
use crate::keys::{ChunkId, TenantId};
use crate::pack::{PackId, PackWriter, RECORD_HEADER_LEN, RecordHeader};

/// Options of one upload.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// The announced length (Content-Length). A shorter body fails as truncated, and a body
    /// that would exceed the quota fails before a byte is read.
    pub expected_len: Option<u64>,
    /// Compute the MD5 of the body (the S3 ETag of a single PUT).
    pub md5: bool,
}

/// A stored object, as committed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredObject {
    pub id: ObjectId,
    pub size: u64,
    pub chunk_count: u32,
    /// Chunks this upload added to the tenant's store (the rest deduplicated).
    pub new_chunks: u32,
    /// Bytes this upload added on disk, after dedup and compression.
    pub new_stored_bytes: u64,
    #[serde(skip)]
    pub md5: Option<[u8; 16]>,
}

/// A chunk this upload appended to a pack.
#[derive(Debug, Clone)]
struct NewChunk {
    id: ChunkId,
    raw_len: i32,
    stored_len: i32,
    compression: Compression,
    pack: PackId,
    offset: u64,
}

/// An upload whose bytes are durable in packs but not yet committed to the catalog.
/// Dropping it abandons the upload; its bytes become garbage for GC.
#[derive(Debug)]
pub struct Ingested {
    tenant: TenantId,
    size: u64,
    md5: Option<[u8; 16]>,
    /// The manifest: each chunk's logical offset and id, in order.
    manifest: Vec<(i64, ChunkId)>,
    new_chunks: Vec<NewChunk>,
    /// Chunks the tenant already had, pinned until this upload commits.
    reused: HashSet<ChunkId>,
    _leases: Vec<PackLease>,
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

/// What the tenant's quota leaves for this upload.
struct QuotaRoom {
    used: u64,
    quota: Option<u64>,
}

impl QuotaRoom {
    fn check(&self, needed: u64) -> Result<(), StoreError> {
        match self.quota {
            Some(quota) if self.used.saturating_add(needed) > quota => {
                Err(StoreError::QuotaExceeded { used: self.used, quota, needed })
            }
            _ => Ok(()),
        }
    }
}

impl ChunkStore {
    /// Stores `source` as a new object of `tenant` and commits it.
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`], [`StoreError::StorageFull`], [`StoreError::Truncated`],
    /// [`StoreError::Source`] and catalog errors. In every case no object is created.
    pub async fn put<R>(
        &self,
        tenant: TenantId,
        source: R,
        options: PutOptions,
    ) -> Result<StoredObject, StoreError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let ingested = self.ingest(tenant, source, options).await?;
        let committed = async {
            let mut client = self.inner.pool.get().await?;
            let txn = client.transaction().await?;
            let stored = self.commit(&txn, &ingested).await?;
            txn.commit().await?;
            Ok(stored)
        }
        .await;
        if committed.is_err() {
            self.abandon(ingested).await;
        }
        committed
    }

    /// Gives up on an ingested upload that will not be committed: its pins on chunks it
    /// shares are released at once (its new bytes are garbage for GC either way).
    pub async fn abandon(&self, ingested: Ingested) {
        self.unpin(ingested.tenant, &ingested.reused).await;
    }

    /// Streams `source` into packs and makes it durable, without committing an object. Pass
    /// the result to [`ChunkStore::commit`], inside the caller's own transaction if it has
    /// more to record atomically with the object.
    ///
    /// # Errors
    /// See [`ChunkStore::put`].
    pub async fn ingest<R>(
        &self,
        tenant: TenantId,
        source: R,
        options: PutOptions,
    ) -> Result<Ingested, StoreError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let room = self.quota_room(tenant).await?;
        if let Some(expected) = options.expected_len {
            room.check(expected)?;
        }
        let key = self.inner.secret.tenant_key(tenant);
        let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
        let sizes = self.inner.config.chunk_sizes;
        let seed = key.gear_seed();
        // Chunking runs on its own task, so it overlaps the hashing and writing below.
        let chunking = tokio::spawn(async move {
            let mut chunker = Chunker::new(source, sizes, seed);
            loop {
                let next = chunker.next_chunk().await.transpose();
                let Some(next) = next else { break };
                let failed = next.is_err();
                if chunks_tx.send(next).await.is_err() || failed {
                    break;
                }
            }
        });
        let mut upload = Upload::new(self.clone(), tenant, options.md5);
        let result = async {
            while let Some(chunk) = chunks.recv().await {
                let chunk = chunk.map_err(StoreError::Source)?;
                room.check(upload.size + chunk.len() as u64)?;
                upload.add(&key, chunk).await?;
            }
            if let Some(expected) = options.expected_len
                && upload.size != expected
            {
                return Err(StoreError::Truncated { expected, received: upload.size });
            }
            upload.finish().await
        }
        .await;
        drop(chunks);
        let _ = chunking.await;
        if result.is_err() {
            upload.abandon().await;
        }
        result
    }

    async fn quota_room(&self, tenant: TenantId) -> Result<QuotaRoom, StoreError> {
        let client = self.inner.pool.get().await?;
        let row = client
            .query_opt("SELECT logical_bytes, storage_quota_bytes FROM tenants WHERE id = $1", &[&tenant.0])
            .await?
            .ok_or(StoreError::UnknownTenant(tenant.0))?;
        Ok(QuotaRoom {
            used: row.get::<_, i64>(0) as u64,
            quota: row.get::<_, Option<i64>>(1).map(|q| q as u64),
        })
    }

    /// Records `ingested` as a new object in `txn`: the chunks it added, their locations, the
    /// manifest, the reference counts and the tenant's usage. The caller commits `txn`, and
    /// calls [`ChunkStore::abandon`] if it does not.
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`] when concurrent uploads used up the quota meanwhile;
    /// [`StoreError::ChunkVanished`] when a pinned chunk was collected anyway (a pin outlived).
    pub async fn commit(
        &self,
        txn: &Transaction<'_>,
        ingested: &Ingested,
    ) -> Result<StoredObject, StoreError> {
        let tenant = ingested.tenant.0;
        let (used, quota) = super::objects::lock_tenant(txn, ingested.tenant).await?;
        QuotaRoom { used, quota }.check(ingested.size)?;

        let uses = count_uses(&ingested.manifest);
        let (inserted_raw, inserted_stored, inserted_count) =
            self.commit_new_chunks(txn, ingested, &uses).await?;
        if !ingested.reused.is_empty() {
            let (ids, counts): (Vec<Vec<u8>>, Vec<i64>) =
                ingested.reused.iter().map(|id| (id.0.to_vec(), uses.get(id).copied().unwrap_or(1))).unzip();
            let found = txn
                .query(
                    "UPDATE chunks c SET refcount = c.refcount + v.n, pin_count = greatest(c.pin_count - 1, 0) \
                     FROM unnest($2::bytea[], $3::int8[]) AS v(id, n) \
                     WHERE c.tenant_id = $1 AND c.id = v.id RETURNING c.id",
                    &[&tenant, &ids, &counts],
                )
                .await?;
            if found.len() != ids.len() {
                let found: std::collections::HashSet<Vec<u8>> = found.iter().map(|r| r.get(0)).collect();
                let missing =
                    ids.iter().find(|id| !found.contains(*id)).and_then(|id| ChunkId::from_slice(id));
                return Err(StoreError::ChunkVanished { chunk: missing.unwrap_or(ChunkId([0; 32])) });
            }
        }
        let md5 = ingested.md5.map(|d| d.to_vec());
        let object: i64 = txn
            .query_one(
                "INSERT INTO objects (tenant_id, size, chunk_count, md5) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&tenant, &(ingested.size as i64), &(ingested.manifest.len() as i32), &md5],
            )
            .await?
            .get(0);
        let (offsets, ids): (Vec<i64>, Vec<Vec<u8>>) =
            ingested.manifest.iter().map(|(offset, id)| (*offset, id.0.to_vec())).unzip();
        txn.execute(
            "INSERT INTO object_chunks (object_id, logical_offset, tenant_id, chunk_id) \
             SELECT $1, o, $2, c FROM unnest($3::int8[], $4::bytea[]) AS v(o, c)",
            &[&object, &tenant, &offsets, &ids],
        )
        .await?;
        txn.execute(
            "UPDATE tenants SET object_count = object_count + 1, logical_bytes = logical_bytes + $2, \
             unique_raw_bytes = unique_raw_bytes + $3, stored_bytes = stored_bytes + $4 WHERE id = $1",
            &[&tenant, &(ingested.size as i64), &inserted_raw, &inserted_stored],
        )
        .await?;
        Ok(StoredObject {
            id: ObjectId(object),
            size: ingested.size,
            chunk_count: ingested.manifest.len() as u32,
            new_chunks: inserted_count,
            new_stored_bytes: inserted_stored as u64,
            md5: ingested.md5,
        })
    }

    /// Inserts the chunks this upload wrote. A chunk that a concurrent upload committed first
    /// only gains references; this upload's copy of it stays unreferenced in its pack.
    /// Returns the raw and stored bytes and the number of chunks really added.
    async fn commit_new_chunks(
        &self,
        txn: &Transaction<'_>,
        ingested: &Ingested,
        uses: &HashMap<ChunkId, i64>,
    ) -> Result<(i64, i64, u32), StoreError> {
        if ingested.new_chunks.is_empty() {
            return Ok((0, 0, 0));
        }
        let tenant = ingested.tenant.0;
        let chunks = &ingested.new_chunks;
        let ids: Vec<Vec<u8>> = chunks.iter().map(|c| c.id.0.to_vec()).collect();
        let raw: Vec<i32> = chunks.iter().map(|c| c.raw_len).collect();
        let stored: Vec<i32> = chunks.iter().map(|c| c.stored_len).collect();
        let compression: Vec<i16> = chunks.iter().map(|c| c.compression as i16).collect();
        let refs: Vec<i64> = chunks.iter().map(|c| uses.get(&c.id).copied().unwrap_or(1)).collect();
        let rows = txn
            .query(
                "INSERT INTO chunks (tenant_id, id, raw_len, stored_len, compression, refcount) \
                 SELECT $1, * FROM unnest($2::bytea[], $3::int4[], $4::int4[], $5::int2[], $6::int8[]) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET refcount = chunks.refcount + EXCLUDED.refcount \
                 RETURNING id, (xmax = 0) AS inserted",
                &[&tenant, &ids, &raw, &stored, &compression, &refs],
            )
            .await?;
        let inserted: std::collections::HashSet<Vec<u8>> =
            rows.iter().filter(|row| row.get::<_, bool>(1)).map(|row| row.get(0)).collect();
        let added: Vec<&NewChunk> = chunks.iter().filter(|c| inserted.contains(c.id.0.as_slice())).collect();
        if added.is_empty() {
            return Ok((0, 0, 0));
        }
        let ids: Vec<Vec<u8>> = added.iter().map(|c| c.id.0.to_vec()).collect();
        let packs: Vec<i64> = added.iter().map(|c| c.pack.0).collect();
        let offsets: Vec<i64> = added.iter().map(|c| c.offset as i64).collect();
        let record_bytes: Vec<i64> =
            added.iter().map(|c| RECORD_HEADER_LEN as i64 + i64::from(c.stored_len)).collect();
        txn.execute(
            "INSERT INTO chunk_locations (tenant_id, chunk_id, node_id, pack_id, pack_offset) \
             SELECT $1, c, $2, p, o FROM unnest($3::bytea[], $4::int8[], $5::int8[]) AS v(c, p, o)",
            &[&tenant, &self.inner.node.0, &ids, &packs, &offsets],
        )
        .await?;
        txn.execute(
            "UPDATE packs SET live_bytes = packs.live_bytes + v.bytes \
             FROM (SELECT p, sum(b)::int8 AS bytes FROM unnest($1::int8[], $2::int8[]) AS u(p, b) GROUP BY p) AS v \
             WHERE packs.id = v.p",
            &[&packs, &record_bytes],
        )
        .await?;
        let raw_sum = added.iter().map(|c| i64::from(c.raw_len)).sum();
        let stored_sum = added.iter().map(|c| i64::from(c.stored_len)).sum();
        Ok((raw_sum, stored_sum, added.len() as u32))
    }
}

fn count_uses(manifest: &[(i64, ChunkId)]) -> HashMap<ChunkId, i64> {
    let mut uses = HashMap::new();
    for (_, id) in manifest {
        *uses.entry(*id).or_insert(0) += 1;
    }
    uses
}

/// One upload in progress: its manifest so far and the pack it appends to.
struct Upload {
    store: ChunkStore,
    tenant: TenantId,
    size: u64,
    md5: Option<md5::Md5>,
    manifest: Vec<(i64, ChunkId)>,
    new_chunks: Vec<NewChunk>,
    seen: HashSet<ChunkId>,
    reused: HashSet<ChunkId>,
    pack: Option<OpenPack>,
    leases: Vec<PackLease>,
}

impl Upload {
    fn new(store: ChunkStore, tenant: TenantId, md5: bool) -> Self {
        Upload {
            store,
            tenant,
            size: 0,
            md5: md5.then(md5::Md5::new),
            manifest: Vec::new(),
            new_chunks: Vec::new(),
            seen: HashSet::new(),
            reused: HashSet::new(),
            pack: None,
            leases: Vec::new(),
        }
    }

    /// Names `chunk`, and stores it unless the tenant already has it.
    async fn add(&mut self, key: &crate::keys::TenantKey, chunk: Bytes) -> Result<(), StoreError> {
        let offset = self.size as i64;
        self.size += chunk.len() as u64;
        let (id, md5) = {
            let key = key.clone();
            let hashed = chunk.clone();
            let mut md5 = self.md5.take();
            tokio::task::spawn_blocking(move || {
                if let Some(md5) = md5.as_mut() {
                    md5.update(&hashed);
                }
                (key.chunk_id(&hashed), md5)
            })
            .await?
        };
        self.md5 = md5;
        self.manifest.push((offset, id));
        if !self.seen.insert(id) {
            return Ok(());
        }
        if self.pin_existing(id).await? {
            self.reused.insert(id);
            return Ok(());
        }
        self.append(id, chunk).await
    }

    /// Pins `id` if the tenant already stores it, so that GC leaves it until the commit. The
    /// pin and GC's delete take the same row lock, so exactly one of them wins.
    async fn pin_existing(&self, id: ChunkId) -> Result<bool, StoreError> {
        let client = self.store.inner.pool.get().await?;
        let pin = Duration::from_secs(self.store.inner.config.pin_duration.as_secs().max(1));
        let seconds = pin.as_secs_f64();
        let pinned = client
            .execute(
                "UPDATE chunks SET pin_count = pin_count + 1, \
                    pinned_until = greatest(pinned_until, now() + make_interval(secs => $3)) \
                 WHERE tenant_id = $1 AND id = $2",
                &[&self.tenant.0, &id.0.as_slice(), &seconds],
            )
            .await?;
        Ok(pinned == 1)
    }

    /// Compresses (where that pays) and appends a new chunk to this upload's pack.
    async fn append(&mut self, id: ChunkId, chunk: Bytes) -> Result<(), StoreError> {
        let mut pack = match self.pack.take() {
            Some(pack) => pack,
            None => self.store.open_pack().await?,
        };
        if !self.leases.iter().any(|lease| lease.pack() == pack.writer.id()) {
            self.leases.push(pack.lease());
        }
        let policy = self.store.inner.config.compression;
        let tenant = self.tenant;
        let (pack, written) = tokio::task::spawn_blocking(move || {
            let compressed = policy.compress(&chunk);
            let (compression, data) = match &compressed {
                Some(bytes) => (Compression::Zstd, bytes.as_slice()),
                None => (Compression::None, chunk.as_ref()),
            };
            let header = RecordHeader {
                compression,
                tenant,
                chunk: id,
                raw_len: chunk.len() as u32,
                stored_len: data.len() as u32,
            };
            let written = pack.writer.append(&header, data).map(|offset| (header, offset));
            (pack, written)
        })
        .await?;
        let pack_id = pack.writer.id();
        let path = pack.writer.path().to_path_buf();
        let full = pack.writer.len() >= self.store.inner.config.pack_target_bytes;
        self.pack = Some(pack);
        let (header, offset) = written.map_err(|err| StoreError::io(path, err))?;
        self.new_chunks.push(NewChunk {
            id,
            raw_len: header.raw_len as i32,
            stored_len: header.stored_len as i32,
            compression: header.compression,
            pack: pack_id,
            offset,
        });
        if full {
            self.sync_and_release().await?;
        }
        Ok(())
    }

    /// Makes this upload's current pack durable and hands the writer back.
    async fn sync_and_release(&mut self) -> Result<(), StoreError> {
        let Some(mut pack) = self.pack.take() else { return Ok(()) };
        let (pack, synced) = tokio::task::spawn_blocking(move || {
            let synced = pack.writer.sync();
            (pack, synced)
        })
        .await?;
        let path = pack.writer.path().to_path_buf();
        self.store.inner.writers.put_back(pack, self.store.inner.config.pack_target_bytes);
        synced.map_err(|err| StoreError::io(path, err))
    }

    async fn finish(&mut self) -> Result<Ingested, StoreError> {
        self.sync_and_release().await?;
        let md5 = self.md5.take().map(|hasher| hasher.finalize().into());
        Ok(Ingested {
            tenant: self.tenant,
            size: self.size,
            md5,
            manifest: std::mem::take(&mut self.manifest),
            new_chunks: std::mem::take(&mut self.new_chunks),
            reused: std::mem::take(&mut self.reused),
            _leases: std::mem::take(&mut self.leases),
        })
    }

    /// Gives up: the writer goes back (or drains, when broken), the leases end, the pins go.
    async fn abandon(&mut self) {
        if let Some(pack) = self.pack.take() {
            self.store.inner.writers.put_back(pack, self.store.inner.config.pack_target_bytes);
        }
        self.leases.clear();
        let reused = std::mem::take(&mut self.reused);
        self.store.unpin(self.tenant, &reused).await;
    }
}

impl ChunkStore {
    /// Drops the pins of an upload that will not commit. A failure here only delays GC until
    /// the pins expire.
    async fn unpin(&self, tenant: TenantId, chunks: &HashSet<ChunkId>) {
        if chunks.is_empty() {
            return;
        }
        let ids: Vec<Vec<u8>> = chunks.iter().map(|id| id.0.to_vec()).collect();
        let unpinned = match self.inner.pool.get().await {
            Ok(client) => client
                .execute(
                    "UPDATE chunks SET pin_count = greatest(pin_count - 1, 0) \
                     WHERE tenant_id = $1 AND id = ANY($2::bytea[])",
                    &[&tenant.0, &ids],
                )
                .await
                .map(|_| ())
                .map_err(StoreError::from),
            Err(err) => Err(err.into()),
        };
        if let Err(err) = unpinned {
            tracing::warn!(error = %err, "could not unpin the chunks of an abandoned upload; they expire instead");
        }
    }

    /// An idle open pack, or a new one.
    pub(super) async fn open_pack(&self) -> Result<OpenPack, StoreError> {
        if let Some(pack) = self.inner.writers.take() {
            return Ok(pack);
        }
        let client = self.inner.pool.get().await?;
        let id: i64 = client
            .query_one("INSERT INTO packs (node_id) VALUES ($1) RETURNING id", &[&self.inner.node.0])
            .await?
            .get(0);
        let dir = self.inner.packs_dir.clone();
        let node = self.inner.node.0;
        match tokio::task::spawn_blocking(move || PackWriter::create(&dir, PackId(id), node)).await? {
            Ok(writer) => Ok(OpenPack::new(writer)),
            Err(err) => {
                // The file never came to be: retire the row so GC forgets it.
                let _ = client
                    .execute("UPDATE packs SET state = 'retired', retired_at = now() WHERE id = $1", &[&id])
                    .await;
                Err(StoreError::io(self.inner.packs_dir.clone(), err))
            }
        }
    }
}
