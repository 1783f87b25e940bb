//! Chunk store benchmarks. Each prints its ratio to a baseline measured in the same run.
//!
//! ```text
//! cargo bench --bench chunk_store -- [ingest] [compressible] [dedup] [ranges] [rss]
//! ```
//! With no names, all run. Results and the commands go in `docs/benchmarks.md`.

mod common;

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::process::Command;
use std::time::Instant;

use common::*;
use futures::StreamExt;
use pg_local::testing::TestPostgres;
use rand::{Rng, SeedableRng};
use storage_node::chunker::ChunkSizes;
use storage_node::store::{PutOptions, StoreConfig};

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let pg = TestPostgres::durable().expect("a durable Postgres for the catalog");
    let work = work_dir();
    runtime.block_on(async {
        if runs("ingest") {
            ingest(&pg, work.path(), "ingest", |block| random_bytes(4 * MIB as usize, block)).await;
        }
        if runs("compressible") {
            ingest(&pg, work.path(), "compressible", |block| text_bytes(4 * MIB as usize, block)).await;
        }
        if runs("dedup") {
            dedup_series(&pg, work.path()).await;
        }
        if runs("ranges") {
            ranges(&pg, work.path()).await;
        }
        if runs("rss") {
            rss(&pg, work.path()).await;
        }
    });
}

/// 1 GiB through `put` against `dd conv=fsync` of the same file on the same disk, alternating
/// three times (the disk's pace varies a lot between runs); medians are compared.
async fn ingest(pg: &TestPostgres, work: &std::path::Path, label: &str, generate: impl Fn(u64) -> Vec<u8>) {
    const ROUNDS: usize = 3;
    let src = work.join(format!("{label}.src"));
    write_file(&src, GIB, generate);
    let (mut silo, mut dd) = (Vec::new(), Vec::new());
    let mut stored = None;
    for round in 0..ROUNDS {
        dd.push(dd_fsync(&src, &work.join(format!("{label}.dd"))));
        let (store, tenant) = fresh_store(pg, work, &format!("{label}{round}"), StoreConfig::default()).await;
        sync();
        let file = tokio::fs::File::open(&src).await.expect("open");
        let started = Instant::now();
        let options = PutOptions { expected_len: Some(GIB), md5: false };
        stored = Some(store.put(tenant, file, options).await.expect("put"));
        silo.push(started.elapsed());
        drop(store);
        let _ = std::fs::remove_dir_all(work.join(format!("{label}{round}")).join("packs"));
    }
    let (silo, dd) = (median(&mut silo), median(&mut dd));
    let stored = stored.expect("a round ran");
    println!(
        "{label}: 1 GiB in {:.2} s ({:.0} MB/s), dd conv=fsync {:.2} s ({:.0} MB/s): {:.2}x dd \
         (medians of {ROUNDS}); stored {:.1} MiB ({:.3} of logical), {} chunks",
        silo.as_secs_f64(),
        mb_per_s(GIB, silo),
        dd.as_secs_f64(),
        mb_per_s(GIB, dd),
        dd.as_secs_f64() / silo.as_secs_f64(),
        stored.new_stored_bytes as f64 / MIB as f64,
        stored.new_stored_bytes as f64 / GIB as f64,
        stored.chunk_count,
    );
    let _ = std::fs::remove_file(&src);
}

fn median(times: &mut [std::time::Duration]) -> std::time::Duration {
    times.sort();
    times[times.len() / 2]
}

/// 10 versions of a 256 MiB file (half random, half text), each with 10 small inserts and 10
/// small deletes: Silo's stored bytes against restic and against fixed 1 MiB blocks.
async fn dedup_series(pg: &TestPostgres, work: &std::path::Path) {
    const VERSION: usize = 256 * MIB as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut current = random_bytes(VERSION / 2, 1);
    current.extend(text_bytes(VERSION / 2, 2));
    let mut versions = vec![current.clone()];
    for _ in 1..10 {
        for _ in 0..10 {
            let at = rng.random_range(0..current.len());
            let insert: Vec<u8> = (0..rng.random_range(1..100)).map(|_| rng.random()).collect();
            current.splice(at..at, insert);
            let at = rng.random_range(0..current.len() - 100);
            let len = rng.random_range(1..100);
            current.drain(at..at + len);
        }
        versions.push(current.clone());
    }
    let one = VERSION as f64;

    let mut fixed_blocks = HashSet::new();
    let (mut fixed_raw, mut fixed_zstd) = (0u64, 0u64);
    for version in &versions {
        for block in version.chunks(MIB as usize) {
            if fixed_blocks.insert(blake3::hash(block)) {
                fixed_raw += block.len() as u64;
                fixed_zstd +=
                    zstd::bulk::compress(block, 1).map_or(block.len(), |c| c.len().min(block.len())) as u64;
            }
        }
    }
    println!(
        "dedup series: fixed 1 MiB blocks store {:.2}x one version raw, {:.2}x with zstd-1 (Garage's scheme)",
        fixed_raw as f64 / one,
        fixed_zstd as f64 / one
    );

    let restic = if which("restic") { restic_series(work, &versions) } else { None };
    match restic {
        Some(bytes) => println!("dedup series: restic repository {:.2}x one version", bytes as f64 / one),
        None => println!("dedup series: restic not installed (apt-get install restic); no restic baseline"),
    }

    let sizes = [
        ("min 256 KiB / avg 1 MiB / max 4 MiB", ChunkSizes { min: 256 << 10, avg: 1 << 20, max: 4 << 20 }),
        (
            "min 128 KiB / avg 512 KiB / max 2 MiB",
            ChunkSizes { min: 128 << 10, avg: 512 << 10, max: 2 << 20 },
        ),
        ("min 64 KiB / avg 256 KiB / max 1 MiB", ChunkSizes { min: 64 << 10, avg: 256 << 10, max: 1 << 20 }),
    ];
    for (i, (name, chunk_sizes)) in sizes.into_iter().enumerate() {
        let config = StoreConfig { chunk_sizes, ..StoreConfig::default() };
        let label = format!("dedup{i}");
        let (store, tenant) = fresh_store(pg, work, &label, config).await;
        let started = Instant::now();
        for version in &versions {
            let data = version.clone();
            let options = PutOptions { expected_len: Some(data.len() as u64), md5: false };
            store.put(tenant, std::io::Cursor::new(data), options).await.expect("put");
        }
        let took = started.elapsed();
        let usage = store.usage(tenant).await.expect("usage");
        let on_disk = disk_usage(&work.join(&label).join("packs"));
        let vs_restic = restic
            .map_or_else(String::new, |r| format!(", {:.2}x restic", usage.stored_bytes as f64 / r as f64));
        println!(
            "dedup series, chunks {name}: stored {:.2}x one version (packs on disk {:.2}x){vs_restic}; \
             ingest {:.0} MB/s",
            usage.stored_bytes as f64 / one,
            on_disk as f64 / one,
            mb_per_s(usage.logical_bytes, took),
        );
    }
}

fn restic_series(work: &std::path::Path, versions: &[Vec<u8>]) -> Option<u64> {
    let repo = work.join("restic-repo");
    let file = work.join("series.bin");
    let restic = |args: &[&str]| {
        Command::new("restic")
            .args(args)
            .arg("--repo")
            .arg(&repo)
            .env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", work.join("restic-cache"))
            .output()
            .ok()
            .filter(|out| out.status.success())
    };
    restic(&["init"])?;
    for version in versions {
        std::fs::write(&file, version).ok()?;
        restic(&["backup", "--quiet", file.to_str()?])?;
    }
    let _ = std::fs::remove_file(&file);
    Some(disk_usage(&repo))
}

/// 1,000 random 1 MiB ranges and one full read of a 1 GiB object, against the same reads of
/// the file from the page cache.
async fn ranges(pg: &TestPostgres, work: &std::path::Path) {
    let src = work.join("ranges.src");
    write_file(&src, GIB, |block| random_bytes(4 * MIB as usize, 1000 + block));
    let (store, tenant) = fresh_store(pg, work, "ranges", StoreConfig::default()).await;
    let file = tokio::fs::File::open(&src).await.expect("open");
    let object =
        store.put(tenant, file, PutOptions { expected_len: Some(GIB), md5: false }).await.expect("put");
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let starts: Vec<u64> = (0..1000).map(|_| rng.random_range(0..GIB - MIB)).collect();

    let mut file = std::fs::File::open(&src).expect("open");
    let mut buffer = vec![0u8; MIB as usize];
    let started = Instant::now();
    for start in &starts {
        file.seek(SeekFrom::Start(*start)).expect("seek");
        file.read_exact(&mut buffer).expect("read");
    }
    let page_cache = started.elapsed();

    let started = Instant::now();
    for start in &starts {
        let mut read = store.read(tenant, object.id, Some(*start..start + MIB)).await.expect("read");
        let mut got = 0;
        while let Some(piece) = read.stream.next().await {
            got += piece.expect("piece").len();
        }
        assert_eq!(got, MIB as usize);
    }
    let silo = started.elapsed();
    println!(
        "ranges: 1000 random 1 MiB ranges in {:.2} s ({:.0}/s), page cache {:.2} s ({:.0}/s): {:.2}x",
        silo.as_secs_f64(),
        1000.0 / silo.as_secs_f64(),
        page_cache.as_secs_f64(),
        1000.0 / page_cache.as_secs_f64(),
        page_cache.as_secs_f64() / silo.as_secs_f64()
    );

    let started = Instant::now();
    let mut file = std::fs::File::open(&src).expect("open");
    let mut buffer = vec![0u8; 4 * MIB as usize];
    while file.read(&mut buffer).expect("read") > 0 {}
    let page_cache = started.elapsed();
    let started = Instant::now();
    let mut read = store.read(tenant, object.id, None).await.expect("read");
    let mut got = 0u64;
    while let Some(piece) = read.stream.next().await {
        got += piece.expect("piece").len() as u64;
    }
    let silo = started.elapsed();
    assert_eq!(got, GIB);
    println!(
        "ranges: full read of 1 GiB in {:.2} s ({:.0} MB/s), page cache {:.2} s ({:.0} MB/s): {:.2}x",
        silo.as_secs_f64(),
        mb_per_s(GIB, silo),
        page_cache.as_secs_f64(),
        mb_per_s(GIB, page_cache),
        page_cache.as_secs_f64() / silo.as_secs_f64()
    );
    let _ = std::fs::remove_file(&src);
}

/// Peak RSS while ingesting and then reading a 4 GiB object (streamed, never in memory).
async fn rss(pg: &TestPostgres, work: &std::path::Path) {
    const LEN: u64 = 4 * GIB;
    let (store, tenant) = fresh_store(pg, work, "rss", StoreConfig::default()).await;
    reset_peak_rss();
    let before = peak_rss();
    let source = Generated { left: LEN, block: 0 };
    let object =
        store.put(tenant, source, PutOptions { expected_len: Some(LEN), md5: true }).await.expect("put");
    let after_put = peak_rss();
    reset_peak_rss();
    let mut read = store.read(tenant, object.id, None).await.expect("read");
    let mut got = 0u64;
    while let Some(piece) = read.stream.next().await {
        got += piece.expect("piece").len() as u64;
    }
    assert_eq!(got, LEN);
    let after_read = peak_rss();
    println!(
        "rss: peak RSS {:.0} MiB at the start, {:.0} MiB during a 4 GiB ingest, {:.0} MiB while reading it back",
        before as f64 / MIB as f64,
        after_put as f64 / MIB as f64,
        after_read as f64 / MIB as f64
    );
}

/// A reader of pseudo-random bytes, generated 1 MiB at a time.
struct Generated {
    left: u64,
    block: u64,
}

impl tokio::io::AsyncRead for Generated {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left).min(MIB) as usize;
        if n > 0 {
            let block = random_bytes(n, self.block);
            buf.put_slice(&block);
            self.block += 1;
            self.left -= n as u64;
        }
        std::task::Poll::Ready(Ok(()))
    }
}
