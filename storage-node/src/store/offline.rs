//! Reading an object with no catalog: for disaster recovery of the catalog itself.
//!
//! Silo's catalog dump is an object like any other, so reading it back normally needs the
//! catalog it is meant to rebuild. An [`OfflineManifest`], written beside the packs when the
//! dump is taken, lists where each of its chunks is. [`read_offline`] follows it straight to
//! the pack files, and checks every record header and every chunk's keyed BLAKE3 id, so a
//! damaged dump fails loudly instead of restoring a wrong catalog. A chunk that GC compaction
//! moved since the manifest was written is found by its id in the packs' own records. A chunk
//! the catalog keeps inline (a small object's) has no pack: the manifest carries its bytes,
//! checked against its id the same.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::reconcile::{PackIndex, Scan, index_packs};
use super::{ChunkStore, ObjectId, StoreError};
use crate::compress::{Compression, decompress};
use crate::pack::scan::pack_ids_on_disk;
use crate::pack::{PackId, PackMaps};
use crate::{ChunkId, ServerSecret, TenantId};

/// Where an object's chunks are, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineManifest {
    pub tenant: i64,
    pub size: u64,
    pub chunks: Vec<OfflineChunk>,
}

/// One chunk: its id (hex) and its record's place, or its raw bytes (hex) when the catalog
/// keeps it inline (then pack and offset are 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineChunk {
    pub id: String,
    pub pack: i64,
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// Why an object cannot be read offline.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("chunk {index} ({id}) in pack {pack} at {offset}: {message}")]
    Damaged { index: usize, id: String, pack: i64, offset: u64, message: String },
    #[error("the manifest is malformed: {0}")]
    Manifest(String),
    #[error("the object read back as {read} bytes, not the {expected} the manifest records")]
    Size { read: u64, expected: u64 },
    #[error("writing the object out failed: {0}")]
    Sink(std::io::Error),
    #[error("cannot list the pack files to look for moved chunks: {0}")]
    Packs(std::io::Error),
}

impl ChunkStore {
    /// The offline manifest of `object`: where its chunks are (read from this node's copies of
    /// their packs).
    ///
    /// # Errors
    /// [`StoreError::NoSuchObject`]; catalog errors.
    pub async fn offline_manifest(
        &self,
        tenant: TenantId,
        object: ObjectId,
    ) -> Result<OfflineManifest, StoreError> {
        let size = self.object_size(tenant, object).await?;
        let client = self.inner.pool.get().await?;
        let rows = client
            .query(
                "SELECT oc.chunk_id, l.pack_id, l.pack_offset, c.inline_data, c.raw_len, c.compression \
                 FROM object_chunks oc JOIN chunks c ON c.tenant_id = oc.tenant_id AND c.id = oc.chunk_id \
                 LEFT JOIN chunk_locations l ON l.tenant_id = oc.tenant_id AND l.chunk_id = oc.chunk_id \
                 WHERE oc.object_id = $1 AND oc.tenant_id = $2 AND (l.pack_id IS NOT NULL OR c.inline_data IS NOT NULL) \
                 ORDER BY oc.logical_offset",
                &[&object.0, &tenant.0],
            )
            .await?;
        let chunks = rows
            .iter()
            .map(|row| {
                let id = ChunkId::from_slice(row.get(0)).unwrap_or(ChunkId([0; 32]));
                let inline = match row.get::<_, Option<Vec<u8>>>(3) {
                    Some(data) => {
                        let compression = Compression::from_code(row.get(5)).unwrap_or(Compression::None);
                        let raw = self.check_inline(
                            tenant,
                            id,
                            row.get::<_, i32>(4) as u32,
                            compression,
                            &data.into(),
                        )?;
                        Some(hex::encode(raw))
                    }
                    None => None,
                };
                Ok(OfflineChunk {
                    id: hex::encode(id.0),
                    pack: row.get::<_, Option<i64>>(1).unwrap_or(0),
                    offset: row.get::<_, Option<i64>>(2).unwrap_or(0) as u64,
                    inline,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(OfflineManifest { tenant: tenant.0, size, chunks })
    }
}

/// Streams the object `manifest` describes from the packs in `packs_dir` into `sink`,
/// verifying every chunk. Returns the bytes written.
///
/// A chunk that is no longer at its recorded pack and offset (GC compacted that pack since the
/// manifest was written) is found by its id in the packs' own records, and verified the same.
///
/// # Errors
/// [`OfflineError::Damaged`] at the first chunk that is missing or wrong; nothing of it
/// reaches `sink`.
pub fn read_offline(
    packs_dir: &Path,
    secret: &ServerSecret,
    manifest: &OfflineManifest,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, OfflineError> {
    let maps = PackMaps::new(packs_dir);
    let tenant = TenantId(manifest.tenant);
    let key = secret.chunk_key(tenant);
    let ids = manifest
        .chunks
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            hex::decode(&entry.id)
                .ok()
                .and_then(|bytes| ChunkId::from_slice(&bytes))
                .ok_or_else(|| OfflineError::Manifest(format!("chunk {index} has no valid id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Built on the first chunk that moved: where the manifest's chunks have records, newest
    // first; then, if a newest record does not verify, every record on disk.
    let wanted: HashSet<_> = ids.iter().map(|id| (tenant, *id)).collect();
    let mut on_disk: Option<Vec<PackId>> = None;
    let mut quick: Option<PackIndex> = None;
    let mut full: Option<PackIndex> = None;
    let mut written = 0u64;
    for (index_in_manifest, (entry, id)) in manifest.chunks.iter().zip(&ids).enumerate() {
        let load = |pack: PackId, offset: u64| -> Result<Vec<u8>, String> {
            let record = maps.record(pack, offset).map_err(|err| err.to_string())?;
            if record.header.chunk != *id || record.header.tenant != tenant {
                return Err("the record there is another chunk".into());
            }
            let raw = match record.header.compression {
                Compression::None => record.data.to_vec(),
                Compression::Zstd => decompress(&record.data, record.header.raw_len as usize)
                    .map_err(|err| format!("it does not decompress: {err}"))?,
            };
            if key.chunk_id(&raw) != *id {
                return Err("its bytes do not hash to its id".into());
            }
            Ok(raw)
        };
        let elsewhere = |index: &PackIndex| {
            let candidates = index.get(&(tenant, *id)).map(Vec::as_slice).unwrap_or_default();
            candidates.iter().find_map(|(pack, offset)| load(*pack, *offset).ok())
        };
        let loaded = match &entry.inline {
            Some(inline) => hex::decode(inline)
                .map_err(|err| format!("its inline bytes are not hex: {err}"))
                .and_then(|raw| {
                    if key.chunk_id(&raw) == *id {
                        Ok(raw)
                    } else {
                        Err("its bytes do not hash to its id".into())
                    }
                })
                .map_err(|message| OfflineError::Damaged {
                    index: index_in_manifest,
                    id: entry.id.clone(),
                    pack: 0,
                    offset: 0,
                    message,
                })
                .map(Ok)?,
            None => load(PackId(entry.pack), entry.offset),
        };
        let raw = match loaded {
            Ok(raw) => raw,
            Err(message) => {
                if on_disk.is_none() {
                    on_disk = Some(pack_ids_on_disk(packs_dir).map_err(OfflineError::Packs)?);
                }
                let listed = on_disk.as_deref().unwrap_or_default();
                let quick =
                    quick.get_or_insert_with(|| index_packs(packs_dir, listed, &wanted, Scan::UntilFound));
                match elsewhere(quick) {
                    Some(raw) => raw,
                    None => {
                        let full = full
                            .get_or_insert_with(|| index_packs(packs_dir, listed, &wanted, Scan::Everything));
                        elsewhere(full).ok_or_else(|| OfflineError::Damaged {
                            index: index_in_manifest,
                            id: entry.id.clone(),
                            pack: entry.pack,
                            offset: entry.offset,
                            message: format!("{message}; and no other pack holds a good copy"),
                        })?
                    }
                }
            }
        };
        sink(&raw).map_err(OfflineError::Sink)?;
        written += raw.len() as u64;
    }
    if written != manifest.size {
        return Err(OfflineError::Size { read: written, expected: manifest.size });
    }
    Ok(written)
}
