//! The S3 data plane with real clients (boto3 and the aws CLI, from the virtualenv that
//! `scripts/setup` makes in `.venv`), against the real binary and a real Postgres.

use crate::common;

use std::time::Duration;

use common::{Silo, scratch, silo_cli_json as cli};
use serde_json::Value;

#[tokio::test]
async fn boto3_and_the_aws_cli_work_end_to_end() {
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
    let (a_key, a_secret) = (key(&a, "access_key_id"), key(&a, "secret_access_key"));
    let (b_key, b_secret) = (key(&b, "access_key_id"), key(&b, "secret_access_key"));
    let (q_key, q_secret) = (key(&q, "access_key_id"), key(&q, "secret_access_key"));
    let (revoked_key, revoked_secret) = (key(&revoked, "access_key_id"), key(&revoked, "secret_access_key"));
    let work_dir = work.to_string_lossy().to_string();
    let env = [
        ("A_KEY", a_key.as_str()),
        ("A_SECRET", a_secret.as_str()),
        ("B_KEY", b_key.as_str()),
        ("B_SECRET", b_secret.as_str()),
        ("Q_KEY", q_key.as_str()),
        ("Q_SECRET", q_secret.as_str()),
        ("REVOKED_KEY", revoked_key.as_str()),
        ("REVOKED_SECRET", revoked_secret.as_str()),
        ("WORK", work_dir.as_str()),
    ];
    common::run_s3_script("s3_clients.py", &silo, &env).await;
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
