//! Multipart uploads. Each part goes straight into the chunk store as an object of its own;
//! completing the upload concatenates the parts' manifests into one object (no byte is copied,
//! and the parts dedup with the rest of the tenant's data like any upload). Aborting, or the
//! expiry of a stale upload, deletes the parts, and GC reclaims their chunks.
//!
//! The upload's row is the lock that orders these: a part commits only while holding it
//! shared and finding it there, and completion, abort and DeleteBucket take it exclusively and
//! read the parts inside the same transaction. So a part that races a completion or an abort
//! either lands before it (and is concatenated or released with the rest) or fails with
//! `NoSuchUpload` (and its object is never committed): no part object outlives its upload.
//! Locks are always taken bucket, then upload, then tenant, then the key's row.

use std::time::Duration;

use md5::Digest;
use s3s::{S3Result, s3_error};

use super::SiloS3;
use super::bucket::{Intent, lock_bucket};
use super::error::{from_db, from_pool, from_store};
use super::object::{ObjectHeaders, Target, check_key};
use crate::keys::TenantId;
use crate::store::{ObjectId, PutOptions};

/// S3's smallest part, except for the last one.
const MIN_PART_BYTES: i64 = 5 * 1024 * 1024;

/// A part as listed.
#[derive(Debug, Clone)]
pub(crate) struct PartRow {
    pub number: i32,
    pub object: ObjectId,
    pub etag: String,
    pub size: i64,
    pub last_modified: f64,
}

/// An upload in progress, as its caller checked it.
#[derive(Debug, Clone)]
struct Upload {
    tenant: TenantId,
    /// The id of the bucket it was checked against.
    bucket_id: i64,
    headers: ObjectHeaders,
}

const PARTS: &str = "SELECT part_number, object_id, etag, size, extract(epoch FROM last_modified)::float8 \
                     FROM multipart_parts WHERE upload_id = $1 ORDER BY part_number";

fn part_row(row: &tokio_postgres::Row) -> PartRow {
    PartRow {
        number: row.get(0),
        object: ObjectId(row.get(1)),
        etag: row.get(2),
        size: row.get(3),
        last_modified: row.get(4),
    }
}

impl SiloS3 {
    pub(crate) async fn create_upload(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        headers: ObjectHeaders,
    ) -> S3Result<String> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        check_key(key)?;
        let id = {
            use rand::RngCore;
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            hex::encode(bytes)
        };
        let metadata = serde_json::to_string(&headers.metadata).unwrap_or_else(|_| "{}".into());
        let mut client = self.pool().get().await.map_err(from_pool)?;
        let txn = client.transaction().await.map_err(from_db)?;
        lock_bucket(&txn, bucket, found.id).await?;
        txn.execute(
            "INSERT INTO multipart_uploads (id, bucket, key, tenant_id, content_type, content_disposition, \
                                                cache_control, user_metadata) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb)",
            &[
                &id,
                &bucket,
                &key,
                &tenant.0,
                &headers.content_type,
                &headers.content_disposition,
                &headers.cache_control,
                &metadata,
            ],
        )
        .await
        .map_err(from_db)?;
        txn.commit().await.map_err(from_db)?;
        Ok(id)
    }

    /// The upload, when it is `bucket`/`key`'s and the caller's.
    async fn upload(&self, caller: Option<TenantId>, bucket: &str, key: &str, id: &str) -> S3Result<Upload> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        let client = self.pool().get().await.map_err(from_pool)?;
        let row = client
            .query_opt(
                "SELECT content_type, content_disposition, cache_control, user_metadata::text FROM multipart_uploads \
                 WHERE id = $1 AND bucket = $2 AND key = $3 AND tenant_id = $4",
                &[&id, &bucket, &key, &tenant.0],
            )
            .await
            .map_err(from_db)?
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        let headers = ObjectHeaders {
            content_type: row.get(0),
            content_disposition: row.get(1),
            cache_control: row.get(2),
            metadata: serde_json::from_str(row.get::<_, &str>(3)).unwrap_or_default(),
        };
        Ok(Upload { tenant, bucket_id: found.id, headers })
    }

    /// Checks that upload `id` is `bucket`/`key`'s and the caller's.
    pub(crate) async fn check_upload(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> S3Result<()> {
        self.upload(caller, bucket, key, id).await.map(|_| ())
    }

    /// Stores one part (replacing an earlier upload of the same part). Returns its ETag.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn upload_part_for<R>(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        id: &str,
        number: i32,
        body: R,
        content_length: Option<i64>,
    ) -> S3Result<String>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        if !(1..=10_000).contains(&number) {
            return Err(s3_error!(InvalidArgument, "part numbers run from 1 to 10000"));
        }
        let tenant = self.upload(caller, bucket, key, id).await?.tenant;
        let options = PutOptions { expected_len: content_length.map(|len| len.max(0) as u64), md5: true };
        let ingested = self.store.ingest(tenant, body, options).await.map_err(from_store)?;
        let etag = hex::encode(ingested.md5().unwrap_or_default());
        let stored = async {
            let mut client = self.pool().get().await.map_err(from_pool)?;
            let txn = client.transaction().await.map_err(from_db)?;
            // Held shared until the part is recorded: a completion or abort that takes the
            // upload first leaves nothing here, and this part is not committed at all.
            let open = txn
                .query_opt("SELECT 1 FROM multipart_uploads WHERE id = $1 FOR SHARE", &[&id])
                .await
                .map_err(from_db)?;
            if open.is_none() {
                return Err(s3_error!(NoSuchUpload, "the upload was completed or aborted meanwhile"));
            }
            let object = self.store.commit(&txn, &ingested).await.map_err(from_store)?;
            let previous: Option<i64> = txn
                .query_opt(
                    "SELECT object_id FROM multipart_parts WHERE upload_id = $1 AND part_number = $2 FOR UPDATE",
                    &[&id, &number],
                )
                .await
                .map_err(from_db)?
                .map(|row| row.get(0));
            txn.execute(
                "INSERT INTO multipart_parts (upload_id, part_number, object_id, etag, size) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET object_id = EXCLUDED.object_id, \
                    etag = EXCLUDED.etag, size = EXCLUDED.size, last_modified = now()",
                &[&id, &number, &object.id.0, &etag, &(object.size as i64)],
            )
            .await
            .map_err(from_db)?;
            if let Some(previous) = previous {
                self.store.delete_in(&txn, tenant, ObjectId(previous)).await.map_err(from_store)?;
            }
            txn.commit().await.map_err(from_db)
        }
        .await;
        if stored.is_err() {
            self.store.abandon(ingested).await;
        }
        stored.map(|()| etag)
    }

    pub(crate) async fn parts(&self, id: &str) -> S3Result<Vec<PartRow>> {
        let client = self.pool().get().await.map_err(from_pool)?;
        let rows = client.query(PARTS, &[&id]).await.map_err(from_db)?;
        Ok(rows.iter().map(part_row).collect())
    }

    /// Completes the upload with `requested` parts (number and ETag, ascending). Returns the
    /// object's ETag, S3's `md5(part md5s)-N`.
    pub(crate) async fn complete_upload(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        id: &str,
        requested: &[(i32, String)],
    ) -> S3Result<String> {
        let upload = self.upload(caller, bucket, key, id).await?;
        if requested.is_empty() {
            return Err(s3_error!(MalformedXML, "a completion lists at least one part"));
        }
        if requested.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(s3_error!(InvalidPartOrder));
        }
        let mut client = self.pool().get().await.map_err(from_pool)?;
        let txn = client.transaction().await.map_err(from_db)?;
        lock_bucket(&txn, bucket, upload.bucket_id).await?;
        // Exclusively: no part commits from here on, and a concurrent completion or abort
        // that got here first leaves nothing to complete.
        let open = txn
            .query_opt("SELECT 1 FROM multipart_uploads WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(from_db)?;
        if open.is_none() {
            return Err(s3_error!(NoSuchUpload));
        }
        let stored: Vec<PartRow> =
            txn.query(PARTS, &[&id]).await.map_err(from_db)?.iter().map(part_row).collect();
        let mut chosen = Vec::with_capacity(requested.len());
        for (i, (number, etag)) in requested.iter().enumerate() {
            let part = stored
                .iter()
                .find(|part| part.number == *number && part.etag == etag.trim_matches('"'))
                .ok_or_else(|| s3_error!(InvalidPart, "part {number} was not uploaded with that ETag"))?;
            if i + 1 < requested.len() && part.size < MIN_PART_BYTES {
                return Err(s3_error!(EntityTooSmall, "every part but the last must be at least 5 MiB"));
            }
            chosen.push(part.clone());
        }
        let mut md5 = md5::Md5::new();
        for part in &chosen {
            md5.update(hex::decode(&part.etag).unwrap_or_default());
        }
        let etag = format!("{}-{}", hex::encode(md5.finalize()), chosen.len());
        let parts: Vec<ObjectId> = chosen.iter().map(|part| part.object).collect();
        let object = self.store.concat_in(&txn, upload.tenant, &parts, None).await.map_err(from_store)?;
        self.drop_upload_in(&txn, upload.tenant, id).await?;
        let target = Target { bucket, id: upload.bucket_id, key };
        self.bind_in(&txn, upload.tenant, &target, &etag, &upload.headers, object).await?;
        txn.commit().await.map_err(from_db)?;
        Ok(etag)
    }

    /// Aborts the upload: its parts are deleted, and GC reclaims their chunks.
    pub(crate) async fn abort_upload(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> S3Result<()> {
        let upload = self.upload(caller, bucket, key, id).await?;
        self.drop_upload(upload.tenant, id).await
    }

    async fn drop_upload(&self, tenant: TenantId, id: &str) -> S3Result<()> {
        let mut client = self.pool().get().await.map_err(from_pool)?;
        let txn = client.transaction().await.map_err(from_db)?;
        if !self.drop_upload_in(&txn, tenant, id).await? {
            return Err(s3_error!(NoSuchUpload));
        }
        txn.commit().await.map_err(from_db)
    }

    /// Deletes upload `id` and releases every part it has, in `txn`. The upload's row is
    /// locked first, so no part can commit in between. Returns whether it was there.
    pub(crate) async fn drop_upload_in(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        tenant: TenantId,
        id: &str,
    ) -> S3Result<bool> {
        let open = txn
            .query_opt("SELECT 1 FROM multipart_uploads WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(from_db)?;
        if open.is_none() {
            return Ok(false);
        }
        let parts: Vec<i64> = txn
            .query("DELETE FROM multipart_parts WHERE upload_id = $1 RETURNING object_id", &[&id])
            .await
            .map_err(from_db)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        txn.execute("DELETE FROM multipart_uploads WHERE id = $1", &[&id]).await.map_err(from_db)?;
        for part in parts {
            self.store.delete_in(txn, tenant, ObjectId(part)).await.map_err(from_store)?;
        }
        Ok(true)
    }

    /// The bucket's uploads in progress: key, id and initiation time.
    pub(crate) async fn uploads(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        prefix: &str,
        limit: usize,
    ) -> S3Result<Vec<(String, String, f64)>> {
        self.bucket(caller, bucket, Intent::Write).await?;
        let client = self.pool().get().await.map_err(from_pool)?;
        let rows = client
            .query(
                "SELECT key, id, extract(epoch FROM initiated)::float8 FROM multipart_uploads \
                 WHERE bucket = $1 AND starts_with(key, $2) ORDER BY key, initiated LIMIT $3",
                &[&bucket, &prefix, &(limit as i64)],
            )
            .await
            .map_err(from_db)?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
    }
}

/// Aborts the uploads started longer than `older_than` ago. Returns how many.
///
/// # Errors
/// Catalog errors.
pub async fn abort_stale_uploads(
    store: &crate::store::ChunkStore,
    older_than: Duration,
) -> Result<u64, String> {
    let s3 = SiloS3 { store: store.clone(), region: super::region::default_region() };
    let client = s3.pool().get().await.map_err(|err| err.to_string())?;
    let stale = client
        .query(
            "SELECT id, tenant_id FROM multipart_uploads WHERE initiated < now() - make_interval(secs => $1)",
            &[&older_than.as_secs_f64()],
        )
        .await
        .map_err(|err| crate::catalog::describe(&err))?;
    drop(client);
    let mut aborted = 0;
    for row in stale {
        let id: String = row.get(0);
        match s3.drop_upload(TenantId(row.get(1)), &id).await {
            Ok(()) => {}
            // Completed or aborted meanwhile.
            Err(err) if *err.code() == s3s::S3ErrorCode::NoSuchUpload => continue,
            Err(err) => return Err(err.to_string()),
        }
        tracing::info!(upload = id, "aborted a stale multipart upload");
        aborted += 1;
    }
    Ok(aborted)
}
