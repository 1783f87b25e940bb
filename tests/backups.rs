//! Database backups end to end: the real binary, a real throwaway Postgres, `pg_dump` into the
//! chunk store, `pg_restore` out of it, and `psql` and plain `pg_restore` as the clients.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::databases::{Fixture, admin_sql, psql_ok, restore_download_into, silo, silo_json};
use serde_json::{Value, json};

/// A database with several tables, indexes, sequences, a view, a large object and 100k rows.
const SCHEMA: &str = "
    CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, total numeric(10,2),
                         placed timestamptz DEFAULT '2026-01-01', note text);
    CREATE INDEX orders_by_customer ON orders (customer, placed);
    CREATE SEQUENCE invoice_numbers START 1000;
    SELECT nextval('invoice_numbers') FROM generate_series(1, 7);
    CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 500;
    INSERT INTO customers (name, email) SELECT 'customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, 1000) i;
    INSERT INTO orders (customer, total, note)
        SELECT 1 + i % 1000, (i % 997) * 1.25, CASE WHEN i % 10 = 0 THEN NULL ELSE md5(i::text) END
        FROM generate_series(1, 100000) i;
    CREATE TABLE documents (id int PRIMARY KEY, body oid);
    INSERT INTO documents VALUES (1, lo_from_bytea(0, convert_to(repeat('large object ', 5000), 'UTF8')));
";

/// A fingerprint of everything a round trip must keep.
fn fingerprint(url: &str) -> String {
    psql_ok(
        url,
        "SELECT (SELECT md5(string_agg(c::text, ',' ORDER BY c.id)) FROM customers c) || ' ' || \
                (SELECT md5(string_agg(o::text, ',' ORDER BY o.id)) FROM orders o) || ' ' || \
                (SELECT count(*) FROM big_orders) || ' ' || \
                (SELECT last_value FROM invoice_numbers) || ' ' || \
                (SELECT last_value FROM orders_id_seq) || ' ' || \
                (SELECT md5(lo_get(body)) FROM documents WHERE id = 1) || ' ' || \
                (SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public')",
    )
}

#[tokio::test]
async fn a_backup_restores_exactly_into_a_new_database_and_with_plain_pg_restore() {
    let fx = Fixture::start("bk_roundtrip", &[]).await;
    fx.tenant("shopco");
    let source = fx.create("shopco", json!({ "name": "main" })).await;
    let url = source["url"].as_str().expect("url");
    psql_ok(url, SCHEMA);
    let before = fingerprint(url);

    let summary = silo_json(&fx, &["backup", "run", "--db", "shopco/main", "--verify"]);
    let result = &summary["results"][0];
    assert_eq!(
        (result["status"].as_str(), result["verified"].as_bool()),
        (Some("complete"), Some(true)),
        "{summary}"
    );
    let id = result["backup_id"].as_i64().expect("backup id");
    let usage = silo_json(&fx, &["usage", "shopco"]);
    assert_eq!((usage["backups"].as_u64(), usage["s3_objects"].as_u64()), (Some(1), Some(0)), "{usage}");
    assert!(usage["backup_logical_bytes"].as_u64().unwrap_or(0) > 5_000_000, "{usage}");
    let listed = silo_json(&fx, &["backup", "list", "--db", "shopco/main"]);
    assert_eq!(listed[0]["id"].as_i64(), Some(id));
    assert!(listed[0]["logical_bytes"].as_i64().unwrap_or(0) > 5_000_000, "{listed}");
    assert!(listed[0]["finished_at"].is_string() && listed[0]["server_version"].is_string(), "{listed}");

    // Restore into a new database: fresh credentials, the same contents, owned by the new
    // database's owner role (which the new login role acts as).
    let restored = silo_json(&fx, &["backup", "restore", &id.to_string(), "--into", "copy"]);
    let copy_url = restored["url"].as_str().expect("url");
    assert_ne!(restored["password"], source["password"]);
    assert_eq!(fingerprint(copy_url), before, "the round trip is exact");
    let owner = psql_ok(copy_url, "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'");
    assert_eq!(owner, psql_ok(copy_url, "SELECT current_user"));
    assert_eq!(psql_ok(copy_url, "SELECT session_user"), restored["user"].as_str().expect("user"));
    psql_ok(copy_url, "INSERT INTO customers (name) VALUES ('new')");

    // Into a name that exists: refused.
    let taken = silo(&fx, &["backup", "restore", &id.to_string(), "--into", "copy"]);
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already has a database"), "{taken:?}");

    // The download is a plain custom-format archive.
    let plain_url = restore_download_into(&fx, id, "plain_restore");
    assert_eq!(fingerprint(&plain_url), before);
    admin_sql("DROP DATABASE plain_restore");

    // In place: a safety backup first, then the source is as it was at the backup.
    psql_ok(url, "DELETE FROM orders WHERE id > 10; TRUNCATE documents");
    let in_place = silo_json(&fx, &["backup", "restore", &id.to_string(), "--in-place", "--yes"]);
    assert!(in_place["safety_backup"].as_i64().is_some(), "{in_place}");
    assert_eq!(fingerprint(url), before);
    let refused = silo(&fx, &["backup", "restore", &id.to_string(), "--in-place"]);
    assert!(!refused.status.success(), "an in-place restore needs --yes");

    // The database is deleted; its backups stay, and restore still works from them.
    let (status, _) = fx.call(reqwest::Method::DELETE, "/v1/tenants/shopco/databases/main", None).await;
    assert_eq!(status, 204);
    let kinds: Vec<String> = silo_json(&fx, &["backup", "list", "--tenant", "shopco"])
        .as_array()
        .expect("list")
        .iter()
        .filter(|b| b["database"] == "main")
        .map(|b| b["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["final", "safety", "manual"], "newest first");
    let again = silo_json(&fx, &["backup", "restore", &id.to_string(), "--into", "main"]);
    assert_eq!(fingerprint(again["url"].as_str().expect("url")), before);
    assert!(!fx.silo.stderr().contains(source["password"].as_str().expect("password")));
}

/// Finds the `pg_dump` that dumps `database` (by its environment), waiting up to 20 s.
async fn pg_dump_of(database: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let wanted = format!("PGDATABASE={database}");
            if String::from_utf8_lossy(&cmdline).contains("pg_dump")
                && environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes())
            {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no pg_dump of {database} appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Holds an exclusive lock on a table, so that a dump of its database waits.
async fn hold_lock(url: &str, table: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).await.expect("lock");
    client
}

fn catalog_count(fx: &Fixture, sql: &str) -> String {
    psql_ok(&fx.catalog_url(), sql)
}

// Multi-threaded: the lock holder's connection must make progress while the test blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_backups_never_look_complete_and_a_rerun_succeeds() {
    let mut fx = Fixture::start("bk_faults", &[]).await;
    fx.tenant("faulty");
    let created = fx.create("faulty", json!({ "name": "db" })).await;
    let url = created["url"].as_str().expect("url").to_string();
    let pg_name = created["database"].as_str().expect("database").to_string();
    psql_ok(&url, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 50000)");

    // pg_dump is killed midway: the run fails, names the database, and exits non-zero.
    let lock = hold_lock(&url, "t").await;
    let cli = {
        let (addr, token) = (fx.silo.addr, fx.silo.token());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_silo"))
                .args(["backup", "run", "--tenant", "faulty", "--force"])
                .env("SILO_URL", format!("http://{addr}"))
                .env("SILO_ADMIN_TOKEN", token)
                .output()
                .expect("run silo")
        })
    };
    let dump = pg_dump_of(&pg_name).await;
    // Meanwhile a second run does not back up the same database twice.
    let second = silo_json(&fx, &["backup", "run", "--db", "faulty/db"]);
    assert_eq!(second["results"][0]["status"], "skipped", "{second}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(dump as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill");
    drop(lock);
    let output = cli.await.expect("cli task");
    assert_eq!(output.status.code(), Some(1), "a failed backup fails the run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("faulty/db") && stderr.contains("failed"), "{stderr}");
    let listed = silo_json(&fx, &["backup", "list", "--tenant", "faulty"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["status"], "failed");
    assert!(listed[0]["error"].as_str().unwrap_or("").contains("pg_dump"), "{listed}");
    assert_eq!(
        catalog_count(&fx, "SELECT count(*) FROM chunks WHERE pin_count > 0"),
        "0",
        "no pin outlives it"
    );
    assert_eq!(catalog_count(&fx, "SELECT count(*) FROM objects"), "0", "no object was committed");

    // Silo is killed midway: after a restart the backup shows as failed, never complete.
    let lock = hold_lock(&url, "t").await;
    let request = {
        let (http, address, token) = (fx.http.clone(), fx.silo.url("/v1/backups/run"), fx.silo.token());
        tokio::spawn(async move {
            http.post(address).bearer_auth(token).json(&json!({ "database": "faulty/db" })).send().await
        })
    };
    let dump = pg_dump_of(&pg_name).await;
    fx.silo.kill9().await;
    drop(lock);
    assert!(request.await.expect("task").is_err(), "the request died with Silo");
    let _ =
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(dump as i32), nix::sys::signal::Signal::SIGKILL);
    fx.restart_after_crash().await;
    let listed = silo_json(&fx, &["backup", "list", "--tenant", "faulty"]);
    let statuses: Vec<_> =
        listed.as_array().expect("list").iter().map(|b| b["status"].as_str().unwrap_or("")).collect();
    assert_eq!(statuses, ["failed", "failed"], "{listed}");
    assert!(listed[0]["error"].as_str().unwrap_or("").contains("interrupted"), "{listed}");

    // A rerun succeeds, and GC leaves the store consistent.
    let rerun = silo(&fx, &["backup", "run", "--all"]);
    assert!(
        rerun.status.success(),
        "{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&rerun.stderr),
        String::from_utf8_lossy(&rerun.stdout),
        fx.silo.stderr()
    );
    let listed = silo_json(&fx, &["backup", "list", "--tenant", "faulty"]);
    assert_eq!(listed[0]["status"], "complete", "{listed}");
    let gc = silo(&fx, &["gc"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let objects =
        "SELECT count(*) FROM objects o JOIN tenants t ON t.id = o.tenant_id WHERE t.name = 'faulty'";
    assert_eq!(catalog_count(&fx, objects), "1", "one object: the complete backup");
    // Hourly runs are safe: nothing is due again.
    let hourly = silo_json(&fx, &["backup", "run", "--all"]);
    assert_eq!(hourly["results"][0]["status"], "not_due", "{hourly}");
}

#[tokio::test]
async fn a_damaged_backup_fails_restore_verify_and_download_with_an_integrity_error() {
    let fx = Fixture::start("bk_damage", &[]).await;
    fx.tenant("damaged");
    let created = fx.create("damaged", json!({ "name": "db" })).await;
    let url = created["url"].as_str().expect("url");
    psql_ok(
        url,
        "CREATE TABLE t (x int, y text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 20000) i",
    );
    let summary = silo_json(&fx, &["backup", "run", "--db", "damaged/db"]);
    let id = summary["results"][0]["backup_id"].as_i64().expect("id");

    // Flip a bit in the middle of one of the backup's chunks on disk.
    let location = psql_ok(
        &fx.catalog_url(),
        &format!(
            "SELECT l.pack_id || ' ' || l.pack_offset FROM database_backups b \
             JOIN object_chunks oc ON oc.object_id = b.object_id \
             JOIN chunk_locations l ON l.tenant_id = oc.tenant_id AND l.chunk_id = oc.chunk_id \
             WHERE b.id = {id} ORDER BY oc.logical_offset LIMIT 1"
        ),
    );
    let (pack, offset) = location.split_once(' ').expect("location");
    let path = fx.silo.data_dir.join(format!("packs/{:016x}.pack", pack.parse::<i64>().expect("pack")));
    let mut bytes = std::fs::read(&path).expect("pack");
    bytes[offset.parse::<usize>().expect("offset") + 56 + 100] ^= 0x01;
    std::fs::write(&path, bytes).expect("write pack");

    let verified = silo(&fx, &["backup", "verify", &id.to_string()]);
    assert_eq!(verified.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verified.stderr).contains("damaged"), "{verified:?}");
    let restored = silo(&fx, &["backup", "restore", &id.to_string(), "--into", "copy"]);
    assert_eq!(restored.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&restored.stderr).contains("damaged"), "{restored:?}");
    let (status, _) = fx.call(reqwest::Method::GET, "/v1/tenants/damaged/databases/copy", None).await;
    assert_eq!(status, 404, "a failed restore leaves no database behind");
    let file = fx.tmp.path().join("damaged.dump");
    let downloaded = silo(&fx, &["backup", "download", &id.to_string(), "-o", file.to_str().expect("path")]);
    assert!(!downloaded.status.success());
    assert!(!file.exists(), "no partial file is left under the asked name");
    assert!(admin_sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'silo_verify_%'") == "0");
    assert_eq!(psql_ok(url, "SELECT count(*) FROM t"), "20000", "the source is untouched");
}

#[tokio::test]
async fn retention_deletes_only_what_the_policy_names() {
    let fx = Fixture::start("bk_retention", &[]).await;
    fx.tenant("keeper");
    let created = fx.create("keeper", json!({ "name": "two", "plan": "keep2" })).await;
    psql_ok(created["url"].as_str().expect("url"), "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    for _ in 0..4 {
        silo_json(&fx, &["backup", "run", "--db", "keeper/two"]);
    }
    let ids = |list: &Value| -> Vec<i64> {
        list.as_array().expect("list").iter().filter_map(|b| b["id"].as_i64()).collect()
    };
    let all = ids(&silo_json(&fx, &["backup", "list", "--db", "keeper/two"]));
    assert_eq!(all.len(), 2, "each run prunes: keep_last = 2 keeps two\n{}", fx.silo.stderr());

    // GFS across days: the daily3 plan keeps the newest of each of the last three days.
    let daily = fx.create("keeper", json!({ "name": "daily", "plan": "daily3" })).await;
    psql_ok(daily["url"].as_str().expect("url"), "CREATE TABLE t (x int)");
    let mut made = Vec::new();
    for days_ago in [5, 4, 4, 3, 2, 2] {
        let summary = silo_json(&fx, &["backup", "run", "--db", "keeper/daily"]);
        let id = summary["results"][0]["backup_id"].as_i64().expect("id");
        psql_ok(
            &fx.catalog_url(),
            &format!(
                "UPDATE database_backups SET started_at = now() - interval '{days_ago} days' - interval '{} minutes' WHERE id = {id}",
                made.len()
            ),
        );
        made.push((id, days_ago));
    }
    let pruned = silo_json(&fx, &["backup", "prune"]);
    let kept = ids(&silo_json(&fx, &["backup", "list", "--db", "keeper/daily"]));
    // Every run prunes too, with the dates as they were then, so the older days went earlier.
    // Now two days have backups: of day 2 the newer (made[4]; made[5] is a minute older) stays,
    // and day 3's only one.
    let expected: Vec<i64> = vec![made[4].0, made[3].0];
    assert_eq!(kept, expected, "pruned: {pruned}");
    assert!(
        pruned
            .as_array()
            .expect("pruned")
            .iter()
            .all(|p| p["reason"].as_str().unwrap_or("").contains("daily3"))
    );

    // A final backup is kept after its database is gone, outside the plan's policy.
    let (status, _) = fx.call(reqwest::Method::DELETE, "/v1/tenants/keeper/databases/two", None).await;
    assert_eq!(status, 204);
    silo_json(&fx, &["backup", "prune"]);
    let left = silo_json(&fx, &["backup", "list", "--db", "keeper/two"]);
    assert!(left.as_array().expect("list").iter().any(|b| b["kind"] == "final"), "{left}");
}

#[tokio::test]
async fn a_lost_catalog_is_rebuilt_from_its_backup() {
    let mut fx = Fixture::start("bk_catalog", &[]).await;
    fx.tenant("survivor");
    let created = fx.create("survivor", json!({ "name": "db" })).await;
    psql_ok(
        created["url"].as_str().expect("url"),
        "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)",
    );
    let summary = silo_json(&fx, &["backup", "run", "--all"]);
    let results = summary["results"].as_array().expect("results");
    let of = |database: &str| results.iter().find(|r| r["database"] == database).cloned().expect(database);
    assert_eq!(of("(catalog)")["status"], "complete", "run --all backs up the catalog: {summary}");
    let backup = of("db")["backup_id"].as_i64().expect("backup id");

    // The catalog is lost: Silo stops, and a new, empty database takes its place.
    fx.silo.signal(nix::sys::signal::Signal::SIGTERM);
    fx.silo.wait_exit(Duration::from_secs(30)).await;
    let rebuilt = pg_local::testing::shared().fresh_database("bk_catalog_rebuilt").await;
    let manifests: Vec<_> = std::fs::read_dir(fx.silo.data_dir.join("catalog-backups"))
        .expect("manifests")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let restore = Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(["catalog", "restore", "--manifest"])
        .arg(&manifests[0])
        .arg("--data-dir")
        .arg(&fx.silo.data_dir)
        .args(["--postgres-url", &rebuilt])
        .output()
        .expect("silo catalog restore");
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    std::fs::write(fx.tmp.path().join("catalog-url"), &rebuilt).expect("catalog url");
    fx.restart_after_crash().await;

    // Everything the catalog knew is back: tenants, databases, backups and the chunks behind them.
    let listed = silo_json(&fx, &["backup", "list", "--db", "survivor/db"]);
    assert_eq!(listed[0]["id"].as_i64(), Some(backup), "{listed}");
    // The chunks behind the backup read back through the rebuilt catalog, verified.
    let scratch = restore_download_into(&fx, backup, "after_rebuild");
    assert_eq!(psql_ok(&scratch, "SELECT count(*) FROM t"), "1000");
    admin_sql("DROP DATABASE after_rebuild");
    // And a restore into a new database works on the rebuilt catalog (its tables have no
    // statistics yet: the spare claim once took two spares under such a plan).
    let again = silo_json(&fx, &["backup", "restore", &backup.to_string(), "--into", "again"]);
    assert_eq!(psql_ok(again["url"].as_str().expect("url"), "SELECT count(*) FROM t"), "1000");
}

/// Tenant code that, run with any privilege beyond the tenant's own, makes itself a superuser
/// and runs a shell command as the Postgres OS user (which leaves `canary`). It runs on every
/// row a CHECK sees (restore, verify) and inside an aggregate named `count` that a `search_path`
/// set on the database puts before pg_catalog's (row counts).
fn escalation_trap(canary: &std::path::Path) -> String {
    format!(
        "CREATE FUNCTION public.pwn(x int) RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN
           BEGIN EXECUTE 'RESET ROLE'; EXCEPTION WHEN OTHERS THEN NULL; END;
           BEGIN EXECUTE 'CREATE ROLE pwned_' || x || ' LOGIN SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
           BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER CREATEROLE', session_user);
           EXCEPTION WHEN OTHERS THEN NULL; END;
           BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {canary}''';
           EXCEPTION WHEN OTHERS THEN NULL; END;
           -- Keep whatever role runs this: hand it to the tenant's login role, and make the
           -- database read-only by default so that cleaning up after it fails.
           BEGIN EXECUTE format('GRANT %I TO evil_trap', session_user); EXCEPTION WHEN OTHERS THEN NULL; END;
           BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database());
           EXCEPTION WHEN OTHERS THEN NULL; END;
           RETURN true;
         END $f$;
         CREATE FUNCTION public.count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS $f$
         BEGIN PERFORM public.pwn(7); RETURN $1 + 1; END $f$;
         CREATE AGGREGATE public.count(*) (sfunc = public.count_step, stype = bigint, initcond = '0');
         CREATE TABLE trapped (x int CHECK (public.pwn(x)));
         INSERT INTO trapped VALUES (1), (2);
         DO $d$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = public, pg_catalog', current_database()); END $d$;",
        canary = canary.display()
    )
}

/// The attributes and memberships of the roles (with an oid up to `max_oid`) that this test's
/// tenant or the attack could touch, and of every privileged one, to compare before and after
/// (other tests make and drop their own roles meanwhile).
fn role_snapshot(max_oid: &str) -> String {
    admin_sql(&format!(
        "SELECT string_agg(r.rolname || ':' || r.rolsuper || r.rolcreaterole || r.rolcreatedb || r.rolbypassrls \
           || ':' || coalesce((SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members m \
           JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), ''), ' ' ORDER BY r.rolname) \
         FROM pg_roles r WHERE r.oid <= {max_oid} \
           AND (r.rolname ~ '^(evil|pg_)' OR r.rolsuper OR r.rolcreaterole OR r.rolcreatedb)"
    ))
}

#[tokio::test]
async fn tenant_code_never_runs_with_admin_rights_in_backup_verify_or_restore() {
    let fx = Fixture::start("bk_escalation", &[]).await;
    fx.tenant("evil");
    let source = fx.create("evil", json!({ "name": "trap", "plan": "keep2" })).await;
    let url = source["url"].as_str().expect("url");
    let canary = fx.tmp.path().join("pwned");
    // The Postgres OS user could write there if the attack ran as a superuser.
    std::fs::set_permissions(fx.tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    psql_ok(url, &escalation_trap(&canary));
    let max_oid = admin_sql("SELECT max(oid) FROM pg_roles");
    let before = role_snapshot(&max_oid);
    let superusers =
        || admin_sql("SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolsuper");
    let superusers_before = superusers();

    let summary = silo_json(&fx, &["backup", "run", "--db", "evil/trap", "--verify"]);
    let result = &summary["results"][0];
    assert_eq!(result["status"], "complete", "{summary}");
    assert_eq!(result["verified"], true, "verify restored and counted the rows: {summary}");
    let id = result["backup_id"].as_i64().expect("backup id").to_string();
    let into = silo_json(&fx, &["backup", "restore", &id, "--into", "copy"]);
    let copy_url = into["url"].as_str().expect("url");
    assert_eq!(psql_ok(copy_url, "SELECT pg_catalog.count(*) FROM trapped"), "2");
    silo_json(&fx, &["backup", "restore", &id, "--in-place", "--yes"]);
    assert_eq!(psql_ok(url, "SELECT pg_catalog.count(*) FROM trapped"), "2");

    assert!(!canary.exists(), "tenant code ran a shell command as the Postgres superuser");
    assert_eq!(superusers(), superusers_before, "no role became a superuser");
    assert_eq!(admin_sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pwned%'"), "0");
    assert_eq!(role_snapshot(&max_oid), before, "no role gained an attribute or a membership");
    let catalog_id =
        psql_ok(&fx.catalog_url(), "SELECT left(replace(catalog_id::text, '-', ''), 12) FROM silo_meta");
    assert_eq!(
        admin_sql(&format!(
            "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, 'silo_w_{catalog_id}')"
        )),
        "0",
        "every worker role of this Silo was dropped"
    );
}

#[tokio::test]
async fn a_crash_during_an_in_place_restore_is_rolled_back_at_the_next_start() {
    let mut fx = Fixture::start("bk_restore_crash", &[]).await;
    fx.tenant("crashy");
    let created = fx.create("crashy", json!({ "name": "db", "plan": "keep2" })).await;
    let url = created["url"].as_str().expect("url").to_string();
    psql_ok(&url, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let summary = silo_json(&fx, &["backup", "run", "--db", "crashy/db"]);
    let id = summary["results"][0]["backup_id"].as_i64().expect("id").to_string();
    psql_ok(&url, "INSERT INTO t VALUES (2)");

    fx.restart(&[("SILO_CRASH_AT", "restore.after_drop")]).await;
    let died = silo(&fx, &["backup", "restore", &id, "--in-place", "--yes"]);
    assert!(!died.status.success(), "the process died mid-restore");
    fx.silo.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        admin_sql("SELECT count(*) FROM pg_database WHERE datname = 'crashy_db'"),
        "0",
        "the crash came after the drop"
    );

    fx.restart_after_crash().await;
    let info = fx.wait_state("crashy", "db", "active").await;
    assert!(info["events"].to_string().contains("restore_rolled_back"), "{info}");
    assert_eq!(
        psql_ok(&url, "SELECT string_agg(x::text, ',' ORDER BY x) FROM t"),
        "1,2",
        "the safety backup is back"
    );
    psql_ok(&url, "INSERT INTO t VALUES (3)");
}

#[tokio::test]
async fn a_crash_while_a_backup_commits_leaves_no_object_that_no_backup_names() {
    let mut fx = Fixture::start("bk_commit_crash", &[]).await;
    fx.tenant("orphan");
    let created = fx.create("orphan", json!({ "name": "db", "plan": "keep2" })).await;
    psql_ok(created["url"].as_str().expect("url"), "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");

    fx.restart(&[("SILO_CRASH_AT", "backup.before_commit")]).await;
    let died = silo(&fx, &["backup", "run", "--db", "orphan/db"]);
    assert!(!died.status.success(), "the process died while the backup committed");
    fx.silo.wait_exit(Duration::from_secs(10)).await;
    fx.restart_after_crash().await;

    let usage = silo_json(&fx, &["usage", "orphan"]);
    assert_eq!(usage["backups"], 0, "{usage}");
    assert_eq!(usage["objects"], 0, "the dump is no object: nothing counts it forever: {usage}");
    let listed = silo_json(&fx, &["backup", "list", "--db", "orphan/db"]);
    assert!(listed.to_string().contains("interrupted"), "{listed}");
    // The next run succeeds, and it is the one object.
    silo_json(&fx, &["backup", "run", "--db", "orphan/db"]);
    let usage = silo_json(&fx, &["usage", "orphan"]);
    assert_eq!((usage["backups"].as_u64(), usage["objects"].as_u64()), (Some(1), Some(1)), "{usage}");
}
