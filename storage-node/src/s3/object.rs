//! Objects: PUT (streamed into the chunk store), GET and HEAD (with ranges and conditions),
//! DELETE, multi-object DELETE and CopyObject (a metadata-only copy that shares chunks).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::dto::{ETag, ETagCondition, Timestamp};
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3Error, S3Result, StdError, s3_error};

use super::SiloS3;
use super::bucket::{Intent, lock_bucket};
use super::error::{from_db, from_pool, from_store};
use crate::keys::TenantId;
use crate::store::{ObjectId, PutOptions, StoreError};

/// The longest key S3 accepts, in bytes of UTF-8.
const MAX_KEY_BYTES: usize = 1024;

/// An object's catalog row.
#[derive(Debug, Clone)]
pub(crate) struct ObjectRow {
    pub object: ObjectId,
    pub tenant: TenantId,
    pub etag: String,
    pub size: u64,
    pub last_modified: f64,
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub metadata: HashMap<String, String>,
}

impl ObjectRow {
    pub fn etag(&self) -> ETag {
        ETag::Strong(self.etag.clone())
    }

    pub fn last_modified(&self) -> Timestamp {
        Timestamp::from(UNIX_EPOCH + Duration::from_secs_f64(self.last_modified.max(0.0)))
    }
}

/// The headers a PUT or a copy stores with an object.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectHeaders {
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub metadata: HashMap<String, String>,
}

impl ObjectHeaders {
    /// The headers of a PUT, a multipart creation or a replacing copy.
    pub fn from_request(
        content_type: Option<String>,
        content_disposition: Option<String>,
        cache_control: Option<String>,
        metadata: Option<s3s::dto::Metadata>,
    ) -> Self {
        ObjectHeaders {
            content_type,
            content_disposition,
            cache_control,
            metadata: metadata.unwrap_or_default().into_iter().collect(),
        }
    }
}

pub(crate) fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(s3_error!(KeyTooLongError, "object keys are 1 to 1024 bytes of UTF-8"));
    }
    Ok(())
}

impl SiloS3 {
    /// The object at `bucket`/`key`, if `caller` may read it.
    pub(crate) async fn object(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
    ) -> S3Result<ObjectRow> {
        // The bucket and the object in one query; access is decided before the object's
        // absence is told.
        let client = self.pool().get().await.map_err(from_pool)?;
        let row = client
            .query_opt(
                "SELECT b.tenant_id, b.public_read, s.object_id, s.etag, o.size, \
                        extract(epoch FROM s.last_modified)::float8, \
                        s.content_type, s.content_disposition, s.cache_control, s.user_metadata::text, b.id \
                 FROM buckets b LEFT JOIN s3_objects s ON s.bucket = b.name AND s.key = $2 \
                 LEFT JOIN objects o ON o.id = s.object_id \
                 WHERE b.name = $1",
                &[&bucket, &key],
            )
            .await
            .map_err(from_db)?;
        let owner = super::bucket::authorize(
            caller,
            row.as_ref().map(|r| (TenantId(r.get(0)), r.get(1), r.get(10))),
            Intent::Read,
        )?;
        let row = row.filter(|r| r.get::<_, Option<i64>>(2).is_some()).ok_or_else(|| s3_error!(NoSuchKey))?;
        Ok(ObjectRow {
            object: ObjectId(row.get(2)),
            tenant: owner.tenant,
            etag: row.get(3),
            size: row.get::<_, i64>(4) as u64,
            last_modified: row.get(5),
            content_type: row.get(6),
            content_disposition: row.get(7),
            cache_control: row.get(8),
            metadata: serde_json::from_str(row.get::<_, &str>(9)).unwrap_or_default(),
        })
    }

    /// Streams `body` into the store and binds it to `bucket`/`key`, replacing (and
    /// releasing) any object there, in one transaction. Returns the ETag.
    pub(crate) async fn put_object_for(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        body: Option<s3s::dto::StreamingBlob>,
        content_length: Option<i64>,
        headers: ObjectHeaders,
    ) -> S3Result<String> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        check_key(key)?;
        let options = PutOptions { expected_len: content_length.map(|len| len.max(0) as u64), md5: true };
        let ingested = match body {
            Some(body) => {
                let body = body.map(|piece| piece.map_err(std::io::Error::other));
                self.store.ingest(tenant, tokio_util::io::StreamReader::new(body), options).await
            }
            None => self.store.ingest(tenant, tokio::io::empty(), options).await,
        }
        .map_err(from_store)?;
        let etag = hex::encode(ingested.md5().unwrap_or_default());
        let target = Target { bucket, id: found.id, key };
        let bound = self.bind(tenant, target, &etag, &headers, Binding::New(&ingested)).await;
        if bound.is_err() {
            self.store.abandon(ingested).await;
        }
        bound.map(|_| etag)
    }

    /// Copies `source` to `bucket`/`key` by sharing its chunks. Returns the new row's ETag and
    /// modification time.
    pub(crate) async fn copy_object_for(
        &self,
        caller: Option<TenantId>,
        source: &ObjectRow,
        bucket: &str,
        key: &str,
        headers: ObjectHeaders,
    ) -> S3Result<(String, f64)> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        if source.tenant != tenant {
            return Err(s3_error!(AccessDenied, "the copy source belongs to another tenant"));
        }
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        check_key(key)?;
        let target = Target { bucket, id: found.id, key };
        let modified =
            self.bind(tenant, target, &source.etag, &headers, Binding::Copy(source.object)).await?;
        Ok((source.etag.clone(), modified))
    }

    /// Binds a new object (committed here) or a copy to `target` in one transaction,
    /// releasing what was there. The bucket is checked again (by id) and held shared inside
    /// the transaction. Returns the modification time.
    pub(crate) async fn bind(
        &self,
        tenant: TenantId,
        target: Target<'_>,
        etag: &str,
        headers: &ObjectHeaders,
        binding: Binding<'_>,
    ) -> S3Result<f64> {
        let mut client = self.pool().get().await.map_err(from_pool)?;
        let txn = client.transaction().await.map_err(from_db)?;
        lock_bucket(&txn, target.bucket, target.id).await?;
        let object = match binding {
            Binding::New(ingested) => self.store.commit(&txn, ingested).await.map_err(from_store)?.id,
            Binding::Copy(source) => self.store.copy_in(&txn, tenant, source).await.map_err(from_store)?,
        };
        let modified = self.bind_in(&txn, tenant, &target, etag, headers, object).await?;
        txn.commit().await.map_err(from_db)?;
        Ok(modified)
    }

    /// Puts `object` at `target` in `txn`, releasing the object that was there. The caller
    /// has locked the bucket ([`lock_bucket`]). Returns the modification time.
    pub(crate) async fn bind_in(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        tenant: TenantId,
        target: &Target<'_>,
        etag: &str,
        headers: &ObjectHeaders,
        object: ObjectId,
    ) -> S3Result<f64> {
        let (bucket, key) = (target.bucket, target.key);
        let previous: Option<i64> = txn
            .query_opt(
                "SELECT object_id FROM s3_objects WHERE bucket = $1 AND key = $2 FOR UPDATE",
                &[&bucket, &key],
            )
            .await
            .map_err(from_db)?
            .map(|row| row.get(0));
        let metadata = serde_json::to_string(&headers.metadata).unwrap_or_else(|_| "{}".into());
        let modified: f64 = txn
            .query_one(
                "INSERT INTO s3_objects (bucket, key, object_id, etag, content_type, content_disposition, \
                                         cache_control, user_metadata) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb) \
                 ON CONFLICT (bucket, key) DO UPDATE SET object_id = EXCLUDED.object_id, etag = EXCLUDED.etag, \
                    content_type = EXCLUDED.content_type, content_disposition = EXCLUDED.content_disposition, \
                    cache_control = EXCLUDED.cache_control, user_metadata = EXCLUDED.user_metadata, \
                    last_modified = now() \
                 RETURNING extract(epoch FROM last_modified)::float8",
                &[
                    &bucket,
                    &key,
                    &object.0,
                    &etag,
                    &headers.content_type,
                    &headers.content_disposition,
                    &headers.cache_control,
                    &metadata,
                ],
            )
            .await
            .map_err(from_db)?
            .get(0);
        if let Some(previous) = previous {
            self.store.delete_in(txn, tenant, ObjectId(previous)).await.map_err(from_store)?;
        }
        Ok(modified)
    }

    /// Deletes `bucket`/`key`; deleting a key that is not there succeeds, as in S3.
    pub(crate) async fn delete_object_for(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
    ) -> S3Result<()> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        let mut client = self.pool().get().await.map_err(from_pool)?;
        let txn = client.transaction().await.map_err(from_db)?;
        lock_bucket(&txn, bucket, found.id).await?;
        // The tenant before the key's row, as a PUT takes them: the other order deadlocked
        // with a PUT of the same key.
        crate::store::lock_tenant(&txn, tenant).await.map_err(from_store)?;
        let removed = txn
            .query_opt(
                "DELETE FROM s3_objects WHERE bucket = $1 AND key = $2 RETURNING object_id",
                &[&bucket, &key],
            )
            .await
            .map_err(from_db)?;
        if let Some(row) = removed {
            self.store.delete_in(&txn, tenant, ObjectId(row.get(0))).await.map_err(from_store)?;
        }
        txn.commit().await.map_err(from_db)?;
        Ok(())
    }

    /// Opens `range` of an object as a response body of exactly that length.
    pub(crate) async fn open_body(
        &self,
        row: &ObjectRow,
        range: std::ops::Range<u64>,
    ) -> S3Result<ObjectBody> {
        let read = self
            .store
            .read_sized(row.tenant, row.object, row.size, Some(range.clone()))
            .map_err(from_store)?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let mut stream = read.stream;
        tokio::spawn(async move {
            while let Some(piece) = stream.next().await {
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(ObjectBody { rx, remaining: (range.end - range.start) as usize })
    }
}

/// Where [`SiloS3::bind`] puts an object: a key of the bucket authorized as `id`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub bucket: &'a str,
    pub id: i64,
    pub key: &'a str,
}

/// What [`SiloS3::bind`] puts at a key.
pub(crate) enum Binding<'a> {
    /// A new upload, committed in the binding's transaction.
    New(&'a crate::store::Ingested),
    /// A copy of an object, sharing its chunks.
    Copy(ObjectId),
}

/// Evaluates GET and HEAD conditions (RFC 9110 order): `If-Match`, then
/// `If-Unmodified-Since`, then `If-None-Match`, then `If-Modified-Since`.
pub(crate) fn check_conditions(
    row: &ObjectRow,
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let matches = |condition: &ETagCondition| match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(etag) => etag.value() == row.etag,
    };
    let modified = row.last_modified.floor() as i64;
    let seconds = |ts: &Timestamp| time::OffsetDateTime::from(ts.clone()).unix_timestamp();
    if let Some(condition) = if_match {
        if !matches(condition) {
            return Err(s3_error!(PreconditionFailed));
        }
    } else if let Some(since) = if_unmodified_since
        && modified > seconds(since)
    {
        return Err(s3_error!(PreconditionFailed));
    }
    if let Some(condition) = if_none_match {
        if matches(condition) {
            return Err(not_modified());
        }
    } else if let Some(since) = if_modified_since
        && modified <= seconds(since)
    {
        return Err(not_modified());
    }
    Ok(())
}

fn not_modified() -> S3Error {
    let mut error = S3Error::new(s3s::S3ErrorCode::NotModified);
    error.set_status_code(http::StatusCode::NOT_MODIFIED);
    error
}

/// A response body of a known length, fed by the chunk store through a small channel.
pub(crate) struct ObjectBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, StoreError>>,
    remaining: usize,
}

impl Stream for ObjectBody {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(piece))) => {
                self.remaining = self.remaining.saturating_sub(piece.len());
                Poll::Ready(Some(Ok(piece)))
            }
            Poll::Ready(Some(Err(err))) => {
                tracing::error!(error = %err, "a read failed mid-stream; the response is cut short");
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl ByteStream for ObjectBody {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(self.remaining)
    }
}
