//! Who a request is: the secret of its access key (for s3s to check the SigV4 signature), and
//! the tenant it acts for.
//!
//! s3s asks for the key's secret, checks the signature, then asks who the caller is. The first
//! step asks the node's key cache ([`crate::catalog::key_cache`]: no catalog query while it
//! holds the key, and a revoked key is dropped from every node's cache within a second); the
//! second reuses what it found, if it is seconds old, instead of looking the key up again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

use super::Caller;
use crate::TenantId;
use crate::catalog::key_cache::KeyCache;
use crate::store::ChunkStore;

/// How long a key lookup answers "who is this" for the request that made it.
const FRESH: Duration = Duration::from_secs(5);
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug, Clone)]
pub(crate) struct CatalogAuth {
    pub store: ChunkStore,
    /// The keys this node has checked, invalidated across nodes.
    pub keys: KeyCache,
    /// The tenant of each key that just passed a catalog lookup, and when.
    pub looked_up: Arc<Mutex<HashMap<String, (TenantId, Instant)>>>,
}

impl CatalogAuth {
    pub fn new(store: ChunkStore, keys: KeyCache) -> Self {
        CatalogAuth { store, keys, looked_up: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn remember(&self, access_key: &str, tenant: TenantId) {
        if let Ok(mut map) = self.looked_up.lock() {
            if map.len() >= MAX_REMEMBERED {
                map.retain(|_, (_, at)| at.elapsed() < FRESH);
            }
            map.insert(access_key.to_string(), (tenant, Instant::now()));
        }
    }

    fn recent(&self, access_key: &str) -> Option<TenantId> {
        let map = self.looked_up.lock().ok()?;
        map.get(access_key).filter(|(_, at)| at.elapsed() < FRESH).map(|(tenant, _)| *tenant)
    }
}

#[async_trait::async_trait]
impl S3Auth for CatalogAuth {
    /// The secret of an active key; unknown and revoked keys get `InvalidAccessKeyId`.
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.keys.lookup(self.store.catalog(), self.store.server_secret(), access_key).await {
            Ok(Some(key)) => {
                self.remember(access_key, key.tenant);
                Ok(key.secret)
            }
            Ok(None) => Err(s3_error!(InvalidAccessKeyId, "the access key does not exist or was revoked")),
            Err(err) => {
                tracing::error!(error = %err, "cannot look up an access key");
                Err(s3_error!(ServiceUnavailable, "the catalog is unavailable"))
            }
        }
    }
}

#[async_trait::async_trait]
impl S3Access for CatalogAuth {
    /// Resolves the caller's tenant for the handlers. Anonymous requests pass here with no
    /// tenant; only reads of public-read buckets accept them.
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let tenant = match cx.credentials() {
            Some(credentials) => match self.recent(&credentials.access_key) {
                Some(tenant) => Some(tenant),
                None => match self
                    .keys
                    .lookup(self.store.catalog(), self.store.server_secret(), &credentials.access_key)
                    .await
                {
                    Ok(Some(key)) => Some(key.tenant),
                    Ok(None) => return Err(s3_error!(InvalidAccessKeyId)),
                    Err(_) => return Err(s3_error!(ServiceUnavailable)),
                },
            },
            None => None,
        };
        cx.extensions_mut().insert(Arc::new(Caller(tenant)));
        Ok(())
    }
}
