//! ListObjectVersions for Silo's buckets, which are never versioned:
//! each key has one version, `null` and the latest, as AWS lists an unversioned bucket; the
//! listing pages and encodes as ListObjects does.

use s3s::S3Result;
use s3s::dto::{
    CommonPrefix, ETag, ListObjectVersionsInput, ListObjectVersionsOutput, ObjectVersion,
    ObjectVersionStorageClass, Timestamp,
};

use super::KeyEncoding;
use crate::TenantId;
use crate::s3::SiloS3;
use crate::s3::bucket::Intent;

/// The one version of a key in an unversioned bucket.
const NULL_VERSION: &str = "null";

impl SiloS3 {
    /// A page of the bucket's keys as versions.
    pub(crate) async fn list_versions(
        &self,
        caller: Option<TenantId>,
        input: ListObjectVersionsInput,
    ) -> S3Result<ListObjectVersionsOutput> {
        let bucket = self.bucket(caller, &input.bucket, Intent::Read).await?;
        // An anonymous reader of a public-read bucket is not shown who owns it.
        let owner = match caller {
            Some(_) => Some(self.owner_of(bucket.tenant).await?),
            None => None,
        };
        let encoding = KeyEncoding::of(input.encoding_type.as_ref())?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let max = match input.max_keys {
            None => 1000,
            Some(n) if n < 0 => return Err(s3s::s3_error!(InvalidArgument, "max-keys must not be negative")),
            Some(n) => (n as usize).min(1000),
        };
        // The key marker's one version was listed: the page starts after the key either way.
        let after = input.key_marker.clone().unwrap_or_default();
        let listing =
            self.list_keys(&input.bucket, bucket.id, &prefix, delimiter.as_deref(), &after, max).await?;
        let versions = listing
            .objects
            .iter()
            .map(|object| ObjectVersion {
                key: Some(encoding.apply(&object.key)),
                version_id: Some(NULL_VERSION.into()),
                is_latest: Some(true),
                e_tag: Some(ETag::Strong(object.etag.clone())),
                size: Some(object.size),
                last_modified: Some(Timestamp::from(object.last_modified)),
                owner: owner.clone(),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let prefixes = listing
            .prefixes
            .iter()
            .map(|prefix| CommonPrefix { prefix: Some(encoding.apply(prefix)) })
            .collect();
        let next = listing.truncated.then(|| listing.last.clone()).flatten();
        Ok(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: encoding.apply_opt(input.prefix),
            delimiter: encoding.apply_opt(delimiter),
            key_marker: encoding.apply_opt(input.key_marker),
            version_id_marker: input.version_id_marker,
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            next_version_id_marker: next.as_ref().map(|_| NULL_VERSION.into()),
            next_key_marker: encoding.apply_opt(next),
            versions: Some(versions),
            common_prefixes: Some(prefixes),
            encoding_type: encoding.shown(),
            ..Default::default()
        })
    }
}
