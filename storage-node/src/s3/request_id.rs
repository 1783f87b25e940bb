//! Request ids, as AWS gives them: every S3 answer carries `x-amz-request-id` and `x-amz-id-2`,
//! and every error body the same id as `<RequestId>` and the host id as `<HostId>`, so a
//! client's log line finds the server's. The HTTP layer stamps each answer with [`RequestIds`]
//! (the guard's refusals and s3s's errors alike).

use base64::Engine;
use sha2::{Digest, Sha256};

/// A request's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIds {
    /// 16 upper-case hex digits (`x-amz-request-id`, `<RequestId>`).
    pub request_id: String,
    /// Base64 of a hash of the request id (`x-amz-id-2`, `<HostId>`), as long as AWS's.
    pub host_id: String,
}

impl RequestIds {
    /// New ids for one request.
    pub fn new() -> RequestIds {
        let request_id = format!("{:016X}", rand::random::<u64>());
        let digest = Sha256::digest(format!("silo-host:{request_id}").as_bytes());
        let host_id =
            base64::engine::general_purpose::STANDARD.encode([digest.as_slice(), &digest[..24]].concat());
        RequestIds { request_id, host_id }
    }

    /// `body`, an S3 XML error document, with `<RequestId>` and `<HostId>` added before its
    /// closing `</Error>` (replacing any it had); `None` when it is no error document.
    pub fn stamp_error(&self, body: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(body).ok()?;
        let end = text.rfind("</Error>")?;
        let mut head = text[..end].to_owned();
        for element in ["RequestId", "HostId"] {
            let open = format!("<{element}>");
            let close = format!("</{element}>");
            if let (Some(start), Some(stop)) = (head.find(&open), head.find(&close))
                && start < stop
            {
                head.replace_range(start..stop + close.len(), "");
            }
        }
        let ids = format!("<RequestId>{}</RequestId><HostId>{}</HostId>", self.request_id, self.host_id);
        Some(format!("{head}{ids}{}", &text[end..]).into_bytes())
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

#[cfg(test)]
mod tests {
    use super::RequestIds;

    #[test]
    fn error_bodies_get_the_request_id_and_host_id() {
        let ids = RequestIds::new();
        assert_eq!(ids.request_id.len(), 16);
        let body = b"<?xml version=\"1.0\"?>\n<Error><Code>NoSuchKey</Code><RequestId>x</RequestId></Error>";
        let stamped = String::from_utf8(ids.stamp_error(body).expect("an error")).expect("utf-8");
        assert!(stamped.contains(&format!("<RequestId>{}</RequestId>", ids.request_id)), "{stamped}");
        assert!(stamped.contains(&format!("<HostId>{}</HostId></Error>", ids.host_id)), "{stamped}");
        assert_eq!(stamped.matches("<RequestId>").count(), 1);
        assert_eq!(ids.stamp_error(b"<ListBucketResult/>"), None);
    }
}
