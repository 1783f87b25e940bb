//! The node registry end to end: `silo serve` registers itself and heartbeats, `silo node list`
//! and `GET /v1/nodes` show it; the nodes of one catalog share its server secret, and a name
//! keeps its data directory and, while it holds packs, its zone and owner.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use common::{Silo, scratch, silo_cli_json, start_expecting_failure, wait_for_failure};
use nix::sys::signal::Signal;
use serde_json::Value;

const READY: Duration = Duration::from_secs(30);

/// A `silo serve` on the catalog `url` with `data`, the node flags `extra`, ready.
async fn start(data: &Path, url: &str, extra: &[&str]) -> Silo {
    let mut args = vec!["--postgres-url", url];
    args.extend_from_slice(extra);
    let mut silo = Silo::start(data, &args);
    silo.wait_ready(READY).await;
    silo
}

/// A `silo serve` on the catalog `url` that must fail at start; its stderr.
async fn refused(data: &Path, url: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut args = vec!["--postgres-url", url];
    args.extend_from_slice(extra);
    let (status, stderr) = wait_for_failure(Silo::start_with_env(data, &args, env)).await;
    assert!(!status.success(), "a refused start exits non-zero: {stderr}");
    stderr
}

async fn stop(silo: &mut Silo) {
    silo.signal(Signal::SIGTERM);
    let status = silo.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}\n{}", silo.stderr());
}

fn nodes(silo: &Silo) -> Vec<Value> {
    silo_cli_json(silo, &["node", "list"]).as_array().cloned().expect("a list of nodes")
}

async fn readyz(silo: &Silo) -> Value {
    let response = reqwest::get(silo.url("/readyz")).await.expect("readyz");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// Stores an object for `tenant` through S3, so that the node holds a pack.
async fn store_an_object(silo: &Silo, tenant: &str) {
    let key = silo_cli_json(silo, &["key", "create", tenant]);
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    let client = common::sdk_client(silo, &field("access_key_id"), &field("secret_access_key"));
    let bucket = format!("{tenant}-media");
    client.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    let body = ByteStream::from(common::noise(300_000, 12));
    client.put_object().bucket(&bucket).key("a.bin").body(body).send().await.expect("put");
}

async fn catalog_value(url: &str, sql: &str) -> bool {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("catalog");
    tokio::spawn(conn);
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::test]
async fn the_node_list_shows_this_node_with_its_zone_and_a_live_heartbeat() {
    let url = pg_local::testing::shared().fresh_database("nodes_list").await;
    let tmp = scratch();
    let flags = [
        "--node-name",
        "alpha",
        "--zone",
        "zone-a",
        "--internal-url",
        "http://127.0.0.1:7001/",
        "--capacity-bytes",
        "5000000000",
    ];
    let mut silo = start(&tmp.path().join("data"), &url, &flags).await;

    let ready = readyz(&silo).await;
    assert_eq!(ready["node"]["name"], "alpha", "{ready}");
    assert_eq!(ready["node"]["zone"], "zone-a", "{ready}");
    assert_eq!(
        (ready["node"]["nodes_in_catalog"].as_i64(), ready["node"]["copies"].as_i64()),
        (Some(1), Some(1))
    );

    silo_cli_json(&silo, &["tenant", "create", "media"]);
    store_an_object(&silo, "media").await;
    let listed = nodes(&silo);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let node = &listed[0];
    assert_eq!((node["name"].as_str(), node["zone"].as_str()), (Some("alpha"), Some("zone-a")), "{node}");
    assert_eq!((node["state"].as_str(), node["live"].as_bool()), (Some("active"), Some(true)), "{node}");
    assert_eq!(node["owner"], Value::Null);
    assert_eq!(node["internal_url"], "http://127.0.0.1:7001/");
    assert_eq!(node["capacity_bytes"], 5_000_000_000i64);
    assert!(node["packs"].as_i64() >= Some(1) && node["stored_bytes"].as_i64() >= Some(300_000), "{node}");
    let started = node["started_at"].as_str().expect("started_at").to_string();
    assert!(started.ends_with('Z') && started.len() == 20, "RFC 3339, whole seconds: {started}");

    // The heartbeat moves on while the node runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let node = nodes(&silo).remove(0);
        if node["heartbeat_at"].as_str().is_some_and(|at| at > started.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "the heartbeat never moved past {started}: {node}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The table names the node and its zone.
    let table = Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(["node", "list"])
        .env("SILO_URL", format!("http://{}", silo.addr))
        .env("SILO_ADMIN_TOKEN", silo.token())
        .output()
        .expect("silo node list");
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.starts_with("NAME") && table.contains("alpha") && table.contains("zone-a"), "{table}");

    // A clean stop marks the node stopped.
    stop(&mut silo).await;
    let sql =
        "SELECT stopped_at IS NOT NULL AND heartbeat_at IS NOT NULL FROM storage_nodes WHERE name = 'alpha'";
    assert!(catalog_value(&url, sql).await, "a clean stop is recorded: {}", silo.stderr());
}

#[tokio::test]
async fn nodes_of_one_catalog_share_its_server_secret_and_each_keeps_its_directory() {
    let url = pg_local::testing::shared().fresh_database("nodes_one").await;
    let tmp = scratch();
    let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
    let mut alpha = start(&first, &url, &["--node-name", "alpha", "--zone", "zone-a"]).await;

    // A second node with a server secret of its own: the cluster shares the catalog's.
    let stderr = refused(&second, &url, &["--node-name", "beta", "--zone", "zone-b"], &[]).await;
    assert!(stderr.contains("SILO_SERVER_SECRET"), "{stderr}");
    // Another data directory under the same name has another server secret.
    let stderr = refused(&second, &url, &["--node-name", "alpha", "--zone", "zone-a"], &[]).await;
    assert!(stderr.contains("SILO_SERVER_SECRET"), "{stderr}");
    // Given the catalog's secret, it is still refused: alpha's packs are not in it.
    let secret_file = storage_node::data_dir::secret_file(&first, storage_node::data_dir::SERVER_SECRET);
    let alphas_secret = std::fs::read_to_string(secret_file).expect("alpha's server secret");
    let env = [("SILO_SERVER_SECRET", alphas_secret.trim())];
    let stderr = refused(&second, &url, &["--node-name", "alpha", "--zone", "zone-a"], &env).await;
    assert!(stderr.contains("another data directory"), "{stderr}");
    assert_eq!(nodes(&alpha).len(), 1, "refused starts register nothing");

    // The same node with a server secret from the environment that is not the catalog's.
    stop(&mut alpha).await;
    let other_secret = "7".repeat(64);
    let env = [("SILO_SERVER_SECRET", other_secret.as_str())];
    let stderr = refused(&first, &url, &["--node-name", "alpha", "--zone", "zone-a"], &env).await;
    assert!(stderr.contains("SILO_SERVER_SECRET"), "{stderr}");

    // The same node starts again, and a second node with the catalog's secret joins it.
    let alpha = start(&first, &url, &["--node-name", "alpha", "--zone", "zone-a"]).await;
    let env = [("SILO_SERVER_SECRET", alphas_secret.trim())];
    let mut beta = Silo::start_with_env(
        &tmp.path().join("third"),
        &["--postgres-url", &url, "--node-name", "beta", "--zone", "zone-b"],
        &env,
    );
    beta.wait_ready(READY).await;
    let listed = nodes(&alpha);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!((listed[0]["name"].as_str(), listed[0]["live"].as_bool()), (Some("alpha"), Some(true)));
    assert_eq!(listed[0]["stopped_at"], Value::Null, "a start clears the stop mark");
    assert_eq!((listed[1]["name"].as_str(), listed[1]["zone"].as_str()), (Some("beta"), Some("zone-b")));
    stop(&mut beta).await;
}

#[tokio::test]
async fn an_owner_must_be_a_tenant_and_a_node_with_data_keeps_its_zone() {
    let url = pg_local::testing::shared().fresh_database("nodes_owner").await;
    let tmp = scratch();
    let data = tmp.path().join("data");
    let stderr = refused(&data, &url, &["--zone", "zone-a", "--owner", "nobody-here"], &[]).await;
    assert!(stderr.contains("\"nobody-here\"") && stderr.contains("no tenant"), "{stderr}");

    let mut silo = start(&data, &url, &["--zone", "zone-a"]).await;
    silo_cli_json(&silo, &["tenant", "create", "acme"]);
    stop(&mut silo).await;
    let mut silo = start(&data, &url, &["--zone", "zone-a", "--owner", "acme"]).await;
    let listed = nodes(&silo);
    assert_eq!((listed.len(), listed[0]["owner"].as_str()), (1, Some("acme")), "{listed:?}");
    // The owner is shown behind the admin token; the anonymous probe names no tenant.
    let info: Value = reqwest::Client::new()
        .get(silo.url("/v1/info"))
        .bearer_auth(silo.token())
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    assert_eq!(info["node"]["owner"], "acme");
    assert!(readyz(&silo).await["node"].get("owner").is_none(), "/readyz names no tenant");
    // A tenant that owns a node is not deleted, even forced: the node names it.
    let response = reqwest::Client::new()
        .delete(silo.url("/v1/tenants/acme?force=true"))
        .bearer_auth(silo.token())
        .send()
        .await
        .expect("delete the tenant");
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "tenant_owns_nodes", "{body}");
    store_an_object(&silo, "acme").await;
    stop(&mut silo).await;

    let stderr = refused(&data, &url, &["--zone", "zone-b", "--owner", "acme"], &[]).await;
    assert!(stderr.contains("zone \"zone-a\"") && stderr.contains("zone \"zone-b\""), "{stderr}");
    let (status, stderr) =
        start_expecting_failure(&data, &["--postgres-url", url.as_str(), "--zone", "zone-a"]).await;
    assert!(!status.success() && stderr.contains("no owner"), "a node with data keeps its owner: {stderr}");
    start(&data, &url, &["--zone", "zone-a", "--owner", "acme"]).await;
}

#[tokio::test]
async fn a_tenant_with_its_own_node_and_no_shared_one_is_placed_on_its_own() {
    let url = pg_local::testing::shared().fresh_database("nodes_placement").await;
    let tmp = scratch();
    let data = tmp.path().join("data");
    let mut silo = start(&data, &url, &["--zone", "zone-a"]).await;
    silo_cli_json(&silo, &["tenant", "create", "acme"]);
    silo_cli_json(&silo, &["tenant", "create", "bob"]);
    stop(&mut silo).await;
    let silo = start(&data, &url, &["--zone", "zone-a", "--owner", "acme"]).await;

    // acme's policy is shared, but the catalog has no shared node: its packs go to its own.
    let acme = silo_cli_json(&silo, &["tenant", "placement", "acme"]);
    assert_eq!((acme["mode"].as_str(), acme["domain"].as_str()), (Some("shared"), Some("owned")), "{acme}");
    assert_eq!(
        (acme["effective_replication_factor"].as_i64(), acme["zones"].clone()),
        (Some(1), serde_json::json!(["zone-a"]))
    );
    let owned = silo_cli_json(&silo, &["tenant", "placement", "acme", "--owned"]);
    assert_eq!(owned["mode"], "owned", "{owned}");
    // bob has no node at all: nothing it asks for can be met.
    let bob = silo_cli_json(&silo, &["tenant", "placement", "bob"]);
    assert_eq!(
        (bob["domain"].as_str(), bob["zones"].clone()),
        (Some("shared"), serde_json::json!([])),
        "{bob}"
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(["tenant", "placement", "bob", "--on-shortage", "degraded"])
        .env("SILO_URL", format!("http://{}", silo.addr))
        .env("SILO_ADMIN_TOKEN", silo.token())
        .output()
        .expect("silo tenant placement");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("the shared nodes are in none"), "{stderr}");
}

#[tokio::test]
async fn a_tenant_whose_own_nodes_are_all_removed_can_be_deleted() {
    let url = pg_local::testing::shared().fresh_database("nodes_owner_removed").await;
    let tmp = scratch();
    let shared =
        start(&tmp.path().join("shared"), &url, &["--node-name", "shared", "--zone", "zone-a"]).await;
    silo_cli_json(&shared, &["tenant", "create", "acme"]);
    let secret_file = storage_node::data_dir::secret_file(
        &tmp.path().join("shared"),
        storage_node::data_dir::SERVER_SECRET,
    );
    let secret = std::fs::read_to_string(secret_file).expect("the cluster's server secret");
    let args =
        ["--postgres-url", url.as_str(), "--node-name", "acme-own", "--zone", "zone-b", "--owner", "acme"];
    let mut own =
        Silo::start_with_env(&tmp.path().join("own"), &args, &[("SILO_SERVER_SECRET", secret.trim())]);
    own.wait_ready(READY).await;
    stop(&mut own).await;
    let delete = async || {
        reqwest::Client::new()
            .delete(shared.url("/v1/tenants/acme?force=true"))
            .bearer_auth(shared.token())
            .send()
            .await
            .expect("delete the tenant")
    };
    assert_eq!(delete().await.status(), 409, "its node is not removed yet");

    silo_cli_json(&shared, &["node", "remove", "acme-own"]);
    let response = delete().await;
    assert!(response.status().is_success(), "{}", response.text().await.unwrap_or_default());
    let listed = nodes(&shared);
    let removed =
        listed.iter().find(|node| node["name"] == "acme-own").expect("the removed node stays listed");
    assert!(removed["state"] == "removed" && removed["owner"].is_null(), "{removed}");
}
