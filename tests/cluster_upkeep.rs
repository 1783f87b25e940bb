//! Upkeep of a cluster holding real S3 objects: node-a in zone a, node-b and node-c in zone b,
//! one catalog. A copy damaged on another node is read around and marked; scrub on a node
//! marks its own damaged copy; repair replaces both; GC deletes and compacts across nodes and
//! every node deletes its own copies of the retired packs; a drained node gives its copies away
//! and is removed; every object reads back exact through every node left, at each step. A
//! tenant's placement change moves its old chunks into its new domain and off the old disks.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, any_file_contains, copies, get, marked, pack_file, put, try_get};
use common::silo_cli_json;

/// The flags of a node whose upkeep the test drives: retired packs deleted at once, GC only
/// when asked, and a repair pass every `repair_every` seconds (0: none).
fn upkeep_flags(cluster: &Cluster, repair_every: u32) -> Vec<String> {
    let config = cluster.root.join("silo.toml");
    std::fs::write(&config, "[store]\nretire_grace = 0\n").expect("config");
    let config = config.to_string_lossy().into_owned();
    let every = repair_every.to_string();
    ["--config", &config, "--repair-interval-secs", &every, "--gc-interval-secs", "0"]
        .map(str::to_owned)
        .to_vec()
}

fn as_strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// Flips one byte in the middle of `file`.
fn flip_middle_byte(file: &Path) {
    let mut bytes = std::fs::read(file).expect("pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(file, &bytes).expect("damage a copy");
}

/// The state of `pack`'s copy on `node`, if it has one.
async fn copy_state(cluster: &Cluster, pack: i64, node: &str) -> Option<String> {
    let sql = format!(
        "SELECT r.state FROM pack_replicas r JOIN storage_nodes n ON n.id = r.node_id \
         WHERE r.pack_id = {pack} AND n.name = '{node}'"
    );
    cluster.sql_rows(&sql).await.first().map(|row| row.get(0))
}

/// Waits up to a minute for `done`, failing with node-a's log (it repairs).
async fn wait_for<F: AsyncFnMut(&Cluster) -> bool>(cluster: &Cluster, what: &str, mut done: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(cluster).await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within a minute\n{}",
            cluster.node("node-a").stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every object of `written` in `bucket` reads back exact through each node of `readers`.
async fn all_read_back(
    clients: &HashMap<String, aws_sdk_s3::Client>,
    bucket: &str,
    readers: &[&str],
    written: &[(String, Vec<u8>)],
    when: &str,
) {
    for reader in readers {
        for (key, body) in written {
            let read = try_get(&clients[*reader], bucket, key).await;
            assert!(read.as_ref() == Ok(body), "{key} through {reader} {when}: {:?}", read.err());
        }
    }
}

#[tokio::test]
async fn damage_scrub_gc_and_a_drain_across_nodes_keep_every_object_and_leave_no_dead_copy() {
    let mut cluster = Cluster::new("cluster_upkeep").await;
    let (quiet, repairs) = (upkeep_flags(&cluster, 0), upkeep_flags(&cluster, 1));
    let (quiet, repairs) = (as_strs(&quiet), as_strs(&repairs));
    cluster.start_with("node-a", "a", None, &repairs).await;
    cluster.start_with("node-b", "b", None, &quiet).await;
    cluster.start_with("node-c", "b", None, &quiet).await;
    let clients = cluster.tenant("media");
    clients["node-a"].create_bucket().bucket("site").send().await.expect("bucket");
    let mut written = Vec::new();
    for at in 0..6u64 {
        let (key, body) = (format!("clip-{at}.bin"), common::noise(600_000 + at as usize * 50_000, 300 + at));
        put(&clients["node-a"], "site", &key, &body).await;
        written.push((key, body));
    }
    // A GC pass on the writer seals its idle pack: repair and compaction take sealed packs.
    silo_cli_json(cluster.node("node-a"), &["gc"]);
    let (pack, _, holders, _) = copies(&cluster).await.into_iter().next().expect("a pack");
    let other = holders.iter().find(|node| *node != "node-a").expect("a copy in zone b").clone();
    let bystander = if other == "node-b" { "node-c" } else { "node-b" };

    // node-a's copy damaged: a read through the node without a copy gets the right bytes from
    // whichever copy it tries; the first read that meets the damage marks the copy, and repair
    // (node-a is zone a's only node) replaces it in place from the sound one.
    let sound = std::fs::read(pack_file(&cluster.data_dir(&other), pack)).expect("the sound copy");
    let damaged = pack_file(&cluster.data_dir("node-a"), pack);
    flip_middle_byte(&damaged);
    for round in 0.. {
        all_read_back(&clients, "site", &[bystander], &written, "with a damaged copy").await;
        if copy_state(&cluster, pack, "node-a").await.as_deref() != Some("ok")
            || std::fs::read(&damaged).ok().as_ref() == Some(&sound)
        {
            break;
        }
        assert!(round < 20, "twenty rounds of reads never met the damaged copy");
    }
    wait_for(&cluster, "node-a's copy replaced", async |cluster| {
        copy_state(cluster, pack, "node-a").await.as_deref() == Some("ok")
            && std::fs::read(&damaged).ok().as_ref() == Some(&sound)
    })
    .await;

    // The zone-b copy damaged on disk: scrub on its node finds and marks it; repair makes a
    // copy on the other zone-b node and drops the damaged one.
    flip_middle_byte(&pack_file(&cluster.data_dir(&other), pack));
    let node = cluster.node(&other);
    let scrubbed: serde_json::Value = reqwest::Client::new()
        .post(node.url("/v1/storage/scrub"))
        .bearer_auth(node.token())
        .send()
        .await
        .expect("scrub")
        .json()
        .await
        .expect("a scrub report");
    assert!(scrubbed["damaged"].as_array().is_some_and(|damaged| !damaged.is_empty()), "{scrubbed}");
    assert_eq!(copy_state(&cluster, pack, &other).await.as_deref(), Some("damaged"));
    wait_for(&cluster, "the damaged copy moved", async |cluster| {
        copy_state(cluster, pack, &other).await.is_none()
            && copy_state(cluster, pack, bystander).await.as_deref() == Some("ok")
    })
    .await;
    all_read_back(&clients, "site", &["node-a", "node-b", "node-c"], &written, "after repair").await;

    // Four objects deleted: one GC pass deletes their chunks and compacts the pack, and every
    // node's own pass deletes its copy of the retired pack.
    for (key, _) in written.drain(..4) {
        clients["node-b"].delete_object().bucket("site").key(&key).send().await.expect("delete");
    }
    let report = silo_cli_json(cluster.node("node-a"), &["gc"]);
    assert!(report["packs_compacted"].as_u64() >= Some(1), "{report}");
    for node in ["node-b", "node-c", "node-a"] {
        silo_cli_json(cluster.node(node), &["gc"]);
    }
    for node in ["node-a", "node-b", "node-c"] {
        let file = pack_file(&cluster.data_dir(node), pack);
        assert!(!file.exists(), "{node} keeps the retired pack's file {}", file.display());
    }
    all_read_back(&clients, "site", &["node-a", "node-b", "node-c"], &written, "after GC").await;

    // The zone-b node holding the copies drains: they move to the other, it is removed, and
    // everything reads through the two nodes left.
    let holder = copies(&cluster).await[0].2.iter().find(|node| *node != "node-a").expect("zone b").clone();
    let heir = if holder == "node-b" { "node-c" } else { "node-b" };
    silo_cli_json(cluster.node("node-a"), &["node", "drain", &holder]);
    wait_for(&cluster, "the drained node's copies moved", async |cluster| {
        copies(cluster).await.iter().all(|(_, _, nodes, _)| nodes.iter().all(|node| node != &holder))
    })
    .await;
    silo_cli_json(cluster.node("node-a"), &["node", "remove", &holder]);
    all_read_back(&clients, "site", &["node-a", heir], &written, "after the drain").await;
    for (key, body) in &written {
        assert!(get(&clients[heir], "site", key).await == *body);
    }
}

/// Whether some file under each of `nodes`' data directories holds `marker`.
fn holders_of(cluster: &Cluster, nodes: &[&str], marker: &[u8]) -> Vec<String> {
    nodes
        .iter()
        .filter(|node| any_file_contains(&cluster.data_dir(node), marker).is_some())
        .map(|node| node.to_string())
        .collect()
}

/// Runs a GC pass on every node: the first one rewrites, each one deletes its retired copies.
fn gc_everywhere(cluster: &Cluster) -> Vec<serde_json::Value> {
    cluster.nodes.iter().map(|node| silo_cli_json(&node.silo, &["gc"])).collect()
}

// Several threads: the uploads meant to run during the change must not wait behind the
// blocking CLI calls that make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_change_moves_a_tenants_old_chunks_into_its_new_domain_and_off_the_old_disks() {
    let mut cluster = Cluster::new("cluster_relocate").await;
    let quiet = upkeep_flags(&cluster, 0);
    let quiet = as_strs(&quiet);
    for (node, zone) in [("node-a", "a"), ("node-b", "b"), ("node-c", "c")] {
        cluster.start_with(node, zone, None, &quiet).await;
    }
    silo_cli_json(cluster.node("node-a"), &["tenant", "create", "acme"]);
    cluster.start_with("acme-a", "a", Some("acme"), &quiet).await;
    cluster.start_with("acme-b", "b", Some("acme"), &quiet).await;
    let (shared, owned) = (["node-a", "node-b", "node-c"], ["acme-a", "acme-b"]);
    let media = cluster.tenant("media");
    let acme = cluster.key_of("acme");
    media["node-a"].create_bucket().bucket("site").send().await.expect("bucket");
    acme["node-a"].create_bucket().bucket("vault").send().await.expect("bucket");

    // acme starts on the shared nodes, its chunks in the same packs as media's.
    let (acme_marker, media_marker) = (b"ACME-MOVES-c41d".as_slice(), b"MEDIA-STAYS-9e2b".as_slice());
    let mut acme_objects = Vec::new();
    let mut media_objects = Vec::new();
    for at in 0..3u64 {
        let key = format!("file-{at}.bin");
        let body = marked(700_000, 40 + at, acme_marker);
        put(&acme["node-a"], "vault", &key, &body).await;
        acme_objects.push((key.clone(), body));
        let body = marked(500_000, 50 + at, media_marker);
        put(&media["node-a"], "site", &key, &body).await;
        media_objects.push((key, body));
    }
    gc_everywhere(&cluster);
    assert_eq!(holders_of(&cluster, &owned, acme_marker), Vec::<String>::new(), "acme is shared so far");
    assert!(holders_of(&cluster, &shared, acme_marker).len() >= 2, "two copies of acme's bytes");
    let mixed = cluster
        .sql_rows(
            "SELECT l.pack_id FROM chunk_locations l JOIN tenants t ON t.id = l.tenant_id \
             GROUP BY l.pack_id HAVING count(DISTINCT t.name) > 1",
        )
        .await;
    assert!(!mixed.is_empty(), "acme's and media's chunks share a pack");

    // Owned now, while acme uploads through a shared node: an upload caught by the change in a
    // shared pack is refused at its commit and retried by the SDK. GC rewrites every pack that
    // holds acme's chunks, splitting the shared ones (twice round the nodes: each seals its
    // own open packs first).
    let uploading = {
        let client = acme["node-b"].clone();
        tokio::spawn(async move {
            let mut written = Vec::new();
            for at in 0..12u64 {
                let (key, body) = (format!("during-{at}.bin"), marked(300_000, 70 + at, b"ACME-MOVES-c41d"));
                put(&client, "vault", &key, &body).await;
                written.push((key, body));
            }
            written
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    silo_cli_json(cluster.node("node-a"), &["tenant", "placement", "acme", "--owned"]);
    let mut reports = gc_everywhere(&cluster);
    acme_objects.extend(uploading.await.expect("the uploads"));
    reports.extend(gc_everywhere(&cluster));
    let relocated: u64 = reports.iter().map(|report| report["packs_relocated"].as_u64().unwrap_or(0)).sum();
    assert!(relocated >= 1, "{reports:?}");
    assert_eq!(
        holders_of(&cluster, &shared, acme_marker),
        Vec::<String>::new(),
        "acme's bytes left the shared disks"
    );
    assert_eq!(holders_of(&cluster, &owned, acme_marker), owned.to_vec());
    assert_eq!(holders_of(&cluster, &owned, media_marker), Vec::<String>::new(), "media stays shared");
    let caught_up =
        cluster.sql_rows("SELECT placed_epoch = placement_epoch FROM tenants WHERE name = 'acme'").await;
    assert!(caught_up[0].get::<_, bool>(0), "acme's placement change is caught up");
    for (pack, _, nodes, _) in copies(&cluster).await {
        let owners = cluster
            .sql_rows(&format!("SELECT DISTINCT tenant_id FROM chunk_locations WHERE pack_id = {pack}"))
            .await;
        assert_eq!(owners.len(), 1, "pack {pack} on {nodes:?} holds one domain's chunks");
    }
    all_read_back(&acme, "vault", &cluster.names(), &acme_objects, "after acme became owned").await;
    all_read_back(&media, "site", &cluster.names(), &media_objects, "after acme became owned").await;

    // And back: shared again, acme's chunks leave its own nodes.
    silo_cli_json(cluster.node("acme-a"), &["tenant", "placement", "acme", "--shared"]);
    let reports = gc_everywhere(&cluster);
    let relocated: u64 = reports.iter().map(|report| report["packs_relocated"].as_u64().unwrap_or(0)).sum();
    assert!(relocated >= 1, "{reports:?}");
    let caught_up =
        cluster.sql_rows("SELECT placed_epoch = placement_epoch FROM tenants WHERE name = 'acme'").await;
    assert!(caught_up[0].get::<_, bool>(0), "acme's second placement change is caught up");
    assert_eq!(holders_of(&cluster, &owned, acme_marker), Vec::<String>::new(), "acme's own disks emptied");
    assert!(holders_of(&cluster, &shared, acme_marker).len() >= 2, "two shared copies again");
    all_read_back(&acme, "vault", &cluster.names(), &acme_objects, "after acme became shared again").await;
    all_read_back(&media, "site", &cluster.names(), &media_objects, "after acme became shared again").await;
}
