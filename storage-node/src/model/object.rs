//! Objects: the binding of a bucket's key to an object of the chunk store, with the headers
//! stored with it, and the ordered read of a bucket's keys that listings page through.

use std::collections::HashMap;

use time::OffsetDateTime;
use tokio_postgres::Transaction;
use tokio_postgres::types::{ToSql, Type};

use super::ModelError;
use super::bucket::{self, BucketAccess, CannedAcl};
use super::one_statement::Outcome;
use super::put_batch::{Batched, SmallPuts};
use crate::TenantId;
use crate::catalog::CatalogPool;
use crate::read_cache::Invalidation;
use crate::read_cache::broadcast::Pending;
use crate::store::{ChunkStore, Ingested, ManifestHead, ObjectId, StoreError};

/// An object as bound to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    pub object: ObjectId,
    /// The owner of the object's bucket, who owns the object.
    pub tenant: TenantId,
    pub etag: String,
    pub size: u64,
    pub last_modified: OffsetDateTime,
    pub headers: ObjectHeaders,
}

crate::text_enum!(
    /// The algorithm of an additional checksum (`x-amz-checksum-*`), as S3 names it.
    ChecksumAlgorithm {
        Crc32 => "CRC32",
        Crc32c => "CRC32C",
        Crc64Nvme => "CRC64NVME",
        Sha1 => "SHA1",
        Sha256 => "SHA256",
    }
);

crate::text_enum!(
    /// What an additional checksum covers.
    ChecksumKind {
        /// The object's bytes (a single PUT, or a multipart upload's CRCs combined).
        FullObject => "FULL_OBJECT",
        /// The parts' checksums, concatenated (a multipart upload's; the value ends in `-N`).
        Composite => "COMPOSITE",
    }
);

/// An object's additional checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChecksum {
    pub algorithm: ChecksumAlgorithm,
    pub kind: ChecksumKind,
    /// Base64, as S3 shows it.
    pub value: String,
}

impl StoredChecksum {
    /// The checksum in `row` from column `at` on (`checksum_algorithm, checksum_type,
    /// checksum`), when all three are set.
    pub(crate) fn from_row(row: &tokio_postgres::Row, at: usize) -> Option<StoredChecksum> {
        let algorithm = row.get::<_, Option<ChecksumAlgorithm>>(at)?;
        let kind = row.get::<_, Option<ChecksumKind>>(at + 1)?;
        Some(StoredChecksum { algorithm, kind, value: row.get::<_, Option<String>>(at + 2)? })
    }
}

/// A part of an object completed from a multipart upload, as GetObjectAttributes shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectPart {
    pub number: i32,
    pub size: i64,
    /// In the object's checksum algorithm, base64.
    pub checksum: Option<String>,
}

/// The headers a PUT or a copy stores with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHeaders {
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    /// A real content coding (gzip, say); never `aws-chunked`, which is the transfer's.
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<OffsetDateTime>,
    pub metadata: HashMap<String, String>,
    /// The additional checksum, shown on GET and HEAD with `x-amz-checksum-mode: ENABLED`.
    pub checksum: Option<StoredChecksum>,
    /// Who may read the object besides its tenant (`x-amz-acl`, PutObjectAcl).
    pub acl: CannedAcl,
}

impl ObjectHeaders {
    /// About how many bytes of memory the headers hold.
    pub(crate) fn weight(&self) -> usize {
        let texts = [
            &self.content_type,
            &self.content_disposition,
            &self.cache_control,
            &self.content_encoding,
            &self.content_language,
        ];
        let metadata: usize = self.metadata.iter().map(|(name, value)| name.len() + value.len() + 48).sum();
        let checksum = self.checksum.as_ref().map_or(0, |checksum| checksum.value.len());
        std::mem::size_of::<Self>()
            + texts.iter().map(|text| text.as_ref().map_or(0, String::len)).sum::<usize>()
            + metadata
            + checksum
    }

    /// The user metadata as the catalog's `jsonb` column takes it.
    pub(crate) fn metadata_json(&self) -> String {
        serde_json::to_string(&self.metadata).unwrap_or_else(|_| "{}".into())
    }

    /// The headers in `row` from column `at` on, in the order `content_type,
    /// content_disposition, cache_control, user_metadata::text, content_encoding,
    /// content_language, expires`.
    pub(crate) fn from_row(row: &tokio_postgres::Row, at: usize) -> ObjectHeaders {
        ObjectHeaders {
            content_type: row.get(at),
            content_disposition: row.get(at + 1),
            cache_control: row.get(at + 2),
            metadata: serde_json::from_str(row.get::<_, &str>(at + 3)).unwrap_or_default(),
            content_encoding: row.get(at + 4),
            content_language: row.get(at + 5),
            expires: row.get(at + 6),
            checksum: None,
            acl: CannedAcl::Private,
        }
    }

    /// [`ObjectHeaders::from_row`], and the checksum from the three columns after them.
    fn from_row_with_checksum(row: &tokio_postgres::Row, at: usize) -> ObjectHeaders {
        ObjectHeaders { checksum: StoredChecksum::from_row(row, at + 7), ..ObjectHeaders::from_row(row, at) }
    }
}

/// A bucket found by name, and the object at a key of it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub bucket: BucketAccess,
    pub object: Option<ObjectRow>,
}

/// Where an object is bound: a key of the bucket authorized as `id`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub bucket: &'a str,
    pub id: i64,
    pub key: &'a str,
}

/// What a conditional write (`If-None-Match: *`, `If-Match`) needs its key to hold when it
/// binds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriteCondition {
    /// No condition.
    #[default]
    Any,
    /// No object (`If-None-Match: *`).
    Absent,
    /// Some object (`If-Match: *`).
    Present,
    /// An object with this ETag (`If-Match`).
    Etag(String),
}

impl WriteCondition {
    /// Whether the condition holds for a key whose object has `etag` (`None`: no object).
    pub fn holds(&self, etag: Option<&str>) -> bool {
        match self {
            WriteCondition::Any => true,
            WriteCondition::Absent => etag.is_none(),
            WriteCondition::Present => etag.is_some(),
            WriteCondition::Etag(wanted) => etag == Some(wanted.as_str()),
        }
    }
}

/// Checks `condition` on `target`'s key in `txn`, locking the key's row. The caller holds the
/// tenant's row (every write to the key takes it first), so the answer stands until commit.
///
/// # Errors
/// [`ModelError::ConditionFailed`]; catalog errors.
pub async fn check_condition_in(
    txn: &Transaction<'_>,
    target: &Target<'_>,
    condition: &WriteCondition,
) -> Result<(), ModelError> {
    if *condition == WriteCondition::Any {
        return Ok(());
    }
    let etag: Option<String> = txn
        .query_opt(
            "SELECT etag FROM s3_objects WHERE bucket = $1 AND key = $2 FOR UPDATE",
            &[&target.bucket, &target.key],
        )
        .await?
        .map(|row| row.get(0));
    if condition.holds(etag.as_deref()) { Ok(()) } else { Err(ModelError::ConditionFailed) }
}

/// What [`bind`] puts at a key.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    /// A new upload, committed in the binding's transaction, or, when small, with others
    /// queued at the same time in this queue's next batch.
    New(&'a Ingested, &'a SmallPuts),
    /// A copy of an object, sharing its chunks.
    Copy(ObjectId),
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub etag: String,
    pub size: i64,
    pub last_modified: OffsetDateTime,
}

/// Where a read of a bucket's keys starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Keys strictly greater than this one.
    After(String),
    /// Keys greater than or equal to this string.
    From(String),
}

/// Bucket `bucket` and the object at `key` in it, in one query (so access can be decided
/// before the object's absence is told). `None` when there is no such bucket.
///
/// # Errors
/// Catalog errors.
pub async fn lookup(pool: &CatalogPool, bucket: &str, key: &str) -> Result<Option<Lookup>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(&format!("SELECT {LOOKUP_SELECT} {LOOKUP_FROM} WHERE b.name = $1"), &[&bucket, &key])
        .await?;
    Ok(row.map(|row| lookup_of(&row)))
}

/// The select list of a lookup ([`lookup_of`] reads its columns) over [`LOOKUP_FROM`].
const LOOKUP_SELECT: &str = "b.id, b.tenant_id, b.acl, s.object_id, s.etag, o.size, s.last_modified, \
        s.content_type, s.content_disposition, s.cache_control, s.user_metadata::text, \
        s.content_encoding, s.content_language, s.expires, \
        s.checksum_algorithm, s.checksum_type, s.checksum, s.acl";

/// The joins of a lookup, for `$1` the bucket's name and `$2` the key.
const LOOKUP_FROM: &str = "FROM buckets b LEFT JOIN s3_objects s ON s.bucket = b.name AND s.key = $2 \
     LEFT JOIN objects o ON o.id = s.object_id";

/// How many columns [`LOOKUP_SELECT`] has.
const LOOKUP_COLUMNS: usize = 18;

fn lookup_of(row: &tokio_postgres::Row) -> Lookup {
    let bucket = BucketAccess { id: row.get(0), tenant: TenantId(row.get(1)), acl: row.get(2) };
    let object = row.get::<_, Option<i64>>(3).map(|object| ObjectRow {
        object: ObjectId(object),
        tenant: bucket.tenant,
        etag: row.get(4),
        size: row.get::<_, i64>(5) as u64,
        last_modified: row.get(6),
        headers: ObjectHeaders { acl: row.get(17), ..ObjectHeaders::from_row_with_checksum(row, 7) },
    });
    Lookup { bucket, object }
}

/// [`lookup`] for a read from byte `from` on: the same query also brings the object's manifest
/// entries from the one that holds that byte (with the bytes of chunks kept inline), so that a
/// small object's GET, or a range of a large one, costs one catalog round trip, and a whole
/// large one starts streaming without another.
///
/// # Errors
/// Catalog errors.
pub async fn lookup_for_read(
    store: &ChunkStore,
    bucket: &str,
    key: &str,
    from: u64,
) -> Result<Option<(Lookup, Option<ManifestHead>)>, StoreError> {
    let client = store.catalog().get().await?;
    let sql = format!(
        "SELECT {LOOKUP_SELECT}, e.* {LOOKUP_FROM} LEFT JOIN LATERAL ({}) e ON true WHERE b.name = $1",
        crate::store::manifest_head_sql("o.id", "$3", "$4")
    );
    // Prepared once per connection: planning the joins costs more than running them.
    let statement =
        client.prepare_typed_cached(&sql, &[Type::TEXT, Type::TEXT, Type::INT4, Type::INT8]).await?;
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let rows = client.query(&statement, &[&bucket, &key, &store.node().0, &from]).await?;
    let Some(first) = rows.first() else { return Ok(None) };
    let found = lookup_of(first);
    let head = found
        .object
        .as_ref()
        .map(|row| ManifestHead::from_rows(&rows, LOOKUP_COLUMNS, row.tenant, row.object));
    Ok(Some((found, head)))
}

/// [`lookup`] with the object's whole manifest, up to [`crate::store::WHOLE_MANIFEST_ENTRIES`]
/// entries (past that, only its first ones): for the read cache, which then serves the
/// object's ranges with no catalog query. Two queries: the manifest is read by the object's id,
/// which names its content for good, so a write in between cannot mix two objects (and the
/// cache's ticket drops what such a write made stale).
///
/// # Errors
/// Catalog errors.
pub async fn lookup_whole_for_read(
    store: &ChunkStore,
    bucket: &str,
    key: &str,
) -> Result<Option<(Lookup, Option<ManifestHead>)>, StoreError> {
    let Some(found) = lookup(store.catalog(), bucket, key).await? else { return Ok(None) };
    let head = match &found.object {
        Some(row) => Some(store.whole_manifest(row.tenant, row.object).await?),
        None => None,
    };
    Ok(Some((found, head)))
}

/// How many times [`bind`] runs its transaction again after Postgres broke a deadlock by
/// aborting it (two uploads that each release what the other stores, say).
const BIND_ATTEMPTS: usize = 3;

/// Binds a new object (committed here) or a copy to `target` in one transaction (a small new
/// object to a free key: in one statement, `one_statement`), releasing what was there, if
/// `condition` holds. The bucket is checked again (by id) and held shared
/// inside the transaction. Returns the modification time.
///
/// # Errors
/// See [`bucket::lock_in`] and [`check_condition_in`]; catalog and store errors (a quota
/// exceeded, say).
pub async fn bind(
    store: &ChunkStore,
    tenant: TenantId,
    target: Target<'_>,
    etag: &str,
    headers: &ObjectHeaders,
    binding: Binding<'_>,
    condition: &WriteCondition,
) -> Result<OffsetDateTime, ModelError> {
    let mut attempt = 1;
    // A conditional write holds the tenant alone, so that its condition stands until commit.
    let mut shared = *condition == WriteCondition::Any;
    let what = Bind { tenant, target: &target, etag, headers, binding, condition };
    // Owed from before the commit: a request dropped after it still has the caches told.
    let pending = Pending::new(store, Invalidation::key(target.bucket, target.key));
    if let Binding::New(ingested, small_puts) = binding
        && *condition == WriteCondition::Any
        && ingested.fits_one_statement()
    {
        let outcome = match small_puts.bind(store, ingested, &target, etag, headers, &pending).await? {
            Batched::Done(outcome) => Some(outcome),
            Batched::Alone => match ingested.in_one_statement() {
                Some(commit) => {
                    Some(super::one_statement::bind(store, &commit, &target, etag, headers, &pending).await?)
                }
                None => None,
            },
            // Perhaps committed: the transaction replaces it if so, and the caches stay owed.
            Batched::MaybeWritten => None,
        };
        match outcome {
            Some(Outcome::Bound(modified, peers)) => {
                match peers {
                    Some(peers) => pending.confirm_with(peers).await?,
                    None => pending.confirm().await?,
                }
                return Ok(modified);
            }
            Some(Outcome::InTransaction { may_share }) => shared = may_share,
            None => {}
        }
    }
    loop {
        let bound = bind_once(store, &what, shared, &pending).await;
        match bound {
            Ok(modified) => {
                pending.confirm().await?;
                return Ok(modified);
            }
            Err(ModelError::Store(err)) if shared && crate::store::needs_exclusive(&err) => shared = false,
            Err(ModelError::Store(StoreError::Catalog(crate::catalog::CatalogError::Query(err))))
                if attempt < BIND_ATTEMPTS
                    && err.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// What [`bind`] binds, for each of its tries.
struct Bind<'a> {
    tenant: TenantId,
    target: &'a Target<'a>,
    etag: &'a str,
    headers: &'a ObjectHeaders,
    binding: Binding<'a>,
    condition: &'a WriteCondition,
}

/// One try of [`bind`]; `shared`: commit a new upload with [`ChunkStore::commit_shared`].
async fn bind_once(
    store: &ChunkStore,
    what: &Bind<'_>,
    shared: bool,
    pending: &Pending,
) -> Result<OffsetDateTime, ModelError> {
    let Bind { tenant, target, etag, headers, binding, condition } = *what;
    let mut client = store.catalog().get().await?;
    let txn = client.transaction().await?;
    // The bucket's check travels with the commit's first statement (one round trip).
    let object = match binding {
        Binding::New(ingested, _) => {
            let commit = async {
                match shared {
                    true => store.commit_shared(&txn, ingested).await,
                    false => store.commit(&txn, ingested).await,
                }
            };
            let (checked, committed) =
                futures::join!(bucket::lock_in(&txn, target.bucket, target.id), commit);
            checked?;
            committed?.id
        }
        Binding::Copy(source) => {
            bucket::lock_in(&txn, target.bucket, target.id).await?;
            store.copy_in(&txn, tenant, source).await?
        }
    };
    check_condition_in(&txn, target, condition).await?;
    let modified = bind_in(&txn, store, tenant, target, etag, headers, object).await?;
    pending.arm();
    txn.commit().await?;
    Ok(modified)
}

/// Puts `object` at `target` in `txn`, releasing the object that was there. The caller has
/// locked the bucket ([`bucket::lock_in`]) and committed or copied `object` in `txn` (and so
/// holds the tenant's row as that took it). Returns the modification time. Once committed, read
/// caches must drop the key before the write is acknowledged ([`crate::read_cache::broadcast::everywhere`]).
///
/// A new key costs one statement; a key that holds an object is locked, then changed.
///
/// # Errors
/// Catalog and store errors.
pub async fn bind_in(
    txn: &deadpool_postgres::Transaction<'_>,
    store: &ChunkStore,
    tenant: TenantId,
    target: &Target<'_>,
    etag: &str,
    headers: &ObjectHeaders,
    object: ObjectId,
) -> Result<OffsetDateTime, StoreError> {
    let (bucket, key) = (target.bucket, target.key);
    let row = RowParams::of(etag, headers);
    let typed = [
        vec![(&bucket as &(dyn ToSql + Sync), Type::TEXT), (&key, Type::TEXT), (&object.0, Type::INT8)],
        row.params(),
    ]
    .concat();
    let values: Vec<&(dyn ToSql + Sync)> = typed.iter().map(|(value, _)| *value).collect();
    loop {
        let inserted = crate::catalog::query_prepared_opt(
            txn,
            &format!(
                "INSERT INTO s3_objects ({S3_OBJECT_COLUMNS}) VALUES ($1, $2, $3, {}) \
                 ON CONFLICT (bucket, key) DO NOTHING RETURNING last_modified",
                RowParams::values(4)
            ),
            &typed,
        )
        .await?;
        if let Some(row) = inserted {
            return Ok(row.get(0));
        }
        // The key holds an object (committed, since the insert waited for it): lock it, so
        // that the object released is the one replaced.
        let previous = txn
            .query_opt(
                "SELECT object_id FROM s3_objects WHERE bucket = $1 AND key = $2 FOR UPDATE",
                &[&bucket, &key],
            )
            .await?;
        let Some(previous) = previous.map(|row| ObjectId(row.get(0))) else {
            continue; // Deleted meanwhile: insert again.
        };
        let modified = txn
            .query_one(
                "UPDATE s3_objects SET object_id = $3, etag = $4, content_type = $5, content_disposition = $6, \
                    cache_control = $7, user_metadata = $8::text::jsonb, content_encoding = $9, \
                    content_language = $10, expires = $11, checksum_algorithm = $12, checksum_type = $13, \
                    checksum = $14, parts = NULL, acl = $15, last_modified = now() \
                 WHERE bucket = $1 AND key = $2 RETURNING last_modified",
                &values,
            )
            .await?
            .get(0);
        store.release_in(txn, tenant, previous).await?;
        return Ok(modified);
    }
}

/// The columns of an `s3_objects` row as [`bind_in`] inserts it: the key, the object, then
/// those of [`RowParams`].
pub(super) const S3_OBJECT_COLUMNS: &str = "bucket, key, object_id, etag, content_type, content_disposition, \
     cache_control, user_metadata, content_encoding, content_language, expires, checksum_algorithm, checksum_type, \
     checksum, parts, acl";

/// The ETag and headers of an `s3_objects` row as statement parameters.
pub(super) struct RowParams<'a> {
    etag: &'a str,
    headers: &'a ObjectHeaders,
    metadata: String,
    algorithm: Option<ChecksumAlgorithm>,
    kind: Option<ChecksumKind>,
    checksum: Option<&'a str>,
}

impl<'a> RowParams<'a> {
    pub(super) fn of(etag: &'a str, headers: &'a ObjectHeaders) -> Self {
        let checksum = headers.checksum.as_ref();
        RowParams {
            etag,
            headers,
            metadata: headers.metadata_json(),
            algorithm: checksum.map(|c| c.algorithm),
            kind: checksum.map(|c| c.kind),
            checksum: checksum.map(|c| c.value.as_str()),
        }
    }

    /// The parameters, in the order of [`S3_OBJECT_COLUMNS`] from `etag` on (`parts` is
    /// always null here).
    pub(super) fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        let headers = self.headers;
        vec![
            (&self.etag, Type::TEXT),
            (&headers.content_type, Type::TEXT),
            (&headers.content_disposition, Type::TEXT),
            (&headers.cache_control, Type::TEXT),
            (&self.metadata, Type::TEXT),
            (&headers.content_encoding, Type::TEXT),
            (&headers.content_language, Type::TEXT),
            (&headers.expires, Type::TIMESTAMPTZ),
            (&self.algorithm, Type::TEXT),
            (&self.kind, Type::TEXT),
            (&self.checksum, Type::TEXT),
            (&headers.acl, Type::TEXT),
        ]
    }

    /// The values of [`S3_OBJECT_COLUMNS`] from `etag` on, for [`RowParams::params`] given
    /// from parameter `$first` on.
    pub(super) fn values(first: usize) -> String {
        let mut values: Vec<String> = (first..first + 12).map(|i| format!("${i}")).collect();
        values[4].push_str("::text::jsonb"); // the user metadata
        values.insert(11, "NULL".into()); // the parts, before the ACL
        values.join(", ")
    }
}

/// Deletes the object at `target` of `tenant`'s bucket; a key that is not there is no error.
///
/// # Errors
/// See [`bucket::lock_in`]; catalog and store errors.
pub async fn delete(store: &ChunkStore, tenant: TenantId, target: Target<'_>) -> Result<(), ModelError> {
    let pending = Pending::new(store, Invalidation::key(target.bucket, target.key));
    delete_in_catalog(store, tenant, &target, &pending).await?;
    // Also when nothing was there: an earlier write's invalidation may not have been confirmed.
    pending.confirm().await?;
    Ok(())
}

/// The most bytes of keys one invalidation names; past that it names the whole bucket.
const MAX_KEYS_LISTED_BYTES: usize = 64 * 1024;

/// Deletes the objects at `keys` of `tenant`'s bucket `bucket` (authorized as `id`), each in a
/// transaction of its own, then has the read caches drop them all at once. Each key's outcome,
/// in order; a key that is not there is no error.
///
/// # Errors
/// The invalidation's ([`crate::read_cache::broadcast::everywhere`]): the deletions are done.
pub async fn delete_keys(
    store: &ChunkStore,
    tenant: TenantId,
    bucket: &str,
    id: i64,
    keys: &[String],
) -> Result<Vec<Result<(), ModelError>>, ModelError> {
    // Many long keys go as the whole bucket: an invalidation stays a small request.
    let listed = keys.iter().map(String::len).sum::<usize>() <= MAX_KEYS_LISTED_BYTES;
    let keys_listed = listed.then(|| keys.to_vec());
    let pending = Pending::new(store, Invalidation { bucket: bucket.to_string(), keys: keys_listed });
    let mut outcomes = Vec::with_capacity(keys.len());
    for key in keys {
        outcomes.push(delete_in_catalog(store, tenant, &Target { bucket, id, key }, &pending).await);
    }
    pending.confirm().await?;
    Ok(outcomes)
}

/// The transaction of [`delete`], whose pooled connection goes back before the invalidation.
async fn delete_in_catalog(
    store: &ChunkStore,
    tenant: TenantId,
    target: &Target<'_>,
    pending: &Pending,
) -> Result<(), ModelError> {
    let mut client = store.catalog().get().await?;
    let txn = client.transaction().await?;
    bucket::lock_in(&txn, target.bucket, target.id).await?;
    // The tenant before the key's row, as a PUT takes them: the other order deadlocked
    // with a PUT of the same key.
    crate::store::lock_tenant(&txn, tenant).await?;
    let removed = txn
        .query_opt(
            "DELETE FROM s3_objects WHERE bucket = $1 AND key = $2 RETURNING object_id",
            &[&target.bucket, &target.key],
        )
        .await?;
    if let Some(row) = removed {
        store.delete_in(&txn, tenant, ObjectId(row.get(0))).await?;
    }
    pending.arm();
    txn.commit().await?;
    Ok(())
}

/// Up to `limit` objects of `bucket` at `cursor` or after it and not below `prefix`, in the
/// binary order of their keys (the `key` column is `COLLATE "C"`).
///
/// # Errors
/// Catalog errors.
pub async fn page(
    client: &tokio_postgres::Client,
    bucket: &str,
    bucket_id: i64,
    cursor: &Cursor,
    prefix: &str,
    limit: i64,
) -> Result<Vec<ListedObject>, StoreError> {
    let (sql, at) = match cursor {
        Cursor::After(key) => (
            "SELECT s.key, s.etag, o.size, s.last_modified \
             FROM s3_objects s JOIN objects o ON o.id = s.object_id \
             WHERE s.bucket = $1 AND s.key > $2 AND s.key >= $3 \
               AND EXISTS (SELECT 1 FROM buckets b WHERE b.name = $1 AND b.id = $5) \
             ORDER BY s.key LIMIT $4",
            key,
        ),
        Cursor::From(key) => (
            "SELECT s.key, s.etag, o.size, s.last_modified \
             FROM s3_objects s JOIN objects o ON o.id = s.object_id \
             WHERE s.bucket = $1 AND s.key >= $2 AND s.key >= $3 \
               AND EXISTS (SELECT 1 FROM buckets b WHERE b.name = $1 AND b.id = $5) \
             ORDER BY s.key LIMIT $4",
            key,
        ),
    };
    let rows = client.query(sql, &[&bucket, at, &prefix, &limit, &bucket_id]).await?;
    Ok(rows
        .iter()
        .map(|row| ListedObject {
            key: row.get(0),
            etag: row.get(1),
            size: row.get(2),
            last_modified: row.get(3),
        })
        .collect())
}

/// The parts of `object`, the object at `bucket`/`key`: `None` when it was not completed from a
/// multipart upload (or is not there).
///
/// # Errors
/// Catalog errors.
pub async fn parts_of(
    pool: &CatalogPool,
    bucket: &str,
    key: &str,
    object: ObjectId,
) -> Result<Option<Vec<ObjectPart>>, StoreError> {
    let client = pool.get().await?;
    // The object the caller read, not whatever replaced it at the key meanwhile.
    let row = client
        .query_opt(
            "SELECT parts::text FROM s3_objects WHERE bucket = $1 AND key = $2 AND object_id = $3",
            &[&bucket, &key, &object.0],
        )
        .await?;
    let parts = row.and_then(|row| row.get::<_, Option<String>>(0));
    Ok(parts.and_then(|parts| serde_json::from_str(&parts).ok()))
}

/// Sets the canned ACL of the object at `bucket`/`key` in the bucket with identity
/// `bucket_id`; `false` when there is none.
///
/// # Errors
/// Catalog errors.
pub async fn set_acl(
    store: &ChunkStore,
    bucket: &str,
    bucket_id: i64,
    key: &str,
    acl: CannedAcl,
) -> Result<bool, StoreError> {
    let pending = Pending::new(store, Invalidation::key(bucket, key));
    let client = store.catalog().get().await?;
    pending.arm();
    // Only in the bucket access was decided on (not one created again under its name).
    let changed = client
        .execute(
            "UPDATE s3_objects o SET acl = $3 FROM buckets b \
             WHERE o.bucket = $1 AND o.key = $2 AND b.name = o.bucket AND b.id = $4",
            &[&bucket, &key, &acl, &bucket_id],
        )
        .await?;
    drop(client);
    pending.confirm().await?;
    Ok(changed > 0)
}
