//! Tenants, access keys and usage through the management API and the CLI.

use crate::common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Silo, databases, scratch};
use serde_json::{Value, json};

fn cli(silo: &Silo, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(args)
        .env("SILO_URL", format!("http://{}", silo.addr))
        .env("SILO_ADMIN_TOKEN", silo.token())
        .output()
        .expect("run silo")
}

fn json_of(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

async fn start() -> (Silo, tempfile::TempDir, String) {
    let url = pg_local::testing::shared().fresh_database("tenants").await;
    let tmp = scratch();
    let mut silo = Silo::start(&tmp.path().join("data"), &["--postgres-url", &url]);
    silo.wait_ready(Duration::from_secs(30)).await;
    (silo, tmp, url)
}

#[tokio::test]
async fn tenants_and_keys_are_managed_from_the_cli() {
    let (silo, _tmp, url) = start().await;

    let created = cli(&silo, &["tenant", "create", "acme", "--quota-bytes", "1000000"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let table = String::from_utf8_lossy(&created.stdout);
    assert!(table.contains("NAME") && table.contains("acme") && table.contains("1000000"), "{table}");

    let again = cli(&silo, &["tenant", "create", "acme"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = cli(&silo, &["tenant", "create", "Bad_Name"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("^[a-z][a-z0-9-]{1,62}$"));

    let list = json_of(&cli(&silo, &["tenant", "list", "--json"]));
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["name"], "acme");

    let key = json_of(&cli(&silo, &["key", "create", "acme", "--json"]));
    let id = key["access_key_id"].as_str().unwrap().to_string();
    let secret = key["secret_access_key"].as_str().unwrap().to_string();
    assert!(id.starts_with("SILO") && id.len() == 20, "{id}");
    assert_eq!(secret.len(), 40);
    let listed = cli(&silo, &["key", "list", "acme"]);
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed_text.contains(&id) && !listed_text.contains(&secret), "{listed_text}");

    // The secret is sealed at rest, never in clear in the catalog or the log.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let dump: String = client
        .query_one("SELECT string_agg(encode(sealed_secret, 'escape'), '') FROM access_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!dump.contains(&secret));
    assert!(!silo.stderr().contains(&secret));

    let revoked = cli(&silo, &["key", "revoke", "acme", &id]);
    assert!(revoked.status.success());
    let keys = json_of(&cli(&silo, &["key", "list", "acme", "--json"]));
    assert!(keys[0]["revoked_at"].is_string(), "{keys}");
    let twice = cli(&silo, &["key", "revoke", "acme", &id]);
    assert!(!twice.status.success(), "revoking twice is an error");

    let usage = json_of(&cli(&silo, &["usage", "acme", "--json"]));
    assert_eq!((usage["objects"].as_u64(), usage["quota_bytes"].as_u64()), (Some(0), Some(1_000_000)));

    assert!(cli(&silo, &["tenant", "delete", "acme"]).status.success());
    let gone = cli(&silo, &["tenant", "show", "acme"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("404"));
}

#[tokio::test]
async fn the_api_validates_names_patches_quotas_and_refuses_to_drop_a_tenant_with_data() {
    let (silo, tmp, url) = start().await;
    let http = reqwest::Client::new();
    let token = silo.token();
    let api = |path: &str| format!("http://{}/v1{path}", silo.addr);

    for hostile in ["x\"; DROP TABLE tenants; --", "../etc", "", "a", &"a".repeat(64)] {
        let response = http
            .post(api("/tenants"))
            .bearer_auth(&token)
            .json(&json!({ "name": hostile }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{hostile:?}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("^[a-z][a-z0-9-]{1,62}$"), "{body}");
    }
    let created =
        http.post(api("/tenants")).bearer_auth(&token).json(&json!({ "name": "shop" })).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let patched = http
        .patch(api("/tenants/shop"))
        .bearer_auth(&token)
        .json(&json!({ "storage_quota_bytes": 5_000_000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(patched.json::<Value>().await.unwrap()["storage_quota_bytes"], 5_000_000);
    let missing = http.get(api("/tenants/nobody/usage")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // Store an object for the tenant through another storage node on the same catalog.
    let pool = storage_node::catalog::connect_pool(url.parse().unwrap(), 4).unwrap();
    let data_dir = storage_node::DataDir::open(&tmp.path().join("other-node")).unwrap();
    let node = storage_node::store::NodeSpec { name: "other".into(), zone: "b".into() };
    let store =
        storage_node::store::ChunkStore::open(pool, &data_dir, &node, Default::default()).await.unwrap();
    let shop = storage_node::catalog::tenants::find(store.catalog(), "shop").await.unwrap();
    store.put(shop, std::io::Cursor::new(vec![7u8; 100_000]), Default::default()).await.unwrap();

    let refused = http.delete(api("/tenants/shop")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(refused.status(), 409);
    let usage: Value =
        http.get(api("/tenants/shop/usage")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["objects"], 1);
    assert_eq!((usage["s3_objects"].as_u64(), usage["backups"].as_u64()), (Some(0), Some(0)), "{usage}");
    let forced = http.delete(api("/tenants/shop?force=true")).bearer_auth(&token).send().await.unwrap();
    let status = forced.status();
    assert_eq!(status, 204, "{}", forced.text().await.unwrap_or_default());
    let gone = http.get(api("/tenants/shop")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(gone.status(), 404);
}

/// An S3 client with a key of a tenant.
fn s3_client(silo: &Silo, key: &Value) -> aws_sdk_s3::Client {
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    common::sdk_client_with(silo, &field("access_key_id"), &field("secret_access_key"), |config| {
        config.retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
    })
}

/// Counts rows in the catalog.
async fn catalog_count(url: &str, sql: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("catalog");
    tokio::spawn(conn);
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// A tenant with two buckets (objects, an unfinished multipart upload), a key and two
/// databases. Returns its key.
async fn populate(fx: &databases::Fixture, tenant: &str) -> Value {
    use aws_sdk_s3::primitives::ByteStream;
    fx.tenant(tenant);
    let key = common::silo_cli_json(&fx.silo, &["key", "create", tenant]);
    let s3 = s3_client(&fx.silo, &key);
    for bucket in [format!("{tenant}-media"), format!("{tenant}-empty")] {
        s3.create_bucket().bucket(&bucket).send().await.expect("bucket");
    }
    let media = format!("{tenant}-media");
    for (key, size) in [("a.bin", 200_000), ("b/c.bin", 50_000)] {
        let put = s3.put_object().bucket(&media).key(key).body(ByteStream::from(vec![9u8; size]));
        put.send().await.expect("put");
    }
    let upload = s3.create_multipart_upload().bucket(&media).key("big.bin").send().await.expect("upload");
    let upload_id = upload.upload_id().expect("id");
    let part = s3.upload_part().bucket(&media).key("big.bin").upload_id(upload_id).part_number(1);
    part.body(ByteStream::from(vec![3u8; 100_000])).send().await.expect("part");
    for name in ["shop", "blog"] {
        let created = fx.create(tenant, json!({ "name": name })).await;
        databases::psql_ok(created["url"].as_str().expect("url"), "CREATE TABLE t AS SELECT 1 AS x");
    }
    key
}

/// What remains of `tenant` in the catalog: buckets, S3 objects, uploads, keys, databases,
/// objects, and the tenant row.
async fn remains(url: &str, tenant: &str) -> [i64; 7] {
    let of = |table: &str, column: &str| {
        format!(
            "SELECT count(*) FROM {table} WHERE {column} IN (SELECT id FROM tenants WHERE name = '{tenant}')"
        )
    };
    [
        catalog_count(url, &of("buckets", "tenant_id")).await,
        catalog_count(url, &format!("SELECT count(*) FROM s3_objects WHERE bucket LIKE '{tenant}-%'")).await,
        catalog_count(url, &of("multipart_uploads", "tenant_id")).await,
        catalog_count(url, &of("access_keys", "tenant_id")).await,
        catalog_count(url, &of("tenant_databases", "tenant_id")).await,
        catalog_count(url, &of("objects", "tenant_id")).await,
        catalog_count(url, &format!("SELECT count(*) FROM tenants WHERE name = '{tenant}'")).await,
    ]
}

#[tokio::test]
async fn a_forced_delete_removes_everything_and_a_crash_part_way_is_finished() {
    let mut fx = databases::Fixture::start("tenant_delete", &[]).await;
    let key = populate(&fx, "doomed").await;
    let url = fx.catalog_url();

    let (status, body) = fx.call(reqwest::Method::DELETE, "/v1/tenants/doomed", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("tenant_not_empty")), "{body}");
    assert_eq!(remains(&url, "doomed").await[..5], [2, 2, 1, 1, 2], "a refused delete touches nothing");

    // The process dies after the databases are gone (with their final backups), before the
    // buckets: the next start finishes the deletion by itself.
    fx.restart(&[("SILO_CRASH_AT", "tenant_delete.after_databases")]).await;
    let crashed = fx
        .http
        .delete(fx.silo.url("/v1/tenants/doomed?force=true"))
        .bearer_auth(fx.silo.token())
        .send()
        .await;
    assert!(crashed.is_err(), "the process died mid-delete");
    fx.silo.wait_exit(Duration::from_secs(30)).await;
    let half = remains(&url, "doomed").await;
    assert_eq!((half[0], half[4]), (2, 0), "the crash left the buckets, not the databases: {half:?}");
    fx.restart_after_crash().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while remains(&url, "doomed").await[..5] != [0, 0, 0, 0, 0] {
        assert!(
            std::time::Instant::now() < deadline,
            "not finished: {:?}\n{}",
            remains(&url, "doomed").await,
            fx.silo.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (pg_shop, pg_blog) = ("doomed_shop", "doomed_blog");
    let left = databases::admin_sql(&format!(
        "SELECT count(*) FROM pg_database WHERE datname IN ('{pg_shop}', '{pg_blog}')"
    ));
    assert_eq!(left, "0", "the databases are dropped on their server");
    let s3 = s3_client(&fx.silo, &key);
    assert_eq!(
        s3.list_buckets()
            .send()
            .await
            .map_err(|e| aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(str::to_string))
            .err(),
        Some(Some("InvalidAccessKeyId".to_string())),
        "the key no longer works"
    );
    // The final backups stay, with the tenant (marked as being deleted) holding only them.
    assert_eq!(remains(&url, "doomed").await[5..], [2, 1]);
    let (status, backups) = fx.call(reqwest::Method::GET, "/v1/backups?tenant=doomed", None).await;
    assert_eq!(status, 200, "{backups}");
    let kinds: Vec<_> = backups.as_array().expect("list").iter().map(|b| b["kind"].as_str()).collect();
    assert_eq!(kinds, [Some("final"), Some("final")], "{backups}");
    let (status, shown) = fx.call(reqwest::Method::GET, "/v1/tenants/doomed", None).await;
    assert!(status == 200 && shown["deleting_since"].is_string(), "{shown}");
    let (status, body) =
        fx.call(reqwest::Method::POST, "/v1/tenants/doomed/databases", Some(json!({"name": "again"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("tenant_deleting")), "{body}");

    // Once the final backups expire and are pruned, the next run removes the tenant.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("catalog");
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE database_backups SET expires_at = now() - interval '1 day' WHERE kind = 'final'",
            &[],
        )
        .await
        .expect("expire");
    let (status, _) = fx.call(reqwest::Method::POST, "/v1/backups/prune", None).await;
    assert_eq!(status, 200);
    let (status, _) = fx.call(reqwest::Method::DELETE, "/v1/tenants/doomed?force=true", None).await;
    assert_eq!(status, 204);
    assert_eq!(remains(&url, "doomed").await, [0; 7], "nothing of the tenant is left");
}

#[tokio::test]
async fn a_forced_delete_without_final_backups_removes_the_tenant_at_once() {
    let fx = databases::Fixture::start("tenant_delete_nobackup", &[]).await;
    populate(&fx, "gone").await;
    let url = fx.catalog_url();
    let path = "/v1/tenants/gone?force=true&final_backup=false";
    let (status, body) = fx.call(reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, 204, "{body}\n{}", fx.silo.stderr());
    assert_eq!(remains(&url, "gone").await, [0; 7], "nothing of the tenant is left");
    let (status, _) = fx.call(reqwest::Method::GET, "/v1/tenants/gone", None).await;
    assert_eq!(status, 404);
    // The name is free again.
    fx.tenant("gone");
}

/// `GET`/`PUT /v1/tenants/{name}/placement` as `silo`'s admin: the status and the JSON body.
async fn placement_call(
    silo: &Silo,
    method: reqwest::Method,
    tenant: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, silo.url(&format!("/v1/tenants/{tenant}/placement")))
        .bearer_auth(silo.token());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("placement request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

#[tokio::test]
async fn a_placement_policy_is_shown_checked_against_the_nodes_and_changed() {
    let (silo, _tmp, _url) = start().await;
    json_of(&cli(&silo, &["tenant", "create", "acme", "--json"]));

    // The embedded node is one zone: shared, the default factor, which is one copy.
    let shown = json_of(&cli(&silo, &["tenant", "placement", "acme", "--json"]));
    assert_eq!(
        (shown["mode"].as_str(), shown["domain"].as_str()),
        (Some("shared"), Some("shared")),
        "{shown}"
    );
    assert_eq!(shown["replication_factor"], Value::Null, "{shown}");
    assert_eq!(shown["effective_replication_factor"], 1, "{shown}");
    assert_eq!(
        (shown["allowed_zones"].clone(), shown["on_shortage"].as_str()),
        (Value::Null, Some("refuse"))
    );
    assert_eq!(shown["zones"], json!(["default"]), "{shown}");
    let table = String::from_utf8_lossy(&cli(&silo, &["tenant", "placement", "acme"]).stdout).to_string();
    assert!(table.starts_with("TENANT") && table.contains("acme") && table.contains("shared"), "{table}");

    // Policies the one node cannot meet are refused, with what would fix them.
    let refused = cli(&silo, &["tenant", "placement", "acme", "--replicas", "2"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "two copies need two zones");
    assert!(
        stderr.contains("replication factor 2 needs nodes in 2 zones; the shared nodes are in 1 (default)"),
        "{stderr}"
    );
    let refused = cli(&silo, &["tenant", "placement", "acme", "--owned"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("tenant acme owns no storage node"), "{stderr}");
    let (status, body) =
        placement_call(&silo, reqwest::Method::PUT, "acme", Some(json!({"replication_factor": 2}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("placement_unmet")), "{body}");
    let (status, body) =
        placement_call(&silo, reqwest::Method::PUT, "acme", Some(json!({"allowed_zones": ["elsewhere"]})))
            .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("placement_unmet")), "{body}");
    let (status, body) =
        placement_call(&silo, reqwest::Method::PUT, "acme", Some(json!({"allowed_zones": ["no zone"]})))
            .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_zone")), "{body}");
    let (status, body) = placement_call(&silo, reqwest::Method::GET, "nobody", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let unchanged = json_of(&cli(&silo, &["tenant", "placement", "acme", "--json"]));
    assert_eq!(unchanged, shown, "refused changes change nothing");

    // A valid change round-trips; absent fields keep their value; the CLI resets to defaults.
    let change = json!({"replication_factor": 1, "allowed_zones": ["default"], "on_shortage": "degraded"});
    let (status, set) = placement_call(&silo, reqwest::Method::PUT, "acme", Some(change)).await;
    assert_eq!(status, 200, "{set}");
    let (_, got) = placement_call(&silo, reqwest::Method::GET, "acme", None).await;
    assert_eq!(got, set);
    assert_eq!(
        (got["replication_factor"].as_i64(), got["on_shortage"].as_str()),
        (Some(1), Some("degraded"))
    );
    assert_eq!(got["allowed_zones"], json!(["default"]), "{got}");
    let (_, kept) =
        placement_call(&silo, reqwest::Method::PUT, "acme", Some(json!({"mode": "shared"}))).await;
    assert_eq!(kept, got, "absent fields keep their value");
    let reset =
        ["tenant", "placement", "acme", "--default-replicas", "--all-zones", "--on-shortage", "refuse"];
    let reset = json_of(&cli(&silo, &[&reset[..], &["--json"]].concat()));
    assert_eq!(reset, shown, "back to the defaults");
}
