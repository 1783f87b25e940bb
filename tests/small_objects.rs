//! Issue 13's group commits through `silo serve`: a kill -9 during 32 concurrent PUTs loses no
//! acknowledged object, and what the bucket lists reads back whole; for small objects (inline
//! in the catalog, committed side by side) and for objects in packs (appended to the packs
//! the uploads share, and made durable by one upload's fsync for the others).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;

use crate::common::*;

const SMALL: usize = 16 * 1024;

#[tokio::test]
async fn a_kill_9_during_32_concurrent_small_puts_loses_no_acknowledged_object() {
    kill_9_during_32_concurrent_puts("small_kill9", SMALL, 300).await;
}

#[tokio::test]
async fn a_kill_9_during_32_concurrent_puts_into_shared_packs_loses_no_acknowledged_object() {
    kill_9_during_32_concurrent_puts("packs_kill9", 8 * SMALL + 123, 100).await;
}

/// Kills Silo once `before_kill` PUTs of `size` bytes from 32 concurrent clients were
/// acknowledged, starts it again and reads everything back.
async fn kill_9_during_32_concurrent_puts(label: &str, size: usize, before_kill: usize) {
    let url = pg_local::testing::shared().fresh_database(label).await;
    let tmp = scratch();
    let data = tmp.path().join("data");
    let mut silo = Silo::start(&data, &["--postgres-url", &url]);
    silo.wait_ready(Duration::from_secs(30)).await;
    let (id, secret) = tenant_with_key(&silo, "acme");
    let client = sdk_client(&silo, &id, &secret);
    client.create_bucket().bucket("site").send().await.expect("bucket");

    let acknowledged = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let tasks: Vec<_> = (0..32u64)
        .map(|task| {
            let (client, acknowledged) = (client.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for round in 0u64.. {
                    let (key, seed) = (format!("t{task}/{round}.css"), task * 1_000_000 + round);
                    let put = client
                        .put_object()
                        .bucket("site")
                        .key(&key)
                        .body(ByteStream::from(noise(size, seed)));
                    if put.send().await.is_err() {
                        return;
                    }
                    acknowledged.lock().expect("acks").push((key, seed));
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while acknowledged.lock().expect("acks").len() < before_kill {
        assert!(Instant::now() < deadline, "the clients were acknowledged too few PUTs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let syncs = metric(&silo, "silo_pack_syncs_total").await.unwrap_or_default();
    let shared = metric(&silo, "silo_pack_syncs_shared_total").await.unwrap_or_default();
    eprintln!("before the kill: {syncs} pack syncs, {shared} covered by another upload's");
    if size >= storage_node::store::INLINE_MAX_BYTES {
        // The objects went to packs, and concurrent uploads shared their fsyncs.
        assert!(syncs > 0.0 && shared > 0.0, "{syncs} syncs, {shared} shared");
    }
    silo.kill9().await; // with PUTs in flight
    for task in &tasks {
        task.abort();
    }
    let acknowledged = acknowledged.lock().expect("acks").clone();

    let mut silo = Silo::start_at(silo.addr, &data, &["--postgres-url", &url], &[]);
    silo.wait_ready(Duration::from_secs(30)).await;
    let client = sdk_client(&silo, &id, &secret);
    let get = |key: String| {
        let client = client.clone();
        async move {
            let got = client.get_object().bucket("site").key(&key).send().await.expect("get");
            got.body.collect().await.expect("body").into_bytes().to_vec()
        }
    };
    for (key, seed) in &acknowledged {
        assert!(get(key.clone()).await == noise(size, *seed), "{key} after the kill");
    }
    // Nothing half-visible: every listed key (acknowledged or caught in flight) reads back whole.
    let mut listed = Vec::new();
    let mut token = None;
    loop {
        let page =
            client.list_objects_v2().bucket("site").set_continuation_token(token).send().await.expect("list");
        listed.extend(page.contents().iter().filter_map(|object| object.key().map(str::to_owned)));
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert!(acknowledged.iter().all(|(key, _)| listed.contains(key)), "every acknowledged key is listed");
    for key in listed {
        assert_eq!(get(key.clone()).await.len(), size, "{key} is whole");
    }
}
