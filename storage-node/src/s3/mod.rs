//! The S3-compatible data plane, built on the `s3s` crate (which owns SigV4, XML and routing).
//!
//! One file per family of calls: [`bucket`] for buckets, [`object`] for objects, [`list`] for
//! listings. [`region`] answers for the region a request is signed for (before s3s sees it),
//! with [`resign`] for the legacy names s3s refuses. [`auth`] finds a key's secret in the catalog and decides who may do what: a key
//! acts for its tenant, and every handler checks that the bucket is the tenant's own, so a key
//! of tenant A gets `AccessDenied` on every bucket of tenant B. Calls Silo does not implement
//! answer 501 `NotImplemented`, never a wrong success (s3s's default for every call).

mod auth;
mod bucket;
mod error;
mod list;
mod multipart;
mod object;
mod ops;
mod purge;
mod region;
mod resign;
#[cfg(test)]
mod tests;

pub use multipart::abort_stale_uploads;
pub use purge::{S3Purged, purge_tenant};
pub use region::{DEFAULT_REGION, Region, S3Front};

use std::sync::Arc;

use s3s::service::S3ServiceBuilder;

use crate::catalog::CatalogPool;
use crate::keys::TenantId;
use crate::store::ChunkStore;

/// Names that S3 buckets may not take: the management endpoints live there.
pub const RESERVED_BUCKETS: [&str; 4] = ["v1", "healthz", "readyz", "metrics"];

/// The S3 implementation over a chunk store.
#[derive(Debug, Clone)]
pub struct SiloS3 {
    store: ChunkStore,
    /// The region Silo serves.
    region: Region,
}

impl SiloS3 {
    fn pool(&self) -> &CatalogPool {
        self.store.catalog()
    }
}

/// The S3 service over `store`, serving `region`.
pub fn service(store: ChunkStore, region: Region) -> S3Front {
    let auth = auth::CatalogAuth::new(store.clone());
    let mut builder = S3ServiceBuilder::new(SiloS3 { store: store.clone(), region: region.clone() });
    builder.set_auth(auth.clone());
    builder.set_access(auth.clone());
    S3Front { inner: builder.build(), region, auth }
}

/// A bucket as the management API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BucketInfo {
    pub name: String,
    pub tenant: String,
    pub public_read: bool,
}

/// The bucket `name`, after setting its public-read flag when `public_read` is given.
/// Anonymous GET and HEAD work on a public-read bucket; everything else needs a signature.
///
/// # Errors
/// Catalog errors; an unknown bucket is `Ok(None)`.
pub async fn bucket_info(
    pool: &CatalogPool,
    name: &str,
    public_read: Option<bool>,
) -> Result<Option<BucketInfo>, crate::catalog::CatalogError> {
    let client = pool.get().await?;
    if let Some(public_read) = public_read {
        client.execute("UPDATE buckets SET public_read = $2 WHERE name = $1", &[&name, &public_read]).await?;
    }
    let row = client
        .query_opt(
            "SELECT b.name, t.name, b.public_read FROM buckets b JOIN tenants t ON t.id = b.tenant_id WHERE b.name = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|row| BucketInfo { name: row.get(0), tenant: row.get(1), public_read: row.get(2) }))
}

/// How many S3 objects (across its buckets) and buckets a tenant has.
///
/// # Errors
/// Catalog errors.
pub async fn tenant_counts(
    pool: &CatalogPool,
    tenant: TenantId,
) -> Result<(u64, u64), crate::catalog::CatalogError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM s3_objects s JOIN buckets b ON b.name = s.bucket WHERE b.tenant_id = $1), \
                    (SELECT count(*) FROM buckets WHERE tenant_id = $1)",
            &[&tenant.0],
        )
        .await?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}

/// The tenant a request acts for (set by the access check).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller(pub Option<TenantId>);

/// The tenant a request acts for, from its extensions; `None` when it is anonymous.
pub(crate) fn caller(extensions: &http::Extensions) -> Option<TenantId> {
    extensions.get::<Arc<Caller>>().and_then(|caller| caller.0)
}
