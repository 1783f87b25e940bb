//! The S3 data plane against nginx on loopback, in one run: PUT and GET of a 1 GiB object (curl
//! of presigned URLs against curl of nginx serving the same file, and nginx's WebDAV PUT),
//! 1,000 random 1 MiB ranges over one keep-alive connection, and 16 KiB PUT and GET operations
//! per second with 32 concurrent clients (the AWS SDK against a plain HTTP client of nginx).
//!
//! `cargo bench --bench s3`. Silo runs as the release binary on the embedded Postgres, with
//! fsync on; nginx is Debian's package (`apt-get install nginx`).

#[path = "../tests/common/mod.rs"]
mod process;

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use common::{GIB, MIB, curl, mb_per_s, random_bytes, write_file};
use process::{Silo, free_addr, silo_cli_json};
use rand::{Rng, SeedableRng};

const RUNS: usize = 3;
const RANGES: usize = 1000;
const SMALL_OBJECTS: usize = 2000;
const CLIENTS: usize = 32;

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
    let nginx = Nginx::start(work.path(), &www);

    let mut silo = Silo::start_at(free_addr(), &work.path().join("silo-data"), &[], &[]);
    silo.wait_ready(Duration::from_secs(120)).await;
    silo_cli_json(&silo, &["tenant", "create", "bench"]);
    let key = silo_cli_json(&silo, &["key", "create", "bench"]);
    let s3 = s3_client(silo.addr, &key["access_key_id"], &key["secret_access_key"]);
    s3.create_bucket().bucket("bench").send().await.expect("bucket");
    let hour = PresigningConfig::expires_in(Duration::from_secs(3600)).expect("presign");

    println!("S3 data plane against nginx {} on loopback, medians of {RUNS}", nginx.version);
    println!("| measure | Silo | baseline | ratio |");
    println!("|---|---|---|---|");

    // 1 GiB PUT: curl -T of a presigned URL (Silo fsyncs before it answers) against nginx's
    // WebDAV PUT (no fsync) and against dd conv=fsync of the same file.
    let mut silo_puts = Vec::new();
    let mut nginx_puts = Vec::new();
    let mut dd = Vec::new();
    for run in 0..RUNS {
        let put = s3.put_object().bucket("bench").key(format!("big-{run}.bin")).presigned(hour.clone()).await;
        silo_puts.push(curl(&["-T", &big.to_string_lossy(), put.expect("presign").uri()]));
        nginx_puts.push(curl(&["-T", &big.to_string_lossy(), &nginx.url(&format!("/put/big-{run}.bin"))]));
        dd.push(common::dd_fsync(&big, &work.path().join("dd.bin")));
    }
    let silo_put = mb_per_s(GIB, median(&mut silo_puts));
    report("PUT 1 GiB, MB/s (vs nginx WebDAV PUT)", silo_put, mb_per_s(GIB, median(&mut nginx_puts)));
    report("PUT 1 GiB, MB/s (vs dd conv=fsync)", silo_put, mb_per_s(GIB, median(&mut dd)));

    // 1 GiB GET: curl of a presigned URL against curl of nginx serving the file (sendfile).
    let get = s3.get_object().bucket("bench").key("big-0.bin").presigned(hour.clone()).await;
    let get_url = get.expect("presign").uri().to_string();
    let (mut silo_gets, mut nginx_gets): (Vec<_>, Vec<_>) = (0..RUNS)
        .map(|_| (curl(&["-o", "/dev/null", &get_url]), curl(&["-o", "/dev/null", &nginx.url("/big.bin")])))
        .unzip();
    report("GET 1 GiB, MB/s", mb_per_s(GIB, median(&mut silo_gets)), mb_per_s(GIB, median(&mut nginx_gets)));

    // 1,000 random 1 MiB ranges over one keep-alive connection each.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let offsets: Vec<u64> = (0..RANGES).map(|_| rng.random_range(0..GIB - MIB)).collect();
    let mut silo_ranges = Vec::new();
    let mut nginx_ranges = Vec::new();
    for _ in 0..RUNS {
        silo_ranges.push(ranges(&get_url, &offsets).await);
        nginx_ranges.push(ranges(&nginx.url("/big.bin"), &offsets).await);
    }
    let per_s = |took: Duration| RANGES as f64 / took.as_secs_f64();
    report(
        "1 MiB random ranges, keep-alive, /s",
        per_s(median(&mut silo_ranges)),
        per_s(median(&mut nginx_ranges)),
    );

    // 16 KiB objects, 32 concurrent clients: the SDK (signing every request) against nginx.
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..SMALL_OBJECTS).map(|i| random_bytes(16 * 1024, 1000 + i as u64)).collect());
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().expect("http");
    let ops = |took: Duration| SMALL_OBJECTS as f64 / took.as_secs_f64();
    let silo_small_put = concurrently(bodies.clone(), {
        let s3 = s3.clone();
        move |i, body| {
            let s3 = s3.clone();
            async move {
                let put =
                    s3.put_object().bucket("bench").key(format!("small/{i}")).body(ByteStream::from(body));
                put.send().await.expect("small put");
            }
        }
    })
    .await;
    let nginx_small_put = concurrently(bodies.clone(), {
        let (http, base) = (http.clone(), nginx.url("/put/small"));
        move |i, body| {
            let (http, url) = (http.clone(), format!("{base}-{i}"));
            async move {
                let response = http.put(url).body(body).send().await.expect("nginx put");
                assert!(response.status().is_success(), "nginx PUT: {}", response.status());
            }
        }
    })
    .await;
    report("PUT 16 KiB, 32 clients, ops/s", ops(silo_small_put), ops(nginx_small_put));
    let silo_small_get = concurrently(bodies.clone(), {
        let s3 = s3.clone();
        move |i, body| {
            let s3 = s3.clone();
            async move {
                let got =
                    s3.get_object().bucket("bench").key(format!("small/{i}")).send().await.expect("get");
                let bytes = got.body.collect().await.expect("body").into_bytes();
                assert_eq!(bytes.len(), body.len());
            }
        }
    })
    .await;
    let nginx_small_get = concurrently(bodies.clone(), {
        let (http, base) = (http.clone(), nginx.url("/put/small"));
        move |i, body| {
            let (http, url) = (http.clone(), format!("{base}-{i}"));
            async move {
                let bytes = http.get(url).send().await.expect("nginx get").bytes().await.expect("body");
                assert_eq!(bytes.len(), body.len());
            }
        }
    })
    .await;
    report("GET 16 KiB, 32 clients, ops/s", ops(silo_small_get), ops(nginx_small_get));
    drop(silo);
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

/// Runs `op` once per body with `CLIENTS` in flight; returns the wall time.
async fn concurrently<F, Fut>(bodies: Arc<Vec<Vec<u8>>>, op: F) -> Duration
where
    F: Fn(usize, Vec<u8>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, bodies, op) = (next.clone(), bodies.clone(), op.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    op(i, body.clone()).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    started.elapsed()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn report(measure: &str, silo: f64, baseline: f64) {
    println!("| {measure} | {silo:.0} | {baseline:.0} | {:.2}x |", silo / baseline);
}

/// nginx on a free loopback port: serves `root` and takes WebDAV PUTs under `/put/`.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    version: String,
}

impl Nginx {
    fn start(work: &Path, root: &Path) -> Nginx {
        let addr = free_addr();
        let dir = work.join("nginx");
        std::fs::create_dir_all(dir.join("put")).expect("nginx dir");
        let config = format!(
            "daemon off; worker_processes 2; pid {dir}/nginx.pid; error_log {dir}/error.log;
            {user}
            events {{ worker_connections 1024; }}
            http {{
                access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;
                keepalive_requests 1000000; client_max_body_size 0;
                client_body_temp_path {dir}/body;
                server {{
                    listen {addr};
                    location / {{ root {root}; }}
                    location /put/ {{ root {dir}; dav_methods PUT; create_full_put_path on; }}
                }}
            }}",
            dir = dir.display(),
            root = root.display(),
            user = if process::is_root() { "user root;" } else { "" },
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).expect("nginx config");
        let version = Command::new("nginx").arg("-v").output().map_or_else(
            |_| "?".into(),
            |o| String::from_utf8_lossy(&o.stderr).trim().trim_start_matches("nginx version: ").to_string(),
        );
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx");
        let nginx = Nginx { child, addr, version };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
