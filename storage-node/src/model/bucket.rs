//! Buckets: names are global (as in S3); each belongs to one tenant.
//!
//! A bucket also has an id, which its name does not carry: a write authorizes against the
//! bucket it found, and [`lock_in`] checks that same bucket again inside the transaction that
//! binds the key, so a name deleted and created again by another tenant meanwhile never
//! receives the write.

use time::OffsetDateTime;

use super::{ModelError, multipart};
use crate::TenantId;
use crate::catalog::CatalogPool;
use crate::read_cache::Invalidation;
use crate::read_cache::broadcast::Pending;
use crate::store::{ChunkStore, StoreError};

crate::text_enum!(
    /// A canned ACL, as S3 names it: who may read a bucket or an object besides its tenant
    /// (who may do anything). The one access state of a bucket: the management API's
    /// public-read switch and PutBucketAcl both write it.
    #[derive(Default)]
    CannedAcl {
        /// The tenant only.
        #[default]
        Private => "private",
        /// Anyone, signed or not, may read (GET and HEAD; a bucket's listing too).
        PublicRead => "public-read",
        /// Any key of the tenant: in Silo, every key of a tenant already acts for it, so this
        /// reads as `private` does; it is kept and shown as given.
        AuthenticatedRead => "authenticated-read",
    }
);

/// A bucket as access is decided on it: its identity, its owner and whether anyone may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketAccess {
    /// The bucket's identity (a name deleted and created again is another bucket).
    pub id: i64,
    pub tenant: TenantId,
    pub acl: CannedAcl,
}

impl BucketAccess {
    /// Whether anyone may read the bucket.
    pub fn public_read(&self) -> bool {
        self.acl == CannedAcl::PublicRead
    }
}

/// A bucket as its tenant's listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketEntry {
    pub name: String,
    pub created: OffsetDateTime,
}

/// A bucket as the management API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BucketInfo {
    pub name: String,
    pub tenant: String,
    pub public_read: bool,
}

/// What creating a bucket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    Created,
    /// The name is taken, by this owner.
    Taken {
        owner: TenantId,
    },
}

/// The bucket named `name`, if there is one.
///
/// # Errors
/// Catalog errors.
pub async fn find(pool: &CatalogPool, name: &str) -> Result<Option<BucketAccess>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_typed_cached(
            "SELECT id, tenant_id, acl FROM buckets WHERE name = $1",
            &[tokio_postgres::types::Type::TEXT],
        )
        .await?;
    let row = client.query_opt(&statement, &[&name]).await?;
    Ok(row.map(|row| BucketAccess { id: row.get(0), tenant: TenantId(row.get(1)), acl: row.get(2) }))
}

/// [`find`], from the node's read cache when it holds the bucket there (which it then keeps):
/// a bucket's creation, its deletion and its ACL's changes invalidate it on every node before
/// they are acknowledged, as they do its objects' lookups. A name created again by another
/// tenant is so never answered with the old owner's access once the creation is acknowledged,
/// even where the deletion's own invalidation was lost (its node died after the commit); an
/// entry is kept [`crate::read_cache::MAX_AGE`] at most, and reads by name check the id too.
///
/// # Errors
/// Catalog errors.
pub async fn find_cached(store: &ChunkStore, name: &str) -> Result<Option<BucketAccess>, StoreError> {
    let cache = store.read_cache();
    if let Some(found) = cache.bucket(name) {
        return Ok(Some(found));
    }
    let ticket = cache.bucket_ticket();
    let found = find(store.catalog(), name).await?;
    if let Some(found) = found {
        cache.fill_bucket(ticket, name, found);
    }
    Ok(found)
}

/// Creates bucket `name` for `tenant` with `acl`, unless the name is taken. A creation is
/// acknowledged once every node's read cache dropped whatever it kept of the name.
///
/// # Errors
/// [`ModelError::TenantDeleting`]; catalog and store errors.
pub async fn create(
    store: &ChunkStore,
    tenant: TenantId,
    name: &str,
    acl: CannedAcl,
) -> Result<Creation, ModelError> {
    let pending = Pending::new(store, Invalidation::bucket(name));
    let mut client = store.catalog().get().await?;
    let txn = client.transaction().await?;
    // The tenant's row stays shared until the bucket exists, so a tenant deletion that
    // starts meanwhile waits, then finds the bucket and deletes it.
    let active = txn
        .query_opt("SELECT 1 FROM tenants WHERE id = $1 AND deleting_at IS NULL FOR SHARE", &[&tenant.0])
        .await?;
    if active.is_none() {
        return Err(ModelError::TenantDeleting);
    }
    let inserted = txn
        .query_opt(
            "INSERT INTO buckets (name, tenant_id, acl) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING name",
            &[&name, &tenant.0, &acl],
        )
        .await?;
    let creation = match inserted {
        Some(_) => {
            pending.arm();
            txn.commit().await?;
            Creation::Created
        }
        None => {
            txn.commit().await?;
            let owner = client.query_one("SELECT tenant_id FROM buckets WHERE name = $1", &[&name]).await?;
            Creation::Taken { owner: TenantId(owner.get(0)) }
        }
    };
    // Also when its owner finds it created: maybe the retry of a creation whose invalidation
    // did not finish (answered 503), and tools take BucketAlreadyOwnedByYou as done.
    let ours = match creation {
        Creation::Created => true,
        Creation::Taken { owner } => owner == tenant,
    };
    if ours {
        drop(client);
        pending.confirm().await?;
    }
    Ok(creation)
}

/// Deletes bucket `name`, as authorized (`id`), when it holds no object. Multipart uploads
/// still in progress go with it, as AWS does (their parts are released).
///
/// # Errors
/// [`ModelError::BucketGone`], [`ModelError::BucketNotEmpty`]; catalog and store errors.
pub async fn delete_empty(store: &ChunkStore, name: &str, bucket: BucketAccess) -> Result<(), ModelError> {
    let pending = Pending::new(store, Invalidation::bucket(name));
    let mut client = store.catalog().get().await?;
    let txn = client.transaction().await?;
    // Writes hold the bucket's row shared until they commit: this waits for them, and
    // then sees what they bound.
    let found = txn
        .query_opt("SELECT 1 FROM buckets WHERE name = $1 AND id = $2 FOR UPDATE", &[&name, &bucket.id])
        .await?;
    if found.is_none() {
        return Err(ModelError::BucketGone);
    }
    let has_objects = txn.query_opt("SELECT 1 FROM s3_objects WHERE bucket = $1 LIMIT 1", &[&name]).await?;
    if has_objects.is_some() {
        return Err(ModelError::BucketNotEmpty);
    }
    multipart::drop_all_in(&txn, store, bucket.tenant, name).await?;
    txn.execute("DELETE FROM buckets WHERE name = $1", &[&name]).await?;
    pending.arm();
    txn.commit().await?;
    drop(client);
    pending.confirm().await?;
    Ok(())
}

/// The tenant's buckets, by name.
///
/// # Errors
/// Catalog errors.
pub async fn of_tenant(pool: &CatalogPool, tenant: TenantId) -> Result<Vec<BucketEntry>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query("SELECT name, created_at FROM buckets WHERE tenant_id = $1 ORDER BY name", &[&tenant.0])
        .await?;
    Ok(rows.iter().map(|row| BucketEntry { name: row.get(0), created: row.get(1) }).collect())
}

/// Locks bucket `name` in `txn` as it was authorized (`id`), shared until `txn` ends: a
/// concurrent deletion of the bucket waits for the write and then sees it.
///
/// # Errors
/// [`ModelError::BucketGone`] when the bucket was deleted meanwhile, or deleted and created
/// again under the same name; [`ModelError::TenantDeleting`]: a tenant being deleted stores
/// nothing new.
pub async fn lock_in(
    txn: &deadpool_postgres::Transaction<'_>,
    name: &str,
    id: i64,
) -> Result<(), ModelError> {
    let row = crate::catalog::query_prepared_opt(
        txn,
        "SELECT t.deleting_at IS NULL FROM buckets b JOIN tenants t ON t.id = b.tenant_id \
             WHERE b.name = $1 AND b.id = $2 FOR KEY SHARE OF b",
        &[(&name, tokio_postgres::types::Type::TEXT), (&id, tokio_postgres::types::Type::INT8)],
    )
    .await?;
    match row.map(|row| row.get::<_, bool>(0)) {
        None => Err(ModelError::BucketGone),
        Some(false) => Err(ModelError::TenantDeleting),
        Some(true) => Ok(()),
    }
}

/// The bucket `name`, after setting its public-read flag when `public_read` is given (its
/// canned ACL: `public-read`, or `private`). Anonymous GET and HEAD work on a public-read
/// bucket; everything else needs a signature.
///
/// # Errors
/// Catalog errors; an unknown bucket is `Ok(None)`.
pub async fn info(
    store: &ChunkStore,
    name: &str,
    public_read: Option<bool>,
) -> Result<Option<BucketInfo>, StoreError> {
    if let Some(public_read) = public_read {
        let acl = if public_read { CannedAcl::PublicRead } else { CannedAcl::Private };
        update_acl(store, name, None, acl).await?;
    }
    let client = store.catalog().get().await?;
    let row = client
        .query_opt(
            "SELECT b.name, t.name, b.acl FROM buckets b JOIN tenants t ON t.id = b.tenant_id WHERE b.name = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|row| BucketInfo {
        name: row.get(0),
        tenant: row.get(1),
        public_read: row.get::<_, CannedAcl>(2) == CannedAcl::PublicRead,
    }))
}

/// Sets the canned ACL of bucket `name` with identity `id` (the bucket access was decided on:
/// a name deleted and created again by another tenant meanwhile is left alone).
///
/// # Errors
/// Catalog errors.
pub async fn set_acl(store: &ChunkStore, name: &str, id: i64, acl: CannedAcl) -> Result<(), StoreError> {
    update_acl(store, name, Some(id), acl).await
}

/// Sets bucket `name`'s canned ACL, only if its identity is `id` when given; read caches drop
/// the bucket's objects before this returns.
async fn update_acl(
    store: &ChunkStore,
    name: &str,
    id: Option<i64>,
    acl: CannedAcl,
) -> Result<(), StoreError> {
    let pending = Pending::new(store, Invalidation::bucket(name));
    let client = store.catalog().get().await?;
    pending.arm();
    client
        .execute(
            "UPDATE buckets SET acl = $2 WHERE name = $1 AND ($3::int8 IS NULL OR id = $3)",
            &[&name, &acl, &id],
        )
        .await?;
    drop(client);
    pending.confirm().await?;
    Ok(())
}

/// The tenant's name, which S3 shows as the owner's display name.
///
/// # Errors
/// Catalog errors.
pub async fn tenant_name(pool: &CatalogPool, tenant: TenantId) -> Result<String, StoreError> {
    let client = pool.get().await?;
    let row = client.query_opt("SELECT name FROM tenants WHERE id = $1", &[&tenant.0]).await?;
    Ok(row.map(|row| row.get(0)).unwrap_or_default())
}

/// The names of the tenant's buckets, in order.
///
/// # Errors
/// Catalog errors.
pub(crate) async fn names_of_tenant(pool: &CatalogPool, tenant: TenantId) -> Result<Vec<String>, StoreError> {
    let client = pool.get().await?;
    let rows =
        client.query("SELECT name FROM buckets WHERE tenant_id = $1 ORDER BY name", &[&tenant.0]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
