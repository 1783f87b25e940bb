//! Deleting all of a tenant's S3 data, for the tenant's deletion: per bucket, in one
//! transaction, its uploads in progress (their parts released), its objects and the bucket.
//!
//! Each bucket's row is locked exclusively first, so writes that had already checked it finish
//! before (and are deleted here) and later ones find it gone. The tenant is marked as being
//! deleted before this runs, so no new bucket appears.

use super::{bucket, multipart};
use crate::TenantId;
use crate::read_cache::Invalidation;
use crate::read_cache::broadcast::Pending;
use crate::store::{ChunkStore, ObjectId, StoreError};

/// What [`purge_tenant`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct S3Purged {
    pub buckets: u64,
    pub objects: u64,
    pub uploads: u64,
}

/// Deletes every bucket of `tenant` with its objects and uploads in progress. Safe to run
/// again after a failure: what was deleted stays deleted, and the rest is taken next time.
///
/// # Errors
/// Catalog and store errors.
pub async fn purge_tenant(store: &ChunkStore, tenant: TenantId) -> Result<S3Purged, StoreError> {
    let mut purged = S3Purged::default();
    for name in bucket::names_of_tenant(store.catalog(), tenant).await? {
        let pending = Pending::new(store, Invalidation::bucket(&name));
        let deleted = purge_bucket(store, tenant, &name, &pending).await?;
        pending.confirm().await?;
        let Some((objects, uploads)) = deleted else { continue };
        purged.buckets += 1;
        purged.objects += objects;
        purged.uploads += uploads;
        tracing::info!(
            tenant = tenant.0,
            bucket = name,
            objects,
            "deleted a bucket of a tenant being deleted"
        );
    }
    Ok(purged)
}

/// Deletes bucket `name` of `tenant` with its objects and uploads, in one transaction: how many
/// of each, or `None` when it was not there.
async fn purge_bucket(
    store: &ChunkStore,
    tenant: TenantId,
    name: &str,
    pending: &Pending,
) -> Result<Option<(u64, u64)>, StoreError> {
    let mut client = store.catalog().get().await?;
    let txn = client.transaction().await?;
    let found = txn
        .query_opt("SELECT 1 FROM buckets WHERE name = $1 AND tenant_id = $2 FOR UPDATE", &[&name, &tenant.0])
        .await?;
    if found.is_none() {
        return Ok(None);
    }
    let uploads = multipart::drop_all_in(&txn, store, tenant, name).await?;
    let objects = txn.query("DELETE FROM s3_objects WHERE bucket = $1 RETURNING object_id", &[&name]).await?;
    for object in &objects {
        store.delete_in(&txn, tenant, ObjectId(object.get(0))).await?;
    }
    txn.execute("DELETE FROM buckets WHERE name = $1", &[&name]).await?;
    pending.arm();
    txn.commit().await?;
    Ok(Some((objects.len() as u64, uploads)))
}
