//! One copy of a pack, from a live copy to a target node, streamed through memory: the source's
//! `GET` is the target's `PUT` body, throttled by the repairer's bucket, and never touches this
//! node's disk (an owned tenant's bytes stay on its own nodes even when a shared node repairs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::RepairError;
use super::assess::{CopyTarget, Source};
use super::bucket::{SharedBucket, throttle};
use crate::ServerSecret;
use crate::node_api::{ClientError, NodeClient};
use crate::pack::PackId;
use crate::store::NodeId;

/// The internal API clients of one pass, one per node (each keeps its peer's version), shared
/// by the packs repaired at the same time.
pub struct Peers {
    secret: ServerSecret,
    clients: Mutex<HashMap<NodeId, Arc<NodeClient>>>,
}

impl Peers {
    pub fn new(secret: ServerSecret) -> Self {
        Peers { secret, clients: Mutex::default() }
    }

    /// The client of `node` at `url`.
    ///
    /// # Errors
    /// [`RepairError::Peer`] when the client cannot be built.
    pub fn client(&self, node: NodeId, url: &str) -> Result<Arc<NodeClient>, RepairError> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&node) {
            return Ok(client.clone());
        }
        let client = Arc::new(NodeClient::new(url, &self.secret).map_err(RepairError::peer(node))?);
        clients.insert(node, client.clone());
        Ok(client)
    }
}

/// Copies pack `pack` from `source` to `target`, at most as fast as `bucket` lets it (the
/// target verifies every record before it keeps the pack); a damaged copy at the target is
/// deleted first, and so is a file the target holds with other bytes that no row records (left
/// by a failed repair), then the copy is sent once more. Returns the bytes sent. The caller
/// records the copy.
///
/// # Errors
/// [`RepairError::Peer`] naming the node that failed (the target, when the transfer broke).
pub async fn copy_pack(
    peers: &Peers,
    pack: PackId,
    source: &Source,
    target: &CopyTarget,
    bucket: &SharedBucket,
) -> Result<u64, RepairError> {
    if target.replaces_damaged {
        delete_at(peers, pack, target).await?;
    }
    let send = async || -> Result<u64, RepairError> {
        let (len, stream) = peers
            .client(source.node, &source.url)?
            .get_pack_stream(pack)
            .await
            .map_err(RepairError::peer(source.node))?;
        peers
            .client(target.node, &target.url)?
            .put_pack_stream(pack, len, throttle(stream, bucket.clone()))
            .await
            .map_err(RepairError::peer(target.node))?;
        Ok(len)
    };
    match send().await {
        Err(RepairError::Peer { source: ClientError::Refused { status: 409, code, .. }, .. })
            if code == "pack_conflict" =>
        {
            delete_at(peers, pack, target).await?;
            send().await
        }
        sent => sent,
    }
}

async fn delete_at(peers: &Peers, pack: PackId, target: &CopyTarget) -> Result<(), RepairError> {
    peers.client(target.node, &target.url)?.delete_pack(pack).await.map_err(RepairError::peer(target.node))
}
