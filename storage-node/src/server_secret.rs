//! The server secret: the one secret of a storage node, kept in its data directory. Chunk keys
//! derive from it ([`crate::chunk_id`]), and it seals the secrets Silo keeps at rest (S3
//! access-key secrets, server admin URLs): [`ServerSecret::seal`] and [`ServerSecret::open`].

use std::fmt;

use rand::RngCore;

use crate::DataDir;
use crate::data_dir::DataDirError;

/// The name of the server secret in the data directory.
pub use crate::data_dir::SERVER_SECRET;
const SEALING_KEY_CONTEXT: &str = "silo 2026-11 secrets at rest";
const FINGERPRINT_CONTEXT: &str = "silo 2026-11 server secret fingerprint";

/// The server-wide secret every chunk key and sealing key derives from.
#[derive(Clone)]
pub struct ServerSecret([u8; 32]);

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(<redacted>)")
    }
}

impl ServerSecret {
    /// Loads the secret from the data directory, generating it on first start, or takes it from
    /// `SILO_SERVER_SECRET` (64 hex digits). The catalog refuses a node whose secret is not the
    /// one it was first used with ([`ServerSecret::fingerprint`]).
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

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        ServerSecret(bytes)
    }

    /// A key derived from the secret for `context`, bound to `material`.
    pub(crate) fn derive_key(&self, context: &str, material: &[u8]) -> [u8; 32] {
        let mut input = self.0.to_vec();
        input.extend_from_slice(material);
        blake3::derive_key(context, &input)
    }

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

    /// A fingerprint of the secret, safe to keep in the catalog: 32 hex digits of a key derived
    /// for that purpose alone, from which neither the secret nor any other key follows. Two
    /// nodes share a fingerprint exactly when they share the secret.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.derive_key(FINGERPRINT_CONTEXT, b"")[..16])
    }

    fn sealing_key(&self, purpose: &str) -> [u8; 32] {
        self.derive_key(SEALING_KEY_CONTEXT, purpose.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_fingerprint_tells_secrets_apart_and_shows_neither() {
        let (one, two) = (ServerSecret([3; 32]), ServerSecret([4; 32]));
        assert_eq!(one.fingerprint(), ServerSecret([3; 32]).fingerprint());
        assert_ne!(one.fingerprint(), two.fingerprint());
        assert_eq!(one.fingerprint().len(), 32);
        assert!(!one.fingerprint().contains(&hex::encode([3u8; 8])));
    }
}
