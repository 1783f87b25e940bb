//! Issue 13's small-object path: inline chunks, usage deltas and their fold, the quota at its
//! boundary under concurrency, kill -9 during concurrent small uploads, and the catalog round
//! trips of a small PUT and GET.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use storage_node::DataDir;
use storage_node::catalog::tenants;
use storage_node::model::bucket::{self, CannedAcl};
use storage_node::model::object::{self as model, Binding, ObjectHeaders, Target, WriteCondition};
use storage_node::store::{ObjectId, PutOptions, StoreError};

use crate::common::*;

const SMALL: usize = 16 * 1024;

async fn count(pool: &storage_node::catalog::CatalogPool, sql: &str) -> i64 {
    pool.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_small_upload_is_inline_in_the_catalog_and_reads_back_verified() {
    let fx = fixture("small_inline", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let data = random_bytes(SMALL, 1);
    let stored = put(&fx.store, acme, &data).await;
    assert_eq!((stored.chunk_count, stored.new_chunks), (1, 1));
    assert_eq!(count(&fx.pool, "SELECT count(*) FROM chunks WHERE inline_data IS NOT NULL").await, 1);
    assert_eq!(count(&fx.pool, "SELECT count(*) FROM chunk_locations").await, 0, "no pack holds it");
    assert_eq!(count(&fx.pool, "SELECT count(*) FROM packs").await, 0, "no pack was opened");
    assert_eq!(read(&fx.store, acme, stored.id, None).await.unwrap(), data);
    assert_eq!(read(&fx.store, acme, stored.id, Some(100..5000)).await.unwrap(), data[100..5000]);
    // A larger body still goes to a pack.
    let big = random_bytes(600 * 1024, 2);
    let large = put(&fx.store, acme, &big).await;
    assert_eq!(read(&fx.store, acme, large.id, None).await.unwrap(), big);
    assert_eq!(count(&fx.pool, "SELECT count(*) FROM chunks WHERE inline_data IS NOT NULL").await, 1);
    // GC leaves inline chunks in use alone, and takes them once unreferenced.
    fx.store.gc().await.unwrap();
    assert_eq!(read(&fx.store, acme, stored.id, None).await.unwrap(), data);
    fx.store.delete(acme, stored.id).await.unwrap();
    fx.store.gc().await.unwrap();
    assert_eq!(count(&fx.pool, "SELECT count(*) FROM chunks WHERE inline_data IS NOT NULL").await, 0);
    assert_catalog_consistent(&fx.pool).await;
}

#[tokio::test]
async fn a_flipped_bit_in_an_inline_chunk_fails_the_read_and_scrub_names_the_object() {
    let fx = fixture("small_flipped", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", None).await;
    let stored = put(&fx.store, acme, &random_bytes(SMALL, 3)).await;
    fx.pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE chunks SET inline_data = set_bit(inline_data, 777, 1 - get_bit(inline_data, 777))",
            &[],
        )
        .await
        .unwrap();
    let err = read(&fx.store, acme, stored.id, None).await.expect_err("wrong bytes are never served");
    assert!(matches!(err, StoreError::Integrity { .. }), "{err:?}");
    let report = fx.store.scrub(1.0).await.unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!((report.damaged[0].pack, report.damaged[0].objects.as_slice()), (0, &[stored.id.0][..]));
}

#[tokio::test]
async fn identical_small_objects_dedup_within_a_tenant_and_never_across_tenants() {
    let fx = fixture("small_dedup", small_chunks()).await;
    let (a, b) = (tenant(&fx.pool, "tenant-a", None).await, tenant(&fx.pool, "tenant-b", None).await);
    let data = random_bytes(SMALL, 4);
    let first = put(&fx.store, a, &data).await;
    let second = put(&fx.store, a, &data).await;
    let other = put(&fx.store, b, &data).await;
    assert_eq!((first.new_chunks, second.new_chunks, other.new_chunks), (1, 0, 1));
    let usage = fx.store.usage(a).await.unwrap();
    assert_eq!((usage.objects, usage.logical_bytes, usage.unique_bytes), (2, 2 * SMALL as u64, SMALL as u64));
    assert_eq!(count(&fx.pool, "SELECT count(*) FROM chunks").await, 2, "one chunk per tenant");
    fx.store.delete(a, first.id).await.unwrap();
    fx.store.gc().await.unwrap();
    assert_eq!(read(&fx.store, a, second.id, None).await.unwrap(), data);
    assert_eq!(read(&fx.store, b, other.id, None).await.unwrap(), data);
    assert_catalog_consistent(&fx.pool).await;
}

#[tokio::test]
async fn the_quota_is_exact_under_32_concurrent_puts_at_its_boundary() {
    let fx = fixture("small_quota", small_chunks()).await;
    let size = 20_000usize;
    let acme = tenant(&fx.pool, "acme", Some(10 * size as u64 + size as u64 / 2)).await;
    let puts = (0..32u64).map(|seed| {
        let (store, data) = (fx.store.clone(), random_bytes(size, 100 + seed));
        async move {
            let options = PutOptions { expected_len: Some(data.len() as u64), md5: false };
            store.put(acme, std::io::Cursor::new(data), options).await
        }
    });
    let results = futures::future::join_all(puts).await;
    let accepted: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused = results.iter().filter(|r| matches!(r, Err(StoreError::QuotaExceeded { .. }))).count();
    assert_eq!((accepted.len(), refused), (10, 22), "exactly the objects that fit: {results:?}");
    let usage = fx.store.usage(acme).await.unwrap();
    assert_eq!((usage.objects, usage.logical_bytes), (10, accepted.iter().map(|o| o.size).sum::<u64>()));
    assert_catalog_consistent(&fx.pool).await;
}

#[tokio::test]
async fn large_bodies_of_one_repeated_chunk_cannot_share_their_way_past_the_quota() {
    // One distinct chunk, many times over: such a commit must not take the shared lock, or
    // concurrent ones would each find the quota free (an attacker's review found this).
    let fx = fixture("small_quota_repeated", small_chunks()).await;
    let size = 40 * 1024 * 1024;
    let acme = tenant(&fx.pool, "acme", Some(5 * size as u64)).await;
    let puts = (0..8).map(|_| {
        let store = fx.store.clone();
        async move {
            let options = PutOptions { expected_len: Some(size as u64), md5: false };
            store.put(acme, std::io::Cursor::new(vec![0u8; size]), options).await
        }
    });
    let results = futures::future::join_all(puts).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| matches!(r, Err(StoreError::QuotaExceeded { .. }))).count();
    assert_eq!((accepted, refused), (5, 3), "exactly the objects that fit: {results:?}");
    assert_eq!(fx.store.usage(acme).await.unwrap().logical_bytes, 5 * size as u64);
}

#[tokio::test]
async fn concurrent_puts_far_from_the_quota_share_the_tenant_and_count_exactly() {
    let fx = fixture("small_shared", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", Some(1 << 40)).await;
    let puts = (0..32u64).map(|seed| {
        let store = fx.store.clone();
        async move { put(&store, acme, &random_bytes(SMALL, 200 + seed)).await }
    });
    let stored = futures::future::join_all(puts).await;
    let usage = fx.store.usage(acme).await.unwrap();
    assert_eq!((usage.objects, usage.logical_bytes), (32, 32 * SMALL as u64));
    for (seed, object) in (200u64..).zip(&stored) {
        assert_eq!(read(&fx.store, acme, object.id, None).await.unwrap(), random_bytes(SMALL, seed));
    }
    assert_catalog_consistent(&fx.pool).await;
}

#[tokio::test]
async fn usage_after_the_fold_equals_usage_before_it() {
    let fx = fixture("small_fold", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", Some(1 << 30)).await;
    let mut objects = Vec::new();
    for seed in 0..6 {
        objects.push(put(&fx.store, acme, &random_bytes(SMALL + seed as usize * 1000, 300 + seed)).await);
    }
    objects.push(put(&fx.store, acme, &random_bytes(700 * 1024, 399)).await);
    fx.store.delete(acme, objects[0].id).await.unwrap();
    fx.store.gc().await.unwrap();
    let before = fx.store.usage(acme).await.unwrap();
    assert!(fx.store.fold_usage().await.unwrap() > 0, "there were deltas to fold");
    assert_eq!(count(&fx.pool, "SELECT count(*) FROM tenant_usage_deltas").await, 0);
    assert_eq!(fx.store.usage(acme).await.unwrap(), before);
    assert_catalog_consistent(&fx.pool).await;
    assert_eq!(fx.store.fold_usage().await.unwrap(), 0, "nothing is folded twice");
}

#[tokio::test]
async fn round_trips_of_a_small_put_and_get() {
    let (admin, url) = catalog("small_round_trips").await;
    let db: String =
        admin.get().await.unwrap().query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    let client = admin.get().await.unwrap();
    client.batch_execute(&format!("ALTER DATABASE \"{db}\" SET log_statement = 'all'")).await.unwrap();
    let acme = tenant(&admin, "acme", None).await;
    // One connection, so that every statement of the requests is on one server process.
    let pool = storage_node::catalog::connect_pool(url.parse().unwrap(), 1).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = DataDir::open(&tmp.path().join("data")).unwrap();
    let store = open_store(&pool, &data_dir, small_chunks()).await;
    bucket::create(&store, acme, "media", CannedAcl::Private).await.unwrap();
    let pid: i32 = pool.get().await.unwrap().query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let log = pg_local::testing::shared().instance().log_path();
    let marker = |name: &'static str| {
        let pool = pool.clone();
        async move { pool.get().await.unwrap().batch_execute(&format!("SELECT '{name}'")).await.unwrap() }
    };
    let data = random_bytes(SMALL, 5);

    // The lookup of a GET is a statement prepared once per connection, and a node's
    // connections have run it long before any one GET: so has this one.
    model::lookup_for_read(&store, "media", "nothing-here", 0).await.unwrap().expect("the bucket");
    // What a PUT does after authentication: the bucket, the body, the binding. Its hot
    // statements are prepared once per connection too: a first PUT warms this one.
    let small_puts = storage_node::model::SmallPuts::default();
    let put = |key: &'static str, data: Vec<u8>| {
        let (pool, store, small_puts) = (pool.clone(), store.clone(), small_puts.clone());
        async move {
            let found = bucket::find(&pool, "media").await.unwrap().expect("bucket");
            let options = PutOptions { expected_len: Some(data.len() as u64), md5: true };
            let ingested = store.ingest(acme, std::io::Cursor::new(data), options).await.unwrap();
            let target = Target { bucket: "media", id: found.id, key };
            let headers = ObjectHeaders::default();
            model::bind(
                &store,
                acme,
                target,
                "etag",
                &headers,
                Binding::New(&ingested, &small_puts),
                &WriteCondition::Any,
            )
            .await
            .unwrap();
        }
    };
    put("warm.jpg", random_bytes(SMALL, 6)).await;
    // About a hundred chunks, three manifest batches.
    let film = random_bytes(6 << 20, 7);
    put("film.mp4", film.clone()).await;
    marker("put-starts").await;
    put("thumb.jpg", data.clone()).await;
    marker("get-starts").await;
    let (found, head) =
        model::lookup_for_read(&store, "media", "thumb.jpg", 0).await.unwrap().expect("found");
    let row = found.object.expect("object");
    let mut read = store.read_from_head(row.tenant, row.object, row.size, None, head).unwrap();
    let mut got = Vec::new();
    while let Some(piece) = read.stream.next().await {
        got.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(got, data);
    marker("get-ends").await;
    // A range near the end of a large object: its manifest entries come with the object.
    let wanted = (5 << 20) + 12_345..(5 << 20) + 112_345;
    let (found, head) =
        model::lookup_for_read(&store, "media", "film.mp4", wanted.start).await.unwrap().expect("found");
    let row = found.object.expect("object");
    let range = Some(wanted.start..wanted.end);
    let mut read = store.read_from_head(row.tenant, row.object, row.size, range, head).unwrap();
    let mut got = Vec::new();
    while let Some(piece) = read.stream.next().await {
        got.extend_from_slice(&piece.unwrap());
    }
    assert!(got == film[wanted.start as usize..wanted.end as usize], "the range's bytes");
    marker("range-ends").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let text = std::fs::read_to_string(log).unwrap();
    let ours: Vec<&str> = text.lines().filter(|line| line.contains(&format!("[{pid}]"))).collect();
    let between = |from: &str, to: &str| {
        let start = ours.iter().position(|line| line.contains(from)).expect("start marker");
        let end = ours.iter().position(|line| line.contains(to)).expect("end marker");
        ours[start + 1..end]
            .iter()
            .filter(|line| line.contains("LOG:  statement:") || line.contains("LOG:  execute"))
            .copied()
            .collect::<Vec<_>>()
    };
    let (put_lines, get_lines) = (between("put-starts", "get-starts"), between("get-starts", "get-ends"));
    let range_lines = between("get-ends", "range-ends");
    // A named statement is prepared on its first use on the connection (a round trip of its
    // own), and only executed after; unnamed ones are never prepared apart.
    let name_of = |line: &str| {
        let name = line.split("execute ").nth(1).and_then(|rest| rest.split(':').next())?;
        (name != "<unnamed>").then(|| name.to_owned())
    };
    let round_trips = |lines: &[&str]| {
        let first = lines.first().and_then(|line| ours.iter().position(|l| l == line)).unwrap_or(0);
        let prepared_before: Vec<String> = ours[..first].iter().filter_map(|line| name_of(line)).collect();
        let mut prepared = prepared_before;
        lines
            .iter()
            .map(|line| match name_of(line) {
                Some(name) if prepared.contains(&name) => 1,
                Some(name) => {
                    prepared.push(name);
                    2
                }
                None => 1,
            })
            .sum::<usize>()
    };
    eprintln!(
        "PUT: {} statements, {} round trips:\n{}",
        put_lines.len(),
        round_trips(&put_lines),
        put_lines.join("\n")
    );
    eprintln!(
        "GET: {} statements, {} round trips:\n{}",
        get_lines.len(),
        round_trips(&get_lines),
        get_lines.join("\n")
    );
    assert_eq!(round_trips(&get_lines), 1, "a small GET is one catalog round trip");
    assert_eq!(round_trips(&range_lines), 1, "a range of a large object is one: {range_lines:#?}");
    // Three statements: the bucket's access (a node that holds its read cache's lease keeps it;
    // this store holds none), the one statement, and which nodes hold a read cache lease (none
    // here), sent behind the statement in its round trip: the log cannot tell that one apart.
    assert_eq!(round_trips(&put_lines), 3, "{put_lines:#?}");
}

const CHILD_URL: &str = "SILO_TEST_SMALL_CHILD_CATALOG";
const CHILD_DIR: &str = "SILO_TEST_SMALL_CHILD_DATA_DIR";

#[tokio::test]
async fn a_kill_9_during_32_concurrent_small_puts_keeps_every_acknowledged_object() {
    let (pool, url) = catalog("small_killed").await;
    let acme = tenant(&pool, "acme", None).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let module = module_path!().split_once("::").map_or("", |(_, module)| module);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &format!("{module}::child_puts_small_objects"), "--include-ignored", "--nocapture"])
        .env(CHILD_URL, &url)
        .env(CHILD_DIR, &data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.len() < 300 {
        assert!(Instant::now() < deadline, "the child acknowledged only {} objects", acknowledged.len());
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
            && let Some(ack) = line.strip_prefix("ACK ")
        {
            let (object, seed) = ack.split_once(' ').unwrap();
            acknowledged.push((ObjectId(object.parse().unwrap()), seed.parse::<u64>().unwrap()));
        }
    }
    child.kill().unwrap(); // SIGKILL, with puts in flight
    child.wait().unwrap();
    acknowledged.extend(rx.try_iter().filter_map(|line| {
        let (object, seed) = line.strip_prefix("ACK ")?.split_once(' ')?;
        Some((ObjectId(object.parse().ok()?), seed.parse().ok()?))
    }));

    let data_dir = DataDir::open(&data).unwrap();
    let store = open_store(&pool, &data_dir, small_chunks()).await;
    for (object, seed) in &acknowledged {
        assert_eq!(
            read(&store, acme, *object, None).await.unwrap(),
            random_bytes(SMALL, *seed),
            "{object:?}"
        );
    }
    // Nothing half-visible: every object the catalog lists reads back whole.
    let listed: Vec<i64> = pool
        .get()
        .await
        .unwrap()
        .query("SELECT id FROM objects WHERE tenant_id = $1", &[&acme.0])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let acked: HashSet<i64> = acknowledged.iter().map(|(object, _)| object.0).collect();
    assert!(acked.iter().all(|object| listed.contains(object)));
    for object in &listed {
        assert_eq!(read(&store, acme, ObjectId(*object), None).await.unwrap().len(), SMALL);
    }
    assert_eq!(store.usage(acme).await.unwrap().objects, listed.len() as u64);
    assert_catalog_consistent(&pool).await;
}

/// The child half of the test above: 32 tasks put small objects until killed, printing
/// `ACK <object> <seed>` once each put returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_kill_9_during_32_concurrent_small_puts_keeps_every_acknowledged_object"]
async fn child_puts_small_objects() {
    let (Ok(url), Ok(dir)) = (std::env::var(CHILD_URL), std::env::var(CHILD_DIR)) else {
        panic!("only the kill -9 test runs this, with {CHILD_URL} and {CHILD_DIR} set");
    };
    let pool = storage_node::catalog::connect_pool(url.parse().unwrap(), 40).unwrap();
    let data_dir = DataDir::open(std::path::Path::new(&dir)).unwrap();
    let store = open_store(&pool, &data_dir, small_chunks()).await;
    let acme = tenants::find(&pool, "acme").await.unwrap();
    let tasks = (0..32u64).map(|task| {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0.. {
                let seed = task * 1_000_000 + round;
                let stored = put(&store, acme, &random_bytes(SMALL, seed)).await;
                println!("ACK {} {seed}", stored.id.0);
            }
        })
    });
    futures::future::join_all(tasks).await;
}

/// A body that announces a small length and sends far more (an aws-chunked body's decoded
/// length, which nothing under the store enforces) stops at the first chunk past its length:
/// an announced small body skips the early quota check, so it must not stream on unchecked.
#[tokio::test]
async fn a_body_longer_than_it_announced_stops_at_its_first_chunk_past_the_length() {
    let fx = fixture("small_longer", small_chunks()).await;
    let acme = tenant(&fx.pool, "acme", Some(1 << 20)).await;
    let options = PutOptions { expected_len: Some(SMALL as u64), md5: true };
    let body = random_bytes(64 << 20, 11);
    let refused = fx.store.put(acme, std::io::Cursor::new(body), options).await;
    assert!(
        matches!(refused, Err(StoreError::LongerThanAnnounced { expected }) if expected == SMALL as u64),
        "{refused:?}"
    );
    assert_eq!(count(&fx.pool, "SELECT count(*) FROM objects").await, 0);
    assert_eq!(
        count(&fx.pool, "SELECT coalesce(sum(size), 0)::int8 FROM packs").await,
        0,
        "nothing kept in packs"
    );
    assert_catalog_consistent(&fx.pool).await;
}
