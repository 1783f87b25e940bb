//! Pack files: append-only files of chunk records, bounded in size.
//!
//! ```text
//! pack   := header record*
//! header := "SILOPACK" version:u32le reserved:u32le pack_id:u64le node_id:u32le reserved:u32le
//! record := "CHNK" compression:u8 reserved:[u8;3] tenant_id:u64le chunk_id:[u8;32]
//!           raw_len:u32le stored_len:u32le  data:[u8; stored_len]
//! ```
//!
//! Every record names its tenant and chunk, so a pack can be checked (and the catalog rebuilt)
//! from the file alone. The catalog points at a record's first byte. Packs are only appended
//! to and never rewritten in place: GC copies live records into a new pack and retires the old
//! file whole.

mod reader;
pub mod scan;
mod writer;

use std::path::{Path, PathBuf};

pub use reader::{PackMaps, RecordView};
pub use writer::{PackWriter, pack_header};

use crate::compress::Compression;
use crate::{ChunkId, TenantId};

/// A pack's id in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub i64);

pub(crate) const PACK_MAGIC: &[u8; 8] = b"SILOPACK";
pub(crate) const PACK_VERSION: u32 = 1;
/// The size of a pack's header; the first record follows it.
pub const PACK_HEADER_LEN: u64 = 32;
pub(crate) const RECORD_MAGIC: &[u8; 4] = b"CHNK";
/// The size of a record header; the chunk's bytes follow it.
pub const RECORD_HEADER_LEN: u64 = 56;

/// Removes the partial transfers (files named with [`INCOMING_INFIX`]) a crash left in `packs_dir`; returns how many.
///
/// # Errors
/// The I/O error of reading the directory.
pub fn sweep_incoming(packs_dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(packs_dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(|name| name.contains(INCOMING_INFIX)) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Checks a pack file's header (its first [`PACK_HEADER_LEN`] bytes): the magic, the format
/// version and the pack id it must name. Returns the id of the node that wrote it, or the offset
/// and a description of what is wrong.
pub(crate) fn check_pack_header(header: &[u8], expected: PackId) -> Result<i32, (u64, &'static str)> {
    if header.len() < PACK_HEADER_LEN as usize {
        return Err((0, "shorter than a pack header"));
    }
    let field = |range: std::ops::Range<usize>| header.get(range).ok_or((0, "shorter than a pack header"));
    if field(0..8)? != PACK_MAGIC {
        return Err((0, "not a pack file"));
    }
    if field(8..12)? != PACK_VERSION.to_le_bytes() {
        return Err((8, "an unknown pack version"));
    }
    if field(16..24)? != expected.0.to_le_bytes() {
        return Err((16, "the header names another pack id"));
    }
    let node = field(24..28)?;
    Ok(i32::from_le_bytes([node[0], node[1], node[2], node[3]]))
}

/// The path of pack `id` under `dir`.
pub fn pack_path(dir: &Path, id: PackId) -> PathBuf {
    dir.join(format!("{:016x}.pack", id.0))
}

/// What follows a pack's file name in the name of a copy still being received from a peer.
pub const INCOMING_INFIX: &str = ".pack.incoming-";

/// The path of a copy of pack `id` being received under `dir`; `tag` tells concurrent copies
/// apart. Such files are never read as packs ([`scan::pack_ids_on_disk`] skips them).
pub fn incoming_pack_path(dir: &Path, id: PackId, tag: u64) -> PathBuf {
    dir.join(format!("{:016x}{INCOMING_INFIX}{tag:016x}", id.0))
}

/// A record header, as written before each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub compression: Compression,
    pub tenant: TenantId,
    pub chunk: ChunkId,
    pub raw_len: u32,
    pub stored_len: u32,
}

impl RecordHeader {
    pub(crate) fn encode(&self) -> [u8; RECORD_HEADER_LEN as usize] {
        let mut out = [0u8; RECORD_HEADER_LEN as usize];
        out[0..4].copy_from_slice(RECORD_MAGIC);
        out[4] = self.compression as u8;
        out[8..16].copy_from_slice(&self.tenant.0.to_le_bytes());
        out[16..48].copy_from_slice(&self.chunk.0);
        out[48..52].copy_from_slice(&self.raw_len.to_le_bytes());
        out[52..56].copy_from_slice(&self.stored_len.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < RECORD_HEADER_LEN as usize || &bytes[0..4] != RECORD_MAGIC {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        Some(RecordHeader {
            compression: Compression::from_code(i16::from(bytes[4]))?,
            tenant: TenantId(i64::from_le_bytes(bytes[8..16].try_into().ok()?)),
            chunk: ChunkId::from_slice(&bytes[16..48])?,
            raw_len: u32_at(48),
            stored_len: u32_at(52),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_header_round_trips() {
        let header = RecordHeader {
            compression: Compression::Zstd,
            tenant: TenantId(77),
            chunk: ChunkId([9; 32]),
            raw_len: 1 << 20,
            stored_len: 12345,
        };
        assert_eq!(RecordHeader::decode(&header.encode()), Some(header));
        let mut damaged = header.encode();
        damaged[0] = b'X';
        assert_eq!(RecordHeader::decode(&damaged), None);
    }
}
