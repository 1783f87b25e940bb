//! The repairer task: one per node, repairing only while it holds the repair lock (tried again
//! every pass, so any node takes over when the holder dies), one pass every interval.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use deadpool_postgres::{ClientWrapper, Object};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::assess::{assess, extra_copies, targets};
use super::bucket::{SharedBucket, TokenBucket};
use super::copy::{Peers, copy_pack};
use super::work::{self, Cluster, PackWork};
use super::{BATCH, PACKS_AT_ONCE, REPAIR_LOCK, RepairConfig, RepairError, RepairStats};
use crate::ServerSecret;
use crate::catalog::CatalogPool;
use crate::node_api::PeerTls;
use crate::node_state::NodeId;
use crate::pack::PackId;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Packs below their wanted copies when the pass began.
    pub backlog: i64,
    /// Copies made.
    pub copies: u64,
    pub bytes: u64,
    /// Damaged, misplaced and draining copies dropped.
    pub dropped: u64,
    /// Items that failed (retried the next pass).
    pub failures: u64,
}

/// The repairer of one node.
pub struct Repairer {
    pool: CatalogPool,
    secret: ServerSecret,
    this_node: NodeId,
    config: RepairConfig,
    stats: Arc<RepairStats>,
    bucket: SharedBucket,
    /// The cluster CA that `https://` peers are trusted by.
    tls: Option<PeerTls>,
}

impl Repairer {
    /// The repairer that `this_node` runs over the catalog `pool`, reaching its peers with the
    /// cluster's `secret`.
    pub fn new(pool: CatalogPool, secret: ServerSecret, this_node: NodeId, config: RepairConfig) -> Self {
        let bucket = Arc::new(Mutex::new(TokenBucket::new(config.rate_bytes_per_sec, Instant::now())));
        Repairer { pool, secret, this_node, config, stats: Arc::default(), bucket, tls: None }
    }

    /// Reaches `https://` peers trusting `tls`'s cluster CA (without it, only `http://` ones).
    pub fn with_peer_tls(mut self, tls: Option<PeerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// What it did, for `/metrics`.
    pub fn stats(&self) -> Arc<RepairStats> {
        self.stats.clone()
    }

    /// Repairs every interval while it holds the repair lock, until `stop`. A pass that fails
    /// (the catalog unreachable) is logged and tried again the next interval.
    pub async fn run(self, stop: CancellationToken) {
        let mut lock: Option<ClientWrapper> = None;
        loop {
            match self.hold_lock(lock.take()).await {
                Ok(Some(held)) => {
                    let pass = tokio::select! {
                        pass = self.pass() => pass,
                        () = stop.cancelled() => return,
                    };
                    match pass {
                        // A backlog that nothing can be done about (no source, no target) is
                        // not logged every pass; the metric shows it.
                        Ok(report) if report.copies + report.dropped + report.failures > 0 => {
                            tracing::info!(node = self.this_node.0, ?report, "repair pass")
                        }
                        Ok(report) => tracing::debug!(?report, "repair pass"),
                        Err(err) => tracing::warn!(error = %err, "repair pass failed"),
                    }
                    lock = Some(held);
                }
                Ok(None) => self.stats.set_backlog(0),
                Err(err) => tracing::warn!(error = %err, "cannot take the repair lock"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.interval) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// The connection holding the repair lock: `held` while it is still open, else a new one
    /// if the lock is free; `None` while another node holds it.
    pub(super) async fn hold_lock(
        &self,
        held: Option<ClientWrapper>,
    ) -> Result<Option<ClientWrapper>, RepairError> {
        if let Some(client) = held {
            if client.simple_query("SELECT 1").await.is_ok() {
                return Ok(Some(client));
            }
            tracing::warn!("lost the repair lock's connection; taking the lock again");
        }
        let client = Object::take(self.pool.get().await?);
        let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&REPAIR_LOCK]).await?.get(0);
        if locked {
            tracing::info!(node = self.this_node.0, "this node repairs");
        }
        Ok(locked.then_some(client))
    }

    /// One pass over the packs that need work (at most one batch), fewest copies first, up to
    /// [`PACKS_AT_ONCE`] at a time (all within the one rate limit).
    ///
    /// # Errors
    /// Catalog errors reading the work; an item that fails is counted, not returned.
    pub async fn pass(&self) -> Result<PassReport, RepairError> {
        let client = self.pool.get().await?;
        let orphans = work::seal_orphans(&**client, self.config.grace).await?;
        if orphans > 0 {
            tracing::warn!(packs = orphans, "sealed the open packs of a writer gone past the grace period");
        }
        let cluster = work::cluster(&**client, self.config.grace).await?;
        let work = work::work(&**client, &cluster, BATCH).await?;
        drop(client);
        self.stats.set_backlog(work.backlog);
        let report = Mutex::new(PassReport { backlog: work.backlog, ..PassReport::default() });
        let (cluster, peers) = (Mutex::new(cluster), Peers::new(self.secret.clone(), self.tls.clone()));
        futures::stream::iter(&work.packs)
            .for_each_concurrent(PACKS_AT_ONCE, |pack| async {
                if let Err(err) = self.repair(pack, &cluster, &peers, &report).await {
                    lock(&report).failures += 1;
                    self.stats.failed();
                    tracing::warn!(pack = pack.id.0, error = %err, "repair of a pack failed; retried next pass");
                }
            })
            .await;
        Ok(report.into_inner().unwrap_or_else(PoisonError::into_inner))
    }

    /// Copies `pack` where it lacks copies; once it has them all, drops its damaged, misplaced
    /// and draining copies. The targets' room is taken in `cluster` when they are chosen, so
    /// that the packs repaired beside this one see it.
    async fn repair(
        &self,
        pack: &PackWork,
        cluster: &Mutex<Cluster>,
        peers: &Peers,
        report: &Mutex<PassReport>,
    ) -> Result<(), RepairError> {
        let (assessment, chosen) = {
            let mut cluster = lock(cluster);
            let assessment = assess(pack, &cluster);
            let chosen = targets(pack, &assessment, &cluster);
            for target in &chosen {
                cluster.add_held(target.node, pack.size);
            }
            (assessment, chosen)
        };
        let mut missing = assessment.missing();
        let mut made: Vec<NodeId> = Vec::new();
        if missing > 0 {
            let Some(source) = assessment.sources.first() else {
                tracing::debug!(pack = pack.id.0, "no live copy to repair from");
                return Ok(());
            };
            for target in chosen {
                if target.replaces_damaged {
                    // Its node refuses to delete a pack it holds a row of: the damaged copy is
                    // forgotten first (it serves no read), then its file replaced.
                    work::drop_copy(&**self.pool.get().await?, pack.id, target.node).await?;
                }
                let bytes = copy_pack(peers, pack.id, source, &target, &self.bucket).await?;
                let client = self.pool.get().await?;
                if !work::record_copy(&**client, pack.id, target.node).await? {
                    // GC retired the pack meanwhile: the copy is not needed.
                    if let Ok(peer) = peers.client(target.node, &target.url)
                        && let Err(err) = peer.delete_pack(pack.id).await
                    {
                        tracing::warn!(pack = pack.id.0, node = target.node.0, error = %err, "could not delete a copy no longer needed; the file stays on that node");
                    }
                    return Ok(());
                }
                tracing::info!(
                    pack = pack.id.0,
                    from = source.node.0,
                    to = target.node.0,
                    bytes,
                    "repaired a copy"
                );
                self.stats.copied(bytes);
                let mut report = lock(report);
                report.copies += 1;
                report.bytes += bytes;
                missing -= 1;
                made.push(target.node);
            }
        }
        if missing > 0 {
            tracing::debug!(pack = pack.id.0, missing, "no eligible node for the missing copies");
            return Ok(());
        }
        // A damaged copy replaced in place is whole now.
        let extra =
            if made.is_empty() { extra_copies(pack, &assessment, &lock(cluster)) } else { Vec::new() };
        for node in assessment.surplus().into_iter().chain(extra).filter(|node| !made.contains(node)) {
            let url = lock(cluster).node(node).filter(|n| n.live).and_then(|n| n.internal_url.clone());
            self.drop_extra(pack.id, node, url, peers).await?;
            lock(report).dropped += 1;
        }
        Ok(())
    }

    /// Drops the row of a damaged, misplaced, draining or extra copy and asks its node (at `url`, when
    /// live) to delete the file; a node that refuses or is down keeps a file nothing points at.
    async fn drop_extra(
        &self,
        pack: PackId,
        node: NodeId,
        url: Option<String>,
        peers: &Peers,
    ) -> Result<(), RepairError> {
        let client = self.pool.get().await?;
        work::drop_copy(&**client, pack, node).await?;
        drop(client);
        tracing::info!(pack = pack.0, node = node.0, "dropped a damaged, misplaced, draining or extra copy");
        let Some(url) = url else { return Ok(()) };
        if let Err(err) = peers.client(node, &url)?.delete_pack(pack).await {
            tracing::info!(pack = pack.0, node = node.0, error = %err, "the copy's file stays");
        }
        Ok(())
    }
}

/// The value behind `mutex`, also after a panic elsewhere (the values here stay consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
