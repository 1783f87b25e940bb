//! Buckets: names are global (as in S3); each belongs to one tenant.
//!
//! A bucket also has an id, which its name does not carry: a write authorizes against the
//! bucket it found, and [`lock_bucket`] checks that same bucket again inside the transaction
//! that binds the key, so a name deleted and created again by another tenant meanwhile never
//! receives the write.

use s3s::{S3Result, s3_error};

use super::error::{from_db, from_pool};
use super::{RESERVED_BUCKETS, SiloS3};
use crate::keys::TenantId;

/// A bucket and its owner.
#[derive(Debug, Clone)]
pub(crate) struct BucketRow {
    pub tenant: TenantId,
    /// The bucket's identity (a name deleted and created again is another bucket).
    pub id: i64,
}

/// A bucket as found by name: its owner, whether it is public-read, and its id.
pub(crate) type Found = (TenantId, bool, i64);

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
            .query_opt("SELECT tenant_id, public_read, id FROM buckets WHERE name = $1", &[&name])
            .await
            .map_err(from_db)?;
        authorize(caller, row.map(|row| (TenantId(row.get(0)), row.get(1), row.get(2))), intent)
    }

    pub(crate) async fn create_bucket_for(&self, tenant: TenantId, name: &str) -> S3Result<()> {
        if !is_valid_name(name) {
            return Err(s3_error!(
                InvalidBucketName,
                "bucket names follow S3's rules; v1, healthz, readyz and metrics are reserved"
            ));
        }
        let mut client = self.pool().get().await.map_err(from_pool)?;
        let txn = client.transaction().await.map_err(from_db)?;
        // The tenant's row stays shared until the bucket exists, so a tenant deletion that
        // starts meanwhile waits, then finds the bucket and deletes it.
        let active = txn
            .query_opt("SELECT 1 FROM tenants WHERE id = $1 AND deleting_at IS NULL FOR SHARE", &[&tenant.0])
            .await
            .map_err(from_db)?;
        if active.is_none() {
            return Err(tenant_deleting());
        }
        let inserted = txn
            .query_opt(
                "INSERT INTO buckets (name, tenant_id) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING name",
                &[&name, &tenant.0],
            )
            .await
            .map_err(from_db)?;
        txn.commit().await.map_err(from_db)?;
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

    /// Deletes an empty bucket. Multipart uploads still in progress are aborted with it, as
    /// AWS does (their parts are released); objects make it `BucketNotEmpty`.
    pub(crate) async fn delete_bucket_for(&self, caller: Option<TenantId>, name: &str) -> S3Result<()> {
        let bucket = self.bucket(caller, name, Intent::Write).await?;
        let mut client = self.pool().get().await.map_err(from_pool)?;
        let txn = client.transaction().await.map_err(from_db)?;
        // Writes hold the bucket's row shared until they commit: this waits for them, and
        // then sees what they bound.
        let found = txn
            .query_opt("SELECT 1 FROM buckets WHERE name = $1 AND id = $2 FOR UPDATE", &[&name, &bucket.id])
            .await
            .map_err(from_db)?;
        if found.is_none() {
            return Err(s3_error!(NoSuchBucket));
        }
        let has_objects = txn
            .query_opt("SELECT 1 FROM s3_objects WHERE bucket = $1 LIMIT 1", &[&name])
            .await
            .map_err(from_db)?;
        if has_objects.is_some() {
            return Err(s3_error!(BucketNotEmpty));
        }
        let uploads: Vec<String> = txn
            .query("SELECT id FROM multipart_uploads WHERE bucket = $1 ORDER BY id", &[&name])
            .await
            .map_err(from_db)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for upload in &uploads {
            self.drop_upload_in(&txn, bucket.tenant, upload).await?;
        }
        txn.execute("DELETE FROM buckets WHERE name = $1", &[&name]).await.map_err(from_db)?;
        txn.commit().await.map_err(from_db)?;
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

/// Locks bucket `name` in `txn` as it was authorized (`id`), shared until `txn` ends: a
/// concurrent DeleteBucket waits for the write and then sees it. A bucket deleted meanwhile,
/// or deleted and created again under the same name, is `NoSuchBucket`; a tenant being
/// deleted stores nothing new.
pub(crate) async fn lock_bucket(txn: &tokio_postgres::Transaction<'_>, name: &str, id: i64) -> S3Result<()> {
    let row = txn
        .query_opt(
            "SELECT t.deleting_at IS NULL FROM buckets b JOIN tenants t ON t.id = b.tenant_id \
             WHERE b.name = $1 AND b.id = $2 FOR KEY SHARE OF b",
            &[&name, &id],
        )
        .await
        .map_err(from_db)?;
    match row.map(|row| row.get::<_, bool>(0)) {
        None => Err(s3_error!(NoSuchBucket)),
        Some(false) => Err(tenant_deleting()),
        Some(true) => Ok(()),
    }
}

/// The answer to a write for a tenant whose deletion has started.
pub(crate) fn tenant_deleting() -> s3s::S3Error {
    s3_error!(AccessDenied, "the tenant is being deleted")
}

/// Whether `caller` may act on a bucket (`None`: no such bucket) with `intent`: its own
/// tenant always, anybody reading a public-read bucket, nobody else. An anonymous caller
/// learns nothing about which names exist.
pub(crate) fn authorize(
    caller: Option<TenantId>,
    bucket: Option<Found>,
    intent: Intent,
) -> S3Result<BucketRow> {
    let Some((owner, public_read, id)) = bucket else {
        return Err(match caller {
            Some(_) => s3_error!(NoSuchBucket),
            None => s3_error!(AccessDenied),
        });
    };
    match caller {
        Some(tenant) if tenant == owner => Ok(BucketRow { tenant: owner, id }),
        _ if public_read && intent == Intent::Read => Ok(BucketRow { tenant: owner, id }),
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
