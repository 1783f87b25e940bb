//! The `s3s::S3` trait: each call checks the caller, then hands over to the family's module.

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use super::acl::{AclRequest, bucket_grants, object_acl, object_grants};
use super::bucket::Intent;
use super::checksum::{self, checksum_fields, set_checksum};
use super::integrity::{ChecksumClaim, Claims, Incoming};
use super::list::KeyEncoding;
use super::multipart::CompletionClaims;
use super::object::{Conditions, body_reader, etag_of, into_reader, real_encoding, write_condition};
use super::{SiloS3, caller, region};
use crate::model::object::{ChecksumAlgorithm, ObjectHeaders, ObjectRow};

/// The conditional headers of a GET or a HEAD input (two types with the same fields).
macro_rules! conditions_of {
    ($input:expr) => {
        Conditions {
            if_match: $input.if_match.as_ref(),
            if_unmodified_since: $input.if_unmodified_since.as_ref(),
            if_none_match: $input.if_none_match.as_ref(),
            if_modified_since: $input.if_modified_since.as_ref(),
        }
    };
}

/// The headers a PutObject, a replacing CopyObject or a CreateMultipartUpload input (three
/// types with the same fields) stores with the object; their fields are moved out.
macro_rules! headers_of {
    ($input:expr) => {
        ObjectHeaders {
            content_type: $input.content_type,
            content_disposition: $input.content_disposition,
            cache_control: $input.cache_control,
            content_encoding: real_encoding($input.content_encoding),
            content_language: $input.content_language,
            expires: $input.expires.map(time::OffsetDateTime::from),
            metadata: $input.metadata.unwrap_or_default().into_iter().collect(),
            checksum: None,
            acl: Default::default(),
        }
    };
}

/// Shows `checksum` (an `Option<&StoredChecksum>`) on an output that has the five checksum
/// fields and `checksum_type`.
macro_rules! show_checksum {
    ($output:expr, $checksum:expr) => {
        if let Some(sum) = $checksum {
            set_checksum!($output, sum.algorithm, Some(sum.value.clone()));
            $output.checksum_type = Some(ChecksumType::from(sum.kind.as_str().to_owned()));
        }
    };
}

/// Whether a GET or a HEAD asks for the object's checksum (`x-amz-checksum-mode: ENABLED`);
/// a range never gets the whole object's, as on AWS.
fn wants_checksum(mode: Option<&ChecksumMode>, range: Option<&Range>) -> bool {
    range.is_none() && mode.is_some_and(|mode| mode.as_str() == ChecksumMode::ENABLED)
}

/// The output of a GET or a HEAD (two types with the same fields): what both show of the
/// object's row, and the fields given.
macro_rules! object_output {
    ($output:ident, $row:expr, $($field:ident: $value:expr),* $(,)?) => {{
        let row: &ObjectRow = $row;
        $output {
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag_of(row)),
            last_modified: Some(Timestamp::from(row.last_modified)),
            content_type: row.headers.content_type.clone(),
            content_disposition: row.headers.content_disposition.clone(),
            cache_control: row.headers.cache_control.clone(),
            content_encoding: row.headers.content_encoding.clone(),
            content_language: row.headers.content_language.clone(),
            expires: row.headers.expires.map(Timestamp::from),
            metadata: Some(row.headers.metadata.clone().into_iter().collect()),
            $($field: $value,)*
            ..Default::default()
        }
    }};
}

/// The request's `Content-MD5` as sent: s3s takes an empty one for none, which AWS refuses
/// (a value that is not text counts as empty).
fn content_md5(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("content-md5").map(|value| value.to_str().unwrap_or_default())
}

fn token_to_key(token: &str) -> S3Result<String> {
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not one Silo gave"))
}

fn max_keys(requested: Option<i32>) -> S3Result<usize> {
    match requested {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

#[async_trait::async_trait]
impl S3 for SiloS3 {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let tenant = caller(&req.extensions).ok_or_else(|| s3_error!(AccessDenied))?;
        let constraint =
            req.input.create_bucket_configuration.as_ref().and_then(|c| c.location_constraint.as_ref());
        region::check_constraint(constraint.map(|c| c.as_str()), &self.region)?;
        let canned = req.input.acl.as_ref().map(|acl| acl.as_str());
        let acl = AclRequest { canned, policy: None, grants: &bucket_grants!(req.input) };
        self.create_bucket_with(
            tenant,
            &req.input.bucket,
            acl.resolve(&self.owner_id(Some(tenant)))?.unwrap_or_default(),
        )
        .await?;
        let output = CreateBucketOutput { location: Some(format!("/{}", req.input.bucket)) };
        Ok(S3Response::new(output))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket(caller(&req.extensions), &req.input.bucket, Intent::Read).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.delete_bucket_for(caller(&req.extensions), &req.input.bucket).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let tenant = caller(&req.extensions).ok_or_else(|| s3_error!(AccessDenied))?;
        let input = req.input;
        let max = match input.max_buckets {
            None => usize::MAX,
            Some(n) if (1..=10_000).contains(&n) => n as usize,
            Some(_) => return Err(s3_error!(InvalidArgument, "max-buckets must be 1 to 10000")),
        };
        let after = input.continuation_token.as_deref().map(token_to_key).transpose()?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut buckets: Vec<Bucket> = self
            .buckets_of(tenant)
            .await?
            .into_iter()
            .filter(|bucket| bucket.name.starts_with(&prefix))
            .filter(|bucket| after.as_ref().is_none_or(|after| bucket.name > *after))
            .map(|bucket| Bucket {
                name: Some(bucket.name),
                creation_date: Some(Timestamp::from(bucket.created)),
                ..Default::default()
            })
            .collect();
        let truncated = buckets.len() > max;
        buckets.truncate(max);
        let next = buckets.last().and_then(|b| b.name.as_deref()).map(|name| hex::encode(name.as_bytes()));
        let output = ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(self.owner_of(tenant).await?),
            prefix: input.prefix,
            continuation_token: next.filter(|_| truncated),
        };
        Ok(S3Response::new(output))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(caller(&req.extensions), &req.input.bucket, Intent::Read).await?;
        let output =
            GetBucketLocationOutput { location_constraint: region::location_constraint(&self.region) };
        Ok(S3Response::new(output))
    }

    /// Buckets are never versioned: the answer AWS gives for a bucket whose versioning was never
    /// set (no `Status`), which SDKs and tools (Terraform, backup tools) read as unversioned.
    /// PutBucketVersioning stays `501 NotImplemented`: turning it on cannot be honoured.
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.bucket(caller(&req.extensions), &req.input.bucket, Intent::Write).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let tenant = caller(&req.extensions);
        let mut input = req.input;
        let acl = object_acl!(self, input, tenant)?;
        let headers = ObjectHeaders { acl, ..headers_of!(input) };
        let algorithm = input.checksum_algorithm.as_ref();
        let default = Some(ChecksumAlgorithm::Crc64Nvme);
        let checksum = ChecksumClaim::of_request(
            checksum_fields!(input),
            algorithm,
            &req.headers,
            req.trailing_headers,
            default,
        )?;
        let mut claims = Claims::new(content_md5(&req.headers), checksum)?;
        claims.condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let body = Incoming { reader: body_reader(input.body), length: input.content_length, claims };
        let (etag, checksum) = self.put_object_for(tenant, &input.bucket, &input.key, body, headers).await?;
        let mut output = PutObjectOutput { e_tag: Some(ETag::Strong(etag)), ..Default::default() };
        show_checksum!(output, checksum.as_ref());
        Ok(S3Response::new(output))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let mut input = req.input;
        let tenant = caller(&req.extensions);
        let conditions = conditions_of!(input);
        // A range from a known byte gets its manifest entries with the object; a suffix range
        // (its start depends on the size) and a part start from the first ones.
        let from = match (input.part_number, &input.range) {
            (None, Some(s3s::dto::Range::Int { first, .. })) => *first,
            _ => 0,
        };
        let (row, head) = self.object_to_read_if(tenant, &input.bucket, &input.key, from, conditions).await?;
        let (range, parts_count) = match (input.part_number, &input.range) {
            (Some(_), Some(_)) => return Err(part_and_range()),
            (Some(number), None) => {
                let (span, count) = self.part_span(&input.bucket, &input.key, &row, number).await?;
                (Some(span), count)
            }
            (None, Some(range)) => {
                let range = range.check(row.size).map_err(|_| s3_error!(InvalidRange))?;
                self.cache_whole_manifest(&input.bucket, &input.key, &row, head.as_ref());
                (Some(range), None)
            }
            (None, None) => (None, None),
        };
        let span = range.clone().unwrap_or(0..row.size);
        let body = self.open_body(&row, span.clone(), head).await?;
        let content_range =
            range.map(|r| format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), row.size));
        let mut output = object_output!(GetObjectOutput, &row,
            body: Some(StreamingBlob::new(body)),
            content_length: Some((span.end - span.start) as i64),
            content_range: content_range,
            parts_count: parts_count,
        );
        override_headers(&mut output, &mut input, tenant.is_none())?;
        if input.part_number.is_none() && wants_checksum(input.checksum_mode.as_ref(), input.range.as_ref()) {
            show_checksum!(output, row.headers.checksum.as_ref());
        }
        Ok(S3Response::new(output))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let conditions = conditions_of!(input);
        let row = self.object_if(caller(&req.extensions), &input.bucket, &input.key, conditions).await?;
        let mut output = object_output!(HeadObjectOutput, &row, content_length: Some(row.size as i64));
        if let Some(number) = input.part_number {
            if input.range.is_some() {
                return Err(part_and_range());
            }
            let (span, count) = self.part_span(&input.bucket, &input.key, &row, number).await?;
            output.content_length = Some((span.end - span.start) as i64);
            output.content_range =
                Some(format!("bytes {}-{}/{}", span.start, span.end.saturating_sub(1), row.size));
            output.parts_count = count;
        } else if wants_checksum(input.checksum_mode.as_ref(), input.range.as_ref()) {
            show_checksum!(output, row.headers.checksum.as_ref());
        }
        Ok(S3Response::new(output))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.delete_object_for(caller(&req.extensions), &req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let tenant = caller(&req.extensions);
        let input = req.input;
        self.bucket(tenant, &input.bucket, Intent::Write).await?;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema: \
                 at most 1000 keys may be deleted at once"
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        let keys: Vec<String> = input.delete.objects.into_iter().map(|object| object.key).collect();
        let outcomes = self.delete_objects_for(tenant, &input.bucket, &keys).await?;
        for (key, outcome) in keys.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject { key: Some(key), ..Default::default() }),
                Err(err) => errors.push(Error {
                    key: Some(key),
                    code: Some(err.code().as_str().to_owned()),
                    message: err.message().map(str::to_owned),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let tenant = caller(&req.extensions);
        let input = req.input;
        let CopySource::Bucket { bucket: source_bucket, key: source_key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "copy sources must be bucket/key"));
        };
        let source = self.object(tenant, source_bucket, source_key).await?;
        let replace =
            input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && **source_bucket == *input.bucket && **source_key == *input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without \
                 changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let headers = if replace { headers_of!(input) } else { source.headers.clone() };
        // A copy gets the ACL its request names (private by default), as on AWS, not the source's.
        let acl = object_acl!(self, input, tenant)?;
        // A whole-object checksum still fits the copy (the same bytes); a composite one names
        // parts the copy does not have.
        let checksum = source
            .headers
            .checksum
            .clone()
            .filter(|sum| sum.kind == crate::model::object::ChecksumKind::FullObject);
        let headers = ObjectHeaders { checksum, acl, ..headers };
        let (etag, modified) =
            self.copy_object_for(tenant, &source, &input.bucket, &input.key, headers).await?;
        let result = CopyObjectResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(Timestamp::from(modified)),
            ..Default::default()
        };
        Ok(S3Response::new(CopyObjectOutput { copy_object_result: Some(result), ..Default::default() }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let tenant = caller(&req.extensions);
        let input = req.input;
        let acl = object_acl!(self, input, tenant)?;
        let headers = ObjectHeaders { acl, ..headers_of!(input) };
        let algorithm = checksum::algorithm_of(input.checksum_algorithm.as_ref())?;
        let checksum = checksum::upload_kind(algorithm, input.checksum_type.as_ref())?;
        let id = self.create_upload(tenant, &input.bucket, &input.key, (headers, checksum)).await?;
        let output = CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            checksum_algorithm: input.checksum_algorithm,
            checksum_type: checksum.map(|(_, kind)| ChecksumType::from(kind.as_str().to_owned())),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let tenant = caller(&req.extensions);
        let mut input = req.input;
        let algorithm = input.checksum_algorithm.as_ref();
        let checksum = ChecksumClaim::of_request(
            checksum_fields!(input),
            algorithm,
            &req.headers,
            req.trailing_headers,
            None,
        )?;
        let claims = Claims::new(content_md5(&req.headers), checksum)?;
        let body = Incoming { reader: body_reader(input.body), length: input.content_length, claims };
        let (etag, checksum) = self
            .upload_part_for(tenant, &input.bucket, &input.key, &input.upload_id, input.part_number, body)
            .await?;
        let mut output = UploadPartOutput { e_tag: Some(ETag::Strong(etag)), ..Default::default() };
        if let Some((algorithm, sum)) = checksum {
            set_checksum!(output, algorithm, Some(sum));
        }
        Ok(S3Response::new(output))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let tenant = caller(&req.extensions);
        let input = req.input;
        let CopySource::Bucket { bucket: source_bucket, key: source_key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "copy sources must be bucket/key"));
        };
        let source = self.object(tenant, source_bucket, source_key).await?;
        if Some(source.tenant) != tenant {
            return Err(s3_error!(AccessDenied, "the copy source belongs to another tenant"));
        }
        let range = match &input.copy_source_range {
            Some(range) => parse_copy_range(range, source.size)?,
            None => 0..source.size,
        };
        // The target upload is found before the source is read (its first piece comes before
        // the body is opened): a wrong upload is NoSuchUpload, not a read of the source.
        let (id, number) = (&input.upload_id, input.part_number);
        let part = self.upload_for_part(tenant, (&input.bucket, &input.key), id, number).await?;
        let reader = into_reader(self.open_body(&source, range.clone(), None).await?);
        let length = Some((range.end - range.start) as i64);
        let body = Incoming { reader, length, claims: Claims::default() };
        let (etag, _) = self.store_part(part, body).await?;
        let result = CopyPartResult { e_tag: Some(ETag::Strong(etag)), ..Default::default() };
        Ok(S3Response::new(UploadPartCopyOutput { copy_part_result: Some(result), ..Default::default() }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let tenant = caller(&req.extensions);
        let mut input = req.input;
        let parts = input.multipart_upload.take().and_then(|upload| upload.parts).unwrap_or_default();
        let (mut requested, mut claims) = (Vec::with_capacity(parts.len()), CompletionClaims::default());
        for mut part in parts {
            claims.parts.push(checksum::claimed_header(checksum_fields!(part))?);
            requested
                .push((part.part_number.unwrap_or(0), part.e_tag.map(ETag::into_value).unwrap_or_default()));
        }
        claims.whole = checksum::claimed_header(checksum_fields!(input))?;
        claims.condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let (etag, checksum) = self
            .complete_upload(tenant, &input.bucket, &input.key, &input.upload_id, (&requested, &claims))
            .await?;
        let mut output = CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        };
        show_checksum!(output, checksum.as_ref());
        Ok(S3Response::new(output))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.abort_upload(caller(&req.extensions), &req.input.bucket, &req.input.key, &req.input.upload_id)
            .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let (owner, grants) = self.bucket_acl(caller(&req.extensions), &req.input.bucket).await?;
        Ok(S3Response::new(GetBucketAclOutput { owner: Some(owner), grants: Some(grants) }))
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let input = &req.input;
        let canned = input.acl.as_ref().map(|acl| acl.as_str());
        let policy = input.access_control_policy.as_ref();
        let acl = AclRequest { canned, policy, grants: &bucket_grants!(input) };
        self.put_bucket_acl_for(caller(&req.extensions), &input.bucket, acl).await?;
        Ok(S3Response::new(PutBucketAclOutput::default()))
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let input = &req.input;
        let (owner, grants) = self.object_acl(caller(&req.extensions), &input.bucket, &input.key).await?;
        let output = GetObjectAclOutput { owner: Some(owner), grants: Some(grants), ..Default::default() };
        Ok(S3Response::new(output))
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let input = &req.input;
        let canned = input.acl.as_ref().map(|acl| acl.as_str());
        let policy = input.access_control_policy.as_ref();
        let acl = AclRequest { canned, policy, grants: &object_grants!(input) };
        self.put_object_acl_for(caller(&req.extensions), &input.bucket, &input.key, acl).await?;
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let input = req.input;
        let row = self.object(caller(&req.extensions), &input.bucket, &input.key).await?;
        // One header per attribute, or one header listing them (boto3): s3s splits neither.
        let wants = |name: &str| {
            let mut asked = input.object_attributes.iter().flat_map(|asked| asked.as_str().split(','));
            asked.any(|asked| asked.trim().eq_ignore_ascii_case(name))
        };
        let mut output = GetObjectAttributesOutput {
            last_modified: Some(Timestamp::from(row.last_modified)),
            ..Default::default()
        };
        if wants(ObjectAttributes::ETAG) {
            output.e_tag = Some(etag_of(&row));
        }
        if wants(ObjectAttributes::OBJECT_SIZE) {
            output.object_size = Some(row.size as i64);
        }
        if wants(ObjectAttributes::STORAGE_CLASS) {
            output.storage_class = Some(StorageClass::from_static(StorageClass::STANDARD));
        }
        if wants(ObjectAttributes::CHECKSUM) && row.headers.checksum.is_some() {
            let mut sum = Checksum::default();
            show_checksum!(sum, row.headers.checksum.as_ref());
            output.checksum = Some(sum);
        }
        if wants(ObjectAttributes::OBJECT_PARTS)
            && let Some(parts) = self.object_parts(&input.bucket, &input.key, &row).await?
        {
            let marker = input.part_number_marker.unwrap_or(0);
            let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
            let after: Vec<_> = parts.iter().filter(|part| part.number > marker).collect();
            let truncated = after.len() > max;
            let shown: Vec<ObjectPart> = after
                .iter()
                .take(max)
                .map(|part| {
                    let mut shown = ObjectPart {
                        part_number: Some(part.number),
                        size: Some(part.size),
                        ..Default::default()
                    };
                    if let (Some(sum), Some(value)) = (&row.headers.checksum, &part.checksum) {
                        set_checksum!(shown, sum.algorithm, Some(value.clone()));
                    }
                    shown
                })
                .collect();
            output.object_parts = Some(GetObjectAttributesParts {
                total_parts_count: Some(parts.len() as i32),
                part_number_marker: Some(marker),
                next_part_number_marker: shown.last().and_then(|part| part.part_number).filter(|_| truncated),
                max_parts: Some(max as i32),
                is_truncated: Some(truncated),
                parts: Some(shown),
            });
        }
        Ok(S3Response::new(output))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let tenant = caller(&req.extensions);
        let input = req.input;
        // The upload must be this bucket's, this key's and the caller's: an upload id alone
        // opens nothing.
        let algorithm = self.check_upload(tenant, &input.bucket, &input.key, &input.upload_id).await?;
        let owner = match tenant {
            Some(tenant) => Some(self.owner_of(tenant).await?),
            None => None,
        };
        let marker = input.part_number_marker.unwrap_or(0);
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let parts: Vec<_> =
            self.parts(&input.upload_id).await?.into_iter().filter(|p| p.number > marker).collect();
        let truncated = parts.len() > max;
        let shown: Vec<Part> = parts
            .iter()
            .take(max)
            .map(|part| {
                let mut shown = Part {
                    part_number: Some(part.number),
                    e_tag: Some(ETag::Strong(part.etag.clone())),
                    size: Some(part.size),
                    last_modified: Some(Timestamp::from(part.last_modified)),
                    ..Default::default()
                };
                if let Some(algorithm) = algorithm {
                    set_checksum!(shown, algorithm, part.checksum.clone());
                }
                shown
            })
            .collect();
        let output = ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            next_part_number_marker: shown.last().and_then(|part| part.part_number).filter(|_| truncated),
            part_number_marker: Some(marker),
            parts: Some(shown),
            checksum_algorithm: algorithm
                .map(|algorithm| s3s::dto::ChecksumAlgorithm::from(algorithm.as_str().to_owned())),
            initiator: owner.as_ref().map(SiloS3::initiator_of),
            owner,
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        Ok(S3Response::new(self.list_uploads(caller(&req.extensions), req.input).await?))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        Ok(S3Response::new(self.list_versions(caller(&req.extensions), req.input).await?))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let tenant = caller(&req.extensions);
        let bucket = self.bucket(tenant, &input.bucket, Intent::Read).await?;
        // As v1: an anonymous reader of a public-read bucket is not shown who owns it.
        let owner = match (input.fetch_owner, tenant) {
            (Some(true), Some(_)) => Some(self.owner_of(bucket.tenant).await?),
            _ => None,
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(token), _) => token_to_key(token)?,
            (None, Some(start)) => start.clone(),
            (None, None) => String::new(),
        };
        let max = max_keys(input.max_keys)?;
        let encoding = KeyEncoding::of(input.encoding_type.as_ref())?;
        let delimiter = input.delimiter.filter(|d| !d.is_empty());
        let listing =
            self.list_keys(&input.bucket, bucket.id, &prefix, delimiter.as_deref(), &after, max).await?;
        let key_count = (listing.objects.len() + listing.prefixes.len()) as i32;
        let next =
            listing.truncated.then(|| listing.last.as_deref().map(|k| hex::encode(k.as_bytes()))).flatten();
        let output = ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: encoding.apply_opt(input.prefix),
            delimiter: encoding.apply_opt(delimiter),
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: encoding.apply_opt(input.start_after),
            is_truncated: Some(listing.truncated),
            next_continuation_token: next,
            contents: Some(objects_of(&listing, owner.as_ref(), encoding)),
            common_prefixes: Some(prefixes_of(&listing, encoding)),
            encoding_type: encoding.shown(),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let tenant = caller(&req.extensions);
        let bucket = self.bucket(tenant, &input.bucket, Intent::Read).await?;
        // An anonymous reader of a public-read bucket is not shown who owns it.
        let owner = match tenant {
            Some(_) => Some(self.owner_of(bucket.tenant).await?),
            None => None,
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = input.marker.clone().unwrap_or_default();
        let max = max_keys(input.max_keys)?;
        let encoding = KeyEncoding::of(input.encoding_type.as_ref())?;
        let delimiter = input.delimiter.filter(|d| !d.is_empty());
        let listing =
            self.list_keys(&input.bucket, bucket.id, &prefix, delimiter.as_deref(), &after, max).await?;
        let next_marker = (listing.truncated && delimiter.is_some()).then(|| listing.last.clone()).flatten();
        let output = ListObjectsOutput {
            name: Some(input.bucket),
            prefix: encoding.apply_opt(input.prefix),
            delimiter: encoding.apply_opt(delimiter),
            marker: encoding.apply_opt(input.marker),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            next_marker: encoding.apply_opt(next_marker),
            contents: Some(objects_of(&listing, owner.as_ref(), encoding)),
            common_prefixes: Some(prefixes_of(&listing, encoding)),
            encoding_type: encoding.shown(),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

/// Applies a GET's `response-*` overrides to its output. AWS refuses them on anonymous
/// requests (400 InvalidRequest), and so does Silo.
fn override_headers(
    output: &mut GetObjectOutput,
    input: &mut GetObjectInput,
    anonymous: bool,
) -> S3Result<()> {
    let overrides = [
        (input.response_cache_control.take(), &mut output.cache_control),
        (input.response_content_disposition.take(), &mut output.content_disposition),
        (input.response_content_encoding.take(), &mut output.content_encoding),
        (input.response_content_language.take(), &mut output.content_language),
        (input.response_content_type.take(), &mut output.content_type),
    ];
    let expires = input.response_expires.take();
    if anonymous && (expires.is_some() || overrides.iter().any(|(value, _)| value.is_some())) {
        return Err(s3_error!(
            InvalidRequest,
            "Request specific response headers cannot be used for anonymous GET requests."
        ));
    }
    for (value, field) in overrides {
        if value.is_some() {
            *field = value;
        }
    }
    if expires.is_some() {
        output.expires = expires;
    }
    Ok(())
}

/// `bytes=first-last` of an UploadPartCopy (both given, as S3 wants), within the source's
/// size, parsed by s3s's own range parser.
/// A range that ends past the source is `416 InvalidRange` (as issue 14 asks; AWS answers it
/// `400 InvalidArgument`, "Range specified is not valid for source object of size"). One that
/// is no `bytes=first-last` with `first <= last` is `400 InvalidArgument`: a backwards range
/// too, which AWS and MinIO refuse as malformed ("must be of the form bytes=first-last").
pub(super) fn parse_copy_range(range: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    match Range::parse(range) {
        Ok(Range::Int { first, last: Some(last) }) if first <= last && last < size => Ok(first..last + 1),
        Ok(Range::Int { first, last: Some(last) }) if first <= last => Err(s3_error!(
            InvalidRange,
            "The x-amz-copy-source-range {range} is not satisfiable by a source of {size} bytes"
        )),
        _ => Err(s3_error!(
            InvalidArgument,
            "x-amz-copy-source-range must be bytes=first-last within the source"
        )),
    }
}

/// A GET or HEAD with both `partNumber` and `Range`, as AWS refuses it.
fn part_and_range() -> s3s::S3Error {
    s3_error!(InvalidRequest, "Cannot specify both Range header and partNumber query parameter")
}

/// A listing's objects, with `owner` on each when given (v1 always, v2 with `fetch-owner`).
fn objects_of(listing: &super::list::Listing, owner: Option<&Owner>, encoding: KeyEncoding) -> Vec<Object> {
    listing
        .objects
        .iter()
        .map(|object| Object {
            key: Some(encoding.apply(&object.key)),
            e_tag: Some(ETag::Strong(object.etag.clone())),
            size: Some(object.size),
            last_modified: Some(Timestamp::from(object.last_modified)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            owner: owner.cloned(),
            ..Default::default()
        })
        .collect()
}

fn prefixes_of(listing: &super::list::Listing, encoding: KeyEncoding) -> Vec<CommonPrefix> {
    listing.prefixes.iter().map(|prefix| CommonPrefix { prefix: Some(encoding.apply(prefix)) }).collect()
}

#[cfg(test)]
mod tests {
    use super::parse_copy_range;

    #[test]
    fn a_copy_range_is_first_to_last_inclusive() {
        assert_eq!(parse_copy_range("bytes=0-0", 10).ok(), Some(0..1));
        assert_eq!(parse_copy_range("bytes=2-9", 10).ok(), Some(2..10));
    }

    #[test]
    fn a_copy_range_past_the_source_or_open_ended_is_refused() {
        for range in ["bytes=5-", "bytes=-3", "bytes=4-2", "bytes=a-b", "0-1", "bytes=1-2,4-5", ""] {
            let err = parse_copy_range(range, 10).expect_err(range);
            assert_eq!(err.code().as_str(), "InvalidArgument", "{range}");
        }
    }

    #[test]
    fn a_copy_range_past_the_source_is_invalid_range() {
        for range in ["bytes=0-10", "bytes=9-10", "bytes=20-30"] {
            let err = parse_copy_range(range, 10).expect_err(range);
            assert_eq!(err.code().as_str(), "InvalidRange", "{range}");
        }
    }
}
