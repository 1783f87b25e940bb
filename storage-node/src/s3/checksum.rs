//! Additional checksums (`x-amz-checksum-*`: CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256): which
//! one a request asks for (a header, `x-amz-sdk-checksum-algorithm`, or an aws-chunked
//! trailer, all parsed by s3s), computed as the body streams into the chunk store (with s3s's
//! own hashers), and a multipart upload's, composite (the checksum of the parts' checksums,
//! `-N`) or full-object (the parts' CRCs combined with `crc-fast`, s3s's CRC crate).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::ChecksumType;
use s3s::{S3Result, s3_error};
use tokio::io::{AsyncRead, ReadBuf};

use crate::model::multipart::PartRow;
use crate::model::object::{ChecksumAlgorithm, ChecksumKind, StoredChecksum};

/// The five `checksum_*` fields of an s3s input or output (all name them alike), as
/// `[(algorithm, value)]`; the fields are taken.
macro_rules! checksum_fields {
    ($input:expr) => {
        [
            (ChecksumAlgorithm::Crc32, $input.checksum_crc32.take()),
            (ChecksumAlgorithm::Crc32c, $input.checksum_crc32c.take()),
            (ChecksumAlgorithm::Crc64Nvme, $input.checksum_crc64nvme.take()),
            (ChecksumAlgorithm::Sha1, $input.checksum_sha1.take()),
            (ChecksumAlgorithm::Sha256, $input.checksum_sha256.take()),
        ]
    };
}
pub(crate) use checksum_fields;

/// Sets the `checksum_*` field of `algorithm` on an s3s output (or part) to `value`.
macro_rules! set_checksum {
    ($output:expr, $algorithm:expr, $value:expr) => {
        match $algorithm {
            ChecksumAlgorithm::Crc32 => $output.checksum_crc32 = $value,
            ChecksumAlgorithm::Crc32c => $output.checksum_crc32c = $value,
            ChecksumAlgorithm::Crc64Nvme => $output.checksum_crc64nvme = $value,
            ChecksumAlgorithm::Sha1 => $output.checksum_sha1 = $value,
            ChecksumAlgorithm::Sha256 => $output.checksum_sha256 = $value,
        }
    };
}
pub(crate) use set_checksum;

/// The checksum a request claims in a header, if any. More than one is `400 InvalidRequest`.
pub(crate) fn claimed_header(
    fields: [(ChecksumAlgorithm, Option<String>); 5],
) -> S3Result<Option<(ChecksumAlgorithm, String)>> {
    let mut claimed =
        fields.into_iter().filter_map(|(algorithm, value)| value.map(|value| (algorithm, value)));
    let first = claimed.next();
    if claimed.next().is_some() {
        return Err(s3_error!(InvalidRequest, "Expecting a single x-amz-checksum- header"));
    }
    Ok(first)
}

/// The algorithm s3s parsed from `x-amz-sdk-checksum-algorithm` or `x-amz-trailer`.
pub(crate) fn algorithm_of(
    parsed: Option<&s3s::dto::ChecksumAlgorithm>,
) -> S3Result<Option<ChecksumAlgorithm>> {
    parsed
        .map(|algorithm| {
            algorithm.as_str().to_ascii_uppercase().parse().map_err(|_| {
                s3_error!(InvalidRequest, "the checksum algorithm {} is not supported", algorithm.as_str())
            })
        })
        .transpose()
}

/// The checksum an `x-amz-trailer` header announces (`x-amz-checksum-<algorithm>`), if any: its
/// value then comes in the aws-chunked trailer, and must.
pub(crate) fn announced_in_trailer(headers: &http::HeaderMap) -> S3Result<Option<ChecksumAlgorithm>> {
    let Some(trailer) = headers.get("x-amz-trailer") else { return Ok(None) };
    let trailer = trailer.to_str().map_err(|_| s3_error!(InvalidRequest, "x-amz-trailer is not text"))?;
    let Some(name) = trailer.trim().to_ascii_lowercase().strip_prefix("x-amz-checksum-").map(str::to_owned)
    else {
        return Ok(None);
    };
    name.to_ascii_uppercase()
        .parse()
        .map(Some)
        .map_err(|_| s3_error!(InvalidRequest, "the trailer checksum {name} is not supported"))
}

/// The checksum type a CreateMultipartUpload asks for with `algorithm`: COMPOSITE unless
/// said otherwise, except for CRC64NVME, which is only FULL_OBJECT; SHA-1 and SHA-256 are only
/// COMPOSITE, as on AWS.
pub(crate) fn upload_kind(
    algorithm: Option<ChecksumAlgorithm>,
    asked: Option<&ChecksumType>,
) -> S3Result<Option<(ChecksumAlgorithm, ChecksumKind)>> {
    let Some(algorithm) = algorithm else {
        if asked.is_some() {
            return Err(s3_error!(InvalidRequest, "x-amz-checksum-type needs x-amz-checksum-algorithm"));
        }
        return Ok(None);
    };
    let kind = match asked.map(ChecksumType::as_str) {
        None if algorithm == ChecksumAlgorithm::Crc64Nvme => ChecksumKind::FullObject,
        None => ChecksumKind::Composite,
        Some(word) => {
            word.parse().map_err(|_| s3_error!(InvalidRequest, "unknown x-amz-checksum-type {word}"))?
        }
    };
    let sha = matches!(algorithm, ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256);
    if (sha && kind == ChecksumKind::FullObject)
        || (algorithm == ChecksumAlgorithm::Crc64Nvme && kind == ChecksumKind::Composite)
    {
        return Err(s3_error!(
            InvalidRequest,
            "The {} checksum type cannot be used with the {} checksum algorithm.",
            kind.as_str().to_lowercase(),
            algorithm.as_str().to_lowercase()
        ));
    }
    Ok(Some((algorithm, kind)))
}

/// The header (and trailer) name of `algorithm`'s checksum.
pub(crate) fn header_name(algorithm: ChecksumAlgorithm) -> String {
    format!("x-amz-checksum-{}", algorithm.as_str().to_ascii_lowercase())
}

/// A hasher of one algorithm, shared with the reader that feeds it.
pub(crate) type SharedHasher = Arc<Mutex<ChecksumHasher>>;

pub(crate) fn hasher(algorithm: ChecksumAlgorithm) -> SharedHasher {
    let mut hasher = ChecksumHasher::default();
    match algorithm {
        ChecksumAlgorithm::Crc32 => hasher.crc32 = Some(Crc32::new()),
        ChecksumAlgorithm::Crc32c => hasher.crc32c = Some(Crc32c::new()),
        ChecksumAlgorithm::Crc64Nvme => hasher.crc64nvme = Some(Crc64Nvme::new()),
        ChecksumAlgorithm::Sha1 => hasher.sha1 = Some(Sha1::new()),
        ChecksumAlgorithm::Sha256 => hasher.sha256 = Some(Sha256::new()),
    }
    Arc::new(Mutex::new(hasher))
}

/// What `hasher` computed, base64.
pub(crate) fn finish(hasher: &SharedHasher, algorithm: ChecksumAlgorithm) -> Option<String> {
    let hasher = std::mem::take(&mut *hasher.lock().ok()?);
    let mut sums = hasher.finalize();
    checksum_fields!(sums).into_iter().find(|(of, _)| *of == algorithm).and_then(|(_, value)| value)
}

/// A reader that feeds what it reads to a hasher.
pub(crate) struct Hashing<R> {
    pub inner: R,
    pub hasher: SharedHasher,
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled
            && let Ok(mut hasher) = self.hasher.lock()
        {
            hasher.update(&buf.filled()[before..]);
        }
        polled
    }
}

/// `400 BadDigest` for a checksum of `algorithm` that did not match the body.
pub(crate) fn bad_digest(algorithm: ChecksumAlgorithm) -> s3s::S3Error {
    s3_error!(BadDigest, "The {} you specified did not match the calculated checksum.", algorithm.as_str())
}

/// A multipart upload's checksum, from its `parts` (each with its checksum in `algorithm`):
/// the checksum of the parts' checksums with `-N` (composite), or the parts' CRCs combined
/// into the whole object's (full-object).
pub(crate) fn of_upload(
    (algorithm, kind): (ChecksumAlgorithm, ChecksumKind),
    parts: &[&PartRow],
) -> S3Result<StoredChecksum> {
    let decoded = parts
        .iter()
        .map(|part| {
            let value = part.checksum.as_deref().unwrap_or_default();
            base64::engine::general_purpose::STANDARD.decode(value).ok().filter(|bytes| !bytes.is_empty())
        })
        .collect::<Option<Vec<Vec<u8>>>>()
        .ok_or_else(|| s3_error!(InvalidPart, "a part was uploaded without the upload's checksum"))?;
    let value = match kind {
        ChecksumKind::Composite => {
            let hasher = hasher(algorithm);
            if let Ok(mut hasher) = hasher.lock() {
                decoded.iter().for_each(|sum| hasher.update(sum));
            }
            let sum = finish(&hasher, algorithm).unwrap_or_default();
            format!("{sum}-{}", parts.len())
        }
        ChecksumKind::FullObject => {
            let crc = combine_crcs(algorithm, parts.iter().map(|part| part.size as u64).zip(decoded))
                .ok_or_else(|| s3_error!(InvalidRequest, "only CRCs combine into a full-object checksum"))?;
            base64::engine::general_purpose::STANDARD.encode(crc)
        }
    };
    Ok(StoredChecksum { algorithm, kind, value })
}

/// The CRC of the concatenation of pieces, each given as its size and its CRC (big-endian
/// bytes), in `algorithm`; `None` for an algorithm that is no CRC.
fn combine_crcs(
    algorithm: ChecksumAlgorithm,
    pieces: impl Iterator<Item = (u64, Vec<u8>)>,
) -> Option<Vec<u8>> {
    let (crc, width) = match algorithm {
        ChecksumAlgorithm::Crc32 => (crc_fast::CrcAlgorithm::Crc32IsoHdlc, 4),
        ChecksumAlgorithm::Crc32c => (crc_fast::CrcAlgorithm::Crc32Iscsi, 4),
        ChecksumAlgorithm::Crc64Nvme => (crc_fast::CrcAlgorithm::Crc64Nvme, 8),
        ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256 => return None,
    };
    let mut combined: Option<u64> = None;
    for (size, sum) in pieces {
        let value = sum.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
        combined = Some(match combined {
            None => value,
            Some(before) => crc_fast::checksum_combine(crc, before, value, size),
        });
    }
    let combined = combined.unwrap_or(0);
    Some(combined.to_be_bytes()[8 - width..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_of(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> String {
        let hasher = hasher(algorithm);
        hasher.lock().expect("lock").update(bytes);
        finish(&hasher, algorithm).expect("sum")
    }

    fn part(number: i32, bytes: &[u8], algorithm: ChecksumAlgorithm) -> PartRow {
        PartRow {
            number,
            object: crate::store::ObjectId(number.into()),
            etag: String::new(),
            size: bytes.len() as i64,
            last_modified: time::OffsetDateTime::UNIX_EPOCH,
            checksum: Some(sum_of(algorithm, bytes)),
        }
    }

    #[test]
    fn known_checksums_of_hello() {
        assert_eq!(sum_of(ChecksumAlgorithm::Crc32, b"hello"), "NhCmhg==");
        assert_eq!(sum_of(ChecksumAlgorithm::Sha256, b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    #[test]
    fn full_object_crcs_combine_to_the_whole_body() {
        let (one, two) = (b"hello, ".as_slice(), b"multipart world".as_slice());
        for algorithm in [ChecksumAlgorithm::Crc32, ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Crc64Nvme] {
            let parts = [part(1, one, algorithm), part(2, two, algorithm)];
            let refs: Vec<&PartRow> = parts.iter().collect();
            let whole = of_upload((algorithm, ChecksumKind::FullObject), &refs).expect("combine");
            assert_eq!(whole.value, sum_of(algorithm, &[one, two].concat()), "{algorithm}");
        }
    }

    #[test]
    fn a_composite_checksum_is_the_checksum_of_the_part_checksums() {
        let algorithm = ChecksumAlgorithm::Sha256;
        let parts = [part(1, b"a", algorithm), part(2, b"b", algorithm)];
        let refs: Vec<&PartRow> = parts.iter().collect();
        let composite = of_upload((algorithm, ChecksumKind::Composite), &refs).expect("composite");
        let engine = base64::engine::general_purpose::STANDARD;
        let raw: Vec<u8> = parts
            .iter()
            .flat_map(|part| engine.decode(part.checksum.as_deref().expect("sum")).expect("base64"))
            .collect();
        assert_eq!(composite.value, format!("{}-2", sum_of(algorithm, &raw)));
    }

    #[test]
    fn upload_kinds_follow_aws() {
        let kind = |algorithm, asked: Option<&str>| {
            let asked = asked.map(|word| ChecksumType::from(word.to_owned()));
            upload_kind(Some(algorithm), asked.as_ref()).map(|found| found.map(|(_, kind)| kind))
        };
        assert_eq!(kind(ChecksumAlgorithm::Crc32, None).ok(), Some(Some(ChecksumKind::Composite)));
        assert_eq!(kind(ChecksumAlgorithm::Crc64Nvme, None).ok(), Some(Some(ChecksumKind::FullObject)));
        assert!(kind(ChecksumAlgorithm::Sha1, Some("FULL_OBJECT")).is_err());
        assert!(kind(ChecksumAlgorithm::Crc64Nvme, Some("COMPOSITE")).is_err());
        assert_eq!(
            kind(ChecksumAlgorithm::Crc32c, Some("FULL_OBJECT")).ok(),
            Some(Some(ChecksumKind::FullObject))
        );
    }
}
