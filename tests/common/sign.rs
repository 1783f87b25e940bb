//! Requests signed by hand, for the ones no SDK makes: SigV2 header auth with a chosen `Date`, and
//! SigV4 presigned URLs with a chosen lifetime.

use std::time::{Duration, SystemTime};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

fn hmac_sha1(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("hmac key");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The `Date` and `Authorization` headers of a SigV2-signed `GET path` sent at `date`.
pub fn sigv2_get(access_key: &str, secret: &str, path: &str, date: SystemTime) -> (String, String) {
    sigv2(access_key, secret, "GET", path, date)
}

/// The `Date` and `Authorization` headers of a SigV2-signed `method path` without Content-MD5
/// or Content-Type, sent at `date`.
pub fn sigv2(access_key: &str, secret: &str, method: &str, path: &str, date: SystemTime) -> (String, String) {
    let date = httpdate::fmt_http_date(date);
    let string_to_sign = format!("{method}\n\n\n{date}\n{path}");
    let signature =
        base64::engine::general_purpose::STANDARD.encode(hmac_sha1(secret.as_bytes(), &string_to_sign));
    (date, format!("AWS {access_key}:{signature}"))
}

/// A SigV4 presigned URL for `GET path` (path-style, plain ASCII key) on `host`, valid for
/// `expires`; no SDK signs one longer than seven days.
pub fn presign_get(host: &str, access_key: &str, secret: &str, path: &str, expires: Duration) -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace(['-', ':'], "");
    let day = &now[..8];
    let scope = format!("{day}/us-east-1/s3/aws4_request");
    let credential = format!("{access_key}/{scope}").replace('/', "%2F");
    let query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}&X-Amz-Date={now}&X-Amz-Expires={}&X-Amz-SignedHeaders=host",
        expires.as_secs()
    );
    let canonical = format!("GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{now}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), day);
    for part in ["us-east-1", "s3", "aws4_request"] {
        key = hmac_sha256(&key, part);
    }
    let signature = hex::encode(hmac_sha256(&key, &string_to_sign));
    format!("http://{host}{path}?{query}&X-Amz-Signature={signature}")
}
