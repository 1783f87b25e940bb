//! Shared set-up for benchmarks: a durable throwaway Postgres, fresh stores, data generators,
//! timing and reporting.
#![allow(dead_code)]

pub mod load;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pg_local::testing::TestPostgres;
use rand::{RngCore, SeedableRng};
use storage_node::DataDir;
use storage_node::TenantId;
use storage_node::catalog::{connect_pool, tenants};
use storage_node::store::{ChunkStore, NodeSpec, StoreConfig};

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

/// The place benchmarks write to: `SILO_BENCH_DIR`, or a directory under `target/`, which is on
/// the same disk as the project.
pub fn work_dir() -> tempfile::TempDir {
    let base = std::env::var_os("SILO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-work"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::Builder::new().prefix("run-").tempdir_in(&base).expect("bench dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o711)).ok();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).ok();
    dir
}

/// A fresh catalog database and data directory, a store on them and one tenant.
pub async fn fresh_store(
    pg: &TestPostgres,
    work: &Path,
    label: &str,
    config: StoreConfig,
) -> (ChunkStore, TenantId) {
    let url = pg.fresh_database(label).await;
    let pool = connect_pool(url.parse().expect("url"), 16).expect("pool");
    let mut client = deadpool_postgres::Object::take(pool.get().await.expect("connect"));
    storage_node::catalog::migrate(&mut client).await.expect("migrate");
    let data_dir = DataDir::open(&work.join(label)).expect("data dir");
    let node = NodeSpec { name: "bench".into(), zone: "local".into() };
    let store = ChunkStore::open(pool.clone(), &data_dir, &node, config).await.expect("store");
    // The data directory's lock lives as long as the process: the bench is one process.
    std::mem::forget(data_dir);
    let tenant = tenants::create(&pool, "bench", None).await.expect("tenant");
    (store, tenant)
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Log-like text: compressible, as logs, CSV or SQL dumps are.
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let paths = ["/media/video.mp4", "/img/logo.png", "/api/v1/orders", "/index.html", "/assets/app.js"];
    let mut text = Vec::with_capacity(len + 200);
    while text.len() < len {
        let n = rng.next_u64();
        let line = format!(
            "2026-11-28T10:{:02}:{:02}.{:03}Z 10.0.{}.{} GET {} {} {} {}ms \"Mozilla/5.0\"\n",
            n % 60,
            (n >> 8) % 60,
            (n >> 16) % 1000,
            (n >> 24) % 256,
            (n >> 32) % 256,
            paths[((n >> 40) % 5) as usize],
            [200, 200, 200, 304, 404][((n >> 44) % 5) as usize],
            (n >> 48) % 100_000,
            (n >> 56) % 250,
        );
        text.extend_from_slice(line.as_bytes());
    }
    text.truncate(len);
    text
}

/// Writes `len` bytes from `generate(block_index)` blocks to `path`.
pub fn write_file(path: &Path, len: u64, generate: impl Fn(u64) -> Vec<u8>) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut written = 0;
    let mut block = 0;
    while written < len {
        let data = generate(block);
        let n = data.len().min((len - written) as usize);
        file.write_all(&data[..n]).expect("write");
        written += n as u64;
        block += 1;
    }
    file.flush().expect("flush");
    drop(file);
    // Warm the page cache, so that every contender reads the source from memory.
    let _ = std::fs::read(path).map(drop);
    sync();
}

pub fn sync() {
    let _ = Command::new("sync").status();
}

/// Times `dd if=src of=dst bs=4M conv=fsync`, the disk's own pace for the same bytes.
pub fn dd_fsync(src: &Path, dst: &Path) -> Duration {
    sync();
    let started = Instant::now();
    let status = Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .args(["bs=4M", "conv=fsync", "status=none"])
        .status()
        .expect("dd");
    let took = started.elapsed();
    assert!(status.success(), "dd failed");
    let _ = std::fs::remove_file(dst);
    took
}

pub fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// The peak resident set of this process so far, in bytes.
pub fn peak_rss() -> u64 {
    peak_rss_in("/proc/self/status")
}

/// The peak resident set (VmHWM) of process `pid` so far, in bytes.
pub fn peak_rss_of(pid: u32) -> u64 {
    peak_rss_in(&format!("/proc/{pid}/status"))
}

fn peak_rss_in(status: &str) -> u64 {
    let status = std::fs::read_to_string(status).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak resident set (VmHWM) to the current one.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The bytes under `dir`, as allocated on disk.
pub fn disk_usage(dir: &Path) -> u64 {
    let output = Command::new("du").arg("-sb").arg(dir).output().expect("du");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Times one `curl` transfer.
pub fn curl(args: &[&str]) -> Duration {
    let started = Instant::now();
    let output =
        Command::new("curl").args(["-sS", "--fail", "-o", "/dev/null"]).args(args).output().expect("curl");
    let took = started.elapsed();
    assert!(output.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    took
}

pub fn which(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The CPU time (user and system) process `pid` and every descendant now alive have used: a
/// server's own cost, apart from the benchmark's client on the same cores. Descendants that
/// already exited are not counted (Silo's Postgres backends live as long as its pool).
pub fn tree_cpu(pid: u32) -> Duration {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    // Each process's parent and its ticks, from /proc/<pid>/stat (the fields after the name).
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(id) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |at: usize| fields.get(at).and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
        processes.push((id, field(1) as u32, field(11) + field(12)));
    }
    let mut tree = vec![pid];
    let mut total = 0;
    while let Some(parent) = tree.pop() {
        for &(id, ppid, used) in &processes {
            if id == parent {
                total += used;
            }
            if ppid == parent {
                tree.push(id);
            }
        }
    }
    Duration::from_secs_f64(total as f64 / ticks)
}
