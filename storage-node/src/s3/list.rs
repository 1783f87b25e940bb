//! Listing keys: prefix, delimiter (common prefixes), a start point and a page size, in the
//! binary order of the keys (the `key` column is `COLLATE "C"`), as S3 lists them.

use s3s::S3Result;

use super::SiloS3;
use super::error::{from_db, from_pool};

/// One page of a listing.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Key, ETag, size and modification time (Unix seconds) of each object.
    pub objects: Vec<(String, String, i64, f64)>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned, where the next page starts after.
    pub last: Option<String>,
}

const PAGE: i64 = 1000;

impl SiloS3 {
    /// Lists up to `max` keys and common prefixes of `bucket` after `after`.
    pub(crate) async fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: &str,
        max: usize,
    ) -> S3Result<Listing> {
        let client = self.pool().get().await.map_err(from_pool)?;
        let mut listing = Listing::default();
        let mut cursor = after.to_string();
        'pages: loop {
            let rows = client
                .query(
                    "SELECT s.key, s.etag, o.size, extract(epoch FROM s.last_modified)::float8 \
                     FROM s3_objects s JOIN objects o ON o.id = s.object_id \
                     WHERE s.bucket = $1 AND s.key > $2 AND s.key >= $3 ORDER BY s.key LIMIT $4",
                    &[&bucket, &cursor, &prefix, &PAGE],
                )
                .await
                .map_err(from_db)?;
            if rows.is_empty() {
                return Ok(listing);
            }
            for row in &rows {
                let key: String = row.get(0);
                if !key.starts_with(prefix) {
                    return Ok(listing);
                }
                let rest = &key[prefix.len()..];
                let common = delimiter
                    .filter(|d| !d.is_empty())
                    .and_then(|d| rest.find(d).map(|at| format!("{prefix}{}", &rest[..at + d.len()])));
                if listing.objects.len() + listing.prefixes.len() == max {
                    listing.truncated = true;
                    return Ok(listing);
                }
                match common {
                    Some(common) => {
                        // Skip every other key under this common prefix.
                        cursor = format!("{common}\u{10FFFF}");
                        listing.last = Some(common.clone());
                        listing.prefixes.push(common);
                        continue 'pages;
                    }
                    None => {
                        listing.last = Some(key.clone());
                        listing.objects.push((key.clone(), row.get(1), row.get(2), row.get(3)));
                        cursor = key;
                    }
                }
            }
        }
    }
}
