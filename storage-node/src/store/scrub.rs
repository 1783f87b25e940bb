//! Scrub: re-read every chunk on this node (or a random sample), verify it, and report the
//! damaged ones with the objects that use them.

use super::verify::{ChunkLocation, LOCATIONS_SELECT, ReadMode};
use super::{ChunkStore, StoreError};
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
    /// Verifies the chunks of this node. `sample` is the share to check, from 0 to 1.
    ///
    /// # Errors
    /// Catalog errors. Damage is reported, not returned as an error.
    pub async fn scrub(&self, sample: f64) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
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
        Ok(report)
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
