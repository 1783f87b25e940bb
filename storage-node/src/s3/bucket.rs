//! Buckets: names are global (as in S3); each belongs to one tenant.

use s3s::{S3Result, s3_error};

use super::error::{from_db, from_pool};
use super::{RESERVED_BUCKETS, SiloS3};
use crate::keys::TenantId;

/// A bucket and its owner.
#[derive(Debug, Clone)]
pub(crate) struct BucketRow {
    pub tenant: TenantId,
}

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
    ) -> S3Result<BucketRow> {
        let client = self.pool().get().await.map_err(from_pool)?;
        let row = client
            .query_opt("SELECT tenant_id, public_read FROM buckets WHERE name = $1", &[&name])
            .await
            .map_err(from_db)?;
        authorize(caller, row.map(|row| (TenantId(row.get(0)), row.get(1))), intent)
    }

    pub(crate) async fn create_bucket_for(&self, tenant: TenantId, name: &str) -> S3Result<()> {
        if !is_valid_name(name) {
            return Err(s3_error!(
                InvalidBucketName,
                "bucket names follow S3's rules; v1, healthz, readyz and metrics are reserved"
            ));
        }
        let client = self.pool().get().await.map_err(from_pool)?;
        let inserted = client
            .query_opt(
                "INSERT INTO buckets (name, tenant_id) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING name",
                &[&name, &tenant.0],
            )
            .await
            .map_err(from_db)?;
        if inserted.is_some() {
            return Ok(());
        }
        let owner: i64 = client
            .query_one("SELECT tenant_id FROM buckets WHERE name = $1", &[&name])
            .await
            .map_err(from_db)?
            .get(0);
        if owner == tenant.0 {
            Err(s3_error!(BucketAlreadyOwnedByYou))
        } else {
            Err(s3_error!(BucketAlreadyExists))
        }
    }

    pub(crate) async fn delete_bucket_for(&self, caller: Option<TenantId>, name: &str) -> S3Result<()> {
        self.bucket(caller, name, Intent::Write).await?;
        let client = self.pool().get().await.map_err(from_pool)?;
        let deleted = client
            .execute(
                "DELETE FROM buckets WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM s3_objects WHERE bucket = $1)",
                &[&name],
            )
            .await
            .map_err(from_db)?;
        if deleted == 0 {
            return Err(s3_error!(BucketNotEmpty));
        }
        Ok(())
    }

    /// The tenant's buckets, by name, with their creation times (Unix seconds).
    pub(crate) async fn buckets_of(&self, tenant: TenantId) -> S3Result<Vec<(String, f64)>> {
        let client = self.pool().get().await.map_err(from_pool)?;
        let rows = client
            .query(
                "SELECT name, extract(epoch FROM created_at)::float8 FROM buckets WHERE tenant_id = $1 ORDER BY name",
                &[&tenant.0],
            )
            .await
            .map_err(from_db)?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }
}

/// Whether `caller` may act on a bucket (`None`: no such bucket) with `intent`: its own
/// tenant always, anybody reading a public-read bucket, nobody else. An anonymous caller
/// learns nothing about which names exist.
pub(crate) fn authorize(
    caller: Option<TenantId>,
    bucket: Option<(TenantId, bool)>,
    intent: Intent,
) -> S3Result<BucketRow> {
    let Some((owner, public_read)) = bucket else {
        return Err(match caller {
            Some(_) => s3_error!(NoSuchBucket),
            None => s3_error!(AccessDenied),
        });
    };
    match caller {
        Some(tenant) if tenant == owner => Ok(BucketRow { tenant: owner }),
        _ if public_read && intent == Intent::Read => Ok(BucketRow { tenant: owner }),
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
