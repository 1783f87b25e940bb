//! Checking a received pack file before it is kept: its header names the pack it claims to be,
//! and every record is whole, has a valid header and holds bytes that hash (keyed BLAKE3, with
//! its tenant's chunk key) to the chunk id it names, decompressed where it is compressed.
//!
//! The file is read once, front to back, through a small buffer: records are hashed as they
//! stream by (compressed ones through a streaming decoder), so memory stays bounded whatever a
//! record's header claims. Zeros between records are ranges that GC punched out of the sender's
//! copy and are skipped, as `pack::scan` skips them. Unlike a scan, a torn tail is not tolerated:
//! a pack on the wire must end at the end of a record (or of a punched range).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::ServerSecret;
use crate::compress::Compression;
use crate::pack::{PACK_HEADER_LEN, PackId, RECORD_HEADER_LEN, RecordHeader, check_pack_header};

const READ_BUFFER: usize = 256 * 1024;

/// What a verified pack holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedPack {
    pub len: u64,
    pub records: u64,
}

/// Checks the pack file at `path`, which must be pack `expected`. Blocking.
///
/// # Errors
/// `InvalidData` saying what is wrong and at which offset; other I/O errors as they come.
pub fn verify_pack_file(path: &Path, expected: PackId, secret: &ServerSecret) -> io::Result<VerifiedPack> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    let mut header = [0u8; PACK_HEADER_LEN as usize];
    reader.read_exact(&mut header).map_err(|_| invalid(0, "shorter than a pack header"))?;
    check_pack_header(&header, expected).map_err(|(offset, what)| invalid(offset, what))?;
    let mut at = PACK_HEADER_LEN;
    let mut records = 0;
    loop {
        let buffered = reader.fill_buf()?;
        let Some(first) = buffered.first() else { break };
        if *first == 0 {
            let zeros = buffered.iter().position(|byte| *byte != 0).unwrap_or(buffered.len());
            reader.consume(zeros);
            at += zeros as u64;
            continue;
        }
        let mut bytes = [0u8; RECORD_HEADER_LEN as usize];
        reader.read_exact(&mut bytes).map_err(|_| invalid(at, "a record header is cut short"))?;
        let record = RecordHeader::decode(&bytes).ok_or_else(|| invalid(at, "not a record header"))?;
        let end = at + RECORD_HEADER_LEN + u64::from(record.stored_len);
        if end > len {
            return Err(invalid(at, "the record runs past the end of the file"));
        }
        check_record(&mut reader, &record, secret).map_err(|detail| invalid(at, &detail))?;
        at = end;
        records += 1;
    }
    Ok(VerifiedPack { len, records })
}

/// Reads one record's stored bytes from `reader` and checks them against `record` (appends check
/// their records with it too, as they stream).
pub(super) fn check_record(
    reader: &mut impl BufRead,
    record: &RecordHeader,
    secret: &ServerSecret,
) -> Result<(), String> {
    let mut stored = reader.take(u64::from(record.stored_len));
    let mut hasher = secret.chunk_key(record.tenant).hasher();
    let raw_len = match record.compression {
        Compression::None if record.raw_len != record.stored_len => {
            return Err("an uncompressed record whose raw and stored lengths differ".into());
        }
        Compression::None => io::copy(&mut stored, &mut hasher),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(&mut stored)
            .and_then(|decoder| io::copy(&mut decoder.take(u64::from(record.raw_len) + 1), &mut hasher)),
    }
    .map_err(|err| format!("the record's bytes do not read back: {err}"))?;
    if raw_len != u64::from(record.raw_len) {
        return Err(format!("the record holds {raw_len} raw bytes, its header says {}", record.raw_len));
    }
    if stored.limit() != 0 {
        return Err("the record's compressed bytes end before its stored length".into());
    }
    if hasher.finalize().as_bytes() != &record.chunk.0 {
        return Err("the record's bytes do not hash to its chunk id".into());
    }
    Ok(())
}

fn invalid(offset: u64, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("at offset {offset}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;
    use crate::compress::CompressionPolicy;
    use crate::pack::PackWriter;

    /// A pack of two records, one compressed; returns its path and the record offsets.
    fn pack(dir: &Path, secret: &ServerSecret) -> (std::path::PathBuf, Vec<u64>) {
        let mut writer = PackWriter::create(dir, PackId(9), 1).expect("create");
        let tenant = TenantId(4);
        let key = secret.chunk_key(tenant);
        let text = b"a compressible line of text\n".repeat(400);
        let noise: Vec<u8> = (0..3000u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut offsets = Vec::new();
        for raw in [&text[..], &noise[..]] {
            let compressed = CompressionPolicy::default().compress(raw);
            let (compression, stored) = match &compressed {
                Some(bytes) => (Compression::Zstd, &bytes[..]),
                None => (Compression::None, raw),
            };
            let header = RecordHeader {
                compression,
                tenant,
                chunk: key.chunk_id(raw),
                raw_len: raw.len() as u32,
                stored_len: stored.len() as u32,
            };
            offsets.push(writer.append(&header, stored).expect("append"));
        }
        writer.sync().expect("sync");
        assert_eq!(std::fs::read(writer.path()).expect("read")[offsets[0] as usize + 4], 1, "compressed");
        (writer.path().to_path_buf(), offsets)
    }

    #[test]
    fn a_whole_pack_verifies_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = ServerSecret::from_bytes([8; 32]);
        let (path, offsets) = pack(dir.path(), &secret);
        let good = std::fs::read(&path).expect("read");
        let verified = verify_pack_file(&path, PackId(9), &secret).expect("a good pack verifies");
        assert_eq!(verified, VerifiedPack { len: good.len() as u64, records: 2 });
        assert!(verify_pack_file(&path, PackId(10), &secret).is_err(), "another pack's id");
        let other = ServerSecret::from_bytes([9; 32]);
        assert!(verify_pack_file(&path, PackId(9), &other).is_err(), "another cluster's keys");

        let refused = |bytes: &[u8], why: &str| {
            std::fs::write(&path, bytes).expect("write");
            let err = verify_pack_file(&path, PackId(9), &secret).expect_err(why);
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{why}: {err}");
        };
        let flipped = |at: usize| {
            let mut bytes = good.clone();
            bytes[at] ^= 0x20;
            bytes
        };
        let (first, second) = (offsets[0] as usize, offsets[1] as usize);
        refused(&flipped(3), "the pack magic");
        refused(&flipped(first + 1), "a record's magic");
        refused(&flipped(first + 20), "a record's chunk id");
        refused(&flipped(first + 70), "a compressed record's bytes");
        refused(&flipped(second + 100), "an uncompressed record's bytes");
        refused(&flipped(good.len() - 1), "the last byte");
        refused(&good[..good.len() - 1], "a torn tail");
        refused(&good[..second + 10], "a record header cut short");
        refused(&good[..20], "a header cut short");
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        refused(&trailing, "junk after the last record");

        // A range punched out by GC (zeros) is skipped, also at the end.
        let mut punched = good.clone();
        punched[first..second].fill(0);
        punched.extend_from_slice(&[0; 100]);
        std::fs::write(&path, &punched).expect("write");
        assert_eq!(verify_pack_file(&path, PackId(9), &secret).expect("punched").records, 1);
    }
}
