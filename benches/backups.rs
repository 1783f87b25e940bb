//! Database backups against their baselines, in one run on one throwaway cluster (fsync on):
//!
//! - throughput of the first backup of a pgbench database: Silo (`backup run`, `pg_dump -Fc -Z0`
//!   streamed into the chunk store) against `pg_dump -Fc -Z0 -f file` and `pgbackrest backup`;
//! - storage for 7 daily backups with a day of OLTP (1% of the accounts updated) between them:
//!   Silo's added stored bytes against 7 `pg_dump -Fc` files, restic backing up the `-Z0`
//!   dumps, and pgBackRest (one full, then incrementals);
//! - restore throughput: Silo (`backup restore --into`) against `pg_restore` from a local file.
//!
//! `cargo bench --bench backups` (scale 50, about 790 MB; `SILO_BENCH_SCALE` changes it).
//! Needs pgbench (Debian's postgresql), restic and pgbackrest; a missing baseline is skipped.

#[path = "../tests/common/mod.rs"]
mod process;

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pg_local::PgBinaries;
use pg_local::testing::TestPostgres;
use process::{Silo, free_addr, silo_cli_json};
use serde_json::{Value, json};

const DAYS: usize = 7;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let scale: u32 = std::env::var("SILO_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let work = common::work_dir();
    let pg = TestPostgres::durable().expect("throwaway Postgres");
    let bin = PgBinaries::locate(None).expect("binaries");
    let catalog = pg.fresh_database("bench_catalog").await;
    let mut silo =
        Silo::start_at(free_addr(), &work.path().join("silo-data"), &["--postgres-url", &catalog], &[]);
    silo.wait_ready(Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, silo.url(path)).bearer_auth(silo.token()).json(&body).send()
    };
    let registered = call(
        reqwest::Method::POST,
        "/v1/servers",
        json!({ "name": "bench", "url": pg.url("postgres"), "zone": "local" }),
    );
    assert_eq!(registered.await.expect("register").status(), 201);
    silo_cli_json(&silo, &["tenant", "create", "bench"]);
    let created: Value = call(
        reqwest::Method::POST,
        "/v1/tenants/bench/databases",
        json!({ "name": "pgbench", "plan": "large" }),
    )
    .await
    .expect("create")
    .json()
    .await
    .expect("credentials");
    let db = created["database"].as_str().expect("database").to_string();
    let admin_url = pg.url(&db);

    eprintln!("pgbench -i -s {scale} ...");
    let started = Instant::now();
    run_ok(Command::new(bin.path("pgbench")).args([
        "-i",
        "-q",
        "-s",
        &scale.to_string(),
        created["url"].as_str().expect("url"),
    ]));
    eprintln!("  loaded in {:.0} s", started.elapsed().as_secs_f64());

    // Throughput of a first, full backup.
    let dump_z0 = work.path().join("dump-z0.bin");
    let pg_dump = time(|| {
        run_ok(Command::new(bin.path("pg_dump")).args(["-Fc", "-Z0", "-d", &admin_url, "-f"]).arg(&dump_z0))
    });
    let dump_bytes = std::fs::metadata(&dump_z0).map_or(0, |m| m.len());
    let started = Instant::now();
    let first = backup(&silo);
    let silo_backup = started.elapsed();
    let pgbackrest = PgBackRest::setup(&pg, work.path());
    let pgbackrest_full = pgbackrest.as_ref().and_then(|p| p.backup("full"));

    println!(
        "Backups of a pgbench database at scale {scale} ({:.0} MB as `pg_dump -Fc -Z0`)",
        dump_bytes as f64 / 1e6
    );
    println!();
    println!("| first (full) backup | seconds | MB/s of dump | Silo's ratio |");
    println!("|---|---|---|---|");
    let mbps = |took: Duration| dump_bytes as f64 / 1e6 / took.as_secs_f64();
    println!(
        "| Silo `backup run` (into the chunk store) | {:.1} | {:.0} | |",
        silo_backup.as_secs_f64(),
        mbps(silo_backup)
    );
    println!(
        "| `pg_dump -Fc -Z0 -f file` | {:.1} | {:.0} | {:.2}x |",
        pg_dump.as_secs_f64(),
        mbps(pg_dump),
        pg_dump.as_secs_f64() / silo_backup.as_secs_f64()
    );
    if let Some(full) = pgbackrest_full {
        println!(
            "| `pgbackrest backup --type=full` | {:.1} | {:.0} | {:.2}x |",
            full.as_secs_f64(),
            mbps(full),
            full.as_secs_f64() / silo_backup.as_secs_f64()
        );
    }

    // Seven daily backups with a day of OLTP between them.
    let restic = Restic::init(work.path());
    let mut silo_added = first["new_stored_bytes"].as_u64().unwrap_or(0);
    let mut compressed_dumps = 0u64;
    let transactions = (scale * 100_000 / 100 / 4).to_string(); // 1% of the accounts, over 4 clients
    for day in 0..DAYS {
        if day > 0 {
            run_ok(
                Command::new(bin.path("pgbench"))
                    .args([
                        "-n",
                        "-c",
                        "4",
                        "-j",
                        "2",
                        "-t",
                        &transactions,
                        created["url"].as_str().expect("url"),
                    ])
                    .env("PGOPTIONS", "-c synchronous_commit=off"),
            );
            silo_added += backup(&silo)["new_stored_bytes"].as_u64().unwrap_or(0);
            if let Some(p) = &pgbackrest {
                p.backup("incr");
            }
        }
        let file = work.path().join("dump-compressed.bin");
        run_ok(Command::new(bin.path("pg_dump")).args(["-Fc", "-d", &admin_url, "-f"]).arg(&file));
        compressed_dumps += std::fs::metadata(&file).map_or(0, |m| m.len());
        run_ok(Command::new(bin.path("pg_dump")).args(["-Fc", "-Z0", "-d", &admin_url, "-f"]).arg(&dump_z0));
        if let Some(r) = &restic {
            r.backup(&dump_z0);
        }
        eprintln!("  day {} done", day + 1);
    }
    println!();
    println!("| 7 daily backups, 1% of accounts updated a day | stored MB | Silo's ratio |");
    println!("|---|---|---|");
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!("| Silo (bytes the 7 backups added to the store) | {:.1} | |", mb(silo_added));
    let row = |label: &str, bytes: u64| {
        println!("| {label} | {:.1} | {:.3}x |", mb(bytes), silo_added as f64 / bytes as f64)
    };
    row("7 `pg_dump -Fc` files (compressed)", compressed_dumps);
    if let Some(r) = &restic {
        row("restic of the 7 `-Z0` dumps", common::disk_usage(&r.repo));
    }
    if let Some(p) = &pgbackrest {
        row("pgBackRest, 1 full + 6 incremental", common::disk_usage(&p.repo));
    }

    // Restore throughput: a new database from the newest backup, against pg_restore of a file.
    let newest =
        silo_cli_json(&silo, &["backup", "list", "--db", "bench/pgbench"])[0]["id"].as_i64().expect("id");
    let started = Instant::now();
    silo_cli_json(&silo, &["backup", "restore", &newest.to_string(), "--into", "restored"]);
    let silo_restore = started.elapsed();
    let admin = pg.url("postgres");
    run_ok(Command::new(bin.path("psql")).args(["-d", &admin, "-c", "CREATE DATABASE plain_restore"]));
    let plain = time(|| {
        run_ok(
            Command::new(bin.path("pg_restore"))
                .args([
                    "--no-owner",
                    "--no-privileges",
                    "--single-transaction",
                    "--exit-on-error",
                    "-d",
                    &pg.url("plain_restore"),
                ])
                .arg(&dump_z0),
        )
    });
    println!();
    println!("| restore of the newest backup | seconds | Silo's ratio |");
    println!("|---|---|---|");
    println!("| Silo `backup restore --into` | {:.1} | |", silo_restore.as_secs_f64());
    println!(
        "| `pg_restore` from a local `-Z0` file | {:.1} | {:.2}x |",
        plain.as_secs_f64(),
        plain.as_secs_f64() / silo_restore.as_secs_f64()
    );
    drop(silo);
}

/// `silo backup run --db bench/pgbench`; returns its result.
fn backup(silo: &Silo) -> Value {
    let summary = silo_cli_json(silo, &["backup", "run", "--db", "bench/pgbench"]);
    let result = summary["results"][0].clone();
    assert_eq!(result["status"], "complete", "{summary}");
    result
}

fn time(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn run_ok(command: &mut Command) {
    let output = command.output().expect("run");
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A restic repository in the work directory.
struct Restic {
    repo: std::path::PathBuf,
}

impl Restic {
    fn init(work: &Path) -> Option<Restic> {
        if !common::which("restic") {
            eprintln!("restic not found: skipped");
            return None;
        }
        let repo = work.join("restic");
        let r = Restic { repo };
        r.command().arg("init").output().ok().filter(|o| o.status.success())?;
        Some(r)
    }

    fn command(&self) -> Command {
        let mut command = Command::new("restic");
        command.arg("--repo").arg(&self.repo).arg("--quiet").env("RESTIC_PASSWORD", "bench");
        command
    }

    fn backup(&self, file: &Path) {
        run_ok(self.command().arg("backup").arg(file));
    }
}

/// pgBackRest with a repository in the work directory, run as the cluster's OS user.
struct PgBackRest {
    repo: std::path::PathBuf,
    args: Vec<String>,
    user: Option<String>,
}

impl PgBackRest {
    fn setup(pg: &TestPostgres, work: &Path) -> Option<PgBackRest> {
        if !common::which("pgbackrest") {
            eprintln!("pgbackrest not found: skipped");
            return None;
        }
        let dir = work.join("pgbackrest");
        for sub in ["repo", "log", "lock"] {
            std::fs::create_dir_all(dir.join(sub)).ok()?;
        }
        let instance = pg.instance();
        let user = process::is_root().then(|| "postgres".to_string());
        if user.is_some() {
            let _ = Command::new("chown").args(["-R", "postgres"]).arg(&dir).status();
        }
        let config = dir.join("pgbackrest.conf");
        std::fs::write(&config, "").ok()?;
        let args = vec![
            format!("--config={}", config.display()),
            "--stanza=bench".into(),
            format!("--repo1-path={}", dir.join("repo").display()),
            format!("--log-path={}", dir.join("log").display()),
            format!("--lock-path={}", dir.join("lock").display()),
            format!("--pg1-path={}", instance.data_dir().display()),
            format!("--pg1-port={}", pg.port()),
            format!("--pg1-socket-path={}", instance.socket_dir().display()),
            format!("--pg1-user={}", instance.spec().superuser),
            "--log-level-console=error".into(),
        ];
        let backrest = PgBackRest { repo: dir.join("repo"), args, user };
        let created = backrest.command("stanza-create", &[]).output().ok()?;
        if !created.status.success() {
            eprintln!(
                "pgbackrest stanza-create failed, skipped: {}",
                String::from_utf8_lossy(&created.stderr)
            );
            return None;
        }
        Some(backrest)
    }

    fn command(&self, verb: &str, extra: &[&str]) -> Command {
        let mut command = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "pgbackrest"]);
                c
            }
            None => Command::new("pgbackrest"),
        };
        command.args(&self.args).args(extra).arg(verb).env("PGPASSWORD", "test-only-password");
        command
    }

    /// One backup of `kind` (full or incr); its time, or `None` when it failed.
    fn backup(&self, kind: &str) -> Option<Duration> {
        let started = Instant::now();
        let kind = format!("--type={kind}");
        let output = self.command("backup", &[&kind, "--archive-check=n", "--start-fast"]).output().ok()?;
        if !output.status.success() {
            eprintln!("pgbackrest backup failed: {}", String::from_utf8_lossy(&output.stderr));
            return None;
        }
        Some(started.elapsed())
    }
}
