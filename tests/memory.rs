//! The memory budget of in-flight uploads (issue 16), against a real `silo serve` child and the
//! AWS SDK: 200 uploads at once stay under the budget plus a fixed baseline, all complete and
//! read back exact; a tight budget only slows uploads down (its `SlowDown`s are absorbed by the
//! SDK's retries); an upload that waits past the limit gets `503 SlowDown` with `Retry-After`
//! and leaves nothing; and memory goes back after the burst.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Silo, metric, raw_put, scratch, sdk_client_with, tenant_with_key};

const MIB: u64 = 1 << 20;
/// What Silo may hold beyond its budget at the peak of a burst: its idle footprint at the
/// start, plus this for everything else (200 connections, their tasks and buffers before the
/// body, the catalog pool, the threads' stacks, the allocator's slack).
const BASELINE_SLACK: u64 = 96 * MIB;
/// How far above its idle start an idle Silo may stay after a burst.
const AFTER_BURST: u64 = 64 * MIB;

/// A kB figure of `/proc/<pid>/status` (VmRSS, VmHWM), in bytes.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status of silo");
    let line = status.lines().find(|line| line.starts_with(field)).expect("the field");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number");
    kb * 1024
}

/// Incompressible bytes from `seed` (BLAKE3's output stream: fast, even in a debug build).
fn body(len: u64, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

/// A Silo on a fresh catalog with `extra` flags, ready.
async fn silo_with(label: &str, extra: &[&str]) -> (Silo, tempfile::TempDir) {
    let url = pg_local::testing::shared().fresh_database(label).await;
    let tmp = scratch();
    let mut args = vec!["--postgres-url", url.as_str()];
    args.extend_from_slice(extra);
    let mut silo = Silo::start(&tmp.path().join("data"), &args);
    silo.wait_ready(Duration::from_secs(30)).await;
    (silo, tmp)
}

/// The burst: `multipart` uploads of `parts` parts of 8 MiB and `singles` PUTs of 64 MiB, all
/// sent at once by one client, then every object read back and compared by digest.
struct Burst {
    multipart: usize,
    parts: usize,
    singles: usize,
}

impl Burst {
    async fn run(&self, client: &aws_sdk_s3::Client, bucket: &str) {
        client.create_bucket().bucket(bucket).send().await.expect("create bucket");
        let mut uploads = Vec::new();
        for upload in 0..self.multipart {
            let key = format!("multi-{upload}");
            let created = client.create_multipart_upload().bucket(bucket).key(&key).send().await;
            uploads.push((key, created.expect("create upload").upload_id().expect("id").to_string()));
        }
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut expected = std::collections::BTreeMap::new();
        for (upload, (key, id)) in uploads.iter().enumerate() {
            let mut whole = blake3::Hasher::new();
            for part in 0..self.parts {
                let data = body(8 * MIB, (upload * 1000 + part) as u64);
                whole.update(&data);
                let request = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(part as i32 + 1)
                    .body(ByteStream::from(data));
                tasks.spawn(async move {
                    let sent = request.send().await.map_err(|err| format!("{err:?}"))?;
                    Ok::<_, String>((upload, part, sent.e_tag().map(str::to_owned)))
                });
            }
            expected.insert(key.clone(), whole.finalize());
        }
        for single in 0..self.singles {
            let key = format!("single-{single}");
            let data = body(64 * MIB, 1_000_000 + single as u64);
            expected.insert(key.clone(), blake3::hash(&data));
            let request = client.put_object().bucket(bucket).key(&key).body(ByteStream::from(data));
            tasks.spawn(async move {
                request.send().await.map_err(|err| format!("{err:?}"))?;
                Ok((usize::MAX, single, None))
            });
        }
        eprintln!("{bucket}: all sent after {:?}", started.elapsed());
        let mut etags = vec![vec![String::new(); self.parts]; self.multipart];
        while let Some(done) = tasks.join_next().await {
            let (upload, part, etag) = done.expect("task").expect("every upload completes");
            if upload != usize::MAX {
                etags[upload][part] = etag.expect("an ETag");
            }
        }
        for ((key, id), etags) in uploads.iter().zip(etags) {
            let parts = etags
                .into_iter()
                .enumerate()
                .map(|(at, etag)| CompletedPart::builder().part_number(at as i32 + 1).e_tag(etag).build())
                .collect();
            let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
            let complete = client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .multipart_upload(done);
            complete.send().await.expect("complete");
        }
        eprintln!("{bucket}: uploaded after {:?}", started.elapsed());
        let started = std::time::Instant::now();
        for (key, digest) in expected {
            let mut read = client.get_object().bucket(bucket).key(&key).send().await.expect("get").body;
            let mut hasher = blake3::Hasher::new();
            while let Some(bytes) = read.try_next().await.expect("body") {
                hasher.update(&bytes);
            }
            assert_eq!(hasher.finalize(), digest, "{key} reads back exact");
        }
        eprintln!("{bucket}: read back in {:?}", started.elapsed());
    }
}

/// A client that retries as a real one would: the standard mode, ten attempts.
fn patient_client(silo: &Silo, id: &str, secret: &str) -> aws_sdk_s3::Client {
    sdk_client_with(silo, id, secret, |config| {
        config.retry_config(RetryConfig::standard().with_max_attempts(10))
    })
}

/// The RSS of an idle Silo, once it has settled (the allocator gives memory back lazily).
async fn settled_rss(pid: u32, at_most: u64) -> u64 {
    let mut rss = proc_status(pid, "VmRSS:");
    for _ in 0..40 {
        if rss <= at_most {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        rss = proc_status(pid, "VmRSS:");
    }
    rss
}

#[tokio::test]
async fn two_hundred_uploads_at_once_stay_within_the_budget_and_memory_goes_back() {
    let (silo, _tmp) = silo_with("memory_200", &[]).await;
    let (id, secret) = tenant_with_key(&silo, "burst");
    let client = patient_client(&silo, &id, &secret);
    let pid = silo.pid();
    let start = proc_status(pid, "VmRSS:");
    // 198 parts of 8 MiB in two uploads and two PUTs of 64 MiB: 200 uploads, 1.7 GB.
    Burst { multipart: 2, parts: 99, singles: 2 }.run(&client, "burst").await;
    let peak = proc_status(pid, "VmHWM:");
    let budget = 256 * MIB;
    eprintln!("RSS at the start {} MiB, peak {} MiB (budget {} MiB)", start / MIB, peak / MIB, budget / MIB);
    assert!(
        peak <= start + budget + BASELINE_SLACK,
        "peak RSS {} MiB over the budget {} MiB + the start {} MiB + {} MiB",
        peak / MIB,
        budget / MIB,
        start / MIB,
        BASELINE_SLACK / MIB
    );
    let after = settled_rss(pid, start + AFTER_BURST).await;
    eprintln!("RSS after the burst {} MiB", after / MIB);
    assert!(
        after <= start + AFTER_BURST,
        "idle RSS {} MiB after the burst, {} MiB at the start",
        after / MIB,
        start / MIB
    );
    assert_eq!(metric(&silo, "silo_memory_in_use_bytes").await, Some(0.0), "every reservation went back");
    // 200 uploads of about 10 MiB each do not fit in 256 MiB at once: some waited, none failed.
    let waits = metric(&silo, "silo_memory_waits_total").await.unwrap_or_default();
    eprintln!("{waits} uploads waited for memory");
    assert!(waits > 0.0, "no upload waited for memory");
    assert_eq!(metric(&silo, "silo_memory_wait_timeouts_total").await, Some(0.0), "no upload timed out");
}

#[tokio::test]
async fn a_budget_of_32_mib_slows_uploads_down_and_the_sdk_absorbs_its_slow_downs() {
    let (silo, _tmp) = silo_with("memory_32", &["--memory-budget-mb", "32", "--memory-wait-secs", "3"]).await;
    let (id, secret) = tenant_with_key(&silo, "tight");
    let client = patient_client(&silo, &id, &secret);
    let pid = silo.pid();
    let start = proc_status(pid, "VmRSS:");
    Burst { multipart: 1, parts: 40, singles: 2 }.run(&client, "tight").await;
    let peak = proc_status(pid, "VmHWM:");
    let slow_downs = metric(&silo, "silo_memory_wait_timeouts_total").await.unwrap_or_default();
    eprintln!(
        "32 MiB budget: RSS at the start {} MiB, peak {} MiB, {slow_downs} SlowDowns retried",
        start / MIB,
        peak / MIB
    );
    assert!(peak <= start + 32 * MIB + BASELINE_SLACK, "peak RSS {} MiB", peak / MIB);
}

#[tokio::test]
async fn an_upload_that_waits_past_the_limit_gets_slow_down_and_leaves_nothing() {
    let (silo, _tmp) =
        silo_with("memory_wait", &["--memory-budget-mb", "1", "--memory-wait-secs", "1"]).await;
    let (id, secret) = tenant_with_key(&silo, "waiter");
    let client = patient_client(&silo, &id, &secret);
    client.create_bucket().bucket("wait").send().await.expect("create bucket");
    let presign = |key: &'static str| {
        let request = client.put_object().bucket("wait").key(key);
        async move { request.presigned(PresigningConfig::expires_in(Duration::from_secs(600)).expect("ok")).await }
    };
    // A 64 MiB PUT that sends a little and stalls: it holds the whole budget.
    let hog = presign("hog").await.expect("presign");
    let mut stalled = raw_put(&silo, &hog, 64 * MIB, &[0u8; 4096]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A small PUT then waits a second for memory and is refused, before its body is stored.
    let small = presign("small").await.expect("presign");
    let mut refused = raw_put(&silo, &small, 1000, &[1u8; 1000]).await;
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), refused.read_to_string(&mut answer)).await;
    read.expect("an answer within the wait limit").expect("read");
    let head = answer.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{answer}");
    assert!(head.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("<Code>SlowDown</Code>"), "{answer}");
    stalled.shutdown().await.ok();
    drop(stalled);
    for key in ["small", "hog"] {
        let head = client.head_object().bucket("wait").key(key).send().await;
        assert!(head.is_err(), "{key} was not stored");
    }
    assert_eq!(metric(&silo, "silo_memory_wait_timeouts_total").await, Some(1.0));
    // The budget is whole again: the same small PUT now goes through.
    client
        .put_object()
        .bucket("wait")
        .key("small")
        .body(ByteStream::from(vec![1u8; 1000]))
        .send()
        .await
        .expect("put");
}
