//! Loading a chunk from its pack and proving it is the chunk the catalog names.
//!
//! The record header must match the catalog, and the raw bytes must hash (keyed BLAKE3) to the
//! chunk id. Wrong bytes never leave this module. A cache bounded in bytes keeps private
//! copies of recently verified chunks that were read in part, so a small range of a large
//! chunk does not cost hashing (or decompressing) the whole chunk on every request. The cache
//! holds copies, not views of the pack's memory map, so what it serves is exactly what was
//! verified. Whole-chunk reads (streaming) skip the copy and the cache: they hand out the
//! verified view of the map. A chunk kept inline in the catalog is proven the same way
//! ([`ChunkStore::check_inline`]): its bytes must hash to its id.

use bytes::Bytes;

use super::{ChunkStore, StoreError};
use crate::chunk_tree::ChunkTree;
use crate::compress::{Compression, decompress};
use crate::pack::{PackId, RecordHeader, RecordView};
use crate::{ChunkId, TenantId};

/// Where a chunk lives and what the catalog says of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkLocation {
    pub tenant: TenantId,
    pub chunk: ChunkId,
    pub pack: PackId,
    pub offset: u64,
    pub raw_len: u32,
    pub stored_len: u32,
    pub compression: Compression,
}

/// The select list and join that [`ChunkLocation::from_row`] reads, in its column order: a
/// chunk's place (`chunk_locations l`) with what the catalog says of it (`chunks c`).
pub(crate) const LOCATIONS_SELECT: &str = "SELECT l.tenant_id, l.chunk_id, l.pack_id, l.pack_offset, \
     c.raw_len, c.stored_len, c.compression \
     FROM chunk_locations l JOIN chunks c ON c.tenant_id = l.tenant_id AND c.id = l.chunk_id";

impl ChunkLocation {
    /// A row of a query that starts with [`LOCATIONS_SELECT`].
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Self {
        ChunkLocation {
            tenant: TenantId(row.get(0)),
            chunk: ChunkId::from_slice(row.get(1)).unwrap_or(ChunkId([0; 32])),
            pack: PackId(row.get(2)),
            offset: row.get::<_, i64>(3) as u64,
            raw_len: row.get::<_, i32>(4) as u32,
            stored_len: row.get::<_, i32>(5) as u32,
            compression: Compression::from_code(row.get(6)).unwrap_or(Compression::None),
        }
    }
}

/// What a chunk is read for, which decides how the cache of verified chunks is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// Part of the chunk is wanted: serve from the cache, or fill it with a private copy, so
    /// the next small range of this chunk costs no hashing.
    Partial,
    /// Most or all of the chunk is wanted (streaming, large ranges): serve from the cache if
    /// there, else verify and hand out a view of the map without copying or caching.
    Whole,
    /// Read and hash the bytes on disk now, bypassing the cache (scrub, compaction).
    Audit,
}

impl ChunkStore {
    /// The chunk's raw bytes, verified. Blocking: call it from a blocking thread.
    ///
    /// # Errors
    /// [`StoreError::Integrity`] when the record or its bytes do not match; `Io` when the pack
    /// cannot be read (`NotFound` when its file is gone).
    pub(crate) fn load_verified(&self, at: &ChunkLocation, mode: ReadMode) -> Result<Bytes, StoreError> {
        let cache_key = (at.tenant, at.chunk);
        if mode != ReadMode::Audit
            && let Some(raw) = self.inner.verified.get(&cache_key)
        {
            return Ok(raw);
        }
        let (_, raw) = self.read_record_verified(at, mode)?;
        if mode == ReadMode::Partial {
            self.inner.verified.insert(cache_key, raw.clone());
        }
        Ok(raw)
    }

    /// The chunk's record as stored, and its raw bytes, both verified. Blocking.
    ///
    /// # Errors
    /// See [`ChunkStore::load_verified`].
    pub(crate) fn read_record_verified(
        &self,
        at: &ChunkLocation,
        mode: ReadMode,
    ) -> Result<(RecordView, Bytes), StoreError> {
        let record = self.map_record(at)?;
        let raw = self.check_record(at, &record.header, &record.data, mode)?;
        Ok((record, raw))
    }

    /// The bytes `span` of an uncompressed chunk (a span of whole blocks, see
    /// [`ChunkTree::covering`]), proven through the chunk's `tree` to belong to the chunk `at`
    /// names: only the blocks of the span are hashed. A view of the pack's map, not a copy.
    /// Blocking.
    ///
    /// # Errors
    /// See [`ChunkStore::load_verified`].
    pub(crate) fn load_verified_span(
        &self,
        at: &ChunkLocation,
        tree: &ChunkTree,
        span: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let record = self.map_record(at)?;
        check_header(at, &record.header)?;
        if at.compression != Compression::None || span.end > u64::from(at.raw_len) || span.start > span.end {
            return Err(integrity(at, "a span of a chunk it does not have".into()));
        }
        let bytes = record.data.slice(span.start as usize..span.end as usize);
        let key = self.inner.secret.chunk_key(at.tenant);
        if !tree.verify_span(&key, &at.chunk, u64::from(at.raw_len), span.start, &bytes) {
            return Err(integrity(at, format!("its bytes {span:?} do not hash to its id")));
        }
        Ok(bytes)
    }

    /// The record at `at` in this node's map of its pack.
    fn map_record(&self, at: &ChunkLocation) -> Result<RecordView, StoreError> {
        self.inner.maps.record(at.pack, at.offset).map_err(|err| match err.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                integrity(at, err.to_string())
            }
            _ => StoreError::io(crate::pack::pack_path(&self.inner.packs_dir, at.pack), err),
        })
    }

    /// The raw bytes of a record read from anywhere (this node's map or a peer's answer),
    /// proven to be the chunk `at` names: the header matches the catalog and the raw bytes
    /// hash (keyed BLAKE3) to the chunk id. Blocking (it hashes and decompresses).
    ///
    /// # Errors
    /// [`StoreError::Integrity`] saying what does not match.
    pub(crate) fn check_record(
        &self,
        at: &ChunkLocation,
        header: &RecordHeader,
        data: &Bytes,
        mode: ReadMode,
    ) -> Result<Bytes, StoreError> {
        check_header(at, header)?;
        let raw = match at.compression {
            // A private copy for the cache: the map would show later changes to the file.
            Compression::None if mode == ReadMode::Partial => Bytes::copy_from_slice(data),
            Compression::None => data.clone(),
            Compression::Zstd => Bytes::from(
                decompress(data, at.raw_len as usize)
                    .map_err(|err| integrity(at, format!("it does not decompress: {err}")))?,
            ),
        };
        let key = self.inner.secret.chunk_key(at.tenant);
        if key.chunk_id(&raw) != at.chunk {
            self.forget_verified(at.tenant, at.chunk);
            return Err(integrity(at, "its bytes do not hash to its id".into()));
        }
        Ok(raw)
    }

    /// The raw bytes of a chunk kept inline in the catalog (`data`, stored with
    /// `compression`), proven to be `chunk` of `tenant`: `raw_len` long and hashing (keyed
    /// BLAKE3) to its id. Small enough (see `INLINE_MAX_BYTES`) to run on any thread.
    ///
    /// # Errors
    /// [`StoreError::Integrity`] (with pack 0: no pack holds the chunk) saying what does not
    /// match.
    pub(crate) fn check_inline(
        &self,
        tenant: TenantId,
        chunk: ChunkId,
        raw_len: u32,
        compression: Compression,
        data: &Bytes,
    ) -> Result<Bytes, StoreError> {
        let at =
            ChunkLocation { tenant, chunk, pack: PackId(0), offset: 0, raw_len, stored_len: 0, compression };
        let raw = match compression {
            Compression::None => data.clone(),
            Compression::Zstd => Bytes::from(
                decompress(data, raw_len as usize)
                    .map_err(|err| integrity(&at, format!("its inline bytes do not decompress: {err}")))?,
            ),
        };
        if raw.len() != raw_len as usize || self.inner.secret.chunk_key(tenant).chunk_id(&raw) != chunk {
            return Err(integrity(&at, "its inline bytes do not hash to its id".into()));
        }
        Ok(raw)
    }

    /// Drops a chunk from the cache of verified chunks.
    pub(crate) fn forget_verified(&self, tenant: TenantId, chunk: ChunkId) {
        self.inner.verified.remove(&(tenant, chunk));
    }
}

/// A record's header must say what the catalog says of its chunk.
fn check_header(at: &ChunkLocation, header: &RecordHeader) -> Result<(), StoreError> {
    if header.chunk != at.chunk
        || header.tenant != at.tenant
        || header.raw_len != at.raw_len
        || header.stored_len != at.stored_len
        || header.compression != at.compression
    {
        return Err(integrity(at, "the record header does not match the catalog".into()));
    }
    Ok(())
}

pub(super) fn integrity(at: &ChunkLocation, detail: String) -> StoreError {
    StoreError::Integrity { tenant: at.tenant, chunk: at.chunk, pack: at.pack, offset: at.offset, detail }
}
