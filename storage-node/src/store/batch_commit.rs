//! Small uploads committed many to a statement: the chunk store's half of the batched PUT
//! (`model::put_batch`). One statement's start-up, plan check, commit and WAL flush are then
//! shared by every upload in it, which is most of what a small commit costs Postgres.
//!
//! [`BatchedCommit`] is an upload reduced to what such a commit writes (it owns its bytes, so it
//! can wait in a queue), [`BatchedCommits`] the batch's columns as array parameters, and
//! [`BatchedCommits::ctes`] the SQL that writes them for the rows the caller admitted: chunks
//! (each distinct chunk once, in key order, so that two batches take chunk rows in one order),
//! objects under ids drawn beforehand (so that each row knows its object without matching
//! `RETURNING` rows back), manifests, and one usage delta per tenant.

use bytes::Bytes;
use tokio_postgres::types::{ToSql, Type};

use super::ingest::{Ingested, Place};
use crate::chunk_tree::ChunkTree;

/// A small upload's commit, owned: its tenant, size, MD5 and its one inline chunk (none for an
/// empty body).
#[derive(Debug, Clone)]
pub(crate) struct BatchedCommit {
    tenant: i64,
    size: i64,
    md5: Option<Vec<u8>>,
    chunk: Option<BatchedChunk>,
}

#[derive(Debug, Clone)]
struct BatchedChunk {
    id: Vec<u8>,
    raw: i32,
    stored: i32,
    compression: i16,
    inline: Bytes,
    tree: Option<Vec<u8>>,
}

impl Ingested {
    /// This upload as a row of a batched commit, when it may commit in one statement
    /// ([`Ingested::in_one_statement`]): one chunk at most, new and inline.
    pub(crate) fn in_batch(&self) -> Option<BatchedCommit> {
        if !self.fits_one_statement() {
            return None;
        }
        let chunk = match (self.manifest.as_slice(), self.new_chunks.as_slice()) {
            ([], []) => None,
            ([(0, id)], [chunk]) if chunk.id == *id => {
                let Place::Inline(inline) = &chunk.place else { return None };
                Some(BatchedChunk {
                    id: id.0.to_vec(),
                    raw: chunk.raw_len,
                    stored: chunk.stored_len,
                    compression: chunk.compression as i16,
                    inline: inline.clone(),
                    tree: chunk.tree.as_ref().map(ChunkTree::to_bytes),
                })
            }
            _ => return None,
        };
        Some(BatchedCommit {
            tenant: self.tenant.0,
            size: self.size as i64,
            md5: self.md5.map(|d| d.to_vec()),
            chunk,
        })
    }
}

impl BatchedCommit {
    /// The logical bytes the object adds to its tenant's usage.
    pub fn size(&self) -> u64 {
        self.size as u64
    }
}

/// A batch's commits as array parameters, one element per row.
pub(crate) struct BatchedCommits<'a> {
    tenants: Vec<i64>,
    sizes: Vec<i64>,
    md5s: Vec<Option<&'a [u8]>>,
    chunks: Vec<Option<&'a [u8]>>,
    raw: Vec<Option<i32>>,
    stored: Vec<Option<i32>>,
    compression: Vec<Option<i16>>,
    inline: Vec<Option<&'a [u8]>>,
    trees: Vec<Option<&'a [u8]>>,
}

impl<'a> BatchedCommits<'a> {
    /// The columns' names in the rows [`BatchedCommits::ctes`] reads, and their types, in the
    /// order of [`BatchedCommits::params`].
    pub const COLUMNS: [(&'static str, Type); 9] = [
        ("tenant", Type::INT8_ARRAY),
        ("size", Type::INT8_ARRAY),
        ("md5", Type::BYTEA_ARRAY),
        ("chunk", Type::BYTEA_ARRAY),
        ("raw", Type::INT4_ARRAY),
        ("stored", Type::INT4_ARRAY),
        ("compression", Type::INT2_ARRAY),
        ("inline", Type::BYTEA_ARRAY),
        ("tree", Type::BYTEA_ARRAY),
    ];

    pub fn of(commits: impl Iterator<Item = &'a BatchedCommit>) -> Self {
        let mut columns = BatchedCommits {
            tenants: Vec::new(),
            sizes: Vec::new(),
            md5s: Vec::new(),
            chunks: Vec::new(),
            raw: Vec::new(),
            stored: Vec::new(),
            compression: Vec::new(),
            inline: Vec::new(),
            trees: Vec::new(),
        };
        for commit in commits {
            let chunk = commit.chunk.as_ref();
            columns.tenants.push(commit.tenant);
            columns.sizes.push(commit.size);
            columns.md5s.push(commit.md5.as_deref());
            columns.chunks.push(chunk.map(|c| c.id.as_slice()));
            columns.raw.push(chunk.map(|c| c.raw));
            columns.stored.push(chunk.map(|c| c.stored));
            columns.compression.push(chunk.map(|c| c.compression));
            columns.inline.push(chunk.map(|c| c.inline.as_ref()));
            columns.trees.push(chunk.and_then(|c| c.tree.as_deref()));
        }
        columns
    }

    /// The parameters, in the order of [`BatchedCommits::COLUMNS`].
    pub fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        let values: [&(dyn ToSql + Sync); 9] = [
            &self.tenants,
            &self.sizes,
            &self.md5s,
            &self.chunks,
            &self.raw,
            &self.stored,
            &self.compression,
            &self.inline,
            &self.trees,
        ];
        values.into_iter().zip(Self::COLUMNS.iter().map(|(_, kind)| kind.clone())).collect()
    }

    /// The CTEs that commit the rows of `rows` (a CTE with [`BatchedCommits::COLUMNS`] and
    /// `object_id`, an id drawn from the objects' sequence): `c` and `added` (the chunks, and
    /// per tenant what they added), `o` (the objects, once the chunks are written), `m` (their
    /// manifests) and `d` (one usage delta per tenant).
    pub fn ctes(rows: &str) -> String {
        format!(
            "c AS (INSERT INTO chunks (tenant_id, id, raw_len, stored_len, compression, refcount, inline_data, tree) \
                   SELECT DISTINCT ON (tenant, chunk) tenant, chunk, raw, stored, compression, \
                          count(*) OVER (PARTITION BY tenant, chunk), inline, tree \
                   FROM {rows} WHERE chunk IS NOT NULL ORDER BY tenant, chunk \
                   ON CONFLICT (tenant_id, id) DO UPDATE SET refcount = chunks.refcount + EXCLUDED.refcount \
                   RETURNING tenant_id, raw_len, stored_len, (xmax = 0) AS inserted), \
             added AS MATERIALIZED (SELECT tenant_id, \
                                           coalesce(sum(raw_len) FILTER (WHERE inserted), 0)::int8 AS raw, \
                                           coalesce(sum(stored_len) FILTER (WHERE inserted), 0)::int8 AS stored \
                                    FROM c GROUP BY tenant_id), \
             chunks_written AS MATERIALIZED (SELECT count(*) FROM added), \
             o AS (INSERT INTO objects (id, tenant_id, size, chunk_count, md5) OVERRIDING SYSTEM VALUE \
                   SELECT r.object_id, r.tenant, r.size, (r.chunk IS NOT NULL)::int4, r.md5 \
                   FROM {rows} r, chunks_written RETURNING id), \
             m AS (INSERT INTO object_chunks (object_id, logical_offset, tenant_id, chunk_id) \
                   SELECT r.object_id, 0, r.tenant, r.chunk FROM {rows} r JOIN o ON o.id = r.object_id \
                   WHERE r.chunk IS NOT NULL), \
             d AS (INSERT INTO tenant_usage_deltas (tenant_id, objects, logical_bytes, unique_raw_bytes, stored_bytes) \
                   SELECT r.tenant, count(*), sum(r.size), coalesce(max(a.raw), 0), coalesce(max(a.stored), 0) \
                   FROM {rows} r LEFT JOIN added a ON a.tenant_id = r.tenant GROUP BY r.tenant)"
        )
    }
}
