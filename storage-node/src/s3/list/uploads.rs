//! ListMultipartUploads as AWS pages it: uploads in progress by key and age, after a
//! `key-marker` (and `upload-id-marker`), folded into common prefixes under a delimiter, with
//! the owner and `encoding-type=url`.

use s3s::S3Result;
use s3s::dto::{
    CommonPrefix, ListMultipartUploadsInput, ListMultipartUploadsOutput, MultipartUpload, StorageClass,
    Timestamp,
};

use super::{KeyEncoding, common_prefix};
use crate::TenantId;
use crate::model::multipart::{UploadEntry, UploadMarker};
use crate::s3::SiloS3;

/// How many uploads one listing reads when a delimiter folds them (uploads in progress are
/// few; a page that reads this many without filling up ends there, truncated).
const MAX_FOLDED: usize = 10_000;

/// One page: the uploads and common prefixes, and where the next page starts.
#[derive(Debug, Default)]
struct Page {
    uploads: Vec<UploadEntry>,
    prefixes: Vec<String>,
    /// The next page's key marker and upload id marker, when the page is truncated.
    next: Option<(String, Option<String>)>,
}

/// Up to `max` entries of `rows` (sorted, after `marker`), folding keys under `prefix` at
/// `delimiter`; a common prefix the marker is inside was on an earlier page. When `rows` stop
/// short of the listing's end (`more`), the page is truncated after what it holds even if not
/// full, so that the client asks for the rest.
fn fold(
    rows: Vec<UploadEntry>,
    prefix: &str,
    delimiter: Option<&str>,
    marker: &str,
    max: usize,
    more: bool,
) -> Page {
    let mut page = Page::default();
    let mut last: Option<(String, Option<String>)> = None;
    for row in rows {
        let common = common_prefix(&row.key, prefix, delimiter);
        if let Some(common) = &common
            && (page.prefixes.last() == Some(common)
                || (!marker.is_empty() && marker.starts_with(common.as_str())))
        {
            continue;
        }
        if page.uploads.len() + page.prefixes.len() == max {
            page.next = last.take();
            return page;
        }
        match common {
            Some(common) => {
                last = Some((common.clone(), None));
                page.prefixes.push(common);
            }
            None => {
                last = Some((row.key.clone(), Some(row.id.clone())));
                page.uploads.push(row);
            }
        }
    }
    if more {
        page.next = last;
    }
    page
}

impl SiloS3 {
    /// A page of the bucket's uploads in progress; its tenant only may list them.
    pub(crate) async fn list_uploads(
        &self,
        caller: Option<TenantId>,
        input: ListMultipartUploadsInput,
    ) -> S3Result<ListMultipartUploadsOutput> {
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let encoding = KeyEncoding::of(input.encoding_type.as_ref())?;
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let key_marker = input.key_marker.as_deref().unwrap_or_default();
        // An upload id marker counts only with a key marker, as on AWS.
        let upload_id = input.upload_id_marker.as_deref().filter(|_| !key_marker.is_empty());
        let marker = UploadMarker { key: key_marker, upload_id };
        let fetch = if delimiter.is_some() { MAX_FOLDED } else { max + 1 };
        let rows = self.uploads(caller, &input.bucket, &prefix, marker, fetch).await?;
        let more = delimiter.is_some() && rows.len() == MAX_FOLDED;
        let page = fold(rows, &prefix, delimiter.as_deref(), key_marker, max, more);
        let owner = match caller {
            Some(tenant) => Some(self.owner_of(tenant).await?),
            None => None,
        };
        let uploads = page
            .uploads
            .into_iter()
            .map(|upload| MultipartUpload {
                key: Some(encoding.apply(&upload.key)),
                upload_id: Some(upload.id),
                initiated: Some(Timestamp::from(upload.initiated)),
                initiator: owner.as_ref().map(SiloS3::initiator_of),
                owner: owner.clone(),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let prefixes = page
            .prefixes
            .iter()
            .map(|prefix| CommonPrefix { prefix: Some(encoding.apply(prefix)) })
            .collect();
        let (next_key, next_id) = page.next.clone().map_or((None, None), |(key, id)| (Some(key), id));
        Ok(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: encoding.apply_opt(input.prefix),
            delimiter: encoding.apply_opt(delimiter),
            key_marker: encoding.apply_opt(input.key_marker),
            upload_id_marker: input.upload_id_marker,
            next_key_marker: encoding.apply_opt(next_key),
            next_upload_id_marker: next_id,
            encoding_type: encoding.shown(),
            max_uploads: Some(max as i32),
            is_truncated: Some(page.next.is_some()),
            uploads: Some(uploads),
            common_prefixes: Some(prefixes),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fold;
    use crate::model::multipart::UploadEntry;

    fn rows(keys: &[&str]) -> Vec<UploadEntry> {
        let at = time::OffsetDateTime::UNIX_EPOCH;
        keys.iter()
            .map(|key| UploadEntry { key: (*key).into(), id: format!("id-{key}"), initiated: at })
            .collect()
    }

    #[test]
    fn uploads_fold_into_common_prefixes_and_page_after_them() {
        let all = rows(&["a/1", "a/2", "b", "c/1", "d"]);
        let page = fold(all.clone(), "", Some("/"), "", 2, false);
        assert_eq!(page.prefixes, ["a/"]);
        assert_eq!(page.uploads.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(page.next, Some(("b".into(), Some("id-b".into()))));
        let after_prefix = fold(rows(&["a/2", "b", "c/1", "d"]), "", Some("/"), "a/", 2, false);
        assert_eq!(after_prefix.prefixes, ["c/"], "a/ was on the page before");
        let whole = fold(all.clone(), "", None, "", 10, false);
        assert_eq!((whole.uploads.len(), whole.next), (5, None));
        // Rows that stop short of the listing's end truncate the page, full or not.
        let cut = fold(all, "", Some("/"), "", 10, true);
        assert_eq!(cut.next, Some(("d".into(), Some("id-d".into()))), "more rows follow");
    }
}
