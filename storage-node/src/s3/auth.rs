//! Who a request is: the secret of its access key (for s3s to check the SigV4 signature), and
//! the tenant it acts for.

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

use super::Caller;
use crate::catalog::access_keys;
use crate::store::ChunkStore;

#[derive(Debug, Clone)]
pub(crate) struct CatalogAuth {
    pub store: ChunkStore,
}

#[async_trait::async_trait]
impl S3Auth for CatalogAuth {
    /// The secret of an active key; unknown and revoked keys get `InvalidAccessKeyId`.
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match access_keys::lookup(self.store.catalog(), self.store.server_secret(), access_key).await {
            Ok(Some((_, secret))) => Ok(SecretKey::from(secret)),
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
            Some(credentials) => {
                match access_keys::lookup(
                    self.store.catalog(),
                    self.store.server_secret(),
                    &credentials.access_key,
                )
                .await
                {
                    Ok(Some((tenant, _))) => Some(tenant),
                    Ok(None) => return Err(s3_error!(InvalidAccessKeyId)),
                    Err(_) => return Err(s3_error!(ServiceUnavailable)),
                }
            }
            None => None,
        };
        cx.extensions_mut().insert(Arc::new(Caller(tenant)));
        Ok(())
    }
}
