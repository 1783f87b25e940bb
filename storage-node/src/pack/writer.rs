//! Appending chunk records to an open pack.
//!
//! Writes go to the page cache; every few MiB the writer asks the kernel to start writeback
//! (`sync_file_range`), so the final `fdatasync` before the catalog commit has little left to
//! do and the disk works while the CPU chunks and hashes the next bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{PACK_HEADER_LEN, PACK_MAGIC, PACK_VERSION, PackId, RECORD_HEADER_LEN, RecordHeader, pack_path};

/// The header that opens pack `id`, written by node `node`.
pub fn pack_header(id: PackId, node: i32) -> [u8; PACK_HEADER_LEN as usize] {
    let mut header = [0u8; PACK_HEADER_LEN as usize];
    header[0..8].copy_from_slice(PACK_MAGIC);
    header[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&id.0.to_le_bytes());
    header[24..28].copy_from_slice(&node.to_le_bytes());
    header
}

const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

/// An open pack that this process appends to.
#[derive(Debug)]
pub struct PackWriter {
    id: PackId,
    path: PathBuf,
    file: File,
    len: u64,
    writeback_from: u64,
    /// Set after a failed write: the file's tail is unknown, so nothing more is appended.
    broken: bool,
}

impl PackWriter {
    /// Creates the file of pack `id` under `dir` with its header, and makes the new directory
    /// entry durable.
    ///
    /// # Errors
    /// The I/O error; `ENOSPC` among them.
    pub fn create(dir: &Path, id: PackId, node: i32) -> io::Result<Self> {
        let path = pack_path(dir, id);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        let header = pack_header(id, node);
        let written =
            file.write_all(&header).and_then(|()| file.sync_all()).and_then(|()| File::open(dir)?.sync_all());
        if let Err(err) = written {
            let _ = std::fs::remove_file(&path);
            return Err(err);
        }
        Ok(PackWriter {
            id,
            path,
            file,
            len: PACK_HEADER_LEN,
            writeback_from: PACK_HEADER_LEN,
            broken: false,
        })
    }

    pub fn id(&self) -> PackId {
        self.id
    }

    /// The file's length: everything appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == PACK_HEADER_LEN
    }

    /// Whether a write failed, so the pack takes no more records.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and returns its offset.
    ///
    /// # Errors
    /// The I/O error. The writer is then broken: it takes no more records.
    pub fn append(&mut self, header: &RecordHeader, data: &[u8]) -> io::Result<u64> {
        if self.broken {
            return Err(io::Error::other("the pack writer is broken by an earlier error"));
        }
        let offset = self.len;
        let written = self.file.write_all(&header.encode()).and_then(|()| self.file.write_all(data));
        if let Err(err) = written {
            self.broken = true;
            return Err(err);
        }
        self.len += RECORD_HEADER_LEN + data.len() as u64;
        if self.len - self.writeback_from >= WRITEBACK_EVERY {
            self.start_writeback();
        }
        Ok(offset)
    }

    /// Makes everything appended so far durable.
    ///
    /// # Errors
    /// The I/O error; the writer is then broken.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data().inspect_err(|_| self.broken = true)
    }

    /// Asks the kernel to start writing the dirty range back, without waiting for it.
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let len = (self.len - self.writeback_from) as i64;
        // SAFETY: the fd is open for the call's duration; the call only schedules writeback
        // and its failure is harmless (the final fdatasync still makes the data durable).
        let _ = unsafe {
            libc::sync_file_range(
                self.file.as_fd().as_raw_fd(),
                self.writeback_from as i64,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        self.writeback_from = self.len;
    }
}
