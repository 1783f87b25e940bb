//! Property test of the S3 request path: arbitrary methods, paths, query strings, headers and
//! small bodies, sent over loopback to the real binary, never make it panic or answer a 5xx
//! other than `501 NotImplemented` (calls Silo does not implement) and `503` (load shedding).
//!
//! 64 cases, so that CI stays quick; `PROPTEST_CASES` runs more.

use crate::common;

use std::time::Duration;

use common::{Silo, scratch, silo_cli_json};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// One generated request.
#[derive(Debug, Clone)]
struct Generated {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

const QUERY_KEYS: &[&str] = &[
    "uploads",
    "uploadId",
    "partNumber",
    "delete",
    "tagging",
    "acl",
    "location",
    "versioning",
    "list-type",
    "max-keys",
    "prefix",
    "delimiter",
    "continuation-token",
    "start-after",
    "marker",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "AWSAccessKeyId",
    "Signature",
    "Expires",
    "x-id",
    "versionId",
    "response-content-type",
];

const HEADER_NAMES: &[&str] = &[
    "authorization",
    "content-type",
    "content-md5",
    "range",
    "date",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-copy-source",
    "x-amz-copy-source-range",
    "x-amz-decoded-content-length",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "x-amz-meta-a",
    "expect",
    "content-encoding",
    "x-amz-acl",
    "x-amz-checksum-crc32",
    "x-amz-trailer",
];

/// Values that mean something to some header, and arbitrary printable ones.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("AWS AKIAEXAMPLE:c2lnbmF0dXJl".to_string()),
        Just("AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00".to_string()),
        Just("multipart/form-data; boundary=x".to_string()),
        Just("application/xml".to_string()),
        Just("bytes=0-10".to_string()),
        Just("bytes=-5".to_string()),
        Just("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_string()),
        Just("UNSIGNED-PAYLOAD".to_string()),
        Just("aws-chunked".to_string()),
        Just("/props/seed".to_string()),
        Just("100-continue".to_string()),
        "[ -~]{0,40}",
    ]
}

fn generated() -> impl Strategy<Value = Generated> {
    let method = prop_oneof![
        Just("GET"),
        Just("PUT"),
        Just("POST"),
        Just("DELETE"),
        Just("HEAD"),
        Just("OPTIONS"),
        Just("PATCH"),
    ]
    .prop_map(str::to_string);
    let segment = prop_oneof![
        Just("props".to_string()),
        Just("seed".to_string()),
        Just("v1".to_string()),
        Just("metrics".to_string()),
        Just("%2F".to_string()),
        Just("..".to_string()),
        "[a-zA-Z0-9._~%-]{0,12}",
    ];
    let path =
        proptest::collection::vec(segment, 0..4).prop_map(|segments| format!("/{}", segments.join("/")));
    let query = proptest::collection::vec((proptest::sample::select(QUERY_KEYS), "[ -~]{0,16}"), 0..4)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    let headers = proptest::collection::vec((proptest::sample::select(HEADER_NAMES), header_value()), 0..5)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    let body = proptest::collection::vec(any::<u8>(), 0..2048);
    (method, path, query, headers, body).prop_map(|(method, path, query, headers, body)| Generated {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// Sends `request`; returns its status and body, or `None` when the client could not build it
/// or the connection broke (a refused request may be closed early).
async fn send(client: &reqwest::Client, silo: &Silo, request: &Generated) -> Option<(u16, String)> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).ok()?;
    let mut url = reqwest::Url::parse(&silo.url(&request.path)).ok()?;
    if !request.query.is_empty() {
        url.query_pairs_mut().extend_pairs(&request.query);
    }
    let mut builder = client.request(method, url).body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let response = builder.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

#[test]
fn arbitrary_s3_requests_never_panic_or_fail_the_server() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (mut silo, _tmp) = runtime.block_on(async {
        let url = pg_local::testing::shared().fresh_database("s3_props").await;
        let tmp = scratch();
        let mut silo = Silo::start(&tmp.path().join("data"), &["--postgres-url", &url]);
        silo.wait_ready(Duration::from_secs(30)).await;
        (silo, tmp)
    });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    // A public-read bucket with an object, so that anonymous reads reach the read path.
    silo_cli_json(&silo, &["tenant", "create", "props"]);
    let key = silo_cli_json(&silo, &["key", "create", "props"]);
    let (id, secret) = (key["access_key_id"].as_str().unwrap(), key["secret_access_key"].as_str().unwrap());
    runtime.block_on(async {
        let sdk = common::sdk_client(&silo, id, secret);
        sdk.create_bucket().bucket("props").send().await.expect("bucket");
        let body = aws_sdk_s3::primitives::ByteStream::from_static(b"seed object");
        sdk.put_object().bucket("props").key("seed").body(body).send().await.expect("put");
        let public = client
            .patch(silo.url("/v1/buckets/props"))
            .bearer_auth(silo.token())
            .json(&serde_json::json!({ "public_read": true }))
            .send()
            .await
            .expect("patch");
        assert_eq!(public.status(), 200);
    });

    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let result = runner.run(&generated(), |request| {
        let Some((status, body)) = runtime.block_on(send(&client, &silo, &request)) else {
            return Ok(());
        };
        // 501 is S3's NotImplemented (its XML body says so; a HEAD answer has no body).
        let not_implemented = status == 501 && (body.contains("NotImplemented") || request.method == "HEAD");
        let allowed = status < 500 || not_implemented || status == 503;
        let Generated { method, path, query, headers, body: sent } = &request;
        prop_assert!(
            allowed,
            "{method} {path} {query:?} {headers:?} with {} body bytes got {status}: {body}",
            sent.len()
        );
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}\n{}", silo.stderr());
    }
    assert!(silo.try_exit().is_none(), "silo exited:\n{}", silo.stderr());
    assert!(!silo.stderr().contains("panicked"), "{}", silo.stderr());
    let healthy = runtime.block_on(async { client.get(silo.url("/healthz")).send().await }).expect("healthz");
    assert_eq!(healthy.status(), 200);
}
