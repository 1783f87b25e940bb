//! The copies of packs on other nodes: a client of each peer's internal API (made on first use
//! from the URL the peer registered), reading a chunk from the first copy that answers with the
//! right bytes, and marking a copy that answers with wrong bytes damaged so that repair replaces
//! it (read repair).
//!
//! A read tries the copies on live nodes first, each within [`REMOTE_READ_TIMEOUT`], so a hung
//! peer (stopped, not dead) costs one timeout and then only until its heartbeat goes stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::verify::{ChunkLocation, ReadMode};
use super::{ChunkStore, NodeId, StoreError};
use crate::node_api::{ClientError, IDLE_TIMEOUT, NodeClient, PeerTls};
use crate::pack::{PackId, RECORD_HEADER_LEN, RecordHeader, RecordView};
use crate::placement::LIVE_WITHIN;

/// How long one peer may take to answer a chunk read before the next copy is tried.
pub const REMOTE_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer that failed a write or a read is left out of new packs. A dead peer's
/// heartbeat takes up to `LIVE_WITHIN` to go stale; meanwhile retries must not land on it.
const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// Clients of the peers this node has talked to, by node id and the URL they were made for,
/// and the peers that failed lately.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    clients: Mutex<HashMap<NodeId, (String, Arc<NodeClient>)>>,
    failed: Mutex<HashMap<NodeId, Instant>>,
    /// The cluster CA that `https://` peers' certificates must chain to.
    tls: Mutex<Option<PeerTls>>,
}

impl Peers {
    /// Notes that `node` failed a request: new packs leave it out for [`SUSPECT_FOR`].
    pub fn note_failure(&self, node: NodeId) {
        lock(&self.failed).insert(node, Instant::now());
    }

    /// The peers that failed within [`SUSPECT_FOR`].
    pub fn suspects(&self) -> Vec<NodeId> {
        let mut failed = lock(&self.failed);
        failed.retain(|_, at| at.elapsed() < SUSPECT_FOR);
        failed.keys().copied().collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A copy of a pack on another node, as the catalog records it.
#[derive(Debug, Clone)]
pub(crate) struct RemoteCopy {
    pub node: NodeId,
    pub url: String,
}

impl ChunkStore {
    /// Reaches peers whose internal API serves HTTPS trusting only `tls`'s cluster CA (without
    /// it, a peer at an `https://` URL cannot be reached). Clients made before are dropped.
    pub fn set_peer_tls(&self, tls: PeerTls) {
        *lock(&self.inner.peers.tls) = Some(tls);
        lock(&self.inner.peers.clients).clear();
    }

    /// The peers that failed a request of this node lately.
    pub(crate) fn peer_suspects(&self) -> Vec<NodeId> {
        self.inner.peers.suspects()
    }

    /// Notes that `node` failed a request: new packs leave it out for a while.
    pub(crate) fn note_peer_failure(&self, node: NodeId) {
        self.inner.peers.note_failure(node);
    }

    /// The client of `node`'s internal API at `url`, made once per URL.
    pub(crate) fn peer(&self, node: NodeId, url: &str) -> Result<Arc<NodeClient>, StoreError> {
        let mut clients = lock(&self.inner.peers.clients);
        if let Some((known, client)) = clients.get(&node)
            && known == url
        {
            return Ok(client.clone());
        }
        let tls = lock(&self.inner.peers.tls).clone();
        let client = Arc::new(
            NodeClient::with_tls(url, &self.inner.secret, IDLE_TIMEOUT, tls.as_ref())
                .map_err(|err| StoreError::Task(format!("a client of node {}: {err}", node.0)))?,
        );
        clients.insert(node, (url.to_string(), client.clone()));
        Ok(client)
    }

    /// The copies of `pack` on other nodes that serve the internal API: sound ones on live
    /// nodes first, damaged ones last (a damaged copy is still right but for some records, and
    /// every record read is verified).
    pub(crate) async fn remote_copies(&self, pack: PackId) -> Result<Vec<RemoteCopy>, StoreError> {
        let client = self.inner.pool.get().await?;
        let rows = client
            .query(
                "SELECT r.node_id, n.internal_url FROM pack_replicas r JOIN storage_nodes n ON n.id = r.node_id \
                 WHERE r.pack_id = $1 AND r.node_id <> $2 \
                   AND n.internal_url IS NOT NULL AND n.state <> 'removed' \
                 ORDER BY r.state = 'damaged', (n.stopped_at IS NULL \
                           AND coalesce(n.heartbeat_at > now() - make_interval(secs => $3), false)) DESC, \
                          random()",
                &[&pack.0, &self.inner.node.0, &LIVE_WITHIN.as_secs_f64()],
            )
            .await?;
        Ok(rows.iter().map(|row| RemoteCopy { node: NodeId(row.get(0)), url: row.get(1) }).collect())
    }

    /// The chunk `at`, verified, from the first of `copies` (the copies of its pack on other
    /// nodes, as [`ChunkStore::remote_copies`] gave them) that has it right. A copy that answers
    /// with wrong bytes is marked damaged.
    ///
    /// # Errors
    /// [`StoreError::ChunkUnavailable`] when no copy could be read, and the last copy's
    /// [`StoreError::Integrity`] when every copy answered with wrong bytes.
    pub(crate) async fn read_from_copies(
        &self,
        at: &ChunkLocation,
        mode: ReadMode,
        copies: Vec<RemoteCopy>,
    ) -> Result<Bytes, StoreError> {
        Ok(self.fetch_from_copies(at, mode, copies).await?.1)
    }

    /// The record `at` as stored (its header and stored bytes), verified, from the first of
    /// `copies` that has it right, as [`ChunkStore::read_from_copies`] reads it: for copying a
    /// record into another pack without decompressing it.
    ///
    /// # Errors
    /// [`StoreError::ChunkUnavailable`] when no copy could be read, and the last copy's
    /// [`StoreError::Integrity`] when every copy answered with wrong bytes.
    pub(crate) async fn record_from_copies(
        &self,
        at: &ChunkLocation,
        copies: Vec<RemoteCopy>,
    ) -> Result<RecordView, StoreError> {
        let (record, _raw) = self.fetch_from_copies(at, ReadMode::Audit, copies).await?;
        let header = RecordHeader::decode(&record)
            .ok_or_else(|| super::verify::integrity(at, "not a record header".into()))?;
        Ok(RecordView { header, data: record.slice(RECORD_HEADER_LEN as usize..) })
    }

    /// The record `at` (as stored) and its raw bytes, verified, from the first of `copies`
    /// that has it right.
    async fn fetch_from_copies(
        &self,
        at: &ChunkLocation,
        mode: ReadMode,
        mut copies: Vec<RemoteCopy>,
    ) -> Result<(Bytes, Bytes), StoreError> {
        // Peers that failed lately go last (a stable sort keeps the catalog's order otherwise).
        let suspects = self.inner.peers.suspects();
        copies.sort_by_key(|copy| suspects.contains(&copy.node));
        let range = at.offset..at.offset + RECORD_HEADER_LEN + u64::from(at.stored_len);
        // The last damaged copy's error, while every copy tried answered with wrong bytes.
        let mut all_damaged: Option<StoreError> = None;
        let mut unanswered = false;
        for copy in &copies {
            let client = match self.peer(copy.node, &copy.url) {
                Ok(client) => client,
                Err(err) => {
                    tracing::warn!(node = copy.node.0, error = %err, "no client for a peer; trying the next copy");
                    unanswered = true;
                    continue;
                }
            };
            let answer =
                tokio::time::timeout(REMOTE_READ_TIMEOUT, client.read_range(at.pack, range.clone())).await;
            let bytes = match answer {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(err)) => {
                    tracing::warn!(node = copy.node.0, pack = at.pack.0, error = %err, "a peer could not serve a chunk; trying the next copy");
                    // A peer that answers (it no longer holds the pack, say) is not failing.
                    if !matches!(err, ClientError::Refused { .. }) {
                        self.inner.peers.note_failure(copy.node);
                    }
                    unanswered = true;
                    continue;
                }
                Err(_) => {
                    tracing::warn!(
                        node = copy.node.0,
                        pack = at.pack.0,
                        "a peer did not answer in time; trying the next copy"
                    );
                    self.inner.peers.note_failure(copy.node);
                    unanswered = true;
                    continue;
                }
            };
            let store = self.clone();
            let location = *at;
            let record = bytes.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let header = RecordHeader::decode(&bytes)
                    .ok_or_else(|| super::verify::integrity(&location, "not a record header".into()))?;
                store.check_record(&location, &header, &bytes.slice(RECORD_HEADER_LEN as usize..), mode)
            })
            .await?;
            match checked {
                Ok(raw) => return Ok((record, raw)),
                Err(err) => {
                    tracing::error!(node = copy.node.0, error = %err, "a peer's copy of a pack is damaged");
                    self.mark_damaged(at.pack, copy.node).await;
                    all_damaged = Some(err);
                }
            }
        }
        match all_damaged {
            // Every copy answered, and each was wrong: no retry reads it right.
            Some(damaged) if !unanswered => Err(damaged),
            _ => Err(StoreError::ChunkUnavailable { chunk: at.chunk }),
        }
    }

    /// Notes the peer that `err` names as failed, when it is a failed copy.
    pub(crate) fn note_copy_failure(&self, err: &StoreError) {
        if let StoreError::CopyFailed { node, .. } = err {
            self.inner.peers.note_failure(NodeId(*node));
        }
    }

    /// Records that `node`'s copy of `pack` holds wrong bytes: reads skip it and repair
    /// replaces it. A failure is logged (the next read finds the damage again).
    pub(crate) async fn mark_damaged(&self, pack: PackId, node: NodeId) {
        let marked = async {
            let client = self.inner.pool.get().await?;
            client
                .execute(
                    "UPDATE pack_replicas SET state = 'damaged' WHERE pack_id = $1 AND node_id = $2",
                    &[&pack.0, &node.0],
                )
                .await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(err) = marked {
            tracing::warn!(pack = pack.0, node = node.0, error = %err, "could not mark a damaged copy");
        }
    }
}
