//! Dedicated client databases end to end: the real binary, a real throwaway Postgres as the
//! managed server, and `psql` and tokio-postgres as the clients.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::databases::{Fixture, admin_sql, psql, psql_err, psql_ok, with_password};
use common::silo_cli_json;
use serde_json::json;

#[tokio::test]
async fn a_database_is_created_reachable_and_isolated() {
    let fx = Fixture::start("db_isolation", &[]).await;
    fx.tenant("acme");
    fx.tenant("rival");
    let acme = fx.create("acme", json!({ "name": "shop" })).await;
    let url = acme["url"].as_str().expect("url");
    assert_eq!((acme["server"].as_str(), acme["zone"].as_str()), (Some("shared"), Some("z1")));
    psql_ok(
        url,
        "CREATE TABLE orders (id int PRIMARY KEY, item text); INSERT INTO orders VALUES (1, 'lamp')",
    );
    assert_eq!(psql_ok(url, "SELECT item FROM orders"), "lamp");
    // The plan's settings are in place.
    assert_eq!(psql_ok(url, "SHOW statement_timeout"), "30s");
    let pg_name = acme["database"].as_str().expect("database");
    assert_eq!(admin_sql(&format!("SELECT datconnlimit FROM pg_database WHERE datname = '{pg_name}'")), "20");
    // The login role owns nothing: a NOLOGIN owner role owns the database and `public` (by
    // name, or as `pg_database_owner` in a database made from a spare), and the login role's
    // sessions act as it.
    let database_owner =
        psql_ok(url, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()");
    assert!(database_owner.starts_with("silo_o_"), "{database_owner}");
    let owner = psql_ok(url, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'");
    assert!(owner == database_owner || owner == "pg_database_owner", "{owner}");
    assert_eq!(
        psql_ok(url, "SELECT session_user || ' ' || current_user"),
        format!("{pg_name} {database_owner}")
    );
    psql_ok(url, "CREATE TABLE in_public (x int); DROP TABLE in_public");
    let public_acl =
        psql_ok(url, "SELECT coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'public'");
    let public_entries =
        public_acl.trim_matches(['{', '}']).split(',').filter(|entry| entry.starts_with('=')).count();
    assert_eq!(public_entries, 0, "PUBLIC has nothing on public: {public_acl}");

    // Another tenant may use the same name; its role reaches neither the database nor the tables.
    let rival = fx.create("rival", json!({ "name": "shop" })).await;
    let rival_into_acme = url.replace(
        &format!("{}:{}", acme["user"].as_str().unwrap(), acme["password"].as_str().unwrap()),
        &format!("{}:{}", rival["user"].as_str().unwrap(), rival["password"].as_str().unwrap()),
    );
    assert!(psql_err(&rival_into_acme, "SELECT 1").contains("permission denied for database"));
    // PUBLIC cannot connect either: a role that exists but was granted nothing.
    admin_sql("DROP ROLE IF EXISTS outsider; CREATE ROLE outsider LOGIN PASSWORD 'outsider-pass'");
    let outsider = format!(
        "postgresql://outsider:outsider-pass@127.0.0.1:{}/{pg_name}",
        pg_local::testing::shared().port()
    );
    assert!(psql_err(&outsider, "SELECT 1").contains("permission denied for database"));
    // Inside its own database, rival's role cannot read acme's tables: they are not there.
    assert!(psql_err(rival["url"].as_str().unwrap(), "SELECT * FROM orders").contains("does not exist"));

    // Listings are per tenant.
    let (_, listed) = fx.call(reqwest::Method::GET, "/v1/tenants/rival/databases", None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["tenant"], "rival");
    assert!(listed[0].get("password").is_none(), "listings never show passwords");
    let (status, _) = fx.call(reqwest::Method::GET, "/v1/tenants/rival/databases/nothing", None).await;
    assert_eq!(status, 404);

    // The same name twice is a conflict; an Idempotency-Key makes a retry return the first result.
    let (status, _) =
        fx.call(reqwest::Method::POST, "/v1/tenants/acme/databases", Some(json!({ "name": "shop" }))).await;
    assert_eq!(status, 409);
    let body = json!({ "name": "blog", "plan": "tiny" });
    let path = "/v1/tenants/acme/databases";
    let first = fx.call_with(reqwest::Method::POST, path, Some(body.clone()), Some("key-1")).await;
    let again = fx.call_with(reqwest::Method::POST, path, Some(body), Some("key-1")).await;
    assert_eq!((first.0, again.0), (201, 201));
    assert_eq!(first.1["password"], again.1["password"], "the retry returns the first result");
    let other =
        fx.call_with(reqwest::Method::POST, path, Some(json!({ "name": "other" })), Some("key-1")).await;
    assert_eq!(other.0, 422, "{}", other.1);

    // The CLI drives the same API; secrets never reach the log.
    let listed = silo_cli_json(&fx.silo, &["db", "list", "acme"]);
    let names: Vec<_> =
        listed.as_array().expect("list").iter().map(|d| d["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["blog", "shop"]);
    let stderr = fx.silo.stderr();
    assert!(
        !stderr.contains(acme["password"].as_str().unwrap()) && !stderr.contains("test-only-password"),
        "{stderr}"
    );
    let (_, servers) = fx.call(reqwest::Method::GET, "/v1/servers", None).await;
    assert!(!servers.to_string().contains("test-only-password"), "server passwords never leave the catalog");

    // A tenant with databases is not deleted unless forced; forced, its databases go too.
    let (status, body) = fx.call(reqwest::Method::DELETE, "/v1/tenants/rival", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("tenant_not_empty")), "{body}");
    let (status, _) = fx.call(reqwest::Method::DELETE, "/v1/tenants/rival?force=true", None).await;
    assert_eq!(status, 204);
    let rival_db = rival["database"].as_str().expect("database");
    assert_eq!(admin_sql(&format!("SELECT count(*) FROM pg_database WHERE datname = '{rival_db}'")), "0");
    assert_eq!(psql_ok(url, "SELECT count(*) FROM orders"), "1", "acme's database is untouched");
}

#[tokio::test]
async fn hostile_and_malformed_names_are_refused_before_anything_runs() {
    let fx = Fixture::start("db_names", &[]).await;
    fx.tenant("hostile");
    // Other tests share the server: count what this tenant's names could have made.
    let count =
        || admin_sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'hostile%' OR datname LIKE 'x%'");
    let roles =
        || admin_sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'hostile%' OR rolname LIKE 'x%'");
    let (databases_before, roles_before) = (count(), roles());
    let long = "a".repeat(64);
    for name in ["x\"; DROP DATABASE postgres; --", "", &long, "Shop", "shop-db", "a b", "1shop", "é"] {
        let (status, body) = fx
            .call(reqwest::Method::POST, "/v1/tenants/hostile/databases", Some(json!({ "name": name })))
            .await;
        assert_eq!(status, 400, "{name:?}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains("^[a-z][a-z0-9_]{0,62}$"), "{body}");
    }
    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            "/v1/tenants/hostile/databases",
            Some(json!({ "name": "ok", "plan": "gold" })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap_or("").contains("small"),
        "the message lists the plans: {body}"
    );
    let (status, _) =
        fx.call(reqwest::Method::POST, "/v1/tenants/nobody/databases", Some(json!({ "name": "ok" }))).await;
    assert_eq!(status, 404);
    assert_eq!((count(), roles()), (databases_before, roles_before), "nothing new on the server");
    assert_eq!(admin_sql("SELECT count(*) FROM pg_database WHERE datname = 'postgres'"), "1");
}

#[tokio::test]
async fn names_never_collide_and_what_silo_did_not_make_is_never_adopted() {
    let fx = Fixture::start("db_collide", &[]).await;
    for tenant in ["col-b", "col", "silo", "fo-reign"] {
        fx.tenant(tenant);
    }
    // Under the old mapping both were `col_b_c`.
    let first = fx.create("col-b", json!({ "name": "c" })).await;
    let second = fx.create("col", json!({ "name": "b_c" })).await;
    assert_ne!(first["database"], second["database"]);
    psql_ok(first["url"].as_str().expect("url"), "CREATE TABLE mine (x int)");
    assert!(psql_err(second["url"].as_str().expect("url"), "SELECT * FROM mine").contains("does not exist"));

    // A tenant whose names would fall in Silo's own namespace (spares, owner and worker roles).
    let (status, body) = fx
        .call(reqwest::Method::POST, "/v1/tenants/silo/databases", Some(json!({ "name": "spare_x" })))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("reserved"), "{body}");

    // A database and a role that someone else made on the server under the names Silo would use.
    admin_sql("DROP DATABASE IF EXISTS \"fo-reign_theirs\"");
    admin_sql("CREATE DATABASE \"fo-reign_theirs\"");
    psql_ok(
        &pg_local::testing::shared().url("fo-reign_theirs"),
        "CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)",
    );
    admin_sql("DROP ROLE IF EXISTS \"fo-reign_role\"; CREATE ROLE \"fo-reign_role\" LOGIN");
    for (name, what) in [("theirs", "database"), ("role", "role")] {
        let (status, body) = fx
            .call(reqwest::Method::POST, "/v1/tenants/fo-reign/databases", Some(json!({ "name": name })))
            .await;
        assert_eq!(status, 409, "{name}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains(&format!("{what} named")), "{body}");
    }
    assert_eq!(
        psql_ok(&pg_local::testing::shared().url("fo-reign_theirs"), "SELECT x FROM precious"),
        "42",
        "the foreign database is untouched"
    );
    assert_eq!(admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = 'fo-reign_role'"), "1");
    let (status, listed) = fx.call(reqwest::Method::GET, "/v1/tenants/fo-reign/databases", None).await;
    assert_eq!((status, listed), (200, json!([])));
}

#[tokio::test]
async fn over_the_quota_a_database_turns_read_only_and_back() {
    let fx = Fixture::start("db_quota", &[]).await;
    fx.tenant("quota");
    let created = fx.create("quota", json!({ "name": "full", "plan": "tiny" })).await;
    let url = created["url"].as_str().expect("url");
    // What a tenant can prepare while it may still write, to keep writing over the quota.
    psql_ok(
        url,
        "CREATE TABLE filler (id serial, pad text); CREATE TABLE keep (x int); INSERT INTO keep VALUES (1);
         CREATE FUNCTION sneak() RETURNS void LANGUAGE sql SECURITY DEFINER AS 'INSERT INTO keep VALUES (99)';
         ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC;
         CREATE TABLE late (x int);
         GRANT ALL ON keep TO PUBLIC; GRANT INSERT (x) ON keep TO session_user;
         GRANT ALL ON SCHEMA public TO PUBLIC;
         CREATE TABLE audited (x int); INSERT INTO audited VALUES (1);
         CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS
           'BEGIN INSERT INTO keep VALUES (98); RETURN OLD; END';
         CREATE TRIGGER audit BEFORE DELETE ON audited FOR EACH ROW EXECUTE FUNCTION audit();",
    );
    // Grants to the reader role (whose name anyone can read in pg_roles), objects the login
    // role owns itself, and settings on the database that would make Silo's own statements
    // fail or act as the owner.
    let pg_name = created["database"].as_str().expect("database");
    let reader = db_manager::names::reader_role(pg_name);
    let owner = db_manager::names::owner_role(pg_name);
    psql_ok(
        url,
        &format!(
            "GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {reader};
             GRANT CREATE ON SCHEMA public TO {reader};
             GRANT CREATE, TEMPORARY ON DATABASE \"{pg_name}\" TO {reader}, \"{pg_name}\";
             ALTER DEFAULT PRIVILEGES GRANT INSERT ON TABLES TO {reader};
             SET ROLE NONE;
             CREATE SCHEMA mine; CREATE TABLE mine.t (x int);
             ALTER ROLE CURRENT_USER IN DATABASE \"{pg_name}\" SET default_transaction_read_only = off;
             SET ROLE {owner};
             ALTER DATABASE \"{pg_name}\" SET default_transaction_read_only = on;
             ALTER DATABASE \"{pg_name}\" SET role = {owner};"
        ),
    );
    // A session in another database, acting as the owner, that would outlive the switch.
    let elsewhere = format!("{}/postgres", url.rsplit_once('/').expect("a database in the url").0);
    let (held_elsewhere, connection) =
        tokio_postgres::connect(&elsewhere, tokio_postgres::NoTls).await.expect("connect elsewhere");
    tokio::spawn(connection);
    // A session that is open when the switch happens is ended, so the switch takes hold.
    let (held, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    psql_ok(
        url,
        "INSERT INTO filler (pad) SELECT md5(random()::text) || md5(random()::text) FROM generate_series(1, 40000)",
    );
    let info = fx.wait_state("quota", "full", "read_only_over_quota").await;
    assert!(info["size_bytes"].as_i64().unwrap_or(0) > 9_437_184, "{info}");
    assert!(held.simple_query("SELECT 1").await.is_err(), "the open session was ended");
    assert!(held_elsewhere.simple_query("SELECT 1").await.is_err(), "so was the one in another database");

    // The tenant switched the read-only default off for itself beforehand: the privileges
    // refuse the write anyway.
    let refused = psql_err(url, "INSERT INTO keep VALUES (2)");
    assert!(refused.contains("permission denied for table keep"), "{refused}");
    assert_eq!(
        psql_ok(url, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"),
        owner
    );
    // Every undo the tenant can try: none of them writes a row.
    for attack in [
        "BEGIN READ WRITE; INSERT INTO keep VALUES (2); COMMIT".to_string(),
        "SET default_transaction_read_only = off; COMMIT; BEGIN; INSERT INTO keep VALUES (2); COMMIT".to_string(),
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; COMMIT; BEGIN; INSERT INTO keep VALUES (2); COMMIT".to_string(),
        "RESET ROLE; BEGIN READ WRITE; INSERT INTO keep VALUES (2); COMMIT".to_string(),
        "SET ROLE NONE; BEGIN READ WRITE; INSERT INTO keep (x) VALUES (2); COMMIT".to_string(),
        format!("SET ROLE {owner}"),
        "BEGIN READ WRITE; GRANT INSERT ON keep TO CURRENT_USER; INSERT INTO keep VALUES (2); COMMIT".to_string(),
        "SET ROLE NONE; BEGIN READ WRITE; GRANT INSERT ON keep TO CURRENT_USER; INSERT INTO keep VALUES (2); COMMIT".to_string(),
        "BEGIN READ WRITE; CREATE TABLE more (x int); COMMIT".to_string(),
        "SET ROLE NONE; BEGIN READ WRITE; CREATE TABLE public.mine (x int); COMMIT".to_string(),
        "BEGIN READ WRITE; CREATE TEMP TABLE scratch (x int); COMMIT".to_string(),
        "BEGIN READ WRITE; ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC; CREATE TABLE more2 (x int); COMMIT".to_string(),
        "BEGIN READ WRITE; INSERT INTO late VALUES (1); COMMIT".to_string(),
        "BEGIN READ WRITE; SELECT sneak(); COMMIT".to_string(),
        "SET ROLE NONE; BEGIN READ WRITE; SELECT sneak(); COMMIT".to_string(),
        "BEGIN READ WRITE; DELETE FROM audited; COMMIT".to_string(),
        "BEGIN READ WRITE; SELECT lo_from_bytea(0, 'x'); COMMIT".to_string(),
        "BEGIN READ WRITE; CREATE SCHEMA more; COMMIT".to_string(),
        "SET ROLE NONE; BEGIN READ WRITE; INSERT INTO mine.t VALUES (1); COMMIT".to_string(),
        "SET ROLE NONE; BEGIN READ WRITE; GRANT INSERT ON mine.t TO CURRENT_USER; INSERT INTO mine.t VALUES (1); COMMIT"
            .to_string(),
        "SET ROLE NONE; BEGIN READ WRITE; CREATE TABLE mine.u (x int); COMMIT".to_string(),
        format!("SET ROLE NONE; SET ROLE {reader}; BEGIN READ WRITE; INSERT INTO keep VALUES (2); COMMIT"),
    ] {
        let refused = psql_err(url, &attack);
        assert!(refused.contains("permission denied"), "{attack}: {refused}");
    }
    assert_eq!(psql_ok(url, "SELECT count(*) FROM keep"), "1", "reads still work, and nothing was written");
    assert_eq!(psql_ok(url, "SELECT count(*) FROM audited"), "1");
    let metrics =
        fx.http.get(fx.silo.metrics_url()).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.contains("silo_database_read_only{tenant=\"quota\",database=\"full\",server=\"shared\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("silo_database_size_bytes{tenant=\"quota\",database=\"full\""), "{metrics}");

    // DELETE and TRUNCATE of a plain table bring it back under the quota, and write access
    // returns by itself, SECURITY DEFINER routines included.
    psql_ok(url, "BEGIN READ WRITE; DELETE FROM filler WHERE id < 10; COMMIT");
    psql_ok(url, "BEGIN READ WRITE; TRUNCATE filler; COMMIT");
    let info = fx.wait_state("quota", "full", "active").await;
    let events: Vec<_> = info["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(events[..2], ["write_access_restored", "read_only_over_quota"], "{info}");
    psql_ok(url, "INSERT INTO keep VALUES (2); SELECT sneak()");
    assert_eq!(psql_ok(url, "SELECT count(*) FROM keep"), "3");
    assert_eq!(psql_ok(url, "SELECT current_user"), owner);
}

#[tokio::test]
async fn a_resize_applies_the_new_limits_at_once_and_keeps_sessions_within_them() {
    let fx = Fixture::start("db_resize", &[]).await;
    fx.tenant("resizer");
    let created = fx.create("resizer", json!({ "name": "app" })).await;
    let url = created["url"].as_str().expect("url").to_string();
    let (session, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let (status, resized) = fx
        .call(reqwest::Method::PATCH, "/v1/tenants/resizer/databases/app", Some(json!({ "plan": "medium" })))
        .await;
    assert_eq!((status, resized["plan"].as_str()), (200, Some("medium")), "{resized}");
    let pg_name = created["database"].as_str().expect("name");
    assert_eq!(admin_sql(&format!("SELECT rolconnlimit FROM pg_roles WHERE rolname = '{pg_name}'")), "50");
    assert_eq!(admin_sql(&format!("SELECT datconnlimit FROM pg_database WHERE datname = '{pg_name}'")), "50");
    session.simple_query("SELECT 1").await.expect("a session within the new limits stays");
}

#[tokio::test]
async fn a_rotation_ends_the_old_password_and_its_sessions_after_the_grace() {
    let fx = Fixture::start("db_rotation", &[]).await;
    fx.tenant("rotor");
    let created = fx.create("rotor", json!({ "name": "app" })).await;
    let pg_name = created["database"].as_str().expect("name");
    let old_url = created["url"].as_str().expect("url").to_string();
    let (old_session, connection) =
        tokio_postgres::connect(&old_url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);

    // Without a grace: the old password fails, the new one works, and old sessions end.
    let rotated = silo_cli_json(&fx.silo, &["db", "rotate", "rotor", "app"]);
    assert_ne!(rotated["password"], created["password"]);
    let new_url = rotated["url"].as_str().expect("url");
    assert_eq!(psql_ok(new_url, "SELECT session_user"), pg_name);
    assert!(psql_err(&old_url, "SELECT 1").contains("password authentication failed"));
    assert!(old_session.simple_query("SELECT 1").await.is_err(), "the old session was ended");
    assert!(
        psql_err(&with_password(&rotated, "guess"), "SELECT 1").contains("password authentication failed")
    );

    // With a grace, old sessions go on until it runs out.
    let (session, connection) =
        tokio_postgres::connect(new_url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let (status, _) = fx
        .call(
            reqwest::Method::POST,
            "/v1/tenants/rotor/databases/app/rotate-credentials",
            Some(json!({ "grace_secs": 2 })),
        )
        .await;
    assert_eq!(status, 200);
    session.simple_query("SELECT 1").await.expect("within the grace the old session stays");
    let deadline = Instant::now() + Duration::from_secs(20);
    while session.simple_query("SELECT 1").await.is_ok() {
        assert!(Instant::now() < deadline, "the old session outlived its grace");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn deletion_protection_holds_and_a_delete_keeps_a_final_backup_that_expires() {
    let fx = Fixture::start("db_protection", &[]).await;
    fx.tenant("protector");
    let created = fx.create("protector", json!({ "name": "app", "deletion_protection": true })).await;
    let pg_name = created["database"].as_str().expect("name");
    let path = "/v1/tenants/protector/databases/app";
    let (status, body) =
        fx.call(reqwest::Method::DELETE, &format!("{path}?skip_final_backup=true"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("deletion_protected")));
    silo_cli_json(&fx.silo, &["db", "protect", "protector", "app", "off"]);
    let (status, body) = fx.call(reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, 204, "{body}");
    let (_, backups) = fx.call(reqwest::Method::GET, "/v1/backups?tenant=protector&database=app", None).await;
    assert_eq!(backups.as_array().map(Vec::len), Some(1), "{backups}");
    assert_eq!(
        (backups[0]["kind"].as_str(), backups[0]["status"].as_str()),
        (Some("final"), Some("complete"))
    );
    assert_eq!(backups[0]["database_exists"], false);
    assert!(backups[0]["expires_at"].is_string(), "a final backup expires: {backups}");
    assert_eq!(admin_sql(&format!("SELECT count(*) FROM pg_database WHERE datname = '{pg_name}'")), "0");
    assert_eq!(admin_sql(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{pg_name}'")), "0");
    let (status, _) = fx.call(reqwest::Method::GET, path, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_dedicated_instance_serves_its_tenant_and_survives_a_restart() {
    let mut fx = Fixture::start("db_dedicated", &[]).await;
    fx.tenant("solo");
    fx.tenant("crowd");
    let (status, server) = fx
        .call(reqwest::Method::POST, "/v1/servers", Some(json!({ "dedicated_for": "solo", "plan": "small" })))
        .await;
    assert_eq!(status, 201, "{server}\n{}", fx.silo.stderr());
    assert_eq!(
        (server["name"].as_str(), server["kind"].as_str()),
        (Some("solo-dedicated"), Some("dedicated"))
    );
    let solo = fx.create("solo", json!({ "name": "main" })).await;
    assert_eq!(solo["server"], "solo-dedicated", "a tenant's databases go to its dedicated server");
    let crowd = fx.create("crowd", json!({ "name": "main" })).await;
    assert_eq!(crowd["server"], "shared", "nobody else's do");
    let url = solo["url"].as_str().expect("url");
    psql_ok(url, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)");
    assert_eq!(psql_ok(url, "SHOW max_connections"), "30", "the plan sizes the instance");

    fx.restart(&[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = psql(url, "SELECT x FROM kept");
        if output.status.success() {
            assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "42");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dedicated instance is not back: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = fx.call(reqwest::Method::DELETE, "/v1/servers/solo-dedicated", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("server_in_use")));
}

#[tokio::test]
async fn a_crash_between_create_steps_is_repaired_at_the_next_start() {
    let mut fx = Fixture::start("db_crash", &[]).await;
    fx.tenant("crashy");
    fx.restart(&[("SILO_CRASH_AT", "create.after_database")]).await;
    let request = fx
        .http
        .post(fx.silo.url("/v1/tenants/crashy/databases"))
        .bearer_auth(fx.silo.token())
        .json(&json!({ "name": "half" }))
        .send()
        .await;
    assert!(request.is_err(), "the process died mid-create");
    fx.silo.wait_exit(Duration::from_secs(10)).await;
    let pg_name = "crashy_half";
    let exists = || {
        let databases = admin_sql(&format!("SELECT count(*) FROM pg_database WHERE datname = '{pg_name}'"));
        let roles = admin_sql(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{pg_name}'"));
        (databases, roles)
    };
    assert_eq!(exists(), ("1".to_string(), "1".to_string()), "the crash left a half-made database");

    fx.restart_after_crash().await;
    assert_eq!(exists(), ("0".to_string(), "0".to_string()), "the start cleaned it up");
    let (status, listed) = fx.call(reqwest::Method::GET, "/v1/tenants/crashy/databases", None).await;
    assert_eq!((status, listed), (200, json!([])));
    let created = fx.create("crashy", json!({ "name": "half" })).await;
    assert_eq!(psql_ok(created["url"].as_str().expect("url"), "SELECT current_database()"), pg_name);
}

#[tokio::test]
async fn a_database_made_from_a_spare_is_like_any_other() {
    let fx = Fixture::start("db_spares", &[]).await;
    fx.tenant("sparse");
    let ready = || psql_ok(&fx.catalog_url(), "SELECT count(*) FROM database_spares WHERE ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready() != "2" {
        assert!(Instant::now() < deadline, "the spares never became ready:\n{}", fx.silo.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = fx.create("sparse", json!({ "name": "quick" })).await;
    let url = created["url"].as_str().expect("url");
    let pg_name = created["database"].as_str().expect("database");
    let owner = psql_ok(url, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'");
    assert_eq!(owner, "pg_database_owner", "made from a spare");
    let owner =
        psql_ok(url, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()");
    assert!(owner.starts_with("silo_o_") && pg_name.starts_with("sparse_"), "{owner} {pg_name}");
    psql_ok(url, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    assert_eq!(psql_ok(url, "SHOW statement_timeout"), "30s");
    assert_eq!(admin_sql(&format!("SELECT datconnlimit FROM pg_database WHERE datname = '{pg_name}'")), "20");
    let acl = admin_sql(&format!("SELECT datacl::text FROM pg_database WHERE datname = '{pg_name}'"));
    assert!(
        !acl.trim_matches(['{', '}']).split(',').any(|entry| entry.starts_with('=')),
        "PUBLIC cannot connect: {acl}"
    );
    let public_acl =
        psql_ok(url, "SELECT coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'public'");
    assert!(
        !public_acl.trim_matches(['{', '}']).split(',').any(|entry| entry.starts_with('=')),
        "{public_acl}"
    );
    // Over a quota it turns read-only like any other: pg_database_owner's rights included.
    // (The rows go in first: a sampler round during the insert would end its session.)
    psql_ok(url, "INSERT INTO t SELECT generate_series(1, 200000)");
    let (status, _) = fx
        .call(reqwest::Method::PATCH, "/v1/tenants/sparse/databases/quick", Some(json!({ "plan": "tiny" })))
        .await;
    assert_eq!(status, 200);
    fx.wait_state("sparse", "quick", "read_only_over_quota").await;
    assert!(
        psql_err(url, "BEGIN READ WRITE; CREATE TABLE more (x int); COMMIT").contains("permission denied")
    );
    assert!(
        psql_err(url, "BEGIN READ WRITE; INSERT INTO t VALUES (2); COMMIT").contains("permission denied")
    );
    // The pool refills.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready() != "2" {
        assert!(Instant::now() < deadline, "the pool was not refilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn placement_follows_owner_zone_and_room() {
    let fx = Fixture::start("db_placement", &[]).await;
    fx.tenant("placed");
    fx.tenant("private");
    let url = pg_local::testing::shared().url("postgres");
    let register = |body: serde_json::Value| fx.call(reqwest::Method::POST, "/v1/servers", Some(body));
    // Two company servers in zone z2 (the same cluster under two names), one with little room.
    let (status, _) =
        register(json!({ "name": "z2-small", "url": url, "zone": "z2", "capacity_bytes": 3u64 << 30 })).await;
    assert_eq!(status, 201);
    let (status, _) =
        register(json!({ "name": "z2-big", "url": url, "zone": "z2", "capacity_bytes": 1u64 << 40 })).await;
    assert_eq!(status, 201);
    // A server that a tenant owns takes that tenant's databases, and nobody else's.
    let (status, owned) =
        register(json!({ "name": "own-rack", "url": url, "zone": "z2", "owner": "private" })).await;
    assert_eq!((status, owned["owner"].as_str()), (201, Some("private")), "{owned}");

    let in_z2 = fx.create("placed", json!({ "name": "a", "zone": "z2" })).await;
    assert_eq!(in_z2["server"], "z2-big", "the most room wins");
    let anywhere = fx.create("placed", json!({ "name": "b" })).await;
    assert_ne!(anywhere["server"], "own-rack");
    let mine = fx.create("private", json!({ "name": "c" })).await;
    assert_eq!(mine["server"], "own-rack");
    // The small server has no room for a large plan's quota (100 GiB): never chosen for it.
    for i in 0..3 {
        let large =
            fx.create("placed", json!({ "name": format!("large_{i}"), "zone": "z2", "plan": "large" })).await;
        assert_eq!(large["server"], "z2-big");
    }
    let (status, body) = fx
        .call(
            reqwest::Method::POST,
            "/v1/tenants/placed/databases",
            Some(json!({ "name": "d", "zone": "z9" })),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("unknown_zone")), "{body}");
    // A bad registration: a role that cannot create databases and roles.
    admin_sql("DROP ROLE IF EXISTS weakling; CREATE ROLE weakling LOGIN PASSWORD 'weak-pass'");
    let weak =
        format!("postgresql://weakling:weak-pass@127.0.0.1:{}/postgres", pg_local::testing::shared().port());
    let (status, body) = register(json!({ "name": "weak", "url": weak, "zone": "z1" })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("CREATEDB"), "{body}");
    assert!(!body.to_string().contains("weak-pass"));
    let (status, body) =
        register(json!({ "name": "down", "url": "postgresql://x:y@127.0.0.1:1/postgres", "zone": "z1" }))
            .await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("server_unreachable")), "{body}");
    let (status, body) =
        register(json!({ "name": "x\"; DROP DATABASE postgres; --", "url": url, "zone": "z1" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_name")), "{body}");
    let (status, body) = register(json!({ "name": "broken", "url": "not a url", "zone": "z1" })).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        fx.call(reqwest::Method::POST, "/v1/tenants", Some(json!({ "name": "silo-system" }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("reserved_name")), "{body}");
}

#[tokio::test]
async fn a_database_made_before_owner_roles_is_moved_to_them_at_the_next_start() {
    let mut fx = Fixture::start("db_legacy", &[]).await;
    fx.tenant("olden");
    let created = fx.create("olden", json!({ "name": "app" })).await;
    let url = created["url"].as_str().expect("url").to_string();
    psql_ok(&url, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let pg_name = created["database"].as_str().expect("database").to_string();
    let owner = psql_ok(&url, "SELECT current_user");
    // Put it back into the single-role layout of earlier versions: the login role owns all.
    let on_db = pg_local::testing::shared().url(&pg_name);
    psql_ok(&on_db, &format!("REASSIGN OWNED BY \"{owner}\" TO \"{pg_name}\""));
    admin_sql(&format!(
        "ALTER ROLE \"{pg_name}\" INHERIT; ALTER ROLE \"{pg_name}\" RESET role; REVOKE \"{owner}\" FROM \"{pg_name}\""
    ));
    admin_sql(&format!("DROP ROLE \"{owner}\"; COMMENT ON ROLE \"{pg_name}\" IS NULL"));
    assert_eq!(psql_ok(&url, "SELECT current_user"), pg_name, "the legacy layout");

    fx.restart(&[]).await;
    assert_eq!(psql_ok(&url, "SELECT current_user"), owner, "sessions act as the owner role again");
    assert_eq!(
        psql_ok(&url, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"),
        owner
    );
    assert_eq!(psql_ok(&url, "SELECT tableowner FROM pg_tables WHERE tablename = 't'"), owner);
    psql_ok(&url, "INSERT INTO t VALUES (2); CREATE TABLE u (y int)");
    assert_eq!(psql_ok(&url, "SELECT count(*) FROM t"), "2");
}

/// Schemathesis (from `scripts/setup`'s venv) drives every operation of `docs/openapi.yaml`
/// against a Silo holding a tenant, a key, a bucket, a database and a backup, and fails on any
/// 5xx. The budget is `SILO_FUZZ_SECONDS` (30 by default; docs/security.md records a longer run).
#[tokio::test]
async fn the_management_api_never_answers_5xx_to_schemathesis() {
    let fx = Fixture::start("db_fuzz", &[]).await;
    fx.tenant("fuzz");
    fx.create("fuzz", json!({ "name": "main" })).await;
    let key = silo_cli_json(&fx.silo, &["key", "create", "fuzz"]);
    let run = silo_cli_json(&fx.silo, &["backup", "run", "--db", "fuzz/main"]);
    let backup = run["results"][0]["backup_id"].as_i64().expect("backup id").to_string();
    let seconds = std::env::var("SILO_FUZZ_SECONDS").unwrap_or_else(|_| "30".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let schemathesis = format!("{root}/.venv/bin/schemathesis");
    assert!(std::path::Path::new(&schemathesis).exists(), "{schemathesis} is missing: run ./scripts/setup");
    let output = Command::new(schemathesis)
        .args(["--config-file", &format!("{root}/tests/fuzz/schemathesis.toml"), "run"])
        .arg(format!("{root}/docs/openapi.yaml"))
        .args(["--url", &fx.silo.url("")])
        .args(["--checks", "not_a_server_error", "--max-time", &seconds, "--workers", "1"])
        // Answers, not speed, are checked: a final backup and DROP DATABASE on a 2-core machine
        // busy with the other tests can pass schemathesis' 10 s default; a hang still fails.
        .args(["--request-timeout", "60"])
        .args(["--suppress-health-check", "all", "--warnings", "off", "--no-color"])
        .env("SILO_ADMIN_TOKEN", fx.silo.token())
        .env("SILO_FUZZ_KEY", key["access_key_id"].as_str().unwrap_or("none"))
        .env("SILO_FUZZ_BACKUP", &backup)
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        fx.silo.stderr()
    );
    assert!(report.contains("passed"), "schemathesis ran no test case:\n{report}");
}

#[tokio::test]
async fn a_registered_server_is_reached_over_tls_that_verifies_it() {
    let fx = Fixture::start("db_tls", &[]).await;
    let server = common::tls::TlsPostgres::start();
    fx.tenant("secure");
    let register = |body: serde_json::Value| fx.call(reqwest::Method::POST, "/v1/servers", Some(body));
    // Without TLS the server has no entry for Silo; TLS modes that check nothing are refused.
    for (url, ca) in [
        (server.url(None), None),
        (server.url(Some("require")), None),
        (server.url(Some("verify-ca")), Some(&server.ca_pem)),
        (server.url(Some("verify-full")), None),
        (server.url(Some("verify-full")), Some(&server.other_ca_pem)),
    ] {
        let (status, body) =
            register(json!({ "name": "tls", "url": url, "zone": "zt", "ca_cert": ca })).await;
        assert_eq!(status, 400, "{url} {}: {body}", ca.is_some());
        assert!(!body.to_string().contains("tls-test-password"), "{body}");
    }
    let (status, body) = register(
        json!({ "name": "tls", "url": server.url(Some("verify-full")), "zone": "zt", "ca_cert": server.ca_pem }),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Create, back up with verification, restore: admin, workers, pg_dump and pg_restore all
    // reach the server over TLS (it takes nothing else over TCP).
    let created = fx.create("secure", json!({ "name": "app", "zone": "zt" })).await;
    assert_eq!(created["server"], "tls");
    let url = created["url"].as_str().expect("url");
    psql_ok(url, "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)");
    // (The client's own psql got in over TCP too: only with TLS, as pg_hba.conf allows.)
    let run = silo_cli_json(&fx.silo, &["backup", "run", "--db", "secure/app", "--verify"]);
    assert_eq!(run["results"][0]["verified"], true, "{run}");
    let id = run["results"][0]["backup_id"].as_i64().expect("id").to_string();
    let copy = silo_cli_json(&fx.silo, &["backup", "restore", &id, "--into", "copy"]);
    assert_eq!(psql_ok(copy["url"].as_str().expect("url"), "SELECT count(*) FROM t"), "2");
}
