//! Chunk identity: keyed BLAKE3 with a key of each tenant's own.
//!
//! A chunk's id is `BLAKE3-keyed(tenant key, raw bytes)`. The tenant key is derived from the
//! server secret and the tenant id, so equal content in two tenants gets unrelated ids: dedup
//! happens within a tenant and never across tenants, and one tenant cannot probe for another's
//! files. The content-defined chunker's gear table is seeded per tenant too, so chunk
//! boundaries do not leak content across tenants either.

use std::fmt;

use rand::RngCore;

use crate::DataDir;
use crate::data_dir::DataDirError;

/// The name of the server secret in the data directory.
pub use crate::data_dir::SERVER_SECRET;
const TENANT_KEY_CONTEXT: &str = "silo 2026-11 per-tenant chunk id key";
const GEAR_SEED_CONTEXT: &str = "silo 2026-11 per-tenant chunker seed";
const SEALING_KEY_CONTEXT: &str = "silo 2026-11 secrets at rest";
/// Below this size a chunk is hashed on one core: splitting it costs more than it saves.
const PARALLEL_HASH_MIN: usize = 256 * 1024;

/// A tenant's id in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub i64);

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

/// The server-wide secret every tenant key derives from.
#[derive(Clone)]
pub struct ServerSecret([u8; 32]);

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(<redacted>)")
    }
}

impl ServerSecret {
    /// Loads the secret from the data directory, generating it on first start. Replicas that
    /// must agree on chunk ids can share one through `SILO_SERVER_SECRET` (64 hex digits).
    ///
    /// # Errors
    /// [`DataDirError`] when the secret cannot be read or written, or is malformed.
    pub fn load_or_create(data_dir: &DataDir) -> Result<Self, DataDirError> {
        let malformed = |what: &str| DataDirError::Io {
            path: crate::data_dir::secret_file(data_dir.path(), SERVER_SECRET),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{what} is not 64 hex digits"),
            ),
        };
        if let Ok(hex_secret) = std::env::var("SILO_SERVER_SECRET") {
            return Self::from_hex(hex_secret.trim()).ok_or_else(|| malformed("SILO_SERVER_SECRET"));
        }
        let generate = || {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            hex::encode(bytes)
        };
        let (hex_secret, _) = data_dir.secret_or_create(SERVER_SECRET, generate)?;
        Self::from_hex(&hex_secret).ok_or_else(|| malformed("the server secret"))
    }

    /// A secret from 64 hex digits.
    pub fn from_hex(hex_secret: &str) -> Option<Self> {
        let bytes = hex::decode(hex_secret).ok()?;
        bytes.try_into().ok().map(ServerSecret)
    }

    /// The key that names `tenant`'s chunks.
    pub fn tenant_key(&self, tenant: TenantId) -> TenantKey {
        let mut material = self.0.to_vec();
        material.extend_from_slice(&tenant.0.to_le_bytes());
        TenantKey(blake3::derive_key(TENANT_KEY_CONTEXT, &material))
    }
}

impl ServerSecret {
    /// Encrypts `plaintext` for storage at rest (XChaCha20-Poly1305, with a key derived from
    /// the server secret for `purpose` and a random nonce). Returns the nonce and ciphertext.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(&self.sealing_key(purpose).into());
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for inputs of this size.
        let ciphertext = cipher.encrypt(&nonce.into(), plaintext).unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Decrypts what [`ServerSecret::seal`] made for `purpose`; `None` when it was sealed
    /// with another secret or purpose, or was altered.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        if sealed.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(&self.sealing_key(purpose).into());
        cipher.decrypt(chacha20poly1305::XNonce::from_slice(nonce), ciphertext).ok()
    }

    fn sealing_key(&self, purpose: &str) -> [u8; 32] {
        let mut material = self.0.to_vec();
        material.extend_from_slice(purpose.as_bytes());
        blake3::derive_key(SEALING_KEY_CONTEXT, &material)
    }
}

/// One tenant's chunk-naming key.
#[derive(Clone)]
pub struct TenantKey([u8; 32]);

impl TenantKey {
    /// The id of a chunk with these raw bytes. Large chunks are hashed on all cores, which
    /// halves the latency of verifying a chunk for a single reader on two cores.
    pub fn chunk_id(&self, raw: &[u8]) -> ChunkId {
        if raw.len() >= PARALLEL_HASH_MIN {
            return ChunkId(*blake3::Hasher::new_keyed(&self.0).update_rayon(raw).finalize().as_bytes());
        }
        ChunkId(*blake3::keyed_hash(&self.0, raw).as_bytes())
    }

    /// The seed of this tenant's chunker gear table.
    pub fn gear_seed(&self) -> u64 {
        let seed = blake3::derive_key(GEAR_SEED_CONTEXT, &self.0);
        u64::from_le_bytes(seed[..8].try_into().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_content_in_two_tenants_gets_unrelated_ids() {
        let secret = ServerSecret([7; 32]);
        let a = secret.tenant_key(TenantId(1));
        let b = secret.tenant_key(TenantId(2));
        assert_eq!(a.chunk_id(b"frame"), a.chunk_id(b"frame"));
        assert_ne!(a.chunk_id(b"frame"), b.chunk_id(b"frame"));
        assert_ne!(a.gear_seed(), b.gear_seed());
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_secret_and_purpose() {
        let secret = ServerSecret([3; 32]);
        let sealed = secret.seal("access-key", b"wJalrXUtnFEMI");
        assert!(!sealed.windows(5).any(|w| w == b"wJalr"), "no plaintext at rest");
        assert_eq!(secret.open("access-key", &sealed).as_deref(), Some(&b"wJalrXUtnFEMI"[..]));
        assert_eq!(secret.open("server-password", &sealed), None);
        assert_eq!(ServerSecret([4; 32]).open("access-key", &sealed), None);
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(secret.open("access-key", &altered), None);
    }

    #[test]
    fn another_server_secret_gives_other_ids() {
        let one = ServerSecret([1; 32]).tenant_key(TenantId(1));
        let two = ServerSecret([2; 32]).tenant_key(TenantId(1));
        assert_ne!(one.chunk_id(b"frame"), two.chunk_id(b"frame"));
    }
}
