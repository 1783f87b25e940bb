//! SigV2 signatures checked in constant time, before `s3s` sees the request.
//!
//! `s3s` 0.14 compares SigV4 signatures in constant time but SigV2 ones (header auth and
//! presigned URLs) with `!=`, which returns at the first differing byte: the time of a refusal
//! tells a forger how much of a guessed signature was right. The crate keeps its SigV2 code
//! private, so Silo checks the same string-to-sign here (a copy of `s3s::sig_v2`'s, path-style
//! only, as Silo serves) with [`subtle`], and refuses a mismatch itself. `s3s` then compares only
//! signatures that already matched, where its early exit reveals nothing.
//!
//! Requests this cannot judge (no key, an unknown key, a malformed header) are handed on: `s3s`
//! refuses them with its own errors.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, Method, StatusCode, Uri, header};
use subtle::ConstantTimeEq;

use super::guard::Refusal;
use crate::catalog::key_cache::KeyCache;
use crate::store::ChunkStore;

/// Query parameters in the canonical resource, sorted (as `s3s` and AWS list them).
const INCLUDED_QUERY: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "defaultObjectAcl",
    "delete",
    "inventory",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "partNumber",
    "policy",
    "replication",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "select",
    "select-type",
    "storageClass",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// Where a SigV2 signature is.
enum Mode {
    Header,
    Presigned,
}

/// Refuses a SigV2-signed request whose signature does not match, comparing in constant time.
///
/// # Errors
/// `403 SignatureDoesNotMatch` for a wrong signature.
pub async fn verify(
    store: &ChunkStore,
    keys: &KeyCache,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    // Most requests are SigV4 or anonymous: leave them before parsing anything.
    let sigv2_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|auth| auth.to_str().ok())
        .is_some_and(|auth| auth.starts_with("AWS "));
    let maybe_presigned = uri.query().is_some_and(|q| q.contains("Signature="));
    if !sigv2_header && !maybe_presigned {
        return Ok(());
    }
    let query: Vec<(String, String)> = match uri.query() {
        Some(q) => match serde_urlencoded::from_str::<Vec<(String, String)>>(q) {
            Ok(mut pairs) => {
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                pairs
            }
            Err(_) => return Ok(()),
        },
        None => Vec::new(),
    };
    let (mode, access_key, presented) = if query.iter().any(|(k, _)| k == "Signature") {
        let (Some(key), Some(signature)) = (unique(&query, "AWSAccessKeyId"), unique(&query, "Signature"))
        else {
            return Ok(());
        };
        let Ok(signature) = urlencoding::decode(signature) else {
            return Ok(());
        };
        (Mode::Presigned, key.to_string(), signature.into_owned())
    } else {
        let auth = headers.get_all(header::AUTHORIZATION).iter().collect::<Vec<_>>();
        let [auth] = auth.as_slice() else {
            return Ok(());
        };
        let Some((key, signature)) =
            auth.to_str().ok().and_then(|a| a.strip_prefix("AWS ")).and_then(|a| a.split_once(':'))
        else {
            return Ok(());
        };
        (Mode::Header, key.to_string(), signature.to_string())
    };
    let secret = match keys.lookup(store.catalog(), store.server_secret(), &access_key).await {
        Ok(Some(key)) => key.secret,
        _ => return Ok(()),
    };
    let string_to_sign = string_to_sign(&mode, method, uri.path(), &query, headers);
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret.expose().as_bytes()) else {
        return Ok(());
    };
    mac.update(string_to_sign.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        Ok(())
    } else {
        Err(Refusal {
            status: StatusCode::FORBIDDEN,
            code: "SignatureDoesNotMatch",
            message: "The request signature we calculated does not match the signature you provided.".into(),
        })
    }
}

/// The value of `name` if it occurs once.
fn unique<'a>(pairs: &'a [(impl AsRef<str>, impl AsRef<str>)], name: &str) -> Option<&'a str> {
    let mut found = pairs.iter().filter(|(k, _)| k.as_ref() == name);
    let first = found.next()?;
    found.next().is_none().then(|| first.1.as_ref())
}

/// `s3s`'s SigV2 string-to-sign: method, Content-MD5, Content-Type, Date (or Expires), the
/// `x-amz-*` headers, and the resource with its sub-resources.
fn string_to_sign(
    mode: &Mode,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> String {
    let mut sorted: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(name, value)| std::str::from_utf8(value.as_bytes()).ok().map(|v| (name.as_str(), v)))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let header = |name: &str| unique(&sorted, name).unwrap_or_default();
    let mut out = format!("{}\n{}\n{}\n", method.as_str(), header("content-md5"), header("content-type"));
    match mode {
        // "If you include the x-amz-date header, use the empty string for the Date".
        Mode::Header if unique(&sorted, "x-amz-date").is_some() => {}
        Mode::Header => out.push_str(header("date")),
        Mode::Presigned => out.push_str(unique(query, "Expires").unwrap_or_default()),
    }
    out.push('\n');
    let mut last = "";
    for &(name, _) in &sorted {
        if !name.starts_with("x-amz-") || name == last {
            continue;
        }
        last = name;
        let values: Vec<&str> = sorted.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.trim()).collect();
        out.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    out.push_str(path);
    let mut separator = '?';
    for name in INCLUDED_QUERY {
        if let Some(value) = unique(query, name) {
            out.push(separator);
            separator = '&';
            out.push_str(name);
            if !value.is_empty() {
                out.push('=');
                out.push_str(value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example (path-style here): `GET /awsexamplebucket1/photos/puppy.jpg`.
    #[test]
    fn the_string_to_sign_matches_the_aws_example() {
        let mut headers = HeaderMap::new();
        headers.insert("date", "Tue, 27 Mar 2007 19:36:42 +0000".parse().unwrap());
        headers.insert("x-amz-meta-b", "2".parse().unwrap());
        headers.append("x-amz-meta-a", " 1 ".parse().unwrap());
        headers.append("x-amz-meta-a", "3".parse().unwrap());
        let query = vec![("uploadId".to_string(), "u".to_string()), ("other".to_string(), "x".to_string())];
        let text = string_to_sign(&Mode::Header, &Method::GET, "/bucket/puppy.jpg", &query, &headers);
        assert_eq!(
            text,
            "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\nx-amz-meta-a:1,3\nx-amz-meta-b:2\n/bucket/puppy.jpg?uploadId=u"
        );
    }
}
