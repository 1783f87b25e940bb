//! Reading chunk records out of packs through shared memory maps.
//!
//! Each pack is mapped once and shared. A record's bytes are handed out as `Bytes` that borrow
//! the map, without a copy. Mapping is safe here because packs are append-only and never
//! truncated; a retired pack is unlinked, which leaves existing maps valid. Once the last view
//! of a record is dropped, its pages leave the process's resident set (they stay in the page
//! cache), so streaming a large object does not grow the process.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::Mmap;

use super::{PackId, RECORD_HEADER_LEN, RecordHeader, pack_path};

/// How many packs stay mapped at once.
const MAX_MAPPED: usize = 512;

/// A record's bytes in a pack's map. When the last `Bytes` view of them is dropped, their
/// pages leave this process's resident set (they stay in the page cache).
struct RecordPages {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for RecordPages {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

impl Drop for RecordPages {
    fn drop(&mut self) {
        const PAGE: usize = 4096;
        let (start, end) = (self.start.div_ceil(PAGE) * PAGE, self.end / PAGE * PAGE);
        if end > start {
            // SAFETY: a read-only shared file mapping; MADV_DONTNEED only unmaps the pages,
            // which fault back in from the file with the same contents if touched again.
            let _ = unsafe {
                self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

/// A record read from a pack: its header and its stored bytes (a view of the map).
#[derive(Debug, Clone)]
pub struct RecordView {
    pub header: RecordHeader,
    pub data: Bytes,
}

/// The maps of the packs in one directory.
#[derive(Debug)]
pub struct PackMaps {
    dir: PathBuf,
    maps: Mutex<HashMap<PackId, Arc<Mmap>>>,
}

impl PackMaps {
    pub fn new(dir: &Path) -> Self {
        PackMaps { dir: dir.to_path_buf(), maps: Mutex::new(HashMap::new()) }
    }

    /// The record at `offset` of pack `pack`.
    ///
    /// # Errors
    /// `NotFound` when the pack file is gone, `InvalidData` when no valid record header is
    /// there, `UnexpectedEof` when the record runs past the end of the file.
    pub fn record(&self, pack: PackId, offset: u64) -> io::Result<RecordView> {
        let mut map = self.map(pack, false)?;
        let header_end = offset + RECORD_HEADER_LEN;
        if header_end > map.len() as u64 {
            map = self.map(pack, true)?;
        }
        let header_bytes = map.get(offset as usize..header_end as usize).ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "the record header is past the end of the pack")
        })?;
        let header = RecordHeader::decode(header_bytes).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "no valid record header at this offset")
        })?;
        let data_end = header_end + u64::from(header.stored_len);
        if data_end > map.len() as u64 {
            map = self.map(pack, true)?;
            if data_end > map.len() as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the record runs past the end of the pack",
                ));
            }
        }
        let data = Bytes::from_owner(RecordPages { map, start: header_end as usize, end: data_end as usize });
        Ok(RecordView { header, data })
    }

    /// Drops the map of `pack` (after its file is deleted).
    pub fn forget(&self, pack: PackId) {
        self.lock().remove(&pack);
    }

    fn map(&self, pack: PackId, refresh: bool) -> io::Result<Arc<Mmap>> {
        if !refresh && let Some(map) = self.lock().get(&pack) {
            return Ok(map.clone());
        }
        let file = File::open(pack_path(&self.dir, pack))?;
        // SAFETY: packs are append-only and never truncated or rewritten in place (see the
        // module docs), so the mapped bytes do not change under the map.
        let map = Arc::new(unsafe { Mmap::map(&file)? });
        let mut maps = self.lock();
        if maps.len() >= MAX_MAPPED {
            maps.clear();
        }
        maps.insert(pack, map.clone());
        Ok(map)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PackId, Arc<Mmap>>> {
        self.maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
