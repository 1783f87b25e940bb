//! Provisioning latency of client databases: `POST /v1/tenants/{t}/databases` (role, database,
//! grants, limits, schema ownership, catalog records) against the bare `createuser` +
//! `createdb` commands on the same server, and a `CREATE DATABASE` inside one open session,
//! p50 and p99 over 50 databases each.
//!
//! `cargo bench --bench databases`. The server is a throwaway cluster with fsync on; Silo is
//! the release binary with its catalog on the same cluster.

#[path = "../tests/common/mod.rs"]
mod process;

use std::process::Command;
use std::time::{Duration, Instant};

use pg_local::PgBinaries;
use pg_local::testing::TestPostgres;
use process::{Silo, free_addr, scratch, silo_cli_json};
use serde_json::json;

const DATABASES: usize = 50;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let pg = TestPostgres::durable().expect("throwaway Postgres");
    let catalog = pg.fresh_database("bench_catalog").await;
    let tmp = scratch();
    let mut silo = Silo::start_at(free_addr(), &tmp.path().join("data"), &["--postgres-url", &catalog], &[]);
    silo.wait_ready(Duration::from_secs(60)).await;
    silo_cli_json(&silo, &["tenant", "create", "bench"]);
    let http = reqwest::Client::new();
    let registered = http
        .post(silo.url("/v1/servers"))
        .bearer_auth(silo.token())
        .json(&json!({ "name": "bench", "url": pg.url("postgres"), "zone": "local" }))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 201);

    let binaries = PgBinaries::locate(None).expect("binaries");
    let spec = pg.instance().spec();
    let (client, connection) =
        tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    // Interleaved, so that the disk's moods fall on all three alike.
    let (mut api, mut bare, mut session) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..DATABASES {
        let started = Instant::now();
        let response = http
            .post(silo.url("/v1/tenants/bench/databases"))
            .bearer_auth(silo.token())
            .json(&json!({ "name": format!("api_{i}") }))
            .send()
            .await
            .expect("create");
        api.push(started.elapsed());
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());

        let name = format!("bare_{i}");
        let started = Instant::now();
        for (program, args) in [
            ("createuser", vec!["--login", name.as_str()]),
            ("createdb", vec!["-O", name.as_str(), name.as_str()]),
        ] {
            let status = Command::new(binaries.path(program))
                .args(args)
                .env("PGHOST", "127.0.0.1")
                .env("PGPORT", pg.port().to_string())
                .env("PGUSER", &spec.superuser)
                .env("PGPASSWORD", &spec.superuser_password)
                .status()
                .expect(program);
            assert!(status.success(), "{program} failed");
        }
        bare.push(started.elapsed());

        let started = Instant::now();
        client.batch_execute(&format!("CREATE DATABASE session_{i}")).await.expect("create database");
        session.push(started.elapsed());
    }

    println!("Provisioning latency over {DATABASES} databases, ms (fsync on)");
    println!("| operation | p50 | p99 |");
    println!("|---|---|---|");
    let (api50, api99) = percentiles(&mut api);
    let (bare50, bare99) = percentiles(&mut bare);
    let (session50, session99) = percentiles(&mut session);
    println!("| Silo API: role, database, grants, limits, schema, catalog | {api50:.1} | {api99:.1} |");
    println!("| bare `createuser` + `createdb` | {bare50:.1} | {bare99:.1} |");
    println!("| `CREATE DATABASE` in one open session | {session50:.1} | {session99:.1} |");
    println!("ratio API / bare: p50 {:.2}x, p99 {:.2}x", api50 / bare50, api99 / bare99);
    drop(silo);
}

fn percentiles(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    let at =
        |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}
