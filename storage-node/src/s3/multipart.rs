//! Multipart uploads. Each part goes straight into the chunk store as an object of its own;
//! completing the upload concatenates the parts' manifests into one object (no byte is copied,
//! and the parts dedup with the rest of the tenant's data like any upload). Aborting, or the
//! expiry of a stale upload, deletes the parts, and GC reclaims their chunks.

use std::time::Duration;

use md5::Digest;
use s3s::{S3Result, s3_error};

use super::SiloS3;
use super::bucket::Intent;
use super::error::{from_db, from_pool, from_store};
use super::object::{Binding, ObjectHeaders, check_key};
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

impl SiloS3 {
    pub(crate) async fn create_upload(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        headers: ObjectHeaders,
    ) -> S3Result<String> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        self.bucket(caller, bucket, Intent::Write).await?;
        check_key(key)?;
        let id = {
            use rand::RngCore;
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            hex::encode(bytes)
        };
        let metadata = serde_json::to_string(&headers.metadata).unwrap_or_else(|_| "{}".into());
        let client = self.pool().get().await.map_err(from_pool)?;
        client
            .execute(
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
        Ok(id)
    }

    /// The upload's tenant and headers, when it is `bucket`/`key`'s and the caller's.
    async fn upload(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> S3Result<(TenantId, ObjectHeaders)> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        self.bucket(caller, bucket, Intent::Write).await?;
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
        Ok((tenant, headers))
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
        let (tenant, _) = self.upload(caller, bucket, key, id).await?;
        let options = PutOptions { expected_len: content_length.map(|len| len.max(0) as u64), md5: true };
        let ingested = self.store.ingest(tenant, body, options).await.map_err(from_store)?;
        let etag = hex::encode(ingested.md5().unwrap_or_default());
        let stored = async {
            let mut client = self.pool().get().await.map_err(from_pool)?;
            let txn = client.transaction().await.map_err(from_db)?;
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
        let rows = client
            .query(
                "SELECT part_number, object_id, etag, size, extract(epoch FROM last_modified)::float8 \
                 FROM multipart_parts WHERE upload_id = $1 ORDER BY part_number",
                &[&id],
            )
            .await
            .map_err(from_db)?;
        Ok(rows
            .iter()
            .map(|row| PartRow {
                number: row.get(0),
                object: ObjectId(row.get(1)),
                etag: row.get(2),
                size: row.get(3),
                last_modified: row.get(4),
            })
            .collect())
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
        let (tenant, headers) = self.upload(caller, bucket, key, id).await?;
        if requested.is_empty() {
            return Err(s3_error!(MalformedXML, "a completion lists at least one part"));
        }
        if requested.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(s3_error!(InvalidPartOrder));
        }
        let stored = self.parts(id).await?;
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
        let all: Vec<ObjectId> = stored.iter().map(|part| part.object).collect();
        self.bind(
            tenant,
            bucket,
            key,
            &etag,
            &headers,
            Binding::Complete { upload: id, parts: &parts, all: &all },
        )
        .await?;
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
        let (tenant, _) = self.upload(caller, bucket, key, id).await?;
        self.drop_upload(tenant, id).await
    }

    async fn drop_upload(&self, tenant: TenantId, id: &str) -> S3Result<()> {
        let mut client = self.pool().get().await.map_err(from_pool)?;
        let txn = client.transaction().await.map_err(from_db)?;
        let parts: Vec<i64> = txn
            .query("DELETE FROM multipart_parts WHERE upload_id = $1 RETURNING object_id", &[&id])
            .await
            .map_err(from_db)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        txn.execute("DELETE FROM multipart_uploads WHERE id = $1", &[&id]).await.map_err(from_db)?;
        for part in parts {
            self.store.delete_in(&txn, tenant, ObjectId(part)).await.map_err(from_store)?;
        }
        txn.commit().await.map_err(from_db)
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
        s3.drop_upload(TenantId(row.get(1)), &id).await.map_err(|err| err.to_string())?;
        tracing::info!(upload = id, "aborted a stale multipart upload");
        aborted += 1;
    }
    Ok(aborted)
}
