//! Tenants: the owners of objects, keys, buckets and databases.

use serde::Serialize;
use time::OffsetDateTime;

use super::{CatalogError, CatalogPool};
use crate::TenantId;

/// A quota as the catalog's `bigint` column holds it: a larger one is refused, never wrapped
/// into a negative number.
fn quota_column(quota_bytes: Option<u64>) -> Result<Option<i64>, TenantError> {
    quota_bytes.map(|q| i64::try_from(q).map_err(|_| TenantError::InvalidQuota(q))).transpose()
}

/// Why a tenant could not be created, found or changed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("invalid tenant name {0:?}: a tenant name matches ^[a-z][a-z0-9-]{{1,62}}$")]
    InvalidName(String),
    #[error("the tenant {0:?} already exists")]
    Exists(String),
    #[error("no tenant named {0:?}")]
    NotFound(String),
    #[error("no access key {0:?} for this tenant")]
    NoSuchKey(String),
    #[error("invalid storage quota {0}: at most {max} bytes", max = i64::MAX)]
    InvalidQuota(u64),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<tokio_postgres::Error> for TenantError {
    fn from(err: tokio_postgres::Error) -> Self {
        TenantError::Catalog(CatalogError::Query(err))
    }
}

impl From<deadpool_postgres::PoolError> for TenantError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        TenantError::Catalog(CatalogError::from(err))
    }
}

/// A tenant as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    #[serde(skip)]
    pub id: TenantId,
    pub name: String,
    pub storage_quota_bytes: Option<u64>,
    #[serde(with = "crate::timestamp::rfc3339_seconds")]
    pub created_at: OffsetDateTime,
    /// Set once the tenant's deletion has started: its keys no longer work, nothing new is
    /// stored for it, and what remains is being deleted (or kept for its final backups).
    #[serde(skip_serializing_if = "Option::is_none", with = "crate::timestamp::rfc3339_seconds::option")]
    pub deleting_since: Option<OffsetDateTime>,
}

/// Whether `name` is a valid tenant name: `^[a-z][a-z0-9-]{1,62}$`.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (2..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn select(filter: &str) -> String {
    format!("SELECT id, name, storage_quota_bytes, created_at, deleting_at FROM tenants {filter}")
}

fn from_row(row: &tokio_postgres::Row) -> Tenant {
    Tenant {
        id: TenantId(row.get(0)),
        name: row.get(1),
        storage_quota_bytes: row.get::<_, Option<i64>>(2).map(|q| q as u64),
        created_at: row.get(3),
        deleting_since: row.get(4),
    }
}

/// Creates a tenant.
///
/// # Errors
/// [`TenantError::InvalidName`], [`TenantError::Exists`].
pub async fn create(
    pool: &CatalogPool,
    name: &str,
    quota_bytes: Option<u64>,
) -> Result<TenantId, TenantError> {
    if !is_valid_name(name) {
        return Err(TenantError::InvalidName(name.to_string()));
    }
    let client = pool.get().await?;
    let quota = quota_column(quota_bytes)?;
    let row = client
        .query_opt(
            "INSERT INTO tenants (name, storage_quota_bytes) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
            &[&name, &quota],
        )
        .await?
        .ok_or_else(|| TenantError::Exists(name.to_string()))?;
    Ok(TenantId(row.get(0)))
}

/// Finds a tenant's id by name.
///
/// # Errors
/// [`TenantError::NotFound`].
pub async fn find(pool: &CatalogPool, name: &str) -> Result<TenantId, TenantError> {
    get(pool, name).await.map(|tenant| tenant.id)
}

/// A tenant by name.
///
/// # Errors
/// [`TenantError::NotFound`].
pub async fn get(pool: &CatalogPool, name: &str) -> Result<Tenant, TenantError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(&select("WHERE name = $1"), &[&name])
        .await?
        .ok_or_else(|| TenantError::NotFound(name.to_string()))?;
    Ok(from_row(&row))
}

/// Every tenant, by name.
///
/// # Errors
/// Catalog errors.
pub async fn list(pool: &CatalogPool) -> Result<Vec<Tenant>, TenantError> {
    let client = pool.get().await?;
    Ok(client.query(&select("ORDER BY name"), &[]).await?.iter().map(from_row).collect())
}

/// Sets (or, with `None`, lifts) a tenant's storage quota.
///
/// # Errors
/// [`TenantError::NotFound`].
pub async fn set_quota(
    pool: &CatalogPool,
    name: &str,
    quota_bytes: Option<u64>,
) -> Result<Tenant, TenantError> {
    let client = pool.get().await?;
    let quota = quota_column(quota_bytes)?;
    let updated = client
        .execute("UPDATE tenants SET storage_quota_bytes = $2 WHERE name = $1", &[&name, &quota])
        .await?;
    if updated == 0 {
        return Err(TenantError::NotFound(name.to_string()));
    }
    drop(client);
    get(pool, name).await
}

/// Marks `tenant` as being deleted (once: a second call keeps the first start and options):
/// from now on its keys no longer work and nothing new is stored for it. Returns whether the
/// deletion keeps final backups, as first asked.
///
/// # Errors
/// [`TenantError::NotFound`].
pub async fn mark_deleting(
    pool: &CatalogPool,
    tenant: TenantId,
    keeps_final_backups: bool,
) -> Result<bool, TenantError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "UPDATE tenants SET deleting_at = coalesce(deleting_at, now()), \
                    deletion_keeps_final_backups = coalesce(deletion_keeps_final_backups, $2) \
             WHERE id = $1 RETURNING deletion_keeps_final_backups",
            &[&tenant.0, &keeps_final_backups],
        )
        .await?
        .ok_or_else(|| TenantError::NotFound(format!("#{}", tenant.0)))?;
    Ok(row.get(0))
}

/// A tenant whose deletion has started and not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletingTenant {
    pub id: TenantId,
    pub name: String,
    /// Whether the deletion keeps the final backups of its databases.
    pub keeps_final_backups: bool,
}

/// The tenants whose deletion has started and not finished, oldest deletion first.
///
/// # Errors
/// Catalog errors.
pub async fn deleting(pool: &CatalogPool) -> Result<Vec<DeletingTenant>, TenantError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, name, coalesce(deletion_keeps_final_backups, true) FROM tenants \
             WHERE deleting_at IS NOT NULL ORDER BY deleting_at, id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| DeletingTenant {
            id: TenantId(row.get(0)),
            name: row.get(1),
            keeps_final_backups: row.get(2),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{TenantError, is_valid_name, quota_column};

    #[test]
    fn quotas_past_the_column_are_refused_not_wrapped() {
        assert_eq!(quota_column(Some(5)).ok(), Some(Some(5)));
        assert_eq!(quota_column(None).ok(), Some(None));
        assert_eq!(quota_column(Some(i64::MAX as u64)).ok(), Some(Some(i64::MAX)));
        assert!(matches!(quota_column(Some(1 << 63)), Err(TenantError::InvalidQuota(_))));
    }

    #[test]
    fn tenant_names_follow_the_rule() {
        for good in ["acme", "a1", "shop-42", &format!("a{}", "b".repeat(62))] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in
            ["", "a", "Acme", "1acme", "acme_shop", "ac me", "x\"; DROP", &format!("a{}", "b".repeat(63))]
        {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
