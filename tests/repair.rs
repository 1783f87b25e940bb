//! Repair, drain and remove on several `silo serve` processes sharing one catalog, with packs
//! written directly into their data directories and recorded in the catalog:
//! - node `alpha` (zone a) holds the only copy of a sealed pack: `remove alpha` is refused;
//!   alpha's repairer copies the pack to `beta` (zone b) through the internal API, byte for
//!   byte, recorded in `pack_replicas` and counted in `/metrics`; a damaged copy on beta is
//!   replaced in place; when beta drains, its copy moves to `gamma` (zone b too) and beta's file
//!   goes; then beta is removed;
//! - a node lost for good (killed, its directory deleted) has its copy restored on another node
//!   once the grace has passed, not before;
//! - a node back after that finds the pack with a copy too many, and one copy in its zone goes;
//! - an owned tenant's pack found on a shared node moves to the tenant's own node, and the
//!   shared node's file is deleted.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Silo, free_addr, metric, scratch, silo_cli_json};
use storage_node::ServerSecret;
use storage_node::TenantId;

/// The server secret every node shares.
const CLUSTER_SECRET: &str = "7265706169722074657374732073686172652074686973207365637265742121";
/// The repairing node repairs every second; the others not at all.
const REPAIRS: &[&str] = &["--repair-interval-secs", "1"];
const NO_REPAIR: &[&str] = &["--repair-interval-secs", "0"];
/// A pack id far from the ones the nodes' own stores hand out.
const PACK: i64 = 900_001;

/// Nodes on one catalog.
struct Cluster {
    catalog: String,
    db: tokio_postgres::Client,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    async fn new(label: &str) -> Cluster {
        let catalog = pg_local::testing::shared().fresh_database(label).await;
        let (db, conn) = tokio_postgres::connect(&catalog, tokio_postgres::NoTls).await.expect("catalog");
        tokio::spawn(conn);
        Cluster { catalog, db, _tmp: scratch() }
    }

    /// Starts node `name` in `zone` with `extra` flags (the repair ones, an owner).
    async fn start(&self, name: &str, zone: &str, extra: &[&str]) -> Silo {
        let internal = free_addr().to_string();
        let internal_url = format!("http://{internal}");
        let mut args = vec![
            "--postgres-url",
            &self.catalog,
            "--node-name",
            name,
            "--zone",
            zone,
            "--internal-listen",
            &internal,
            "--internal-url",
            &internal_url,
            "--gc-interval-secs",
            "0",
        ];
        args.extend_from_slice(extra);
        let data = self._tmp.path().join(name);
        let mut silo = Silo::start_with_env(&data, &args, &[("SILO_SERVER_SECRET", CLUSTER_SECRET)]);
        silo.wait_ready(Duration::from_secs(30)).await;
        silo
    }

    async fn id(&self, node: &str) -> i32 {
        self.db.query_one("SELECT id FROM storage_nodes WHERE name = $1", &[&node]).await.expect(node).get(0)
    }

    /// Records the sealed pack `id` of `size` bytes, of `owner`'s domain (none: shared),
    /// written by `writer`, with a whole copy on each of `copies`.
    async fn record_pack(&self, id: i64, writer: i32, owner: Option<i64>, size: usize, copies: &[i32]) {
        self.db
            .execute(
                "INSERT INTO packs (id, node_id, state, size, owner_tenant_id) OVERRIDING SYSTEM VALUE \
                 VALUES ($1, $2, 'sealed', $3, $4)",
                &[&id, &writer, &(size as i64), &owner],
            )
            .await
            .expect("pack row");
        for node in copies {
            self.db
                .execute(
                    "INSERT INTO pack_replicas (pack_id, node_id, state) VALUES ($1, $2, 'ok')",
                    &[&id, node],
                )
                .await
                .expect("replica row");
        }
    }

    /// The states of the copies of `pack` on `node` (none, or one).
    async fn copy_state(&self, pack: i64, node: i32) -> Option<String> {
        let rows = self
            .db
            .query("SELECT state FROM pack_replicas WHERE pack_id = $1 AND node_id = $2", &[&pack, &node])
            .await
            .expect("copies");
        rows.first().map(|row| row.get(0))
    }

    /// Waits until `done` holds of the catalog, or fails with `repairer`'s log.
    async fn wait_until<F: AsyncFnMut(&Cluster) -> bool>(&self, what: &str, repairer: &Silo, mut done: F) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self).await {
            assert!(Instant::now() < deadline, "{what}: not within a minute\n{}", repairer.stderr());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the catalog records a whole copy of `pack` on `node`.
    async fn wait_for_whole_copy(&self, pack: i64, node: i32, repairer: &Silo) {
        self.wait_until("a whole copy", repairer, async |cluster| {
            cluster.copy_state(pack, node).await.as_deref() == Some("ok")
        })
        .await;
    }
}

/// A sealed pack `id` of a few records, written into `silo`'s packs directory; its path.
fn made_pack(silo: &Silo, id: i64) -> PathBuf {
    let secret = ServerSecret::from_hex(CLUSTER_SECRET).expect("hex");
    common::write_pack(&silo.data_dir.join("packs"), id, &secret, TenantId(1), 4, (200_000, id as u64))
}

/// The same file in another node's packs directory.
fn at(silo: &Silo, file: &Path) -> PathBuf {
    silo.data_dir.join("packs").join(file.file_name().expect("a file name"))
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

#[tokio::test]
async fn a_pack_with_one_copy_is_repaired_to_a_new_zone_and_a_drained_node_gives_its_copies_away() {
    let cluster = Cluster::new("repair_drain").await;
    // alpha alone, in one zone: one copy is all a pack wants, and alpha holds the last copy of
    // a pack, so it is not removable.
    let alpha = cluster.start("alpha", "a", REPAIRS).await;
    let alpha_id = cluster.id("alpha").await;
    let file = made_pack(&alpha, PACK);
    let bytes = std::fs::read(&file).expect("pack");
    cluster.record_pack(PACK, alpha_id, None, bytes.len(), &[alpha_id]).await;
    let (status, body) = retire(&alpha, "alpha", "remove").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "last_copies", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("1 pack")), "{body}");
    assert_eq!(retire(&alpha, "nobody", "drain").await.0, 404);

    // beta joins in zone b: packs now want two copies, and the repairer copies it to beta.
    let beta = cluster.start("beta", "b", NO_REPAIR).await;
    let beta_id = cluster.id("beta").await;
    cluster.wait_for_whole_copy(PACK, beta_id, &alpha).await;
    assert_eq!(std::fs::read(at(&beta, &file)).expect("beta's copy"), bytes, "byte for byte");
    assert_eq!(metric(&alpha, "silo_repair_packs_total").await, Some(1.0));
    assert_eq!(metric(&alpha, "silo_repair_bytes_total").await, Some(bytes.len() as f64));
    assert_eq!(metric(&alpha, "silo_repair_backlog_packs").await.map(|n| n <= 1.0), Some(true));

    // A flipped byte in beta's copy, reported damaged: beta is the only other zone, so the copy
    // is replaced in place (forgotten, deleted, sent again).
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(at(&beta, &file), &flipped).expect("flip a byte");
    cluster
        .db
        .execute(
            "UPDATE pack_replicas SET state = 'damaged' WHERE pack_id = $1 AND node_id = $2",
            &[&PACK, &beta_id],
        )
        .await
        .expect("damaged");
    cluster
        .wait_until("the damaged copy replaced", &alpha, async |_| {
            std::fs::read(at(&beta, &file)).is_ok_and(|now| now == bytes)
        })
        .await;
    cluster.wait_for_whole_copy(PACK, beta_id, &alpha).await;
    assert_eq!(metric(&alpha, "silo_repair_packs_total").await, Some(2.0));

    // gamma joins zone b; beta drains: its copy stops counting (alpha's still does, so beta
    // could go at once), and repair moves it to gamma, then drops beta's copy and its file.
    let gamma = cluster.start("gamma", "b", NO_REPAIR).await;
    let gamma_id = cluster.id("gamma").await;
    let drained = silo_cli_json(&alpha, &["node", "drain", "beta"]);
    assert_eq!((drained["state"].as_str(), drained["packs"].as_i64()), (Some("draining"), Some(1)));
    assert_eq!(drained["last_copies"], 0, "{drained}");
    cluster.wait_for_whole_copy(PACK, gamma_id, &alpha).await;
    assert_eq!(std::fs::read(at(&gamma, &file)).expect("gamma's copy"), bytes);
    cluster
        .wait_until("beta's copy gone", &alpha, async |cluster| {
            !at(&beta, &file).exists() && cluster.copy_state(PACK, beta_id).await.is_none()
        })
        .await;
    let removed = silo_cli_json(&alpha, &["node", "remove", "beta"]);
    assert_eq!(removed["state"], "removed", "{removed}");
    let nodes = silo_cli_json(&alpha, &["node", "list"]);
    let states: Vec<(&str, &str)> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| (node["name"].as_str().unwrap_or(""), node["state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(states, [("alpha", "active"), ("beta", "removed"), ("gamma", "active")]);
}

/// Zone b's beta and gamma (not repairing) and zone a's alpha (repairing every second, with a
/// 10 s grace), and a pack written on alpha with a second copy on beta.
struct GraceSetup {
    alpha: Silo,
    beta: Silo,
    gamma: Silo,
    alpha_id: i32,
    beta_id: i32,
    gamma_id: i32,
    file: PathBuf,
    bytes: Vec<u8>,
}

impl GraceSetup {
    async fn start(cluster: &Cluster) -> GraceSetup {
        let beta = cluster.start("beta", "b", NO_REPAIR).await;
        let gamma = cluster.start("gamma", "b", NO_REPAIR).await;
        let alpha =
            cluster.start("alpha", "a", &["--repair-interval-secs", "1", "--repair-grace-secs", "10"]).await;
        let (alpha_id, beta_id, gamma_id) =
            (cluster.id("alpha").await, cluster.id("beta").await, cluster.id("gamma").await);
        let file = made_pack(&alpha, PACK);
        let bytes = std::fs::read(&file).expect("pack");
        std::fs::write(at(&beta, &file), &bytes).expect("beta's copy");
        cluster.record_pack(PACK, alpha_id, None, bytes.len(), &[alpha_id, beta_id]).await;
        GraceSetup { alpha, beta, gamma, alpha_id, beta_id, gamma_id, file, bytes }
    }
}

#[tokio::test]
async fn a_node_lost_for_good_has_its_copies_restored_elsewhere_after_the_grace() {
    let cluster = Cluster::new("repair_lost").await;
    let GraceSetup { alpha, mut beta, gamma, alpha_id: _, beta_id, gamma_id, file, bytes } =
        GraceSetup::start(&cluster).await;
    // Two copies in two zones: nothing to do while beta beats (every 5 s).
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(cluster.copy_state(PACK, gamma_id).await, None, "no repair while the copies are healthy");

    // beta dies with its disk; after the grace (10 s since its last beat) its copy is written off
    // and restored on gamma.
    let lost = Instant::now();
    beta.kill9().await;
    std::fs::remove_dir_all(&beta.data_dir).expect("beta's disk is gone");
    cluster.wait_for_whole_copy(PACK, gamma_id, &alpha).await;
    assert!(lost.elapsed() >= Duration::from_secs(5), "repaired before the grace: {:?}", lost.elapsed());
    assert_eq!(std::fs::read(at(&gamma, &file)).expect("gamma's copy"), bytes);
    assert_eq!(cluster.copy_state(PACK, beta_id).await.as_deref(), Some("ok"), "kept until beta is removed");
    silo_cli_json(&alpha, &["node", "remove", "beta"]);
    assert_eq!(cluster.copy_state(PACK, beta_id).await, None);
}

#[tokio::test]
async fn a_node_back_after_its_copies_were_restored_elsewhere_has_the_extra_copy_dropped() {
    let cluster = Cluster::new("repair_extra").await;
    let GraceSetup { alpha, mut beta, gamma, alpha_id, beta_id, gamma_id, file, .. } =
        GraceSetup::start(&cluster).await;

    // beta is down past the grace: its copy is restored on gamma, and beta's row stays.
    beta.kill9().await;
    cluster.wait_for_whole_copy(PACK, gamma_id, &alpha).await;
    drop(beta);
    let beta = cluster.start("beta", "b", NO_REPAIR).await;
    // Back, beta's copy is healthy again: zone b has two copies of a pack that wants two in
    // all, and one of them goes (gamma's or beta's: their free space is the same; the lower
    // node id stays).
    let (kept, dropped) = if beta_id < gamma_id { (beta_id, gamma_id) } else { (gamma_id, beta_id) };
    cluster
        .wait_until("the extra copy dropped", &alpha, async |cluster| {
            cluster.copy_state(PACK, dropped).await.is_none()
        })
        .await;
    assert_eq!(cluster.copy_state(PACK, kept).await.as_deref(), Some("ok"));
    assert_eq!(cluster.copy_state(PACK, alpha_id).await.as_deref(), Some("ok"));
    let dropped_file = if dropped == beta_id { at(&beta, &file) } else { at(&gamma, &file) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while dropped_file.exists() {
        assert!(Instant::now() < deadline, "the dropped copy's file stays: {}", dropped_file.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_owned_pack_on_a_shared_node_moves_to_its_tenants_node_and_leaves_no_file_behind() {
    let cluster = Cluster::new("repair_owned").await;
    let shared = cluster.start("shared", "a", REPAIRS).await;
    silo_cli_json(&shared, &["tenant", "create", "acme"]);
    let own = cluster.start("acme-own", "c", &["--repair-interval-secs", "0", "--owner", "acme"]).await;
    let acme: i64 =
        cluster.db.query_one("SELECT id FROM tenants WHERE name = 'acme'", &[]).await.expect("acme").get(0);
    let (shared_id, own_id) = (cluster.id("shared").await, cluster.id("acme-own").await);
    // acme's pack, written by its own node, with its only copy on the shared node (a policy
    // that changed, or a fault): the copy does not count, yet it is read from.
    let file = made_pack(&shared, PACK);
    let bytes = std::fs::read(&file).expect("pack");
    cluster.record_pack(PACK, own_id, Some(acme), bytes.len(), &[shared_id]).await;

    cluster.wait_for_whole_copy(PACK, own_id, &shared).await;
    assert_eq!(std::fs::read(at(&own, &file)).expect("the owned copy"), bytes);
    // The shared node's copy is forgotten, then its file deleted.
    cluster
        .wait_until("the shared node's copy gone", &shared, async |cluster| {
            !file.exists() && cluster.copy_state(PACK, shared_id).await.is_none()
        })
        .await;
}
