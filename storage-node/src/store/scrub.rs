//! Scrub: re-read every chunk on this node (or a random sample), verify it, and report the
//! damaged ones with the objects that use them. The chunks the catalog keeps inline are
//! verified too (by every node's scrub: they are no node's), and reported with pack 0.

use super::verify::{ChunkLocation, LOCATIONS_SELECT, ReadMode};
use super::{ChunkStore, StoreError};
use crate::compress::Compression;
use crate::{ChunkId, TenantId};

/// What a scrub found.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScrubReport {
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub damaged: Vec<DamagedChunk>,
}

/// A chunk that failed verification.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DamagedChunk {
    pub tenant_id: i64,
    pub chunk: String,
    pub pack: i64,
    pub offset: u64,
    pub error: String,
    /// The objects whose bytes include this chunk.
    pub objects: Vec<i64>,
}

const PAGE: i64 = 256;

impl ChunkStore {
    /// Verifies the chunks of this node's copies of packs. `sample` is the share to check, from
    /// 0 to 1. A copy with a damaged chunk is marked damaged, for repair.
    ///
    /// # Errors
    /// Catalog errors. Damage is reported, not returned as an error.
    pub async fn scrub(&self, sample: f64) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
        let mut damaged_packs = Vec::new();
        let mut after = (0i64, -1i64);
        loop {
            let client = self.inner.pool.get().await?;
            let rows = client
                .query(
                    &format!(
                        "{LOCATIONS_SELECT} WHERE l.pack_id IN (SELECT pack_id FROM pack_replicas WHERE node_id = $1) AND (l.pack_id, l.pack_offset) > ($2, $3) \
                         ORDER BY l.pack_id, l.pack_offset LIMIT $4"
                    ),
                    &[&self.inner.node.0, &after.0, &after.1, &PAGE],
                )
                .await?;
            drop(client);
            let Some(last) = rows.last() else { break };
            after = (last.get(2), last.get(3));
            let page: Vec<ChunkLocation> = rows
                .iter()
                .map(ChunkLocation::from_row)
                .filter(|_| sample >= 1.0 || rand::random::<f64>() < sample)
                .collect();
            let store = self.clone();
            let checked = tokio::task::spawn_blocking(move || {
                page.into_iter()
                    .map(|at| {
                        let result = store.read_record_verified(&at, ReadMode::Audit).map(|_| ());
                        if result.is_err() {
                            store.forget_verified(at.tenant, at.chunk);
                        }
                        (at, result)
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
            for (at, result) in checked {
                report.chunks_checked += 1;
                report.bytes_checked += u64::from(at.stored_len);
                if let Err(err) = result {
                    tracing::error!(error = %err, "scrub found a damaged chunk");
                    // This node's copy of the pack is damaged: reads prefer the other copies,
                    // and repair replaces it from a sound one.
                    if !damaged_packs.contains(&at.pack) {
                        damaged_packs.push(at.pack);
                        self.mark_damaged(at.pack, self.inner.node).await;
                    }
                    let objects = self.objects_using(at.tenant, at.chunk).await?;
                    report.damaged.push(DamagedChunk {
                        tenant_id: at.tenant.0,
                        chunk: at.chunk.to_string(),
                        pack: at.pack.0,
                        offset: at.offset,
                        error: err.to_string(),
                        objects,
                    });
                }
            }
        }
        self.scrub_inline(sample, &mut report).await?;
        Ok(report)
    }

    /// Verifies the chunks kept inline in the catalog (a `sample` share of them).
    async fn scrub_inline(&self, sample: f64, report: &mut ScrubReport) -> Result<(), StoreError> {
        let mut after = (0i64, Vec::<u8>::new());
        loop {
            let client = self.inner.pool.get().await?;
            let rows = client
                .query(
                    "SELECT tenant_id, id, raw_len, compression, inline_data FROM chunks \
                     WHERE inline_data IS NOT NULL AND (tenant_id, id) > ($1, $2) ORDER BY tenant_id, id LIMIT $3",
                    &[&after.0, &after.1, &PAGE],
                )
                .await?;
            drop(client);
            let Some(last) = rows.last() else { return Ok(()) };
            after = (last.get(0), last.get(1));
            for row in rows.iter().filter(|_| sample >= 1.0 || rand::random::<f64>() < sample) {
                let tenant = TenantId(row.get(0));
                let chunk = ChunkId::from_slice(row.get(1)).unwrap_or(ChunkId([0; 32]));
                let compression = Compression::from_code(row.get(3)).unwrap_or(Compression::None);
                let data = bytes::Bytes::from(row.get::<_, Vec<u8>>(4));
                report.chunks_checked += 1;
                report.bytes_checked += data.len() as u64;
                if let Err(err) =
                    self.check_inline(tenant, chunk, row.get::<_, i32>(2) as u32, compression, &data)
                {
                    tracing::error!(error = %err, "scrub found a damaged inline chunk");
                    let objects = self.objects_using(tenant, chunk).await?;
                    report.damaged.push(DamagedChunk {
                        tenant_id: tenant.0,
                        chunk: chunk.to_string(),
                        pack: 0,
                        offset: 0,
                        error: err.to_string(),
                        objects,
                    });
                }
            }
        }
    }

    async fn objects_using(&self, tenant: TenantId, chunk: ChunkId) -> Result<Vec<i64>, StoreError> {
        let client = self.inner.pool.get().await?;
        let rows = client
            .query(
                "SELECT DISTINCT object_id FROM object_chunks WHERE tenant_id = $1 AND chunk_id = $2 ORDER BY 1",
                &[&tenant.0, &chunk.0.as_slice()],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}
