//! Peak RSS of Silo against the number of uploads in flight (1, 10, 50, 200): each level sends
//! that many 8 MiB parts of a multipart upload at once through the AWS SDK, and records Silo's
//! peak resident set (VmHWM, reset before each level), its idle RSS after the level, the
//! throughput and the SlowDowns the SDK retried. Silo runs with its default memory budget
//! (256 MiB), or `SILO_BENCH_MEMORY_BUDGET_MB`.
//!
//! `cargo bench --bench memory`. `-- --quick` (or `SILO_BENCH_QUICK=1`) shrinks it to 1 MiB
//! parts at 1 and 10 in flight: a smoke run, e.g. `cargo test --bench memory -- --quick`.

#[path = "../tests/common/mod.rs"]
mod process;

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use common::{MIB, mb_per_s, peak_rss_of, random_bytes};
use process::{Silo, free_addr, silo_cli_json};

fn main() {
    let quick =
        std::env::args().any(|arg| arg == "--quick") || std::env::var_os("SILO_BENCH_QUICK").is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run(quick));
}

/// The resident set (VmRSS) of process `pid` now, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn run(quick: bool) {
    let (levels, part): (&[usize], u64) = if quick { (&[1, 10], MIB) } else { (&[1, 10, 50, 200], 8 * MIB) };
    let budget = std::env::var("SILO_BENCH_MEMORY_BUDGET_MB").unwrap_or_else(|_| "256".into());
    let work = common::work_dir();
    let mut silo =
        Silo::start_at(free_addr(), &work.path().join("silo-data"), &["--memory-budget-mb", &budget], &[]);
    silo.wait_ready(Duration::from_secs(120)).await;
    silo_cli_json(&silo, &["tenant", "create", "bench"]);
    let key = silo_cli_json(&silo, &["key", "create", "bench"]);
    let s3 = s3_client(&silo, &key["access_key_id"], &key["secret_access_key"]);
    s3.create_bucket().bucket("bench").send().await.expect("bucket");
    let pid = silo.pid();
    let idle = rss_of(pid);

    println!(
        "Peak RSS of Silo against uploads in flight ({} MiB parts, budget {budget} MiB); idle at the start: {} MiB",
        part / MIB,
        idle / MIB
    );
    println!("| uploads in flight | peak RSS, MiB | idle after, MiB | MB/s | SlowDowns retried |");
    println!("|---|---|---|---|---|");
    let mut seed = 0;
    for &in_flight in levels {
        let bodies: Vec<Vec<u8>> = (0..in_flight)
            .map(|_| {
                seed += 1;
                random_bytes(part as usize, seed)
            })
            .collect();
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let retried_before = slow_downs(&silo).await;
        let started = Instant::now();
        let upload =
            s3.create_multipart_upload().bucket("bench").key(format!("level-{in_flight}")).send().await;
        let id = upload.expect("create upload").upload_id().expect("id").to_string();
        let mut parts = tokio::task::JoinSet::new();
        for (at, body) in bodies.into_iter().enumerate() {
            let request = s3
                .upload_part()
                .bucket("bench")
                .key(format!("level-{in_flight}"))
                .upload_id(&id)
                .part_number(at as i32 + 1)
                .body(ByteStream::from(body));
            parts.spawn(request.send());
        }
        while let Some(done) = parts.join_next().await {
            done.expect("task").expect("upload part");
        }
        let took = started.elapsed();
        let peak = peak_rss_of(pid);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_of(pid);
        let retried = slow_downs(&silo).await - retried_before;
        let rate = mb_per_s(part * in_flight as u64, took);
        println!("| {in_flight} | {} | {} | {rate:.0} | {retried} |", peak / MIB, after / MIB);
        s3.abort_multipart_upload()
            .bucket("bench")
            .key(format!("level-{in_flight}"))
            .upload_id(&id)
            .send()
            .await
            .ok();
    }
}

/// The uploads Silo answered `SlowDown` after waiting for memory, so far.
async fn slow_downs(silo: &Silo) -> u64 {
    let Ok(response) = reqwest::get(silo.metrics_url()).await else { return 0 };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find(|line| line.starts_with("silo_memory_wait_timeouts"))
        .and_then(|line| line.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

fn s3_client(silo: &Silo, id: &serde_json::Value, secret: &serde_json::Value) -> Client {
    let credentials =
        Credentials::new(id.as_str().expect("key id"), secret.as_str().expect("secret"), None, None, "bench");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(silo.url(""))
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .force_path_style(true)
        .retry_config(RetryConfig::standard().with_max_attempts(10))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(config)
}
