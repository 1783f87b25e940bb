//! Appending to a pack being written: the bytes a peer streams to a replica of an open pack.
//!
//! An append names the offset it starts at, which must be the length of the pack's file here:
//! a longer file is cut back to it first (a tail no answer acknowledged), a shorter one is a
//! mismatch (the sender missed an append and must start over elsewhere). At offset 0 the body
//! starts with the pack header and the file is created (mode 0600, the directory fsynced). The
//! body must be whole records of the pack's domain: each record header is read and checked
//! before a byte of it is written, then its bytes are hashed and written in one pass through one
//! buffer ([`super::tee`], [`super::verify`]'s record check), so memory stays bounded whatever a
//! record claims. The answer (the new length) comes after `fdatasync`; any failure (a damaged
//! record, a body that ends mid-record or is cut, a pack past the size limit, a full disk)
//! leaves the file cut back to the offset (removed, at offset 0). The rest of a refused body is
//! read and dropped (up to the size limit), so that a sender still sending reads the refusal
//! instead of a reset connection.
//!
//! Only a node whose catalog records a `writing` replica of the pack takes appends to it
//! ([`super::writing`]); appends to one pack, and a `DELETE` of it, take turns on a per-pack
//! lock ([`PackLocks`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::OwnedMutexGuard;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::tee::Tee;
use super::verify::check_record;
use super::writing::ThisNode;
use super::writing::{CatalogReadError, writing_replica};
use crate::pack::{PACK_HEADER_LEN, PackId, RECORD_HEADER_LEN, RecordHeader, check_pack_header, pack_path};
use crate::{ServerSecret, TenantId};

/// The request header that names the offset an append starts at.
pub const OFFSET_HEADER: &str = "silo-pack-offset";
/// The response header that names the length of the pack here, when an append's offset is not it.
pub const LENGTH_HEADER: &str = "silo-pack-length";
/// The size of the read buffer and of the write buffer of one append.
const BUFFER: usize = 256 * 1024;

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    #[error("this node holds no writing replica of pack {0}")]
    NotWriting(i64),
    #[error("pack {0} is written by this node's own writer; peers do not append to it")]
    WrittenHere(i64),
    #[error("{0}")]
    WrongDomain(String),
    #[error("the pack has {len} bytes here, not as many as the append's offset")]
    OffsetMismatch { len: u64 },
    #[error("the pack would pass the {limit} bytes a pack may have; the append was not kept")]
    TooLarge { limit: u64 },
    #[error("the body was cut short ({0}); the append was not kept")]
    BodyCut(String),
    #[error("the append is damaged ({0}); it was not kept")]
    Damaged(String),
    #[error("no space left for the append")]
    StorageFull,
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Catalog(#[from] CatalogReadError),
}

impl AppendError {
    fn io(path: &Path, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return AppendError::StorageFull;
        }
        AppendError::Io { path: path.to_path_buf(), source }
    }
}

fn damaged(at: u64, what: &str) -> AppendError {
    AppendError::Damaged(format!("at offset {at}: {what}"))
}

/// One lock per pack with an append under way or waiting; entries go when nobody holds them.
#[derive(Debug, Default, Clone)]
pub(crate) struct PackLocks(Arc<Mutex<HashMap<PackId, Arc<tokio::sync::Mutex<()>>>>>);

/// The lock of one pack, held until dropped.
pub(crate) struct PackGuard {
    id: PackId,
    locks: PackLocks,
    guard: Option<OwnedMutexGuard<()>>,
}

impl PackLocks {
    /// Waits for pack `id`'s lock.
    pub(crate) async fn lock(&self, id: PackId) -> PackGuard {
        let lock = self.0.lock().unwrap_or_else(PoisonError::into_inner).entry(id).or_default().clone();
        PackGuard { id, locks: self.clone(), guard: Some(lock.lock_owned().await) }
    }
}

impl Drop for PackGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map holds it: nobody waits.
        if locks.get(&self.id).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.id);
        }
    }
}

/// An append: to pack `id` under `dir`, at `offset`, within `limit` bytes.
pub(crate) struct Append {
    pub dir: PathBuf,
    pub id: PackId,
    pub offset: u64,
    pub limit: u64,
    pub secret: ServerSecret,
}

/// How long an append's body may bring nothing before it is cut. The writer streams records as
/// its S3 client sends them, so a slow client makes gaps; five minutes covers any client that is
/// still sending and bounds how long a hung writer holds the pack's lock and a blocking thread.
const APPEND_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// Appends `body` as `append` says, if the catalog of `store` lets this node take it; returns
/// the pack's new length, durable.
pub(crate) async fn append<S, E>(
    this: Option<&ThisNode>,
    locks: &PackLocks,
    append: Append,
    body: S,
) -> Result<u64, AppendError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let id = append.id;
    let guard = locks.lock(id).await;
    let owner = match allowed(this, id).await {
        Ok(owner) => owner,
        Err(err) => {
            // The pack is not touched: a retry or a DELETE of it need not wait for the drain.
            drop(guard);
            drain(body, append.limit.saturating_sub(append.offset)).await;
            return Err(err);
        }
    };
    let cut = Arc::new(AtomicBool::new(false));
    let seen = cut.clone();
    let body = body.map_err(move |err| io::Error::other(err.to_string()));
    // A writer that stops sending (hung, not gone) must not hold the pack's lock and a blocking
    // thread for ever: a body that brings nothing for the idle timeout is cut.
    let body = Box::pin(futures::stream::unfold(Some(Box::pin(body)), move |body| {
        let seen = seen.clone();
        async move {
            let mut body = body?;
            let item = match tokio::time::timeout(APPEND_IDLE, body.next()).await {
                Ok(Some(Ok(bytes))) => Ok(bytes),
                Ok(None) => return None,
                Ok(Some(Err(err))) => Err(err),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the append's body stalled")),
            };
            let more = item.is_ok();
            if !more {
                seen.store(true, Ordering::Relaxed);
            }
            Some((item, more.then_some(body)))
        }
    }));
    let body = SyncIoBridge::new(StreamReader::new(body));
    let path = pack_path(&append.dir, id);
    // The lock is held until the file is done with, even when the request goes away first.
    tokio::task::spawn_blocking(move || {
        let _guard = guard;
        append_blocking(&append, owner, body, &cut)
    })
    .await
    .map_err(|err| AppendError::Io { path, source: io::Error::other(err) })?
}

/// The domain of pack `id` (its owner), when this node may take appends to it.
async fn allowed(this: Option<&ThisNode>, id: PackId) -> Result<Option<TenantId>, AppendError> {
    let this = this.ok_or(AppendError::NotWriting(id.0))?;
    let replica =
        writing_replica(&this.catalog, id, this.node).await?.ok_or(AppendError::NotWriting(id.0))?;
    if replica.written_here {
        return Err(AppendError::WrittenHere(id.0));
    }
    if replica.node_owner != replica.pack_owner {
        return Err(AppendError::WrongDomain(format!(
            "pack {} belongs to {}, this node to {}",
            id.0,
            domain(replica.pack_owner),
            domain(replica.node_owner)
        )));
    }
    Ok(replica.pack_owner)
}

/// Reads and drops what is left of a refused append's body (up to `limit` bytes), so that the
/// sender, still sending, reads the refusal rather than a reset connection.
async fn drain<S, E>(body: S, limit: u64)
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut body = std::pin::pin!(body);
    let mut read = 0u64;
    while read <= limit
        && let Some(Ok(bytes)) = body.next().await
    {
        read += bytes.len() as u64;
    }
}

fn domain(owner: Option<TenantId>) -> String {
    owner.map_or_else(|| "the shared nodes".into(), |tenant| format!("tenant {}'s own nodes", tenant.0))
}

/// Appends the records of `body`; on any failure, cuts the file back and drains the body.
/// Blocking.
fn append_blocking(
    append: &Append,
    owner: Option<TenantId>,
    body: impl io::Read,
    cut: &AtomicBool,
) -> Result<u64, AppendError> {
    let mut input = BufReader::with_capacity(BUFFER, body);
    let appended = append_to_file(append, owner, &mut input, cut);
    if appended.is_err() {
        // As `drain` does, for a refusal found in the body.
        let left = append.limit.saturating_sub(append.offset);
        let _drained = io::copy(&mut (&mut input).take(left), &mut io::sink());
    }
    appended
}

/// Appends the records read from `input`; on any failure, cuts the file back.
fn append_to_file(
    append: &Append,
    owner: Option<TenantId>,
    input: impl BufRead,
    cut: &AtomicBool,
) -> Result<u64, AppendError> {
    let path = pack_path(&append.dir, append.id);
    let file = open_at(&append.dir, &path, append.id, append.offset)?;
    let mut tee = Tee::new(input, BufWriter::with_capacity(BUFFER, &file));
    let result = append_records(&mut tee, append, owner).and_then(|len| {
        tee.flush_output().and_then(|()| file.sync_data()).map_err(|err| AppendError::io(&path, err))?;
        Ok(len)
    });
    let write_failure = tee.take_failure();
    // Bytes still buffered are dropped, never written after the cut.
    let _unwritten = tee.into_output().into_parts();
    let err = match (result, write_failure) {
        (Ok(len), None) => return Ok(len),
        (_, Some(failure)) => AppendError::io(&path, failure),
        (Err(AppendError::Damaged(what)), None) if cut.load(Ordering::Relaxed) => AppendError::BodyCut(what),
        (Err(err), None) => err,
    };
    cut_back(&path, &file, append.offset);
    Err(err)
}

/// Opens the pack's file for an append at `offset` and positions it there.
fn open_at(dir: &Path, path: &Path, id: PackId, offset: u64) -> Result<File, AppendError> {
    let failed = |err| AppendError::io(path, err);
    let mut file = if offset == 0 {
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(file) => {
                File::open(dir).and_then(|dir| dir.sync_all()).map_err(|err| AppendError::io(dir, err))?;
                file
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let file = OpenOptions::new().write(true).open(path).map_err(failed)?;
                // A failed first append leaves no file; one with records is some other copy
                // under this id (a peer's pack from before a catalog restore): never cut it.
                let len = file.metadata().map_err(failed)?.len();
                if len > PACK_HEADER_LEN {
                    return Err(AppendError::OffsetMismatch { len });
                }
                file
            }
            Err(err) => return Err(failed(err)),
        }
    } else {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(AppendError::OffsetMismatch { len: 0 });
            }
            Err(err) => return Err(failed(err)),
        };
        let mut header = [0u8; PACK_HEADER_LEN as usize];
        if file.read_exact_at(&mut header, 0).is_err() || check_pack_header(&header, id).is_err() {
            return Err(damaged(0, "the file here does not start with this pack's header"));
        }
        file
    };
    let len = file.metadata().map_err(failed)?.len();
    if len < offset {
        return Err(AppendError::OffsetMismatch { len });
    }
    if len > offset {
        tracing::info!(pack = id.0, len, offset, "cutting an unacknowledged tail before an append");
        file.set_len(offset).map_err(failed)?;
    }
    file.seek(SeekFrom::Start(offset)).map_err(failed)?;
    Ok(file)
}

/// Reads, checks and writes the records of an append; returns the pack's length after them.
fn append_records<R: BufRead, W: io::Write>(
    tee: &mut Tee<R, W>,
    append: &Append,
    owner: Option<TenantId>,
) -> Result<u64, AppendError> {
    let mut at = append.offset;
    if at == 0 {
        let mut header = [0u8; PACK_HEADER_LEN as usize];
        tee.read_held(&mut header).map_err(|_| damaged(0, "the body is shorter than a pack header"))?;
        check_pack_header(&header, append.id).map_err(|(offset, what)| damaged(offset, what))?;
        tee.write_through(&header);
        at = PACK_HEADER_LEN;
    }
    while !tee.fill_buf().map_err(|err| damaged(at, &err.to_string()))?.is_empty() {
        let mut bytes = [0u8; RECORD_HEADER_LEN as usize];
        tee.read_held(&mut bytes).map_err(|_| damaged(at, "the body ends inside a record header"))?;
        let record = RecordHeader::decode(&bytes).ok_or_else(|| damaged(at, "not a record header"))?;
        if let Some(owner) = owner
            && record.tenant != owner
        {
            return Err(AppendError::WrongDomain(format!(
                "the record at offset {at} is tenant {}'s; pack {} holds only tenant {}'s",
                record.tenant.0, append.id.0, owner.0
            )));
        }
        let end = at + RECORD_HEADER_LEN + u64::from(record.stored_len);
        if end > append.limit {
            return Err(AppendError::TooLarge { limit: append.limit });
        }
        tee.write_through(&bytes);
        check_record(tee, &record, &append.secret).map_err(|what| damaged(at, &what))?;
        at = end;
    }
    Ok(at)
}

/// Leaves the file as it was before a failed append: `offset` bytes (none: no file).
fn cut_back(path: &Path, file: &File, offset: u64) {
    let cut = if offset == 0 { std::fs::remove_file(path) } else { file.set_len(offset) };
    if let Err(err) = cut {
        tracing::error!(path = %path.display(), offset, error = %err, "cannot cut a failed append back");
    }
}

/// The offset `Silo-Pack-Offset` names: canonical decimal digits, 0 or past the pack header.
pub(crate) fn parse_offset(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 20
        && (text == "0" || !text.starts_with('0'))
        && text.bytes().all(|byte| byte.is_ascii_digit());
    let offset = text.parse::<u64>().ok().filter(|_| canonical)?;
    (offset == 0 || offset >= PACK_HEADER_LEN).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::{Compression, CompressionPolicy};
    use crate::pack::PackWriter;

    /// Pack 6 of tenant 3's records, one compressed; returns its bytes and record offsets.
    fn pack(secret: &ServerSecret) -> (Vec<u8>, Vec<usize>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = PackWriter::create(dir.path(), PackId(6), 1).expect("create");
        let key = secret.chunk_key(TenantId(3));
        let mut offsets = Vec::new();
        for n in 0..4u8 {
            let raw = if n == 1 { b"compressible text\n".repeat(500) } else { vec![n; 3000] };
            let compressed = CompressionPolicy::default().compress(&raw).filter(|_| n == 1);
            let (compression, stored) = match &compressed {
                Some(bytes) => (Compression::Zstd, bytes.clone()),
                None => (Compression::None, raw.clone()),
            };
            let header = RecordHeader {
                compression,
                tenant: TenantId(3),
                chunk: key.chunk_id(&raw),
                raw_len: raw.len() as u32,
                stored_len: stored.len() as u32,
            };
            offsets.push(writer.append(&header, &stored).expect("append") as usize);
        }
        writer.sync().expect("sync");
        (std::fs::read(writer.path()).expect("read"), offsets)
    }

    #[test]
    fn records_are_appended_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = ServerSecret::from_bytes([4; 32]);
        let (bytes, offsets) = pack(&secret);
        let path = pack_path(dir.path(), PackId(6));
        let run = |offset: usize, body: &[u8], owner: Option<TenantId>, limit: u64| {
            let append = Append {
                dir: dir.path().to_path_buf(),
                id: PackId(6),
                offset: offset as u64,
                limit,
                secret: secret.clone(),
            };
            append_blocking(&append, owner, body, &AtomicBool::new(false))
        };
        let held = || std::fs::read(&path).expect("the pack");
        let limit = 1 << 20;

        // In three pieces, cut on record boundaries: the first with the pack header.
        let (a, b) = (offsets[1], offsets[3]);
        assert_eq!(run(0, &bytes[..a], None, limit).expect("first") as usize, a);
        assert_eq!(run(a, &bytes[a..b], Some(TenantId(3)), limit).expect("second") as usize, b);
        // A piece that fails leaves the pack as it was: damaged, mid-record, over the limit,
        // another tenant's record in an owned pack.
        let mut flipped = bytes[b..].to_vec();
        flipped[100] ^= 1;
        assert!(matches!(run(b, &flipped, None, limit), Err(AppendError::Damaged(_))));
        assert!(matches!(run(b, &bytes[b..bytes.len() - 1], None, limit), Err(AppendError::Damaged(_))));
        assert!(matches!(
            run(b, &bytes[b..], None, bytes.len() as u64 - 1),
            Err(AppendError::TooLarge { .. })
        ));
        assert!(matches!(run(b, &bytes[b..], Some(TenantId(4)), limit), Err(AppendError::WrongDomain(_))));
        assert_eq!(held(), &bytes[..b]);
        // A gap is refused with the length held; a resent piece cuts the tail first.
        assert!(
            matches!(run(b + 56, &bytes[b..], None, limit), Err(AppendError::OffsetMismatch { len }) if len as usize == b)
        );
        assert_eq!(run(b, &bytes[b..], None, limit).expect("third") as usize, bytes.len());
        assert_eq!(held(), bytes);
        assert_eq!(run(a, &bytes[a..], None, limit).expect("again from a") as usize, bytes.len());
        assert_eq!(held(), bytes);
        assert_eq!(run(bytes.len(), b"", None, limit).expect("nothing") as usize, bytes.len());

        // Offset 0 needs this pack's header; a failed first piece leaves no file.
        std::fs::remove_file(&path).expect("remove");
        let mut other = bytes[..a].to_vec();
        other[16] ^= 1;
        assert!(matches!(run(0, &other, None, limit), Err(AppendError::Damaged(_))));
        assert!(!path.exists());
        assert!(matches!(run(32, &bytes[32..a], None, limit), Err(AppendError::OffsetMismatch { len: 0 })));
        use std::os::unix::fs::PermissionsExt;
        run(0, &bytes[..a], None, limit).expect("first again");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn offsets_are_canonical_decimals_outside_the_pack_header() {
        assert_eq!(parse_offset("0"), Some(0));
        assert_eq!(parse_offset("32"), Some(32));
        assert_eq!(parse_offset("18446744073709551615"), Some(u64::MAX));
        for bad in
            ["", "1", "31", "032", "00", "+40", "-40", " 40", "40 ", "4e3", "0x40", "18446744073709551616"]
        {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn appends_to_one_pack_take_turns() {
        let locks = PackLocks::default();
        let first = locks.lock(PackId(1)).await;
        let other = tokio::time::timeout(std::time::Duration::from_secs(1), locks.lock(PackId(2))).await;
        assert!(other.is_ok(), "another pack's lock is free");
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(100), locks.lock(PackId(1))).await;
        assert!(waiting.is_err(), "the same pack's lock waits");
        drop((first, other));
        let _again = locks.lock(PackId(1)).await;
        assert_eq!(locks.0.lock().expect("map").len(), 1, "locks nobody holds are gone");
    }
}
