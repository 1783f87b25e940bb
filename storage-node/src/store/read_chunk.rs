//! Loading one chunk of a read, wherever its copies are: this node's copy first, verified;
//! otherwise the copies on other nodes. A damaged or unreadable copy here falls back to another
//! copy and is marked for repair.
//!
//! Each load is a task of its own, so that a read has its next chunks loading (fetched from a
//! peer, hashed on another core) while it sends the current one: see [`super::read`].

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::peers::RemoteCopy;
use super::verify::{ChunkLocation, ReadMode};
use super::{ChunkStore, StoreError};
use crate::chunk_tree::ChunkTree;
use crate::pack::PackId;

/// What this node holds of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LocalCopy {
    None,
    /// A copy marked damaged: read it only when no other copy answers.
    Damaged,
    Sound,
}

/// A chunk's raw bytes, verified; the outer error ends the read, the inner one is the chunk's
/// own (a missing pack file may mean the chunk moved: the read looks it up again).
pub(super) type Loaded = Result<Result<Bytes, StoreError>, StoreError>;

/// The loads of one read, sharing what they learn of the copies of each pack.
#[derive(Clone)]
pub(super) struct Loader {
    store: ChunkStore,
    /// The copies on other nodes of the packs this read fetched chunks from.
    remote_copies: Arc<Mutex<HashMap<PackId, Vec<RemoteCopy>>>>,
}

impl Loader {
    pub fn new(store: ChunkStore) -> Self {
        Loader { store, remote_copies: Arc::default() }
    }

    /// Starts loading the chunk at `location`, of which this node holds `local`: the whole
    /// chunk, or only `span` of it (whole blocks, verified through the chunk's tree, from
    /// this node's sound copy). A missing file of this node's copy is the chunk's error (the
    /// read looks the chunk up again), or, when `retried` (it did), a reason to read another
    /// copy.
    pub fn spawn(&self, location: ChunkLocation, local: LocalCopy, how: How) -> JoinHandle<Loaded> {
        let loader = self.clone();
        tokio::spawn(async move { loader.load(location, local, how).await })
    }

    async fn load(&self, location: ChunkLocation, local: LocalCopy, how: How) -> Loaded {
        let mode = how.mode;
        let loaded = match (local, &how.span) {
            (LocalCopy::Sound, Some((tree, span))) => {
                self.load_local_span(location, tree.clone(), span.clone()).await?
            }
            (LocalCopy::Sound, None) => self.load_local(location, mode).await?,
            (LocalCopy::None, _) => return self.read_remote(&location, mode).await,
            (LocalCopy::Damaged, _) => {
                return match self.read_remote(&location, mode).await? {
                    Err(StoreError::ChunkUnavailable { .. } | StoreError::Integrity { .. }) => {
                        self.load_local(location, mode).await
                    }
                    read => Ok(read),
                };
            }
        };
        match loaded {
            // This node's copy is damaged or unreadable: another copy serves the read, and a
            // damaged copy here is marked for repair whenever another copy exists to repair it
            // from. When the other copies do not answer now, the read is unavailable (a retry
            // may find them back); with no other copy, or only wrong ones, it fails with this
            // copy's error. A missing file goes back to the read, which looks the chunk up again
            // (GC may have moved it).
            Err(err @ (StoreError::Integrity { .. } | StoreError::Io { .. }))
                if how.retried || !is_not_found(&err) =>
            {
                let remote = self.read_remote(&location, mode).await?;
                let elsewhere =
                    lock(&self.remote_copies).get(&location.pack).is_some_and(|copies| !copies.is_empty());
                if elsewhere && matches!(err, StoreError::Integrity { .. }) {
                    tracing::error!(error = %err, "this node's copy of a pack is damaged; read another copy");
                    self.store.mark_damaged(location.pack, self.store.node()).await;
                }
                match remote {
                    Ok(raw) => Ok(Ok(match how.span {
                        Some((_, span)) if span.end <= raw.len() as u64 => {
                            raw.slice(span.start as usize..span.end as usize)
                        }
                        _ => raw,
                    })),
                    Err(unavailable @ StoreError::ChunkUnavailable { .. }) if elsewhere => {
                        Ok(Err(unavailable))
                    }
                    Err(_) => Ok(Err(err)),
                }
            }
            other => Ok(other),
        }
    }

    /// The chunk from another node's copy of its pack, verified. The copies of each pack are
    /// looked up once per read, and once more when none of those answers right (they may have
    /// moved, or repair may have made a new one).
    async fn read_remote(&self, location: &ChunkLocation, mode: ReadMode) -> Loaded {
        let known = lock(&self.remote_copies).get(&location.pack).cloned();
        let fresh = known.is_none();
        let copies = match known {
            Some(copies) => copies,
            None => self.look_up_copies(location.pack).await?,
        };
        let read = self.store.read_from_copies(location, mode, copies).await;
        let failed = matches!(read, Err(StoreError::ChunkUnavailable { .. } | StoreError::Integrity { .. }));
        if fresh || !failed {
            return Ok(read);
        }
        let copies = self.look_up_copies(location.pack).await?;
        Ok(self.store.read_from_copies(location, mode, copies).await)
    }

    async fn look_up_copies(&self, pack: PackId) -> Result<Vec<RemoteCopy>, StoreError> {
        let copies = self.store.remote_copies(pack).await?;
        lock(&self.remote_copies).insert(pack, copies.clone());
        Ok(copies)
    }

    /// `span` of the chunk from this node's copy, verified through `tree`, on a blocking thread.
    async fn load_local_span(&self, location: ChunkLocation, tree: ChunkTree, span: Range<u64>) -> Loaded {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.load_verified_span(&location, &tree, span)).await?)
    }

    /// The chunk from this node's copy, verified, on a blocking thread.
    async fn load_local(&self, location: ChunkLocation, mode: ReadMode) -> Loaded {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.load_verified(&location, mode)).await?)
    }
}

/// How a chunk is loaded.
pub(super) struct How {
    pub mode: ReadMode,
    /// Only these bytes of it (whole blocks), verified through its tree.
    pub span: Option<(ChunkTree, Range<u64>)>,
    /// The read looked the chunk up again after a missing file.
    pub retried: bool,
}

/// Whether `err` says a pack file is not there.
pub(super) fn is_not_found(err: &StoreError) -> bool {
    matches!(err, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
