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
    let url = db_manager::testing::shared().fresh_database("storage_cli").await;
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
