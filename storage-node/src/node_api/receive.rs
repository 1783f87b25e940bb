//! Receiving a whole sealed pack from a peer and keeping it only once it is proven whole.
//!
//! The body streams into a temporary file beside the packs (`<id>.pack.incoming-<tag>`), never
//! into memory. Then the file and the directory are fsynced, every record is verified
//! ([`super::verify`]), and the file is hard-linked to the pack's own name, which fails if that
//! name is taken: nothing is ever overwritten. A pack already held with the same bytes makes the
//! transfer a no-op, one with other bytes is a conflict. Whatever goes wrong (a cut connection,
//! a size over the limit, a damaged record, the handler dropped mid-way), the temporary file is
//! removed; files a crash left behind are removed at every start (`pack::sweep_incoming`).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::verify::verify_pack_file;
use crate::ServerSecret;
use crate::pack::{PackId, incoming_pack_path, pack_path};

/// How a transfer ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// The pack is now held here.
    Created,
    /// The same pack (byte for byte) was already held here.
    AlreadyHeld,
}

/// Why a transfer was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the pack is larger than the {limit} bytes a pack may have")]
    TooLarge { limit: u64 },
    #[error("the body was cut short: {0}")]
    BodyCut(String),
    #[error("the pack is damaged ({0}); nothing was kept")]
    Invalid(String),
    #[error("pack {0} is already held here with other bytes")]
    Conflict(i64),
    #[error("no space left for the pack")]
    StorageFull,
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl ReceiveError {
    fn io(path: &Path, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return ReceiveError::StorageFull;
        }
        ReceiveError::Io { path: path.to_path_buf(), source }
    }
}

/// A file being received; removed on drop unless it was kept.
struct Incoming {
    path: PathBuf,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives pack `id` from `body` into `packs_dir`, refusing more than `limit` bytes.
///
/// # Errors
/// [`ReceiveError`]; nothing is left behind on any of them.
pub async fn receive_pack<S, E>(
    packs_dir: &Path,
    id: PackId,
    body: S,
    limit: u64,
    secret: &ServerSecret,
) -> Result<Received, ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let incoming = Incoming { path: incoming_pack_path(packs_dir, id, rand::random()) };
    write_body(&incoming.path, body, limit).await?;
    let (dir, path, secret) = (packs_dir.to_path_buf(), incoming.path.clone(), secret.clone());
    let kept = tokio::task::spawn_blocking(move || keep(&dir, &path, id, &secret))
        .await
        .map_err(|err| ReceiveError::Io { path: incoming.path.clone(), source: io::Error::other(err) })?;
    drop(incoming);
    kept
}

/// Streams `body` into a new file at `path` and makes it durable.
async fn write_body<S, E>(path: &Path, body: S, limit: u64) -> Result<(), ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let failed = |err| ReceiveError::io(path, err);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(failed)?;
    let mut body = std::pin::pin!(body);
    let mut written = 0u64;
    while let Some(frame) = body.next().await {
        let bytes = frame.map_err(|err| ReceiveError::BodyCut(err.to_string()))?;
        written += bytes.len() as u64;
        if written > limit {
            return Err(ReceiveError::TooLarge { limit });
        }
        file.write_all(&bytes).await.map_err(failed)?;
    }
    file.flush().await.map_err(failed)?;
    file.sync_all().await.map_err(failed)
}

/// Verifies the received file and links it under the pack's name. Blocking.
fn keep(dir: &Path, incoming: &Path, id: PackId, secret: &ServerSecret) -> Result<Received, ReceiveError> {
    sync_dir(dir)?;
    verify_pack_file(incoming, id, secret).map_err(|err| match err.kind() {
        io::ErrorKind::InvalidData => ReceiveError::Invalid(err.to_string()),
        _ => ReceiveError::io(incoming, err),
    })?;
    let target = pack_path(dir, id);
    match std::fs::hard_link(incoming, &target) {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(Received::Created)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            match same_bytes(incoming, &target).map_err(|err| ReceiveError::io(&target, err))? {
                // A concurrent PUT may have linked it without its directory fsync yet.
                true => sync_dir(dir).map(|()| Received::AlreadyHeld),
                false => Err(ReceiveError::Conflict(id.0)),
            }
        }
        Err(err) => Err(ReceiveError::io(&target, err)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), ReceiveError> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(|err| ReceiveError::io(dir, err))
}

/// Whether two files hold the same bytes, read through small buffers.
fn same_bytes(one: &Path, other: &Path) -> io::Result<bool> {
    let (one, other) = (File::open(one)?, File::open(other)?);
    if one.metadata()?.len() != other.metadata()?.len() {
        return Ok(false);
    }
    let (mut one, mut other) = (BufReader::new(one), BufReader::new(other));
    let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let read = one.read(&mut a)?;
        if read == 0 {
            return Ok(true);
        }
        other.read_exact(&mut b[..read])?;
        if a[..read] != b[..read] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;
    use crate::compress::Compression;
    use crate::pack::{PackWriter, RecordHeader, sweep_incoming};

    /// The bytes of a valid pack 3 with `records` records.
    fn pack_bytes(secret: &ServerSecret, records: u8) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = PackWriter::create(dir.path(), PackId(3), 1).expect("create");
        for n in 0..records {
            let raw = vec![n; 5000 + usize::from(n)];
            let chunk = secret.chunk_key(TenantId(2)).chunk_id(&raw);
            let len = raw.len() as u32;
            let header = RecordHeader {
                compression: Compression::None,
                tenant: TenantId(2),
                chunk,
                raw_len: len,
                stored_len: len,
            };
            writer.append(&header, &raw).expect("append");
        }
        std::fs::read(writer.path()).expect("read")
    }

    /// `bytes` as a body of 1000-byte pieces, cut with an error after `cut_at` pieces.
    fn body(bytes: &[u8], cut_at: Option<usize>) -> impl Stream<Item = Result<Bytes, String>> {
        let mut pieces: Vec<Result<Bytes, String>> =
            bytes.chunks(1000).map(|piece| Ok(Bytes::copy_from_slice(piece))).collect();
        if let Some(cut) = cut_at {
            pieces.truncate(cut);
            pieces.push(Err("connection reset".into()));
        }
        futures::stream::iter(pieces)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_pack_is_kept_once_whole_and_nothing_is_left_of_a_refused_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = ServerSecret::from_bytes([1; 32]);
        let bytes = pack_bytes(&secret, 3);
        let receive = |bytes: Vec<u8>, cut: Option<usize>, limit: u64| {
            let (dir, secret) = (dir.path().to_path_buf(), secret.clone());
            async move { receive_pack(&dir, PackId(3), body(&bytes, cut), limit, &secret).await }
        };
        let refused = |result: Result<Received, ReceiveError>, expected: &str| {
            let err = result.expect_err(expected);
            assert!(format!("{err:?}").starts_with(expected), "{err:?}");
            assert_eq!(names(dir.path()), Vec::<String>::new(), "nothing kept after {expected}");
        };
        refused(receive(bytes.clone(), Some(7), 1 << 20).await, "BodyCut");
        refused(receive(bytes.clone(), None, bytes.len() as u64 - 1).await, "TooLarge");
        let mut damaged = bytes.clone();
        damaged[bytes.len() - 10] ^= 4;
        refused(receive(damaged, None, 1 << 20).await, "Invalid");

        assert_eq!(receive(bytes.clone(), None, bytes.len() as u64).await.expect("whole"), Received::Created);
        assert_eq!(std::fs::read(pack_path(dir.path(), PackId(3))).expect("kept"), bytes);
        assert_eq!(receive(bytes.clone(), None, 1 << 20).await.expect("again"), Received::AlreadyHeld);
        let other = pack_bytes(&secret, 2);
        let err = receive(other, None, 1 << 20).await.expect_err("other bytes");
        assert!(matches!(err, ReceiveError::Conflict(3)), "{err:?}");
        assert_eq!(std::fs::read(pack_path(dir.path(), PackId(3))).expect("kept"), bytes, "not overwritten");
        assert_eq!(names(dir.path()), ["0000000000000003.pack"]);

        // What a crash left mid-transfer is swept; packs stay.
        std::fs::write(incoming_pack_path(dir.path(), PackId(4), 9), b"partial").expect("write");
        assert_eq!(sweep_incoming(dir.path()).expect("sweep"), 1);
        assert_eq!(names(dir.path()), ["0000000000000003.pack"]);
    }
}
