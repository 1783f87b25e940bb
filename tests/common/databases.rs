//! A Silo with a registered Postgres server, for the tests of client databases and backups,
//! and `psql` helpers.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Silo, scratch, silo_cli_json};

/// A plan whose quota sits a few MB above an empty database (about 7.5 MB).
pub const CONFIG: &str = "[plans.tiny]\nconnection_limit = 5\nstorage_quota_bytes = 9437184\nstatement_timeout_ms = 5000\n\
     [plans.keep2]\nconnection_limit = 5\nstorage_quota_bytes = 104857600\nstatement_timeout_ms = 0\n\
     backup_retention = { keep_last = 2, daily = 0, weekly = 0, monthly = 0 }\n\
     [plans.daily3]\nconnection_limit = 5\nstorage_quota_bytes = 104857600\nstatement_timeout_ms = 0\n\
     backup_retention = { keep_last = 1, daily = 3, weekly = 0, monthly = 0 }\n";

pub struct Fixture {
    pub silo: Silo,
    pub tmp: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Fixture {
    pub async fn start(label: &str, env: &[(&str, &str)]) -> Fixture {
        let catalog = pg_local::testing::shared().fresh_database(label).await;
        let tmp = scratch();
        let config = tmp.path().join("silo.toml");
        std::fs::write(&config, CONFIG).expect("config");
        let silo = start_silo(&tmp, &catalog, env).await;
        let fx = Fixture { silo, tmp, http: reqwest::Client::new() };
        let url = pg_local::testing::shared().url("postgres");
        let registered = fx.call(
            reqwest::Method::POST,
            "/v1/servers",
            Some(json!({
                "name": "shared", "url": url, "zone": "z1"
            })),
        );
        assert_eq!(registered.await.0, 201);
        std::fs::write(fx.tmp.path().join("catalog-url"), catalog).expect("keep the catalog url");
        fx
    }

    /// The catalog database's URL.
    pub fn catalog_url(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("catalog-url")).expect("catalog url")
    }

    pub async fn restart(&mut self, env: &[(&str, &str)]) {
        let catalog = std::fs::read_to_string(self.tmp.path().join("catalog-url")).expect("catalog url");
        self.silo.signal(nix::sys::signal::Signal::SIGTERM);
        self.silo.wait_exit(Duration::from_secs(30)).await;
        self.silo = start_silo(&self.tmp, &catalog, env).await;
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, None).await
    }

    pub async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.silo.url(path)).bearer_auth(self.silo.token());
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn tenant(&self, name: &str) {
        silo_cli_json(&self.silo, &["tenant", "create", name]);
    }

    /// Creates a database and returns its credentials.
    pub async fn create(&self, tenant: &str, body: Value) -> Value {
        let (status, created) =
            self.call(reqwest::Method::POST, &format!("/v1/tenants/{tenant}/databases"), Some(body)).await;
        assert_eq!(status, 201, "{created}");
        created
    }

    pub async fn show(&self, tenant: &str, name: &str) -> Value {
        let (status, info) =
            self.call(reqwest::Method::GET, &format!("/v1/tenants/{tenant}/databases/{name}"), None).await;
        assert_eq!(status, 200, "{info}");
        info
    }

    /// Polls the database until its state is `state`.
    pub async fn wait_state(&self, tenant: &str, name: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = self.show(tenant, name).await;
            if info["state"] == state {
                return info;
            }
            assert!(Instant::now() < deadline, "never reached {state}: {info}\n{}", self.silo.stderr());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub async fn start_silo(tmp: &tempfile::TempDir, catalog: &str, env: &[(&str, &str)]) -> Silo {
    let config = tmp.path().join("silo.toml");
    let args = [
        "--postgres-url",
        catalog,
        "--config",
        config.to_str().expect("path"),
        "--database-sample-interval-secs",
        "1",
    ];
    let mut silo = Silo::start_with_env(&tmp.path().join("data"), &args, env);
    silo.wait_ready(Duration::from_secs(60)).await;
    silo
}

/// Runs SQL with `psql` on `url`, stopping at the first error.
pub fn psql(url: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", url, "-c", sql])
        .output()
        .expect("run psql")
}

pub fn psql_ok(url: &str, sql: &str) -> String {
    let output = psql(url, sql);
    assert!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub fn psql_err(url: &str, sql: &str) -> String {
    let output = psql(url, sql);
    assert!(!output.status.success(), "psql succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Runs SQL as the managed server's superuser.
pub fn admin_sql(sql: &str) -> String {
    psql_ok(&pg_local::testing::shared().url("postgres"), sql)
}

/// The URL of `credentials` with another password.
pub fn with_password(credentials: &Value, password: &str) -> String {
    let url = credentials["url"].as_str().expect("url");
    url.replace(credentials["password"].as_str().expect("password"), password)
}

impl Fixture {
    /// Starts Silo again after it died by itself.
    pub async fn restart_after_crash(&mut self) {
        let catalog = std::fs::read_to_string(self.tmp.path().join("catalog-url")).expect("catalog url");
        self.silo = start_silo(&self.tmp, &catalog, &[]).await;
    }
}

/// Runs the `silo` CLI against the fixture (without `--json` unless asked).
pub fn silo(fx: &Fixture, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(args)
        .env("SILO_URL", format!("http://{}", fx.silo.addr))
        .env("SILO_ADMIN_TOKEN", fx.silo.token())
        .output()
        .expect("run silo")
}

/// Downloads backup `id` with `silo backup download` and restores the file with plain
/// `pg_restore` into a new database `name` of the shared cluster (dropped first if left over);
/// returns that database's URL.
pub fn restore_download_into(fx: &Fixture, id: i64, name: &str) -> String {
    let file = fx.tmp.path().join(format!("{name}.dump"));
    let downloaded = silo(fx, &["backup", "download", &id.to_string(), "-o", file.to_str().expect("path")]);
    assert!(
        downloaded.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&downloaded.stderr),
        fx.silo.stderr()
    );
    admin_sql(&format!("DROP DATABASE IF EXISTS {name}"));
    admin_sql(&format!("CREATE DATABASE {name}"));
    let url = pg_local::testing::shared().url(name);
    let status =
        Command::new("pg_restore").args(["--no-owner", "--exit-on-error", "-d", &url]).arg(&file).status();
    assert!(status.expect("pg_restore").success(), "pg_restore of backup {id} into {name}");
    url
}

/// Runs the `silo` CLI with `--json` and parses its output; a failure shows the CLI's output
/// and the server log.
pub fn silo_json(fx: &Fixture, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let output = silo(fx, &with_json);
    assert!(
        output.status.success(),
        "silo {args:?}: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout),
        fx.silo.stderr()
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}
