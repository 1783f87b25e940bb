//! The S3 data plane with real clients (boto3 and the aws CLI, from the virtualenv that
//! `scripts/setup` makes in `.venv`), against the real binary and a real Postgres.

use crate::common;

use std::time::Duration;

use common::{Silo, scratch, silo_cli_json as cli};
use serde_json::Value;

#[tokio::test]
async fn boto3_and_the_aws_cli_work_end_to_end() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    assert!(std::path::Path::new(python).exists(), "no {python}: run ./scripts/setup first");
    let url = pg_local::testing::shared().fresh_database("s3_clients").await;
    let tmp = scratch();
    let mut silo = Silo::start(&tmp.path().join("data"), &["--postgres-url", &url]);
    silo.wait_ready(Duration::from_secs(30)).await;
    cli(&silo, &["tenant", "create", "tenant-a"]);
    cli(&silo, &["tenant", "create", "tenant-b"]);
    let a = cli(&silo, &["key", "create", "tenant-a"]);
    let b = cli(&silo, &["key", "create", "tenant-b"]);
    cli(&silo, &["tenant", "create", "tenant-q", "--quota-bytes", "1000000"]);
    let q = cli(&silo, &["key", "create", "tenant-q"]);
    let revoked = cli(&silo, &["key", "create", "tenant-a"]);
    cli(&silo, &["key", "revoke", "tenant-a", revoked["access_key_id"].as_str().unwrap()]);

    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let key = |v: &Value, field: &str| v[field].as_str().unwrap().to_string();
    let output = tokio::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/s3_clients.py"))
        .env("SILO_S3_ENDPOINT", format!("http://{}", silo.addr))
        .env("A_KEY", key(&a, "access_key_id"))
        .env("A_SECRET", key(&a, "secret_access_key"))
        .env("B_KEY", key(&b, "access_key_id"))
        .env("B_SECRET", key(&b, "secret_access_key"))
        .env("Q_KEY", key(&q, "access_key_id"))
        .env("Q_SECRET", key(&q, "secret_access_key"))
        .env("REVOKED_KEY", key(&revoked, "access_key_id"))
        .env("REVOKED_SECRET", key(&revoked, "secret_access_key"))
        .env("WORK", &work)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        silo.stderr()
    );
    assert!(!silo.stderr().contains(&key(&a, "secret_access_key")), "secrets never reach the log");

    // Public-read buckets: anonymous GET and HEAD work once marked, nothing else does.
    let http = reqwest::Client::new();
    let object = format!("http://{}/media/site/index.html", silo.addr);
    assert_eq!(http.get(&object).send().await.unwrap().status(), 403, "private by default");
    let marked = http
        .patch(format!("http://{}/v1/buckets/media", silo.addr))
        .bearer_auth(silo.token())
        .json(&serde_json::json!({ "public_read": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 200);
    let response = http.get(&object).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "<h1>hi</h1>");
    assert_eq!(http.head(&object).send().await.unwrap().status(), 200);
    let ranged = http.get(&object).header("Range", "bytes=1-2").send().await.unwrap();
    assert_eq!((ranged.status().as_u16(), ranged.text().await.unwrap()), (206, "h1".to_string()));
    assert_eq!(
        http.put(&object).body("defaced").send().await.unwrap().status(),
        403,
        "anonymous writes stay denied"
    );
    assert_eq!(http.delete(&object).send().await.unwrap().status(), 403);
}
