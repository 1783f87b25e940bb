//! Committing an ingested upload: one catalog transaction records the chunks it added (their
//! locations, or their bytes inline), the manifest, the reference counts, the released pins and
//! a delta of the tenant's usage.
//!
//! An upload of one chunk locks no row but that chunk's, so one tenant's small uploads commit
//! side by side (see `usage` for how the quota stays exact). A larger upload locks the tenant's
//! row first, which serialises it with the tenant's other changes to chunks: their rows are
//! then always locked in one order (no deadlocks).

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction as PoolTransaction;
use tokio_postgres::Transaction;

use crate::catalog::query_prepared_opt;
use tokio_postgres::types::{ToSql, Type};

use super::ingest::{Ingested, NewChunk, Place, PutOptions};
use super::placing::domain_owner_sql;
use super::usage::{admit, needs_exclusive};
use super::{ChunkStore, ObjectId, StoreError};
use crate::chunk_tree::ChunkTree;
use crate::pack::RECORD_HEADER_LEN;
use crate::{ChunkId, TenantId};

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

impl ChunkStore {
    /// Stores `source` as a new object of `tenant` and commits it.
    ///
    /// # Errors
    /// See [`ChunkStore::ingest`] and [`ChunkStore::commit`]. In every case no object is created.
    pub async fn put<R>(
        &self,
        tenant: TenantId,
        source: R,
        options: PutOptions,
    ) -> Result<StoredObject, StoreError>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let ingested = self.ingest(tenant, source, options).await?;
        let commit_once = |shared: bool| {
            let ingested = &ingested;
            async move {
                let mut client = self.inner.pool.get().await?;
                let txn = client.transaction().await?;
                let stored = self.commit_locking(&txn, ingested, shared).await?;
                txn.commit().await?;
                Ok(stored)
            }
        };
        let committed = match commit_once(true).await {
            Err(err) if needs_exclusive(&err) => commit_once(false).await,
            committed => committed,
        };
        if committed.is_err() {
            self.abandon(ingested).await;
        }
        committed
    }

    /// Records `ingested` as a new object in `txn`. The caller commits `txn`, and calls
    /// [`ChunkStore::abandon`] if it does not.
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`] when concurrent uploads used up the quota meanwhile;
    /// [`StoreError::ChunkVanished`] when a pinned chunk was collected anyway (a pin outlived).
    pub async fn commit(
        &self,
        txn: &PoolTransaction<'_>,
        ingested: &Ingested,
    ) -> Result<StoredObject, StoreError> {
        self.commit_locking(txn, ingested, false).await
    }

    /// [`ChunkStore::commit`] that, for an upload of one chunk far from the tenant's quota,
    /// only shares the tenant's lock with other commits (see `usage`) instead of taking it
    /// alone: the caller must not rely on that lock to order anything else in `txn`, nor change
    /// the tenant's chunks there except through [`ChunkStore::release_in`].
    ///
    /// # Errors
    /// See [`ChunkStore::commit`]; and when the tenant is near its quota, an error for which
    /// [`needs_exclusive`] holds: roll `txn` back and run it again with [`ChunkStore::commit`].
    pub async fn commit_shared(
        &self,
        txn: &PoolTransaction<'_>,
        ingested: &Ingested,
    ) -> Result<StoredObject, StoreError> {
        self.commit_locking(txn, ingested, true).await
    }

    async fn commit_locking(
        &self,
        txn: &PoolTransaction<'_>,
        ingested: &Ingested,
        may_share: bool,
    ) -> Result<StoredObject, StoreError> {
        let uses = count_uses(&ingested.manifest);
        admit(txn, ingested.tenant, ingested.size, may_share && ingested.may_share_tenant_lock()).await?;
        if ingested.all_inline() {
            return commit_inline(txn, ingested, &uses).await;
        }
        let (inserted_raw, inserted_stored, inserted_count) =
            self.commit_new_chunks(txn, ingested, &uses).await?;
        add_references(txn, ingested.tenant, &ingested.reused, &uses).await?;
        release_pins(txn, ingested.tenant, &ingested.pins).await?;
        let manifest = ManifestParams::of(ingested);
        // The object, its manifest and the usage delta in one statement (one round trip).
        let object: i64 = txn
            .query_typed_one(
                &format!(
                    "WITH {}, \
                     d AS (INSERT INTO tenant_usage_deltas (tenant_id, objects, logical_bytes, unique_raw_bytes, stored_bytes) \
                           VALUES ($1, 1, $2, $7, $8)) \
                     SELECT id FROM o",
                    record_object("")
                ),
                &[manifest.params(), vec![(&inserted_raw, Type::INT8), (&inserted_stored, Type::INT8)]].concat(),
            )
            .await?
            .get(0);
        Ok(StoredObject {
            id: ObjectId(object),
            size: ingested.size,
            chunk_count: ingested.manifest.len() as u32,
            new_chunks: inserted_count,
            new_stored_bytes: inserted_stored as u64,
            md5: ingested.md5,
        })
    }

    /// Gives up on an ingested upload that will not be committed: its pins are released at
    /// once (its new bytes are garbage for GC either way).
    pub async fn abandon(&self, ingested: Ingested) {
        self.unpin(ingested.tenant, &ingested.pins).await;
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
        let columns = ChunkColumns::of(chunks, uses);
        let rows = txn
            .query_typed(
                "INSERT INTO chunks (tenant_id, id, raw_len, stored_len, compression, refcount, inline_data, tree) \
                 SELECT $1, * FROM unnest($2::bytea[], $3::int4[], $4::int4[], $5::int2[], $6::int8[], $7::bytea[], $8::bytea[]) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET refcount = chunks.refcount + EXCLUDED.refcount \
                 RETURNING id, (xmax = 0) AS inserted",
                &[vec![(&tenant as &(dyn ToSql + Sync), Type::INT8)], columns.params()].concat(),
            )
            .await?;
        let inserted: HashSet<Vec<u8>> =
            rows.iter().filter(|row| row.get::<_, bool>(1)).map(|row| row.get(0)).collect();
        let added: Vec<_> = chunks.iter().filter(|c| inserted.contains(c.id.0.as_slice())).collect();
        let raw_sum = added.iter().map(|c| i64::from(c.raw_len)).sum();
        let stored_sum = added.iter().map(|c| i64::from(c.stored_len)).sum();
        let count = added.len() as u32;
        let added: Vec<_> = added
            .into_iter()
            .filter_map(|c| match c.place {
                Place::Pack { pack, offset } => Some((c, pack, offset)),
                Place::Inline(_) => None,
            })
            .collect();
        if added.is_empty() {
            return Ok((raw_sum, stored_sum, count));
        }
        let mut written: Vec<i64> = added.iter().map(|(_, pack, _)| pack.0).collect();
        written.sort_unstable();
        written.dedup();
        check_packs_take_commits(txn, ingested.tenant, self.inner.node, &written).await?;
        let ids: Vec<Vec<u8>> = added.iter().map(|(c, _, _)| c.id.0.to_vec()).collect();
        let packs: Vec<i64> = added.iter().map(|(_, pack, _)| pack.0).collect();
        let offsets: Vec<i64> = added.iter().map(|(_, _, offset)| *offset as i64).collect();
        let record_bytes: Vec<i64> =
            added.iter().map(|(c, _, _)| RECORD_HEADER_LEN as i64 + i64::from(c.stored_len)).collect();
        txn.execute(
            "INSERT INTO chunk_locations (tenant_id, chunk_id, pack_id, pack_offset) \
             SELECT $1, c, p, o FROM unnest($2::bytea[], $3::int8[], $4::int8[]) AS v(c, p, o)",
            &[&tenant, &ids, &packs, &offsets],
        )
        .await?;
        // The pack's size follows its committed records, so that a pack whose writer died is
        // sealed at a length every copy holds, even with no copy on the writer's own disk.
        let ends: Vec<i64> =
            offsets.iter().zip(&record_bytes).map(|(offset, bytes)| offset + bytes).collect();
        txn.execute(
            "UPDATE packs SET live_bytes = packs.live_bytes + v.bytes, size = greatest(packs.size, v.reach) \
             FROM (SELECT p, sum(b)::int8 AS bytes, max(e) AS reach \
                   FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS u(p, b, e) GROUP BY p) AS v \
             WHERE packs.id = v.p",
            &[&packs, &record_bytes, &ends],
        )
        .await?;
        Ok((raw_sum, stored_sum, count))
    }

    /// Drops `pins` of an upload that will not commit. A failure here only delays GC until
    /// the pins expire.
    pub(super) async fn unpin(&self, tenant: TenantId, pins: &HashMap<ChunkId, i32>) {
        if pins.is_empty() {
            return;
        }
        let unpinned = async {
            let mut client = self.inner.pool.get().await?;
            let txn = client.transaction().await?;
            release_pins(&txn, tenant, pins).await?;
            txn.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(err) = unpinned {
            tracing::warn!(error = %err, "could not unpin the chunks of an abandoned upload; they expire instead");
        }
    }
}

impl Ingested {
    /// Whether this upload may commit under the tenant's lock shared (see `usage`): only a
    /// one-chunk object may, since a large body of one repeated chunk has one distinct chunk
    /// too, and concurrent ones would each see the quota free.
    fn may_share_tenant_lock(&self) -> bool {
        self.manifest.len() <= 1 && self.size <= super::usage::QUOTA_LOCK_MARGIN
    }

    /// Whether every chunk this upload adds goes inline, and it reuses (and pinned) none.
    fn all_inline(&self) -> bool {
        self.new_chunks.iter().all(|c| matches!(c.place, Place::Inline(_)))
            && self.reused.is_empty()
            && self.pins.is_empty()
    }

    /// Whether [`Ingested::in_one_statement`] has it (a check that copies nothing).
    pub(crate) fn fits_one_statement(&self) -> bool {
        self.may_share_tenant_lock() && self.all_inline()
    }

    /// This upload as parameters of one statement that commits it with no transaction around
    /// it ([`OneStatementCommit`]), when it is small enough: one chunk at most, inline, nothing
    /// reused or pinned.
    pub(crate) fn in_one_statement(&self) -> Option<OneStatementCommit<'_>> {
        self.fits_one_statement().then(|| OneStatementCommit {
            manifest: ManifestParams::of(self),
            columns: ChunkColumns::of(&self.new_chunks, &count_uses(&self.manifest)),
            room: super::usage::shared_room(self.size),
        })
    }
}

/// A small upload's commit as parameters `$1` to `$14` of a statement that also binds it
/// (`model::one_statement`), and the pieces of SQL that commit it there: its chunks
/// ([`OneStatementCommit::chunks`]), its object and manifest ([`record_object`]) and its usage
/// delta ([`OneStatementCommit::usage_delta`]), each gated on the statement's CTE `go`.
pub(crate) struct OneStatementCommit<'a> {
    manifest: ManifestParams,
    columns: ChunkColumns<'a>,
    room: i64,
}

impl OneStatementCommit<'_> {
    /// The tenant's id.
    pub const TENANT: &'static str = "$1";
    /// The room the tenant's quota must leave for the commit to share the tenant's lock
    /// (`usage::shared_room`).
    pub const ROOM: &'static str = "$14";
    /// How many parameters it takes.
    pub const PARAMS: usize = 14;

    /// The logical bytes the object adds to its tenant's usage.
    pub fn size(&self) -> u64 {
        self.manifest.size as u64
    }

    /// The CTEs `c` (the chunks inserted or referenced) and `added` (what they added), when
    /// the CTE `go` has a row.
    pub fn chunks() -> String {
        inline_chunks_cte(", go")
    }

    /// The CTE `d`: the usage delta, after `added`.
    pub fn usage_delta() -> String {
        usage_delta_cte(", go")
    }

    /// The parameters, in order.
    pub fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        [self.manifest.params(), self.columns.params(), vec![(&self.room as &(dyn ToSql + Sync), Type::INT8)]]
            .concat()
    }
}

/// The CTEs `o` (the new object; its id) and `m` (its manifest) over the parameters of
/// [`ManifestParams::params`]; `from` is the object's `FROM` clause (empty: one row).
pub(crate) fn record_object(from: &str) -> String {
    format!(
        "o AS (INSERT INTO objects (tenant_id, size, chunk_count, md5) SELECT $1, $2, $3, $4 {from} RETURNING id), \
         m AS (INSERT INTO object_chunks (object_id, logical_offset, tenant_id, chunk_id) \
               SELECT o.id, v.o, $1, v.c FROM o, unnest($5::int8[], $6::bytea[]) AS v(o, c))"
    )
}

/// The CTEs `c` and `added` of an inline commit over the parameters of [`ManifestParams`]
/// and [`ChunkColumns`] (`$1` to `$13`); `and_from` adds to the insert's `FROM` (a gate).
/// A chunk the tenant has already (inline or in a pack) only gains references.
fn inline_chunks_cte(and_from: &str) -> String {
    format!(
        "c AS (INSERT INTO chunks (tenant_id, id, raw_len, stored_len, compression, refcount, inline_data, tree) \
               SELECT $1, v.* FROM unnest($7::bytea[], $8::int4[], $9::int4[], $10::int2[], $11::int8[], $12::bytea[], $13::bytea[]) AS v{and_from} \
               ON CONFLICT (tenant_id, id) DO UPDATE SET refcount = chunks.refcount + EXCLUDED.refcount \
               RETURNING raw_len, stored_len, (xmax = 0) AS inserted), \
         added AS (SELECT count(*) FILTER (WHERE inserted)::int8 AS n, \
                          coalesce(sum(raw_len) FILTER (WHERE inserted), 0)::int8 AS raw, \
                          coalesce(sum(stored_len) FILTER (WHERE inserted), 0)::int8 AS stored FROM c)"
    )
}

/// The CTE `d`: an inline commit's usage delta, from `added`; `and_from` as in
/// [`inline_chunks_cte`].
fn usage_delta_cte(and_from: &str) -> String {
    format!(
        "d AS (INSERT INTO tenant_usage_deltas (tenant_id, objects, logical_bytes, unique_raw_bytes, stored_bytes) \
               SELECT $1, 1, $2, raw, stored FROM added{and_from})"
    )
}

/// An upload's object row and manifest as statement parameters `$1` to `$6`.
struct ManifestParams {
    tenant: i64,
    size: i64,
    chunk_count: i32,
    md5: Option<Vec<u8>>,
    offsets: Vec<i64>,
    ids: Vec<Vec<u8>>,
}

impl ManifestParams {
    fn of(ingested: &Ingested) -> Self {
        let (offsets, ids) = ingested.manifest.iter().map(|(offset, id)| (*offset, id.0.to_vec())).unzip();
        ManifestParams {
            tenant: ingested.tenant.0,
            size: ingested.size as i64,
            chunk_count: ingested.manifest.len() as i32,
            md5: ingested.md5.map(|d| d.to_vec()),
            offsets,
            ids,
        }
    }

    fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        vec![
            (&self.tenant, Type::INT8),
            (&self.size, Type::INT8),
            (&self.chunk_count, Type::INT4),
            (&self.md5, Type::BYTEA),
            (&self.offsets, Type::INT8_ARRAY),
            (&self.ids, Type::BYTEA_ARRAY),
        ]
    }
}

/// New chunks' rows as array parameters: ids, raw and stored lengths, compressions,
/// reference counts (their uses in the manifest) and inline bytes (null for a pack's chunk).
struct ChunkColumns<'a> {
    ids: Vec<Vec<u8>>,
    raw: Vec<i32>,
    stored: Vec<i32>,
    compression: Vec<i16>,
    refs: Vec<i64>,
    inline: Vec<Option<&'a [u8]>>,
    trees: Vec<Option<Vec<u8>>>,
}

impl<'a> ChunkColumns<'a> {
    fn of(chunks: &'a [NewChunk], uses: &HashMap<ChunkId, i64>) -> Self {
        ChunkColumns {
            ids: chunks.iter().map(|c| c.id.0.to_vec()).collect(),
            raw: chunks.iter().map(|c| c.raw_len).collect(),
            stored: chunks.iter().map(|c| c.stored_len).collect(),
            compression: chunks.iter().map(|c| c.compression as i16).collect(),
            refs: chunks.iter().map(|c| uses.get(&c.id).copied().unwrap_or(1)).collect(),
            inline: chunks
                .iter()
                .map(|c| match &c.place {
                    Place::Inline(data) => Some(data.as_ref()),
                    Place::Pack { .. } => None,
                })
                .collect(),
            trees: chunks.iter().map(|c| c.tree.as_ref().map(ChunkTree::to_bytes)).collect(),
        }
    }

    fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        vec![
            (&self.ids, Type::BYTEA_ARRAY),
            (&self.raw, Type::INT4_ARRAY),
            (&self.stored, Type::INT4_ARRAY),
            (&self.compression, Type::INT2_ARRAY),
            (&self.refs, Type::INT8_ARRAY),
            (&self.inline, Type::BYTEA_ARRAY),
            (&self.trees, Type::BYTEA_ARRAY),
        ]
    }
}

/// Commits an upload whose new chunks all go inline (and that reuses none it pinned): the
/// chunks, the object, its manifest and the usage delta in one statement.
async fn commit_inline(
    txn: &PoolTransaction<'_>,
    ingested: &Ingested,
    uses: &HashMap<ChunkId, i64>,
) -> Result<StoredObject, StoreError> {
    let columns = ChunkColumns::of(&ingested.new_chunks, uses);
    let manifest = ManifestParams::of(ingested);
    let row = query_prepared_opt(
        txn,
        &format!(
            "WITH {}, {}, {} SELECT o.id, added.n, added.stored FROM o, added",
            inline_chunks_cte(""),
            record_object(""),
            usage_delta_cte("")
        ),
        &[manifest.params(), columns.params()].concat(),
    )
    .await?
    .ok_or_else(|| StoreError::Task("the inline commit returned no row".into()))?;
    Ok(StoredObject {
        id: ObjectId(row.get(0)),
        size: ingested.size,
        chunk_count: ingested.manifest.len() as u32,
        new_chunks: row.get::<_, i64>(1) as u32,
        new_stored_bytes: row.get::<_, i64>(2) as u64,
        md5: ingested.md5,
    })
}

/// Refuses to commit chunks into `packs` unless each one is still open (no node retired it
/// meanwhile) and in the tenant's placement domain now (its policy did not change meanwhile).
/// The pack rows are locked (in id order, as the `live_bytes` update that follows needs them)
/// until the commit: two uploads into one pack take turns instead of deadlocking on an upgrade.
async fn check_packs_take_commits(
    txn: &Transaction<'_>,
    tenant: TenantId,
    node: super::NodeId,
    packs: &[i64],
) -> Result<(), StoreError> {
    let row = txn
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE p.state <> 'open' \
                                         OR p.owner_tenant_id IS DISTINCT FROM ({})) \
                 FROM (SELECT * FROM packs WHERE id = ANY($2) ORDER BY id FOR NO KEY UPDATE) p",
                domain_owner_sql("$1", "$3")
            ),
            &[&tenant.0, &packs, &node.0],
        )
        .await?;
    if row.get::<_, i64>(0) > 0 {
        return Err(StoreError::Retry(
            "the packs this upload wrote were retired or left its placement while it ran".into(),
        ));
    }
    Ok(())
}

/// Adds this upload's references to chunks the tenant already had.
async fn add_references(
    txn: &Transaction<'_>,
    tenant: TenantId,
    reused: &HashSet<ChunkId>,
    uses: &HashMap<ChunkId, i64>,
) -> Result<(), StoreError> {
    if reused.is_empty() {
        return Ok(());
    }
    let (ids, counts): (Vec<Vec<u8>>, Vec<i64>) =
        reused.iter().map(|id| (id.0.to_vec(), uses.get(id).copied().unwrap_or(1))).unzip();
    let found = txn
        .query(
            "UPDATE chunks c SET refcount = c.refcount + v.n \
             FROM unnest($2::bytea[], $3::int8[]) AS v(id, n) \
             WHERE c.tenant_id = $1 AND c.id = v.id RETURNING c.id",
            &[&tenant.0, &ids, &counts],
        )
        .await?;
    if found.len() != ids.len() {
        let found: HashSet<Vec<u8>> = found.iter().map(|r| r.get(0)).collect();
        let missing = ids.iter().find(|id| !found.contains(*id)).and_then(|id| ChunkId::from_slice(id));
        return Err(StoreError::ChunkVanished { chunk: missing.unwrap_or(ChunkId([0; 32])) });
    }
    Ok(())
}

/// Releases the pins an upload took.
async fn release_pins(
    txn: &Transaction<'_>,
    tenant: TenantId,
    pins: &HashMap<ChunkId, i32>,
) -> Result<(), StoreError> {
    if pins.is_empty() {
        return Ok(());
    }
    let (ids, counts): (Vec<Vec<u8>>, Vec<i32>) = pins.iter().map(|(id, n)| (id.0.to_vec(), *n)).unzip();
    txn.execute(
        "UPDATE chunks c SET pin_count = greatest(c.pin_count - v.n, 0) \
         FROM unnest($2::bytea[], $3::int4[]) AS v(id, n) WHERE c.tenant_id = $1 AND c.id = v.id",
        &[&tenant.0, &ids, &counts],
    )
    .await?;
    Ok(())
}

fn count_uses(manifest: &[(i64, ChunkId)]) -> HashMap<ChunkId, i64> {
    let mut uses = HashMap::new();
    for (_, id) in manifest {
        *uses.entry(*id).or_insert(0) += 1;
    }
    uses
}
