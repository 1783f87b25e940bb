//! Buckets in S3's terms: S3's naming rules, who may do what with a bucket, and the bucket
//! calls over [`crate::model::bucket`] (which keeps the rows, and checks a write's bucket
//! again, by id, inside the transaction that binds the key).

use s3s::{S3Result, s3_error};

use super::{RESERVED_BUCKETS, SiloS3};
use crate::TenantId;
use crate::model::bucket::{self as model, BucketAccess, BucketEntry, CannedAcl, Creation};

/// What a caller wants to do with a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    Read,
    Write,
}

/// Whether `name` follows S3's bucket naming rules, and is not reserved.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && edge_ok(bytes[0])
        && edge_ok(bytes[bytes.len() - 1])
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
        && !name.starts_with("xn--")
        && !name.starts_with("sthree-")
        && !name.ends_with("-s3alias")
        && !name.ends_with("--ol-s3")
        && !RESERVED_BUCKETS.contains(&name)
}

impl SiloS3 {
    /// The bucket, if `caller` may `intent` on it: its own tenant may do anything, anyone
    /// may read a public-read bucket, and nobody else anything.
    pub(crate) async fn bucket(
        &self,
        caller: Option<TenantId>,
        name: &str,
        intent: Intent,
    ) -> S3Result<BucketAccess> {
        authorize(caller, model::find_cached(&self.store, name).await?, intent)
    }

    /// Creates a private bucket.
    #[cfg(test)]
    pub(crate) async fn create_bucket_for(&self, tenant: TenantId, name: &str) -> S3Result<()> {
        self.create_bucket_with(tenant, name, CannedAcl::Private).await
    }

    /// Creates a bucket with canned ACL `acl`.
    pub(crate) async fn create_bucket_with(
        &self,
        tenant: TenantId,
        name: &str,
        acl: CannedAcl,
    ) -> S3Result<()> {
        if !is_valid_name(name) {
            return Err(s3_error!(
                InvalidBucketName,
                "bucket names follow S3's rules; v1, healthz, readyz and metrics are reserved"
            ));
        }
        match model::create(&self.store, tenant, name, acl).await? {
            Creation::Created => Ok(()),
            Creation::Taken { owner } if owner == tenant => Err(s3_error!(BucketAlreadyOwnedByYou)),
            Creation::Taken { .. } => Err(s3_error!(BucketAlreadyExists)),
        }
    }

    /// Deletes an empty bucket. Multipart uploads still in progress are aborted with it, as
    /// AWS does (their parts are released); objects make it `BucketNotEmpty`.
    pub(crate) async fn delete_bucket_for(&self, caller: Option<TenantId>, name: &str) -> S3Result<()> {
        let bucket = self.bucket(caller, name, Intent::Write).await?;
        Ok(model::delete_empty(&self.store, name, bucket).await?)
    }

    /// The tenant's buckets, by name, with their creation times.
    pub(crate) async fn buckets_of(&self, tenant: TenantId) -> S3Result<Vec<BucketEntry>> {
        Ok(model::of_tenant(self.pool(), tenant).await?)
    }
}

/// Whether `caller` may act on a bucket (`None`: no such bucket) with `intent`: its own
/// tenant always, anybody reading a public-read bucket, nobody else. An anonymous caller
/// learns nothing about which names exist.
pub(crate) fn authorize(
    caller: Option<TenantId>,
    bucket: Option<BucketAccess>,
    intent: Intent,
) -> S3Result<BucketAccess> {
    let Some(bucket) = bucket else {
        return Err(match caller {
            Some(_) => s3_error!(NoSuchBucket),
            None => s3_error!(AccessDenied),
        });
    };
    match caller {
        Some(tenant) if tenant == bucket.tenant => Ok(bucket),
        _ if bucket.public_read() && intent == Intent::Read => Ok(bucket),
        _ => Err(s3_error!(AccessDenied)),
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_name;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["media", "my-bucket.assets", "a1b", &"b".repeat(63)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "ab",
            "Media",
            "-media",
            "media-",
            "me..dia",
            "192.168.1.1",
            "xn--abc",
            "v1",
            "metrics",
            "a_b",
            &"b".repeat(64),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
