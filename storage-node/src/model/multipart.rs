//! Multipart uploads and their parts. Each part is an object of the chunk store of its own;
//! completing the upload concatenates the parts' manifests into one object (no byte is copied).
//! Aborting, or the expiry of a stale upload, deletes the parts, and GC reclaims their chunks.
//!
//! The upload's row is the lock that orders these: a part commits only while holding it
//! shared and finding it there, and completion, abort and bucket deletion take it exclusively
//! and read the parts inside the same transaction. So a part that races a completion or an
//! abort either lands before it (and is concatenated or released with the rest) or fails with
//! [`ModelError::UploadGone`] (and its object is never committed): no part object outlives its
//! upload.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Transaction;

use super::object::{
    self, ChecksumAlgorithm, ChecksumKind, ObjectHeaders, ObjectPart, StoredChecksum, Target, WriteCondition,
};
use super::{ModelError, bucket};
use crate::TenantId;
use crate::catalog::CatalogPool;
use crate::store::{ChunkStore, Ingested, ObjectId, StoreError};

/// A part as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRow {
    pub number: i32,
    pub object: ObjectId,
    pub etag: String,
    pub size: i64,
    pub last_modified: OffsetDateTime,
    /// In its upload's checksum algorithm, base64.
    pub checksum: Option<String>,
}

/// An upload in progress, as a bucket's listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadEntry {
    pub key: String,
    pub id: String,
    pub initiated: OffsetDateTime,
}

/// A new upload.
#[derive(Debug, Clone)]
pub struct NewUpload<'a> {
    pub id: &'a str,
    pub tenant: TenantId,
    /// Where the completed object goes.
    pub target: Target<'a>,
    pub headers: &'a ObjectHeaders,
    /// The checksum its parts and object get.
    pub checksum: Option<(ChecksumAlgorithm, ChecksumKind)>,
}

/// An upload in progress as found: the headers its object gets, and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUpload {
    pub headers: ObjectHeaders,
    pub checksum: Option<(ChecksumAlgorithm, ChecksumKind)>,
}

/// The parts a completion takes, in order, and the completed object's ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub parts: Vec<ObjectId>,
    pub etag: String,
    /// The object's checksum, and its parts as GetObjectAttributes shows them.
    pub checksum: Option<StoredChecksum>,
    pub listed: Vec<ObjectPart>,
}

/// A completion of upload `id`: the parts it names (number and ETag, as named), and the
/// condition its key must meet.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    pub id: &'a str,
    pub named: &'a [(i32, String)],
    pub condition: &'a WriteCondition,
}

/// A completion as remembered for its retries: the parts it named (number and ETag, as
/// named) and the ETag it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub named: Vec<(i32, String)>,
    pub etag: String,
    pub checksum: Option<StoredChecksum>,
}

const PARTS: &str = "SELECT part_number, object_id, etag, size, last_modified, checksum \
                     FROM multipart_parts WHERE upload_id = $1 ORDER BY part_number";

fn part_row(row: &tokio_postgres::Row) -> PartRow {
    PartRow {
        number: row.get(0),
        object: ObjectId(row.get(1)),
        etag: row.get(2),
        size: row.get(3),
        last_modified: row.get(4),
        checksum: row.get(5),
    }
}

/// Records a new upload, in the bucket as authorized.
///
/// # Errors
/// See [`bucket::lock_in`]; catalog errors.
pub async fn create(pool: &CatalogPool, upload: NewUpload<'_>) -> Result<(), ModelError> {
    let metadata = upload.headers.metadata_json();
    let mut client = pool.get().await?;
    let txn = client.transaction().await?;
    bucket::lock_in(&txn, upload.target.bucket, upload.target.id).await?;
    txn.execute(
        "INSERT INTO multipart_uploads (id, bucket, key, tenant_id, content_type, content_disposition, \
                                        cache_control, user_metadata, content_encoding, content_language, expires, \
                                        checksum_algorithm, checksum_type, acl) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10, $11, $12, $13, $14)",
        &[
            &upload.id,
            &upload.target.bucket,
            &upload.target.key,
            &upload.tenant.0,
            &upload.headers.content_type,
            &upload.headers.content_disposition,
            &upload.headers.cache_control,
            &metadata,
            &upload.headers.content_encoding,
            &upload.headers.content_language,
            &upload.headers.expires,
            &upload.checksum.map(|c| c.0),
            &upload.checksum.map(|c| c.1),
            &upload.headers.acl,
        ],
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Upload `id`, when it is `bucket`/`key`'s and `tenant`'s.
///
/// # Errors
/// Catalog errors.
pub async fn find(
    pool: &CatalogPool,
    id: &str,
    bucket: &str,
    key: &str,
    tenant: TenantId,
) -> Result<Option<FoundUpload>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT content_type, content_disposition, cache_control, user_metadata::text, content_encoding, \
                    content_language, expires, checksum_algorithm, checksum_type, acl FROM multipart_uploads \
             WHERE id = $1 AND bucket = $2 AND key = $3 AND tenant_id = $4",
            &[&id, &bucket, &key, &tenant.0],
        )
        .await?;
    Ok(row.map(|row| {
        let checksum = row.get::<_, Option<ChecksumAlgorithm>>(7).zip(row.get::<_, Option<ChecksumKind>>(8));
        FoundUpload {
            headers: ObjectHeaders { acl: row.get(9), ..ObjectHeaders::from_row(&row, 0) },
            checksum,
        }
    }))
}

/// Commits `ingested` as part `number` of upload `id` (with its `checksum` in the upload's
/// algorithm), replacing (and releasing) an earlier upload of the same part.
///
/// # Errors
/// [`ModelError::UploadGone`] when the upload was completed or aborted meanwhile (the part is
/// then not committed at all); catalog and store errors.
pub async fn store_part(
    store: &ChunkStore,
    tenant: TenantId,
    id: &str,
    number: i32,
    ingested: &Ingested,
    (etag, checksum): (&str, Option<&str>),
) -> Result<(), ModelError> {
    let mut client = store.catalog().get().await?;
    let txn = client.transaction().await?;
    // Held shared until the part is recorded: a completion or abort that takes the
    // upload first leaves nothing here, and this part is not committed at all.
    let open = txn.query_opt("SELECT 1 FROM multipart_uploads WHERE id = $1 FOR SHARE", &[&id]).await?;
    if open.is_none() {
        return Err(ModelError::UploadGone);
    }
    let object = store.commit(&txn, ingested).await?;
    // The tenant's row, locked by the commit, orders two uploads of one part: the last to
    // commit wins and releases the other's object.
    let previous: Option<i64> = txn
        .query_opt(
            "SELECT object_id FROM multipart_parts WHERE upload_id = $1 AND part_number = $2 FOR UPDATE",
            &[&id, &number],
        )
        .await?
        .map(|row| row.get(0));
    txn.execute(
        "INSERT INTO multipart_parts (upload_id, part_number, object_id, etag, size, checksum) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (upload_id, part_number) DO UPDATE SET object_id = EXCLUDED.object_id, \
            etag = EXCLUDED.etag, size = EXCLUDED.size, checksum = EXCLUDED.checksum, last_modified = now()",
        &[&id, &number, &object.id.0, &etag, &(object.size as i64), &checksum],
    )
    .await?;
    if let Some(previous) = previous {
        store.delete_in(&txn, tenant, ObjectId(previous)).await?;
    }
    txn.commit().await?;
    Ok(())
}

/// The parts of upload `id`, by number.
///
/// # Errors
/// Catalog errors.
pub async fn parts(pool: &CatalogPool, id: &str) -> Result<Vec<PartRow>, StoreError> {
    let client = pool.get().await?;
    Ok(client.query(PARTS, &[&id]).await?.iter().map(part_row).collect())
}

/// Completes upload `id` of `tenant` into `target`: `choose` picks the parts (from those
/// stored, read under the upload's exclusive lock) and names the ETag; their manifests are
/// concatenated into one object bound to the key with `headers`, and the upload goes. The
/// completion is remembered with the parts it names, for [`find_completed`].
///
/// # Errors
/// What `choose` refuses; [`ModelError::UploadGone`]; see [`bucket::lock_in`] and
/// [`object::check_condition_in`].
pub async fn complete<E>(
    store: &ChunkStore,
    tenant: TenantId,
    completion: Completion<'_>,
    target: Target<'_>,
    headers: &ObjectHeaders,
    choose: impl FnOnce(&[PartRow]) -> Result<Chosen, E>,
) -> Result<(), E>
where
    E: From<ModelError>,
{
    let Completion { id, named, condition } = completion;
    let stale = crate::read_cache::Invalidation::key(target.bucket, target.key);
    let pending = crate::read_cache::broadcast::Pending::new(store, stale);
    let mut client = store.catalog().get().await.map_err(ModelError::from)?;
    let txn = client.transaction().await.map_err(ModelError::from)?;
    bucket::lock_in(&txn, target.bucket, target.id).await?;
    // Exclusively: no part commits from here on, and a concurrent completion or abort
    // that got here first leaves nothing to complete.
    if !lock_exclusive(&txn, id).await.map_err(ModelError::from)? {
        return Err(ModelError::UploadGone.into());
    }
    let stored: Vec<PartRow> =
        txn.query(PARTS, &[&id]).await.map_err(ModelError::from)?.iter().map(part_row).collect();
    let chosen = choose(&stored)?;
    let headers = &ObjectHeaders { checksum: chosen.checksum.clone(), ..headers.clone() };
    let object = store.concat_in(&txn, tenant, &chosen.parts, None).await.map_err(ModelError::from)?;
    object::check_condition_in(&txn, &target, condition).await?;
    drop_in(&txn, store, tenant, id).await.map_err(ModelError::from)?;
    object::bind_in(&txn, store, tenant, &target, &chosen.etag, headers, object)
        .await
        .map_err(ModelError::from)?;
    let listed = serde_json::to_string(&chosen.listed).unwrap_or_else(|_| "[]".into());
    txn.execute(
        "UPDATE s3_objects SET parts = $3::text::jsonb WHERE bucket = $1 AND key = $2",
        &[&target.bucket, &target.key, &listed],
    )
    .await
    .map_err(ModelError::from)?;
    let named = serde_json::to_string(named).unwrap_or_else(|_| "[]".into());
    let checksum = chosen.checksum.as_ref();
    txn.execute(
        "INSERT INTO completed_uploads (id, tenant_id, bucket, key, parts, etag, checksum_algorithm, \
                                        checksum_type, checksum) \
         VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9)",
        &[
            &id,
            &tenant.0,
            &target.bucket,
            &target.key,
            &named,
            &chosen.etag,
            &checksum.map(|c| c.algorithm),
            &checksum.map(|c| c.kind),
            &checksum.map(|c| c.value.as_str()),
        ],
    )
    .await
    .map_err(ModelError::from)?;
    pending.arm();
    txn.commit().await.map_err(ModelError::from)?;
    drop(client);
    pending.confirm().await.map_err(ModelError::from)?;
    Ok(())
}

/// The completion of upload `id`, when it completed into `bucket`/`key` of `tenant` and is
/// still remembered.
///
/// # Errors
/// Catalog errors.
pub async fn find_completed(
    pool: &CatalogPool,
    id: &str,
    bucket: &str,
    key: &str,
    tenant: TenantId,
) -> Result<Option<Completed>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT parts::text, etag, checksum_algorithm, checksum_type, checksum FROM completed_uploads \
             WHERE id = $1 AND bucket = $2 AND key = $3 AND tenant_id = $4",
            &[&id, &bucket, &key, &tenant.0],
        )
        .await?;
    Ok(row.map(|row| Completed {
        named: serde_json::from_str(row.get::<_, &str>(0)).unwrap_or_default(),
        etag: row.get(1),
        checksum: StoredChecksum::from_row(&row, 2),
    }))
}

/// Aborts upload `id` of `tenant`: its parts are deleted, and GC reclaims their chunks.
///
/// # Errors
/// [`ModelError::UploadGone`]; catalog and store errors.
pub async fn abort(store: &ChunkStore, tenant: TenantId, id: &str) -> Result<(), ModelError> {
    if !drop_upload(store, tenant, id).await? {
        return Err(ModelError::UploadGone);
    }
    Ok(())
}

/// [`drop_in`] in a transaction of its own.
async fn drop_upload(store: &ChunkStore, tenant: TenantId, id: &str) -> Result<bool, StoreError> {
    let mut client = store.catalog().get().await?;
    let txn = client.transaction().await?;
    let dropped = drop_in(&txn, store, tenant, id).await?;
    if dropped {
        txn.commit().await?;
    }
    Ok(dropped)
}

async fn lock_exclusive(txn: &Transaction<'_>, id: &str) -> Result<bool, StoreError> {
    let open = txn.query_opt("SELECT 1 FROM multipart_uploads WHERE id = $1 FOR UPDATE", &[&id]).await?;
    Ok(open.is_some())
}

/// Deletes upload `id` and releases every part it has, in `txn`. The upload's row is
/// locked first, so no part can commit in between. Returns whether it was there.
///
/// # Errors
/// Catalog and store errors.
pub async fn drop_in(
    txn: &Transaction<'_>,
    store: &ChunkStore,
    tenant: TenantId,
    id: &str,
) -> Result<bool, StoreError> {
    if !lock_exclusive(txn, id).await? {
        return Ok(false);
    }
    let parts: Vec<i64> = txn
        .query("DELETE FROM multipart_parts WHERE upload_id = $1 RETURNING object_id", &[&id])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    txn.execute("DELETE FROM multipart_uploads WHERE id = $1", &[&id]).await?;
    for part in parts {
        store.delete_in(txn, tenant, ObjectId(part)).await?;
    }
    Ok(true)
}

/// Drops every upload of bucket `bucket` (owned by `tenant`) in `txn`, in id order. Returns
/// how many there were.
///
/// # Errors
/// Catalog and store errors.
pub async fn drop_all_in(
    txn: &Transaction<'_>,
    store: &ChunkStore,
    tenant: TenantId,
    bucket: &str,
) -> Result<u64, StoreError> {
    let uploads: Vec<String> = txn
        .query("SELECT id FROM multipart_uploads WHERE bucket = $1 ORDER BY id", &[&bucket])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut dropped = 0;
    for upload in &uploads {
        if drop_in(txn, store, tenant, upload).await? {
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Where a listing of uploads starts: after `key` (`""`: the start), or, with `upload_id`,
/// after that upload of `key` (uploads of one key go by age).
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadMarker<'a> {
    pub key: &'a str,
    pub upload_id: Option<&'a str>,
}

/// Up to `limit` uploads in progress of `bucket` under `prefix`, after `marker`, by key and
/// age.
///
/// # Errors
/// Catalog errors.
pub async fn list(
    pool: &CatalogPool,
    bucket: &str,
    bucket_id: i64,
    prefix: &str,
    marker: UploadMarker<'_>,
    limit: usize,
) -> Result<Vec<UploadEntry>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT key, id, initiated FROM multipart_uploads \
             WHERE bucket = $1 AND starts_with(key, $2) \
               AND (key > $3 OR (key = $3 AND (initiated, id) > \
                    (SELECT initiated, id FROM multipart_uploads WHERE id = $4 AND bucket = $1))) \
               AND EXISTS (SELECT 1 FROM buckets b WHERE b.name = $1 AND b.id = $6) \
             ORDER BY key, initiated, id LIMIT $5",
            &[&bucket, &prefix, &marker.key, &marker.upload_id, &(limit as i64), &bucket_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| UploadEntry { key: row.get(0), id: row.get(1), initiated: row.get(2) })
        .collect())
}

/// Aborts the uploads started longer than `older_than` ago, and forgets the completions
/// older than that. Returns how many uploads it aborted.
///
/// # Errors
/// Catalog and store errors.
pub async fn abort_stale(store: &ChunkStore, older_than: Duration) -> Result<u64, StoreError> {
    let client = store.catalog().get().await?;
    client
        .execute(
            "DELETE FROM completed_uploads WHERE completed < now() - make_interval(secs => $1)",
            &[&older_than.as_secs_f64()],
        )
        .await?;
    let stale = client
        .query(
            "SELECT id, tenant_id FROM multipart_uploads WHERE initiated < now() - make_interval(secs => $1)",
            &[&older_than.as_secs_f64()],
        )
        .await?;
    drop(client);
    let mut aborted = 0;
    for row in stale {
        let id: String = row.get(0);
        if !drop_upload(store, TenantId(row.get(1)), &id).await? {
            // Completed or aborted meanwhile.
            continue;
        }
        tracing::info!(upload = id, "aborted a stale multipart upload");
        aborted += 1;
    }
    Ok(aborted)
}
