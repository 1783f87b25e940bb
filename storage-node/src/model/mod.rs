//! The model under the S3 protocol: typed rows of buckets, objects, multipart uploads and their
//! parts, and every query and transaction over them. [`crate::s3`] only translates S3 requests
//! into calls here and the answers back into S3 responses; no SQL lives there.
//!
//! One module per entity: [`bucket`], [`object`] (with the key listing), [`multipart`]
//! (uploads and parts), [`usage`] (counts per tenant), and [`purge`] (deleting all of a
//! tenant's S3 data, for the tenant's deletion). The model calls the chunk [`crate::store`] to
//! commit, copy, concatenate and release objects, and owns the queries that join its rows to
//! the store's `objects` table (for sizes). [`node`] is the registry of storage nodes (issue
//! 12), [`node_retire`] drains and removes nodes; pack replicas come here next, in a module of
//! their own.
//!
//! Locks are always taken in one order: bucket, then upload, then tenant, then the key's row.
//! Procedures that can be refused for a reason the caller must tell apart (the bucket is gone,
//! the tenant is being deleted, ...) return [`ModelError`]; the others a plain [`StoreError`].

pub mod bucket;
pub mod multipart;
pub mod node;
pub mod node_retire;
pub mod object;
mod one_statement;
pub mod purge;
mod put_batch;
pub mod usage;

pub use put_batch::{SmallPutStats, SmallPuts};

use crate::store::StoreError;

/// Why a model procedure did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The catalog or the chunk store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bucket is gone (or was deleted and created again) since it was authorized.
    #[error("no such bucket")]
    BucketGone,
    /// The bucket still holds objects.
    #[error("the bucket is not empty")]
    BucketNotEmpty,
    /// The bucket's tenant is being deleted: nothing new is stored for it.
    #[error("the tenant is being deleted")]
    TenantDeleting,
    /// The multipart upload is gone: completed, aborted, or never there.
    #[error("no such upload")]
    UploadGone,
    /// A conditional write's condition no longer held when it came to bind its key.
    #[error("the key changed while the conditional write ran")]
    ConditionFailed,
}

impl ModelError {
    /// Whether the write this error ends was committed all the same (its read caches could not
    /// be confirmed clean): what it stored must not be given back.
    pub fn committed(&self) -> bool {
        matches!(self, ModelError::Store(StoreError::Unconfirmed(_)))
    }
}

impl From<tokio_postgres::Error> for ModelError {
    fn from(err: tokio_postgres::Error) -> Self {
        ModelError::Store(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for ModelError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        ModelError::Store(err.into())
    }
}
