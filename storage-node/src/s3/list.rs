//! Listing keys: prefix, delimiter (common prefixes), a start point and a page size, in the
//! binary order of the keys (the `key` column is `COLLATE "C"`, and Rust orders `str` the same
//! way), as S3 lists them.
//!
//! A listing is the sorted sequence of *entries*: each key under the prefix is an entry of its
//! own, unless the rest of it after the prefix holds the delimiter, in which case it folds into
//! its common prefix (the prefix up to and including the first delimiter). A page is the
//! entries strictly greater than the start point, so a page that ends on a common prefix is
//! followed by the first entry after every key under it: paging always moves forward and never
//! repeats an entry. [`paginate`] is that logic over any ordered [`KeySource`]; the catalog
//! ([`crate::model::object::page`]) is one, and the tests use an in-memory one. [`uploads`]
//! pages ListMultipartUploads, [`versions`] ListObjectVersions.

use s3s::S3Result;

use super::SiloS3;
pub(crate) use crate::model::object::Cursor;
use crate::model::object::{self as model, ListedObject};

/// One page of a listing.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Listing {
    pub objects: Vec<ListedObject>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned, where the next page starts after.
    pub last: Option<String>,
}

/// Keys in binary order.
pub(crate) trait KeySource {
    /// Up to `limit` items whose keys are at `cursor` or after it and not below `prefix`, in
    /// order.
    async fn fetch(&mut self, cursor: &Cursor, prefix: &str, limit: i64) -> S3Result<Vec<ListedObject>>;
}

/// How many keys one catalog read takes.
const PAGE: i64 = 1000;

/// The least string greater than every string that starts with `prefix`, or `None` when
/// there is none (`prefix` is all U+10FFFF, or empty). In code point order, which is UTF-8's
/// byte order: trailing U+10FFFF are dropped and the last remaining character incremented
/// (past the surrogates).
pub(crate) fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The common prefix `key` folds into under `prefix` and `delimiter`, if any.
pub(crate) fn common_prefix(key: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    rest.find(delimiter).map(|at| format!("{prefix}{}", &rest[..at + delimiter.len()]))
}

/// Lists up to `max` entries of `source` under `prefix`, strictly after `after`.
pub(crate) async fn paginate(
    source: &mut impl KeySource,
    prefix: &str,
    delimiter: Option<&str>,
    after: &str,
    max: usize,
) -> S3Result<Listing> {
    let mut listing = Listing::default();
    // A start point inside a common prefix (a continuation token that ends on one, say) is
    // after that prefix's entry: start past every key under it.
    let mut cursor = match common_prefix(after, prefix, delimiter) {
        Some(common) => match successor(&common) {
            Some(next) => Cursor::From(next),
            None => return Ok(listing),
        },
        None => Cursor::After(after.to_string()),
    };
    'pages: loop {
        let rows = source.fetch(&cursor, prefix, PAGE).await?;
        if rows.is_empty() {
            return Ok(listing);
        }
        for object in rows {
            if !object.key.starts_with(prefix) {
                return Ok(listing);
            }
            if listing.objects.len() + listing.prefixes.len() == max {
                listing.truncated = true;
                return Ok(listing);
            }
            match common_prefix(&object.key, prefix, delimiter) {
                Some(common) => {
                    // Skip every other key under this common prefix.
                    let next = successor(&common);
                    listing.last = Some(common.clone());
                    listing.prefixes.push(common);
                    match next {
                        Some(next) => cursor = Cursor::From(next),
                        None => return Ok(listing),
                    }
                    continue 'pages;
                }
                None => {
                    listing.last = Some(object.key.clone());
                    cursor = Cursor::After(object.key.clone());
                    listing.objects.push(object);
                }
            }
        }
    }
}

/// A listing's `encoding-type`: `url` has keys, prefixes, delimiters and markers sent
/// URL-encoded (keys may hold bytes XML 1.0 cannot carry), as AWS and MinIO encode them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyEncoding {
    url: bool,
}

impl KeyEncoding {
    /// The encoding a request asks for; anything but `url` is refused, as on AWS.
    pub(crate) fn of(requested: Option<&s3s::dto::EncodingType>) -> S3Result<KeyEncoding> {
        match requested.map(|encoding| encoding.as_str()) {
            None => Ok(KeyEncoding { url: false }),
            Some(word) if word.eq_ignore_ascii_case(s3s::dto::EncodingType::URL) => {
                Ok(KeyEncoding { url: true })
            }
            Some(_) => Err(s3s::s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request")),
        }
    }

    /// The `EncodingType` element of the reply (only when one was asked for).
    pub(crate) fn shown(self) -> Option<s3s::dto::EncodingType> {
        self.url.then(|| s3s::dto::EncodingType::from_static(s3s::dto::EncodingType::URL))
    }

    /// `text` as the reply carries it.
    pub(crate) fn apply(self, text: &str) -> String {
        if self.url { url_encode(text) } else { text.to_owned() }
    }

    /// [`KeyEncoding::apply`] on an optional element.
    pub(crate) fn apply_opt(self, text: Option<String>) -> Option<String> {
        text.map(|text| if self.url { url_encode(&text) } else { text })
    }
}

/// S3's URL encoding of a listed name: every byte but ASCII letters, digits and `-_./*` as
/// `%XX`, and a space as `+` (what AWS sends, and what the SDKs decode).
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A bucket's keys in the catalog.
struct CatalogKeys<'a> {
    client: &'a deadpool_postgres::Object,
    bucket: &'a str,
    bucket_id: i64,
}

impl KeySource for CatalogKeys<'_> {
    async fn fetch(&mut self, cursor: &Cursor, prefix: &str, limit: i64) -> S3Result<Vec<ListedObject>> {
        Ok(model::page(self.client, self.bucket, self.bucket_id, cursor, prefix, limit).await?)
    }
}

impl SiloS3 {
    /// Lists up to `max` keys and common prefixes of `bucket` after `after`; none unless the
    /// bucket of that name is still `bucket_id`, the one whose access was checked.
    pub(crate) async fn list_keys(
        &self,
        bucket: &str,
        bucket_id: i64,
        prefix: &str,
        delimiter: Option<&str>,
        after: &str,
        max: usize,
    ) -> S3Result<Listing> {
        // max-keys=0 asks for nothing: an empty page that is not truncated, as AWS answers.
        if max == 0 {
            return Ok(Listing::default());
        }
        let client = self.pool().get().await.map_err(crate::store::StoreError::from)?;
        paginate(&mut CatalogKeys { client: &client, bucket, bucket_id }, prefix, delimiter, after, max).await
    }
}

#[cfg(test)]
mod tests;
mod uploads;
mod versions;
