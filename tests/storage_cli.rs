//! `silo gc` and `silo scrub` against a running server.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{Silo, scratch};

fn silo_cli(silo: &Silo, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(args)
        .env("SILO_URL", format!("http://{}", silo.addr))
        .env("SILO_ADMIN_TOKEN", token)
        .output()
        .expect("run silo")
}

#[tokio::test]
async fn gc_and_scrub_run_on_a_live_server_and_refuse_a_wrong_token() {
    let url = pg_local::testing::shared().fresh_database("storage_cli").await;
    let tmp = scratch();
    let mut silo = Silo::start(&tmp.path().join("data"), &["--postgres-url", &url]);
    silo.wait_ready(Duration::from_secs(30)).await;
    let token = silo.token();

    let gc = silo_cli(&silo, &token, &["gc", "--json"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let report: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(report["chunks_deleted"], 0);

    let scrub = silo_cli(&silo, &token, &["scrub"]);
    assert!(scrub.status.success(), "{}", String::from_utf8_lossy(&scrub.stderr));
    assert!(String::from_utf8_lossy(&scrub.stdout).contains("checked 0 chunks"));

    let refused = silo_cli(&silo, "silo_wrong-token-wrong-token", &["scrub"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401") && stderr.contains("invalid admin token"), "{stderr}");

    let bad_sample = silo_cli(&silo, &token, &["scrub", "--sample", "2"]);
    assert!(!bad_sample.status.success());
    assert!(String::from_utf8_lossy(&bad_sample.stderr).contains("between 0 and 1"));
}

#[test]
fn config_show_prints_what_serve_would_resolve_with_the_secrets_masked() {
    let tmp = scratch();
    let file = tmp.path().join("silo.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\nzone = \"from-file\"\npostgres_url = \"postgresql://silo:hunter2@db/silo\"\n\
         [plans.tiny]\nconnection_limit = 3\nstorage_quota_bytes = 1000\nstatement_timeout_ms = 500\n",
    )
    .unwrap();
    let shown = Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(["config", "show", "--config", file.to_str().unwrap(), "--node-name", "from-flag"])
        .env("SILO_LISTEN", "127.0.0.1:9100")
        .output()
        .expect("run silo");
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let text = String::from_utf8_lossy(&shown.stdout);
    let config: toml::Table = toml::from_str(&text).expect("config show prints TOML");
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:9100"), "a variable beats the file");
    assert_eq!(config["zone"].as_str(), Some("from-file"), "the file beats the default");
    assert_eq!(config["node_name"].as_str(), Some("from-flag"));
    assert_eq!(config["gc_interval_secs"].as_integer(), Some(300), "the default");
    assert!(config["plans"].get("tiny").is_some() && config["plans"].get("small").is_some(), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(config["postgres_url"].as_str().is_some_and(|url| !url.contains("silo")), "{text}");
}
