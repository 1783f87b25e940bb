//! Chunk identity: keyed BLAKE3 with a [`ChunkKey`] of each tenant's own.
//!
//! A chunk's id is `BLAKE3-keyed(chunk key, raw bytes)`. The chunk key is derived from the
//! [`ServerSecret`] and the tenant id, so equal content in two tenants gets unrelated ids: dedup
//! happens within a tenant and never across tenants, and one tenant cannot probe for another's
//! files. The content-defined chunker's gear table is seeded per tenant too, so chunk
//! boundaries do not leak content across tenants either.

use std::fmt;

use crate::server_secret::ServerSecret;
use crate::tenant_id::TenantId;

const CHUNK_KEY_CONTEXT: &str = "silo 2026-11 per-tenant chunk id key";
const GEAR_SEED_CONTEXT: &str = "silo 2026-11 per-tenant chunker seed";

/// The 32-byte keyed BLAKE3 hash that names a chunk within its tenant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Reads an id from catalog bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(ChunkId)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// One tenant's chunk-naming key.
#[derive(Clone)]
pub struct ChunkKey([u8; 32]);

impl ChunkKey {
    /// The key that names `tenant`'s chunks under `secret`.
    pub fn of(secret: &ServerSecret, tenant: TenantId) -> Self {
        ChunkKey(secret.derive_key(CHUNK_KEY_CONTEXT, &tenant.0.to_le_bytes()))
    }

    /// The id of a chunk with these raw bytes, hashed on the calling thread. Reads and
    /// uploads keep several chunks in flight, which is what spreads hashing over the cores:
    /// splitting one chunk over a thread pool as well (blake3's `update_rayon`) cost a 1 GiB
    /// GET about a quarter of its CPU in hand-offs and idle spinning (docs/benchmarks.md,
    /// 2026-12-01).
    pub fn chunk_id(&self, raw: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.0, raw).as_bytes())
    }

    /// A hasher that names the chunk whose raw bytes are written into it, for bytes that are
    /// streamed rather than held (a pack received from a peer is checked this way).
    pub(crate) fn hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0)
    }

    /// The key's bytes, for the tree-level hashing of [`crate::chunk_tree`].
    pub(crate) fn bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The seed of this tenant's chunker gear table.
    pub fn gear_seed(&self) -> u64 {
        let seed = blake3::derive_key(GEAR_SEED_CONTEXT, &self.0);
        u64::from_le_bytes(seed[..8].try_into().unwrap_or_default())
    }
}

impl ServerSecret {
    /// The key that names `tenant`'s chunks.
    pub fn chunk_key(&self, tenant: TenantId) -> ChunkKey {
        ChunkKey::of(self, tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_content_in_two_tenants_gets_unrelated_ids() {
        let secret = ServerSecret::from_bytes([7; 32]);
        let a = secret.chunk_key(TenantId(1));
        let b = secret.chunk_key(TenantId(2));
        assert_eq!(a.chunk_id(b"frame"), a.chunk_id(b"frame"));
        assert_ne!(a.chunk_id(b"frame"), b.chunk_id(b"frame"));
        assert_ne!(a.gear_seed(), b.gear_seed());
    }

    #[test]
    fn another_server_secret_gives_other_ids() {
        let one = ServerSecret::from_bytes([1; 32]).chunk_key(TenantId(1));
        let two = ServerSecret::from_bytes([2; 32]).chunk_key(TenantId(1));
        assert_ne!(one.chunk_id(b"frame"), two.chunk_id(b"frame"));
    }
}
