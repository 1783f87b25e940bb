//! Multipart uploads in S3's terms: part numbers and sizes, the parts a completion names and
//! its `md5(part md5s)-N` ETag, over [`crate::model::multipart`] (which keeps the uploads and
//! parts, and orders a part that races a completion or an abort).

use md5::Digest;
use s3s::{S3ErrorCode, S3Result, s3_error};

use super::SiloS3;
use super::bucket::Intent;
use super::checksum;
use super::integrity::{ChecksumClaim, Incoming};
use super::object::check_key;
use crate::TenantId;
use crate::model::ModelError;
use crate::model::multipart::{self as model, Chosen, Completion, NewUpload, PartRow, UploadEntry};
use crate::model::object::{
    ChecksumAlgorithm, ChecksumKind, ObjectHeaders, ObjectPart, StoredChecksum, Target, WriteCondition,
};

/// S3's smallest part, except for the last one.
const MIN_PART_BYTES: i64 = 5 * 1024 * 1024;

/// An upload in progress, as its caller checked it.
#[derive(Debug, Clone)]
struct Upload {
    tenant: TenantId,
    /// The id of the bucket it was checked against.
    bucket_id: i64,
    headers: ObjectHeaders,
    /// The checksum its parts and object get.
    checksum: Option<(ChecksumAlgorithm, ChecksumKind)>,
}

/// What a CompleteMultipartUpload claims beyond its parts' numbers and ETags.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompletionClaims {
    /// Each named part's checksum, if given (in the order of the parts named).
    pub parts: Vec<Option<(ChecksumAlgorithm, String)>>,
    /// The whole object's checksum (`x-amz-checksum-*`), if given.
    pub whole: Option<(ChecksumAlgorithm, String)>,
    /// What the key must hold (`If-Match`, `If-None-Match`).
    pub condition: WriteCondition,
}

/// A part of an upload, its number checked and its upload found as the caller's.
pub(crate) struct PartOfUpload {
    upload: Upload,
    id: String,
    number: i32,
}

impl SiloS3 {
    pub(crate) async fn create_upload(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        (headers, checksum): (ObjectHeaders, Option<(ChecksumAlgorithm, ChecksumKind)>),
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
        let target = Target { bucket, id: found.id, key };
        model::create(self.pool(), NewUpload { id: &id, tenant, target, headers: &headers, checksum })
            .await?;
        Ok(id)
    }

    /// The upload, when it is `bucket`/`key`'s and the caller's.
    async fn upload(&self, caller: Option<TenantId>, bucket: &str, key: &str, id: &str) -> S3Result<Upload> {
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        let found_upload = model::find(self.pool(), id, bucket, key, tenant)
            .await?
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        Ok(Upload {
            tenant,
            bucket_id: found.id,
            headers: found_upload.headers,
            checksum: found_upload.checksum,
        })
    }

    /// Checks that upload `id` is `bucket`/`key`'s and the caller's. Returns the checksum
    /// algorithm of its parts, if it has one.
    pub(crate) async fn check_upload(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> S3Result<Option<ChecksumAlgorithm>> {
        let upload = self.upload(caller, bucket, key, id).await?;
        Ok(upload.checksum.map(|(algorithm, _)| algorithm))
    }

    /// Upload `id` of `bucket`/`key`, when it is the caller's and `number` is a part number: what
    /// [`SiloS3::store_part`] stores part `number` into.
    pub(crate) async fn upload_for_part(
        &self,
        caller: Option<TenantId>,
        (bucket, key): (&str, &str),
        id: &str,
        number: i32,
    ) -> S3Result<PartOfUpload> {
        if !(1..=10_000).contains(&number) {
            return Err(s3_error!(InvalidArgument, "part numbers run from 1 to 10000"));
        }
        let upload = self.upload(caller, bucket, key, id).await?;
        Ok(PartOfUpload { upload, id: id.to_string(), number })
    }

    /// Stores one part (replacing an earlier upload of the same part) once its claims are
    /// checked. Returns its ETag and its checksum (in the upload's algorithm, or the one the
    /// part claimed).
    pub(crate) async fn upload_part_for(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        id: &str,
        number: i32,
        body: Incoming,
    ) -> S3Result<(String, Option<(ChecksumAlgorithm, String)>)> {
        let part = self.upload_for_part(caller, (bucket, key), id, number).await?;
        self.store_part(part, body).await
    }

    /// [`SiloS3::upload_part_for`] of a part whose upload [`SiloS3::upload_for_part`] found.
    pub(crate) async fn store_part(
        &self,
        part: PartOfUpload,
        mut body: Incoming,
    ) -> S3Result<(String, Option<(ChecksumAlgorithm, String)>)> {
        let PartOfUpload { upload, id, number } = part;
        let id = id.as_str();
        let wanted = upload.checksum.map(|(algorithm, _)| algorithm);
        match (&body.claims.checksum, wanted) {
            (Some(claim), Some(wanted)) if claim.algorithm != wanted => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                    wanted.as_str().to_lowercase(),
                    claim.algorithm.as_str().to_lowercase()
                ));
            }
            (None, Some(algorithm)) => {
                body.claims.checksum =
                    Some(ChecksumClaim { algorithm, value: None, trailer: None, announced: false });
            }
            _ => {}
        }
        let tenant = upload.tenant;
        let checked = self.ingest_checked(tenant, body).await?;
        let ingested = checked.ingested;
        let etag = hex::encode(ingested.md5().unwrap_or_default());
        let kept = checked.checksum.as_ref().filter(|(algorithm, _)| Some(*algorithm) == wanted);
        let part = (etag.as_str(), kept.map(|(_, sum)| sum.as_str()));
        let stored = model::store_part(&self.store, tenant, id, number, &ingested, part).await;
        if stored.is_err() {
            self.store.abandon(ingested).await;
        }
        match stored {
            Ok(()) => Ok((etag, checked.checksum)),
            Err(ModelError::UploadGone) => {
                Err(s3_error!(NoSuchUpload, "the upload was completed or aborted meanwhile"))
            }
            Err(err) => Err(err.into()),
        }
    }

    pub(crate) async fn parts(&self, id: &str) -> S3Result<Vec<PartRow>> {
        Ok(model::parts(self.pool(), id).await?)
    }

    /// Completes the upload with `requested` parts (number and ETag, ascending). Returns the
    /// object's ETag, S3's `md5(part md5s)-N`, and its checksum if the upload has one. A
    /// completion repeated with the same parts after it succeeded (a retry whose answer was
    /// lost) answers the same, as on AWS.
    pub(crate) async fn complete_upload(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        id: &str,
        (requested, claims): (&[(i32, String)], &CompletionClaims),
    ) -> S3Result<(String, Option<StoredChecksum>)> {
        let completion = async {
            let upload = self.upload(caller, bucket, key, id).await?;
            if requested.is_empty() {
                return Err(s3_error!(MalformedXML, "a completion lists at least one part"));
            }
            // A number may be named twice in a row (both uploads of a part uploaded twice).
            if requested.windows(2).any(|w| w[0].0 > w[1].0) {
                return Err(s3_error!(InvalidPartOrder));
            }
            self.check_write_condition(bucket, upload.bucket_id, key, &claims.condition).await?;
            let target = Target { bucket, id: upload.bucket_id, key };
            let mut answer = (String::new(), None);
            let completion = Completion { id, named: requested, condition: &claims.condition };
            model::complete(&self.store, upload.tenant, completion, target, &upload.headers, |stored| {
                let chosen = choose_parts(stored, requested, upload.checksum, claims)?;
                answer = (chosen.etag.clone(), chosen.checksum.clone());
                Ok::<_, s3s::S3Error>(chosen)
            })
            .await?;
            Ok(answer)
        };
        let err = match completion.await {
            Err(err) if *err.code() == S3ErrorCode::NoSuchUpload => err,
            other => return other,
        };
        // Gone: completed before, perhaps, by the request this one repeats.
        let tenant = caller.ok_or_else(|| s3_error!(AccessDenied))?;
        self.bucket(caller, bucket, Intent::Write).await?;
        match model::find_completed(self.pool(), id, bucket, key, tenant).await? {
            Some(completed) if same_parts(&completed.named, requested) => {
                // The first try may have answered 503 with the caches not confirmed clean.
                let stale = crate::read_cache::Invalidation::key(bucket, key);
                crate::read_cache::broadcast::everywhere(&self.store, stale, None).await?;
                Ok((completed.etag, completed.checksum))
            }
            _ => Err(err),
        }
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
        Ok(model::abort(&self.store, upload.tenant, id).await?)
    }

    /// The bucket's uploads in progress.
    pub(crate) async fn uploads(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        prefix: &str,
        marker: model::UploadMarker<'_>,
        limit: usize,
    ) -> S3Result<Vec<UploadEntry>> {
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        Ok(model::list(self.pool(), bucket, found.id, prefix, marker, limit).await?)
    }
}

/// Whether two completions name the same parts (ETags compared without their quotes).
fn same_parts(a: &[(i32, String)], b: &[(i32, String)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| a.0 == b.0 && a.1.trim_matches('"') == b.1.trim_matches('"'))
}

/// The parts of `stored` that a completion's `requested` list (number and ETag, ascending)
/// names, with the completed object's ETag, S3's `md5(part md5s)-N`, and its checksum when
/// the upload has one (`wanted`). A number named more than once (a part uploaded twice, each
/// upload named) takes its last upload, the one stored, if one of the ETags is its. Every
/// part but the last must be at least 5 MiB. A part checksum the completion names must be the
/// part's (else `InvalidPart`), and a whole-object one the object's (else `BadDigest`).
fn choose_parts(
    stored: &[PartRow],
    requested: &[(i32, String)],
    wanted: Option<(ChecksumAlgorithm, ChecksumKind)>,
    claims: &CompletionClaims,
) -> S3Result<Chosen> {
    let mut chosen = Vec::with_capacity(requested.len());
    let mut at = 0;
    for named in requested.chunk_by(|a, b| a.0 == b.0) {
        let number = named[0].0;
        let (which, part) = named
            .iter()
            .enumerate()
            .find_map(|(i, (_, etag))| {
                let part =
                    stored.iter().find(|part| part.number == number && part.etag == etag.trim_matches('"'));
                part.map(|part| (at + i, part))
            })
            .ok_or_else(|| s3_error!(InvalidPart, "part {number} was not uploaded with that ETag"))?;
        at += named.len();
        if let Some(Some((algorithm, sum))) = claims.parts.get(which)
            && (Some(*algorithm) != wanted.map(|(algorithm, _)| algorithm)
                || part.checksum.as_deref() != Some(sum))
        {
            return Err(s3_error!(InvalidPart, "part {number}'s checksum is not the one given"));
        }
        chosen.push(part);
    }
    if chosen.iter().rev().skip(1).any(|part| part.size < MIN_PART_BYTES) {
        return Err(s3_error!(EntityTooSmall, "every part but the last must be at least 5 MiB"));
    }
    let mut md5 = md5::Md5::new();
    for part in &chosen {
        md5.update(hex::decode(&part.etag).unwrap_or_default());
    }
    let etag = format!("{}-{}", hex::encode(md5.finalize()), chosen.len());
    let checksum = wanted.map(|wanted| checksum::of_upload(wanted, &chosen)).transpose()?;
    if let Some((algorithm, claimed)) = &claims.whole {
        let matches = checksum.as_ref().is_some_and(|sum| {
            sum.algorithm == *algorithm
                && (sum.value == *claimed
                    || sum.value.strip_suffix(&format!("-{}", chosen.len())) == Some(claimed))
        });
        if !matches {
            return Err(checksum::bad_digest(*algorithm));
        }
    }
    let listed = chosen
        .iter()
        .map(|part| ObjectPart { number: part.number, size: part.size, checksum: part.checksum.clone() })
        .collect();
    Ok(Chosen { parts: chosen.iter().map(|part| part.object).collect(), etag, checksum, listed })
}
