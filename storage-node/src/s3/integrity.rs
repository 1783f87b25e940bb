//! Integrity of upload bodies: what a client claims about a body it sends (`Content-MD5`, an
//! additional checksum in a header or an aws-chunked trailer), parsed before the body is read
//! and checked against what was computed while the body streamed into the chunk store, before
//! anything is committed. A claim that does not hold leaves nothing
//! stored: the ingested chunks are abandoned (unpinned, and GC reclaims what only they used).

use base64::Engine;
use s3s::{S3Result, TrailingHeaders, s3_error};

use super::SiloS3;
use super::checksum::{self, Hashing};
use crate::TenantId;
use crate::model::object::{ChecksumAlgorithm, WriteCondition};
use crate::store::{Ingested, PutOptions};

/// A request body on its way into the chunk store, with what its client claims about it.
pub(crate) struct Incoming {
    pub reader: Box<dyn tokio::io::AsyncRead + Unpin + Send + 'static>,
    /// The announced length (Content-Length, or the decoded length of an aws-chunked body).
    pub length: Option<i64>,
    pub claims: Claims,
}

impl Incoming {
    /// A body with no length announced and no claims.
    #[cfg(test)]
    pub(crate) fn plain(reader: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Incoming {
        Incoming { reader: Box::new(reader), length: None, claims: Claims::default() }
    }
}

/// What a client claims about a body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims {
    /// The `Content-MD5` header, decoded.
    pub md5: Option<[u8; 16]>,
    /// The additional checksum to compute, and the value claimed for it, if any.
    pub checksum: Option<ChecksumClaim>,
    /// What the key must hold for the body to be bound to it (PutObject's `If-Match` or
    /// `If-None-Match`).
    pub condition: WriteCondition,
}

/// An additional checksum to compute over a body, and where its claimed value is.
#[derive(Debug, Clone)]
pub(crate) struct ChecksumClaim {
    pub algorithm: ChecksumAlgorithm,
    /// Claimed in a header.
    pub value: Option<String>,
    /// Or in the aws-chunked trailer, read once the body is.
    pub trailer: Option<TrailingHeaders>,
    /// `x-amz-trailer` announced the value: a body without it is refused, not stored unchecked.
    pub announced: bool,
}

impl ChecksumClaim {
    /// The checksum of a request: claimed in a header (`fields`), named by `algorithm` or
    /// announced by `x-amz-trailer` in `headers` (an aws-chunked trailer then carries the
    /// value), or else `default`, computed and stored with no claim to check (AWS computes a
    /// CRC64NVME for every PutObject that has none).
    pub(crate) fn of_request(
        fields: [(ChecksumAlgorithm, Option<String>); 5],
        algorithm: Option<&s3s::dto::ChecksumAlgorithm>,
        headers: &http::HeaderMap,
        trailer: Option<TrailingHeaders>,
        default: Option<ChecksumAlgorithm>,
    ) -> S3Result<Option<ChecksumClaim>> {
        let header = checksum::claimed_header(fields)?;
        let announced = checksum::announced_in_trailer(headers)?;
        let named = checksum::algorithm_of(algorithm)?;
        if let (Some(named), Some(announced)) = (named, announced)
            && named != announced
        {
            return Err(s3_error!(
                InvalidRequest,
                "x-amz-trailer announces another checksum than x-amz-sdk-checksum-algorithm"
            ));
        }
        let named = named.or(announced);
        if let (Some((claimed, _)), Some(named)) = (&header, named)
            && *claimed != named
        {
            return Err(s3_error!(InvalidRequest, "x-amz-sdk-checksum-algorithm names another checksum"));
        }
        let algorithm = header.as_ref().map(|(algorithm, _)| *algorithm).or(named).or(default);
        Ok(algorithm.map(|algorithm| ChecksumClaim {
            algorithm,
            announced: announced.is_some() && header.is_none(),
            value: header.map(|(_, value)| value),
            trailer,
        }))
    }

    /// The value claimed, from the header or the trailer.
    fn claimed(&self) -> Option<String> {
        self.value.clone().or_else(|| {
            let name = checksum::header_name(self.algorithm);
            let trailer = self.trailer.as_ref()?;
            trailer
                .read(|headers| headers.get(&name).and_then(|value| value.to_str().ok()).map(str::to_owned))?
        })
    }
}

impl Claims {
    /// The claims of a request with this `Content-MD5` header and additional checksum. An
    /// empty `Content-MD5`, or one that is not the base64 of 16 bytes, is `400 InvalidDigest`,
    /// as on AWS.
    pub(crate) fn new(content_md5: Option<&str>, checksum: Option<ChecksumClaim>) -> S3Result<Claims> {
        let md5 = match content_md5 {
            None => None,
            Some(value) => Some(decode_md5(value).ok_or_else(|| {
                s3_error!(InvalidDigest, "the Content-MD5 you specified is not the base64 of an MD5")
            })?),
        };
        Ok(Claims { md5, checksum, condition: WriteCondition::Any })
    }

    /// Checks the claims against the body as ingested (and its checksum as computed): a
    /// mismatch is `400 BadDigest`.
    fn check(&self, ingested: &Ingested, computed: Option<&str>) -> S3Result<()> {
        if let Some(claimed) = self.md5
            && ingested.md5() != Some(claimed)
        {
            return Err(s3_error!(
                BadDigest,
                "the Content-MD5 you specified did not match what was received"
            ));
        }
        if let Some(claim) = &self.checksum {
            match claim.claimed() {
                Some(claimed) if Some(claimed.as_str()) != computed => {
                    return Err(checksum::bad_digest(claim.algorithm));
                }
                None if claim.announced => {
                    return Err(s3_error!(
                        InvalidRequest,
                        "x-amz-trailer announced {} but the body's trailer did not carry it",
                        checksum::header_name(claim.algorithm)
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A body ingested and checked: its chunks (to commit) and its additional checksum, if one
/// was computed.
pub(crate) struct Checked {
    pub ingested: Ingested,
    pub checksum: Option<(ChecksumAlgorithm, String)>,
}

/// Joins repeated `Content-Encoding` headers into one, as HTTP allows and SigV4 signs them (the
/// values comma-joined): the AWS SDKs send `aws-chunked` as a header of its own next to the
/// object's coding (gzip, say), and s3s refuses a repeated header.
pub(crate) fn join_content_encodings(headers: &mut http::HeaderMap) {
    let name = http::header::CONTENT_ENCODING;
    if headers.get_all(&name).iter().nth(1).is_none() {
        return;
    }
    let values: Vec<&str> =
        headers.get_all(&name).iter().filter_map(|value| value.to_str().ok()).map(str::trim).collect();
    if let Ok(joined) = http::HeaderValue::from_str(&values.join(",")) {
        headers.insert(name, joined);
    }
}

fn decode_md5(value: &str) -> Option<[u8; 16]> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    bytes.try_into().ok()
}

impl SiloS3 {
    /// Streams `incoming` into the chunk store (computing its MD5 and additional checksum)
    /// and checks its claims. On a failed claim the ingested chunks are abandoned and nothing
    /// is committed.
    pub(crate) async fn ingest_checked(&self, tenant: TenantId, incoming: Incoming) -> S3Result<Checked> {
        let options = PutOptions { expected_len: incoming.length.map(|len| len.max(0) as u64), md5: true };
        let algorithm = incoming.claims.checksum.as_ref().map(|claim| claim.algorithm);
        let (ingested, computed) = match algorithm {
            Some(algorithm) => {
                let hasher = checksum::hasher(algorithm);
                let reader = Hashing { inner: incoming.reader, hasher: hasher.clone() };
                let ingested = self.store.ingest(tenant, reader, options).await?;
                (ingested, checksum::finish(&hasher, algorithm).map(|sum| (algorithm, sum)))
            }
            None => (self.store.ingest(tenant, incoming.reader, options).await?, None),
        };
        if let Err(err) = incoming.claims.check(&ingested, computed.as_ref().map(|(_, sum)| sum.as_str())) {
            self.store.abandon(ingested).await;
            return Err(err);
        }
        Ok(Checked { ingested, checksum: computed })
    }
}

#[cfg(test)]
mod tests {
    use super::{ChecksumAlgorithm, ChecksumClaim, Claims};

    fn no_fields() -> [(ChecksumAlgorithm, Option<String>); 5] {
        [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64Nvme,
            ChecksumAlgorithm::Sha1,
            ChecksumAlgorithm::Sha256,
        ]
        .map(|algorithm| (algorithm, None))
    }

    #[test]
    fn a_checksum_announced_in_x_amz_trailer_is_the_one_checked_and_must_come() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-amz-trailer", http::HeaderValue::from_static("x-amz-checksum-crc32"));
        let default = Some(ChecksumAlgorithm::Crc64Nvme);
        let claim = ChecksumClaim::of_request(no_fields(), None, &headers, None, default)
            .expect("a claim")
            .expect("announced");
        assert_eq!((claim.algorithm, claim.announced), (ChecksumAlgorithm::Crc32, true));
        assert_eq!(claim.claimed(), None, "no trailer came: the check refuses the body");
        // Without the header, the default is computed and nothing is claimed.
        let plain = ChecksumClaim::of_request(no_fields(), None, &http::HeaderMap::new(), None, default)
            .expect("a claim")
            .expect("the default");
        assert_eq!((plain.algorithm, plain.announced), (ChecksumAlgorithm::Crc64Nvme, false));
        headers.insert("x-amz-trailer", http::HeaderValue::from_static("x-amz-checksum-md9"));
        assert!(ChecksumClaim::of_request(no_fields(), None, &headers, None, default).is_err());
    }

    #[test]
    fn repeated_content_encodings_are_joined_in_order() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
        super::join_content_encodings(&mut headers);
        assert_eq!(headers[http::header::CONTENT_ENCODING], "gzip");
        headers.append(http::header::CONTENT_ENCODING, http::HeaderValue::from_static(" aws-chunked"));
        super::join_content_encodings(&mut headers);
        let all: Vec<_> = headers.get_all(http::header::CONTENT_ENCODING).iter().collect();
        assert_eq!(all, ["gzip,aws-chunked"]);
    }

    #[test]
    fn a_content_md5_is_the_base64_of_sixteen_bytes() {
        // MD5("") in base64.
        let claims = Claims::new(Some("1B2M2Y8AsgTpgAmY7PhCfg=="), None).expect("valid");
        assert_eq!(claims.md5.map(hex::encode).as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(Claims::new(None, None).expect("none").md5, None);
    }

    #[test]
    fn an_empty_or_malformed_content_md5_is_an_invalid_digest() {
        for value in ["", " ", "not base64!", "AAAA", "1B2M2Y8AsgTpgAmY7PhCfgAA"] {
            let err = Claims::new(Some(value), None).expect_err(value);
            assert_eq!(err.code().as_str(), "InvalidDigest", "{value:?}");
        }
    }
}
