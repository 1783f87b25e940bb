//! The S3 data plane against nginx on loopback, in one run, the table of issue 13: 1 GiB PUT and
//! GET (curl of presigned URLs against curl of nginx), 1,000 random 1 MiB ranges over one
//! keep-alive connection, 16 KiB GETs of public-read objects with the same plain HTTP client
//! for Silo and nginx, signed 16 KiB GETs and PUTs through the AWS SDK, the same signed GETs
//! presigned and sent by the plain client (the server's cost of SigV4), the same SDK PUTs and
//! GETs sent to nginx (the SDK client's own ceiling on these cores), and the p99 latency of
//! 16 KiB GETs at half Silo's peak rate, for Silo and nginx at the same rate.
//!
//! `cargo bench --bench s3`. Silo runs as the release binary on the embedded Postgres, with
//! fsync on; nginx is Debian's package (`apt-get install nginx`). Every measure is run
//! [`RUNS`] times; the table gives the median and the range.

#[path = "../tests/common/mod.rs"]
mod process;

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::BucketCannedAcl;
use common::load::{Spread, closed_loop, open_loop, percentile, rate};
use common::{GIB, MIB, curl, mb_per_s, random_bytes, write_file};
use process::nginx::Nginx;
use process::{Silo, free_addr, silo_cli_json};
use rand::{Rng, SeedableRng};

const RUNS: usize = 3;
const RANGES: usize = 1000;
const SMALL_OBJECTS: usize = 2000;
const SMALL_LEN: usize = 16 * 1024;
const CLIENTS: usize = 32;
/// The 16 KiB PUT rate before issue 13 (docs/benchmarks.md, 2026-11-29): the PUT goal is 10x.
const PUT_RATE_BEFORE: f64 = 350.0;
const LATENCY_RUN: Duration = Duration::from_secs(5);
/// The open loop's requests in flight at most (and so its connections): the rest wait their
/// turn, and the wait counts in their latency. Unbounded, a stall of the server made the client
/// open connections past Silo's cap of 1,024, and the ones shed ended the run.
const IN_FLIGHT: usize = 256;

fn main() {
    if !common::which("nginx") || !common::which("curl") {
        eprintln!("s3 bench: needs nginx and curl (apt-get install nginx curl)");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let work = common::work_dir();
    let www = work.path().join("www");
    std::fs::create_dir_all(www.join("small")).expect("www");
    let big = www.join("big.bin");
    write_file(&big, GIB, |block| random_bytes(4 * MIB as usize, block));
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..SMALL_OBJECTS).map(|i| random_bytes(SMALL_LEN, 1000 + i as u64)).collect());
    for (i, body) in bodies.iter().enumerate() {
        std::fs::write(www.join(format!("small/{i}")), body).expect("small file");
    }
    let nginx = Nginx::serving(work.path(), &www);

    let mut silo = Silo::start_at(free_addr(), &work.path().join("silo-data"), &[], &[]);
    silo.wait_ready(Duration::from_secs(120)).await;
    silo_cli_json(&silo, &["tenant", "create", "bench"]);
    let key = silo_cli_json(&silo, &["key", "create", "bench"]);
    let s3 = s3_client(silo.addr, &key["access_key_id"], &key["secret_access_key"]);
    s3.create_bucket().bucket("bench").send().await.expect("bucket");
    s3.create_bucket().bucket("site").acl(BucketCannedAcl::PublicRead).send().await.expect("public bucket");

    println!(
        "S3 data plane against nginx {} on loopback, medians (and ranges) of {RUNS} runs",
        nginx.version
    );
    println!("| measure | Silo | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    // `SILO_BENCH_SMALL_ONLY=1` skips the large objects (a quicker run while working on them).
    if std::env::var_os("SILO_BENCH_SMALL_ONLY").is_none() {
        large_objects(&s3, &nginx, &big).await;
    }
    // `SILO_BENCH_LARGE_ONLY=1` skips the small ones.
    if std::env::var_os("SILO_BENCH_LARGE_ONLY").is_none() {
        // The same SDK client pointed at nginx (which ignores the signature): what the client
        // alone can do on these cores, against a server that costs next to nothing.
        let at_nginx = s3_client(nginx.addr, &key["access_key_id"], &key["secret_access_key"]);
        small_objects(&s3, &at_nginx, &silo, &nginx, bodies).await;
    }
    drop(silo);
}

/// 1 GiB PUT and GET, and random 1 MiB ranges of it.
async fn large_objects(s3: &Client, nginx: &Nginx, big: &std::path::Path) {
    let hour = PresigningConfig::expires_in(Duration::from_secs(3600)).expect("presign");
    let file = big.to_string_lossy();
    let (mut silo_puts, mut nginx_puts, mut dd) = (Vec::new(), Vec::new(), Vec::new());
    let work = big.parent().expect("www");
    for run in 0..RUNS {
        let put = s3.put_object().bucket("bench").key(format!("big-{run}.bin")).presigned(hour.clone()).await;
        silo_puts.push(mb_per_s(GIB, curl(&["-T", &file, put.expect("presign").uri()])));
        nginx_puts.push(mb_per_s(GIB, curl(&["-T", &file, &nginx.url(&format!("/put/big-{run}.bin"))])));
        dd.push(mb_per_s(GIB, common::dd_fsync(big, &work.join("dd.bin"))));
    }
    let silo_put = Spread::of(silo_puts);
    report("PUT 1 GiB, MB/s (vs nginx WebDAV PUT, no fsync)", silo_put, Spread::of(nginx_puts), "");
    report("PUT 1 GiB, MB/s (vs dd conv=fsync)", silo_put, Spread::of(dd), "");

    let get = s3.get_object().bucket("bench").key("big-0.bin").presigned(hour).await;
    let get_url = get.expect("presign").uri().to_string();
    let (silo_gets, nginx_gets): (Vec<_>, Vec<_>) = (0..RUNS)
        .map(|_| {
            let silo = curl(&["-o", "/dev/null", &get_url]);
            (mb_per_s(GIB, silo), mb_per_s(GIB, curl(&["-o", "/dev/null", &nginx.url("/big.bin")])))
        })
        .unzip();
    report("GET 1 GiB, MB/s (curl)", Spread::of(silo_gets), Spread::of(nginx_gets), ">= 0.9x");

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let offsets: Vec<u64> = (0..RANGES).map(|_| rng.random_range(0..GIB - MIB)).collect();
    let (mut silo_ranges, mut nginx_ranges) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        silo_ranges.push(rate(RANGES, ranges(&get_url, &offsets).await));
        nginx_ranges.push(rate(RANGES, ranges(&nginx.url("/big.bin"), &offsets).await));
    }
    report(
        "1 MiB random ranges, keep-alive, /s",
        Spread::of(silo_ranges),
        Spread::of(nginx_ranges),
        ">= 1.0x",
    );
}

/// 16 KiB objects: PUTs through the SDK, public-read GETs with a plain client against nginx,
/// signed GETs against Silo's own public-read GETs, and latency at half the peak rate.
async fn small_objects(
    s3: &Client,
    at_nginx: &Client,
    silo: &Silo,
    nginx: &Nginx,
    bodies: Arc<Vec<Vec<u8>>>,
) {
    // The CPU time of Silo's process, and of its embedded Postgres (not its child: pg_ctl starts
    // it on its own; its background work, autovacuum after the PUTs say, lands in any phase).
    let (silo_pid, postmaster) = (silo.pid(), silo.postmaster_pid());
    let presigned = presigned_gets(s3).await;
    let server_cpu = move || {
        let postgres = postmaster.map(common::tree_cpu).unwrap_or_default();
        [common::tree_cpu(silo_pid), postgres]
    };
    let silo = silo.addr;
    // The first run writes the public bucket the GETs below read.
    let puts = Spread::of(sdk_puts(s3, |run| if run == 0 { "site" } else { "bench" }, &bodies).await);
    let before = Spread { median: PUT_RATE_BEFORE, low: PUT_RATE_BEFORE, high: PUT_RATE_BEFORE };
    report(
        "PUT 16 KiB, 32 SDK tasks, ops/s (vs 350/s recorded 2026-11-29, not re-run)",
        puts,
        before,
        ">= 10x",
    );
    // nginx's WebDAV location is /put/.
    let ceiling = sdk_puts(at_nginx, |_| "put", &bodies).await;
    report(
        "PUT 16 KiB, 32 SDK tasks, ops/s (vs the same SDK PUTs to nginx WebDAV: no fsync, no catalog; the client's ceiling)",
        puts,
        Spread::of(ceiling),
        "",
    );

    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().expect("http");
    let silo_url = move |i: usize| format!("http://{silo}/site/small/0/{i}");
    let nginx_base = nginx.url("/small");
    let nginx_url = move |i: usize| format!("{nginx_base}/{i}");
    // One pass of each first, not timed: Silo's read cache and nginx's page cache are filled
    // for every timed run alike, and Silo's CPU below is of GETs answered from its cache.
    warm(&http, silo_url).await;
    warm(&http, nginx_url.clone()).await;
    let cpu_before = server_cpu();
    let public = plain_gets(&http, silo_url).await;
    let public_cpu = spent(cpu_before, server_cpu());
    let from_nginx = plain_gets(&http, nginx_url.clone()).await;
    report("GET 16 KiB public-read, 32 connections, ops/s", public, from_nginx, ">= 0.5x");

    let cpu_before = server_cpu();
    let signed = sdk_gets(s3, "site", |i| format!("small/0/{i}")).await;
    // What each GET cost Silo itself, apart from the client that shares the two cores: the SDK
    // signs in the client, Silo checks the signature. Its Postgres is shown apart: no GET here
    // queries it (each is answered from the caches), but its background work is counted.
    let signed_cpu = spent(cpu_before, server_cpu());
    let signed = Spread::of(signed);
    report("GET 16 KiB signed, 32 SDK tasks, ops/s (vs public-read)", signed, public, ">= 0.6x");
    // nginx serves the same bodies as /small/{i}.
    let ceiling = sdk_gets(at_nginx, "small", |i| i.to_string()).await;
    let ceiling = Spread::of(ceiling);
    report(
        "GET 16 KiB signed, 32 SDK tasks, ops/s (vs the same SDK GETs of nginx's files: the client's ceiling)",
        signed,
        ceiling,
        "",
    );
    report(
        "the SDK client's ceiling of 16 KiB GETs, ops/s (vs Silo's public-read GET: the most the signed ratio can be here)",
        ceiling,
        public,
        "",
    );
    let per_get = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (RUNS * SMALL_OBJECTS) as f64;
    let ([signed_us, signed_pg], [public_us, public_pg]) = (signed_cpu.map(per_get), public_cpu.map(per_get));
    println!(
        "| Silo's process CPU per 16 KiB GET, signed vs public-read, us (its Postgres meanwhile: {signed_pg:.0} and {public_pg:.0}) | {signed_us:.0} | {public_us:.0} | {:.2}x | |",
        public_us / signed_us
    );

    // The same signed GETs from the plain client (SigV4 in the query string, presigned before
    // the timing): what checking a signature costs Silo, apart from what signing costs the SDK.
    let cpu_before = server_cpu();
    let presigned_url = move |i: usize| presigned[i].clone();
    let by_url = plain_gets(&http, presigned_url.clone()).await;
    let by_url_cpu = spent(cpu_before, server_cpu());
    report("GET 16 KiB presigned, 32 connections, ops/s (vs public-read)", by_url, public, "");
    let [by_url_us, by_url_pg] = by_url_cpu.map(per_get);
    println!(
        "| Silo's process CPU per 16 KiB GET, presigned vs public-read, us (its Postgres meanwhile: {by_url_pg:.0}) | {by_url_us:.0} | {public_us:.0} | {:.2}x | |",
        public_us / by_url_us
    );
    // A GET costs the server more CPU the fewer arrive at once (each wakes a worker that then
    // parks again), so CPU per GET compares only at one pace: here with the same few
    // connections for both.
    for clients in [1, 4] {
        let (public_rate, public_us) = cpu_per_get(&http, silo_url, clients, &server_cpu).await;
        let (signed_rate, signed_us) = cpu_per_get(&http, presigned_url.clone(), clients, &server_cpu).await;
        println!(
            "| Silo's process CPU per 16 KiB GET with {clients} connection(s), presigned ({signed_rate:.0}/s) vs public-read ({public_rate:.0}/s), us | {signed_us:.0} | {public_us:.0} | {:.2}x | |",
            public_us / signed_us
        );
    }

    // Both at half of Silo's peak rate, so that the comparison is of latency, not of capacity.
    // The open loop's client keeps every connection it opened (reqwest's default pool) and has
    // at most IN_FLIGHT requests out: a burst must not turn into a storm of new connections,
    // which no browser or CDN in front of a site would make.
    let per_second = public.median / 2.0;
    let http = reqwest::Client::new();
    // Its first connections are opened before anything is timed, to both servers.
    warm(&http, silo_url).await;
    warm(&http, nginx_url.clone()).await;
    let (mut silo_p99, mut nginx_p99) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        silo_p99.push(p99_at(&http, per_second, silo_url).await);
        nginx_p99.push(p99_at(&http, per_second, nginx_url.clone()).await);
    }
    println!(
        "| p99 of a 16 KiB GET at {per_second:.0}/s (half the public-read peak), ms | {} | {} | {:.2}x | <= 3x |",
        Spread::of(silo_p99.clone()),
        Spread::of(nginx_p99.clone()),
        Spread::of(silo_p99).median / Spread::of(nginx_p99).median
    );
}

/// [`RUNS`] runs of PUTs of every small body through `s3`, run `n` to bucket `bucket(n)`
/// under `small/{n}/`: their rates.
async fn sdk_puts(s3: &Client, bucket: fn(usize) -> &'static str, bodies: &Arc<Vec<Vec<u8>>>) -> Vec<f64> {
    let mut rates = Vec::new();
    for run in 0..RUNS {
        let (s3, bodies) = (s3.clone(), bodies.clone());
        let took = closed_loop(SMALL_OBJECTS, CLIENTS, move |i| {
            let put = s3
                .put_object()
                .bucket(bucket(run))
                .key(format!("small/{run}/{i}"))
                .body(ByteStream::from(bodies[i].clone()));
            async move {
                put.send().await.expect("small put");
            }
        })
        .await;
        rates.push(rate(SMALL_OBJECTS, took));
    }
    rates
}

/// [`RUNS`] runs of GETs of every small object, `bucket`/`key(i)`, through `s3`: their rates.
async fn sdk_gets(s3: &Client, bucket: &'static str, key: fn(usize) -> String) -> Vec<f64> {
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let s3 = s3.clone();
        let took = closed_loop(SMALL_OBJECTS, CLIENTS, move |i| {
            let get = s3.get_object().bucket(bucket).key(key(i));
            async move {
                let got = get.send().await.expect("get");
                let bytes = got.body.collect().await.expect("body").into_bytes();
                assert_eq!(bytes.len(), SMALL_LEN);
            }
        })
        .await;
        rates.push(rate(SMALL_OBJECTS, took));
    }
    rates
}

/// A presigned GET URL of each small object of the public bucket, valid for an hour.
async fn presigned_gets(s3: &Client) -> Arc<Vec<String>> {
    let mut urls = Vec::with_capacity(SMALL_OBJECTS);
    for i in 0..SMALL_OBJECTS {
        let config = PresigningConfig::expires_in(Duration::from_secs(3600)).expect("expiry");
        let get = s3.get_object().bucket("site").key(format!("small/0/{i}")).presigned(config);
        urls.push(get.await.expect("presign").uri().to_string());
    }
    Arc::new(urls)
}

/// GETs every small object three times through `clients` connections of `http`: the rate, and
/// the CPU time of Silo's process per GET in microseconds.
async fn cpu_per_get(
    http: &reqwest::Client,
    url: impl Fn(usize) -> String + Clone + Send + 'static,
    clients: usize,
    server_cpu: &impl Fn() -> [Duration; 2],
) -> (f64, f64) {
    let count = 3 * SMALL_OBJECTS;
    let before = server_cpu();
    let took = get_small(http, url, count, clients).await;
    let [silo, _] = spent(before, server_cpu());
    (rate(count, took), silo.as_secs_f64() * 1e6 / count as f64)
}

/// The CPU time used between two readings of [`small_objects`]' `server_cpu`.
fn spent(before: [Duration; 2], after: [Duration; 2]) -> [Duration; 2] {
    [after[0].saturating_sub(before[0]), after[1].saturating_sub(before[1])]
}

/// GETs every small object with a plain HTTP client, [`RUNS`] times; their rates.
async fn plain_gets(
    http: &reqwest::Client,
    url: impl Fn(usize) -> String + Clone + Send + 'static,
) -> Spread {
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let took = get_small(http, url.clone(), SMALL_OBJECTS, CLIENTS).await;
        rates.push(rate(SMALL_OBJECTS, took));
    }
    Spread::of(rates)
}

/// `count` GETs of the small objects in turn through `clients` connections; the time taken.
async fn get_small(
    http: &reqwest::Client,
    url: impl Fn(usize) -> String + Clone + Send + 'static,
    count: usize,
    clients: usize,
) -> Duration {
    let http = http.clone();
    closed_loop(count, clients, move |i| {
        let get = http.get(url(i % SMALL_OBJECTS)).send();
        async move {
            let response = get.await.expect("get");
            assert!(response.status().is_success(), "GET: {}", response.status());
            assert_eq!(response.bytes().await.expect("body").len(), SMALL_LEN);
        }
    })
    .await
}

/// GETs every small object once through 64 connections of `http` (which it keeps open) to the
/// server of `url`.
async fn warm(http: &reqwest::Client, url: impl Fn(usize) -> String + Send + Sync + 'static) {
    let (http, url) = (http.clone(), std::sync::Arc::new(url));
    closed_loop(SMALL_OBJECTS, 64, move |i| {
        let get = http.get(url(i)).send();
        async move {
            get.await.expect("warm-up get").bytes().await.expect("warm-up body");
        }
    })
    .await;
}

/// The p99 latency in milliseconds of GETs of the small objects at `per_second`.
async fn p99_at(
    http: &reqwest::Client,
    per_second: f64,
    url: impl Fn(usize) -> String + Send + 'static,
) -> f64 {
    let http = http.clone();
    let mut latencies = open_loop(per_second, LATENCY_RUN, IN_FLIGHT, move |i| {
        let get = http.get(url(i % SMALL_OBJECTS)).send();
        async move {
            let response = get.await.expect("get");
            assert!(response.status().is_success(), "GET: {}", response.status());
            response.bytes().await.expect("body");
        }
    })
    .await;
    percentile(&mut latencies, 99.0).as_secs_f64() * 1000.0
}

fn s3_client(addr: SocketAddr, id: &serde_json::Value, secret: &serde_json::Value) -> Client {
    let credentials =
        Credentials::new(id.as_str().expect("key id"), secret.as_str().expect("secret"), None, None, "bench");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(format!("http://{addr}"))
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(config)
}

/// Fetches `offsets` as 1 MiB ranges, one after another on one keep-alive connection.
async fn ranges(url: &str, offsets: &[u64]) -> Duration {
    let http = reqwest::Client::builder().pool_max_idle_per_host(1).tcp_nodelay(true).build().expect("http");
    let started = Instant::now();
    for offset in offsets {
        let range = format!("bytes={offset}-{}", offset + MIB - 1);
        let response = http.get(url).header("Range", range).send().await.expect("range");
        assert_eq!(response.status(), 206);
        assert_eq!(response.bytes().await.expect("body").len() as u64, MIB);
    }
    started.elapsed()
}

fn report(measure: &str, silo: Spread, baseline: Spread, goal: &str) {
    println!("| {measure} | {silo} | {baseline} | {:.2}x | {goal} |", silo.median / baseline.median);
}
