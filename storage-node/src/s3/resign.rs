//! Re-signing a SigV4 header-signed request whose credential scope names a legacy region
//! (`US` for us-east-1, `EU` for eu-west-1), so that s3s accepts it.
//!
//! Why this exists: s3s 0.14 checks the signature over the credential scope exactly as the
//! client sent it, and only afterwards (in `ops::prepare`) parses the scope's region with
//! `s3s::region::Region::new`, which takes `[a-z0-9-]+` alone. A request signed for `US`
//! (s3cmd's `bucket_location = US`) passes the signature check and is refused right after with
//! "invalid credential region", and s3s has no hook between the two steps. Rewriting the scope
//! to `us-east-1` before s3s sees it would break the signature, which covers the scope; s3s's
//! own SigV4 functions are private; and a patched copy of s3s is a fork to keep up.
//!
//! So for these requests only, Silo checks the client's signature itself, over the canonical
//! request built the way s3s 0.14 builds it, and when it holds, signs that same canonical
//! request again for the equivalent region with the same secret. s3s then checks the new
//! signature over its own canonical request as usual. It passes only if both canonical
//! requests (and dates) are the same bytes, which the client's signature covered: re-signing
//! cannot make s3s accept anything the client did not sign, and a difference between the two
//! builders can only end in a refusal. Streaming (`aws-chunked`) bodies carry a signature per
//! chunk, chained from the header's and scoped like it; they are not re-signed (the caller
//! answers them as signed for another region, with the region to use).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderAuth {
    /// `AWS4-HMAC-SHA256`, the only one re-signed.
    pub algorithm: String,
    pub scope: Scope,
    /// `SignedHeaders=` as sent (`host;x-amz-content-sha256;x-amz-date`).
    pub signed_headers: String,
    pub signature: String,
}

/// A credential scope: `<key>/<yyyymmdd>/<region>/<service>/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

impl Scope {
    /// Parses a credential (`Credential=` of the header, `X-Amz-Credential` of a presigned URL).
    pub fn parse(credential: &str) -> Option<Scope> {
        let mut parts = credential.split('/');
        let scope = Scope {
            access_key: parts.next()?.to_string(),
            date: parts.next()?.to_string(),
            region: parts.next()?.to_string(),
            service: parts.next()?.to_string(),
        };
        (parts.next()? == "aws4_request" && parts.next().is_none()).then_some(scope)
    }
}

impl HeaderAuth {
    /// Parses a SigV4 `Authorization` header; `None` for anything else (SigV2 included). The
    /// parts are found wherever they are, more leniently than s3s parses them, so that no
    /// scope s3s would read escapes the region check.
    pub fn parse(value: &str) -> Option<HeaderAuth> {
        if value.starts_with("AWS ") {
            return None;
        }
        let mut words = value.split(|c: char| c == ',' || c.is_ascii_whitespace()).filter(|w| !w.is_empty());
        let algorithm = words.next()?.to_string();
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for word in words {
            if let Some(value) = word.strip_prefix("Credential=") {
                credential = Some(value);
            } else if let Some(value) = word.strip_prefix("SignedHeaders=") {
                signed_headers = Some(value);
            } else if let Some(value) = word.strip_prefix("Signature=") {
                signature = Some(value);
            }
        }
        Some(HeaderAuth {
            algorithm,
            scope: Scope::parse(credential?)?,
            signed_headers: signed_headers.unwrap_or_default().to_string(),
            signature: signature.unwrap_or_default().to_string(),
        })
    }

    /// The header again, with `region` in the scope and `signature`.
    fn render(&self, region: &str, signature: &str) -> String {
        let Scope { access_key, date, service, .. } = &self.scope;
        format!(
            "AWS4-HMAC-SHA256 Credential={access_key}/{date}/{region}/{service}/aws4_request, \
             SignedHeaders={}, Signature={signature}",
            self.signed_headers
        )
    }
}

/// Re-signs `parts` for `region` when `auth` (its header, signed for a legacy name of `region`)
/// holds under `secret`, replacing its `Authorization` header; returns whether it did. When the
/// signature does not hold, the request is left as it was, for s3s to refuse.
pub(crate) fn resign(
    parts: &mut http::request::Parts,
    auth: &HeaderAuth,
    secret: &str,
    region: &str,
) -> bool {
    if auth.algorithm != "AWS4-HMAC-SHA256" {
        return false;
    }
    let Some(amz_date) = header(parts, "x-amz-date") else { return false };
    let Some(payload) = header(parts, "x-amz-content-sha256") else { return false };
    let Ok(expected) = hex::decode(&auth.signature) else { return false };
    let scope = &auth.scope;
    // s3s tries the re-encoded decoded path first, then the raw one; so does this.
    for raw_path in [false, true] {
        let Some(canonical) = canonical_request(parts, &auth.signed_headers, payload, raw_path) else {
            continue;
        };
        let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
        let mac = |region: &str| {
            let string_to_sign = format!(
                "AWS4-HMAC-SHA256\n{amz_date}\n{}/{region}/{}/aws4_request\n{digest}",
                scope.date, scope.service
            );
            let key = signing_key(secret, &scope.date, region, &scope.service);
            let mut mac = hmac(&key);
            mac.update(string_to_sign.as_bytes());
            mac
        };
        if mac(&scope.region).verify_slice(&expected).is_ok() {
            let signature = hex::encode(mac(region).finalize().into_bytes());
            let Ok(value) = http::HeaderValue::from_str(&auth.render(region, &signature)) else {
                return false;
            };
            parts.headers.insert(http::header::AUTHORIZATION, value);
            return true;
        }
    }
    false
}

fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|value| value.to_str().ok())
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC keys have any length"))
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        let mut mac = hmac(&key);
        mac.update(part.as_bytes());
        key = mac.finalize().into_bytes().to_vec();
    }
    key
}

/// The canonical request as s3s 0.14 builds it for header auth (`sig_v4::methods`): the
/// query decoded as a form and sorted by name, the signed headers that are present with their
/// values trimmed and inner whitespace collapsed, and the payload line as the client sent it.
fn canonical_request(
    parts: &http::request::Parts,
    signed_headers: &str,
    payload: &str,
    raw_path: bool,
) -> Option<String> {
    let mut out = String::with_capacity(256);
    out.push_str(parts.method.as_str());
    out.push('\n');
    let path = parts.uri.path();
    if raw_path {
        out.push_str(path);
    } else {
        let decoded = String::from_utf8(percent_decode(path, false)).ok()?;
        uri_encode(&mut out, &decoded, false);
    }
    out.push('\n');

    let mut query: Vec<(String, String)> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text| String::from_utf8_lossy(&percent_decode(text, true)).into_owned();
            (decode(name), decode(value))
        })
        .collect();
    query.sort_by(|a, b| a.0.cmp(&b.0));
    let mut query: Vec<(String, String)> = query
        .into_iter()
        .map(|(name, value)| {
            let (mut n, mut v) = (String::new(), String::new());
            uri_encode(&mut n, &name, true);
            uri_encode(&mut v, &value, true);
            (n, v)
        })
        .collect();
    query.sort_by(|a, b| a.0.cmp(&b.0));
    let query: Vec<String> = query.into_iter().map(|(name, value)| format!("{name}={value}")).collect();
    out.push_str(&query.join("&"));
    out.push('\n');

    let mut names: Vec<&str> = signed_headers.split(';').filter(|name| *name != "authorization").collect();
    names.sort_unstable();
    let mut present = Vec::new();
    for name in names {
        let values: Vec<&str> =
            parts.headers.get_all(name).iter().filter_map(|value| value.to_str().ok()).collect();
        if values.is_empty() {
            continue;
        }
        let values: Vec<String> =
            values.iter().map(|value| value.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
        if present.last() != Some(&name) {
            present.push(name);
        }
    }
    out.push('\n');
    out.push_str(&present.join(";"));
    out.push('\n');
    out.push_str(payload);
    Some(out)
}

/// SigV4's URI encoding: everything but unreserved characters (and `/` unless `encode_slash`).
fn uri_encode(out: &mut String, input: &str, encode_slash: bool) {
    for byte in input.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'~' | b'.' => out.push(byte as char),
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

/// Percent-decodes `text`; `+` is a space when `plus_is_space` (form decoding, as for queries).
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let digit = |b: u8| (b as char).to_digit(16);
                if let (Some(high), Some(low)) = (digit(bytes[i + 1]), digit(bytes[i + 2])) {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_parses_into_its_scope() {
        let auth = HeaderAuth::parse(
            "AWS4-HMAC-SHA256 Credential=AK/20261130/US/s3/aws4_request,SignedHeaders=host;x-amz-date,Signature=ab",
        )
        .unwrap();
        assert_eq!(auth.scope.region, "US");
        assert_eq!(auth.signed_headers, "host;x-amz-date");
        assert_eq!(auth.signature, "ab");
        assert!(HeaderAuth::parse("AWS AK:sig").is_none());
        let odd = HeaderAuth::parse("AWS4-X  Credential=AK/20261130/eu-west-1/s3/aws4_request").unwrap();
        assert_eq!((odd.algorithm.as_str(), odd.scope.region.as_str()), ("AWS4-X", "eu-west-1"));
        assert!(Scope::parse("AK/20261130/US/s3/aws4").is_none());
    }

    #[test]
    fn percent_decoding_handles_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb+c%zz%4", true), b"a/b c%zz%4");
        assert_eq!(percent_decode("a+b%20", false), b"a+b ");
    }
}
