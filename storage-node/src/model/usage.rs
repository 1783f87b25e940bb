//! What a tenant has in S3, counted: the usage breakdown of the management API.

use crate::TenantId;
use crate::catalog::CatalogPool;
use crate::store::StoreError;

/// How many S3 objects (across its buckets) and buckets a tenant has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TenantCounts {
    pub objects: u64,
    pub buckets: u64,
}

/// Counts `tenant`'s S3 objects and buckets.
///
/// # Errors
/// Catalog errors.
pub async fn tenant_counts(pool: &CatalogPool, tenant: TenantId) -> Result<TenantCounts, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM s3_objects s JOIN buckets b ON b.name = s.bucket WHERE b.tenant_id = $1), \
                    (SELECT count(*) FROM buckets WHERE tenant_id = $1)",
            &[&tenant.0],
        )
        .await?;
    Ok(TenantCounts { objects: row.get::<_, i64>(0) as u64, buckets: row.get::<_, i64>(1) as u64 })
}
