//! The S3-compatible data plane, built on the `s3s` crate (which owns SigV4, XML and routing).
//!
//! This layer only translates: S3 requests into calls on the [`crate::model`] (which keeps the
//! rows and runs every query and transaction) and the answers back into S3 responses and
//! error codes ([`error`]). One file per family of calls: [`bucket`] for buckets, [`object`]
//! for objects, [`acl`] for canned ACLs and owners, [`multipart`] for multipart uploads, [`list`] for listings (the pagination
//! logic over any ordered key source), and [`ops`] wires them to `s3s`'s trait. [`integrity`]
//! checks what a client claims about an upload (`Content-MD5`, an additional checksum that
//! [`checksum`] computes, a write's condition) before anything is committed. [`guard`] refuses, on its head alone, what `s3s` must not see, and [`sig_v2`]
//! checks SigV2 signatures in constant time before `s3s` does. [`region`] answers for the
//! region a request is signed for (before s3s sees it), with [`resign`] for the legacy names
//! s3s refuses. [`request_id`] gives every answer AWS's request ids. [`auth`] finds a key's secret in the catalog and decides who may do what: a key
//! acts for its tenant, and every handler checks that the bucket is the tenant's own, so a key
//! of tenant A gets `AccessDenied` on every bucket of tenant B. Calls Silo does not implement
//! answer 501 `NotImplemented`, never a wrong success (s3s's default for every call).

mod acl;
mod auth;
mod bucket;
mod checksum;
mod error;
pub mod guard;
mod integrity;
mod list;
mod multipart;
mod object;
mod ops;
mod region;
pub mod request_id;
mod resign;
pub mod sig_v2;
#[cfg(test)]
pub(crate) mod tests;

pub use region::{DEFAULT_REGION, Region, S3Front};

use std::sync::Arc;

use s3s::service::S3ServiceBuilder;

use crate::TenantId;
use crate::catalog::CatalogPool;
use crate::catalog::key_cache::KeyCache;
use crate::model::SmallPuts;
use crate::store::ChunkStore;

/// Names that S3 buckets may not take: the management endpoints live there.
pub const RESERVED_BUCKETS: [&str; 4] = ["v1", "healthz", "readyz", "metrics"];

/// The S3 implementation over a chunk store.
#[derive(Debug, Clone)]
pub struct SiloS3 {
    store: ChunkStore,
    /// The region Silo serves.
    region: Region,
    /// Small PUTs of new keys, committed many to a statement.
    small_puts: SmallPuts,
}

#[cfg(test)]
impl SiloS3 {
    /// The store it serves from, for tests of what lies under the S3 layer.
    pub(crate) fn store(&self) -> &ChunkStore {
        &self.store
    }
}

impl SiloS3 {
    fn pool(&self) -> &CatalogPool {
        self.store.catalog()
    }
}

/// The S3 service over `store`, serving `region`, checking signatures with the keys of `keys`
/// (a [`KeyCache::default`] reads every key from the catalog).
pub fn service(store: ChunkStore, region: Region, keys: KeyCache) -> S3Front {
    let auth = auth::CatalogAuth::new(store.clone(), keys);
    let small_puts = SmallPuts::default();
    let silo = SiloS3 { store: store.clone(), region: region.clone(), small_puts: small_puts.clone() };
    let mut builder = S3ServiceBuilder::new(silo);
    builder.set_auth(auth.clone());
    builder.set_access(auth.clone());
    // Defence in depth behind [`guard`], which refuses larger bodies before s3s reads them.
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = guard::MAX_XML_BODY;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(config))));
    S3Front { inner: builder.build(), region, auth, small_puts }
}

/// The tenant a request acts for (set by the access check).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller(pub Option<TenantId>);

/// The tenant a request acts for, from its extensions; `None` when it is anonymous.
pub(crate) fn caller(extensions: &http::Extensions) -> Option<TenantId> {
    extensions.get::<Arc<Caller>>().and_then(|caller| caller.0)
}
