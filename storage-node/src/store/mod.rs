//! The chunk store: put a stream of bytes for a tenant, read any range of it back, delete it.
//!
//! Objects are split by content-defined chunking, chunks are named by keyed BLAKE3 per tenant
//! and stored once per tenant in append-only packs, compressed where that pays. The catalog
//! records where every chunk lives (keyed by storage node) and how many manifest entries
//! reference it. See `docs/storage.md` for the write path, the read path and GC.
//!
//! [`ChunkStore`] is a cheap handle; clone it freely.

pub mod allocator;
mod batch_commit;
mod commit;
mod compact;
mod error;
mod gc;
mod ingest;
mod memory_budget;
mod objects;
pub mod offline;
mod open_pack;
mod orphans;
mod peers;
mod placing;
mod read;
mod read_chunk;
mod reconcile;
mod scrub;
mod upload;
mod usage;
mod verify;
mod writers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub(crate) use batch_commit::{BatchedCommit, BatchedCommits};
pub(crate) use commit::OneStatementCommit;
pub use commit::StoredObject;
pub(crate) use commit::record_object;
pub use error::StoreError;
pub use gc::GcReport;
pub use ingest::{INLINE_MAX_BYTES, Ingested, PutOptions};
pub use memory_budget::{MemoryBudget, MemoryCharge, MemoryLimits, MemoryStats};
pub use objects::Usage;
pub use orphans::{Referrer, S3_REFERRERS};
pub use peers::REMOTE_READ_TIMEOUT;
pub(crate) use read::manifest_head_sql;
pub use read::{ManifestHead, ObjectRead, WHOLE_MANIFEST_ENTRIES};
pub use reconcile::{RESTORED_MARKER, ReconcileReport, mark_catalog_restored};
pub use scrub::{DamagedChunk, ScrubReport};
#[cfg(test)]
pub(crate) use usage::tenant_lock_exclusive;
pub use usage::{QUOTA_LOCK_MARGIN, needs_exclusive};
pub(crate) use usage::{lock_tenant, tenant_lock_shared, tenant_lock_shared_at_once, used_logical_bytes};
pub use writers::{PACKS_PER_CLASS, PackWriterStats};

use crate::DataDir;
use crate::catalog::CatalogPool;
use crate::chunker::ChunkSizes;
use crate::compress::CompressionPolicy;
use crate::pack::{PackMaps, pack_path};
use crate::read_cache::ReadCache;
use crate::{ChunkId, ServerSecret, TenantId};
use writers::WriterPool;

/// An object's id in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ObjectId(pub i64);

/// Tunables of the chunk store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub chunk_sizes: ChunkSizes,
    pub compression: CompressionPolicy,
    /// A pack is sealed once it grows past this many bytes.
    pub pack_target_bytes: u64,
    /// GC compacts a sealed pack whose live share falls below this.
    pub compact_below_live_share: f64,
    /// How long a retired pack's file is kept for readers that still hold its old location.
    #[serde(with = "seconds")]
    pub retire_grace: Duration,
    /// How long an upload's pin keeps a reused chunk safe from GC.
    #[serde(with = "seconds")]
    pub pin_duration: Duration,
    /// How many bytes of recently verified chunks stay cached for range reads.
    pub verified_cache_bytes: u64,
    /// How many bytes of object lookups (with small objects' bytes) stay cached for GET and
    /// HEAD (`crate::read_cache`).
    pub read_cache_bytes: u64,
    /// The memory budget of in-flight uploads (set from `--memory-budget-mb`, not in `[store]`).
    #[serde(skip)]
    pub memory: MemoryLimits,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            chunk_sizes: ChunkSizes::default(),
            compression: CompressionPolicy::default(),
            pack_target_bytes: 256 * 1024 * 1024,
            compact_below_live_share: 0.5,
            retire_grace: Duration::from_secs(300),
            pin_duration: Duration::from_secs(24 * 3600),
            verified_cache_bytes: 64 * 1024 * 1024,
            // 2,000 hot 16 KiB objects take 33 MiB with their lookups: at 32 MiB, 3.5% of such
            // a site's GETs went to the catalog at every pass, and cost it a quarter of its rate.
            read_cache_bytes: 64 * 1024 * 1024,
            memory: MemoryLimits::default(),
        }
    }
}

mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// Which storage node this process is.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub zone: String,
}

pub use crate::node_state::NodeId;

/// The chunk store of one storage node.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

type VerifiedCache = quick_cache::sync::Cache<(TenantId, ChunkId), Bytes, BytesWeighter>;

#[derive(Clone)]
struct BytesWeighter;

impl quick_cache::Weighter<(TenantId, ChunkId), Bytes> for BytesWeighter {
    fn weight(&self, _: &(TenantId, ChunkId), value: &Bytes) -> u64 {
        value.len().max(1) as u64
    }
}

struct Inner {
    pool: CatalogPool,
    node: NodeId,
    packs_dir: PathBuf,
    secret: ServerSecret,
    config: StoreConfig,
    writers: WriterPool,
    maps: PackMaps,
    verified: VerifiedCache,
    reads: ReadCache,
    peers: peers::Peers,
    /// One GC pass at a time on this node, and what passes remember (`compact::Punched`).
    gc_lock: tokio::sync::Mutex<compact::Punched>,
    memory: MemoryBudget,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore").field("node", &self.node).field("packs_dir", &self.packs_dir).finish()
    }
}

impl ChunkStore {
    /// Opens the chunk store of `data_dir` as storage node `node`.
    ///
    /// Registers the node, loads (or creates) the server secret, and seals the packs that a
    /// previous process left open: their uncommitted tails are garbage for GC. Then it moves
    /// pack ids past every pack file on disk and, after a catalog restore (or whenever the
    /// catalog and the pack files disagree), reconciles the catalog with the packs (see
    /// `reconcile`).
    ///
    /// # Errors
    /// [`StoreError`] when the catalog, the secret or the packs directory is unusable.
    pub async fn open(
        pool: CatalogPool,
        data_dir: &DataDir,
        node: &NodeSpec,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        config.chunk_sizes.validate().map_err(|msg| StoreError::Task(msg.to_string()))?;
        let secret =
            ServerSecret::load_or_create(data_dir).map_err(|err| StoreError::Task(err.to_string()))?;
        // Packs hold every tenant's bytes: 0700 directory, 0600 files (older ones tightened here).
        let packs_dir = data_dir.private_dir(crate::data_dir::PACKS_DIR)?;
        let tightened = crate::data_dir::make_files_private(&packs_dir)
            .map_err(|source| StoreError::io(&packs_dir, source))?;
        if tightened > 0 {
            tracing::info!(packs = tightened, "made pack files readable by Silo's user only");
        }
        // Transfers a crash cut short, whether or not this start serves the internal API.
        let swept =
            crate::pack::sweep_incoming(&packs_dir).map_err(|source| StoreError::io(&packs_dir, source))?;
        if swept > 0 {
            tracing::warn!(files = swept, "removed pack transfers a crash left unfinished");
        }
        let client = pool.get().await?;
        let row = client
            .query_one(
                // Only a new name is inserted here: a registered node's zone and owner change
                // in the registry alone (`model::node::register`), under its checks.
                "INSERT INTO storage_nodes (name, zone) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                &[&node.name, &node.zone],
            )
            .await?;
        let node_id = NodeId(row.get(0));
        let abandoned = client
            .query("SELECT id, size FROM packs WHERE node_id = $1 AND state = 'open'", &[&node_id.0])
            .await?;
        for row in abandoned {
            let id = crate::pack::PackId(row.get(0));
            // The local copy's length, when this node holds one; else the length every copy
            // had reached at the last commit into it.
            let size =
                std::fs::metadata(pack_path(&packs_dir, id)).map_or(row.get::<_, i64>(1) as u64, |m| m.len());
            writers::seal_pack(&client, id, size).await?;
            tracing::info!(pack = id.0, size, "sealed a pack left open by an earlier process");
        }
        drop(client);
        let inner = Inner {
            verified: quick_cache::sync::Cache::with_weighter(
                256,
                config.verified_cache_bytes.max(1),
                BytesWeighter,
            ),
            reads: ReadCache::new(config.read_cache_bytes, config.retire_grace / 2),
            maps: PackMaps::new(&packs_dir),
            writers: WriterPool::default(),
            peers: peers::Peers::default(),
            gc_lock: tokio::sync::Mutex::new(compact::Punched::default()),
            memory: MemoryBudget::new(config.memory),
            pool,
            node: node_id,
            packs_dir,
            secret,
            config,
        };
        let store = ChunkStore { inner: Arc::new(inner) };
        store.reconcile_at_start(data_dir.path()).await?;
        Ok(store)
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// The catalog pool the store uses.
    pub fn catalog(&self) -> &CatalogPool {
        &self.inner.pool
    }

    /// The server secret (for sealing secrets at rest).
    pub fn server_secret(&self) -> &ServerSecret {
        &self.inner.secret
    }

    /// The memory budget of in-flight uploads: its size and what is in use.
    pub fn memory_stats(&self) -> MemoryStats {
        self.inner.memory.stats()
    }

    /// The open packs and how often uploads synced them or shared another upload's sync.
    pub fn pack_writer_stats(&self) -> PackWriterStats {
        self.inner.writers.stats()
    }

    /// The node's cache of object lookups; it answers only while
    /// [`crate::read_cache::lease::keep_leased`] keeps it leased.
    pub fn read_cache(&self) -> &ReadCache {
        &self.inner.reads
    }

    /// The directory of the pack files.
    pub fn packs_dir(&self) -> &std::path::Path {
        &self.inner.packs_dir
    }
}
