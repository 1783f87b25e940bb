//! Helpers for end-to-end tests: run the real `silo` binary and talk to it over loopback HTTP.
#![allow(dead_code)]

pub mod cluster;
pub mod databases;
pub mod nginx;
pub mod sign;
pub mod tls;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A temporary directory that a Postgres child running as another OS user can traverse.
pub fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("silo-e2e-").tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    dir
}

pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr")
}

/// A running `silo serve` process with its output captured to files.
pub struct Silo {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The metrics listener (`--metrics-listen`), which every test Silo gets.
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    /// The `silo` binary it runs: this build's, or another one's (an upgrade test's).
    binary: PathBuf,
    /// The extra arguments and environment it was started with, to start it again.
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Silo {
    /// Starts `silo serve` on a free port with `data_dir` and the extra arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Silo {
        Self::start_with_env(data_dir, extra, &[])
    }

    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Silo {
        Self::start_at(free_addr(), data_dir, extra, env)
    }

    /// Starts `silo serve` listening on `addr`.
    pub fn start_at(addr: SocketAddr, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Silo {
        Self::start_binary_at(Path::new(env!("CARGO_BIN_EXE_silo")), addr, data_dir, extra, env)
    }

    /// [`Silo::start_at`] with the `silo` binary at `binary` (another build of Silo).
    pub fn start_binary_at(
        binary: &Path,
        addr: SocketAddr,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Silo {
        let logs = data_dir.with_extension(format!("logs-{}", addr.port()));
        std::fs::create_dir_all(&logs).expect("log dir");
        let mut silo = Silo {
            child: None,
            addr,
            metrics_addr: free_addr(),
            data_dir: data_dir.to_path_buf(),
            stdout: logs.join("stdout"),
            stderr: logs.join("stderr"),
            binary: binary.to_path_buf(),
            extra: extra.iter().map(|arg| arg.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        silo.spawn();
        silo
    }

    fn spawn(&mut self) {
        let (addr, metrics_addr, data_dir) = (self.addr, self.metrics_addr, &self.data_dir);
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--metrics-listen")
            .arg(metrics_addr.to_string())
            .arg("--shutdown-grace-secs")
            .arg("5")
            .args(&self.extra)
            .env_remove("SILO_ADMIN_TOKEN")
            .env_remove("SILO_POSTGRES_URL")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(stdout).expect("stdout file"))
            .stderr(std::fs::File::create(stderr).expect("stderr file"));
        self.child = Some(command.spawn().expect("spawn silo"));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /metrics` on the metrics listener.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The admin token kept in the data directory.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("secrets/admin-token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    /// Polls `/readyz` until 200; returns how long that took.
    pub async fn wait_ready(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        let client = reqwest::Client::new();
        loop {
            if let Ok(response) = client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return started.elapsed();
            }
            if let Some(status) = self.try_exit() {
                // The metrics port was free when picked, but another process (any outgoing
                // connection) may take it before Silo binds it: pick another and start again.
                if self.stderr().contains("cannot listen for metrics") && started.elapsed() < within {
                    self.metrics_addr = free_addr();
                    self.spawn();
                    continue;
                }
                panic!("silo exited with {status} before ready:\n{}", self.stderr());
            }
            assert!(started.elapsed() < within, "not ready within {within:?}:\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                self.child = None;
                return status;
            }
            assert!(started.elapsed() < within, "silo did not exit within {within:?}:\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal silo");
    }

    /// SIGSTOP, then waits until every thread of the process is stopped (`kill` returns before
    /// they are: on a loaded machine a thread may still answer a request for a moment).
    pub async fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.pid());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let stopped = std::fs::read_dir(&tasks).expect("the process's threads").flatten().all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the command name's closing parenthesis.
                stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            });
            if stopped {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the process did not stop");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub async fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10)).await;
    }

    /// The pid of the embedded postmaster, from its pid file.
    pub fn postmaster_pid(&self) -> Option<u32> {
        postmaster_pid(&self.data_dir)
    }
}

impl Drop for Silo {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        if let Some(pid) = postmaster_pid(&self.data_dir) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGQUIT);
        }
    }
}

pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postgres/data/postmaster.pid")).ok()?;
    let pid = text.lines().next()?.trim().parse().ok()?;
    process_alive(pid).then_some(pid)
}

/// Whether `pid` runs and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Runs `silo serve` that is expected to fail at start-up; returns its exit status and stderr.
pub async fn start_expecting_failure(data_dir: &Path, extra: &[&str]) -> (ExitStatus, String) {
    wait_for_failure(Silo::start(data_dir, extra)).await
}

/// Waits for a `silo serve` that is expected to fail at start-up.
pub async fn wait_for_failure(mut silo: Silo) -> (ExitStatus, String) {
    let status = silo.wait_exit(Duration::from_secs(30)).await;
    (status, silo.stderr())
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Runs the `silo` CLI against `silo` with `--json` and returns its parsed output; panics with
/// its stderr when it fails.
pub fn silo_cli_json(silo: &Silo, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(args)
        .arg("--json")
        .env("SILO_URL", format!("http://{}", silo.addr))
        .env("SILO_ADMIN_TOKEN", silo.token())
        .output()
        .expect("run silo");
    assert!(output.status.success(), "silo {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null)
}

/// The value of the sample `name` in `silo`'s `/metrics`.
pub async fn metric(silo: &Silo, name: &str) -> Option<f64> {
    let text = reqwest::get(silo.metrics_url()).await.expect("metrics").text().await.expect("text");
    text.lines().find_map(|line| line.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

/// An AWS SDK client for `silo` with the key `id` and `secret` (path-style, plain HTTP).
pub fn sdk_client(silo: &Silo, id: &str, secret: &str) -> aws_sdk_s3::Client {
    sdk_client_with(silo, id, secret, |config| config)
}

/// [`sdk_client`] with `tweak` applied to its configuration (retries, timeouts).
pub fn sdk_client_with(
    silo: &Silo,
    id: &str,
    secret: &str,
    tweak: impl FnOnce(aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder,
) -> aws_sdk_s3::Client {
    sdk_client_at(&format!("http://{}", silo.addr), id, secret, tweak)
}

/// [`sdk_client_with`] for the S3 endpoint at `url` (a load balancer in front of nodes).
pub fn sdk_client_at(
    url: &str,
    id: &str,
    secret: &str,
    tweak: impl FnOnce(aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder,
) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(id, secret, None, None, "silo-test"))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http());
    aws_sdk_s3::Client::from_conf(tweak(config).build())
}

/// Reproducible incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        out.extend_from_slice(blake3::hash(&[seed.to_le_bytes(), counter.to_le_bytes()].concat()).as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A `silo serve` on a fresh database `label` of the shared throwaway catalog cluster, ready,
/// with the scratch directory its data directory lives in.
pub async fn silo_on_fresh_catalog(label: &str) -> (Silo, tempfile::TempDir) {
    let url = pg_local::testing::shared().fresh_database(label).await;
    let tmp = scratch();
    let mut silo = Silo::start(&tmp.path().join("data"), &["--postgres-url", &url]);
    silo.wait_ready(Duration::from_secs(30)).await;
    (silo, tmp)
}

/// Creates `tenant` on `silo` with a key; returns the key's id and secret.
pub fn tenant_with_key(silo: &Silo, tenant: &str) -> (String, String) {
    silo_cli_json(silo, &["tenant", "create", tenant]);
    let key = silo_cli_json(silo, &["key", "create", tenant]);
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    (field("access_key_id"), field("secret_access_key"))
}

/// Runs `tests/scripts/<script>` with the project's Python (boto3, the aws CLI) against
/// `silo` with `env` (keys and the like); panics with its output and the server's log when it
/// fails.
pub async fn run_s3_script(script: &str, silo: &Silo, env: &[(&str, &str)]) {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    assert!(Path::new(python).exists(), "no {python}: run ./scripts/setup first");
    let output = tokio::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts").join(script))
        .env("SILO_S3_ENDPOINT", format!("http://{}", silo.addr))
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        silo.stderr()
    );
}

/// Writes a sealed pack `id` into `dir`: `records` incompressible chunks of `tenant` named with
/// `secret`'s keys, the n-th of `base_len + n` bytes from seed `seed + n`; returns its path.
pub fn write_pack(
    dir: &Path,
    id: i64,
    secret: &storage_node::ServerSecret,
    tenant: storage_node::TenantId,
    records: usize,
    (base_len, seed): (usize, u64),
) -> PathBuf {
    use storage_node::pack::{PackId, PackWriter, RecordHeader};
    let key = secret.chunk_key(tenant);
    let mut writer = PackWriter::create(dir, PackId(id), 1).expect("create a pack");
    for n in 0..records {
        let raw = noise(base_len + n, seed + n as u64);
        let header = RecordHeader {
            compression: storage_node::compress::Compression::None,
            tenant,
            chunk: key.chunk_id(&raw),
            raw_len: raw.len() as u32,
            stored_len: raw.len() as u32,
        };
        writer.append(&header, &raw).expect("append a record");
    }
    writer.sync().expect("sync the pack");
    writer.path().to_path_buf()
}

/// Sends the head of the presigned PUT with `Content-Length: length` and `first` bytes of its
/// body.
pub async fn raw_put(
    silo: &Silo,
    presigned: &aws_sdk_s3::presigning::PresignedRequest,
    length: u64,
    first: &[u8],
) -> tokio::net::TcpStream {
    let url = url::Url::parse(presigned.uri()).expect("url");
    let target = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let host = silo.url("").trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&host).await.expect("connect");
    let signed: String = presigned
        .headers()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {host}\r\n{signed}Content-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    use tokio::io::AsyncWriteExt;
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(first).await.expect("body");
    stream
}
