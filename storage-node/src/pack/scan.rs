//! Reading a pack from its own bytes, without the catalog: which packs are on disk, and which
//! records each one holds.
//!
//! Every record names its tenant and chunk, so the packs describe themselves. Disaster recovery
//! relies on that: when a restored catalog (or an offline manifest) names a pack or an offset
//! that compaction has since moved, the chunk is found again by its id in the packs that exist
//! (see `store::reconcile` and `store::offline`).
//!
//! A scan stops at a torn tail (the partial record a crash left behind). Ranges that GC punched
//! out (`fallocate(PUNCH_HOLE)`) read as zeros up to the next live record, so the scan skips
//! zeros and carries on there.

use std::fs::File;
use std::io;
use std::path::Path;

use memmap2::Mmap;

use super::{PACK_HEADER_LEN, PackId, RECORD_HEADER_LEN, RecordHeader, check_pack_header};

/// The ids of the pack files in `dir` (files named `<16 hex digits>.pack`), ascending.
///
/// # Errors
/// The I/O error of reading the directory.
pub fn pack_ids_on_disk(dir: &Path) -> io::Result<Vec<PackId>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".pack")) else { continue };
        if stem.len() != 16 {
            continue;
        }
        if let Ok(id) = i64::from_str_radix(stem, 16)
            && id > 0
        {
            ids.push(PackId(id));
        }
    }
    ids.sort();
    Ok(ids)
}

/// What a pack file holds, read from the file alone.
#[derive(Debug, Clone)]
pub struct PackScan {
    pub id: PackId,
    pub node: i32,
    /// The file's length.
    pub len: u64,
    /// Each record's offset and header, in file order.
    pub records: Vec<(u64, RecordHeader)>,
}

/// Reads the header of the pack file at `path` and the headers of all its records.
///
/// # Errors
/// `InvalidData` when the file is not a pack (or names another pack id than `expected`);
/// other I/O errors as they come.
pub fn scan_pack(path: &Path, expected: PackId) -> io::Result<PackScan> {
    let file = File::open(path)?;
    // SAFETY: packs are append-only and never rewritten in place; a concurrent append only
    // adds bytes past the mapped length.
    let map = unsafe { Mmap::map(&file)? };
    let bytes: &[u8] = &map;
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    let node = check_pack_header(bytes, expected).map_err(|(_, what)| invalid(what))?;
    Ok(PackScan { id: expected, node, len: bytes.len() as u64, records: records(bytes) })
}

/// The records of a pack's bytes (header included), up to a torn tail.
fn records(bytes: &[u8]) -> Vec<(u64, RecordHeader)> {
    let len = bytes.len();
    let mut out = Vec::new();
    let mut at = PACK_HEADER_LEN as usize;
    while at + RECORD_HEADER_LEN as usize <= len {
        if bytes[at] == 0 {
            // A punched-out dead range: zeros up to the next live record.
            match bytes[at..].iter().position(|byte| *byte != 0) {
                Some(skip) => {
                    at += skip;
                    continue;
                }
                None => break,
            }
        }
        let Some(header) = RecordHeader::decode(&bytes[at..at + RECORD_HEADER_LEN as usize]) else { break };
        let end = at + RECORD_HEADER_LEN as usize + header.stored_len as usize;
        if end > len {
            break;
        }
        out.push((at as u64, header));
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::pack::PackWriter;
    use crate::{ChunkId, TenantId};

    fn header(n: u8, len: u32) -> RecordHeader {
        RecordHeader {
            compression: Compression::None,
            tenant: TenantId(1),
            chunk: ChunkId([n; 32]),
            raw_len: len,
            stored_len: len,
        }
    }

    #[test]
    fn a_scan_finds_every_record_past_punched_ranges_and_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = PackWriter::create(dir.path(), PackId(7), 3).expect("create");
        let first = writer.append(&header(1, 5000), &[1; 5000]).expect("append");
        let second = writer.append(&header(2, 100), &[2; 100]).expect("append");
        let third = writer.append(&header(3, 10), &[3; 10]).expect("append");
        writer.sync().expect("sync");
        let path = writer.path().to_path_buf();
        drop(writer);
        // The first record is dead and punched out (zeros); a torn record follows the last.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[first as usize..second as usize].fill(0);
        bytes.extend_from_slice(&header(4, 1000).encode());
        bytes.extend_from_slice(&[4; 10]);
        std::fs::write(&path, &bytes).expect("write");

        let scan = scan_pack(&path, PackId(7)).expect("scan");
        assert_eq!((scan.node, scan.len), (3, bytes.len() as u64));
        let found: Vec<_> = scan.records.iter().map(|(offset, h)| (*offset, h.chunk.0[0])).collect();
        assert_eq!(found, [(second, 2), (third, 3)]);
        assert_eq!(pack_ids_on_disk(dir.path()).expect("ids"), [PackId(7)]);
        assert!(scan_pack(&path, PackId(8)).is_err(), "a file under another pack's name is refused");
    }
}
