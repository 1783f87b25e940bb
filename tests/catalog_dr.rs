//! Catalog disaster recovery after GC compaction: the real binary, a real throwaway Postgres,
//! S3 objects through the AWS SDK, a database backup, and a catalog lost and restored after GC
//! compacted (and deleted) the packs its backup points at.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use common::databases::{Fixture, admin_sql, psql_ok, restore_download_into, silo_json};
use common::noise;
use common::silo_cli_json;
use serde_json::{Value, json};

/// A fixture whose GC deletes retired packs at once, so one `silo gc` compacts and deletes.
async fn fixture(label: &str) -> Fixture {
    let mut fx = Fixture::start(label, &[]).await;
    let config = fx.tmp.path().join("silo.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("[store]\nretire_grace = 0\n");
    std::fs::write(&config, text).expect("config");
    fx.restart(&[]).await;
    fx
}

/// An S3 client of a new key of `tenant`, with the bucket `media` created.
async fn s3(fx: &Fixture, tenant: &str) -> Client {
    let key = silo_cli_json(&fx.silo, &["key", "create", tenant]);
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    let client = common::sdk_client(&fx.silo, &field("access_key_id"), &field("secret_access_key"));
    client.create_bucket().bucket("media").send().await.expect("create bucket");
    client
}

/// S3 clients hold the server's address: a restarted server listens elsewhere. The new client
/// does not retry, so that a failed upload shows.
fn readdress(client: &Client, fx: &Fixture) -> Client {
    let config = client
        .config()
        .to_builder()
        .endpoint_url(format!("http://{}", fx.silo.addr))
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

async fn put(client: &Client, key: &str, body: &[u8]) {
    client
        .put_object()
        .bucket("media")
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|err| panic!("put {key}: {err:?}"));
}

async fn get(client: &Client, key: &str) -> Vec<u8> {
    let object = client.get_object().bucket("media").key(key).send().await;
    let object = object.unwrap_or_else(|err| panic!("get {key}: {err:?}"));
    object.body.collect().await.expect("body").into_bytes().to_vec()
}

fn packs_dir(fx: &Fixture) -> PathBuf {
    fx.silo.data_dir.join("packs")
}

/// Every pack file's id and contents.
fn pack_files(dir: &Path) -> BTreeMap<i64, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("packs")
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let id = i64::from_str_radix(name.strip_suffix(".pack")?, 16).ok()?;
            Some((id, std::fs::read(entry.path()).expect("read pack")))
        })
        .collect()
}

/// The one catalog manifest in the data directory.
fn manifest(fx: &Fixture) -> PathBuf {
    let manifests: Vec<_> = std::fs::read_dir(fx.silo.data_dir.join("catalog-backups"))
        .expect("manifests")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    manifests[0].clone()
}

/// Stops Silo, loses the catalog, restores it from `manifest` into a new database, and
/// returns that database's URL (Silo is not started).
async fn lose_and_restore_catalog(fx: &mut Fixture, label: &str, manifest: &Path) -> String {
    fx.silo.signal(nix::sys::signal::Signal::SIGTERM);
    fx.silo.wait_exit(Duration::from_secs(30)).await;
    let lost = fx.catalog_url();
    let name = lost.rsplit('/').next().expect("database name").split('?').next().expect("name").to_string();
    admin_sql(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"));
    let rebuilt = pg_local::testing::shared().fresh_database(label).await;
    let restore = Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(["catalog", "restore", "--manifest"])
        .arg(manifest)
        .arg("--data-dir")
        .arg(&fx.silo.data_dir)
        .args(["--postgres-url", &rebuilt])
        .output()
        .expect("silo catalog restore");
    assert!(restore.status.success(), "catalog restore: {}", String::from_utf8_lossy(&restore.stderr));
    std::fs::write(fx.tmp.path().join("catalog-url"), &rebuilt).expect("catalog url");
    rebuilt
}

/// The pack ids the catalog's chunk locations name.
fn located_packs(fx: &Fixture) -> BTreeSet<i64> {
    psql_ok(&fx.catalog_url(), "SELECT DISTINCT pack_id FROM chunk_locations")
        .lines()
        .map(|line| line.parse().expect("pack id"))
        .collect()
}

#[tokio::test]
async fn a_catalog_backup_restores_every_object_after_gc_compacted_and_deleted_its_packs() {
    let mut fx = fixture("dr_compacted").await;
    fx.tenant("dr-survivor");
    let client = s3(&fx, "dr-survivor").await;
    let objects = [
        ("photo.raw", noise(3 << 20, 1)),
        ("thumb.raw", noise(200 << 10, 2)),
        ("notes.txt", b"compressible notes, line after line\n".repeat(30_000)),
    ];
    for (key, body) in &objects {
        put(&client, key, body).await;
    }
    let created = fx.create("dr-survivor", json!({ "name": "db" })).await;
    psql_ok(
        created["url"].as_str().expect("url"),
        "CREATE TABLE t (x int, y text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 5000) i",
    );
    let summary = silo_json(&fx, &["backup", "run", "--all"]);
    let results = summary["results"].as_array().expect("results");
    let of = |database: &str| results.iter().find(|r| r["database"] == database).cloned().expect(database);
    assert_eq!(of("(catalog)")["status"], "complete", "{summary}");
    let backup = of("db")["backup_id"].as_i64().expect("backup id");
    let manifest = manifest(&fx);
    let at_backup = located_packs(&fx);

    // More writes and deletes, so that compaction has work: the big scratch object shares the
    // packs of everything above, and once deleted leaves them mostly dead.
    put(&client, "scratch.bin", &noise(24 << 20, 3)).await;
    put(&client, "later.bin", &noise(1 << 20, 4)).await;
    client.delete_object().bucket("media").key("scratch.bin").send().await.expect("delete");
    let gc = silo_json(&fx, &["gc"]);
    assert!(gc["packs_compacted"].as_u64() >= Some(1) && gc["packs_deleted"].as_u64() >= Some(1), "{gc}");
    let on_disk = pack_files(&packs_dir(&fx));
    let gone: Vec<_> = at_backup.iter().filter(|id| !on_disk.contains_key(id)).collect();
    assert!(!gone.is_empty(), "compaction deleted packs the catalog backup points at: {at_backup:?}");
    let listed: Value = serde_json::from_slice(&std::fs::read(&manifest).expect("manifest")).expect("json");
    let manifest_packs: BTreeSet<i64> =
        listed["chunks"].as_array().expect("chunks").iter().filter_map(|c| c["pack"].as_i64()).collect();
    assert!(
        manifest_packs.iter().any(|id| !on_disk.contains_key(id)),
        "the offline manifest names a deleted pack: {manifest_packs:?}"
    );

    // The catalog is lost and restored from the backup; the first start reconciles it.
    lose_and_restore_catalog(&mut fx, "dr_compacted_rebuilt", &manifest).await;
    fx.restart_after_crash().await;
    let log = fx.silo.stderr();
    assert!(log.contains("reconciled the catalog with the packs on disk"), "{log}");
    let repointed = log.split("locations_repointed: ").nth(1).and_then(|rest| rest.split(',').next());
    assert!(repointed.is_some_and(|n| n != "0"), "moved chunks were repointed: {log}");
    let client = readdress(&client, &fx);
    for (key, body) in &objects {
        assert!(get(&client, key).await == *body, "{key} reads back byte for byte");
    }
    let scratch = restore_download_into(&fx, backup, "dr_compacted_check");
    assert_eq!(
        psql_ok(&scratch, "SELECT count(*) || ' ' || md5(string_agg(y, ',' ORDER BY x)) FROM t"),
        psql_ok(
            created["url"].as_str().expect("url"),
            "SELECT count(*) || ' ' || md5(string_agg(y, ',' ORDER BY x)) FROM t"
        )
    );
    admin_sql("DROP DATABASE dr_compacted_check");
    let scrub = silo_json(&fx, &["scrub"]);
    assert_eq!(scrub["damaged"], json!([]), "every chunk the restored catalog names is readable: {scrub}");

    // GC on the reconciled catalog keeps every live chunk, and reads stay exact.
    silo_json(&fx, &["gc"]);
    let restored = silo_json(&fx, &["backup", "restore", &backup.to_string(), "--into", "again"]);
    assert_eq!(psql_ok(restored["url"].as_str().expect("url"), "SELECT count(*) FROM t"), "5000");
    for (key, body) in &objects {
        assert!(get(&client, key).await == *body, "{key} reads back after GC");
    }
}

#[tokio::test]
async fn after_a_catalog_restore_new_uploads_never_overwrite_or_delete_an_existing_pack() {
    let mut fx = fixture("dr_pack_ids").await;
    fx.tenant("keeper");
    let client = s3(&fx, "keeper").await;
    let first = noise(2 << 20, 10);
    put(&client, "first.bin", &first).await;
    silo_json(&fx, &["backup", "catalog"]);
    let manifest = manifest(&fx);
    // After the backup, compaction copies the live records into a new pack: an id that the
    // restored catalog's sequence will hand out again.
    put(&client, "scratch.bin", &noise(12 << 20, 11)).await;
    client.delete_object().bucket("media").key("scratch.bin").send().await.expect("delete");
    let gc = silo_json(&fx, &["gc"]);
    assert!(gc["packs_compacted"].as_u64() >= Some(1), "{gc}");

    let rebuilt = lose_and_restore_catalog(&mut fx, "dr_pack_ids_rebuilt", &manifest).await;
    let before = pack_files(&packs_dir(&fx));
    let known: i64 = psql_ok(&rebuilt, "SELECT max(id) FROM packs").parse().expect("max pack id");
    assert!(
        before.keys().any(|id| *id > known),
        "packs newer than the backup exist on disk ({:?}), past the restored catalog's {known}",
        before.keys()
    );
    fx.restart_after_crash().await;
    let client = readdress(&client, &fx);

    // New uploads at once, each into a new pack; no retries, so a collision is seen.
    let fresh: Vec<Vec<u8>> = (0..3).map(|n| noise(1 << 20, 20 + n)).collect();
    let uploads: Vec<_> = fresh
        .iter()
        .enumerate()
        .map(|(n, body)| {
            let (client, body) = (client.clone(), body.clone());
            tokio::spawn(async move { put(&client, &format!("new-{n}.bin"), &body).await })
        })
        .collect();
    for upload in uploads {
        upload.await.expect("upload task");
    }
    let after = pack_files(&packs_dir(&fx));
    assert!(after.len() > before.len(), "the uploads made new packs");
    for (id, bytes) in &before {
        let now = after.get(id).unwrap_or_else(|| panic!("pack {id} was deleted by an upload"));
        assert!(now.starts_with(bytes), "pack {id} was overwritten");
    }

    // GC on the restored catalog keeps the pack that compaction filled after the backup: it
    // holds the only copy of the object from before the backup.
    silo_json(&fx, &["gc"]);
    let kept = pack_files(&packs_dir(&fx));
    assert!(before.keys().filter(|id| **id > known).all(|id| kept.contains_key(id)), "{:?}", kept.keys());
    assert!(get(&client, "first.bin").await == first, "the object from before the backup reads back");
    for (n, body) in fresh.iter().enumerate() {
        assert!(get(&client, &format!("new-{n}.bin")).await == *body);
    }
    let scrub = silo_json(&fx, &["scrub"]);
    assert_eq!(scrub["damaged"], json!([]), "{scrub}");
}
