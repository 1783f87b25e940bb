//! The read path: any byte range of an object, as a stream, chunk by chunk.
//!
//! The first chunk of a range is found through the `(object_id, logical_offset)` key (one
//! index probe, no manifest scan). Manifest rows come in small batches, and each chunk is
//! loaded, verified and sliced on a blocking thread, so a read holds at most one batch of rows
//! and one chunk in memory however large the object is. A chunk kept inline in the catalog
//! comes with its manifest row and is verified the same (keyed BLAKE3). The first batch can
//! come with the query that found the object ([`ManifestHead`]): a small GET is then one
//! catalog round trip.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::task::JoinHandle;

use super::read_chunk::{How, Loaded, Loader, LocalCopy, is_not_found};
use super::verify::{ChunkLocation, ReadMode};
use super::{ChunkStore, ObjectId, StoreError};
use crate::chunk_tree::ChunkTree;
use crate::compress::Compression;
use crate::pack::PackId;
use crate::{ChunkId, TenantId};

const BATCH: i64 = 32;

/// How few entries of a batch are left, not yet loading, when the next batch is fetched.
const PREFETCH_WHEN_LEFT: usize = 8;

/// The longest manifest [`ChunkStore::whole_manifest`] reads: an object of up to this many
/// chunks has its whole manifest cached for its range reads (2 GiB at the smallest default
/// chunk, 128 KiB).
pub const WHOLE_MANIFEST_ENTRIES: u64 = 16 * 1024;

/// How many chunks of a read load at once: the one being sent and the next ones, fetched
/// from their copies and verified on other cores meanwhile. Chunks are 2 MiB at most, so a
/// read holds at most this many of them in memory.
const READ_AHEAD: usize = 3;

/// The columns of a manifest batch, in the order [`Entry::from_row`] reads them, over
/// `object_chunks oc`; `$node` stands for this node's id.
const ENTRY_COLUMNS: &str = "oc.logical_offset, oc.chunk_id, c.raw_len, c.stored_len, c.compression, \
     l.pack_id, l.pack_offset, r.state, c.inline_data, c.tree";

/// The joins from `object_chunks oc` that [`ENTRY_COLUMNS`] need: one primary-key lookup per
/// manifest row, whatever the planner thinks of the tables. As plain joins, a statement
/// prepared once per connection could keep a generic plan that hashes the whole `chunks`
/// table for every read (it did, while the table had not been analysed yet: 2,000 rows read
/// per 16 KiB GET); `OFFSET 0` keeps each lateral from being flattened into such a join.
fn entry_joins(node: &str) -> String {
    format!(
        "JOIN LATERAL (SELECT raw_len, stored_len, compression, inline_data, tree FROM chunks \
                       WHERE tenant_id = oc.tenant_id AND id = oc.chunk_id OFFSET 0) c ON true \
         LEFT JOIN LATERAL (SELECT pack_id, pack_offset FROM chunk_locations \
                            WHERE tenant_id = oc.tenant_id AND chunk_id = oc.chunk_id OFFSET 0) l ON true \
         LEFT JOIN LATERAL (SELECT state FROM pack_replicas \
                            WHERE pack_id = l.pack_id AND node_id = {node} OFFSET 0) r ON true"
    )
}

/// A query of the first manifest batch of the object whose id is `object` (an SQL expression)
/// from the entry that holds its byte `from` (an SQL expression: a range's start, or 0), for a
/// `LEFT JOIN LATERAL (...) ON true`; `node` is the parameter of this node's id. A range GET
/// then starts on the entries it reads, with no second query.
pub(crate) fn manifest_head_sql(object: &str, node: &str, from: &str) -> String {
    manifest_batch_sql(&entries_from(object, from), &BATCH.to_string(), node)
}

/// The filter of `object_chunks` rows of the object `object` from the entry that holds its
/// byte `from` on (both SQL expressions). That entry is the last one at or before `from` by
/// the key, read backwards (one index entry): as `max(logical_offset)`, the generic plan of a
/// prepared statement aggregated every entry before it, some 2,000 for a range near the end of
/// a 1 GiB object.
fn entries_from(object: &str, from: &str) -> String {
    format!(
        "object_id = {object} \
         AND logical_offset >= coalesce((SELECT x.logical_offset FROM object_chunks x \
                                          WHERE x.object_id = {object} AND x.logical_offset <= {from} \
                                          ORDER BY x.logical_offset DESC LIMIT 1), 0)"
    )
}

/// A manifest batch: the first `limit` rows of `object_chunks` that match `filter`, by offset,
/// then joined with what is known of their chunks. The limit comes first, on the
/// `(object_id, logical_offset)` key: joined first, a batch would cost the whole manifest.
fn manifest_batch_sql(filter: &str, limit: &str, node: &str) -> String {
    format!(
        "SELECT {ENTRY_COLUMNS} FROM (SELECT * FROM object_chunks WHERE {filter} \
                                     ORDER BY logical_offset LIMIT {limit}) oc {} \
         ORDER BY oc.logical_offset",
        entry_joins(node)
    )
}

/// The first manifest entries of an object, read with the query that found it
/// ([`manifest_head_sql`]), so that a read starts without another catalog round trip. Cheap
/// to clone (the entries are shared), for the read cache.
#[derive(Clone)]
pub struct ManifestHead {
    object: ObjectId,
    entries: Arc<[Entry]>,
}

impl std::fmt::Debug for ManifestHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestHead")
            .field("object", &self.object)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl ManifestHead {
    /// The entries in `rows` of `object` of `tenant`, from column `at` on, in the order of
    /// [`manifest_head_sql`]. Rows without an entry (a LEFT JOIN's nulls) are skipped.
    pub(crate) fn from_rows(
        rows: &[tokio_postgres::Row],
        at: usize,
        tenant: TenantId,
        object: ObjectId,
    ) -> Self {
        let entries = rows
            .iter()
            .filter(|row| row.get::<_, Option<i64>>(at).is_some())
            .map(|row| Entry::from_row(row, at, tenant))
            .collect::<Vec<_>>()
            .into();
        ManifestHead { object, entries }
    }

    /// The whole manifest of an empty object (no entries), for tests of what holds heads.
    #[cfg(test)]
    pub(crate) fn of_empty_object(object: ObjectId) -> Self {
        ManifestHead { object, entries: Arc::new([]) }
    }

    /// The whole manifest of an object of one chunk of `size` bytes, kept inline in the
    /// catalog or (`located`) in pack 1, for tests of what holds heads.
    #[cfg(test)]
    pub(crate) fn of_one_chunk(object: ObjectId, size: u64, located: bool) -> Self {
        let (tenant, chunk) = (TenantId(1), ChunkId([7; 32]));
        let location = located.then_some(ChunkLocation {
            tenant,
            chunk,
            pack: PackId(1),
            offset: crate::pack::PACK_HEADER_LEN,
            raw_len: size as u32,
            stored_len: size as u32,
            compression: Compression::None,
        });
        let inline = (!located)
            .then(|| Inline { compression: Compression::None, data: Bytes::from(vec![0; size as usize]) });
        let entry = Entry {
            logical_offset: 0,
            raw_len: size,
            location,
            local: LocalCopy::Sound,
            chunk,
            inline,
            tree: None,
        };
        ManifestHead { object, entries: Arc::new([entry]) }
    }

    /// Whether these entries are the object's whole manifest, for an object of `size` bytes:
    /// from byte 0, each where the last one ended, to the end.
    pub fn is_whole(&self, size: u64) -> bool {
        let mut end = 0;
        for entry in self.entries.iter() {
            if entry.logical_offset != end {
                return false;
            }
            end += entry.raw_len;
        }
        end == size
    }

    /// Whether every chunk of these entries is kept inline in the catalog (no location).
    pub fn is_inline(&self) -> bool {
        self.entries.iter().all(|entry| entry.inline.is_some())
    }

    /// About how many bytes of memory the head holds (its inline chunks' bytes, and the rest).
    pub fn weight(&self) -> u64 {
        let entries = self.entries.iter().map(|entry| {
            let inline = entry.inline.as_ref().map_or(0, |inline| inline.data.len());
            let tree = entry.tree.as_ref().map_or(0, ChunkTree::weight);
            (std::mem::size_of::<Entry>() + inline + tree) as u64
        });
        std::mem::size_of::<Self>() as u64 + entries.sum::<u64>()
    }
}

/// A range read in progress.
pub struct ObjectRead {
    /// The object's full size.
    pub size: u64,
    /// The range being streamed.
    pub range: Range<u64>,
    /// The bytes of `range`, in order.
    pub stream: BoxStream<'static, Result<Bytes, StoreError>>,
}

impl std::fmt::Debug for ObjectRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRead").field("size", &self.size).field("range", &self.range).finish()
    }
}

/// One manifest entry with its chunk's location on this node.
#[derive(Clone)]
struct Entry {
    logical_offset: u64,
    raw_len: u64,
    location: Option<ChunkLocation>,
    /// This node's copy of the chunk's pack, if any.
    local: LocalCopy,
    chunk: ChunkId,
    /// The chunk's stored bytes, when the catalog keeps them inline.
    inline: Option<Inline>,
    /// The values that verify part of it, for an uncompressed chunk of more than one block.
    tree: Option<ChunkTree>,
}

/// A chunk kept in the catalog, as stored there.
#[derive(Clone)]
struct Inline {
    compression: Compression,
    data: Bytes,
}

impl Entry {
    /// The raw bytes of a chunk kept inline, verified against its id; `None` for a chunk in a
    /// pack.
    fn inline_raw(&self, store: &ChunkStore, tenant: TenantId) -> Option<Result<Bytes, StoreError>> {
        let inline = self.inline.as_ref()?;
        Some(store.check_inline(tenant, self.chunk, self.raw_len as u32, inline.compression, &inline.data))
    }

    /// A row of [`ENTRY_COLUMNS`], from column `at` on.
    fn from_row(row: &tokio_postgres::Row, at: usize, tenant: TenantId) -> Self {
        let chunk = ChunkId::from_slice(row.get(at + 1)).unwrap_or(ChunkId([0; 32]));
        let pack: Option<i64> = row.get(at + 5);
        let offset: Option<i64> = row.get(at + 6);
        let compression = Compression::from_code(row.get(at + 4)).unwrap_or(Compression::None);
        let raw_len = row.get::<_, i32>(at + 2) as u32;
        let location = pack.zip(offset).map(|(pack, offset)| ChunkLocation {
            tenant,
            chunk,
            pack: PackId(pack),
            offset: offset as u64,
            raw_len,
            stored_len: row.get::<_, i32>(at + 3) as u32,
            compression,
        });
        let local = match row.get::<_, Option<&str>>(at + 7) {
            None => LocalCopy::None,
            Some("damaged") => LocalCopy::Damaged,
            Some(_) => LocalCopy::Sound,
        };
        let inline =
            row.get::<_, Option<Vec<u8>>>(at + 8).map(|data| Inline { compression, data: Bytes::from(data) });
        let tree = row
            .get::<_, Option<&[u8]>>(at + 9)
            .and_then(|bytes| ChunkTree::from_bytes(bytes, u64::from(raw_len)));
        Entry {
            logical_offset: row.get::<_, i64>(at) as u64,
            raw_len: u64::from(raw_len),
            location,
            local,
            chunk,
            inline,
            tree,
        }
    }
}

struct Cursor {
    store: ChunkStore,
    tenant: TenantId,
    object: ObjectId,
    pos: u64,
    end: u64,
    /// Manifest entries fetched and not yet loading.
    batch: VecDeque<Entry>,
    /// Where the next manifest batch starts: the end of the last entry taken from a batch.
    fetched_to: u64,
    /// The range's entries of the head the read started from, not yet in `batch`.
    head: Option<(Arc<[Entry]>, Range<usize>)>,
    /// The batch after `batch`, being fetched while this one's chunks load, so that a long read
    /// does not stop for a catalog round trip at every batch.
    prefetch: Option<JoinHandle<Result<Vec<Entry>, StoreError>>>,
    /// The entries of the range being loaded, in order, at most [`READ_AHEAD`].
    ahead: VecDeque<Ahead>,
    retried_at: Option<u64>,
    loader: Loader,
}

/// An entry of the range with its chunk loading (none for a chunk kept inline).
struct Ahead {
    entry: Entry,
    load: Option<JoinHandle<Loaded>>,
    /// Where in the chunk the loaded bytes start (not 0 when only a span of it loads).
    base: u64,
}

impl Drop for Cursor {
    /// A read given up (the client went away) stops fetching what it will not send.
    fn drop(&mut self) {
        for ahead in &self.ahead {
            if let Some(load) = &ahead.load {
                load.abort();
            }
        }
        if let Some(prefetch) = &self.prefetch {
            prefetch.abort();
        }
    }
}

impl ChunkStore {
    /// The size of `object`.
    ///
    /// # Errors
    /// [`StoreError::NoSuchObject`] when the tenant has no such object.
    pub async fn object_size(&self, tenant: TenantId, object: ObjectId) -> Result<u64, StoreError> {
        let client = self.inner.pool.get().await?;
        let row = client
            .query_opt("SELECT size FROM objects WHERE id = $1 AND tenant_id = $2", &[&object.0, &tenant.0])
            .await?
            .ok_or(StoreError::NoSuchObject(object.0))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Streams `range` of `object` (the whole object when `None`).
    ///
    /// # Errors
    /// [`StoreError::NoSuchObject`] and [`StoreError::InvalidRange`] at once; integrity and
    /// I/O errors as items of the stream, after which it ends. No byte of a chunk that fails
    /// verification is ever yielded.
    pub async fn read(
        &self,
        tenant: TenantId,
        object: ObjectId,
        range: Option<Range<u64>>,
    ) -> Result<ObjectRead, StoreError> {
        let size = self.object_size(tenant, object).await?;
        self.read_sized(tenant, object, size, range)
    }

    /// [`ChunkStore::read`] of an object whose size the caller already knows (one catalog
    /// query fewer); a wrong size fails the stream as truncated or overlong, never silently.
    ///
    /// # Errors
    /// [`StoreError::InvalidRange`] at once; the rest as items of the stream.
    pub fn read_sized(
        &self,
        tenant: TenantId,
        object: ObjectId,
        size: u64,
        range: Option<Range<u64>>,
    ) -> Result<ObjectRead, StoreError> {
        self.read_from_head(tenant, object, size, range, None)
    }

    /// [`ChunkStore::read_sized`] that starts from `head`, the first manifest entries read with
    /// the object (no catalog query for a range they cover).
    ///
    /// # Errors
    /// See [`ChunkStore::read_sized`].
    pub fn read_from_head(
        &self,
        tenant: TenantId,
        object: ObjectId,
        size: u64,
        range: Option<Range<u64>>,
        head: Option<ManifestHead>,
    ) -> Result<ObjectRead, StoreError> {
        let range = range.unwrap_or(0..size);
        check_range(&range, size)?;
        // Only the entries of the range: from the one that holds its first byte to its end, by
        // binary search (a cached head may be a whole manifest of thousands), taken a batch at a
        // time as the read goes; the catalog is asked for what the head does not hold.
        let head = head.filter(|head| head.object == object).map(|head| {
            let first = head.entries.partition_point(|e| e.logical_offset + e.raw_len <= range.start);
            let end = head.entries.partition_point(|e| e.logical_offset < range.end).max(first);
            (head.entries, first..end)
        });
        let cursor = Cursor {
            store: self.clone(),
            tenant,
            object,
            pos: range.start,
            end: range.end,
            fetched_to: range.start,
            batch: VecDeque::new(),
            head,
            prefetch: None,
            ahead: VecDeque::new(),
            retried_at: None,
            loader: Loader::new(self.clone()),
        };
        let stream = stream::try_unfold(cursor, |mut cursor| async move {
            match cursor.next_piece().await? {
                Some(piece) => Ok(Some((piece, cursor))),
                None => Ok(None),
            }
        });
        Ok(ObjectRead { size, range, stream: stream.boxed() })
    }
}

impl ChunkStore {
    /// The whole manifest of `object` of `tenant`, up to [`WHOLE_MANIFEST_ENTRIES`] entries (past
    /// that, its first ones: not whole), for the read cache.
    ///
    /// # Errors
    /// Catalog errors.
    pub async fn whole_manifest(
        &self,
        tenant: TenantId,
        object: ObjectId,
    ) -> Result<ManifestHead, StoreError> {
        let client = self.inner.pool.get().await?;
        let sql = manifest_batch_sql("object_id = $1", &WHOLE_MANIFEST_ENTRIES.to_string(), "$2");
        // Prepared once per connection, as the other manifest reads.
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &[&object.0, &self.inner.node.0]).await?;
        Ok(ManifestHead::from_rows(&rows, 0, tenant, object))
    }

    /// Whether the whole manifest of an object of `size` bytes should fit in
    /// [`WHOLE_MANIFEST_ENTRIES`]: its chunks are at least the configured minimum, but the last
    /// of each part (a manifest that turns out longer is not kept).
    pub fn manifest_may_be_read_whole(&self, size: u64) -> bool {
        let min = self.inner.config.chunk_sizes.min.max(1) as u64;
        size / min < WHOLE_MANIFEST_ENTRIES
    }

    /// The bytes `range` of `object` (of `size` bytes) at once, verified, when `head` is its
    /// whole manifest with every chunk kept inline: no task, no channel, no catalog query (a
    /// small object's GET). `None` when `head` is not that; the caller streams instead.
    pub fn read_inline(
        &self,
        tenant: TenantId,
        object: ObjectId,
        size: u64,
        range: Range<u64>,
        head: &ManifestHead,
    ) -> Option<Result<Vec<Bytes>, StoreError>> {
        if head.object != object || !head.is_inline() || !head.is_whole(size) {
            return None;
        }
        if let Err(err) = check_range(&range, size) {
            return Some(Err(err));
        }
        let mut pieces = Vec::new();
        for entry in head.entries.iter() {
            let (start, end) = (entry.logical_offset, entry.logical_offset + entry.raw_len);
            if start >= range.end || end <= range.start {
                continue;
            }
            let raw = match entry.inline_raw(self, tenant)? {
                Ok(raw) => raw,
                Err(err) => return Some(Err(err)),
            };
            let from = range.start.saturating_sub(start) as usize;
            let to = (range.end.min(end) - start) as usize;
            pieces.push(raw.slice(from..to.min(raw.len())));
        }
        Some(Ok(pieces))
    }
}

/// Refuses a range that is not within an object of `size` bytes.
fn check_range(range: &Range<u64>, size: u64) -> Result<(), StoreError> {
    if range.start > range.end || range.end > size {
        return Err(StoreError::InvalidRange { start: range.start, end: range.end, size });
    }
    Ok(())
}

impl Cursor {
    async fn next_piece(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            if self.pos >= self.end {
                return Ok(None);
            }
            self.load_ahead().await?;
            let Some(Ahead { entry, load, base }) = self.ahead.pop_front() else {
                return Err(StoreError::Task(format!("the manifest of object {} ends early", self.object.0)));
            };
            let raw = match (entry.inline_raw(&self.store, self.tenant), load) {
                (Some(raw), _) => raw?,
                (None, None) => return Err(StoreError::ChunkUnavailable { chunk: entry.chunk }),
                (None, Some(load)) => match load.await?? {
                    Ok(raw) => raw,
                    // GC may have moved the chunk and deleted the old pack since the batch was
                    // fetched: look the location up once more.
                    Err(err) if is_not_found(&err) && self.retried_at != Some(self.pos) => {
                        self.retried_at = Some(self.pos);
                        self.restart_at_pos();
                        continue;
                    }
                    Err(err) => return Err(err),
                },
            };
            if let Some(piece) = self.slice(entry.logical_offset + base, raw) {
                return Ok(Some(piece));
            }
        }
    }

    /// Starts loading the range's next entries until [`READ_AHEAD`] are loading, fetching
    /// manifest batches as needed.
    async fn load_ahead(&mut self) -> Result<(), StoreError> {
        while self.ahead.len() < READ_AHEAD {
            if self.batch.is_empty() && !self.batch_from_head() {
                if self.fetched_to >= self.end {
                    return Ok(());
                }
                // The prefetch started where this batch ended, which is `fetched_to` now.
                let fetched = match self.prefetch.take() {
                    Some(next) => next.await??,
                    None => self.fetch_batch(self.fetched_to).await?,
                };
                self.batch.extend(fetched);
                if self.batch.is_empty() {
                    return Ok(());
                }
            }
            let Some(entry) = self.batch.pop_front() else { return Ok(()) };
            self.fetched_to = self.fetched_to.max(entry.logical_offset + entry.raw_len);
            self.prefetch_when_low();
            let first_wanted =
                self.ahead.back().map_or(self.pos, |last| last.entry.logical_offset + last.entry.raw_len);
            if entry.logical_offset + entry.raw_len <= first_wanted && entry.raw_len > 0 {
                continue;
            }
            if entry.logical_offset >= self.end {
                self.batch.clear();
                self.fetched_to = self.end;
                return Ok(());
            }
            let (load, base) = match (&entry.inline, entry.location) {
                (None, Some(location)) => {
                    let from = first_wanted.saturating_sub(entry.logical_offset);
                    let to = (self.end - entry.logical_offset).min(u64::from(location.raw_len));
                    let how = self.how(&entry, from..to);
                    let base = how.span.as_ref().map_or(0, |(_, span)| span.start);
                    (Some(self.loader.spawn(location, entry.local, how)), base)
                }
                _ => (None, 0),
            };
            self.ahead.push_back(Ahead { entry, load, base });
        }
        Ok(())
    }

    /// Forgets what was fetched and loading, to fetch the manifest again from `pos`.
    fn restart_at_pos(&mut self) {
        for ahead in self.ahead.drain(..) {
            if let Some(load) = ahead.load {
                load.abort();
            }
        }
        self.batch.clear();
        self.head = None;
        if let Some(prefetch) = self.prefetch.take() {
            prefetch.abort();
        }
        self.fetched_to = self.pos;
    }

    /// Moves the next batch of the head's entries into `batch`; `false` when none are left.
    fn batch_from_head(&mut self) -> bool {
        let Some((entries, left)) = &mut self.head else { return false };
        let taken = left.start..(left.start + BATCH as usize).min(left.end);
        left.start = taken.end;
        self.batch.extend(entries[taken].iter().cloned());
        if left.start >= left.end {
            self.head = None;
        }
        !self.batch.is_empty()
    }

    /// Starts fetching the batch after this one once this one runs low, unless the range ends
    /// within it.
    fn prefetch_when_low(&mut self) {
        let Some(last) = self.batch.back() else { return };
        let batch_end = last.logical_offset + last.raw_len;
        let pending = self.prefetch.is_some() || self.head.is_some();
        if pending || self.batch.len() > PREFETCH_WHEN_LEFT || batch_end >= self.end {
            return;
        }
        let fetch = self.fetch_batch(batch_end);
        self.prefetch = Some(tokio::spawn(fetch));
    }

    /// How to load `wanted` (bytes of the chunk) of `entry`. Part of an uncompressed chunk
    /// with a tree is loaded and verified alone, in whole blocks, from this node's copy. Part
    /// of any other chunk loads it whole: a small part keeps a verified copy in the cache, so
    /// the next small range of the same chunk costs no hashing; a larger one is served from
    /// the map.
    fn how(&self, entry: &Entry, wanted: Range<u64>) -> How {
        let retried = self.retried_at == Some(self.pos);
        let whole = wanted.start == 0 && wanted.end >= entry.raw_len;
        if let (false, LocalCopy::Sound, Some(tree)) = (whole, entry.local, &entry.tree) {
            let span = ChunkTree::covering(&wanted, entry.raw_len);
            return How { mode: ReadMode::Whole, span: Some((tree.clone(), span)), retried };
        }
        let small = wanted.end.saturating_sub(wanted.start) * 4 < entry.raw_len;
        let mode = if small { ReadMode::Partial } else { ReadMode::Whole };
        How { mode, span: None, retried }
    }

    /// The part of `raw` (the chunk's bytes from logical offset `base` on) that the range still
    /// wants, moving past it; `None` when it wants none of it.
    fn slice(&mut self, base: u64, raw: Bytes) -> Option<Bytes> {
        let from = self.pos.saturating_sub(base) as usize;
        let to = (self.end.saturating_sub(base) as usize).min(raw.len());
        if from >= to {
            return None;
        }
        self.pos = base + to as u64;
        Some(raw.slice(from..to))
    }

    /// Fetches the manifest batch from the entry that holds byte `from` on, up to the range's
    /// end (a future that owns what it needs, so that it can run as a task of its own).
    fn fetch_batch(&self, from: u64) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + use<> {
        let (store, tenant, object, end) = (self.store.clone(), self.tenant, self.object, self.end);
        async move {
            let client = store.inner.pool.get().await?;
            let sql = manifest_batch_sql(
                &format!("{} AND logical_offset < $4", entries_from("$1", "$2")),
                "$5",
                "$3",
            );
            // Prepared once per connection: planning the joins costs more than running them.
            let statement = client.prepare_cached(&sql).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&object.0, &(from as i64), &store.inner.node.0, &(end as i64), &BATCH];
            let rows = client.query(&statement, &params).await?;
            Ok(rows.iter().map(|row| Entry::from_row(row, 0, tenant)).collect())
        }
    }
}
