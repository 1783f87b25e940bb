//! The cluster token that authenticates one node to another.
//!
//! Every node of a cluster shares the server secret (`SILO_SERVER_SECRET`), so each derives the
//! same token from it with a context of its own: the token opens the internal API and nothing
//! else, and knowing it reveals neither the server secret nor any tenant's chunk key. It is sent
//! as `Authorization: Bearer <token>` and checked by comparing BLAKE3 digests in constant time,
//! so neither its content nor its length leaks through timing. Tenants' S3 keys and the admin
//! token are never accepted here. The token is never logged: its `Debug` is redacted.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::ServerSecret;

const CLUSTER_KEY_CONTEXT: &str = "silo 2026-11 internal api";

/// The bearer token nodes of one cluster present to each other.
#[derive(Clone)]
pub struct ClusterToken(String);

impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterToken(<redacted>)")
    }
}

impl ClusterToken {
    /// The token of the cluster whose nodes share `secret`.
    pub fn of(secret: &ServerSecret) -> Self {
        ClusterToken(hex::encode(secret.derive_key(CLUSTER_KEY_CONTEXT, b"")))
    }

    /// The value of the `Authorization` header that presents the token (a secret: never log it).
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// What a presented token is compared against.
    pub(crate) fn digest(&self) -> [u8; 32] {
        digest(&self.0)
    }
}

fn digest(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Whether the `Authorization` header `value` presents the token whose digest is `expected`.
pub(crate) fn presents(value: Option<&str>, expected: &[u8; 32]) -> bool {
    let Some(token) = value.and_then(|value| value.strip_prefix("Bearer ")).map(str::trim) else {
        return false;
    };
    bool::from(digest(token).ct_eq(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clusters_own_token_is_accepted() {
        let token = ClusterToken::of(&ServerSecret::from_bytes([5; 32]));
        let expected = token.digest();
        assert!(presents(Some(&token.authorization()), &expected));
        assert!(!presents(None, &expected));
        assert!(!presents(Some(""), &expected));
        assert!(!presents(Some(&token.0), &expected), "the scheme is required");
        assert!(!presents(Some(&format!("Basic {}", token.0)), &expected));
        assert!(!presents(Some(&format!("Bearer {}x", token.0)), &expected));
        assert!(!presents(
            Some("AWS4-HMAC-SHA256 Credential=AKIA/20261130/us-east-1/s3/aws4_request"),
            &expected
        ));
        let other = ClusterToken::of(&ServerSecret::from_bytes([6; 32]));
        assert!(!presents(Some(&other.authorization()), &expected), "another cluster's token");
    }

    #[test]
    fn the_token_is_not_the_secret_and_is_never_shown() {
        let secret = ServerSecret::from_bytes([5; 32]);
        let token = ClusterToken::of(&secret);
        assert_ne!(token.0, hex::encode([5u8; 32]));
        assert_eq!(format!("{token:?}"), "ClusterToken(<redacted>)");
        assert_eq!(token.0, ClusterToken::of(&secret).0, "every node of the cluster derives the same");
    }
}
