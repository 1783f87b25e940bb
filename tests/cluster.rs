//! Several `silo serve` processes on loopback sharing one throwaway catalog: shared nodes in
//! zones a, b and c, and two nodes owned by tenant `acme` in zones a and b. Objects written
//! through any node read back through every node; every pack has its copies in distinct zones,
//! in the catalog and on disk; acme's bytes are only on acme's nodes; a killed node and a
//! damaged copy cost no read; a zone down refuses or degrades writes as each tenant's policy
//! says, and its copies come back with the zone. A rolling restart, and a rolling upgrade from
//! the previous release, lose nothing.

use crate::common;

use std::time::{Duration, Instant};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use common::cluster::{Cluster, any_file_contains, copies, get, marked, pack_file, put, try_get};
use common::nginx::Nginx;
use common::silo_cli_json;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn three_zones_and_acme(label: &str) -> Cluster {
    let mut cluster = Cluster::new(label).await;
    cluster.start("node-a", "a", None).await;
    cluster.start("node-b", "b", None).await;
    cluster.start("node-c", "c", None).await;
    silo_cli_json(cluster.node("node-a"), &["tenant", "create", "acme"]);
    cluster.start("acme-a", "a", Some("acme")).await;
    cluster.start("acme-b", "b", Some("acme")).await;
    cluster
}

#[tokio::test]
async fn objects_written_through_any_node_read_back_through_every_node_from_copies_in_two_zones() {
    let cluster = three_zones_and_acme("cluster_copies").await;
    let media = cluster.tenant("media");
    media["node-a"].create_bucket().bucket("site").send().await.expect("bucket");
    let mut written = Vec::new();
    for (at, writer) in ["node-a", "node-b", "node-c", "acme-a"].into_iter().enumerate() {
        let body = marked(3_000_000 + at * 700_000, at as u64, b"MEDIA-MARKER");
        let key = format!("through-{writer}.bin");
        put(&media[writer], "site", &key, &body).await;
        written.push((key, body));
    }
    for (key, body) in &written {
        for node in &cluster.nodes {
            assert!(get(&media[&node.name], "site", key).await == *body, "{key} through {}", node.name);
        }
    }

    // Two copies of every pack, in two zones, on the shared nodes only; the same bytes on disk.
    let packs = copies(&cluster).await;
    assert!(!packs.is_empty());
    for (pack, size, nodes, mut zones) in packs {
        assert_eq!(nodes.len(), 2, "pack {pack} has copies on {nodes:?}");
        zones.dedup();
        assert_eq!(zones.len(), 2, "pack {pack}'s copies are in distinct zones: {nodes:?}");
        assert!(nodes.iter().all(|node| node.starts_with("node-")), "media's pack {pack} on {nodes:?}");
        let files: Vec<Vec<u8>> = nodes
            .iter()
            .map(|node| std::fs::read(pack_file(&cluster.data_dir(node), pack)).expect("the copy's file"))
            .collect();
        let size = size as usize;
        assert!(
            files.iter().all(|file| file.len() >= size),
            "pack {pack}: every copy holds its {size} bytes"
        );
        assert!(files[0][..size] == files[1][..size], "pack {pack}: the copies hold the same bytes");
    }
    // Usage counts the stored bytes once, and once per copy.
    let usage = silo_cli_json(cluster.node("node-c"), &["usage", "media"]);
    let stored = usage["stored_bytes"].as_u64().expect("stored_bytes");
    assert!(stored > 0 && usage["replicated_bytes"].as_u64() == Some(2 * stored), "{usage}");
}

#[tokio::test]
async fn an_owned_tenants_bytes_are_only_on_its_own_nodes_and_read_through_every_node() {
    let cluster = three_zones_and_acme("cluster_owned").await;
    let placement = silo_cli_json(cluster.node("node-a"), &["tenant", "placement", "acme", "--owned"]);
    assert_eq!(placement["mode"], "owned", "{placement}");
    let clients = cluster.key_of("acme");
    clients["node-a"].create_bucket().bucket("private").send().await.expect("bucket");
    let marker = b"ACME-SENSITIVE-7f3a";
    let body = marked(5_000_000, 99, marker);
    // Written through a shared node, which may only relay acme's bytes in memory.
    put(&clients["node-b"], "private", "ledger.bin", &body).await;
    for node in &cluster.nodes {
        assert!(
            get(&clients[&node.name], "private", "ledger.bin").await == body,
            "read through {}",
            node.name
        );
    }
    for shared in ["node-a", "node-b", "node-c"] {
        let found = any_file_contains(&cluster.data_dir(shared), marker);
        assert!(found.is_none(), "acme's bytes on the shared node {shared}: {found:?}");
    }
    for own in ["acme-a", "acme-b"] {
        assert!(any_file_contains(&cluster.data_dir(own), marker).is_some(), "acme's copy on {own}");
    }
}

#[tokio::test]
async fn an_owned_tenants_database_backups_are_stored_only_on_its_own_nodes() {
    let cluster = three_zones_and_acme("cluster_owned_backups").await;
    let node = cluster.node("node-a");
    let placement = silo_cli_json(node, &["tenant", "placement", "acme", "--owned"]);
    assert_eq!(placement["mode"], "owned", "{placement}");
    // Client databases go on a registered server: the throwaway Postgres of the catalog.
    let server = pg_local::testing::shared().url("postgres");
    silo_cli_json(node, &["server", "register", "shared", "--server-url", &server, "--zone", "a"]);
    let created = silo_cli_json(node, &["db", "create", "acme", "ledger"]);
    let url = created["url"].as_str().unwrap_or_else(|| panic!("a database url: {created}"));
    common::databases::psql_ok(
        url,
        "CREATE TABLE entries AS SELECT i, md5(i::text) AS note FROM generate_series(1, 50000) i",
    );
    // Backed up through a shared node, which may only relay acme's bytes to acme's nodes.
    let summary = silo_cli_json(node, &["backup", "run", "--db", "acme/ledger"]);
    assert_eq!(summary["results"][0]["status"], "complete", "{summary}");

    let rows = cluster
        .sql_rows(
            "SELECT p.id, p.owner_tenant_id IS NOT NULL, array_agg(DISTINCT n.name ORDER BY n.name) \
             FROM chunk_locations l JOIN tenants t ON t.id = l.tenant_id JOIN packs p ON p.id = l.pack_id \
             JOIN pack_replicas r ON r.pack_id = p.id JOIN storage_nodes n ON n.id = r.node_id \
             WHERE t.name = 'acme' GROUP BY p.id, p.owner_tenant_id",
        )
        .await;
    assert!(!rows.is_empty(), "the backup's chunks are in packs");
    for row in &rows {
        let (pack, owned, nodes): (i64, bool, Vec<String>) = (row.get(0), row.get(1), row.get(2));
        assert!(owned, "pack {pack} of acme's backup is not in acme's domain");
        assert_eq!(nodes, ["acme-a", "acme-b"], "the copies of pack {pack}");
        for shared in ["node-a", "node-b", "node-c"] {
            let file = pack_file(&cluster.data_dir(shared), pack);
            assert!(!file.exists(), "pack {pack} of acme's backup on the shared node {shared}");
        }
    }
}

#[tokio::test]
async fn a_killed_node_and_a_damaged_copy_cost_no_read_and_writes_go_on() {
    let mut cluster = Cluster::new("cluster_faults").await;
    cluster.start("node-a", "a", None).await;
    cluster.start("node-b", "b", None).await;
    cluster.start("node-c", "c", None).await;
    let media = cluster.tenant("media");
    media["node-a"].create_bucket().bucket("site").send().await.expect("bucket");
    let mut written = Vec::new();
    for at in 0..6 {
        let body = common::noise(1_500_000 + at * 100_000, 40 + at as u64);
        let key = format!("before-{at}.bin");
        put(&media["node-a"], "site", &key, &body).await;
        written.push((key, body));
    }

    // kill -9 of the node that holds the other copy: every object still reads, through the
    // writer and through the node that holds no copy (which fails over from the dead one), and
    // new writes go on (the SDK retries what the dead node failed).
    let (_, _, holders, _) = copies(&cluster).await.remove(0);
    let dead = holders.iter().find(|node| *node != "node-a").expect("a copy off node-a").clone();
    let third = ["node-b", "node-c"].into_iter().find(|node| *node != dead).expect("a third node");
    cluster.node_mut(&dead).kill9().await;
    for reader in ["node-a", third] {
        for (key, body) in &written {
            assert!(
                get(&media[reader], "site", key).await == *body,
                "{key} through {reader} with {dead} dead"
            );
        }
    }
    let mut after = Vec::new();
    for at in 0..4 {
        let body = common::noise(900_000, 80 + at);
        let key = format!("after-{at}.bin");
        put(&media[third], "site", &key, &body).await;
        assert!(get(&media["node-a"], "site", &key).await == body, "{key} after the kill");
        after.push((key, body));
    }

    // A flipped byte in one copy: the read gets the right bytes from the other copy, and the
    // damaged copy is marked for repair.
    let live_packs: Vec<_> =
        copies(&cluster).await.into_iter().filter(|(_, _, nodes, _)| !nodes.contains(&dead)).collect();
    let (pack, _, nodes, _) = live_packs.first().cloned().expect("a pack written after the kill");
    assert!(!nodes.contains(&dead), "no new pack on the dead node: {nodes:?}");
    let damaged = nodes[0].clone();
    let path = pack_file(&cluster.data_dir(&damaged), pack);
    let mut bytes = std::fs::read(&path).expect("pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).expect("damage a copy");
    for (key, body) in &after {
        let read = try_get(&media[damaged.as_str()], "site", key).await;
        let stderr = cluster.node(&damaged).stderr();
        assert!(read.as_ref() == Ok(body), "{key} despite the damage: {:?}\n{stderr}", read.err());
    }
    // The damaged copy was marked (the read saw it) and the repairer replaces it: the copy on
    // that node is whole again, byte for byte the sound one's.
    let state_sql = format!(
        "SELECT r.state FROM pack_replicas r JOIN storage_nodes n ON n.id = r.node_id \
         WHERE r.pack_id = {pack} AND n.name = '{damaged}'"
    );
    let sound = nodes.iter().find(|node| **node != damaged).expect("the sound copy's node").clone();
    // Repair works on sealed packs: a GC pass on the writer seals its idle one.
    silo_cli_json(cluster.node(third), &["gc"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = cluster.sql_rows(&state_sql).await.first().map(|row| row.get::<_, String>(0));
        let repaired = state.as_deref() == Some("ok")
            && std::fs::read(&path).ok() == std::fs::read(pack_file(&cluster.data_dir(&sound), pack)).ok();
        if repaired {
            break;
        }
        assert!(Instant::now() < deadline, "the damaged copy on {damaged} is not repaired: {state:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (key, body) in &after {
        assert!(get(&media[damaged.as_str()], "site", key).await == *body, "{key} from the repaired copy");
    }

    // A damaged copy whose only other copy is on the dead node: the read is unavailable for
    // now (503 SlowDown: a retry may find the other copy back), not a 500; once that node is
    // back, the same read is served from its copy.
    let mut shared_with_dead = None;
    for (key, body) in &written {
        let (pack, offset) = first_chunk(&cluster, key).await;
        if holders_of(&cluster, pack).await.contains(&dead) {
            shared_with_dead = Some((key.clone(), body.clone(), pack, offset));
            break;
        }
    }
    let (key, body, pack, offset) = shared_with_dead.expect("an object written before the kill");
    flip_record_byte(&pack_file(&cluster.data_dir("node-a"), pack), offset);
    let error = try_get(&media["node-a"], "site", &key).await.expect_err("no sound copy answers");
    assert!(error.contains("SlowDown") && !error.contains("InternalError"), "{error}");
    cluster.revive(&dead).await;
    assert!(get(&media["node-a"], "site", &key).await == body, "{key} from {dead}'s copy once it is back");

    // Every copy of a chunk damaged: a node with no copy of its own (the killed one, back)
    // answers 500 InternalError, not the 503 SlowDown of copies that do not answer now, since no
    // retry reads it right.
    let (pack, offset) = first_chunk(&cluster, "after-0.bin").await;
    let holders = holders_of(&cluster, pack).await;
    assert!(!holders.contains(&dead), "{dead} holds no copy of pack {pack}: {holders:?}");
    for holder in &holders {
        flip_record_byte(&pack_file(&cluster.data_dir(holder), pack), offset);
    }
    let read = try_get(&media[dead.as_str()], "site", "after-0.bin").await;
    let error = read.expect_err("no copy is right");
    assert!(error.contains("InternalError") && !error.contains("SlowDown"), "{error}");

    // That read marked both copies damaged. A copy marked damaged is still read as a last
    // resort: with one holder's copy set right again (and still marked), a read through that
    // holder (restarted: no cached manifest says its copy is sound) is whole.
    let holder = holders[0].clone();
    flip_record_byte(&pack_file(&cluster.data_dir(&holder), pack), offset);
    cluster.restart(&holder).await;
    let read = try_get(&media[holder.as_str()], "site", "after-0.bin").await;
    assert!(read.as_ref() == Ok(&after[0].1), "after-0.bin from {holder}'s copy: {:?}", read.err());
}

/// The nodes that hold a copy of `pack`.
async fn holders_of(cluster: &Cluster, pack: i64) -> Vec<String> {
    copies(cluster).await.into_iter().find(|copy| copy.0 == pack).expect("a pack").2
}

/// The pack and offset of the record of the first chunk of `key` in bucket `site`.
async fn first_chunk(cluster: &Cluster, key: &str) -> (i64, i64) {
    let rows = cluster
        .sql_rows(&format!(
            "SELECT l.pack_id, l.pack_offset FROM s3_objects s \
             JOIN object_chunks oc ON oc.object_id = s.object_id \
             JOIN chunk_locations l ON l.tenant_id = oc.tenant_id AND l.chunk_id = oc.chunk_id \
             WHERE s.bucket = 'site' AND s.key = '{key}' ORDER BY oc.logical_offset LIMIT 1"
        ))
        .await;
    (rows[0].get(0), rows[0].get(1))
}

/// Flips a bit of the data of the record at `offset` in the pack file at `path`.
fn flip_record_byte(path: &std::path::Path, offset: i64) {
    let mut bytes = std::fs::read(path).expect("pack");
    bytes[offset as usize + storage_node::pack::RECORD_HEADER_LEN as usize + 10] ^= 0x01;
    std::fs::write(path, &bytes).expect("damage a copy");
}

#[tokio::test]
async fn a_copy_that_fails_mid_upload_moves_the_upload_to_a_new_pack_and_the_put_succeeds() {
    const MIB: usize = 1 << 20;
    let mut cluster = Cluster::new("cluster_rescue").await;
    for (name, zone) in [("node-a", "a"), ("node-b", "b"), ("node-c", "c")] {
        cluster.start(name, zone, None).await;
    }
    let media = cluster.tenant("media");
    media["node-a"].create_bucket().bucket("site").send().await.expect("bucket");
    let body = common::noise(24 * MIB, 77);
    let presigned = media["node-a"]
        .put_object()
        .bucket("site")
        .key("big.bin")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(600)).expect("ok"))
        .await
        .expect("presign");
    // One PUT, no retry: its first 16 MiB go to node-a's pack and stream to the peer that
    // holds its other copy; that peer dies; then the rest of the body comes.
    let mut upload =
        common::raw_put(cluster.node("node-a"), &presigned, body.len() as u64, &body[..16 * MIB]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let peer = loop {
        let streaming = ["node-b", "node-c"].into_iter().find(|node| {
            common::cluster::walk(&cluster.data_dir(node).join("packs"))
                .iter()
                .any(|file| std::fs::metadata(file).is_ok_and(|meta| meta.len() > 8 * MIB as u64))
        });
        if let Some(peer) = streaming {
            break peer;
        }
        assert!(Instant::now() < deadline, "no peer received the upload's pack");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let survivor = if peer == "node-b" { "node-c" } else { "node-b" };
    cluster.node_mut(peer).kill9().await;
    upload.write_all(&body[16 * MIB..]).await.expect("the rest of the body");
    let mut answer = String::new();
    upload.read_to_string(&mut answer).await.expect("the answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "the PUT after its peer died: {answer}");

    for reader in ["node-a", survivor] {
        assert!(get(&media[reader], "site", "big.bin").await == body, "big.bin through {reader}");
    }
    // The records went on in a new pack with its copies on node-a and the survivor.
    let rows = cluster
        .sql_rows(
            "SELECT DISTINCT l.pack_id FROM s3_objects s JOIN object_chunks oc ON oc.object_id = s.object_id \
             JOIN chunk_locations l ON l.tenant_id = oc.tenant_id AND l.chunk_id = oc.chunk_id \
             WHERE s.key = 'big.bin'",
        )
        .await;
    let packs: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    let holders: Vec<Vec<String>> = copies(&cluster)
        .await
        .into_iter()
        .filter(|(pack, ..)| packs.contains(pack))
        .map(|(_, _, nodes, _)| nodes)
        .collect();
    assert!(
        holders.iter().any(|nodes| *nodes == ["node-a".to_string(), survivor.to_string()]),
        "no pack of big.bin on node-a and {survivor}: {holders:?}"
    );
}

#[tokio::test]
async fn a_hung_node_costs_reads_and_writes_a_bounded_wait() {
    let mut cluster = Cluster::new("cluster_hung").await;
    for (name, zone) in [("node-a", "a"), ("node-b", "b"), ("node-c", "c")] {
        cluster.start(name, zone, None).await;
    }
    let media = cluster.tenant("media");
    media["node-a"].create_bucket().bucket("site").send().await.expect("bucket");
    let mut written = Vec::new();
    for at in 0..4 {
        let body = common::noise(800_000, 120 + at);
        let key = format!("before-{at}.bin");
        put(&media["node-a"], "site", &key, &body).await;
        written.push((key, body));
    }
    let (_, _, holders, _) = copies(&cluster).await.remove(0);
    let hung = holders.iter().find(|node| *node != "node-a").expect("a copy off node-a").clone();
    let third = ["node-b", "node-c"].into_iter().find(|node| *node != hung).expect("a third node");
    cluster.node(&hung).freeze().await;

    // Reads through a node with no copy: a stopped peer costs one read timeout (5 s), then the
    // other copy answers.
    for (key, body) in &written {
        let started = Instant::now();
        assert!(get(&media[third], "site", key).await == *body, "{key} with {hung} stopped");
        assert!(started.elapsed() < Duration::from_secs(20), "{key} took {:?}", started.elapsed());
    }
    // Writes: an upload whose pack has a copy on the stopped peer fails within the sync timeout
    // and the SDK's retry lands on healthy nodes.
    for at in 0..3 {
        let body = common::noise(700_000, 140 + at);
        let key = format!("during-{at}.bin");
        let started = Instant::now();
        put(&media[third], "site", &key, &body).await;
        assert!(started.elapsed() < Duration::from_secs(60), "{key} took {:?}", started.elapsed());
        assert!(get(&media["node-a"], "site", &key).await == body, "{key} reads back");
    }
    cluster.node(&hung).signal(Signal::SIGCONT);
}

/// An object a client wrote: its key and bytes.
type Written = (String, Vec<u8>);

/// A client that uploads and reads back through `clients` in turn until `stop`: what it wrote,
/// and every error it saw after the SDK's retries.
fn traffic(
    clients: Vec<aws_sdk_s3::Client>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<(Vec<Written>, Vec<String>)> {
    tokio::spawn(async move {
        let mut written: Vec<Written> = Vec::new();
        let mut errors = Vec::new();
        let mut round = 0usize;
        while !stop.is_cancelled() {
            let body = common::noise(300_000 + (round % 5) * 50_000, 500 + round as u64);
            let key = format!("traffic-{round}.bin");
            let client = &clients[round % clients.len()];
            match client
                .put_object()
                .bucket("site")
                .key(&key)
                .body(ByteStream::from(body.clone()))
                .send()
                .await
            {
                Ok(_) => written.push((key, body)),
                Err(err) => errors.push(format!("put {key}: {err:?}")),
            }
            if let Some((key, body)) = written.get(round * 7 % written.len().max(1)) {
                match try_get(&clients[(round + 1) % clients.len()], "site", key).await {
                    Ok(read) if read == *body => {}
                    Ok(_) => errors.push(format!("get {key}: other bytes")),
                    Err(err) => errors.push(format!("get {key}: {err}")),
                }
            }
            round += 1;
        }
        (written, errors)
    })
}

#[tokio::test]
async fn a_node_killed_during_uploads_loses_no_acknowledged_object_and_clients_see_no_error() {
    let mut cluster = Cluster::new("cluster_kill_traffic").await;
    for (name, zone) in [("node-a", "a"), ("node-b", "b"), ("node-c", "c")] {
        cluster.start(name, zone, None).await;
    }
    // The SDK's default retries (three attempts): an upload whose peer dies goes on in a new
    // pack, and a read fails over to another copy, so they need no more.
    let clients = cluster.tenant("media");
    clients["node-a"].create_bucket().bucket("site").send().await.expect("bucket");
    // The client talks to node-a and node-c; node-b, which holds copies, dies under it.
    let survivors = vec![clients["node-a"].clone(), clients["node-c"].clone()];
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = traffic(survivors.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.node_mut("node-b").kill9().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.cancel();
    let (written, errors) = traffic.await.expect("the client task");
    assert!(errors.is_empty(), "errors after the SDK's retries: {errors:#?}");
    assert!(written.len() >= 5, "the client kept writing: {} objects", written.len());
    for (key, body) in &written {
        for client in &survivors {
            assert!(try_get(client, "site", key).await.as_ref() == Ok(body), "{key} after the kill");
        }
    }
    // Nothing half-visible: the bucket lists exactly what was acknowledged.
    let listed = survivors[0].list_objects_v2().bucket("site").send().await.expect("list");
    assert_eq!(listed.key_count(), Some(written.len() as i32), "listed objects are the acknowledged ones");
}

#[tokio::test]
async fn a_rolling_restart_of_every_node_loses_nothing_and_clients_see_no_error() {
    roll_every_node(Cluster::new("cluster_rolling").await, false).await;
}

/// The previous release's `silo` (N) in three zones, upgraded one node at a time to this build
/// (N+1) under traffic: the first node of N+1 migrates the catalog while the others still run
/// N, and N and N+1 copy packs to each other over the internal API until the last one is
/// upgraded. `scripts/upgrade-test` builds N (the commit in `tests/upgrade-from`) and runs this.
#[tokio::test]
#[ignore = "needs the previous release's binary in SILO_UPGRADE_FROM: run scripts/upgrade-test"]
async fn a_rolling_upgrade_from_the_previous_release_loses_nothing_and_clients_see_no_error() {
    let previous = std::env::var_os("SILO_UPGRADE_FROM")
        .expect("SILO_UPGRADE_FROM: the previous release's silo binary (scripts/upgrade-test builds it)");
    let mut cluster = Cluster::new("cluster_upgrade").await;
    cluster.binary = Some(previous.into());
    roll_every_node(cluster, true).await;
}

/// Starts `cluster` in zones a, b and c, then restarts every node, one at a time (`upgrade`:
/// onto this build's binary), while a client uploads and downloads through all of them; every
/// upload acknowledged reads back through every node, and no request fails after the SDK's
/// retries.
async fn roll_every_node(mut cluster: Cluster, upgrade: bool) {
    for (name, zone) in [("node-a", "a"), ("node-b", "b"), ("node-c", "c")] {
        cluster.start(name, zone, None).await;
    }
    // The client reaches the nodes as in production, through a load balancer (an ingress or a
    // Kubernetes Service): nginx sends a request whose node is restarting, and so refuses the
    // connection, to another node. The SDK keeps its default retries (three attempts).
    let addrs: Vec<_> = cluster.nodes.iter().map(|node| node.silo.addr).collect();
    let balancer = Nginx::balancing(&cluster.root, &addrs);
    let (id, secret) = common::tenant_with_key(&cluster.nodes[0].silo, "media");
    let client = common::sdk_client_at(&balancer.url(""), &id, &secret, |config| config);
    client.create_bucket().bucket("site").send().await.expect("bucket");

    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = traffic(vec![client], stop.clone());
    for name in ["node-a", "node-b", "node-c"] {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match upgrade {
            true => cluster.upgrade(name).await,
            false => cluster.restart(name).await,
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (written, errors) = traffic.await.expect("the client task");
    assert!(errors.is_empty(), "errors after the SDK's retries: {errors:#?}\n{}", balancer.error_log());
    assert!(written.len() >= 10, "the client kept writing: {} objects", written.len());
    // What nginx passed on to another node (none when no request happened to reach a node while
    // it was down: a restart takes about a second).
    let passed_on = balancer.error_log().matches("connect() failed").count();
    eprintln!("requests nginx passed to another node during the roll: {passed_on}");
    let clients = cluster.clients(&id, &secret);
    for (key, body) in &written {
        for client in clients.values() {
            assert!(try_get(client, "site", key).await.as_ref() == Ok(body), "{key} after the roll");
        }
    }
    // Every pack written has its two copies in two zones, whichever version wrote it.
    for (pack, _, nodes, mut zones) in copies(&cluster).await {
        zones.sort();
        zones.dedup();
        assert_eq!(zones.len(), 2, "pack {pack} has copies in two zones: {nodes:?}");
    }
}

#[tokio::test]
async fn a_zone_down_refuses_or_degrades_writes_as_the_policy_says_and_the_copies_come_back_with_it() {
    let mut cluster = Cluster::new("cluster_zone_down").await;
    cluster.start_with("node-a", "a", None, &["--repair-interval-secs", "1"]).await;
    cluster.start_with("node-b", "b", None, &["--repair-interval-secs", "0"]).await;
    let (id, secret) = common::tenant_with_key(cluster.node("node-a"), "strict");
    let impatient = common::sdk_client_with(cluster.node("node-a"), &id, &secret, |config| {
        config.retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
    });
    let lenient = cluster.tenant("lenient");
    let policy = silo_cli_json(
        cluster.node("node-a"),
        &["tenant", "placement", "lenient", "--on-shortage", "degraded"],
    );
    assert_eq!(policy["on_shortage"], "degraded", "{policy}");
    impatient.create_bucket().bucket("strict").send().await.expect("bucket");
    lenient["node-a"].create_bucket().bucket("lenient").send().await.expect("bucket");

    // Zone b goes down. The lenient tenant's upload is taken with the one copy zone a can hold
    // (the SDK retries the attempt that found node-b dead).
    cluster.node_mut("node-b").kill9().await;
    let body = common::noise(700_000, 12);
    put(&lenient["node-a"], "lenient", "one-copy.bin", &body).await;
    let held = copies(&cluster).await;
    assert!(
        !held.is_empty() && held.iter().all(|(_, _, nodes, _)| nodes == &["node-a"]),
        "one copy, on node-a: {held:?}"
    );

    // The strict tenant (the default policy) is refused: 503 SlowDown with Retry-After, and
    // nothing is stored.
    let refused = impatient
        .put_object()
        .bucket("strict")
        .key("two-copies.bin")
        .body(ByteStream::from(common::noise(300_000, 13)))
        .send()
        .await
        .expect_err("too few zones for two copies");
    let response = refused.raw_response().expect("an HTTP answer");
    assert_eq!(response.status().as_u16(), 503, "{refused:?}");
    assert_eq!(response.headers().get("retry-after"), Some("1"));
    assert!(format!("{:?}", refused.into_service_error()).contains("SlowDown"));
    assert!(impatient.head_object().bucket("strict").key("two-copies.bin").send().await.is_err());

    // Zone b is back: the one-copy pack gets its second copy there
    // without waiting for any grace, and reads back through node-b.
    // What an operator sees meanwhile: the repair backlog counts the one-copy pack (sealed
    // within seconds of its upload: a degraded pack takes no other upload).
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::metric(cluster.node("node-a"), "silo_repair_backlog_packs").await < Some(1.0) {
        assert!(Instant::now() < deadline, "no repair backlog while zone b is down");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster.revive("node-b").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = copies(&cluster).await;
        if !held.is_empty() && held.iter().all(|(_, _, _, zones)| zones == &["a", "b"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no second copy in zone b: {held:?}\n{}",
            cluster.node("node-a").stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(get(&lenient["node-b"], "lenient", "one-copy.bin").await == body);
    let strict_b = common::sdk_client(cluster.node("node-b"), &id, &secret);
    put(&strict_b, "strict", "two-copies.bin", &body).await;
}
