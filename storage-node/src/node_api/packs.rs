//! Pack files as the internal API reads and deletes them: a whole file or one byte range of it,
//! streamed from disk (or, for a range of a chunk record's size, read in one call), and an
//! idempotent delete.

use std::io;
use std::ops;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::pack::{PackId, pack_path};

/// A byte range of a pack file, open for reading.
#[derive(Debug)]
pub struct PackRead {
    /// The file, positioned at the range's start and limited to its length.
    pub bytes: tokio::io::Take<tokio::fs::File>,
    /// The range.
    pub span: ops::Range<u64>,
    /// The file's whole length.
    pub len: u64,
}

/// Why a pack cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no pack {0} here")]
    NoSuchPack(i64),
    #[error("the range is outside the pack's {len} bytes")]
    Unsatisfiable { len: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The length of pack `id` under `dir`, or `None` when it is not there.
///
/// # Errors
/// The I/O error of a pack that is there but cannot be read.
pub async fn pack_len(dir: &Path, id: PackId) -> io::Result<Option<u64>> {
    match tokio::fs::metadata(pack_path(dir, id)).await {
        Ok(meta) => Ok(Some(meta.len())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Opens `range` of pack `id` (the whole pack without one).
///
/// # Errors
/// [`ReadError`].
pub async fn open_pack(
    dir: &Path,
    id: PackId,
    range: Option<s3s::dto::Range>,
) -> Result<PackRead, ReadError> {
    let mut file = tokio::fs::File::open(pack_path(dir, id)).await.map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => ReadError::NoSuchPack(id.0),
        _ => ReadError::Io(err),
    })?;
    let len = file.metadata().await?.len();
    let span = match range {
        None => 0..len,
        Some(range) => range.check(len).map_err(|_| ReadError::Unsatisfiable { len })?,
    };
    file.seek(io::SeekFrom::Start(span.start)).await?;
    Ok(PackRead { bytes: file.take(span.end - span.start), span, len })
}

/// The longest range [`read_range`] reads at once; longer ones stream.
pub const HELD_RANGE_MAX: u64 = 8 * 1024 * 1024;

/// `range` of pack `id` under `dir`, read whole in one blocking call (open, length, one
/// positioned read), when it is at most [`HELD_RANGE_MAX`] long: a chunk record asked by a
/// reading peer costs one trip to the blocking pool, where streaming it took five or more.
/// `Ok(None)` when the range is longer (stream it with [`open_pack`]).
///
/// # Errors
/// [`ReadError`].
pub async fn read_range(
    dir: &Path,
    id: PackId,
    range: s3s::dto::Range,
) -> Result<Option<(bytes::Bytes, ops::Range<u64>, u64)>, ReadError> {
    let path = pack_path(dir, id);
    let read = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => ReadError::NoSuchPack(id.0),
            _ => ReadError::Io(err),
        })?;
        let len = file.metadata()?.len();
        let span = range.check(len).map_err(|_| ReadError::Unsatisfiable { len })?;
        if span.end - span.start > HELD_RANGE_MAX {
            return Ok(None);
        }
        let mut bytes = crate::buffer_pool::take_filled((span.end - span.start) as usize);
        file.read_exact_at(&mut bytes, span.start)?;
        Ok(Some((crate::buffer_pool::freeze(bytes), span, len)))
    });
    read.await.map_err(io::Error::other)?
}

/// Deletes pack `id` under `dir` and makes that durable; `false` when it was not there.
///
/// # Errors
/// The I/O error.
pub async fn delete_pack(dir: &Path, id: PackId) -> io::Result<bool> {
    let removed = match tokio::fs::remove_file(pack_path(dir, id)).await {
        Ok(()) => true,
        Err(err) if err.kind() == io::ErrorKind::NotFound => false,
        Err(err) => return Err(err),
    };
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io::Error::other)??;
    Ok(removed)
}
