//! An open pack and its copies: the file on this node (when this node holds a copy) and an
//! append stream to each peer that holds one.
//!
//! Each record is appended to every copy at once: to the local file, and into one streaming
//! request per peer (`PATCH` on the internal API, starting at the length every copy had at the
//! last sync). [`OpenPack::sync`] ends that: the local file is fdatasynced and each peer
//! answers once its copy is fsynced too, with the length it now has. Only after that may an
//! upload whose records it holds commit: a committed chunk is durable in every copy of its
//! pack. When any copy fails, the pack is broken: it takes no more records and is sealed at the
//! length every copy had reached; an upload with records not yet synced in it moves them to a new
//! pack from this node's copy, or fails with a retryable error (see `upload`). The uploads that
//! share a pack take turns on it (see `writers`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{NodeId, StoreError};
use crate::TenantId;
use crate::node_api::{ClientError, NodeClient};
use crate::pack::{PACK_HEADER_LEN, PackId, PackWriter, RECORD_HEADER_LEN, RecordHeader, pack_header};

/// How long a peer may leave an append waiting (a full send buffer) before its copy fails.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer may take to fsync and answer at the end of an append.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);
/// Records buffered per peer stream before an append waits for the peer.
const STREAM_BUFFER: usize = 8;

/// Which packs an upload's chunks may share: packs of one placement domain (the shared nodes
/// or one tenant's own nodes) written for the same number of copies in the same zones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PackClass {
    /// The tenant whose own nodes hold the pack; `None` for the shared nodes.
    pub owner: Option<TenantId>,
    /// The tenant's replication factor, `None` for the deployment's default.
    pub replicas: Option<i16>,
    /// The zones allowed, `None` for all.
    pub zones: Option<Vec<String>>,
}

/// A peer that holds a copy of the pack.
#[derive(Debug)]
pub(crate) struct RemoteCopy {
    pub node: NodeId,
    pub client: Arc<NodeClient>,
    /// The length the peer confirmed durable at the last sync (0 before the first).
    acked: u64,
}

impl RemoteCopy {
    pub fn new(node: NodeId, client: Arc<NodeClient>) -> Self {
        RemoteCopy { node, client, acked: 0 }
    }
}

/// One streaming append to a peer, open from the first record after a sync to the next sync.
struct AppendStream {
    node: NodeId,
    sender: mpsc::Sender<io::Result<Bytes>>,
    answer: JoinHandle<Result<u64, ClientError>>,
}

/// An open pack: its copies, its length and what is durable in all of them.
pub struct OpenPack {
    id: PackId,
    class: PackClass,
    writer_node: NodeId,
    local: Option<PackWriter>,
    remotes: Vec<RemoteCopy>,
    streams: Vec<AppendStream>,
    len: u64,
    /// The length durable in every copy (at the last sync).
    synced: u64,
    broken: bool,
    /// What broke the pack for good (the first failed copy), for the uploads that lose their
    /// records in it.
    failure: Option<String>,
    /// Fewer copies than its policy wanted: used by the upload that opened it, never again
    /// (a tenant whose policy refuses that must not find it open).
    degraded: bool,
}

impl std::fmt::Debug for OpenPack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenPack").field("id", &self.id).field("len", &self.len).finish_non_exhaustive()
    }
}

impl OpenPack {
    pub(crate) fn new(
        id: PackId,
        class: PackClass,
        writer_node: NodeId,
        local: Option<PackWriter>,
        remotes: Vec<RemoteCopy>,
        degraded: bool,
    ) -> Self {
        OpenPack {
            id,
            class,
            writer_node,
            local,
            remotes,
            streams: Vec::new(),
            len: PACK_HEADER_LEN,
            synced: PACK_HEADER_LEN,
            broken: false,
            failure: None,
            degraded,
        }
    }

    /// Breaks the pack for good because of `err`: it takes no more records.
    fn fail(&mut self, err: &StoreError) {
        self.broken = true;
        self.failure.get_or_insert_with(|| err.to_string());
    }

    /// What broke the pack, when a copy failed.
    pub fn failure(&self) -> String {
        match (&self.failure, self.local.as_ref().is_some_and(PackWriter::is_broken)) {
            (Some(failure), _) => failure.clone(),
            (None, true) => "this node's copy failed to write".into(),
            (None, false) => "a copy failed".into(),
        }
    }

    pub fn id(&self) -> PackId {
        self.id
    }

    pub(crate) fn class(&self) -> &PackClass {
        &self.class
    }

    /// Everything appended so far (durable in every copy only after [`OpenPack::sync`]).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The length durable in every copy: what the pack is sealed at.
    pub fn synced_len(&self) -> u64 {
        self.synced
    }

    /// Whether a copy failed, so the pack takes no more records.
    pub fn is_broken(&self) -> bool {
        self.broken || self.local.as_ref().is_some_and(PackWriter::is_broken)
    }

    /// Whether this node holds a copy and no write to it failed.
    pub(crate) fn local_intact(&self) -> bool {
        self.local.as_ref().is_some_and(|writer| !writer.is_broken())
    }

    /// The peers that hold a copy of this pack.
    pub(crate) fn remote_nodes(&self) -> Vec<NodeId> {
        self.remotes.iter().map(|remote| remote.node).collect()
    }

    /// Whether the pack has fewer copies than its policy wanted, so that only the writer that
    /// opened it may use it.
    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// Appends one record to every copy and returns its offset.
    ///
    /// # Errors
    /// The local I/O error, or [`StoreError::CopyFailed`]; the pack is then broken.
    pub async fn append(&mut self, header: RecordHeader, data: Bytes) -> Result<u64, StoreError> {
        if self.is_broken() {
            return Err(StoreError::Retry(format!(
                "pack {} takes no more records: {}",
                self.id.0,
                self.failure()
            )));
        }
        let offset = self.len;
        if self.streams.is_empty() && !self.remotes.is_empty() {
            self.open_streams()?;
        }
        let head = Bytes::copy_from_slice(&header.encode());
        for at in 0..self.streams.len() {
            for piece in [head.clone(), data.clone()] {
                if let Err(err) = self.send(at, piece).await {
                    self.fail(&err);
                    return Err(err);
                }
            }
        }
        if let Some(mut writer) = self.local.take() {
            // Broken until the writer is back: a task that dies with it leaves a pack that
            // must take nothing more.
            self.broken = true;
            let (writer, written) = tokio::task::spawn_blocking(move || {
                let written = writer.append(&header, &data);
                (writer, written)
            })
            .await?;
            self.broken = false;
            let path = writer.path().to_path_buf();
            self.local = Some(writer);
            let local_offset = match written {
                Ok(local_offset) => local_offset,
                Err(err) => {
                    let err = StoreError::io(path, err);
                    self.fail(&err);
                    return Err(err);
                }
            };
            debug_assert_eq!(local_offset, offset);
        }
        self.len = offset + RECORD_HEADER_LEN + header.stored_len as u64;
        Ok(offset)
    }

    /// Makes every record appended so far durable in every copy.
    ///
    /// # Errors
    /// The local I/O error or [`StoreError::CopyFailed`]; the pack is then broken.
    pub async fn sync(&mut self) -> Result<(), StoreError> {
        let streams = std::mem::take(&mut self.streams);
        // Ending the bodies lets every peer finish and fsync while this node fsyncs its own.
        let answers: Vec<_> = streams.into_iter().map(|stream| (stream.node, stream.answer)).collect();
        let local = match self.local.take() {
            Some(mut writer) => {
                self.broken = true;
                let (writer, synced) = tokio::task::spawn_blocking(move || {
                    let synced = writer.sync();
                    (writer, synced)
                })
                .await?;
                self.broken = false;
                let path = writer.path().to_path_buf();
                self.local = Some(writer);
                synced.map_err(|err| StoreError::io(path, err))
            }
            None => Ok(()),
        };
        let mut failure = local.err();
        for (node, answer) in answers {
            let outcome = match tokio::time::timeout(SYNC_TIMEOUT, answer).await {
                Ok(Ok(Ok(len))) if len == self.len => Ok(len),
                Ok(Ok(Ok(len))) => Err(format!("it holds {len} bytes, not {}", self.len)),
                Ok(Ok(Err(err))) => Err(err.to_string()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no answer within {SYNC_TIMEOUT:?}")),
            };
            match outcome {
                Ok(len) => {
                    if let Some(remote) = self.remotes.iter_mut().find(|remote| remote.node == node) {
                        remote.acked = len;
                    }
                }
                Err(detail) => {
                    failure.get_or_insert(StoreError::CopyFailed { node: node.0, pack: self.id.0, detail });
                }
            }
        }
        match failure {
            Some(err) => {
                self.fail(&err);
                Err(err)
            }
            None => {
                self.synced = self.len;
                Ok(())
            }
        }
    }

    /// Gives up the records appended since the last sync: the open streams are cut (each peer
    /// drops what it received of them) and, with peers, the pack takes no more records, since
    /// its copies may now differ past the last sync.
    pub fn abandon_unsynced(&mut self) {
        let streams = std::mem::take(&mut self.streams);
        if streams.is_empty() {
            return;
        }
        for stream in streams {
            let _ = stream.sender.try_send(Err(io::Error::other("the upload was abandoned")));
            stream.answer.abort();
        }
        self.fail(&StoreError::Retry("an upload gave up records past the pack's last sync".into()));
    }

    /// Starts one append request per peer, at the length every copy had at the last sync.
    fn open_streams(&mut self) -> Result<(), StoreError> {
        for remote in &self.remotes {
            let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(STREAM_BUFFER);
            let start = if remote.acked == 0 {
                // A new copy starts with the pack's header.
                let header = pack_header(self.id, self.writer_node.0);
                sender
                    .try_send(Ok(Bytes::copy_from_slice(&header)))
                    .map_err(|_| StoreError::Task("an append stream refused its first bytes".into()))?;
                0
            } else if remote.acked == self.len {
                remote.acked
            } else {
                let err = StoreError::CopyFailed {
                    node: remote.node.0,
                    pack: self.id.0,
                    detail: format!("its copy has {} bytes, the pack {}", remote.acked, self.len),
                };
                self.fail(&err);
                return Err(err);
            };
            let client = remote.client.clone();
            let id = self.id;
            let body = futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|item| (item, receiver))
            });
            let answer = tokio::spawn(async move { client.append(id, start, body).await });
            self.streams.push(AppendStream { node: remote.node, sender, answer });
        }
        Ok(())
    }

    /// Sends `piece` into stream `at`, waiting at most [`SEND_TIMEOUT`] for room.
    async fn send(&mut self, at: usize, piece: Bytes) -> Result<(), StoreError> {
        let stream = &self.streams[at];
        let node = stream.node;
        let sent = tokio::time::timeout(SEND_TIMEOUT, stream.sender.send(Ok(piece))).await;
        let detail = match sent {
            Ok(Ok(())) => return Ok(()),
            Err(_) => format!("it took no bytes for {SEND_TIMEOUT:?}"),
            // The request ended early: its answer says why.
            Ok(Err(_)) => {
                let stream = self.streams.remove(at);
                match tokio::time::timeout(SEND_TIMEOUT, stream.answer).await {
                    Ok(Ok(Err(err))) => err.to_string(),
                    _ => "the append request ended early".to_string(),
                }
            }
        };
        Err(StoreError::CopyFailed { node: node.0, pack: self.id.0, detail })
    }
}
