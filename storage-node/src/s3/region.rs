//! Regions as S3 clients send them. Silo serves one region (`--region`, us-east-1 unless set);
//! this module owns what a request's region has to do with it, before s3s sees the request:
//!
//! - A SigV4 scope for Silo's region passes.
//! - A scope for `US` or `EU`, the legacy names of us-east-1 and eu-west-1 that s3cmd's
//!   `bucket_location = US` and some older SDKs sign with, counts as that region; s3s refuses
//!   such a scope after checking its signature, so the request is re-signed for the region
//!   ([`super::resign`] says why and why it is safe).
//! - A scope for any other region gets AWS's answer: 400 `AuthorizationHeaderMalformed` (or
//!   `AuthorizationQueryParametersError` for a presigned URL) with Silo's region in `<Region>`
//!   and `x-amz-bucket-region`, from which s3cmd, boto3 and minio-go (restic) retry with it.
//!   GetBucketLocation passes whatever region it is signed for, as on AWS: clients sign it for
//!   us-east-1 to learn a bucket's region.
//!
//! SigV2 and anonymous requests carry no region and pass. GetBucketLocation and the
//! `LocationConstraint` of CreateBucket use [`location_constraint`] and [`check_constraint`].

use s3s::auth::S3Auth;
use s3s::service::S3Service;
use s3s::{HttpError, HttpRequest, HttpResponse, S3Result, s3_error};

pub use s3s::region::Region;

use super::auth::CatalogAuth;
use super::resign::{self, HeaderAuth, Scope};

/// The region Silo serves unless configured otherwise.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The region a legacy name stands for (`US`, `EU`), or the name itself.
pub fn equivalent(region: &str) -> &str {
    match region {
        "US" => "us-east-1",
        "EU" => "eu-west-1",
        other => other,
    }
}

/// [`DEFAULT_REGION`] as a [`Region`] (the tests' S3 serves it).
#[cfg(test)]
pub(crate) fn default_region() -> Region {
    Region::new(DEFAULT_REGION.into()).unwrap_or_else(|_| unreachable!("us-east-1 is a valid region"))
}

/// The S3 data plane: s3s behind the region checks above. Call it as `S3Service::call`.
#[derive(Debug, Clone)]
pub struct S3Front {
    pub(super) inner: S3Service,
    pub(super) region: Region,
    pub(super) auth: CatalogAuth,
    pub(super) small_puts: crate::model::SmallPuts,
}

/// A credential scope a request carries: in its `Authorization` header or, presigned, in its
/// `X-Amz-Credential` query parameter.
enum Signed {
    Header(HeaderAuth),
    Presigned(Scope),
}

impl Signed {
    /// Every scope the request carries (s3s picks one; each must pass).
    fn all(parts: &http::request::Parts) -> Vec<Signed> {
        let mut found = Vec::new();
        for value in parts.headers.get_all(http::header::AUTHORIZATION) {
            if let Some(auth) = value.to_str().ok().and_then(HeaderAuth::parse) {
                found.push(Signed::Header(auth));
            }
        }
        for pair in parts.uri.query().unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if resign::percent_decode(name, true) == b"X-Amz-Credential"
                && let Ok(credential) = String::from_utf8(resign::percent_decode(value, true))
                && let Some(scope) = Scope::parse(&credential)
            {
                found.push(Signed::Presigned(scope));
            }
        }
        found
    }

    fn scope(&self) -> &Scope {
        match self {
            Signed::Header(auth) => &auth.scope,
            Signed::Presigned(scope) => scope,
        }
    }
}

impl S3Front {
    /// The access keys this node has checked (to forget one at once when it is revoked here).
    pub fn keys(&self) -> &crate::catalog::key_cache::KeyCache {
        &self.auth.keys
    }

    /// What the batches of small PUTs did so far.
    pub fn small_put_stats(&self) -> crate::model::SmallPutStats {
        self.small_puts.stats()
    }

    /// Answers one S3 request.
    ///
    /// # Errors
    /// As `S3Service::call`: only when the connection should be dropped.
    pub async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (mut parts, body) = request.into_parts();
        super::integrity::join_content_encodings(&mut parts.headers);
        if let Some(refusal) = self.check(&mut parts).await {
            return Ok(refusal);
        }
        self.inner.call(HttpRequest::from_parts(parts, body)).await
    }

    /// `None` when the request may go on to s3s (re-signed if need be), else the answer.
    async fn check(&self, parts: &mut http::request::Parts) -> Option<HttpResponse> {
        let scopes = Signed::all(parts);
        let ours = self.region.as_str();
        let location = is_get_bucket_location(parts);
        if let Some(wrong) = scopes.iter().find(|s| equivalent(&s.scope().region) != ours && !location) {
            return Some(wrong_region(wrong, &wrong.scope().region, ours));
        }
        let [signed] = scopes.as_slice() else { return None };
        let sent = signed.scope().region.as_str();
        let region = equivalent(sent);
        if region == sent {
            return None;
        }
        // A legacy name: s3s would refuse it, so re-sign it for the region it stands for.
        // Chunk signatures of a signed streaming body are scoped too, and not re-signed.
        let streaming = parts
            .headers
            .get("x-amz-content-sha256")
            .is_some_and(|value| value.as_bytes().starts_with(b"STREAMING-AWS4-"));
        let Signed::Header(auth) = signed else { return Some(wrong_region(signed, sent, ours)) };
        if streaming || auth.scope.service != "s3" {
            return Some(wrong_region(signed, sent, ours));
        }
        // An unknown key or a bad signature goes on as it came, for s3s to refuse.
        if let Ok(secret) = self.auth.get_secret_key(&auth.scope.access_key).await
            && !resign::resign(parts, auth, secret.expose(), region)
        {
            tracing::debug!(region = sent, "a legacy-region signature did not hold");
        }
        None
    }
}

/// Whether the request is GetBucketLocation (`GET /bucket?location`, nothing else).
fn is_get_bucket_location(parts: &http::request::Parts) -> bool {
    let path = parts.uri.path().trim_start_matches('/').trim_end_matches('/');
    parts.method == http::Method::GET
        && !path.is_empty()
        && !path.contains('/')
        && matches!(parts.uri.query(), Some("location" | "location="))
}

/// AWS's answer to a request signed for another region than `ours`.
fn wrong_region(signed: &Signed, sent: &str, ours: &str) -> HttpResponse {
    let (code, message) = match signed {
        Signed::Header(_) => (
            "AuthorizationHeaderMalformed",
            format!(
                "The authorization header is malformed; the region '{sent}' is wrong; expecting '{ours}'"
            ),
        ),
        Signed::Presigned(_) => (
            "AuthorizationQueryParametersError",
            format!(
                "Error parsing the X-Amz-Credential parameter; the region '{sent}' is wrong; expecting '{ours}'"
            ),
        ),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>\
         <Region>{}</Region></Error>",
        xml_escape(&message),
        xml_escape(ours)
    );
    let mut response = HttpResponse::new(s3s::Body::from(body));
    *response.status_mut() = http::StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    if let Ok(value) = http::HeaderValue::from_str(ours) {
        headers.insert("x-amz-bucket-region", value);
    }
    response
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The `LocationConstraint` GetBucketLocation answers for a bucket in `region`: none for
/// us-east-1, as on AWS (clients read an empty one as us-east-1), else the region.
pub(crate) fn location_constraint(region: &Region) -> Option<s3s::dto::BucketLocationConstraint> {
    (region.as_str() != DEFAULT_REGION).then(|| region.as_str().to_string().into())
}

/// Whether CreateBucket may create a bucket with `constraint` in `region`: none, the region
/// itself or its legacy name. Any other region gets AWS's 400
/// `IllegalLocationConstraintException`, and what is no region name at all AWS's 400
/// `InvalidLocationConstraint`.
pub(crate) fn check_constraint(constraint: Option<&str>, region: &Region) -> S3Result<()> {
    let Some(constraint) = constraint.filter(|c| !c.is_empty()) else { return Ok(()) };
    let wanted = equivalent(constraint);
    if wanted == region.as_str() {
        return Ok(());
    }
    if Region::new(wanted.into()).is_err() {
        return Err(s3_error!(InvalidLocationConstraint, "The specified location-constraint is not valid"));
    }
    Err(s3_error!(
        IllegalLocationConstraintException,
        "The {wanted} location constraint is incompatible for the region specific endpoint this request was sent to \
         ({}).",
        region.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str) -> Region {
        Region::new(name.into()).unwrap()
    }

    #[test]
    fn legacy_names_stand_for_their_regions() {
        assert_eq!(equivalent("US"), "us-east-1");
        assert_eq!(equivalent("EU"), "eu-west-1");
        assert_eq!(equivalent("eu-central-1"), "eu-central-1");
        assert_eq!(equivalent("us"), "us", "only the exact legacy names");
    }

    #[test]
    fn location_constraints_follow_aws() {
        let east = region("us-east-1");
        assert!(check_constraint(None, &east).is_ok());
        assert!(check_constraint(Some(""), &east).is_ok());
        assert!(check_constraint(Some("us-east-1"), &east).is_ok());
        assert!(check_constraint(Some("US"), &east).is_ok());
        let other = check_constraint(Some("eu-west-1"), &east).unwrap_err();
        assert_eq!(other.code().as_str(), "IllegalLocationConstraintException");
        assert_eq!(other.status_code(), Some(http::StatusCode::BAD_REQUEST));
        let bad = check_constraint(Some("Not A Region"), &east).unwrap_err();
        assert_eq!(bad.code().as_str(), "InvalidLocationConstraint");
        assert_eq!(bad.status_code(), Some(http::StatusCode::BAD_REQUEST));
        assert!(check_constraint(Some("EU"), &region("eu-west-1")).is_ok());
        assert_eq!(location_constraint(&east), None);
        assert_eq!(location_constraint(&region("eu-west-1")).unwrap().as_str(), "eu-west-1");
    }

    #[test]
    fn the_wrong_region_answer_names_the_right_one() {
        let signed = Signed::Presigned(Scope::parse("AK/20261130/eu-<x>/s3/aws4_request").unwrap());
        let response = wrong_region(&signed, "eu-<x>", "us-east-1");
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["x-amz-bucket-region"], "us-east-1");
    }
}
