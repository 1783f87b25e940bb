//! S3 additional checksums beyond CRC32 and SHA-256 (issue 14), through the AWS SDK for Rust
//! against the real binary on loopback: CRC32C, CRC64NVME and SHA-1 checked on PutObject, the
//! CRC64NVME Silo computes for a PUT that names none, a CRC64NVME multipart upload, the
//! checksum errors (two claims, a bad algorithm/type pair, a part of another algorithm), what
//! CopyObject keeps, and GetObjectAttributes' part paging.

use crate::common;
use crate::s3_integrity::{Fixture, failure};

use std::time::SystemTime;

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, ObjectAttributes,
};
use base64::Engine;
use common::noise;
use sha1::Digest;

/// The HEAD of `bucket`/`key` with `x-amz-checksum-mode: ENABLED`.
async fn checked_head(fx: &Fixture, bucket: &str, key: &str) -> HeadObjectOutput {
    let head = fx.client.head_object().bucket(bucket).key(key).checksum_mode(ChecksumMode::Enabled);
    head.send().await.expect("head with checksums")
}

/// A reflected CRC bit by bit (initial value and final XOR all ones): the tests' own reference.
fn reflected_crc(bytes: &[u8], polynomial: u64, width: u32) -> u64 {
    let mask = if width == 64 { u64::MAX } else { (1 << width) - 1 };
    let mut crc = mask;
    for byte in bytes {
        crc ^= u64::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ polynomial } else { crc >> 1 };
        }
    }
    !crc & mask
}

fn crc32c(bytes: &[u8]) -> u32 {
    reflected_crc(bytes, 0x82F6_3B78, 32) as u32
}

fn crc64nvme(bytes: &[u8]) -> u64 {
    reflected_crc(bytes, 0x9A6C_9329_AC4B_C9B5, 64)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_crc64nvme(bytes: &[u8]) -> String {
    b64(&crc64nvme(bytes).to_be_bytes())
}

/// The base64 checksum of `bytes` by `algorithm`, as S3 writes it.
fn sum_of(algorithm: &ChecksumAlgorithm, bytes: &[u8]) -> String {
    match algorithm {
        ChecksumAlgorithm::Crc32C => b64(&crc32c(bytes).to_be_bytes()),
        ChecksumAlgorithm::Crc64Nvme => base64_crc64nvme(bytes),
        ChecksumAlgorithm::Sha1 => b64(&sha1::Sha1::digest(bytes)),
        other => panic!("no reference for {other:?}"),
    }
}

/// The checksum of `algorithm` a HEAD shows.
fn shown<'a>(head: &'a HeadObjectOutput, algorithm: &ChecksumAlgorithm) -> Option<&'a str> {
    match algorithm {
        ChecksumAlgorithm::Crc32C => head.checksum_crc32_c(),
        ChecksumAlgorithm::Crc64Nvme => head.checksum_crc64_nvme(),
        ChecksumAlgorithm::Sha1 => head.checksum_sha1(),
        _ => None,
    }
}

#[tokio::test]
async fn crc32c_crc64nvme_and_sha1_are_checked_and_a_put_naming_none_gets_a_crc64nvme() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283, "the reference CRC-32C");
    assert_eq!(crc64nvme(b"123456789"), 0xAE8B_1486_0A79_9888, "the reference CRC-64/NVME");
    let fx = Fixture::start("checksums_algorithms").await;
    let a = &fx.client;
    a.create_bucket().bucket("sums").send().await.expect("create bucket");
    let body = noise(300_000, 31);
    let put = |key: &str| a.put_object().bucket("sums").key(key).body(ByteStream::from(body.clone()));
    for algorithm in [ChecksumAlgorithm::Crc32C, ChecksumAlgorithm::Crc64Nvme, ChecksumAlgorithm::Sha1] {
        let key = algorithm.as_str().to_ascii_lowercase();
        let expected = sum_of(&algorithm, &body);
        // The SDK computes the right value and sends it.
        put(&key).checksum_algorithm(algorithm.clone()).send().await.expect("a right checksum is accepted");
        let head = checked_head(&fx, "sums", &key).await;
        assert_eq!(shown(&head, &algorithm), Some(expected.as_str()), "{key}");
        assert_eq!(head.checksum_type(), Some(&ChecksumType::FullObject), "{key}");
        let got = a.get_object().bucket("sums").key(&key).checksum_mode(ChecksumMode::Enabled).send().await;
        let got = got.expect("get").body.collect().await.expect("the SDK validates the body").into_bytes();
        assert_eq!(got.as_ref(), body.as_slice(), "{key}");
        let wrong = sum_of(&algorithm, b"other bytes");
        let wrong = match algorithm {
            ChecksumAlgorithm::Crc32C => put("wrong").checksum_crc32_c(wrong),
            ChecksumAlgorithm::Crc64Nvme => put("wrong").checksum_crc64_nvme(wrong),
            _ => put("wrong").checksum_sha1(wrong),
        };
        assert_eq!(failure(wrong.send().await), ("BadDigest".into(), 400), "{key}");
    }
    let head = a.head_object().bucket("sums").key("wrong").send().await;
    assert_eq!(failure(head).0, "NotFound", "no wrong checksum stored anything");

    // A PUT that names no checksum at all (signed by hand: no SDK default): Silo computes the
    // CRC64NVME AWS computes for it.
    let (date, auth) = common::sign::sigv2(&fx.key.0, &fx.key.1, "PUT", "/sums/raw", SystemTime::now());
    let raw = reqwest::Client::new()
        .put(fx.silo.url("/sums/raw"))
        .header("date", date)
        .header("authorization", auth)
        .body(body.clone())
        .send()
        .await
        .expect("raw put");
    assert_eq!(raw.status(), 200, "{:?}", raw.text().await);
    let head = checked_head(&fx, "sums", "raw").await;
    assert_eq!(head.checksum_crc64_nvme(), Some(base64_crc64nvme(&body).as_str()));
    assert_eq!(head.checksum_type(), Some(&ChecksumType::FullObject));
    assert_eq!((head.checksum_crc32(), head.checksum_sha256()), (None, None), "that one only");

    // CRC64NVME multipart with no checksum type: FULL_OBJECT, the whole body's CRC64NVME; then
    // GetObjectAttributes pages its parts.
    let bodies = [noise(5 << 20, 32), noise(5 << 20, 33), noise(1000, 34)];
    let create = a.create_multipart_upload().bucket("sums").key("nvme");
    let create = create.checksum_algorithm(ChecksumAlgorithm::Crc64Nvme).send().await.expect("create");
    assert_eq!(create.checksum_type(), Some(&ChecksumType::FullObject), "CRC64NVME is only FULL_OBJECT");
    let id = create.upload_id().expect("upload id");
    let mut parts = Vec::new();
    for (number, bytes) in (1..).zip(&bodies) {
        let part = a.upload_part().bucket("sums").key("nvme").upload_id(id).part_number(number);
        let part =
            part.checksum_algorithm(ChecksumAlgorithm::Crc64Nvme).body(ByteStream::from(bytes.clone()));
        let uploaded = part.send().await.expect("part");
        assert_eq!(uploaded.checksum_crc64_nvme(), Some(base64_crc64nvme(bytes).as_str()));
        parts.push(CompletedPart::builder().part_number(number).set_e_tag(uploaded.e_tag).build());
    }
    let whole = bodies.concat();
    let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    let complete = a.complete_multipart_upload().bucket("sums").key("nvme").upload_id(id);
    let completed = complete.multipart_upload(done).send().await.expect("complete");
    assert_eq!(completed.checksum_type(), Some(&ChecksumType::FullObject));
    assert_eq!(completed.checksum_crc64_nvme(), Some(base64_crc64nvme(&whole).as_str()));
    let head = checked_head(&fx, "sums", "nvme").await;
    assert_eq!(head.checksum_crc64_nvme(), Some(base64_crc64nvme(&whole).as_str()));

    let attributes = |marker: Option<&str>| {
        a.get_object_attributes()
            .bucket("sums")
            .key("nvme")
            .object_attributes(ObjectAttributes::ObjectParts)
            .max_parts(2)
            .set_part_number_marker(marker.map(str::to_owned))
            .send()
    };
    let first = attributes(None).await.expect("GetObjectAttributes");
    let page = first.object_parts().expect("parts");
    let numbers: Vec<_> = page.parts().iter().filter_map(|part| part.part_number()).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(
        (page.total_parts_count(), page.is_truncated(), page.max_parts()),
        (Some(3), Some(true), Some(2))
    );
    assert_eq!(page.next_part_number_marker(), Some("2"));
    let rest = attributes(page.next_part_number_marker()).await.expect("next page");
    let page = rest.object_parts().expect("parts");
    let listed: Vec<_> = page.parts().iter().map(|part| (part.part_number(), part.size())).collect();
    assert_eq!(listed, [(Some(3), Some(1000))]);
    assert_eq!(
        (page.is_truncated(), page.next_part_number_marker(), page.part_number_marker()),
        (Some(false), None, Some("2"))
    );
    // A single PUT's object has no parts to show.
    let single = a.get_object_attributes().bucket("sums").key("raw");
    let single = single
        .object_attributes(ObjectAttributes::ObjectParts)
        .object_attributes(ObjectAttributes::ObjectSize);
    let single = single.send().await.expect("GetObjectAttributes of a single PUT");
    assert!(single.object_parts().is_none(), "{single:?}");
    assert_eq!(single.object_size(), Some(body.len() as i64));
}

#[tokio::test]
async fn checksum_errors_and_what_a_copy_keeps() {
    let fx = Fixture::start("checksums_errors").await;
    let a = &fx.client;
    a.create_bucket().bucket("sums").send().await.expect("create bucket");
    let body = noise(100_000, 41);
    let put = |key: &str| a.put_object().bucket("sums").key(key).body(ByteStream::from(body.clone()));

    // Two x-amz-checksum-* headers.
    let two = put("two").checksum_crc32_c(sum_of(&ChecksumAlgorithm::Crc32C, &body));
    let two = two.checksum_sha1(sum_of(&ChecksumAlgorithm::Sha1, &body)).send().await;
    assert_eq!(failure(two), ("InvalidRequest".into(), 400));
    // An algorithm and a type that do not go together.
    for (algorithm, kind) in [
        (ChecksumAlgorithm::Sha1, ChecksumType::FullObject),
        (ChecksumAlgorithm::Sha256, ChecksumType::FullObject),
        (ChecksumAlgorithm::Crc64Nvme, ChecksumType::Composite),
    ] {
        let create =
            a.create_multipart_upload().bucket("sums").key("bad").checksum_algorithm(algorithm.clone());
        let refused = create.checksum_type(kind.clone()).send().await;
        assert_eq!(failure(refused), ("InvalidRequest".into(), 400), "{algorithm:?} {kind:?}");
    }
    // A part claiming another algorithm than its upload's.
    let create = a.create_multipart_upload().bucket("sums").key("mixed");
    let create = create.checksum_algorithm(ChecksumAlgorithm::Crc32C).send().await.expect("create");
    let id = create.upload_id().expect("upload id");
    let part = a.upload_part().bucket("sums").key("mixed").upload_id(id).part_number(1);
    let refused =
        part.checksum_algorithm(ChecksumAlgorithm::Sha1).body(ByteStream::from(body.clone())).send().await;
    assert_eq!(failure(refused), ("InvalidRequest".into(), 400));
    let parts = a.list_parts().bucket("sums").key("mixed").upload_id(id).send().await.expect("list parts");
    assert!(parts.parts().is_empty(), "the refused part is not stored");
    // An upload created with no checksum still checks the ones its parts claim.
    let create = a.create_multipart_upload().bucket("sums").key("plain").send().await.expect("create");
    let id = create.upload_id().expect("upload id");
    let part = |number: i32| a.upload_part().bucket("sums").key("plain").upload_id(id).part_number(number);
    let wrong = part(1).checksum_crc32_c(sum_of(&ChecksumAlgorithm::Crc32C, b"other"));
    assert_eq!(failure(wrong.body(ByteStream::from(body.clone())).send().await), ("BadDigest".into(), 400));
    let right = part(1).checksum_algorithm(ChecksumAlgorithm::Crc32C).body(ByteStream::from(body.clone()));
    let right = right.send().await.expect("a right part checksum is accepted");
    assert_eq!(right.checksum_crc32_c(), Some(sum_of(&ChecksumAlgorithm::Crc32C, &body).as_str()));

    // CopyObject keeps a full-object checksum (the same bytes) and drops a composite one (it
    // names parts the copy does not have).
    put("full").checksum_algorithm(ChecksumAlgorithm::Crc32C).send().await.expect("put");
    let create = a.create_multipart_upload().bucket("sums").key("composite");
    let create = create.checksum_algorithm(ChecksumAlgorithm::Crc32C).send().await.expect("create");
    let id = create.upload_id().expect("upload id");
    let part = a.upload_part().bucket("sums").key("composite").upload_id(id).part_number(1);
    let part = part.checksum_algorithm(ChecksumAlgorithm::Crc32C).body(ByteStream::from(body.clone()));
    let uploaded = part.send().await.expect("part");
    let completed = CompletedPart::builder()
        .part_number(1)
        .set_e_tag(uploaded.e_tag)
        .set_checksum_crc32_c(uploaded.checksum_crc32_c)
        .build();
    let done = CompletedMultipartUpload::builder().parts(completed).build();
    let complete = a.complete_multipart_upload().bucket("sums").key("composite").upload_id(id);
    complete.multipart_upload(done).send().await.expect("complete");
    let composite = checked_head(&fx, "sums", "composite").await;
    assert_eq!(composite.checksum_type(), Some(&ChecksumType::Composite));
    assert!(composite.checksum_crc32_c().is_some_and(|sum| sum.ends_with("-1")), "{composite:?}");
    for source in ["full", "composite"] {
        let copy = a
            .copy_object()
            .bucket("sums")
            .key(format!("{source}-copy"))
            .copy_source(format!("sums/{source}"));
        copy.send().await.expect("copy");
    }
    let full = checked_head(&fx, "sums", "full-copy").await;
    assert_eq!(full.checksum_crc32_c(), Some(sum_of(&ChecksumAlgorithm::Crc32C, &body).as_str()));
    assert_eq!(full.checksum_type(), Some(&ChecksumType::FullObject));
    let copied = checked_head(&fx, "sums", "composite-copy").await;
    assert_eq!(copied.checksum_crc32_c(), None, "a composite checksum is not the copy's: {copied:?}");
    assert_ne!(copied.checksum_type(), Some(&ChecksumType::Composite));
}
