//! The S3 data plane through the AWS SDK for Rust, against the real binary on loopback and a real
//! Postgres: buckets, objects and their metadata, conditions, ranges, listing, copy, multipart
//! over 100 MiB, presigned URLs fetched with a plain HTTP client, the error codes AWS gives, and
//! isolation between two tenants.

use crate::common;

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, MetadataDirective, ObjectIdentifier,
};
use common::noise;
use common::{Silo, silo_cli_json};
use md5::{Digest, Md5};
use serde_json::Value;

/// One Silo with two tenants, each with a key.
struct Fixture {
    silo: Silo,
    a: Client,
    b: Client,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    async fn start(label: &str) -> Fixture {
        let (silo, tmp) = common::silo_on_fresh_catalog(label).await;
        let a = tenant_client(&silo, "tenant-a", None);
        let b = tenant_client(&silo, "tenant-b", None);
        Fixture { silo, a, b, _tmp: tmp }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.silo.addr)
    }

    /// The tenant's usage, from the management API.
    async fn usage(&self, tenant: &str) -> Value {
        silo_cli_json(&self.silo, &["usage", tenant])
    }
}

/// Creates `tenant` (with an optional quota) and a key of it; returns a client that uses the key.
fn tenant_client(silo: &Silo, tenant: &str, quota: Option<&str>) -> Client {
    let mut args = vec!["tenant", "create", tenant];
    if let Some(quota) = quota {
        args.extend(["--quota-bytes", quota]);
    }
    silo_cli_json(silo, &args);
    let key = silo_cli_json(silo, &["key", "create", tenant]);
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    common::sdk_client(silo, &field("access_key_id"), &field("secret_access_key"))
}

/// The S3 error code and HTTP status of a failed call.
fn failure<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (String, u16) {
    let err = result.expect_err("the call must fail");
    let status = err.raw_response().map_or(0, |response| response.status().as_u16());
    (err.code().unwrap_or_default().to_string(), status)
}

fn quoted_md5(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(bytes)))
}

async fn read_all(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let object = client.get_object().bucket(bucket).key(key).send().await.expect("get");
    object.body.collect().await.expect("body").into_bytes().to_vec()
}

/// PUTs a 3 MiB clip with metadata into `bucket` (created here); returns its body and output.
async fn put_clip(a: &Client, bucket: &str) -> (Vec<u8>, aws_sdk_s3::operation::put_object::PutObjectOutput) {
    a.create_bucket().bucket(bucket).send().await.expect("create bucket");
    let body = noise(3 << 20, 1);
    let put = a
        .put_object()
        .bucket(bucket)
        .key("videos/clip.mp4")
        .body(ByteStream::from(body.clone()))
        .content_type("video/mp4")
        .content_disposition("attachment; filename=\"clip.mp4\"")
        .cache_control("max-age=3600")
        .metadata("origin", "camera-1")
        .send()
        .await
        .expect("put");
    (body, put)
}

#[tokio::test]
async fn buckets_are_listed_per_tenant_and_named_by_the_rules() {
    let fx = Fixture::start("sdk_buckets").await;
    let a = &fx.a;
    a.create_bucket().bucket("sdk-media").send().await.expect("create bucket");
    fx.b.create_bucket().bucket("sdk-other").send().await.expect("create bucket of b");
    a.head_bucket().bucket("sdk-media").send().await.expect("head bucket");
    let location = a.get_bucket_location().bucket("sdk-media").send().await.expect("location");
    assert!(
        location.location_constraint().is_none_or(|c| c.as_str().is_empty() || c.as_str() == "us-east-1")
    );
    let names: Vec<_> = a
        .list_buckets()
        .send()
        .await
        .expect("list buckets")
        .buckets()
        .iter()
        .filter_map(|bucket| bucket.name().map(str::to_string))
        .collect();
    assert_eq!(names, ["sdk-media"], "a tenant lists only its own buckets");
    assert_eq!(failure(a.create_bucket().bucket("metrics").send().await).0, "InvalidBucketName");
    assert_eq!(failure(a.create_bucket().bucket("Bad_Name").send().await).0, "InvalidBucketName");
    assert_eq!(
        failure(a.create_bucket().bucket("sdk-other").send().await),
        ("BucketAlreadyExists".into(), 409)
    );
    assert_eq!(failure(a.head_bucket().bucket("no-such-bucket").send().await).1, 404);
}

#[tokio::test]
async fn a_put_answers_the_md5_etag_and_get_and_head_return_its_metadata() {
    let fx = Fixture::start("sdk_put_get").await;
    let a = &fx.a;
    let (body, put) = put_clip(a, "sdk-media").await;
    assert_eq!(put.e_tag(), Some(quoted_md5(&body).as_str()));
    let got = a.get_object().bucket("sdk-media").key("videos/clip.mp4").send().await.expect("get");
    assert_eq!(got.content_type(), Some("video/mp4"));
    assert_eq!(got.content_disposition(), Some("attachment; filename=\"clip.mp4\""));
    assert_eq!(got.cache_control(), Some("max-age=3600"));
    assert_eq!(got.metadata().and_then(|m| m.get("origin")).map(String::as_str), Some("camera-1"));
    assert_eq!(got.content_length(), Some(body.len() as i64));
    assert!(got.body.collect().await.expect("body").into_bytes() == body);
    let head = a.head_object().bucket("sdk-media").key("videos/clip.mp4").send().await.expect("head");
    assert_eq!((head.e_tag(), head.content_length()), (put.e_tag(), Some(body.len() as i64)));
    assert_eq!(failure(a.head_object().bucket("sdk-media").key("missing").send().await).1, 404);
    assert_eq!(failure(a.get_object().bucket("sdk-media").key("missing").send().await).0, "NoSuchKey");
}

#[tokio::test]
async fn a_streamed_aws_chunked_body_with_a_trailing_checksum_is_stored_exactly() {
    let fx = Fixture::start("sdk_streamed").await;
    let a = &fx.a;
    a.create_bucket().bucket("sdk-media").send().await.expect("create bucket");
    let body = noise(1 << 20, 1);
    let file = fx._tmp.path().join("upload.bin");
    std::fs::write(&file, &body).expect("write file");
    let streamed = a
        .put_object()
        .bucket("sdk-media")
        .key("streamed.bin")
        .body(ByteStream::from_path(&file).await.expect("file body"))
        .send()
        .await
        .expect("streamed put");
    assert_eq!(streamed.e_tag(), Some(quoted_md5(&body).as_str()));
    assert_eq!(read_all(a, "sdk-media", "streamed.bin").await, body);
}

#[tokio::test]
async fn ranges_return_the_bytes_asked_for_and_a_range_past_the_end_is_416() {
    let fx = Fixture::start("sdk_ranges").await;
    let a = &fx.a;
    let (body, _) = put_clip(a, "sdk-media").await;
    let ranged = a.get_object().bucket("sdk-media").key("videos/clip.mp4").range("bytes=1000-2999");
    let ranged = ranged.send().await.expect("range");
    assert_eq!(ranged.content_range(), Some(format!("bytes 1000-2999/{}", body.len()).as_str()));
    assert!(ranged.body.collect().await.expect("body").into_bytes() == body[1000..3000]);
    let suffix = a.get_object().bucket("sdk-media").key("videos/clip.mp4").range("bytes=-10");
    let suffix = suffix.send().await.expect("suffix range").body.collect().await.expect("body").into_bytes();
    assert!(suffix == body[body.len() - 10..]);
    let past_end = a.get_object().bucket("sdk-media").key("videos/clip.mp4").range("bytes=999999999-");
    assert_eq!(failure(past_end.send().await), ("InvalidRange".into(), 416));
}

#[tokio::test]
async fn conditional_gets_and_heads_follow_the_etag_and_the_dates() {
    let fx = Fixture::start("sdk_conditions").await;
    let a = &fx.a;
    let (_, put) = put_clip(a, "sdk-media").await;
    let head = a.head_object().bucket("sdk-media").key("videos/clip.mp4").send().await.expect("head");
    let last_modified = *head.last_modified().expect("last modified");
    let etag = put.e_tag().expect("etag").to_string();
    let get = || a.get_object().bucket("sdk-media").key("videos/clip.mp4");
    get().if_match(&etag).send().await.expect("If-Match with the ETag");
    assert_eq!(failure(get().if_match("\"nope\"").send().await).1, 412);
    assert_eq!(failure(get().if_none_match(&etag).send().await).1, 304);
    get().if_none_match("\"other\"").send().await.expect("If-None-Match with another ETag");
    assert_eq!(failure(get().if_modified_since(last_modified).send().await).1, 304);
    get().if_modified_since(DateTime::from_secs(last_modified.secs() - 3600)).send().await.expect("modified");
    let before = DateTime::from_secs(last_modified.secs() - 3600);
    assert_eq!(failure(get().if_unmodified_since(before).send().await).1, 412);
    get().if_unmodified_since(last_modified).send().await.expect("unmodified since");
    let head_412 = a.head_object().bucket("sdk-media").key("videos/clip.mp4").if_match("\"nope\"");
    assert_eq!(failure(head_412.send().await).1, 412);
}

/// Keys that try to climb out of the bucket, are escaped, or are not ASCII.
const UNUSUAL_KEYS: [&str; 5] =
    ["../../escape", "a/../../b", "a%2Fb", "ünïcødé/файл 名前.txt", "with spaces/x y"];

#[tokio::test]
async fn hostile_and_unusual_keys_stay_inside_the_bucket_and_come_back_exactly() {
    let fx = Fixture::start("sdk_keys").await;
    let a = &fx.a;
    a.create_bucket().bucket("sdk-media").send().await.expect("create bucket");
    let long_key = "é".repeat(512);
    for key in UNUSUAL_KEYS.into_iter().chain([long_key.as_str()]) {
        a.put_object()
            .bucket("sdk-media")
            .key(key)
            .body(ByteStream::from(key.as_bytes().to_vec()))
            .send()
            .await
            .expect(key);
        assert_eq!(read_all(a, "sdk-media", key).await, key.as_bytes(), "{key}");
    }
    let too_long = "x".repeat(1025);
    let (code, status) = failure(
        a.put_object().bucket("sdk-media").key(&too_long).body(ByteStream::from_static(b"x")).send().await,
    );
    assert_eq!((code.as_str(), status), ("KeyTooLongError", 400));
    // U+0000 cannot be stored; it is refused before anything else of the PUT.
    let (code, status) = failure(
        a.put_object().bucket("sdk-media").key("a\0b").body(ByteStream::from_static(b"x")).send().await,
    );
    assert_eq!((code.as_str(), status), ("InvalidArgument", 400));
}

#[tokio::test]
async fn copy_object_shares_the_chunks_and_keeps_or_replaces_the_metadata() {
    let fx = Fixture::start("sdk_copy").await;
    let a = &fx.a;
    let (_, put) = put_clip(a, "sdk-media").await;
    let etag = put.e_tag().expect("etag").to_string();
    let copy =
        a.copy_object().bucket("sdk-media").key("copies/clip.mp4").copy_source("sdk-media/videos/clip.mp4");
    let copied = copy.send().await.expect("copy");
    assert_eq!(copied.copy_object_result().and_then(|r| r.e_tag()), Some(etag.as_str()));
    let head = a.head_object().bucket("sdk-media").key("copies/clip.mp4").send().await.expect("head copy");
    assert_eq!(head.content_type(), Some("video/mp4"), "COPY keeps the metadata");
    let replace = a
        .copy_object()
        .bucket("sdk-media")
        .key("copies/clip.bin")
        .copy_source("sdk-media/videos/clip.mp4")
        .metadata_directive(MetadataDirective::Replace)
        .content_type("application/octet-stream");
    replace.send().await.expect("copy with REPLACE");
    let head = a.head_object().bucket("sdk-media").key("copies/clip.bin").send().await.expect("head");
    assert_eq!(head.content_type(), Some("application/octet-stream"));
    assert!(head.metadata().is_none_or(|m| m.is_empty()), "REPLACE drops the old metadata");
    let usage = fx.usage("tenant-a").await;
    assert!(
        usage["stored_bytes"].as_u64().expect("stored")
            < usage["logical_bytes"].as_u64().expect("logical") / 2,
        "copies share their chunks: {usage}"
    );
}

#[tokio::test]
async fn an_unsupported_call_answers_501_not_implemented() {
    let fx = Fixture::start("sdk_unsupported").await;
    let a = &fx.a;
    a.create_bucket().bucket("sdk-media").send().await.expect("create bucket");
    assert_eq!(
        failure(a.get_bucket_policy().bucket("sdk-media").send().await),
        ("NotImplemented".into(), 501)
    );
    assert_eq!(failure(a.get_bucket_tagging().bucket("sdk-media").send().await).1, 501);
}

#[tokio::test]
async fn delete_bucket_refuses_while_objects_remain_and_delete_objects_empties_it() {
    let fx = Fixture::start("sdk_delete").await;
    let a = &fx.a;
    put_clip(a, "sdk-media").await;
    for key in UNUSUAL_KEYS.into_iter().chain(["streamed.bin"]) {
        let put = a.put_object().bucket("sdk-media").key(key).body(ByteStream::from(key.as_bytes().to_vec()));
        put.send().await.expect(key);
    }
    assert_eq!(failure(a.delete_bucket().bucket("sdk-media").send().await), ("BucketNotEmpty".into(), 409));
    a.delete_object().bucket("sdk-media").key("streamed.bin").send().await.expect("delete");
    a.delete_object()
        .bucket("sdk-media")
        .key("never-existed")
        .send()
        .await
        .expect("deleting a missing key succeeds");
    let listed = a.list_objects_v2().bucket("sdk-media").send().await.expect("list");
    let ids: Vec<_> = listed
        .contents()
        .iter()
        .map(|object| ObjectIdentifier::builder().key(object.key().expect("key")).build().expect("id"))
        .collect();
    assert_eq!(ids.len(), UNUSUAL_KEYS.len() + 1);
    let delete = Delete::builder().set_objects(Some(ids)).build().expect("delete request");
    let deleted = a.delete_objects().bucket("sdk-media").delete(delete).send().await.expect("delete objects");
    assert_eq!((deleted.deleted().len(), deleted.errors().len()), (UNUSUAL_KEYS.len() + 1, 0));
    a.delete_bucket().bucket("sdk-media").send().await.expect("delete empty bucket");
    assert_eq!(failure(a.head_bucket().bucket("sdk-media").send().await).1, 404);
}

#[tokio::test]
async fn listing_pages_through_prefixes_and_delimiters() {
    let fx = Fixture::start("sdk_listing").await;
    let a = &fx.a;
    a.create_bucket().bucket("sdk-list").send().await.expect("create bucket");
    let keys = ["a.txt", "p/a", "p/b", "p/c/d", "p/c/e", "p/z", "q/x"];
    for key in keys {
        a.put_object()
            .bucket("sdk-list")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect(key);
    }
    let page = a.list_objects_v2().bucket("sdk-list").prefix("p/").delimiter("/").send().await.expect("list");
    let contents: Vec<_> = page.contents().iter().filter_map(|o| o.key()).collect();
    let prefixes: Vec<_> = page.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!((contents, prefixes), (vec!["p/a", "p/b", "p/z"], vec!["p/c/"]));
    assert_eq!(page.key_count(), Some(4));

    // Walk every key one page at a time with continuation tokens.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = a.list_objects_v2().bucket("sdk-list").max_keys(2).set_continuation_token(token.clone());
        let page = page.send().await.expect("page");
        seen.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(str::to_string);
        assert!(token.is_some(), "a truncated page has a continuation token");
    }
    assert_eq!(seen, keys);

    let after =
        a.list_objects_v2().bucket("sdk-list").start_after("p/c/e").send().await.expect("start-after");
    let after: Vec<_> = after.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(after, ["p/z", "q/x"]);

    // ListObjects v1 with a marker.
    let v1 = a.list_objects().bucket("sdk-list").marker("p/b").max_keys(2).send().await.expect("list v1");
    let v1_keys: Vec<_> = v1.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!((v1_keys, v1.is_truncated()), (vec!["p/c/d", "p/c/e"], Some(true)));
    let v1 = a.list_objects().bucket("sdk-list").delimiter("/").send().await.expect("list v1 delimiter");
    let v1_prefixes: Vec<_> = v1.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(v1_prefixes, ["p/", "q/"]);

    // Keys with U+10FFFF after the delimiter: paging one entry at a time moves past the
    // common prefix instead of returning it again.
    a.create_bucket().bucket("sdk-list-max").send().await.expect("create bucket");
    for key in ["m/\u{10FFFF}", "m/\u{10FFFF}\u{10FFFF}", "m/\u{10FFFF}x", "n"] {
        let put = a.put_object().bucket("sdk-list-max").key(key).body(ByteStream::from_static(b"x"));
        put.send().await.expect(key);
    }
    let mut entries = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let page = a.list_objects_v2().bucket("sdk-list-max").delimiter("/").max_keys(1);
        let page = page.set_continuation_token(token.clone()).send().await.expect("page");
        entries.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)));
        entries.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        token = page.next_continuation_token().map(str::to_string);
        if page.is_truncated() != Some(true) {
            break;
        }
    }
    assert_eq!(entries, ["m/", "n"]);
}

#[tokio::test]
async fn multipart_uploads_over_100_mib_deduplicate_with_the_tenant() {
    let fx = Fixture::start("sdk_multipart").await;
    let a = &fx.a;
    a.create_bucket().bucket("sdk-big").send().await.expect("create bucket");
    let parts = [noise(48 << 20, 10), noise(48 << 20, 11), noise(9 << 20, 12)];
    let upload = a.create_multipart_upload().bucket("sdk-big").key("movie.mp4").content_type("video/mp4");
    let upload_id = upload.send().await.expect("create upload").upload_id().expect("upload id").to_string();
    let mut completed = Vec::new();
    let mut part_md5s = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let number = index as i32 + 1;
        let sent = a
            .upload_part()
            .bucket("sdk-big")
            .key("movie.mp4")
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .expect("upload part");
        assert_eq!(sent.e_tag(), Some(quoted_md5(part).as_str()));
        part_md5s.extend_from_slice(&Md5::digest(part));
        completed
            .push(CompletedPart::builder().part_number(number).e_tag(sent.e_tag().expect("etag")).build());
    }
    let uploads = a.list_multipart_uploads().bucket("sdk-big").send().await.expect("list uploads");
    assert_eq!(
        uploads.uploads().iter().filter_map(|u| u.upload_id()).collect::<Vec<_>>(),
        [upload_id.as_str()]
    );
    let listed = a.list_parts().bucket("sdk-big").key("movie.mp4").upload_id(&upload_id).send().await;
    let listed = listed.expect("list parts");
    let sizes: Vec<_> = listed.parts().iter().filter_map(|p| p.size()).collect();
    assert_eq!(sizes, [48 << 20, 48 << 20, 9 << 20]);

    let complete = a
        .complete_multipart_upload()
        .bucket("sdk-big")
        .key("movie.mp4")
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build());
    let done = complete.send().await.expect("complete");
    let expected_etag = format!("\"{}-3\"", hex::encode(Md5::digest(&part_md5s)));
    assert_eq!(done.e_tag(), Some(expected_etag.as_str()), "multipart ETag is md5(part md5s)-N");

    // The object reads back whole and by range, streamed.
    let whole: Vec<u8> = parts.concat();
    let mut body = a.get_object().bucket("sdk-big").key("movie.mp4").send().await.expect("get").body;
    let mut hasher = blake3::Hasher::new();
    let mut length = 0;
    while let Some(bytes) = body.try_next().await.expect("body chunk") {
        hasher.update(&bytes);
        length += bytes.len();
    }
    assert_eq!((length, hasher.finalize()), (whole.len(), blake3::hash(&whole)));
    let start = (48 << 20) - 1000;
    let across =
        a.get_object().bucket("sdk-big").key("movie.mp4").range(format!("bytes={start}-{}", start + 1999));
    let across =
        across.send().await.expect("range across parts").body.collect().await.expect("body").into_bytes();
    assert!(across == whole[start..start + 2000]);

    // The same bytes as one PUT deduplicate against the multipart object.
    let before = fx.usage("tenant-a").await;
    let single =
        a.put_object().bucket("sdk-big").key("movie-again.mp4").body(ByteStream::from(whole.clone()));
    single.send().await.expect("single put of the same bytes");
    let after = fx.usage("tenant-a").await;
    let grown =
        after["stored_bytes"].as_u64().expect("stored") - before["stored_bytes"].as_u64().expect("stored");
    // Only the chunks around the two part boundaries differ (a part's last chunk is cut at its
    // end): the chunk that spans each boundary and those before the chunkers meet again on a
    // common cut, at most about three of the largest (2 MiB) a boundary. The cut points follow
    // the tenant's chunker seed, which a fresh data directory draws at random: 6.4 MB was seen.
    let bound = 2 * 3 * (2 << 20);
    assert!(grown < bound, "a second copy added {grown} bytes: {before} -> {after}");

    // UploadPartCopy from an existing object, with a range; then abort releases the upload.
    let second = a.create_multipart_upload().bucket("sdk-big").key("excerpt.mp4").send().await;
    let second_id = second.expect("create").upload_id().expect("id").to_string();
    let copied = a
        .upload_part_copy()
        .bucket("sdk-big")
        .key("excerpt.mp4")
        .upload_id(&second_id)
        .part_number(1)
        .copy_source("sdk-big/movie.mp4")
        .copy_source_range("bytes=0-6291455")
        .send()
        .await
        .expect("upload part copy");
    let copied_etag = copied.copy_part_result().and_then(|r| r.e_tag()).expect("part etag");
    assert_eq!(copied_etag, quoted_md5(&whole[..6 << 20]));
    a.abort_multipart_upload()
        .bucket("sdk-big")
        .key("excerpt.mp4")
        .upload_id(&second_id)
        .send()
        .await
        .expect("abort");
    let gone = a.list_parts().bucket("sdk-big").key("excerpt.mp4").upload_id(&second_id).send().await;
    assert_eq!(failure(gone), ("NoSuchUpload".into(), 404));
    // A copy into the aborted upload is refused for the upload, before its source is read.
    let late = a.upload_part_copy().bucket("sdk-big").key("excerpt.mp4").upload_id(&second_id).part_number(2);
    let late = late.copy_source("sdk-big/movie.mp4").copy_source_range("bytes=0-1048575").send().await;
    assert_eq!(failure(late), ("NoSuchUpload".into(), 404));
    let uploads = a.list_multipart_uploads().bucket("sdk-big").send().await.expect("list uploads");
    assert!(uploads.uploads().is_empty());
    assert_eq!(failure(a.head_object().bucket("sdk-big").key("excerpt.mp4").send().await).1, 404);
}

#[tokio::test]
async fn presigned_urls_and_the_errors_aws_gives() {
    let fx = Fixture::start("sdk_presign").await;
    let a = &fx.a;
    a.create_bucket().bucket("sdk-web").send().await.expect("create bucket");
    let http = reqwest::Client::new();

    // A browser uploads with a presigned PUT and streams a range with a presigned GET.
    let minute = PresigningConfig::expires_in(Duration::from_secs(60)).expect("presign config");
    let put = a.put_object().bucket("sdk-web").key("from-browser.txt").presigned(minute.clone()).await;
    let put = put.expect("presign put");
    let response = http.put(put.uri()).body("uploaded by a browser").send().await.expect("presigned put");
    assert_eq!(response.status(), 200);
    let get = a.get_object().bucket("sdk-web").key("from-browser.txt").presigned(minute.clone()).await;
    let get = get.expect("presign get");
    let response = http.get(get.uri()).header("Range", "bytes=12-18").send().await.expect("presigned get");
    assert_eq!(response.status(), 206);
    assert_eq!(response.text().await.expect("text"), "a brows");

    // Tampering with a presigned URL, or using it after it expires, is refused.
    let tampered = get.uri().replace("from-browser.txt", "other.txt");
    let response = http.get(&tampered).send().await.expect("tampered");
    assert_eq!(response.status(), 403);
    assert!(response.text().await.expect("text").contains("<Code>SignatureDoesNotMatch</Code>"));
    // Presigned a minute ago for one second: expired, with no wait.
    let short = PresigningConfig::builder()
        .start_time(SystemTime::now() - Duration::from_secs(60))
        .expires_in(Duration::from_secs(1))
        .build()
        .expect("config");
    let expiring =
        a.get_object().bucket("sdk-web").key("from-browser.txt").presigned(short).await.expect("presign");
    let response = http.get(expiring.uri()).send().await.expect("expired");
    assert_eq!(response.status(), 403);
    assert!(response.text().await.expect("text").contains("<Code>AccessDenied</Code>"));

    // A wrong secret, a revoked key and a skewed clock get the codes AWS gives.
    let key = silo_cli_json(&fx.silo, &["key", "create", "tenant-a"]);
    let id = key["access_key_id"].as_str().expect("id").to_string();
    let wrong = common::sdk_client(&fx.silo, &id, "wrong-secret-wrong-secret-wrong-secret00");
    assert_eq!(failure(wrong.list_buckets().send().await), ("SignatureDoesNotMatch".into(), 403));
    let secret = key["secret_access_key"].as_str().expect("secret").to_string();
    let revocable = common::sdk_client(&fx.silo, &id, &secret);
    revocable.list_buckets().send().await.expect("the new key works");
    silo_cli_json(&fx.silo, &["key", "revoke", "tenant-a", &id]);
    assert_eq!(failure(revocable.list_buckets().send().await), ("InvalidAccessKeyId".into(), 403));
    let unknown = common::sdk_client(&fx.silo, "SILONOSUCHKEY000000", &secret);
    assert_eq!(failure(unknown.list_buckets().send().await).0, "InvalidAccessKeyId");

    let skewed = |offset: Duration| {
        let key = silo_cli_json(&fx.silo, &["key", "create", "tenant-a"]);
        let (id, secret) =
            (key["access_key_id"].as_str().expect("id"), key["secret_access_key"].as_str().expect("s"));
        let clock = aws_smithy_async::time::StaticTimeSource::new(SystemTime::now() - offset);
        common::sdk_client_with(&fx.silo, id, secret, move |config| {
            config.time_source(clock).retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        })
    };
    skewed(Duration::from_secs(10 * 60))
        .list_buckets()
        .send()
        .await
        .expect("ten minutes of skew are allowed");
    let (code, status) = failure(skewed(Duration::from_secs(20 * 60)).list_buckets().send().await);
    assert_eq!((code.as_str(), status), ("RequestTimeTooSkewed", 403));

    // Over the quota: a clear S3 error before any byte is committed.
    let q = tenant_client(&fx.silo, "tenant-q", Some("1000000"));
    q.create_bucket().bucket("sdk-quota").send().await.expect("create bucket");
    q.put_object()
        .bucket("sdk-quota")
        .key("fits")
        .body(ByteStream::from(noise(500_000, 3)))
        .send()
        .await
        .expect("fits");
    let over = q.put_object().bucket("sdk-quota").key("too-big").body(ByteStream::from(noise(2_000_000, 4)));
    let err = over.send().await.expect_err("over the quota");
    assert_eq!(err.code(), Some("QuotaExceeded"));
    assert!(err.message().is_some_and(|m| m.contains("quota")), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(507));
    let listed = q.list_objects_v2().bucket("sdk-quota").send().await.expect("list");
    assert_eq!(listed.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["fits"]);
    let usage = fx.usage("tenant-q").await;
    assert!(
        usage["logical_bytes"].as_u64() == Some(500_000),
        "nothing of the refused upload counts: {usage}"
    );
    assert!(!fx.silo.stderr().contains(&secret), "secrets never reach the log");
}

#[tokio::test]
async fn tenants_never_reach_each_others_buckets() {
    let fx = Fixture::start("sdk_isolation").await;
    let (a, b) = (&fx.a, &fx.b);
    a.create_bucket().bucket("a-private").send().await.expect("bucket of a");
    b.create_bucket().bucket("b-own").send().await.expect("bucket of b");
    a.put_object()
        .bucket("a-private")
        .key("secret.txt")
        .body(ByteStream::from_static(b"a's data"))
        .send()
        .await
        .expect("put");
    let upload =
        b.create_multipart_upload().bucket("b-own").key("assembled").send().await.expect("upload of b");
    let upload_id = upload.upload_id().expect("id");

    let denied = |(code, status): (String, u16)| assert_eq!((code.as_str(), status), ("AccessDenied", 403));
    denied(failure(b.head_bucket().bucket("a-private").send().await).pipe_status());
    denied(failure(b.list_objects_v2().bucket("a-private").send().await));
    denied(failure(b.list_objects().bucket("a-private").send().await));
    denied(failure(b.get_object().bucket("a-private").key("secret.txt").send().await));
    denied(failure(b.head_object().bucket("a-private").key("secret.txt").send().await).pipe_status());
    denied(failure(
        b.put_object().bucket("a-private").key("x").body(ByteStream::from_static(b"x")).send().await,
    ));
    denied(failure(b.delete_object().bucket("a-private").key("secret.txt").send().await));
    denied(failure(b.delete_bucket().bucket("a-private").send().await));
    denied(failure(b.list_multipart_uploads().bucket("a-private").send().await));
    denied(failure(b.create_multipart_upload().bucket("a-private").key("x").send().await));
    let steal = b.copy_object().bucket("b-own").key("stolen").copy_source("a-private/secret.txt");
    denied(failure(steal.send().await));
    let steal_part = b
        .upload_part_copy()
        .bucket("b-own")
        .key("assembled")
        .upload_id(upload_id)
        .part_number(1)
        .copy_source("a-private/secret.txt");
    denied(failure(steal_part.send().await));
    let buckets = b.list_buckets().send().await.expect("list buckets");
    assert_eq!(buckets.buckets().iter().filter_map(|x| x.name()).collect::<Vec<_>>(), ["b-own"]);
    assert_eq!(failure(b.create_bucket().bucket("a-private").send().await).0, "BucketAlreadyExists");

    // A presigned URL made with B's key does not open A's object.
    let config = PresigningConfig::expires_in(Duration::from_secs(60)).expect("config");
    let stolen =
        b.get_object().bucket("a-private").key("secret.txt").presigned(config).await.expect("presign");
    let response = reqwest::get(stolen.uri()).await.expect("presigned get");
    assert_eq!(response.status(), 403);
    assert!(response.text().await.expect("text").contains("<Code>AccessDenied</Code>"));
    // Anonymous requests are refused too, and A's object is untouched.
    let anonymous = reqwest::get(format!("{}/a-private/secret.txt", fx.endpoint())).await.expect("anonymous");
    assert_eq!(anonymous.status(), 403);
    assert_eq!(read_all(a, "a-private", "secret.txt").await, b"a's data");
    let usage_of_b = fx.usage("tenant-b").await;
    assert_eq!(usage_of_b["logical_bytes"].as_u64(), Some(0), "{usage_of_b}");
}

/// HEAD responses carry no body, so S3 error codes arrive only as the status: map 403 to the
/// code S3 would have sent.
trait PipeStatus {
    fn pipe_status(self) -> (String, u16);
}

impl PipeStatus for (String, u16) {
    fn pipe_status(self) -> (String, u16) {
        match self {
            (code, 403) if code.is_empty() || code == "Forbidden" => ("AccessDenied".into(), 403),
            other => other,
        }
    }
}
