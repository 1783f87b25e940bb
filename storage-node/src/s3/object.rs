//! Objects in S3's terms: PUT (streamed into the chunk store), GET and HEAD (with ranges and
//! conditions), DELETE, multi-object DELETE and CopyObject (a metadata-only copy that shares
//! chunks), over [`crate::model::object`].

use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) use crate::model::object::WriteCondition;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::dto::{ETag, ETagCondition, Timestamp};
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3Error, S3Result, StdError, s3_error};
use time::OffsetDateTime;

use super::SiloS3;
use super::bucket::Intent;
use super::integrity::Incoming;
use crate::TenantId;
use crate::model::bucket::CannedAcl;
use crate::model::object::{
    self as model, Binding, ChecksumKind, ObjectHeaders, ObjectPart, ObjectRow, StoredChecksum, Target,
};
use crate::store::{ManifestHead, StoreError};

/// The longest key S3 accepts, in bytes of UTF-8.
const MAX_KEY_BYTES: usize = 1024;

/// A request's `Content-Encoding` without `aws-chunked` (the transfer's coding, which s3s has
/// already undone): what is left is the object's own coding, if any.
pub(crate) fn real_encoding(content_encoding: Option<String>) -> Option<String> {
    let codings: Vec<&str> = content_encoding
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!codings.is_empty()).then(|| codings.join(","))
}

pub(crate) fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(s3_error!(KeyTooLongError, "object keys are 1 to 1024 bytes of UTF-8"));
    }
    // The catalog's text cannot hold it; a key with it would fail every statement it is in.
    if key.contains('\0') {
        return Err(s3_error!(InvalidArgument, "object keys may not contain the character U+0000"));
    }
    Ok(())
}

impl SiloS3 {
    /// The object at `bucket`/`key`, if `caller` may read it. Access is decided before the
    /// object's absence is told.
    pub(crate) async fn object(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
    ) -> S3Result<ObjectRow> {
        let found = model::lookup(self.pool(), bucket, key).await?;
        readable(caller, found)
    }

    /// [`SiloS3::object`] in the bucket whose access was checked as `bucket_id`: the name may
    /// be another bucket's by now (a lost invalidation), which tells nothing of it.
    pub(crate) async fn object_in(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        bucket_id: i64,
        key: &str,
    ) -> S3Result<ObjectRow> {
        readable(caller, Some(self.lookup_in(bucket, bucket_id, key).await?))
    }

    /// The lookup of `bucket`/`key` when the bucket of that name is still `bucket_id`, the one
    /// whose access was checked (from a cache that may be older than the name's owner); else
    /// `NoSuchBucket`, which tells nothing of the bucket that holds the name now.
    async fn lookup_in(&self, bucket: &str, bucket_id: i64, key: &str) -> S3Result<model::Lookup> {
        match model::lookup(self.pool(), bucket, key).await? {
            Some(found) if found.bucket.id == bucket_id => Ok(found),
            _ => Err(s3_error!(NoSuchBucket)),
        }
    }

    /// [`SiloS3::object`] with the entries of its manifest from the one that holds byte
    /// `from`, for a GET or a HEAD: from the node's read cache when it holds the object, else in
    /// one catalog round trip (for a small object or a range), kept in the cache when that
    /// brought the whole manifest.
    pub(crate) async fn object_to_read(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        from: u64,
    ) -> S3Result<(ObjectRow, Option<ManifestHead>)> {
        let cache = self.store.read_cache();
        if let Some(hit) = cache.get(bucket, key) {
            return Ok((readable(caller, Some(hit.lookup.clone()))?, hit.head.clone()));
        }
        let ticket = cache.ticket(bucket, key);
        let (found, head) = model::lookup_for_read(&self.store, bucket, key, from).await?.unzip();
        let head = head.flatten();
        // Only what this caller may read is kept: a denied request leaves no trace in the cache.
        let row = readable(caller, found.clone())?;
        if let Some(found) = &found {
            cache.fill(ticket, bucket, key, found, head.as_ref());
        }
        Ok((row, head))
    }

    /// For a range GET of `row` at `bucket`/`key` about to be served (allowed, its conditions
    /// met, its range valid) whose lookup did not bring the whole manifest (`head`): reads the
    /// whole manifest in the background and keeps it in the read cache, so that the next ranges
    /// cost no catalog query; unless the object is too large for that, or the cache does not
    /// want it now ([`ReadCache::whole_wanted`]: a lease, one read per object per 30 s, two at a
    /// time).
    pub(crate) fn cache_whole_manifest(
        &self,
        bucket: &str,
        key: &str,
        row: &ObjectRow,
        head: Option<&ManifestHead>,
    ) {
        if head.is_some_and(|head| head.is_whole(row.size))
            || !self.store.manifest_may_be_read_whole(row.size)
        {
            return;
        }
        let Some(permit) = self.store.read_cache().whole_wanted(bucket, key) else { return };
        let (store, bucket, key) = (self.store.clone(), bucket.to_string(), key.to_string());
        tokio::spawn(async move {
            let _permit = permit;
            let cache = store.read_cache();
            let ticket = cache.ticket(&bucket, &key);
            match model::lookup_whole_for_read(&store, &bucket, &key).await {
                Ok(Some((found, head))) => cache.fill(ticket, &bucket, &key, &found, head.as_ref()),
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(error = %err, "could not read a whole manifest for the read cache")
                }
            }
        });
    }

    /// Streams `body` into the store, checks its claims, and binds it to `bucket`/`key`,
    /// replacing (and releasing) any object there, in one transaction. Returns the ETag and
    /// the additional checksum, if one was computed.
    pub(crate) async fn put_object_for(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        body: Incoming,
        headers: ObjectHeaders,
    ) -> S3Result<(String, Option<StoredChecksum>)> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        check_key(key)?;
        let condition = body.claims.condition.clone();
        self.check_write_condition(bucket, found.id, key, &condition).await?;
        let checked = self.ingest_checked(tenant, body).await?;
        let ingested = checked.ingested;
        let etag = hex::encode(ingested.md5().unwrap_or_default());
        let checksum = checked.checksum.map(|(algorithm, value)| StoredChecksum {
            algorithm,
            kind: ChecksumKind::FullObject,
            value,
        });
        let headers = ObjectHeaders { checksum: checksum.clone(), ..headers };
        let target = Target { bucket, id: found.id, key };
        let bound = model::bind(
            &self.store,
            tenant,
            target,
            &etag,
            &headers,
            Binding::New(&ingested, &self.small_puts),
            &condition,
        )
        .await;
        // An upload not committed gives its pins back; one committed (whose caches could not be
        // confirmed clean) gave them with its commit.
        if bound.as_ref().is_err_and(|err| !err.committed()) {
            self.store.abandon(ingested).await;
        }
        Ok(bound.map(|_| (etag, checksum))?)
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
    ) -> S3Result<(String, OffsetDateTime)> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        if source.tenant != tenant {
            return Err(s3_error!(AccessDenied, "the copy source belongs to another tenant"));
        }
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        check_key(key)?;
        let target = Target { bucket, id: found.id, key };
        let modified = model::bind(
            &self.store,
            tenant,
            target,
            &source.etag,
            &headers,
            Binding::Copy(source.object),
            &WriteCondition::Any,
        )
        .await?;
        Ok((source.etag.clone(), modified))
    }

    /// The parts of `row`, the object at `bucket`/`key`, if it was completed from an upload.
    pub(crate) async fn object_parts(
        &self,
        bucket: &str,
        key: &str,
        row: &ObjectRow,
    ) -> S3Result<Option<Vec<ObjectPart>>> {
        Ok(model::parts_of(self.pool(), bucket, key, row.object).await?)
    }

    /// The bytes of part `number` of `row` (at `bucket`/`key`) and the object's part count, for
    /// a GET or HEAD with `partNumber`: an object not completed from an upload is one part.
    pub(crate) async fn part_span(
        &self,
        bucket: &str,
        key: &str,
        row: &ObjectRow,
        number: i32,
    ) -> S3Result<(std::ops::Range<u64>, Option<i32>)> {
        let Some(parts) = self.object_parts(bucket, key, row).await? else {
            return if number == 1 { Ok((0..row.size, None)) } else { Err(invalid_part_number()) };
        };
        let index = usize::try_from(number - 1).map_err(|_| invalid_part_number())?;
        let part = parts.get(index).ok_or_else(invalid_part_number)?;
        let start: i64 = parts[..index].iter().map(|part| part.size).sum();
        let span = start as u64..(start + part.size) as u64;
        // Replaced meanwhile by a smaller object: that part is not there any more.
        if span.end > row.size {
            return Err(invalid_part_number());
        }
        Ok((span, Some(parts.len() as i32)))
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
        Ok(model::delete(&self.store, tenant, Target { bucket, id: found.id, key }).await?)
    }

    /// Deletes `keys` of `bucket` (DeleteObjects), each on its own; the read caches drop them
    /// all at once. Each key's outcome, in order.
    pub(crate) async fn delete_objects_for(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        keys: &[String],
    ) -> S3Result<Vec<S3Result<()>>> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        let outcomes = model::delete_keys(&self.store, tenant, bucket, found.id, keys).await?;
        Ok(outcomes.into_iter().map(|outcome| outcome.map_err(S3Error::from)).collect())
    }

    /// Opens `range` of an object as a response body of exactly that length, starting from
    /// `head` (the first manifest entries read with `row`) when given.
    pub(crate) async fn open_body(
        &self,
        row: &ObjectRow,
        range: std::ops::Range<u64>,
        head: Option<ManifestHead>,
    ) -> S3Result<ObjectBody> {
        let remaining = (range.end - range.start) as usize;
        if let Some(pieces) = head
            .as_ref()
            .and_then(|head| self.store.read_inline(row.tenant, row.object, row.size, range.clone(), head))
        {
            return Ok(ObjectBody { ready: pieces?.into(), streamed: None, remaining });
        }
        let read = self.store.read_from_head(row.tenant, row.object, row.size, Some(range.clone()), head)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let mut stream = read.stream;
        tokio::spawn(async move {
            loop {
                // A client gone (the body dropped) stops the read at once, not after its next piece.
                let piece = tokio::select! {
                    _ = tx.closed() => break,
                    piece = stream.next() => piece,
                };
                let Some(piece) = piece else { break };
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    break;
                }
            }
        });
        // The first piece comes before the answer's status: a read that fails at its start
        // (every copy of its first chunk damaged or out of reach, say) is told with its own
        // error, not as a 200 cut short.
        let ready = match rx.recv().await {
            Some(Ok(first)) => std::collections::VecDeque::from([first]),
            Some(Err(err)) => return Err(super::error::from_store(err)),
            None if remaining > 0 => {
                tracing::error!("a read ended before its first piece");
                return Err(s3_error!(InternalError, "internal error; see the server log"));
            }
            None => std::collections::VecDeque::new(),
        };
        Ok(ObjectBody { ready, streamed: Some(rx), remaining })
    }
}

impl SiloS3 {
    /// Checks a write's condition on what `bucket`/`key` holds now, before its body is read:
    /// `412 PreconditionFailed`, or `404 NoSuchKey` for `If-Match` on a key with no object, as
    /// AWS answers; `404 NoSuchBucket` when the bucket of that name is no longer `bucket_id`,
    /// the one whose access was checked. The binding checks it again: a change meanwhile is a
    /// conflict (409).
    pub(crate) async fn check_write_condition(
        &self,
        bucket: &str,
        bucket_id: i64,
        key: &str,
        condition: &WriteCondition,
    ) -> S3Result<()> {
        if *condition == WriteCondition::Any {
            return Ok(());
        }
        let etag = self.lookup_in(bucket, bucket_id, key).await?.object.map(|object| object.etag);
        if condition.holds(etag.as_deref()) {
            Ok(())
        } else if etag.is_none() {
            Err(s3_error!(NoSuchKey))
        } else {
            Err(s3_error!(PreconditionFailed))
        }
    }
}

/// The object `found` (a bucket and maybe an object at the key), if `caller` may read it.
/// Access is decided before the object's absence is told.
fn readable(caller: Option<TenantId>, found: Option<model::Lookup>) -> S3Result<ObjectRow> {
    let access = found.as_ref().map(|found| found.bucket);
    let object = found.and_then(|found| found.object);
    match super::bucket::authorize(caller, access, Intent::Read) {
        Ok(_) => object.ok_or_else(|| s3_error!(NoSuchKey)),
        // An object made public-read (its own ACL) may be read by anyone.
        Err(denied) => object.filter(|row| row.headers.acl == CannedAcl::PublicRead).ok_or(denied),
    }
}

/// `416 InvalidPartNumber`, as AWS answers a `partNumber` the object does not have.
fn invalid_part_number() -> S3Error {
    let mut error = S3Error::with_message(
        s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
        "The requested partnumber is not satisfiable",
    );
    error.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
    error
}

/// The condition of a write's `If-Match` and `If-None-Match` headers. On a write AWS takes
/// only `*` for `If-None-Match`, and one of the two.
pub(crate) fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<WriteCondition> {
    match (if_match, if_none_match) {
        (None, None) => Ok(WriteCondition::Any),
        (None, Some(ETagCondition::Any)) => Ok(WriteCondition::Absent),
        (Some(ETagCondition::Any), None) => Ok(WriteCondition::Present),
        (Some(ETagCondition::ETag(etag)), None) => Ok(WriteCondition::Etag(etag.value().to_owned())),
        (None, Some(ETagCondition::ETag(_))) => {
            Err(s3_error!(NotImplemented, "If-None-Match on a write takes only *"))
        }
        (Some(_), Some(_)) => {
            Err(s3_error!(NotImplemented, "a write takes If-Match or If-None-Match, not both"))
        }
    }
}

/// A request body (or none) as the reader the chunk store ingests.
pub(crate) fn body_reader(
    body: Option<s3s::dto::StreamingBlob>,
) -> Box<dyn tokio::io::AsyncRead + Unpin + Send + 'static> {
    match body {
        Some(body) => into_reader(body),
        None => Box::new(tokio::io::empty()),
    }
}

/// A stream of byte pieces as a reader.
pub(crate) fn into_reader<S, E>(stream: S) -> Box<dyn tokio::io::AsyncRead + Unpin + Send + 'static>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = stream.map(|piece| piece.map_err(std::io::Error::other));
    Box::new(tokio_util::io::StreamReader::new(stream))
}

/// An object's ETag as S3 shows it.
pub(crate) fn etag_of(row: &ObjectRow) -> ETag {
    ETag::Strong(row.etag.clone())
}

/// The conditional headers of a GET or a HEAD.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_unmodified_since: Option<&'a Timestamp>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
}

impl SiloS3 {
    /// The object at `bucket`/`key`, if `caller` may read it and `conditions` hold.
    pub(crate) async fn object_if(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        conditions: Conditions<'_>,
    ) -> S3Result<ObjectRow> {
        let (row, _) = self.object_to_read(caller, bucket, key, 0).await?;
        check_conditions(&row, conditions)?;
        Ok(row)
    }

    /// [`SiloS3::object_if`] with the object's manifest entries from the one that holds byte
    /// `from`, for a GET.
    pub(crate) async fn object_to_read_if(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        from: u64,
        conditions: Conditions<'_>,
    ) -> S3Result<(ObjectRow, Option<ManifestHead>)> {
        let (row, head) = self.object_to_read(caller, bucket, key, from).await?;
        check_conditions(&row, conditions)?;
        Ok((row, head))
    }
}

/// Evaluates GET and HEAD conditions (RFC 9110 order): `If-Match`, then
/// `If-Unmodified-Since`, then `If-None-Match`, then `If-Modified-Since`. Times compare in
/// whole seconds, as HTTP dates carry them.
pub(crate) fn check_conditions(row: &ObjectRow, conditions: Conditions<'_>) -> S3Result<()> {
    let matches = |condition: &ETagCondition| match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(etag) => etag.value() == row.etag,
    };
    let modified = row.last_modified.unix_timestamp();
    let seconds = |ts: &Timestamp| OffsetDateTime::from(ts.clone()).unix_timestamp();
    if let Some(condition) = conditions.if_match {
        if !matches(condition) {
            return Err(s3_error!(PreconditionFailed));
        }
    } else if let Some(since) = conditions.if_unmodified_since
        && modified > seconds(since)
    {
        return Err(s3_error!(PreconditionFailed));
    }
    if let Some(condition) = conditions.if_none_match {
        if matches(condition) {
            return Err(not_modified(row));
        }
    } else if let Some(since) = conditions.if_modified_since
        && modified <= seconds(since)
    {
        return Err(not_modified(row));
    }
    Ok(())
}

/// `304 Not Modified` with what a cache needs to keep using its copy (RFC 9110 §15.4.5): the
/// `ETag`, `Last-Modified`, and the stored `Cache-Control` and `Expires`; its `Content-Length`
/// is the object's, as a 200 would have sent (RFC 9110 §8.6). No body goes out (the HTTP layer
/// drops s3s's error document), and nothing but the object's row was read.
fn not_modified(row: &ObjectRow) -> S3Error {
    let mut error = S3Error::new(s3s::S3ErrorCode::NotModified);
    error.set_status_code(http::StatusCode::NOT_MODIFIED);
    let http_date = |at: OffsetDateTime| httpdate::fmt_http_date(std::time::SystemTime::from(at));
    let headers = [
        (http::header::ETAG, Some(format!("\"{}\"", row.etag))),
        (http::header::LAST_MODIFIED, Some(http_date(row.last_modified))),
        (http::header::CACHE_CONTROL, row.headers.cache_control.clone()),
        (http::header::EXPIRES, row.headers.expires.map(http_date)),
        (http::header::CONTENT_LENGTH, Some(row.size.to_string())),
    ];
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        if let Some(value) = value.and_then(|value| http::HeaderValue::from_str(&value).ok()) {
            map.insert(name, value);
        }
    }
    error.set_headers(map);
    error
}

/// A response body of a known length: pieces verified already (a small object's bytes, or a
/// large one's first piece), then any pieces fed by the chunk store through a small channel.
pub(crate) struct ObjectBody {
    ready: std::collections::VecDeque<Bytes>,
    streamed: Option<tokio::sync::mpsc::Receiver<Result<Bytes, StoreError>>>,
    remaining: usize,
}

impl Stream for ObjectBody {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = match (self.ready.pop_front(), &mut self.streamed) {
            (Some(piece), _) => Poll::Ready(Some(Ok(piece))),
            (None, Some(rx)) => rx.poll_recv(cx),
            (None, None) => Poll::Ready(None),
        };
        match polled {
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

#[cfg(test)]
mod tests {
    use s3s::dto::{ETag, ETagCondition, Timestamp};
    use time::macros::datetime;

    use super::{Conditions, check_conditions, real_encoding};
    use crate::TenantId;
    use crate::model::object::{ObjectHeaders, ObjectRow};
    use crate::store::ObjectId;

    /// An object with ETag "abc", modified at 12:00:00.5.
    fn row() -> ObjectRow {
        ObjectRow {
            object: ObjectId(1),
            tenant: TenantId(1),
            etag: "abc".into(),
            size: 3,
            last_modified: datetime!(2026-01-31 12:00:00.5 UTC),
            headers: ObjectHeaders::default(),
        }
    }

    fn tag(value: &str) -> ETagCondition {
        ETagCondition::ETag(ETag::Strong(value.into()))
    }

    fn at(time: time::OffsetDateTime) -> Timestamp {
        Timestamp::from(time)
    }

    /// The code a check answers, or "ok".
    fn outcome(conditions: Conditions<'_>) -> String {
        match check_conditions(&row(), conditions) {
            Ok(()) => "ok".into(),
            Err(err) => err.code().as_str().to_owned(),
        }
    }

    #[test]
    fn aws_chunked_is_no_content_encoding_of_the_object() {
        assert_eq!(real_encoding(None), None);
        assert_eq!(real_encoding(Some("aws-chunked".into())), None);
        assert_eq!(real_encoding(Some("gzip".into())), Some("gzip".into()));
        assert_eq!(real_encoding(Some("aws-chunked, gzip".into())), Some("gzip".into()));
        assert_eq!(real_encoding(Some("gzip,AWS-CHUNKED".into())), Some("gzip".into()));
        assert_eq!(real_encoding(Some("gzip, br".into())), Some("gzip,br".into()));
    }

    #[test]
    fn no_condition_passes() {
        assert_eq!(outcome(Conditions::default()), "ok");
    }

    #[test]
    fn if_match_passes_on_the_etag_or_any_and_fails_otherwise() {
        assert_eq!(outcome(Conditions { if_match: Some(&tag("abc")), ..Default::default() }), "ok");
        assert_eq!(outcome(Conditions { if_match: Some(&ETagCondition::Any), ..Default::default() }), "ok");
        let other = tag("other");
        assert_eq!(
            outcome(Conditions { if_match: Some(&other), ..Default::default() }),
            "PreconditionFailed"
        );
    }

    #[test]
    fn if_unmodified_since_compares_whole_seconds() {
        let same_second = at(datetime!(2026-01-31 12:00:00 UTC));
        let before = at(datetime!(2026-01-31 11:59:59 UTC));
        let ok = Conditions { if_unmodified_since: Some(&same_second), ..Default::default() };
        assert_eq!(outcome(ok), "ok");
        let failed = Conditions { if_unmodified_since: Some(&before), ..Default::default() };
        assert_eq!(outcome(failed), "PreconditionFailed");
    }

    #[test]
    fn a_matching_if_match_overrides_a_failing_if_unmodified_since() {
        let before = at(datetime!(2026-01-31 11:00 UTC));
        let etag = tag("abc");
        let conditions =
            Conditions { if_match: Some(&etag), if_unmodified_since: Some(&before), ..Default::default() };
        assert_eq!(outcome(conditions), "ok");
    }

    #[test]
    fn if_none_match_answers_not_modified_when_it_matches() {
        let etag = tag("abc");
        assert_eq!(outcome(Conditions { if_none_match: Some(&etag), ..Default::default() }), "NotModified");
        let any = ETagCondition::Any;
        assert_eq!(outcome(Conditions { if_none_match: Some(&any), ..Default::default() }), "NotModified");
        let other = tag("other");
        assert_eq!(outcome(Conditions { if_none_match: Some(&other), ..Default::default() }), "ok");
    }

    #[test]
    fn not_modified_carries_the_validators_and_the_stored_cache_control() {
        let mut object = row();
        object.headers.cache_control = Some("public, max-age=60".into());
        let etag = tag("abc");
        let conditions = Conditions { if_none_match: Some(&etag), ..Default::default() };
        let err = check_conditions(&object, conditions).expect_err("not modified");
        let headers = err.headers().expect("headers");
        assert_eq!(headers["etag"], "\"abc\"");
        assert_eq!(headers["last-modified"], "Sat, 31 Jan 2026 12:00:00 GMT");
        assert_eq!(headers["cache-control"], "public, max-age=60");
        assert!(!headers.contains_key("expires"));
    }

    #[test]
    fn if_modified_since_answers_not_modified_unless_modified_after() {
        let same_second = at(datetime!(2026-01-31 12:00:00 UTC));
        let before = at(datetime!(2026-01-31 11:59:59 UTC));
        let unchanged = Conditions { if_modified_since: Some(&same_second), ..Default::default() };
        assert_eq!(outcome(unchanged), "NotModified");
        assert_eq!(outcome(Conditions { if_modified_since: Some(&before), ..Default::default() }), "ok");
    }

    #[test]
    fn a_failing_if_none_match_overrides_if_modified_since() {
        let before = at(datetime!(2026-01-31 11:00 UTC));
        let other = tag("other");
        let matching = Conditions {
            if_none_match: Some(&other),
            if_modified_since: Some(&before),
            ..Default::default()
        };
        assert_eq!(outcome(matching), "ok");
        let same = at(datetime!(2026-01-31 12:00 UTC));
        let unmatched =
            Conditions { if_none_match: Some(&other), if_modified_since: Some(&same), ..Default::default() };
        assert_eq!(outcome(unmatched), "ok", "If-Modified-Since is ignored when If-None-Match is given");
    }

    #[test]
    fn a_failed_if_match_wins_over_a_matching_if_none_match() {
        let other = tag("other");
        let etag = tag("abc");
        let conditions =
            Conditions { if_match: Some(&other), if_none_match: Some(&etag), ..Default::default() };
        assert_eq!(outcome(conditions), "PreconditionFailed");
    }
}
