//! S3 access keys: created for a tenant, listed without secrets, revoked at once.
//!
//! The secret is shown once, at creation. It is kept sealed with the server secret, because
//! checking a SigV4 signature needs it in clear. A revoked key stops working on the next request
//! of the node that revoked it and within a second on every other node: each node caches the keys
//! it has checked ([`super::key_cache`]), and a trigger on this table tells every cache to drop a
//! key the moment its revocation or deletion commits.

use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use time::OffsetDateTime;

use super::CatalogPool;
use super::tenants::TenantError;
use crate::{ServerSecret, TenantId};

const SEALING_PURPOSE: &str = "s3 access key secret";

/// A new key, with the secret that is shown this one time.
#[derive(Debug, Clone, Serialize)]
pub struct NewAccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// A key as listed: no secret.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    #[serde(with = "crate::timestamp::rfc3339_seconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timestamp::rfc3339_seconds::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Creates a key for `tenant`.
///
/// # Errors
/// Catalog errors.
pub async fn create(
    pool: &CatalogPool,
    secret: &ServerSecret,
    tenant: TenantId,
) -> Result<NewAccessKey, TenantError> {
    let (access_key_id, secret_access_key) = {
        let mut rng = rand::rng();
        let id = format!("SILO{}", Alphanumeric.sample_string(&mut rng, 16).to_ascii_uppercase());
        (id, Alphanumeric.sample_string(&mut rng, 40))
    };
    let sealed = secret.seal(SEALING_PURPOSE, secret_access_key.as_bytes());
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO access_keys (id, tenant_id, sealed_secret) VALUES ($1, $2, $3)",
            &[&access_key_id, &tenant.0, &sealed],
        )
        .await?;
    Ok(NewAccessKey { access_key_id, secret_access_key })
}

/// The tenant's keys, oldest first, revoked ones included.
///
/// # Errors
/// Catalog errors.
pub async fn list(pool: &CatalogPool, tenant: TenantId) -> Result<Vec<AccessKey>, TenantError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, created_at, revoked_at FROM access_keys WHERE tenant_id = $1 ORDER BY created_at, id",
            &[&tenant.0],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| AccessKey { access_key_id: row.get(0), created_at: row.get(1), revoked_at: row.get(2) })
        .collect())
}

/// Revokes a key of `tenant` at once.
///
/// # Errors
/// [`TenantError::NoSuchKey`] when the tenant has no such active key.
pub async fn revoke(pool: &CatalogPool, tenant: TenantId, access_key_id: &str) -> Result<(), TenantError> {
    let client = pool.get().await?;
    let revoked = client
        .execute(
            "UPDATE access_keys SET revoked_at = now() WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
            &[&access_key_id, &tenant.0],
        )
        .await?;
    if revoked == 0 {
        return Err(TenantError::NoSuchKey(access_key_id.to_string()));
    }
    Ok(())
}

/// Deletes every key of `tenant`. Returns how many there were.
///
/// # Errors
/// Catalog errors.
pub async fn delete_all(pool: &CatalogPool, tenant: TenantId) -> Result<u64, TenantError> {
    let client = pool.get().await?;
    Ok(client.execute("DELETE FROM access_keys WHERE tenant_id = $1", &[&tenant.0]).await?)
}

/// An active key as a signature check needs it: its tenant and its secret in clear.
#[derive(Clone)]
pub struct ActiveKey {
    pub tenant: TenantId,
    pub secret: String,
}

impl std::fmt::Debug for ActiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKey").field("tenant", &self.tenant).field("secret", &"<redacted>").finish()
    }
}

/// The tenant and secret of an active key, for checking a signature. The keys of a tenant
/// being deleted are not active.
///
/// # Errors
/// Catalog errors; an unknown, revoked or undecryptable key is `Ok(None)`.
pub async fn lookup(
    pool: &CatalogPool,
    secret: &ServerSecret,
    access_key_id: &str,
) -> Result<Option<ActiveKey>, TenantError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT k.tenant_id, k.sealed_secret FROM access_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.id = $1 AND k.revoked_at IS NULL AND t.deleting_at IS NULL",
            &[&access_key_id],
        )
        .await?;
    Ok(row.and_then(|row| {
        let opened = secret.open(SEALING_PURPOSE, row.get::<_, &[u8]>(1))?;
        Some(ActiveKey { tenant: TenantId(row.get(0)), secret: String::from_utf8(opened).ok()? })
    }))
}
