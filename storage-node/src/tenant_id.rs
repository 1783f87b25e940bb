//! Tenant identity: the id that every tenant-owned row (objects, keys, buckets, databases)
//! carries in the catalog.

/// A tenant's id in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub i64);
