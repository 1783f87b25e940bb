//! The writer's side of the read cache: after a write commits and before it is acknowledged,
//! what it may have made stale is dropped from this node's cache and from every node that may
//! hold a lease, over the internal API. A node that does not confirm within [`CONFIRM_WITHIN`]
//! is fenced, and the write waits until that node's lease has surely run out.
//!
//! Every write that binds or deletes a key invalidates it, also when it found nothing to
//! replace: an earlier write's invalidation may have failed (the catalog was unreachable) after
//! its commit, and a later write must not be acknowledged over an entry some node still holds.
//! The work runs in a task of its own, so a client that goes away mid-way cannot cut it short;
//! one that goes away between the commit and the invalidation leaves a [`Pending`] guard that
//! sends it on its way out.

use std::time::Duration;

use futures::future::join_all;

use super::lease::LEASE;
use super::{Addressed, Invalidation};
use crate::catalog::CatalogError;
use crate::node_state::NodeId;
use crate::store::{ChunkStore, StoreError};

/// How long a peer may take to confirm an invalidation before it is fenced.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(1);
/// How long a write waits after fencing a peer: a quarter more than a lease, for clocks that run
/// at slightly different rates. Any lease the peer holds came from a renewal that read the old
/// fence, sent before the fence was raised.
pub const FENCE_WAIT: Duration = Duration::from_millis(LEASE.as_millis() as u64 * 5 / 4);
/// Writers ask every node that stamped its lease within this: twice a lease, so that a catalog
/// whose clock steps forward by up to a lease still shows every leased node.
const STAMPED_WITHIN: Duration = Duration::from_secs(LEASE.as_secs() * 2);
/// How long a write waits for its invalidation before it answers 503; the invalidation goes on
/// in the background (the write committed, so a retry by the client is harmless).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// How long the background goes on asking a failing catalog.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// A peer that may hold a lease: its id and where its internal API is, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub(crate) node: NodeId,
    pub(crate) url: Option<String>,
}

/// Which other nodes stamped a lease lately (see [`STAMPED_WITHIN`]): the writers' question
/// after each commit, over this node's id (`$1`) and the window in seconds (`$2`).
pub const LEASED_PEERS: &str = "SELECT id, internal_url FROM storage_nodes \
                                WHERE id <> $1 AND cache_lease_at > now() - make_interval(secs => $2)";

/// The parameters of [`LEASED_PEERS`] for `store`'s node.
pub fn leased_peers_params(store: &ChunkStore) -> (i32, f64) {
    (store.node().0, STAMPED_WITHIN.as_secs_f64())
}

/// The answer of [`LEASED_PEERS`].
pub fn leased_from_rows(rows: &[tokio_postgres::Row]) -> Vec<Leased> {
    rows.iter().map(|row| Leased { node: NodeId(row.get(0)), url: row.get(1) }).collect()
}

/// An invalidation a write owes from the moment it sends its commit: confirmed with
/// [`Pending::confirm`] once the commit returned, or, if the write's future is dropped after
/// [`Pending::arm`] (a client that hangs up while the commit is on its way, a commit that failed
/// or was cut short), sent anyway in the background when the guard goes: at once, and again after
/// [`SETTLE`], since a commit already sent may still land after the first one (and a read in
/// between would cache the old row). A guard dropped before it was armed sends nothing.
pub struct Pending {
    store: ChunkStore,
    what: Option<Invalidation>,
    armed: std::sync::atomic::AtomicBool,
}

/// How long after a dropped write's first invalidation its second one goes.
pub const SETTLE: Duration = Duration::from_secs(5);

impl Pending {
    /// Owes `what` once armed.
    pub fn new(store: &ChunkStore, what: Invalidation) -> Self {
        Pending { store: store.clone(), what: Some(what), armed: false.into() }
    }

    /// Marks the commit as sent: from here a dropped guard still sends the invalidation. Call
    /// it just before the commit (or the one statement that changes the catalog).
    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether it is armed.
    #[cfg(test)]
    pub fn is_armed(&self) -> bool {
        self.armed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes [`Pending::arm`] back: the commit (or statement) sent is known to have changed
    /// nothing, Postgres having refused or undone it.
    pub fn disarm(&self) {
        self.armed.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends it now, and waits as [`everywhere`] does.
    ///
    /// # Errors
    /// See [`everywhere`].
    pub async fn confirm(mut self) -> Result<(), StoreError> {
        match self.what.take() {
            Some(what) => everywhere(&self.store, what, None).await,
            None => Ok(()),
        }
    }

    /// [`Pending::confirm`] with the answer of [`LEASED_PEERS`] as Postgres ran it after the
    /// write's commit, on the write's own connection (sent behind the write in the same round
    /// trip), so that it is not asked again.
    ///
    /// # Errors
    /// See [`everywhere`].
    pub async fn confirm_with(mut self, peers: Vec<Leased>) -> Result<(), StoreError> {
        match self.what.take() {
            Some(what) => everywhere(&self.store, what, Some(peers)).await,
            None => Ok(()),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(what) = self.what.take().filter(|_| self.armed.load(std::sync::atomic::Ordering::Relaxed))
        else {
            return;
        };
        self.store.read_cache().invalidate(&what);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            runtime.spawn(async move {
                let _ = confirm_everywhere(store.clone(), what.clone(), None).await;
                tokio::time::sleep(SETTLE).await;
                store.read_cache().invalidate(&what);
                let _ = confirm_everywhere(store, what, None).await;
            });
        }
    }
}

/// Drops `what` from every node's read cache: this one's at once, each leased peer's over the
/// internal API, fencing and waiting out the peers that do not confirm. `peers`: the leased
/// peers as read after the write's commit, if they were (else they are read here).
///
/// # Errors
/// [`StoreError::Unconfirmed`] when that did not finish within [`ANSWER_WITHIN`] (the catalog
/// fails); it goes on in the background.
pub async fn everywhere(
    store: &ChunkStore,
    what: Invalidation,
    peers: Option<Vec<Leased>>,
) -> Result<(), StoreError> {
    store.read_cache().invalidate(&what);
    if peers.as_ref().is_some_and(Vec::is_empty) {
        // Nobody else to tell: no task, no wait.
        return Ok(());
    }
    let task = tokio::spawn(confirm_everywhere(store.clone(), what, peers));
    match tokio::time::timeout(ANSWER_WITHIN, task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(err))) => Err(StoreError::Unconfirmed(err.to_string())),
        Ok(Err(err)) => Err(StoreError::Unconfirmed(err.to_string())),
        Err(_) => Err(StoreError::Unconfirmed(format!("not done within {ANSWER_WITHIN:?}; still trying"))),
    }
}

async fn confirm_everywhere(
    store: ChunkStore,
    what: Invalidation,
    peers: Option<Vec<Leased>>,
) -> Result<(), CatalogError> {
    let confirmed = ask_peers(&store, &what, peers).await;
    if let Err(err) = &confirmed {
        tracing::error!(
            error = %err,
            bucket = what.bucket,
            "gave up confirming a read cache invalidation: the catalog kept failing"
        );
    }
    confirmed
}

async fn ask_peers(
    store: &ChunkStore,
    what: &Invalidation,
    peers: Option<Vec<Leased>>,
) -> Result<(), CatalogError> {
    let peers = match peers {
        Some(peers) => peers,
        None => with_retries(|| leased_peers(store)).await?,
    };
    if peers.is_empty() {
        return Ok(());
    }
    let suspects = store.peer_suspects();
    let asked = peers.into_iter().map(|peer| {
        let suspect = suspects.contains(&peer.node);
        async move {
            let confirmed = match &peer.url {
                Some(url) if !suspect => confirm(store, peer.node, url, what).await,
                _ => false,
            };
            (peer.node, confirmed)
        }
    });
    let unconfirmed: Vec<NodeId> =
        join_all(asked).await.into_iter().filter(|(_, confirmed)| !confirmed).map(|(node, _)| node).collect();
    if unconfirmed.is_empty() {
        return Ok(());
    }
    with_retries(|| fence(store, &unconfirmed)).await?;
    for node in &unconfirmed {
        store.read_cache().note_fence();
        store.note_peer_failure(*node);
    }
    tracing::warn!(
        nodes = ?unconfirmed.iter().map(|node| node.0).collect::<Vec<_>>(),
        "peers did not confirm a read cache invalidation; fenced them, waiting out their lease"
    );
    tokio::time::sleep(FENCE_WAIT).await;
    Ok(())
}

/// Whether `node` at `url` confirmed the invalidation in time.
async fn confirm(store: &ChunkStore, node: NodeId, url: &str, what: &Invalidation) -> bool {
    let Ok(client) = store.peer(node, url) else { return false };
    let addressed = Addressed { node: node.0, what: what.clone() };
    match tokio::time::timeout(CONFIRM_WITHIN, client.invalidate_reads(&addressed)).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::debug!(node = node.0, error = %err, "a peer refused a read cache invalidation");
            false
        }
        Err(_) => false,
    }
}

/// The other nodes that stamped a lease lately.
async fn leased_peers(store: &ChunkStore) -> Result<Vec<Leased>, CatalogError> {
    let client = store.catalog().get().await?;
    // Prepared once per connection: every write asks this after its commit (a small PUT's
    // rides behind its statement instead, `model::one_statement`).
    let statement = client.prepare_cached(LEASED_PEERS).await?;
    let (node, window) = leased_peers_params(store);
    let rows = client.query(&statement, &[&node, &window]).await?;
    Ok(leased_from_rows(&rows))
}

/// Raises the fence of `nodes`: each empties its cache, and clears its stamp, at its next
/// renewal.
async fn fence(store: &ChunkStore, nodes: &[NodeId]) -> Result<(), CatalogError> {
    let ids: Vec<i32> = nodes.iter().map(|node| node.0).collect();
    let client = store.catalog().get().await?;
    client
        .execute("UPDATE storage_nodes SET cache_fence = cache_fence + 1 WHERE id = ANY($1)", &[&ids])
        .await?;
    Ok(())
}

/// `call`, again after a pause (growing to 5 s) while the catalog fails, for up to
/// [`GIVE_UP_AFTER`].
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, CatalogError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CatalogError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            // The caller logs the giving up, with what it was for.
            Err(err) if started.elapsed() >= GIVE_UP_AFTER => return Err(err),
            Err(err) => {
                tracing::debug!(error = %err, "the catalog failed confirming a read cache invalidation");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
