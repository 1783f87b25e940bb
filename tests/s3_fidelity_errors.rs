//! S3 fidelity, part 3 (issue 14), through the AWS SDK for Rust against the real binary on
//! loopback: the ACL errors, another tenant and anonymous readers against canned ACLs and
//! owners, `encoding-type=url` on every marker, and the rows of docs/s3.md's operation table
//! that no other test reached (limits, multipart errors, quiet deletes, DeleteBucket with
//! uploads in progress, SigV2 presigned lifetimes, the quota of a chunked PUT).

use crate::common;
use crate::s3_fidelity::{ALL_USERS, AUTHENTICATED_USERS, Fixture, element, failure, readers};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketCannedAcl, CompletedMultipartUpload, CompletedPart, Delete, EncodingType, ObjectCannedAcl,
    ObjectIdentifier,
};
use base64::Engine;
use common::{noise, silo_cli_json};
use hmac::{Hmac, KeyInit, Mac};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn acl_errors_and_other_readers_of_canned_acls_and_owners() {
    let fx = Fixture::start("fidelity_acl_errors").await;
    let a = &fx.a;
    a.create_bucket().bucket("acl").send().await.expect("create bucket");
    let put = |key: &'static str| a.put_object().bucket("acl").key(key).body(ByteStream::from_static(b"x"));
    put("k").send().await.expect("put");

    // A grant by e-mail address, a request naming no ACL, a canned ACL with grants.
    let email = a.put_bucket_acl().bucket("acl").grant_read("emailAddress=\"someone@example.com\"");
    assert_eq!(failure(email.send().await), ("UnresolvableGrantByEmailAddress".into(), 400));
    let email = a.put_object_acl().bucket("acl").key("k").grant_read("emailAddress=\"someone@example.com\"");
    assert_eq!(failure(email.send().await), ("UnresolvableGrantByEmailAddress".into(), 400));
    assert_eq!(failure(a.put_bucket_acl().bucket("acl").send().await), ("MissingSecurityHeader".into(), 400));
    let nothing = a.put_object_acl().bucket("acl").key("k").send().await;
    assert_eq!(failure(nothing), ("MissingSecurityHeader".into(), 400));
    let both = a.put_bucket_acl().bucket("acl").acl(BucketCannedAcl::PublicRead);
    let both = both.grant_read(format!("uri=\"{ALL_USERS}\"")).send().await;
    assert_eq!(failure(both), ("InvalidRequest".into(), 400));
    let both = put("both").acl(ObjectCannedAcl::Private).grant_read(format!("uri=\"{ALL_USERS}\""));
    assert_eq!(failure(both.send().await), ("InvalidRequest".into(), 400));
    // A group granted anything but READ.
    let write = a.put_bucket_acl().bucket("acl").grant_write(format!("uri=\"{ALL_USERS}\"")).send().await;
    assert_eq!(failure(write), ("InvalidArgument".into(), 400));
    let full = a
        .put_object_acl()
        .bucket("acl")
        .key("k")
        .grant_full_control(format!("uri=\"{AUTHENTICATED_USERS}\""));
    assert_eq!(failure(full.send().await), ("InvalidArgument".into(), 400));
    // Canned ACLs Silo does not keep; bucket-owner-full-control is private (the owner is the
    // bucket's anyway).
    let exec = put("exec").acl(ObjectCannedAcl::AwsExecRead).send().await;
    assert_eq!(failure(exec), ("InvalidArgument".into(), 400));
    let log = a.create_bucket().bucket("logs").acl(BucketCannedAcl::from("log-delivery-write")).send().await;
    assert_eq!(failure(log), ("InvalidArgument".into(), 400));
    let log = a.put_bucket_acl().bucket("acl").acl(BucketCannedAcl::from("log-delivery-write")).send().await;
    assert_eq!(failure(log), ("InvalidArgument".into(), 400));
    put("owned")
        .acl(ObjectCannedAcl::BucketOwnerFullControl)
        .send()
        .await
        .expect("bucket-owner-full-control");
    let acl = a.get_object_acl().bucket("acl").key("owned").send().await.expect("get acl");
    assert!(readers(acl.grants()).is_empty(), "private: {acl:?}");
    assert_eq!(fx.anonymous("acl/owned").await, (403, 403));
    for refused in ["exec", "both"] {
        assert_eq!(
            failure(a.head_object().bucket("acl").key(refused).send().await).0,
            "NotFound",
            "{refused}"
        );
    }

    // authenticated-read means a key of the bucket's tenant: another tenant's signed request is
    // refused (AWS would let any AWS account read; Silo's documented divergence).
    put("auth").acl(ObjectCannedAcl::AuthenticatedRead).send().await.expect("authenticated-read");
    a.get_object().bucket("acl").key("auth").send().await.expect("the owner reads it");
    let other = fx.b.get_object().bucket("acl").key("auth").send().await;
    assert_eq!(failure(other), ("AccessDenied".into(), 403));
    assert_eq!(failure(fx.b.head_object().bucket("acl").key("auth").send().await).1, 403);

    // ListObjectVersions shows the owner; an anonymous reader of a public-read bucket sees none.
    let owner =
        a.list_buckets().send().await.expect("list buckets").owner().and_then(|o| o.id()).map(str::to_owned);
    let versions = a.list_object_versions().bucket("acl").send().await.expect("list versions");
    for version in versions.versions() {
        assert_eq!(version.owner().and_then(|o| o.id()), owner.as_deref(), "{version:?}");
        assert_eq!(version.owner().and_then(|o| o.display_name()), Some("tenant-a"));
    }
    fx.set_public_read("acl", true).await;
    for query in ["", "?list-type=2&fetch-owner=true", "?versions"] {
        let listed = fx.http.get(fx.url(&format!("acl{query}"))).send().await.expect("anonymous list");
        assert_eq!(listed.status(), 200, "{query}");
        let xml = listed.text().await.expect("xml");
        assert!(xml.contains("<Key>k</Key>") && !xml.contains("<Owner>"), "{query}: {xml}");
    }
}

#[tokio::test]
async fn encoding_type_url_encodes_every_marker() {
    let fx = Fixture::start("fidelity_encoded_markers").await;
    let a = &fx.a;
    a.create_bucket().bucket("enc").send().await.expect("create bucket");
    for key in ["a&b/1", "a&b/2", "c d/3", "c d/4", "e<f"] {
        a.put_object().bucket("enc").key(key).body(ByteStream::from_static(b"k")).send().await.expect("put");
    }
    let v2 = a.list_objects_v2().bucket("enc").encoding_type(EncodingType::Url).start_after("a&b/1");
    let v2 = v2.send().await.expect("list v2");
    assert_eq!(v2.start_after(), Some("a%26b/1"), "StartAfter is encoded");
    assert_eq!(v2.contents().first().and_then(|o| o.key()), Some("a%26b/2"));
    let v1 = a.list_objects().bucket("enc").encoding_type(EncodingType::Url).delimiter("/").max_keys(1);
    let v1 = v1.send().await.expect("list v1");
    assert_eq!(v1.is_truncated(), Some(true));
    assert_eq!(v1.next_marker(), Some("a%26b/"), "NextMarker is encoded (a common prefix here)");
    let v1 = a.list_objects().bucket("enc").encoding_type(EncodingType::Url).max_keys(3).send().await;
    assert_eq!(v1.expect("list v1").next_marker(), None, "no NextMarker without a delimiter, as on AWS");

    let mut uploads = Vec::new();
    for key in ["c d/x", "c d/y", "c d/z"] {
        let up = a.create_multipart_upload().bucket("enc").key(key).send().await.expect("create upload");
        uploads.push((key, up.upload_id.expect("id")));
    }
    let listed = a
        .list_multipart_uploads()
        .bucket("enc")
        .encoding_type(EncodingType::Url)
        .prefix("c d/")
        .key_marker("c d/x")
        .max_uploads(1)
        .send()
        .await
        .expect("list uploads");
    assert_eq!((listed.prefix(), listed.key_marker()), (Some("c+d/"), Some("c+d/x")));
    assert_eq!(listed.uploads().first().and_then(|u| u.key()), Some("c+d/y"));
    assert_eq!((listed.is_truncated(), listed.next_key_marker()), (Some(true), Some("c+d/y")));
    for (key, id) in uploads {
        a.abort_multipart_upload().bucket("enc").key(key).upload_id(id).send().await.expect("abort");
    }
}

/// A `PUT path` with `Transfer-Encoding: chunked` and no length, sent by hand; the raw answer.
async fn chunked_put(fx: &Fixture, client: &Client, (bucket, key): (&str, &str), body: &[u8]) -> String {
    let minute = PresigningConfig::expires_in(Duration::from_secs(60)).expect("presign config");
    let put = client.put_object().bucket(bucket).key(key).presigned(minute).await.expect("presign");
    let path =
        put.uri().split_once(&fx.silo.addr.to_string()).map(|(_, path)| path.to_owned()).expect("path");
    let mut stream = tokio::net::TcpStream::connect(fx.silo.addr).await.expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        fx.silo.addr
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    for chunk in body.chunks(64 * 1024) {
        let sent = async {
            stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            stream.write_all(chunk).await?;
            stream.write_all(b"\r\n").await
        };
        // The server may answer (and close) before the whole body is sent.
        if sent.await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A SigV2 presigned URL for `GET path` on `fx`'s Silo that expires at `expires` (Unix time).
fn presign_v2_get(fx: &Fixture, path: &str, expires: u64) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(fx.key.1.as_bytes()).expect("hmac key");
    mac.update(format!("GET\n\n\n{expires}\n{path}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let signature: String = url_encode(&signature);
    fx.url(&format!("{}?AWSAccessKeyId={}&Expires={expires}&Signature={signature}", &path[1..], fx.key.0))
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn upload_with(a: &Client, key: &str, bodies: &[Vec<u8>]) -> (String, Vec<CompletedPart>) {
    let upload = a.create_multipart_upload().bucket("rows").key(key).send().await.expect("create upload");
    let id = upload.upload_id.expect("id");
    let mut parts = Vec::new();
    for (number, body) in (1..).zip(bodies) {
        let part = a.upload_part().bucket("rows").key(key).upload_id(&id).part_number(number);
        let etag = part.body(ByteStream::from(body.clone())).send().await.expect("part").e_tag;
        parts.push(CompletedPart::builder().part_number(number).set_e_tag(etag).build());
    }
    (id, parts)
}

#[tokio::test]
async fn the_operation_table_rows_answer_as_documented() {
    let fx = Fixture::start("fidelity_table_rows").await;
    let a = &fx.a;
    a.create_bucket().bucket("rows").send().await.expect("create bucket");
    assert_eq!(
        failure(a.create_bucket().bucket("rows").send().await),
        ("BucketAlreadyOwnedByYou".into(), 409)
    );
    assert_eq!(
        failure(fx.b.create_bucket().bucket("rows").send().await),
        ("BucketAlreadyExists".into(), 409)
    );
    assert_eq!(failure(a.list_buckets().max_buckets(10_001).send().await), ("InvalidArgument".into(), 400));
    a.list_buckets().max_buckets(10_000).send().await.expect("10000 buckets a page is allowed");

    for key in ["one", "two", "three"] {
        let put = a.put_object().bucket("rows").key(key).body(ByteStream::from_static(b"row"));
        put.send().await.expect("put");
    }
    assert_eq!(
        failure(a.list_objects_v2().bucket("rows").max_keys(-1).send().await),
        ("InvalidArgument".into(), 400)
    );
    let capped = a.list_objects_v2().bucket("rows").max_keys(5000).send().await.expect("list");
    assert_eq!((capped.max_keys(), capped.key_count()), (Some(1000), Some(3)), "max-keys is capped at 1000");
    let versions = a.list_object_versions().bucket("rows").max_keys(1).send().await.expect("versions");
    assert_eq!((versions.next_key_marker(), versions.next_version_id_marker()), (Some("one"), Some("null")));

    // Conditions Silo does not take on a write: If-None-Match with an ETag, or both headers.
    let etag = a.head_object().bucket("rows").key("one").send().await.expect("head").e_tag.expect("etag");
    let put = || a.put_object().bucket("rows").key("one").body(ByteStream::from_static(b"new"));
    assert_eq!(failure(put().if_none_match(&etag).send().await), ("NotImplemented".into(), 501));
    assert_eq!(
        failure(put().if_match(&etag).if_none_match("*").send().await),
        ("NotImplemented".into(), 501)
    );

    // GET/HEAD with partNumber and Range; UploadPartCopy with a range that is no range.
    let both = a.get_object().bucket("rows").key("one").part_number(1).range("bytes=0-1").send().await;
    assert_eq!(failure(both), ("InvalidRequest".into(), 400));
    let both = a.head_object().bucket("rows").key("one").part_number(1).range("bytes=0-1").send().await;
    assert_eq!(failure(both).1, 400);
    let (id, _) = upload_with(a, "copy", &[]).await;
    for range in ["bytes=abc", "0-1", "bytes=2-", "bytes=2-1"] {
        let copy = a.upload_part_copy().bucket("rows").key("copy").upload_id(&id).part_number(1);
        let copy = copy.copy_source("rows/one").copy_source_range(range).send().await;
        assert_eq!(failure(copy), ("InvalidArgument".into(), 400), "{range}");
    }
    a.abort_multipart_upload().bucket("rows").key("copy").upload_id(&id).send().await.expect("abort");

    // CompleteMultipartUpload: parts out of order; a part short of 5 MiB before the last.
    let (id, parts) = upload_with(a, "small", &[noise(1000, 1), noise(1000, 2)]).await;
    let complete = |parts: Vec<CompletedPart>| {
        let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        a.complete_multipart_upload().bucket("rows").key("small").upload_id(&id).multipart_upload(done).send()
    };
    let reversed = parts.iter().rev().cloned().collect();
    assert_eq!(failure(complete(reversed).await), ("InvalidPartOrder".into(), 400));
    assert_eq!(failure(complete(parts.clone()).await), ("EntityTooSmall".into(), 400));
    complete(parts[1..].to_vec()).await.expect("the last part alone may be small");

    // DeleteObjects in quiet mode reports only errors (none here).
    let ids = ["one", "two", "gone"].map(|key| ObjectIdentifier::builder().key(key).build().expect("id"));
    let delete = Delete::builder().set_objects(Some(ids.to_vec())).quiet(true).build().expect("delete");
    let deleted = a.delete_objects().bucket("rows").delete(delete).send().await.expect("quiet delete");
    assert!(deleted.deleted().is_empty() && deleted.errors().is_empty(), "{deleted:?}");
    let left = a.list_objects_v2().bucket("rows").send().await.expect("list");
    assert_eq!(left.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["small", "three"]);

    // SigV2 presigned URLs: Expires at most a week ahead.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let within = fx.http.get(presign_v2_get(&fx, "/rows/three", now + 6 * 86_400)).send().await.expect("get");
    assert_eq!(within.status(), 200, "six days ahead");
    let beyond = fx.http.get(presign_v2_get(&fx, "/rows/three", now + 8 * 86_400)).send().await.expect("get");
    assert_eq!(beyond.status(), 400, "eight days ahead");
    assert_eq!(
        element(&beyond.text().await.expect("xml"), "Code"),
        Some("AuthorizationQueryParametersError")
    );

    // DeleteBucket aborts the uploads in progress with it.
    a.create_bucket().bucket("pending").send().await.expect("create bucket");
    let upload =
        a.create_multipart_upload().bucket("pending").key("big").send().await.expect("create upload");
    let part = a.upload_part().bucket("pending").key("big").upload_id(upload.upload_id().expect("id"));
    part.part_number(1).body(ByteStream::from(noise(100_000, 3))).send().await.expect("part");
    let usage = |field: &str| silo_cli_json(&fx.silo, &["usage", "tenant-a"])[field].as_i64();
    let before = usage("objects");
    a.delete_bucket().bucket("pending").send().await.expect("a bucket with only uploads is empty");
    assert_eq!(usage("objects"), before.map(|n| n - 1), "the part is released");
    let gone = a.list_multipart_uploads().bucket("pending").send().await;
    assert_eq!(failure(gone), ("NoSuchBucket".into(), 404));

    // The quota is checked as a chunked PUT with no length streams in.
    silo_cli_json(&fx.silo, &["tenant", "create", "tenant-q", "--quota-bytes", "1000000"]);
    let key = silo_cli_json(&fx.silo, &["key", "create", "tenant-q"]);
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    let q = common::sdk_client(&fx.silo, &field("access_key_id"), &field("secret_access_key"));
    q.create_bucket().bucket("quota").send().await.expect("create bucket");
    let answer = chunked_put(&fx, &q, ("quota", "fits"), &noise(500_000, 4)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = chunked_put(&fx, &q, ("quota", "too-big"), &noise(2_000_000, 5)).await;
    assert!(answer.starts_with("HTTP/1.1 507") && answer.contains("QuotaExceeded"), "{answer}");
    let listed = q.list_objects_v2().bucket("quota").send().await.expect("list");
    assert_eq!(listed.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["fits"]);
    let err = q.head_object().bucket("quota").key("too-big").send().await.expect_err("nothing stored");
    assert_eq!(err.code(), Some("NotFound"));
}
