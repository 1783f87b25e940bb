//! Silo with many objects in one bucket: PUT and GET rates and the latency of a 1,000-key
//! ListObjectsV2 page at 10,000, 100,000 and 1,000,000 objects, with the catalog's size on
//! disk per object. Garage slows down past about 10M small objects (its issues #851, #1222);
//! the goal is that Silo stays flat: rates at 1M within 0.9x of those at 10k, and a list page
//! under 20 ms (p50) at 1M.
//!
//! `cargo bench --bench scale`. The objects are loaded through the S3 API (the AWS SDK, 64
//! tasks) and the load time is printed. `SILO_SCALE_OBJECTS` lowers the largest step (for a
//! quick look, e.g. 100000).

#[path = "../tests/common/mod.rs"]
mod process;

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use common::load::{closed_loop, percentile, rate};
use process::{Silo, free_addr, sdk_client, silo_cli_json};
use rand::{Rng, SeedableRng};

const STEPS: [usize; 3] = [10_000, 100_000, 1_000_000];
const OBJECT_LEN: usize = 4 * 1024;
const LOADERS: usize = 64;
const CLIENTS: usize = 32;
const PROBES: usize = 2000;
const PAGES: usize = 30;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let largest: usize =
        std::env::var("SILO_SCALE_OBJECTS").ok().and_then(|n| n.parse().ok()).unwrap_or(STEPS[2]);
    let work = common::work_dir();
    let data_dir = work.path().join("silo-data");
    let mut silo = Silo::start_at(free_addr(), &data_dir, &[], &[]);
    silo.wait_ready(Duration::from_secs(120)).await;
    silo_cli_json(&silo, &["tenant", "create", "scale"]);
    let key = silo_cli_json(&silo, &["key", "create", "scale"]);
    let id = key["access_key_id"].as_str().expect("key id");
    let s3 = sdk_client(&silo, id, key["secret_access_key"].as_str().expect("secret"));
    s3.create_bucket().bucket("scale").send().await.expect("bucket");

    println!("Silo with many {OBJECT_LEN}-byte objects in one bucket ({CLIENTS} SDK tasks per measure)");
    println!(
        "| objects | load time | PUT/s | GET/s | list page p50, ms | list page p99, ms | catalog bytes/object |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut loaded = 0;
    let load_started = Instant::now();
    for step in STEPS.into_iter().filter(|step| *step <= largest) {
        load(&s3, loaded, step).await;
        loaded = step;
        let load_time = load_started.elapsed();
        let puts = put_rate(&s3, step).await;
        let gets = get_rate(&s3, loaded).await;
        let (p50, p99) = list_latency(&s3, loaded).await;
        let catalog = common::disk_usage(&data_dir.join("postgres")) as f64 / loaded as f64;
        println!(
            "| {loaded} | {:.0} s | {puts:.0} | {gets:.0} | {p50:.1} | {p99:.1} | {catalog:.0} |",
            load_time.as_secs_f64()
        );
    }
    drop(silo);
}

fn key_of(i: usize) -> String {
    format!("media/{i:09}.jpg")
}

fn body_of(i: usize) -> Vec<u8> {
    common::random_bytes(OBJECT_LEN, i as u64)
}

/// PUTs objects `from..to` with [`LOADERS`] tasks.
async fn load(s3: &Client, from: usize, to: usize) {
    let s3 = s3.clone();
    closed_loop(to - from, LOADERS, move |i| {
        let put =
            s3.put_object().bucket("scale").key(key_of(from + i)).body(ByteStream::from(body_of(from + i)));
        async move {
            put.send().await.expect("load put");
        }
    })
    .await;
}

/// PUTs per second of [`PROBES`] new objects (outside the loaded key range).
async fn put_rate(s3: &Client, step: usize) -> f64 {
    let s3 = s3.clone();
    let took = closed_loop(PROBES, CLIENTS, move |i| {
        let put = s3
            .put_object()
            .bucket("scale")
            .key(format!("probe/{step}/{i}"))
            .body(ByteStream::from(body_of(usize::MAX - i)));
        async move {
            put.send().await.expect("probe put");
        }
    })
    .await;
    rate(PROBES, took)
}

/// GETs per second of [`PROBES`] random loaded objects.
async fn get_rate(s3: &Client, loaded: usize) -> f64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(loaded as u64);
    let picks: std::sync::Arc<Vec<usize>> =
        std::sync::Arc::new((0..PROBES).map(|_| rng.random_range(0..loaded)).collect());
    let s3 = s3.clone();
    let took = closed_loop(PROBES, CLIENTS, move |i| {
        let get = s3.get_object().bucket("scale").key(key_of(picks[i]));
        async move {
            let got = get.send().await.expect("get");
            assert_eq!(got.body.collect().await.expect("body").into_bytes().len(), OBJECT_LEN);
        }
    })
    .await;
    rate(PROBES, took)
}

/// The p50 and p99 latency in ms of 1,000-key pages starting at random loaded keys.
async fn list_latency(s3: &Client, loaded: usize) -> (f64, f64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7 + loaded as u64);
    let mut latencies = Vec::with_capacity(PAGES);
    for _ in 0..PAGES {
        let after = key_of(rng.random_range(0..loaded.saturating_sub(1000).max(1)));
        let started = Instant::now();
        let page = s3
            .list_objects_v2()
            .bucket("scale")
            .prefix("media/")
            .start_after(after)
            .max_keys(1000)
            .send()
            .await
            .expect("list");
        latencies.push(started.elapsed());
        assert_eq!(page.contents().len(), 1000.min(loaded - 1));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(percentile(&mut latencies, 50.0)), ms(percentile(&mut latencies, 99.0)))
}
