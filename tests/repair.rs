//! Repair, drain and remove against real `silo serve` processes: node `alpha` (zone a) holds the
//! only copy of a sealed pack; `remove alpha` is refused; once node `beta` (zone b, another
//! process sharing the cluster secret) is registered in alpha's catalog, alpha's repairer copies
//! the pack to beta through the internal API (byte for byte, recorded in `pack_replicas`, counted
//! in `/metrics`); a damaged copy on beta is replaced in place; when beta drains, its copy moves
//! to gamma (zone b too) and beta's file goes, and then beta is removed.
//!
//! A node lost for good (killed, its directory deleted) has its copies restored on another node
//! once the grace has passed, not before.
//!
//! An owned tenant's pack found on a shared node moves to the tenant's own node, and the shared
//! node's file is deleted.
//!
//! Until `silo serve` takes a second node per catalog, the other nodes run on catalogs of their
//! own and their rows in the repairing node's catalog are written (and heartbeated) by the test.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Silo, free_addr, noise, scratch, silo_cli_json};
use storage_node::ServerSecret;
use storage_node::TenantId;
use storage_node::compress::Compression;
use storage_node::pack::{PackId, PackWriter, RecordHeader};

/// The server secret both nodes share.
const CLUSTER_SECRET: &str = "7265706169722074657374732073686172652074686973207365637265742121";
/// The repairing node repairs every second; the others not at all.
const REPAIRS: &[&str] = &["--repair-interval-secs", "1"];
const NO_REPAIR: &[&str] = &["--repair-interval-secs", "0"];
/// A pack id far from the ones the node's own store hands out.
const PACK: i64 = 900_001;

struct Node {
    silo: Silo,
    internal: String,
    /// Its own catalog's URL.
    catalog: String,
    _tmp: tempfile::TempDir,
}

/// A node `label` in `zone` on a catalog of its own, with the repair flags `repair`.
async fn start(label: &str, zone: &str, repair: &[&str]) -> Node {
    let catalog = pg_local::testing::shared().fresh_database(label).await;
    let tmp = scratch();
    let internal = free_addr().to_string();
    let internal_url = format!("http://{internal}");
    let mut args = vec![
        "--postgres-url",
        &catalog,
        "--node-name",
        label,
        "--zone",
        zone,
        "--internal-listen",
        &internal,
        "--internal-url",
        &internal_url,
        "--gc-interval-secs",
        "0",
    ];
    args.extend_from_slice(repair);
    let mut silo =
        Silo::start_with_env(&tmp.path().join("data"), &args, &[("SILO_SERVER_SECRET", CLUSTER_SECRET)]);
    silo.wait_ready(Duration::from_secs(30)).await;
    Node { silo, internal: internal_url, catalog, _tmp: tmp }
}

/// A sealed pack `id` of a few records, written into `dir`; its path.
fn made_pack(dir: &Path, id: i64) -> PathBuf {
    let key = ServerSecret::from_hex(CLUSTER_SECRET).expect("hex").chunk_key(TenantId(1));
    let mut writer = PackWriter::create(dir, PackId(id), 1).expect("create");
    for n in 0..4 {
        let raw = noise(200_000 + n, id as u64 + n as u64);
        let header = RecordHeader {
            compression: Compression::None,
            tenant: TenantId(1),
            chunk: key.chunk_id(&raw),
            raw_len: raw.len() as u32,
            stored_len: raw.len() as u32,
        };
        writer.append(&header, &raw).expect("append");
    }
    writer.sync().expect("sync");
    writer.path().to_path_buf()
}

async fn catalog(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("catalog");
    tokio::spawn(conn);
    client
}

/// `POST /v1/nodes/{node}/{action}`: the status and the body.
async fn retire(silo: &Silo, node: &str, action: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(silo.url(&format!("/v1/nodes/{node}/{action}")))
        .bearer_auth(silo.token())
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// The value of the sample `name` in `/metrics`.
async fn metric(silo: &Silo, name: &str) -> Option<f64> {
    let text = reqwest::get(silo.metrics_url()).await.expect("metrics").text().await.expect("text");
    text.lines().find_map(|line| line.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

/// Records the sealed pack `id` of `size` bytes, of `owner`'s domain (none: shared), written by
/// `writer`, with a whole copy on `writer`.
async fn record_pack(db: &tokio_postgres::Client, id: i64, writer: i32, owner: Option<i64>, size: usize) {
    db.execute(
        "INSERT INTO packs (id, node_id, state, size, owner_tenant_id) OVERRIDING SYSTEM VALUE \
         VALUES ($1, $2, 'sealed', $3, $4)",
        &[&id, &writer, &(size as i64), &owner],
    )
    .await
    .expect("pack row");
    db.execute("INSERT INTO pack_replicas (pack_id, node_id, state) VALUES ($1, $2, 'ok')", &[&id, &writer])
        .await
        .expect("replica row");
}

/// Registers the node `name` in `db` (zone `zone`, owned by `owner`) at `url`, and keeps its
/// heartbeat fresh until the task is aborted; its id.
async fn join(
    db_url: &str,
    name: &str,
    zone: &str,
    owner: Option<i64>,
    url: &str,
) -> (i32, tokio::task::JoinHandle<()>) {
    let db = catalog(db_url).await;
    let id: i32 = db
        .query_one(
            "INSERT INTO storage_nodes (name, zone, owner_tenant_id, internal_url, heartbeat_at, started_at) \
             VALUES ($1, $2, $3, $4, now(), now()) RETURNING id",
            &[&name, &zone, &owner, &url],
        )
        .await
        .expect("node row")
        .get(0);
    let beating = tokio::spawn(async move {
        loop {
            let _ = db.execute("UPDATE storage_nodes SET heartbeat_at = now() WHERE id = $1", &[&id]).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    (id, beating)
}

/// Waits until the catalog records a whole copy of `pack` on `node`.
async fn wait_for_whole_copy(db: &tokio_postgres::Client, pack: i64, node: i32, repairer: &Silo) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = db
            .query_one(
                "SELECT count(*) FROM pack_replicas WHERE pack_id = $1 AND node_id = $2 AND state = 'ok'",
                &[&pack, &node],
            )
            .await
            .expect("count");
        if row.get::<_, i64>(0) == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "no repair within a minute:\n{}", repairer.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_pack_with_one_copy_is_repaired_to_a_new_zone_and_a_drained_node_gives_its_copies_away() {
    let alpha = start("alpha", "a", REPAIRS).await;
    let beta = start("beta", "b", NO_REPAIR).await;
    let gamma = start("gamma", "b", NO_REPAIR).await;
    let file = made_pack(&alpha.silo.data_dir.join("packs"), PACK);
    let bytes = std::fs::read(&file).expect("pack");
    let db = catalog(&alpha.catalog).await;
    let alpha_id: i32 =
        db.query_one("SELECT id FROM storage_nodes WHERE name = 'alpha'", &[]).await.expect("alpha").get(0);
    record_pack(&db, PACK, alpha_id, None, bytes.len()).await;

    // alpha holds the only copy: not removable.
    let (status, body) = retire(&alpha.silo, "alpha", "remove").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "last_copies", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("1 pack")), "{body}");
    assert_eq!(retire(&alpha.silo, "nobody", "drain").await.0, 404);

    // beta joins alpha's catalog in zone b (its heartbeat kept fresh by the test).
    let (beta_id, beating) = join(&alpha.catalog, "beta", "b", None, &beta.internal).await;

    let copied = beta.silo.data_dir.join("packs").join(file.file_name().expect("name"));
    wait_for_whole_copy(&db, PACK, beta_id, &alpha.silo).await;
    assert_eq!(std::fs::read(&copied).expect("beta's copy"), bytes, "the copy is byte for byte");
    assert_eq!(metric(&alpha.silo, "silo_repair_packs_total").await, Some(1.0));
    assert_eq!(metric(&alpha.silo, "silo_repair_bytes_total").await, Some(bytes.len() as f64));
    assert_eq!(metric(&alpha.silo, "silo_repair_backlog_packs").await.map(|n| n <= 1.0), Some(true));

    // A flipped byte in beta's copy, reported damaged: beta is the only other zone, so the copy
    // is replaced in place (deleted, then sent again).
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(&copied, &flipped).expect("flip a byte");
    db.execute(
        "UPDATE pack_replicas SET state = 'damaged' WHERE pack_id = $1 AND node_id = $2",
        &[&PACK, &beta_id],
    )
    .await
    .expect("damaged");
    wait_for_whole_copy(&db, PACK, beta_id, &alpha.silo).await;
    assert_eq!(std::fs::read(&copied).expect("beta's copy"), bytes, "the damaged copy is whole again");
    assert_eq!(metric(&alpha.silo, "silo_repair_packs_total").await, Some(2.0));

    // gamma joins zone b; beta drains: its copy stops counting (alpha's still does, so beta
    // could go at once), and repair moves it to gamma, then drops beta's copy and its file.
    let (gamma_id, gamma_beating) = join(&alpha.catalog, "gamma", "b", None, &gamma.internal).await;
    let drained = silo_cli_json(&alpha.silo, &["node", "drain", "beta"]);
    assert_eq!((drained["state"].as_str(), drained["packs"].as_i64()), (Some("draining"), Some(1)));
    assert_eq!(drained["last_copies"], 0, "{drained}");
    wait_for_whole_copy(&db, PACK, gamma_id, &alpha.silo).await;
    let at_gamma = gamma.silo.data_dir.join("packs").join(file.file_name().expect("name"));
    assert_eq!(std::fs::read(&at_gamma).expect("gamma's copy"), bytes);
    let deadline = Instant::now() + Duration::from_secs(30);
    while copied.exists() || copies_on(&db, beta_id).await > 0 {
        assert!(Instant::now() < deadline, "beta keeps its copy:\n{}", alpha.silo.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let removed = silo_cli_json(&alpha.silo, &["node", "remove", "beta"]);
    assert_eq!(removed["state"], "removed", "{removed}");
    let nodes = silo_cli_json(&alpha.silo, &["node", "list"]);
    let states: Vec<(&str, &str)> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| (node["name"].as_str().unwrap_or(""), node["state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(states, [("alpha", "active"), ("beta", "removed"), ("gamma", "active")]);
    beating.abort();
    gamma_beating.abort();
}

/// The copies the catalog records on `node`.
async fn copies_on(db: &tokio_postgres::Client, node: i32) -> i64 {
    db.query_one("SELECT count(*) FROM pack_replicas WHERE node_id = $1", &[&node])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn an_owned_pack_on_a_shared_node_moves_to_its_tenants_node_and_leaves_no_file_behind() {
    let shared = start("shared", "a", REPAIRS).await;
    let own = start("acme-own", "c", NO_REPAIR).await;
    silo_cli_json(&shared.silo, &["tenant", "create", "acme"]);
    let db = catalog(&shared.catalog).await;
    let acme: i64 =
        db.query_one("SELECT id FROM tenants WHERE name = 'acme'", &[]).await.expect("acme").get(0);
    let (own_id, beating) = join(&shared.catalog, "acme-own", "c", Some(acme), &own.internal).await;
    // acme's pack, written by its own node, with its only copy on the shared node (a policy
    // that changed, or a fault): the copy does not count, yet it is read from.
    let file = made_pack(&shared.silo.data_dir.join("packs"), PACK + 1);
    let bytes = std::fs::read(&file).expect("pack");
    record_pack(&db, PACK + 1, own_id, Some(acme), bytes.len()).await;
    let shared_id: i32 =
        db.query_one("SELECT id FROM storage_nodes WHERE name = 'shared'", &[]).await.expect("id").get(0);
    db.execute("UPDATE pack_replicas SET node_id = $2 WHERE pack_id = $1", &[&(PACK + 1), &shared_id])
        .await
        .expect("the copy on the shared node");

    wait_for_whole_copy(&db, PACK + 1, own_id, &shared.silo).await;
    let moved = own.silo.data_dir.join("packs").join(file.file_name().expect("name"));
    assert_eq!(std::fs::read(&moved).expect("the owned copy"), bytes);
    // The shared node's copy is forgotten, then its file deleted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while file.exists() {
        assert!(Instant::now() < deadline, "the shared node keeps acme's pack:\n{}", shared.silo.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: Vec<i32> = db
        .query("SELECT node_id FROM pack_replicas WHERE pack_id = $1", &[&(PACK + 1)])
        .await
        .expect("rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rows, [own_id]);
    beating.abort();
}

#[tokio::test]
async fn a_node_lost_for_good_has_its_copies_restored_elsewhere_after_the_grace() {
    let alpha = start("lost-alpha", "a", &["--repair-interval-secs", "1", "--repair-grace-secs", "3"]).await;
    let mut beta = start("lost-beta", "b", NO_REPAIR).await;
    let gamma = start("lost-gamma", "b", NO_REPAIR).await;
    let file = made_pack(&alpha.silo.data_dir.join("packs"), PACK + 2);
    let bytes = std::fs::read(&file).expect("pack");
    std::fs::write(beta.silo.data_dir.join("packs").join(file.file_name().expect("name")), &bytes)
        .expect("copy");
    let db = catalog(&alpha.catalog).await;
    let alpha_id: i32 =
        db.query_one("SELECT id FROM storage_nodes WHERE name = 'lost-alpha'", &[]).await.expect("id").get(0);
    record_pack(&db, PACK + 2, alpha_id, None, bytes.len()).await;
    let (beta_id, beta_beating) = join(&alpha.catalog, "lost-beta", "b", None, &beta.internal).await;
    db.execute(
        "INSERT INTO pack_replicas (pack_id, node_id, state) VALUES ($1, $2, 'ok')",
        &[&(PACK + 2), &beta_id],
    )
    .await
    .expect("beta's copy");
    let (gamma_id, gamma_beating) = join(&alpha.catalog, "lost-gamma", "b", None, &gamma.internal).await;
    // Two copies in two zones: nothing to do while beta beats.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(copies_on(&db, gamma_id).await, 0, "no repair while the copies are healthy");

    // beta dies with its disk; after the grace (3 s) its copy is written off and restored on gamma.
    let lost = Instant::now();
    beta_beating.abort();
    beta.silo.kill9().await;
    std::fs::remove_dir_all(&beta.silo.data_dir).expect("beta's disk is gone");
    wait_for_whole_copy(&db, PACK + 2, gamma_id, &alpha.silo).await;
    assert!(lost.elapsed() >= Duration::from_secs(2), "repaired before the grace: {:?}", lost.elapsed());
    let at_gamma = gamma.silo.data_dir.join("packs").join(file.file_name().expect("name"));
    assert_eq!(std::fs::read(&at_gamma).expect("gamma's copy"), bytes);
    assert_eq!(copies_on(&db, beta_id).await, 1, "the lost node's row stays until it is removed");
    gamma_beating.abort();
}
