//! S3 integrity and retries through the AWS SDK for Rust (issue 14), against the real binary on
//! loopback: `Content-MD5` checked before anything is committed, repeated completions and
//! parts, stored headers, additional checksums and conditional writes.

use crate::common;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, ObjectAttributes,
    StorageClass,
};
use base64::Engine;
use common::{Silo, noise, silo_cli_json};
use md5::{Digest, Md5};

/// One Silo with one tenant, its key (id and secret) and a client of it.
pub(crate) struct Fixture {
    pub(crate) silo: Silo,
    pub(crate) client: Client,
    pub(crate) key: (String, String),
    pub(crate) _tmp: tempfile::TempDir,
}

impl Fixture {
    pub(crate) async fn start(label: &str) -> Fixture {
        let (silo, tmp) = common::silo_on_fresh_catalog(label).await;
        let key = common::tenant_with_key(&silo, "tenant-a");
        let client = common::sdk_client(&silo, &key.0, &key.1);
        Fixture { silo, client, key, _tmp: tmp }
    }

    /// The tenant's stored objects, from the management API.
    fn objects(&self) -> i64 {
        silo_cli_json(&self.silo, &["usage", "tenant-a"])["objects"].as_i64().unwrap_or(-1)
    }
}

/// The S3 error code and HTTP status of a failed call.
pub(crate) fn failure<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (String, u16) {
    let err = result.expect_err("the call must fail");
    let status = err.raw_response().map_or(0, |response| response.status().as_u16());
    (err.code().unwrap_or_default().to_string(), status)
}

fn base64_md5(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

#[tokio::test]
async fn content_md5_is_checked_on_put_and_part_and_nothing_is_stored_on_a_mismatch() {
    let fx = Fixture::start("integrity_md5").await;
    let a = &fx.client;
    a.create_bucket().bucket("md5").send().await.expect("create bucket");
    let body = noise(200_000, 7);
    let put = |key: &str, md5: &str| {
        a.put_object().bucket("md5").key(key).body(ByteStream::from(body.clone())).content_md5(md5).send()
    };
    put("good", &base64_md5(&body)).await.expect("a matching Content-MD5 is accepted");
    let before = fx.objects();
    assert_eq!(failure(put("bad", &base64_md5(b"other bytes")).await), ("BadDigest".into(), 400));
    for malformed in ["", "not-base64!", "AAAA"] {
        let outcome = failure(put("bad", malformed).await);
        assert_eq!(outcome, ("InvalidDigest".into(), 400), "Content-MD5 {malformed:?}");
    }
    let head = a.head_object().bucket("md5").key("bad").send().await;
    assert_eq!(failure(head).0, "NotFound", "nothing is bound to the key");
    assert_eq!(fx.objects(), before, "nothing is stored");

    let upload = a.create_multipart_upload().bucket("md5").key("multi").send().await.expect("create");
    let id = upload.upload_id().expect("upload id");
    let part = |md5: &str| {
        a.upload_part()
            .bucket("md5")
            .key("multi")
            .upload_id(id)
            .part_number(1)
            .body(ByteStream::from(body.clone()))
            .content_md5(md5)
            .send()
    };
    assert_eq!(failure(part(&base64_md5(b"other")).await), ("BadDigest".into(), 400));
    assert_eq!(failure(part("AAAA").await), ("InvalidDigest".into(), 400));
    let parts = a.list_parts().bucket("md5").key("multi").upload_id(id).send().await.expect("list parts");
    assert!(parts.parts().is_empty(), "no part is stored: {parts:?}");
    part(&base64_md5(&body)).await.expect("a matching part is accepted");
    assert_eq!(fx.objects(), before + 1, "only the good part is stored");
}

/// Uploads `body` as part `number` of upload `id` of `retries`/`key`; returns the part's ETag.
async fn part(a: &Client, (key, id): (&str, &str), number: i32, body: &[u8]) -> String {
    let part = a.upload_part().bucket("retries").key(key).upload_id(id).part_number(number);
    let uploaded = part.body(ByteStream::from(body.to_vec())).send().await.expect("upload part");
    uploaded.e_tag().expect("part etag").to_string()
}

fn completion(parts: &[(i32, &str)]) -> CompletedMultipartUpload {
    let parts =
        parts.iter().map(|(number, etag)| CompletedPart::builder().part_number(*number).e_tag(*etag).build());
    CompletedMultipartUpload::builder().set_parts(Some(parts.collect())).build()
}

async fn complete(
    a: &Client,
    (key, id): (&str, &str),
    parts: &[(i32, &str)],
) -> Result<String, (String, u16)> {
    let call = a.complete_multipart_upload().bucket("retries").key(key).upload_id(id);
    match call.multipart_upload(completion(parts)).send().await {
        Ok(done) => Ok(done.e_tag().expect("etag").to_string()),
        Err(err) => Err(failure::<(), _>(Err(err))),
    }
}

async fn start_upload(a: &Client, key: &str) -> String {
    let upload = a.create_multipart_upload().bucket("retries").key(key).send().await.expect("create upload");
    upload.upload_id().expect("upload id").to_string()
}

async fn read_all(a: &Client, key: &str) -> Vec<u8> {
    let object = a.get_object().bucket("retries").key(key).send().await.expect("get");
    object.body.collect().await.expect("body").into_bytes().to_vec()
}

#[tokio::test]
async fn a_repeated_completion_answers_the_same_etag_and_other_parts_do_not() {
    let fx = Fixture::start("integrity_complete_again").await;
    let a = &fx.client;
    a.create_bucket().bucket("retries").send().await.expect("create bucket");
    let (first, last) = (noise(5 << 20, 1), noise(1000, 2));
    let id = start_upload(a, "video").await;
    let upload = ("video", id.as_str());
    let etags = [part(a, upload, 1, &first).await, part(a, upload, 2, &last).await];
    let parts = [(1, etags[0].as_str()), (2, etags[1].as_str())];
    let etag = complete(a, upload, &parts).await.expect("complete");
    assert_eq!(complete(a, upload, &parts).await, Ok(etag.clone()), "a retry answers the same ETag");
    assert_eq!(complete(a, upload, &parts[..1]).await, Err(("NoSuchUpload".into(), 404)), "other parts");
    assert_eq!(complete(a, ("other", &id), &parts).await, Err(("NoSuchUpload".into(), 404)), "another key");
    assert_eq!(read_all(a, "video").await, [first, last].concat());
}

#[tokio::test]
async fn the_last_upload_of_a_part_wins_whatever_order_they_finish_in() {
    let fx = Fixture::start("integrity_part_twice").await;
    let a = &fx.client;
    a.create_bucket().bucket("retries").send().await.expect("create bucket");
    let (one, two) = (noise(300_000, 3), noise(300_000, 4));

    // One after the other: the second wins, and naming both uploads of the part is no
    // InvalidPartOrder.
    let id = start_upload(a, "twice").await;
    let upload = ("twice", id.as_str());
    let (first, second) = (part(a, upload, 1, &one).await, part(a, upload, 1, &two).await);
    let both = [(1, first.as_str()), (1, second.as_str())];
    complete(a, upload, &both).await.expect("a part named twice completes with its last upload");
    assert_eq!(read_all(a, "twice").await, two);
    let id = start_upload(a, "stale").await;
    let upload = ("stale", id.as_str());
    part(a, upload, 1, &one).await;
    part(a, upload, 1, &two).await;
    let stale = complete(a, upload, &[(1, first.as_str())]).await;
    assert_eq!(stale, Err(("InvalidPart".into(), 400)), "the replaced upload is not the part any more");

    // At once: whichever commits last is the part, and the other's object is released.
    let id = start_upload(a, "racing").await;
    let upload = ("racing", id.as_str());
    let before = fx.objects();
    let bodies: Vec<Vec<u8>> = (0..6).map(|seed| noise(400_000, 10 + seed)).collect();
    let uploads = bodies.iter().map(|body| part(a, upload, 1, body));
    let etags = futures::future::join_all(uploads).await;
    let listed = a.list_parts().bucket("retries").key("racing").upload_id(&id).send().await.expect("parts");
    assert_eq!(listed.parts().len(), 1, "one part 1: {listed:?}");
    let kept = listed.parts()[0].e_tag().expect("etag").to_string();
    let winner = etags.iter().position(|etag| *etag == kept).expect("the kept part is one of the uploads");
    assert_eq!(fx.objects(), before + 1, "the replaced uploads are released");
    complete(a, upload, &[(1, kept.as_str())]).await.expect("complete with the kept part");
    assert_eq!(read_all(a, "racing").await, bodies[winner]);
}

#[tokio::test]
async fn stored_headers_come_back_on_get_and_head_and_response_overrides_apply() {
    let fx = Fixture::start("integrity_headers").await;
    let a = &fx.client;
    a.create_bucket().bucket("site").send().await.expect("create bucket");
    let expires = DateTime::from_secs(2_000_000_000);
    let gzipped = noise(100_000, 5);
    let file = fx._tmp.path().join("page.html.gz");
    std::fs::write(&file, &gzipped).expect("write file");
    // Streamed from a file: aws-chunked with a trailing checksum, and a real gzip coding.
    a.put_object()
        .bucket("site")
        .key("page.html")
        .body(ByteStream::from_path(&file).await.expect("file body"))
        .content_type("text/html")
        .content_encoding("gzip")
        .content_language("fr-CA")
        .content_disposition("inline")
        .cache_control("public, max-age=60")
        .expires(expires)
        .send()
        .await
        .expect("put");
    let head = a.head_object().bucket("site").key("page.html").send().await.expect("head");
    assert_eq!(head.content_encoding(), Some("gzip"), "aws-chunked is stripped, gzip kept");
    assert_eq!(head.content_language(), Some("fr-CA"));
    assert_eq!(head.content_disposition(), Some("inline"));
    assert_eq!(head.cache_control(), Some("public, max-age=60"));
    assert_eq!(head.expires_string(), Some("Wed, 18 May 2033 03:33:20 GMT"));
    let get = a.get_object().bucket("site").key("page.html").send().await.expect("get");
    assert_eq!((get.content_encoding(), get.content_language()), (Some("gzip"), Some("fr-CA")));
    assert_eq!(get.expires_string(), Some("Wed, 18 May 2033 03:33:20 GMT"));

    let plain = fx._tmp.path().join("plain.bin");
    std::fs::write(&plain, b"plain bytes").expect("write file");
    let streamed = ByteStream::from_path(&plain).await.expect("file body");
    a.put_object().bucket("site").key("plain").body(streamed).send().await.expect("streamed put");
    let head = a.head_object().bucket("site").key("plain").send().await.expect("head");
    assert_eq!(head.content_encoding(), None, "aws-chunked alone is no content coding");

    let overridden = a
        .get_object()
        .bucket("site")
        .key("page.html")
        .response_content_type("application/octet-stream")
        .response_content_disposition("attachment; filename=\"page.html.gz\"")
        .response_content_encoding("identity")
        .response_content_language("en")
        .response_cache_control("no-store")
        .response_expires(DateTime::from_secs(1_000_000_000))
        .send()
        .await
        .expect("get with overrides");
    assert_eq!(overridden.content_type(), Some("application/octet-stream"));
    assert_eq!(overridden.content_disposition(), Some("attachment; filename=\"page.html.gz\""));
    assert_eq!(overridden.content_encoding(), Some("identity"));
    assert_eq!(overridden.content_language(), Some("en"));
    assert_eq!(overridden.cache_control(), Some("no-store"));
    assert_eq!(overridden.expires_string(), Some("Sun, 09 Sep 2001 01:46:40 GMT"));

    // A multipart upload keeps its creation's headers.
    let upload = a
        .create_multipart_upload()
        .bucket("site")
        .key("archive.tar.gz")
        .content_encoding("gzip")
        .content_language("de")
        .expires(expires)
        .send()
        .await
        .expect("create upload");
    let id = upload.upload_id().expect("upload id");
    let part = a.upload_part().bucket("site").key("archive.tar.gz").upload_id(id).part_number(1);
    let etag = part.body(ByteStream::from(gzipped.clone())).send().await.expect("part").e_tag;
    let done = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).set_e_tag(etag).build())
        .build();
    let complete = a.complete_multipart_upload().bucket("site").key("archive.tar.gz").upload_id(id);
    complete.multipart_upload(done).send().await.expect("complete");
    let head = a.head_object().bucket("site").key("archive.tar.gz").send().await.expect("head");
    assert_eq!((head.content_encoding(), head.content_language()), (Some("gzip"), Some("de")));
    assert_eq!(head.expires_string(), Some("Wed, 18 May 2033 03:33:20 GMT"));

    // Anonymous GETs may not override headers, as on AWS.
    let http = reqwest::Client::new();
    let marked = http
        .patch(format!("http://{}/v1/buckets/site", fx.silo.addr))
        .bearer_auth(fx.silo.token())
        .json(&serde_json::json!({ "public_read": true }))
        .send()
        .await
        .expect("mark public");
    assert_eq!(marked.status(), 200);
    let page = format!("http://{}/site/page.html", fx.silo.addr);
    assert_eq!(http.get(&page).send().await.expect("anonymous get").status(), 200);
    let refused = http.get(format!("{page}?response-content-type=text/plain")).send().await.expect("get");
    assert_eq!(refused.status(), 400, "anonymous response-* overrides are refused");
    assert!(refused.text().await.expect("body").contains("InvalidRequest"));
}

/// CRC-32 (ISO-HDLC, as S3's CRC32), bit by bit: the test's own reference.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn base64_crc32(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32(bytes).to_be_bytes())
}

#[tokio::test]
async fn additional_checksums_are_checked_stored_and_returned() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the reference CRC-32");
    let fx = Fixture::start("integrity_checksums").await;
    let a = &fx.client;
    a.create_bucket().bucket("sums").send().await.expect("create bucket");
    let body = noise(300_000, 21);

    // The SDK sends a CRC32 by default (in memory: a header; from a file: an aws-chunked trailer).
    a.put_object()
        .bucket("sums")
        .key("memory")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("put");
    let file = fx._tmp.path().join("body.bin");
    std::fs::write(&file, &body).expect("write file");
    let streamed = ByteStream::from_path(&file).await.expect("file body");
    a.put_object().bucket("sums").key("streamed").body(streamed).send().await.expect("streamed put");
    for key in ["memory", "streamed"] {
        let head = a.head_object().bucket("sums").key(key).checksum_mode(ChecksumMode::Enabled).send().await;
        let head = head.expect("head");
        assert_eq!(head.checksum_crc32(), Some(base64_crc32(&body).as_str()), "{key}");
        assert_eq!(head.checksum_type(), Some(&ChecksumType::FullObject), "{key}");
        let plain = a.head_object().bucket("sums").key(key).send().await.expect("head");
        assert_eq!(plain.checksum_crc32(), None, "only with x-amz-checksum-mode: ENABLED");
        // The SDK checks the body it gets against the checksum Silo returns.
        let get = a.get_object().bucket("sums").key(key).checksum_mode(ChecksumMode::Enabled).send().await;
        let got = get.expect("get").body.collect().await.expect("validated body").into_bytes();
        assert_eq!(got.as_ref(), body.as_slice());
    }
    let sha = a
        .put_object()
        .bucket("sums")
        .key("sha")
        .body(ByteStream::from(body.clone()))
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .expect("put with SHA-256");
    let get = a.get_object().bucket("sums").key("sha").checksum_mode(ChecksumMode::Enabled).send().await;
    let get = get.expect("get");
    assert!(get.checksum_sha256().is_some() && get.checksum_sha256() == sha.checksum_sha256(), "{get:?}");
    get.body.collect().await.expect("the SDK validates the SHA-256");

    let before = fx.objects();
    let wrong = a
        .put_object()
        .bucket("sums")
        .key("wrong")
        .body(ByteStream::from(body.clone()))
        .checksum_crc32(base64_crc32(b"other bytes"))
        .send()
        .await;
    assert_eq!(failure(wrong), ("BadDigest".into(), 400));
    assert_eq!(fx.objects(), before, "nothing is stored");

    // Multipart, composite CRC32: the CRC32 of the parts' CRC32s, "-2".
    let (one, two) = (noise(5 << 20, 22), noise(1000, 23));
    let create = a
        .create_multipart_upload()
        .bucket("sums")
        .key("composite")
        .checksum_algorithm(ChecksumAlgorithm::Crc32);
    let id = create.send().await.expect("create").upload_id.expect("id");
    let mut parts = Vec::new();
    for (number, bytes) in [(1, &one), (2, &two)] {
        let part = a.upload_part().bucket("sums").key("composite").upload_id(&id).part_number(number);
        let part = part.checksum_algorithm(ChecksumAlgorithm::Crc32).body(ByteStream::from(bytes.clone()));
        let uploaded = part.send().await.expect("part");
        assert_eq!(uploaded.checksum_crc32(), Some(base64_crc32(bytes).as_str()));
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(uploaded.e_tag)
                .set_checksum_crc32(uploaded.checksum_crc32)
                .build(),
        );
    }
    let wrong_part = a.upload_part().bucket("sums").key("composite").upload_id(&id).part_number(3);
    let wrong_part =
        wrong_part.checksum_crc32(base64_crc32(b"x")).body(ByteStream::from(two.clone())).send().await;
    assert_eq!(failure(wrong_part), ("BadDigest".into(), 400));
    let listed = a.list_parts().bucket("sums").key("composite").upload_id(&id).send().await.expect("parts");
    assert_eq!(listed.parts()[1].checksum_crc32(), Some(base64_crc32(&two).as_str()), "ListParts shows them");
    let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    let complete = a.complete_multipart_upload().bucket("sums").key("composite").upload_id(&id);
    let completed = complete.multipart_upload(done).send().await.expect("complete");
    let raw = [crc32(&one).to_be_bytes(), crc32(&two).to_be_bytes()].concat();
    let composite = format!("{}-2", base64_crc32(&raw));
    assert_eq!(completed.checksum_crc32(), Some(composite.as_str()));
    assert_eq!(completed.checksum_type(), Some(&ChecksumType::Composite));
    let head =
        a.head_object().bucket("sums").key("composite").checksum_mode(ChecksumMode::Enabled).send().await;
    assert_eq!(head.expect("head").checksum_crc32(), Some(composite.as_str()));

    let attributes = a
        .get_object_attributes()
        .bucket("sums")
        .key("composite")
        .object_attributes(ObjectAttributes::Etag)
        .object_attributes(ObjectAttributes::Checksum)
        .object_attributes(ObjectAttributes::ObjectParts)
        .object_attributes(ObjectAttributes::ObjectSize)
        .object_attributes(ObjectAttributes::StorageClass)
        .send()
        .await
        .expect("GetObjectAttributes");
    assert_eq!(attributes.object_size(), Some((one.len() + two.len()) as i64));
    assert_eq!(attributes.storage_class(), Some(&StorageClass::Standard));
    assert!(attributes.e_tag().is_some_and(|etag| etag.trim_matches('"').ends_with("-2")), "{attributes:?}");
    assert_eq!(attributes.checksum().and_then(|sum| sum.checksum_crc32()), Some(composite.as_str()));
    let object_parts = attributes.object_parts().expect("parts");
    assert_eq!(object_parts.total_parts_count(), Some(2));
    let sizes: Vec<_> = object_parts.parts().iter().map(|part| (part.part_number(), part.size())).collect();
    assert_eq!(sizes, [(Some(1), Some(one.len() as i64)), (Some(2), Some(two.len() as i64))]);
    assert_eq!(object_parts.parts()[1].checksum_crc32(), Some(base64_crc32(&two).as_str()));

    // Multipart, full-object CRC32: the whole body's CRC32, checked against the one claimed.
    let create = a
        .create_multipart_upload()
        .bucket("sums")
        .key("full")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .checksum_type(ChecksumType::FullObject);
    let id = create.send().await.expect("create").upload_id.expect("id");
    let mut parts = Vec::new();
    for (number, bytes) in [(1, &one), (2, &two)] {
        let part = a.upload_part().bucket("sums").key("full").upload_id(&id).part_number(number);
        let uploaded = part.body(ByteStream::from(bytes.clone())).send().await.expect("part");
        parts.push(CompletedPart::builder().part_number(number).set_e_tag(uploaded.e_tag).build());
    }
    let whole = [one.as_slice(), two.as_slice()].concat();
    let complete = |claimed: String| {
        let done = CompletedMultipartUpload::builder().set_parts(Some(parts.clone())).build();
        let call = a.complete_multipart_upload().bucket("sums").key("full").upload_id(&id);
        call.multipart_upload(done).checksum_type(ChecksumType::FullObject).checksum_crc32(claimed).send()
    };
    assert_eq!(failure(complete(base64_crc32(b"not it")).await), ("BadDigest".into(), 400));
    let completed = complete(base64_crc32(&whole)).await.expect("complete");
    assert_eq!(completed.checksum_crc32(), Some(base64_crc32(&whole).as_str()));
    let get = a.get_object().bucket("sums").key("full").checksum_mode(ChecksumMode::Enabled).send().await;
    let got = get.expect("get").body.collect().await.expect("validated body").into_bytes();
    assert_eq!(got.as_ref(), whole.as_slice());
}

#[tokio::test]
async fn conditional_writes_refuse_with_412_or_404_before_the_body_is_read() {
    let fx = Fixture::start("integrity_conditional").await;
    let a = &fx.client;
    a.create_bucket().bucket("locks").send().await.expect("create bucket");
    let put = |key: &'static str, body: &'static [u8]| {
        a.put_object().bucket("locks").key(key).body(ByteStream::from_static(body))
    };
    let first = put("lock", b"one").if_none_match("*").send().await.expect("If-None-Match: * on a new key");
    let etag = first.e_tag().expect("etag").to_string();
    assert_eq!(
        failure(put("lock", b"two").if_none_match("*").send().await),
        ("PreconditionFailed".into(), 412)
    );
    assert_eq!(
        failure(put("lock", b"two").if_match("\"0123\"").send().await),
        ("PreconditionFailed".into(), 412)
    );
    assert_eq!(failure(put("none", b"two").if_match(&etag).send().await), ("NoSuchKey".into(), 404));
    put("lock", b"two").if_match(&etag).send().await.expect("If-Match with the current ETag");
    let object = a.get_object().bucket("locks").key("lock").send().await.expect("get");
    assert_eq!(object.body.collect().await.expect("body").into_bytes().as_ref(), b"two");

    // CompleteMultipartUpload: the same conditions, on the key at completion.
    let upload = a.create_multipart_upload().bucket("locks").key("lock").send().await.expect("create");
    let id = upload.upload_id().expect("id");
    let part = a.upload_part().bucket("locks").key("lock").upload_id(id).part_number(1);
    let etag_part = part.body(ByteStream::from_static(b"three")).send().await.expect("part").e_tag;
    let complete = |condition: (&str, &str)| {
        let done = CompletedMultipartUpload::builder()
            .parts(CompletedPart::builder().part_number(1).set_e_tag(etag_part.clone()).build())
            .build();
        let call =
            a.complete_multipart_upload().bucket("locks").key("lock").upload_id(id).multipart_upload(done);
        match condition {
            ("If-None-Match", value) => call.if_none_match(value),
            (_, value) => call.if_match(value),
        }
        .send()
    };
    assert_eq!(failure(complete(("If-None-Match", "*")).await), ("PreconditionFailed".into(), 412));
    assert_eq!(failure(complete(("If-Match", "\"0123\"")).await), ("PreconditionFailed".into(), 412));
    let current =
        a.head_object().bucket("locks").key("lock").send().await.expect("head").e_tag.expect("etag");
    complete(("If-Match", &current)).await.expect("completion with the current ETag");
}

#[tokio::test]
async fn boto3_sees_the_same_digests_checksums_retries_and_conditions() {
    let fx = Fixture::start("integrity_boto3").await;
    common::run_s3_script("s3_integrity.py", &fx.silo, &[("KEY", &fx.key.0), ("SECRET", &fx.key.1)]).await;
}

#[tokio::test]
async fn a_flipped_bit_is_a_500_when_the_read_starts_on_it_and_a_cut_download_after() {
    let fx = Fixture::start("integrity_flipped").await;
    let a = &fx.client;
    a.create_bucket().bucket("media").send().await.expect("create bucket");
    let (film, clip) = (noise(6 << 20, 21), noise(3 << 20, 22));
    for (key, body) in [("film.bin", &film), ("clip.bin", &clip)] {
        a.put_object()
            .bucket("media")
            .key(key)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .expect("put");
    }
    // One pack, in upload order: its first record is the film's first chunk, and its last bytes
    // are in the clip's last chunk.
    let packs = common::cluster::walk(&fx._tmp.path().join("data").join("packs"));
    let [pack] = packs.as_slice() else { panic!("one pack file: {packs:?}") };
    let mut bytes = std::fs::read(pack).expect("pack");
    let first_data = (storage_node::pack::PACK_HEADER_LEN + storage_node::pack::RECORD_HEADER_LEN) as usize;
    let last = bytes.len() - 1000;
    bytes[first_data + 100] ^= 0x04;
    bytes[last] ^= 0x04;
    std::fs::write(pack, &bytes).expect("flip two bits");

    // A read that starts on a damaged chunk: its status says so (the SDK retried the 500).
    let whole = a.get_object().bucket("media").key("film.bin").send().await;
    assert_eq!(failure(whole), ("InternalError".to_string(), 500));
    let head = a.get_object().bucket("media").key("film.bin").range("bytes=0-999").send().await;
    assert_eq!(failure(head), ("InternalError".to_string(), 500));
    // The rest of that object reads exact.
    let tail =
        a.get_object().bucket("media").key("film.bin").range("bytes=-100000").send().await.expect("tail");
    let tail = tail.body.collect().await.expect("tail body").into_bytes();
    assert!(tail[..] == film[film.len() - 100_000..], "the film's tail is exact");
    // A read that reaches a damaged chunk later has sent its 200 already: it is cut short,
    // never completed with wrong bytes.
    let cut = a.get_object().bucket("media").key("clip.bin").send().await.expect("the answer starts");
    assert!(cut.body.collect().await.is_err(), "a download that reaches the damage is cut short");
}
