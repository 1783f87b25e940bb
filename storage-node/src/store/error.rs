//! The chunk store's typed errors.

use std::io;
use std::path::PathBuf;

use crate::catalog::CatalogError;
use crate::pack::PackId;
use crate::{ChunkId, TenantId};

/// Why a chunk store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no tenant with id {0}")]
    UnknownTenant(i64),
    #[error("no object {0} for this tenant")]
    NoSuchObject(i64),
    #[error("the range {start}..{end} is not within the object's {size} bytes")]
    InvalidRange { start: u64, end: u64, size: u64 },
    #[error(
        "storage quota exceeded: the tenant stores {used} of its {quota} bytes, and this write \
         needs {needed} more"
    )]
    QuotaExceeded { used: u64, quota: u64, needed: u64 },
    #[error("the storage device under {path} is full")]
    StorageFull { path: PathBuf },
    #[error("the upload ended after {received} bytes, but {expected} were announced")]
    Truncated { expected: u64, received: u64 },
    #[error("the upload sent more than the {expected} bytes it announced")]
    LongerThanAnnounced { expected: u64 },
    #[error("the upload's body could not be read: {0}")]
    Source(io::Error),
    #[error("integrity error in chunk {chunk} of tenant {} (pack {}, offset {offset}): {detail}", tenant.0, pack.0)]
    Integrity { tenant: TenantId, chunk: ChunkId, pack: PackId, offset: u64, detail: String },
    #[error("no copy of chunk {chunk} can be read on this node or its peers")]
    ChunkUnavailable { chunk: ChunkId },
    #[error("the copy of pack {pack} on node {node} failed: {detail}; retry the upload")]
    CopyFailed { node: i32, pack: i64, detail: String },
    #[error("{0}; retry the upload")]
    Retry(String),
    /// A commit that shared its tenant's lock found the tenant near its quota: the store runs
    /// it again under the exclusive lock (never seen outside the store and the model).
    #[error("the tenant is near its quota: commit again under its exclusive lock")]
    NeedsExclusive,
    #[error("no memory for the upload ({wanted} bytes) came free within {waited:?}; retry the upload")]
    MemoryBusy { wanted: u64, waited: std::time::Duration },
    #[error(transparent)]
    Placement(#[from] crate::placement::PlacementError),
    #[error("chunk {chunk} was collected before the upload committed; retry the upload")]
    ChunkVanished { chunk: ChunkId },
    /// The write committed, but not every node confirmed dropping what it replaced from its
    /// read cache in time; the confirmation goes on in the background.
    #[error("the write committed, but the nodes' read caches could not be confirmed clean: {0}")]
    Unconfirmed(String),
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid chunk store configuration: {0}")]
    Config(String),
    #[error(transparent)]
    DataDir(#[from] crate::DataDirError),
    #[error("a background task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Classifies an I/O error on `path`: a full device is [`StoreError::StorageFull`].
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::StorageFull { path },
            _ => StoreError::Io { path, source },
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        StoreError::Catalog(CatalogError::Query(err))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        StoreError::Catalog(CatalogError::from(err))
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(err: tokio::task::JoinError) -> Self {
        StoreError::Task(err.to_string())
    }
}
