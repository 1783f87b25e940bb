//! `silo serve` end to end: the real binary, the embedded Postgres and real HTTP on loopback.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Silo, is_root, process_alive, scratch, start_expecting_failure, wait_for_failure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const COLD_START: Duration = Duration::from_secs(15);

async fn get_json(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn cold_start_serves_probes_and_metrics_and_guards_the_management_api() {
    let tmp = scratch();
    let data = tmp.path().join("data");
    let mut silo = Silo::start(&data, &[]);
    let took = silo.wait_ready(COLD_START).await;
    eprintln!("cold start, initdb included: ready after {took:?}");
    let client = reqwest::Client::new();

    let token = silo.token();
    assert!(silo.stdout().contains(&token), "the new token is printed once");
    assert!(!silo.stderr().contains(&token), "the token never reaches the log");
    let mode = std::fs::metadata(data.join("secrets/admin-token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode =
        std::fs::metadata(data.join("secrets/postgres-superuser-password")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let (status, body) = get_json(&client, &silo.url("/healthz"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alive")));
    let (status, body) = get_json(&client, &silo.url("/readyz"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["embedded_postgres"]["ok"], true);

    let (status, body) = get_json(&client, &silo.url("/v1/info"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let (status, body) = get_json(&client, &silo.url("/v1/info"), Some("silo_not-the-token-at-all")).await;
    assert_eq!((status, body["error"]["message"].as_str()), (401, Some("invalid admin token")), "{body}");
    let (status, body) = get_json(&client, &silo.url("/v1/no-such-thing"), None).await;
    assert_eq!(status, 401, "unknown /v1 paths are not revealed without the token: {body}");
    let (status, body) = get_json(&client, &silo.url("/v1/no-such-thing"), Some(&token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, info) = get_json(&client, &silo.url("/v1/info"), Some(&token)).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["postgres_mode"], "embedded");
    assert!(info["catalog_schema"]["storage_node"].as_i64().is_some_and(|v| v >= 2), "{info}");

    let metrics = client.get(silo.metrics_url()).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("silo_http_requests_total{method=\"GET\",route=\"/v1/info\",status=\"401\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("silo_embedded_postgres_up 1"), "{metrics}");

    // A second Silo on the same data directory is refused while the first runs.
    let (status, stderr) = start_expecting_failure(&data, &[]).await;
    assert!(!status.success());
    assert!(stderr.contains("in use by another Silo process"), "{stderr}");

    // Ctrl-C: a clean exit, and no postgres left behind.
    let postmaster = silo.postmaster_pid().expect("postgres runs");
    silo.signal(Signal::SIGINT);
    let status = silo.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}\n{}", silo.stderr());
    assert!(!process_alive(postmaster), "postgres {postmaster} outlived Silo");
}

#[tokio::test]
async fn kill_9_then_restart_comes_back_with_the_same_catalog_and_token() {
    let tmp = scratch();
    let data = tmp.path().join("data");
    let client = reqwest::Client::new();
    let mut first = Silo::start(&data, &[]);
    first.wait_ready(COLD_START).await;
    let token = first.token();
    let (_, info) = get_json(&client, &first.url("/v1/info"), Some(&token)).await;
    let old_postmaster = first.postmaster_pid().expect("postgres runs");
    first.kill9().await;
    assert!(process_alive(old_postmaster), "kill -9 gives Silo no chance to stop postgres");

    let mut second = Silo::start(&data, &[]);
    let took = second.wait_ready(COLD_START).await;
    eprintln!("restart after kill -9: ready after {took:?}");
    assert_eq!(second.token(), token);
    assert!(!second.stdout().contains(&token), "the token is printed on first start only");
    let (status, again) = get_json(&client, &second.url("/v1/info"), Some(&token)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["catalog_id"], info["catalog_id"]);
    assert!(second.stderr().contains("still running from an earlier run"), "{}", second.stderr());

    // A warm restart after a clean stop.
    second.signal(Signal::SIGTERM);
    assert!(second.wait_exit(Duration::from_secs(30)).await.success());
    let mut third = Silo::start(&data, &[]);
    let took = third.wait_ready(COLD_START).await;
    eprintln!("warm restart: ready after {took:?}");
    let (_, again) = get_json(&client, &third.url("/v1/info"), Some(&token)).await;
    assert_eq!(again["catalog_id"], info["catalog_id"]);
}

/// `--shutdown-delay-secs`: after SIGTERM, `/readyz` turns 503 at once (load balancers take
/// the node out) while new connections and requests are still served; then the node stops. A
/// second SIGTERM cuts the delay short.
#[tokio::test]
async fn a_shutdown_delay_turns_readyz_503_and_keeps_serving_until_it_is_over() {
    let tmp = scratch();
    let mut silo = Silo::start(&tmp.path().join("data"), &["--shutdown-delay-secs", "3"]);
    silo.wait_ready(COLD_START).await;
    let signalled = std::time::Instant::now();
    silo.signal(Signal::SIGTERM);
    let deadline = signalled + Duration::from_secs(2);
    loop {
        // A new connection each time: the listener still takes them.
        let (status, body) = get_json(&reqwest::Client::new(), &silo.url("/readyz"), None).await;
        if status == 503 {
            assert!(body.to_string().contains("shutting down"), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "readyz still {status} after SIGTERM: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, info) = get_json(&reqwest::Client::new(), &silo.url("/v1/info"), Some(&silo.token())).await;
    assert_eq!(status, 200, "requests are served during the delay: {info}");
    assert!(signalled.elapsed() < Duration::from_secs(3), "checked within the delay");
    let status = silo.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}\n{}", silo.stderr());
    assert!(signalled.elapsed() >= Duration::from_secs(3), "stopped after the delay, not before");

    // A second SIGTERM stops it at once.
    let mut silo = Silo::start(&tmp.path().join("data"), &["--shutdown-delay-secs", "60"]);
    silo.wait_ready(COLD_START).await;
    let signalled = std::time::Instant::now();
    silo.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    silo.signal(Signal::SIGTERM);
    assert!(silo.wait_exit(Duration::from_secs(30)).await.success(), "{}", silo.stderr());
    assert!(signalled.elapsed() < Duration::from_secs(30), "the second signal cut the delay short");
    assert!(silo.stderr().contains("SIGTERM again"), "{}", silo.stderr());
}

#[tokio::test]
async fn killed_postgres_turns_readyz_503_until_it_is_restarted() {
    let tmp = scratch();
    let data = tmp.path().join("data");
    let client = reqwest::Client::new();
    let mut silo = Silo::start(&data, &[]);
    silo.wait_ready(COLD_START).await;
    let postmaster = silo.postmaster_pid().expect("postgres runs");
    kill(Pid::from_raw(postmaster as i32), Signal::SIGKILL).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut saw_503 = None;
    loop {
        let (status, body) = get_json(&client, &silo.url("/readyz"), None).await;
        if status == 503 {
            saw_503.get_or_insert(body);
        } else if status == 200 && saw_503.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "readyz never recovered; saw 503: {saw_503:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = saw_503.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()), "{body}");
    let restarted = silo.postmaster_pid().expect("postgres runs again");
    assert_ne!(restarted, postmaster);
    let metrics = client.get(silo.metrics_url()).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("silo_embedded_postgres_restarts 1"), "{metrics}");
    let (status, _) = get_json(&client, &silo.url("/v1/info"), Some(&silo.token())).await;
    assert_eq!(status, 200, "the catalog answers again");
}

#[tokio::test]
async fn missing_postgres_binaries_exit_non_zero_and_name_the_package() {
    let tmp = scratch();
    let empty = tmp.path().join("no-binaries-here");
    std::fs::create_dir(&empty).unwrap();
    let data = tmp.path().join("data");
    let (status, stderr) =
        start_expecting_failure(&data, &["--postgres-bin-dir", empty.to_str().unwrap()]).await;
    assert!(!status.success());
    assert!(stderr.contains("apt-get install postgresql"), "{stderr}");
}

#[tokio::test]
async fn a_port_in_use_is_named_and_nothing_is_started() {
    let tmp = scratch();
    let data = tmp.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (status, stderr) = wait_for_failure(Silo::start_at(addr, &data, &[], &[])).await;
    assert!(!status.success());
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    assert!(!data.join("postgres").exists(), "no Postgres is created before the port is secured");
}

#[tokio::test]
async fn another_programs_directory_is_refused_and_left_untouched() {
    let tmp = scratch();
    let foreign = tmp.path().join("photos");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("holiday.jpg"), b"not Silo's").unwrap();
    let (status, stderr) = start_expecting_failure(&foreign, &[]).await;
    assert!(!status.success());
    assert!(stderr.contains("is not a Silo data directory"), "{stderr}");
    let entries: Vec<_> = std::fs::read_dir(&foreign).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("holiday.jpg")]);
    assert_eq!(std::fs::read(foreign.join("holiday.jpg")).unwrap(), b"not Silo's");
}

#[tokio::test]
async fn a_read_only_data_directory_is_refused() {
    let tmp = scratch();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = is_root()
        && std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(&data)
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        // Without root a plain mode bit is enough.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o500)).unwrap();
    }
    let (status, stderr) = start_expecting_failure(&data, &[]).await;
    if mounted {
        let _ = std::process::Command::new("umount").arg(&data).status();
    }
    assert!(!status.success());
    assert!(stderr.contains("is not writable"), "{stderr}");
}

#[tokio::test]
async fn a_data_directory_postgres_cannot_reach_is_named() {
    // Only a root Silo switches Postgres to another OS user (CI runs the tests as root).
    assert!(is_root(), "this test needs root: run the tests as root, as CI does");
    let tmp = scratch();
    let locked = tmp.path().join("private");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (status, stderr) = start_expecting_failure(&locked.join("data"), &[]).await;
    assert!(!status.success());
    assert!(stderr.contains("cannot reach") && stderr.contains("private"), "{stderr}");
}

#[tokio::test]
async fn an_external_postgres_is_used_when_given_and_its_password_stays_out_of_the_logs() {
    let url = pg_local::testing::shared().fresh_database("external").await;
    let tmp = scratch();
    let data = tmp.path().join("data");
    let mut silo = Silo::start(&data, &["--postgres-url", &url, "--log-format", "json"]);
    silo.wait_ready(COLD_START).await;
    let client = reqwest::Client::new();
    let token = silo.token();
    let (status, info) = get_json(&client, &silo.url("/v1/info"), Some(&token)).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["postgres_mode"], "external");
    assert!(!data.join("postgres").exists(), "no embedded cluster with an external catalog");
    silo.signal(Signal::SIGTERM);
    assert!(silo.wait_exit(Duration::from_secs(30)).await.success());
    let stderr = silo.stderr();
    assert!(!stderr.contains("test-only-password"), "{stderr}");
    for line in stderr.lines() {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed.get("level").is_some(), "{line}");
    }
}

#[tokio::test]
async fn the_admin_token_from_the_environment_wins() {
    let tmp = scratch();
    let data = tmp.path().join("data");
    let url = pg_local::testing::shared().fresh_database("env_token").await;
    let token = "an-operator-chosen-token-0123456789";
    let mut silo = Silo::start_with_env(&data, &["--postgres-url", &url], &[("SILO_ADMIN_TOKEN", token)]);
    silo.wait_ready(COLD_START).await;
    let client = reqwest::Client::new();
    assert_eq!(get_json(&client, &silo.url("/v1/info"), Some(token)).await.0, 200);
    assert!(!data.join("secrets/admin-token").exists(), "no token is generated when one is given");
    assert!(!silo.stdout().contains(token));
}
