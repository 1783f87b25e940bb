//! The checks an S3 request passes before `s3s` sees it, on its head alone (no body read yet).
//!
//! `s3s` 0.14 reads some bodies whole before any access check (browser POST-object uploads up to
//! 5 GiB, XML bodies up to 20 MB), does not bind SigV2 header signatures to a time, and accepts
//! presigned URLs of any lifetime. Rather than patch the crate, Silo refuses these requests here:
//!
//! - `multipart/form-data` POSTs (POST-object uploads) answer 501 until they are implemented as
//!   streams;
//! - every body that is not an object's bytes (PutObject, UploadPart) is capped at
//!   [`MAX_XML_BODY`]: a larger `Content-Length` is refused up front, and the caller caps bodies
//!   without one while it buffers them;
//! - a SigV2 header signature whose `Date` (or `x-amz-date`) is more than [`MAX_SIGV2_SKEW`] off is
//!   refused, so a captured request cannot be replayed later;
//! - presigned URLs live at most [`MAX_PRESIGN_SECS`] (AWS's cap for SigV4), SigV2 ones too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, StatusCode, Uri, header};

/// The largest body buffered in memory: XML requests (and anything else that is not an object's
/// bytes).
pub const MAX_XML_BODY: usize = 1 << 20;
/// The longest lifetime of a presigned URL: seven days, as AWS allows for SigV4.
pub const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;
/// How far a SigV2 request's date may be from the server's clock, as AWS allows.
pub const MAX_SIGV2_SKEW: Duration = Duration::from_secs(15 * 60);

/// Query parameters a streamed upload (PutObject, UploadPart) may carry. Any other parameter
/// makes a PUT an XML call (`?tagging`, `?acl`, ...), whose body is capped.
const STREAMING_QUERY: [&str; 7] =
    ["uploadId", "partNumber", "x-id", "versionId", "AWSAccessKeyId", "Signature", "Expires"];

/// What may be done with a request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPolicy {
    /// An object's bytes: streamed into the chunk store, never buffered whole.
    Stream,
    /// Buffered whole by `s3s`: at most `limit` bytes may be read.
    Buffer { limit: usize },
}

/// A request refused before `s3s` sees it, with the S3 error it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into() }
    }

    /// The refusal for a body over [`MAX_XML_BODY`].
    pub fn body_too_large() -> Self {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "MaxMessageLengthExceeded",
            format!("the request body is over {MAX_XML_BODY} bytes"),
        )
    }

    /// The S3-style XML error document.
    pub fn xml(&self) -> String {
        let message = self.message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{message}</Message></Error>",
            self.code
        )
    }
}

/// Checks the head of an S3 request; says how much of its body may be read.
///
/// # Errors
/// The [`Refusal`] to answer instead of handing the request on.
pub fn precheck(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<BodyPolicy, Refusal> {
    if *method == Method::POST && is_form_data(headers) {
        return Err(Refusal::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "POST object (browser form) uploads are not supported; use PUT or a presigned PUT",
        ));
    }
    // A query that does not parse is refused by s3s (InvalidURI); none of the checks below apply.
    let query: Vec<(String, String)> =
        uri.query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    check_presign_lifetime(param("X-Amz-Expires"), param("Signature").and(param("Expires")), now)?;
    if let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && auth.starts_with("AWS ")
    {
        check_sigv2_date(headers, now)?;
    }
    let streaming = *method == Method::PUT
        && has_object_key(uri.path())
        && query.iter().all(|(k, _)| STREAMING_QUERY.contains(&k.as_str()) || is_amz_param(k));
    if streaming {
        return Ok(BodyPolicy::Stream);
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if length.is_some_and(|length| length > MAX_XML_BODY as u64) {
        return Err(Refusal::body_too_large());
    }
    Ok(BodyPolicy::Buffer { limit: MAX_XML_BODY })
}

fn is_form_data(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_TYPE).iter().any(|value| {
        let value = String::from_utf8_lossy(value.as_bytes());
        value.split(';').next().is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"))
    })
}

fn is_amz_param(name: &str) -> bool {
    name.get(..6).is_some_and(|prefix| prefix.eq_ignore_ascii_case("x-amz-"))
}

/// Whether a path-style path names an object (`/bucket/key`), not a bucket or the root.
fn has_object_key(path: &str) -> bool {
    path.trim_start_matches('/').split_once('/').is_some_and(|(_, key)| !key.is_empty())
}

/// SigV4 `X-Amz-Expires` at least a second and at most seven days (AWS answers 400
/// AuthorizationQueryParametersError; a negative value is no number and gets it too);
/// SigV2 `Expires` (a Unix time) at most seven days ahead.
fn check_presign_lifetime(
    v4_expires: Option<&str>,
    v2_expires: Option<&str>,
    now: SystemTime,
) -> Result<(), Refusal> {
    let refuse = |message: &str| {
        Err(Refusal::new(StatusCode::BAD_REQUEST, "AuthorizationQueryParametersError", message))
    };
    if let Some(expires) = v4_expires {
        match expires.parse::<u64>() {
            Ok(0) => return refuse("X-Amz-Expires must be non-negative and at least one second"),
            Ok(secs) if secs <= MAX_PRESIGN_SECS => {}
            Ok(_) => {
                return refuse(
                    "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds",
                );
            }
            Err(_) => return refuse("X-Amz-Expires should be a number"),
        }
    }
    if let Some(expires) = v2_expires {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        match expires.parse::<u64>() {
            Ok(at) if at <= now.saturating_add(MAX_PRESIGN_SECS) => {}
            Ok(_) => return refuse("Expires must be at most a week (604800 seconds) from now"),
            Err(_) => return refuse("Expires should be a Unix time in seconds"),
        }
    }
    Ok(())
}

/// A SigV2 header signature signs its `Date` (or `x-amz-date`); one more than
/// [`MAX_SIGV2_SKEW`] away from now is a replay or a broken clock.
fn check_sigv2_date(headers: &HeaderMap, now: SystemTime) -> Result<(), Refusal> {
    let date = headers.get("x-amz-date").or_else(|| headers.get(header::DATE)).and_then(|v| v.to_str().ok());
    let Some(date) = date else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "AWS authentication requires a valid Date or x-amz-date header",
        ));
    };
    let Some(at) = parse_date(date) else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "AWS authentication requires a valid Date or x-amz-date header",
        ));
    };
    let skew = now.duration_since(at).or_else(|err| Ok::<_, ()>(err.duration())).unwrap_or_default();
    if skew > MAX_SIGV2_SKEW {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        ));
    }
    Ok(())
}

/// An HTTP date (RFC 1123 and its obsolete forms), an RFC 2822 date with a numeric zone
/// (`+0000`, as s3cmd and AWS's own examples send), or an ISO 8601 basic time
/// (`20260101T000000Z`).
fn parse_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(at) = httpdate::parse_http_date(text) {
        return Some(at);
    }
    if let Some((rest, zone)) = text.rsplit_once(' ')
        && zone.len() == 5
        && let (Some(sign @ ('+' | '-')), Ok(hhmm)) = (zone.chars().next(), zone[1..].parse::<u64>())
    {
        if hhmm / 100 >= 24 || hhmm % 100 >= 60 {
            return None;
        }
        let local = httpdate::parse_http_date(&format!("{rest} GMT")).ok()?;
        let offset = Duration::from_secs((hhmm / 100) * 3600 + (hhmm % 100) * 60);
        // Local time minus the zone's offset from UTC is UTC.
        return if sign == '+' { local.checked_sub(offset) } else { local.checked_add(offset) };
    }
    let digits = |range: std::ops::Range<usize>| text.get(range).and_then(|s| s.parse::<u64>().ok());
    if text.len() != 16 || text.as_bytes().get(8) != Some(&b'T') || !text.ends_with('Z') {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(digits(0..4)?).ok()?,
        month,
        u8::try_from(digits(6..8)?).ok()?,
    )
    .ok()?;
    let hms = |range| digits(range).and_then(|n| u8::try_from(n).ok());
    let time = time::Time::from_hms(hms(9..11)?, hms(11..13)?, hms(13..15)?).ok()?;
    let parsed = time::PrimitiveDateTime::new(date, time).assume_utc();
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(parsed.unix_timestamp()).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, uri: &str, headers: &[(&str, &str)]) -> Result<BodyPolicy, Refusal> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        precheck(&method, &uri.parse().unwrap(), &map, SystemTime::now())
    }

    #[test]
    fn object_uploads_stream_and_everything_else_is_capped() {
        assert_eq!(check(Method::PUT, "/b/k", &[]), Ok(BodyPolicy::Stream));
        assert_eq!(check(Method::PUT, "/b/k?partNumber=1&uploadId=x", &[]), Ok(BodyPolicy::Stream));
        assert_eq!(check(Method::PUT, "/b/k?tagging", &[]), Ok(BodyPolicy::Buffer { limit: MAX_XML_BODY }));
        assert_eq!(check(Method::PUT, "/b/", &[]), Ok(BodyPolicy::Buffer { limit: MAX_XML_BODY }));
        assert_eq!(
            check(Method::POST, "/b?delete", &[("content-length", "1048577")]),
            Err(Refusal::body_too_large())
        );
        let huge = check(Method::PUT, "/b/k", &[("content-length", "5000000000")]);
        assert_eq!(huge, Ok(BodyPolicy::Stream));
    }

    #[test]
    fn form_posts_are_refused() {
        let refused = check(Method::POST, "/b", &[("content-type", "Multipart/Form-Data; boundary=x")]);
        assert_eq!(refused.unwrap_err().status, StatusCode::NOT_IMPLEMENTED);
    }

    #[test]
    fn presign_lifetimes_are_capped_at_a_week() {
        assert!(check(Method::GET, "/b/k?X-Amz-Expires=604800", &[]).is_ok());
        let refused = check(Method::GET, "/b/k?X-Amz-Expires=604801", &[]).unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::BAD_REQUEST, "AuthorizationQueryParametersError")
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let ok = format!("/b/k?Signature=x&Expires={}", now + MAX_PRESIGN_SECS - 10);
        assert!(check(Method::GET, &ok, &[]).is_ok());
        let late = format!("/b/k?Signature=x&Expires={}", now + MAX_PRESIGN_SECS + 60);
        assert!(check(Method::GET, &late, &[]).is_err());
    }

    #[test]
    fn presign_lifetimes_below_a_second_are_refused() {
        for expires in ["0", "-1"] {
            let refused = check(Method::GET, &format!("/b/k?X-Amz-Expires={expires}"), &[]).unwrap_err();
            assert_eq!(
                (refused.status, refused.code),
                (StatusCode::BAD_REQUEST, "AuthorizationQueryParametersError")
            );
        }
        assert!(check(Method::GET, "/b/k?X-Amz-Expires=1", &[]).is_ok());
    }

    #[test]
    fn sigv2_dates_must_be_recent() {
        let now = httpdate::fmt_http_date(SystemTime::now());
        assert!(check(Method::GET, "/b/k", &[("authorization", "AWS a:b"), ("date", &now)]).is_ok());
        let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(16 * 60));
        let refused =
            check(Method::GET, "/b/k", &[("authorization", "AWS a:b"), ("date", &old)]).unwrap_err();
        assert_eq!(refused.code, "RequestTimeTooSkewed");
        let refused = check(Method::GET, "/b/k", &[("authorization", "AWS a:b")]).unwrap_err();
        assert_eq!(refused.code, "AccessDenied");
        let amz = check(
            Method::GET,
            "/b/k",
            &[("authorization", "AWS a:b"), ("x-amz-date", "20000101T000000Z"), ("date", &now)],
        );
        assert_eq!(amz.unwrap_err().code, "RequestTimeTooSkewed", "x-amz-date wins over Date");
    }

    #[test]
    fn dates_come_in_three_forms() {
        let gmt = parse_date("Tue, 27 Mar 2007 19:36:42 GMT").unwrap();
        assert_eq!(parse_date("Tue, 27 Mar 2007 19:36:42 +0000"), Some(gmt));
        assert_eq!(parse_date("Tue, 27 Mar 2007 21:36:42 +0200"), Some(gmt));
        assert_eq!(parse_date("Tue, 27 Mar 2007 14:06:42 -0530"), Some(gmt));
        assert_eq!(parse_date("20070327T193642Z"), Some(gmt));
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn a_zone_past_23_hours_or_59_minutes_is_no_date() {
        assert_eq!(parse_date("Tue, 27 Mar 2007 19:36:42 +0099"), None);
        assert_eq!(parse_date("Tue, 27 Mar 2007 19:36:42 -2500"), None);
    }
}
