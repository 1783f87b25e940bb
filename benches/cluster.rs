//! Several nodes on loopback (issue 12), in one run: a replicated 1 GiB PUT at two copies
//! against the same PUT on one node alone, a 1 GiB GET through a node that holds no copy against
//! one through a node that holds every copy, the repair of a lost node's packs against `rsync -a`
//! of the same pack files, and every node's peak resident set.
//!
//! `cargo bench --bench cluster`. Every node is the release `silo serve` on its own data
//! directory, with one catalog per setup on a durable (fsync on) throwaway Postgres; the one-node
//! baseline runs first and is gone before the cluster starts (the disk holds one setup at a
//! time). Needs `curl` and `rsync`.

#[path = "../tests/common/mod.rs"]
mod process;

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use common::{GIB, MIB, curl, mb_per_s, random_bytes, write_file};
use pg_local::testing::TestPostgres;
use process::{Silo, free_addr, sdk_client, silo_cli_json};

const RUNS: usize = 3;
/// Every node of a setup seals and names things with this one secret.
const CLUSTER_SECRET: &str = "62656e63686573206f662061206e6f6465732073686172652074686973206b21";
/// Repair as soon as it may: a pass every second, the shortest grace (two heartbeats), and no
/// rate limit worth the name (the default is 100 MB/s), so that the copy itself is measured.
/// GC seals the packs uploads filled or left idle, and repair only takes sealed packs: a pass
/// every 2 s (it has nothing else to do here: nothing is deleted).
const REPAIR_FLAGS: &[&str] = &[
    "--repair-interval-secs",
    "1",
    "--repair-grace-secs",
    "10",
    "--repair-rate-mb",
    "100000",
    "--gc-interval-secs",
    "2",
];
const GRACE_SECS: f64 = 10.0;
/// The node every object is written through; it holds a copy of every pack.
const WRITER: &str = "node-a";

fn main() {
    if let Some(missing) = ["curl", "rsync"].into_iter().find(|tool| !common::which(tool)) {
        eprintln!("cluster bench: needs {missing} (apt-get install curl rsync)");
        std::process::exit(2);
    }
    tokio::runtime::Runtime::new().expect("runtime").block_on(run());
}

async fn run() {
    let work = common::work_dir();
    let pg = TestPostgres::durable().expect("a durable Postgres for the catalogs");
    let source = work.path().join("big.bin");
    let hour = PresigningConfig::expires_in(Duration::from_secs(3600)).expect("presign");
    let mut rss: Vec<(String, u64)> = Vec::new();

    // Setup A: one node alone on a catalog of its own.
    let mut alone = Cluster::new(&pg, work.path(), "alone").await;
    alone.start(WRITER, "a").await;
    let clients = alone.tenant().await;
    let mut alone_puts = Vec::new();
    for run in 0..RUNS {
        alone_puts.push(put_big(&clients[0], &source, run, &hour).await);
    }
    rss.extend(alone.peak_rss().into_iter().map(|(name, peak)| (format!("{name} (alone)"), peak)));
    alone.stop_and_wipe();

    // Setup B: three nodes in zones a, b and c, the tenant's default policy (two copies).
    let mut cluster = Cluster::new(&pg, work.path(), "three_zones").await;
    for (name, zone) in [(WRITER, "a"), ("node-b", "b"), ("node-c", "c")] {
        cluster.start(name, zone).await;
    }
    let clients = cluster.tenant().await;
    let mut cluster_puts = Vec::new();
    for run in 0..RUNS {
        cluster_puts.push(put_big(&clients[0], &source, run, &hour).await);
    }
    let _ = std::fs::remove_file(&source);

    println!(
        "Several nodes on loopback, medians of {RUNS} ({} cores, load {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!("| measure | cluster | baseline | ratio |");
    println!("|---|---|---|---|");
    report(
        "PUT 1 GiB at 2 copies through node a, MB/s (vs one node alone)",
        mb_per_s(GIB, median(&mut cluster_puts)),
        mb_per_s(GIB, median(&mut alone_puts)),
    );

    // GET through a node that holds no copy of the object's packs (a fourth node, in zone a,
    // started after the writes; the catalog says it holds nothing) against the writer's GET.
    cluster.start("reader", "a").await;
    let reader_copies = cluster
        .count(
            "SELECT count(*) FROM pack_replicas r JOIN storage_nodes n ON n.id = r.node_id \
             WHERE n.name = 'reader'",
        )
        .await;
    assert_eq!(reader_copies, 0, "the reader holds no copy");
    let clients = cluster.clients();
    let url = |client: &Client| {
        let hour = hour.clone();
        let client = client.clone();
        async move {
            let get = client.get_object().bucket("bench").key("big-0.bin").presigned(hour).await;
            get.expect("presign").uri().to_string()
        }
    };
    let (local_url, remote_url) = (url(&clients[0]).await, url(&clients[3]).await);
    let mut remote_gets = Vec::new();
    let mut local_gets = Vec::new();
    for _ in 0..RUNS {
        remote_gets.push(curl(&["-o", "/dev/null", &remote_url]));
        local_gets.push(curl(&["-o", "/dev/null", &local_url]));
    }
    report(
        "GET 1 GiB through a node with no copy, MB/s (vs through node a, which holds every copy)",
        mb_per_s(GIB, median(&mut remote_gets)),
        mb_per_s(GIB, median(&mut local_gets)),
    );

    // Repair: a node with copies is killed (-9) and its directory deleted; the clock starts when
    // its grace runs out and stops when every sealed pack has two whole copies in two zones
    // again. Each run first starts a fresh node in the zone the previous run lost.
    let mut repair_rates = Vec::new();
    let mut rsync_rates = Vec::new();
    let mut repaired = Vec::new();
    let mut lost_zone: Option<String> = None;
    cluster.wait_sealed().await;
    for run in 0..RUNS {
        let mut fresh = None;
        if let Some(zone) = lost_zone.take() {
            let name = format!("node-{zone}{}", run + 1);
            cluster.start(&name, &zone).await;
            fresh = Some(name);
        }
        let victim = cluster.fullest_node(&[WRITER, "reader"], fresh.as_deref()).await;
        let packs = cluster.sealed_packs_on(&victim).await;
        let bytes: u64 = packs.iter().map(|(_, size)| *size).sum();
        rsync_rates.push(mb_per_s(bytes, rsync_packs(&cluster.data_dir(WRITER), &packs, work.path())));
        let (zone, peak) = cluster.kill_and_wipe(&victim).await;
        rss.push((format!("{victim} (lost)"), peak));
        let started = Instant::now() + cluster.written_off_in(&victim).await;
        cluster.wait_repaired().await;
        let took = Instant::now().saturating_duration_since(started);
        repair_rates.push(mb_per_s(bytes, took));
        repaired.push(format!(
            "{} packs, {:.0} MB in {:.1} s",
            packs.len(),
            bytes as f64 / 1e6,
            took.as_secs_f64()
        ));
        lost_zone = Some(zone);
    }
    report(
        "Repair of a lost node's packs, MB/s (vs rsync -a of the same pack files, then sync)",
        median_rate(&mut repair_rates),
        median_rate(&mut rsync_rates),
    );
    println!();
    println!("Repair runs: {}", repaired.join("; "));
    rss.extend(cluster.peak_rss());
    println!();
    println!("| node | peak RSS (VmHWM), MiB |");
    println!("|---|---|");
    for (name, peak) in rss {
        println!("| {name} | {:.0} |", peak as f64 / MIB as f64);
    }
    println!();
    println!("load after the run: {}", load_average());
}

/// Writes the 1 GiB source for `run` (other bytes every run, so nothing dedups) and times `curl
/// -T` of a presigned PUT of it.
async fn put_big(client: &Client, source: &Path, run: usize, hour: &PresigningConfig) -> Duration {
    let seed = run as u64 * 1_000_000;
    write_file(source, GIB, |block| random_bytes(4 * MIB as usize, seed + block));
    let put = client.put_object().bucket("bench").key(format!("big-{run}.bin")).presigned(hour.clone()).await;
    curl(&["-T", &source.to_string_lossy(), put.expect("presign").uri()])
}

/// Times `rsync -a` of `packs`' files from `from` into a new directory under `work`, then
/// `sync`; the copy is deleted afterwards.
fn rsync_packs(from: &Path, packs: &[(i64, u64)], work: &Path) -> Duration {
    let list = work.join("rsync-files");
    let names: Vec<String> = packs
        .iter()
        .map(|(id, _)| {
            let path = storage_node::pack::pack_path(Path::new(""), storage_node::pack::PackId(*id));
            path.to_string_lossy().into_owned()
        })
        .collect();
    std::fs::write(&list, names.join("\n")).expect("file list");
    let target = work.join("rsync-copy");
    common::sync();
    let started = Instant::now();
    let status = Command::new("rsync")
        .arg("-a")
        .arg(format!("--files-from={}", list.display()))
        .arg(format!("{}/", from.join("packs").display()))
        .arg(&target)
        .status()
        .expect("rsync");
    common::sync();
    let took = started.elapsed();
    assert!(status.success(), "rsync failed");
    let _ = std::fs::remove_dir_all(&target);
    took
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn median_rate(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(measure: &str, value: f64, baseline: f64) {
    println!("| {measure} | {value:.0} | {baseline:.0} | {:.2}x |", value / baseline);
}

struct Node {
    name: String,
    zone: String,
    silo: Silo,
}

/// `silo serve` processes on one catalog database, each with its own data directory.
struct Cluster {
    catalog: String,
    db: tokio_postgres::Client,
    root: PathBuf,
    nodes: Vec<Node>,
    /// The key of the bench tenant, once made.
    key: Option<(String, String)>,
    /// Nodes killed for good.
    lost: Vec<String>,
}

impl Cluster {
    async fn new(pg: &TestPostgres, work: &Path, label: &str) -> Cluster {
        let catalog = pg.fresh_database(label).await;
        let (db, conn) = tokio_postgres::connect(&catalog, tokio_postgres::NoTls).await.expect("catalog");
        tokio::spawn(conn);
        let root = work.join(label);
        std::fs::create_dir_all(&root).expect("setup dir");
        Cluster { catalog, db, root, nodes: Vec::new(), key: None, lost: Vec::new() }
    }

    /// Starts node `name` in `zone`, with its internal API on loopback.
    async fn start(&mut self, name: &str, zone: &str) {
        let internal = free_addr().to_string();
        let internal_url = format!("http://{internal}");
        let node = [
            ("--postgres-url", self.catalog.as_str()),
            ("--node-name", name),
            ("--zone", zone),
            ("--internal-listen", &internal),
            ("--internal-url", &internal_url),
        ];
        let args: Vec<&str> = node
            .iter()
            .flat_map(|(flag, value)| [*flag, *value])
            .chain(REPAIR_FLAGS.iter().copied())
            .collect();
        let env = [("SILO_SERVER_SECRET", CLUSTER_SECRET)];
        let mut silo = Silo::start_with_env(&self.data_dir(name), &args, &env);
        silo.wait_ready(Duration::from_secs(60)).await;
        self.nodes.push(Node { name: name.to_string(), zone: zone.to_string(), silo });
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The bench tenant, its key and bucket; an SDK client for it on every node.
    async fn tenant(&mut self) -> Vec<Client> {
        let first = &self.nodes[0].silo;
        silo_cli_json(first, &["tenant", "create", "bench"]);
        let key = silo_cli_json(first, &["key", "create", "bench"]);
        let field = |name: &str| key[name].as_str().expect("key field").to_string();
        self.key = Some((field("access_key_id"), field("secret_access_key")));
        let clients = self.clients();
        clients[0].create_bucket().bucket("bench").send().await.expect("bucket");
        clients
    }

    fn clients(&self) -> Vec<Client> {
        let (id, secret) = self.key.as_ref().expect("the tenant's key");
        self.nodes.iter().map(|node| sdk_client(&node.silo, id, secret)).collect()
    }

    fn peak_rss(&self) -> Vec<(String, u64)> {
        self.nodes.iter().map(|node| (node.name.clone(), common::peak_rss_of(node.silo.pid()))).collect()
    }

    /// Stops every node and deletes the setup's directories.
    fn stop_and_wipe(self) {
        let root = self.root.clone();
        drop(self.nodes);
        let _ = std::fs::remove_dir_all(root);
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.expect(sql).get(0)
    }

    /// The node other than `skip` and `fresh` holding the most bytes of sealed packs.
    async fn fullest_node(&self, skip: &[&str], fresh: Option<&str>) -> String {
        let mut best = (0, String::new());
        for node in &self.nodes {
            let name = node.name.as_str();
            if skip.contains(&name) || fresh == Some(name) || self.lost.contains(&node.name) {
                continue;
            }
            let bytes: u64 = self.sealed_packs_on(name).await.iter().map(|(_, size)| size).sum();
            if bytes > best.0 {
                best = (bytes, node.name.clone());
            }
        }
        assert!(best.0 > 0, "a node other than the writer holds copies");
        best.1
    }

    /// The sealed packs that hold live chunks and have a whole copy on `node`: id and size.
    async fn sealed_packs_on(&self, node: &str) -> Vec<(i64, u64)> {
        let rows = self
            .db
            .query(
                "SELECT p.id, p.size FROM packs p JOIN pack_replicas r ON r.pack_id = p.id \
                 JOIN storage_nodes n ON n.id = r.node_id \
                 WHERE n.name = $1 AND r.state = 'ok' AND p.state = 'sealed' \
                 AND EXISTS (SELECT 1 FROM chunk_locations l WHERE l.pack_id = p.id) ORDER BY p.id",
                &[&node],
            )
            .await
            .expect("packs on a node");
        rows.iter().map(|row| (row.get(0), row.get::<_, i64>(1) as u64)).collect()
    }

    /// `kill -9` of `name` and the loss of its directory; returns its zone and peak RSS.
    async fn kill_and_wipe(&mut self, name: &str) -> (String, u64) {
        let at = self.nodes.iter().position(|node| node.name == name).expect("a node of the cluster");
        let mut node = self.nodes.remove(at);
        let peak = common::peak_rss_of(node.silo.pid());
        node.silo.kill9().await;
        std::fs::remove_dir_all(&node.silo.data_dir).expect("the lost node's directory");
        self.lost.push(node.name.clone());
        (node.zone.clone(), peak)
    }

    /// How long until the repairer may write `name`'s copies off (its last beat plus the grace).
    async fn written_off_in(&self, name: &str) -> Duration {
        let row = self
            .db
            .query_one(
                "SELECT extract(epoch FROM heartbeat_at - now())::float8 FROM storage_nodes WHERE name = $1",
                &[&name],
            )
            .await
            .expect("heartbeat");
        let beat_minus_now: f64 = row.get(0);
        Duration::from_secs_f64((beat_minus_now + GRACE_SECS).max(0.0))
    }

    /// Waits (a minute at most) until GC has sealed every pack with live chunks.
    async fn wait_sealed(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let sql = "SELECT count(*) FROM packs p WHERE p.state = 'open' \
             AND EXISTS (SELECT 1 FROM chunk_locations l WHERE l.pack_id = p.id)";
        while self.count(sql).await > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every sealed pack with live chunks has whole copies in two zones on nodes
    /// that are not lost.
    async fn wait_repaired(&self) {
        let sql = "SELECT count(*) FROM packs p WHERE p.state = 'sealed' \
             AND EXISTS (SELECT 1 FROM chunk_locations l WHERE l.pack_id = p.id) \
             AND (SELECT count(DISTINCT n.zone) FROM pack_replicas r JOIN storage_nodes n ON n.id = r.node_id \
                  WHERE r.pack_id = p.id AND r.state = 'ok' AND n.name <> ALL($1)) < 2";
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let short: i64 = self.db.query_one(sql, &[&self.lost]).await.expect("repair backlog").get(0);
            if short == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{short} packs still short of copies after 15 minutes");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
