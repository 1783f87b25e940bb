//! The throwaway PostgreSQL that tests run against (feature `testing`).
//!
//! The first call to [`shared`] runs `initdb` in a fresh temporary directory and starts the
//! cluster on its unix socket and on a free loopback TCP port. Every test of the same test
//! binary shares it, each in databases of its own from [`TestPostgres::fresh_database`]. At
//! process exit the cluster is stopped and its directory removed. Tests never touch a system
//! Postgres that happens to be running.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{InstanceSpec, LocalInstance, PgBinaries, RunAs};

/// A running throwaway cluster.
#[derive(Debug)]
pub struct TestPostgres {
    instance: LocalInstance,
    dir: tempfile::TempDir,
    port: u16,
}

static SHARED: OnceLock<TestPostgres> = OnceLock::new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// The cluster shared by this test binary, started on first use.
///
/// # Panics
/// When no Postgres binaries are installed or the cluster fails to start: a test cannot run.
pub fn shared() -> &'static TestPostgres {
    SHARED.get_or_init(|| {
        let cluster =
            TestPostgres::start(false).unwrap_or_else(|err| panic!("cannot start the test Postgres: {err}"));
        // SAFETY: `stop_shared_at_exit` is a plain `extern "C"` function with no arguments.
        unsafe { libc::atexit(stop_shared_at_exit) };
        cluster
    })
}

extern "C" fn stop_shared_at_exit() {
    if let Some(cluster) = SHARED.get() {
        let _ = cluster.instance.stop();
        let _ = std::fs::remove_dir_all(cluster.dir.path());
    }
}

impl TestPostgres {
    /// A cluster of the caller's own with `fsync` on, as in production, for benchmarks. It
    /// stops when dropped.
    ///
    /// # Errors
    /// When the binaries are missing or the cluster does not start.
    pub fn durable() -> Result<Self, crate::InstanceError> {
        Self::start(true)
    }

    fn start(durable: bool) -> Result<Self, crate::InstanceError> {
        let dir = tempfile::Builder::new()
            .prefix("silo-test-pg-")
            .tempdir()
            .map_err(|source| crate::InstanceError::Io { path: std::env::temp_dir(), source })?;
        // Postgres may run as another OS user (when tests run as root): let it reach its root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(|source| crate::InstanceError::Io { path: dir.path().into(), source })?;
        let port = free_port();
        let spec = InstanceSpec {
            root: dir.path().join("pg"),
            superuser: "silo_test".into(),
            superuser_password: "test-only-password".into(),
            port,
            listen: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            settings: vec![
                ("fsync".into(), if durable { "on" } else { "off" }.into()),
                ("max_connections".into(), "300".into()),
            ],
        };
        let instance =
            LocalInstance::new(spec, PgBinaries::locate(None)?, RunAs::for_this_process("postgres")?);
        instance.ensure_initialized()?;
        instance.start()?;
        Ok(TestPostgres { instance, dir, port })
    }

    /// The TCP port the cluster listens on (at 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance, for tests of the instance machinery itself.
    pub fn instance(&self) -> &LocalInstance {
        &self.instance
    }

    /// A libpq URL for `dbname` as the superuser, over TCP.
    pub fn url(&self, dbname: &str) -> String {
        let spec = self.instance.spec();
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{dbname}",
            spec.superuser, spec.superuser_password, self.port
        )
    }

    /// Creates a new, empty database for one test and returns its URL.
    ///
    /// # Panics
    /// When the database cannot be created.
    pub async fn fresh_database(&self, label: &str) -> String {
        let n = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
        let label: String =
            label.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(30).collect();
        let name = format!("t{}_{n}_{}", std::process::id(), label.to_ascii_lowercase());
        self.instance
            .ensure_database(&name)
            .await
            .unwrap_or_else(|err| panic!("create database {name}: {err}"));
        self.url(&name)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.instance.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or(55432)
}
