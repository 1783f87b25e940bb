//! Tenants, access keys and usage through the management API and the CLI.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Silo, scratch};
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
    let url = db_manager::testing::shared().fresh_database("tenants").await;
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
    assert_eq!(forced.status(), 204);
    let gone = http.get(api("/tenants/shop")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(gone.status(), 404);
}
