//! A tenant's usage, whole: what the chunk store counts for it (every object it stores: S3
//! objects, parts of unfinished multipart uploads, database backups), and how that splits
//! into buckets, S3 objects and backups. The one breakdown the management API shows.

use serde::Serialize;
use storage_node::TenantId;
use storage_node::model::usage::tenant_counts;
use storage_node::store::{ChunkStore, Usage};

use crate::DbError;
use crate::backup::Backups;

/// A tenant's usage and its breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct TenantUsage {
    /// The store's counters: logical and stored bytes, objects.
    #[serde(flatten)]
    pub store: Usage,
    pub buckets: u64,
    /// Objects reachable through S3.
    pub s3_objects: u64,
    /// Complete database backups.
    pub backups: u64,
    /// The logical bytes of those backups.
    pub backup_logical_bytes: u64,
}

/// Reads `tenant`'s usage from the store, the S3 model and the backups.
///
/// # Errors
/// [`DbError`] when the catalog cannot be read.
pub async fn tenant_usage(
    store: &ChunkStore,
    backups: &Backups,
    tenant: TenantId,
) -> Result<TenantUsage, DbError> {
    let usage = store.usage(tenant).await?;
    let counts = tenant_counts(store.catalog(), tenant).await?;
    let from_backups = backups.backup_usage(tenant).await?;
    Ok(TenantUsage {
        store: usage,
        buckets: counts.buckets,
        s3_objects: counts.objects,
        backups: from_backups.backups,
        backup_logical_bytes: from_backups.logical_bytes,
    })
}
