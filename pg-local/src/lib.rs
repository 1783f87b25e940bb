//! Local PostgreSQL clusters: the bottom of Silo's workspace, below `storage-node` and
//! `db-manager`.
//!
//! It locates the server binaries ([`PgBinaries`]), runs `initdb` and `pg_ctl` as the OS user
//! Postgres runs as ([`RunAs`]), and watches a running cluster ([`supervise`]). db-manager runs
//! the embedded catalog server and the dedicated servers on it; with the `testing` feature,
//! `testing` is the throwaway cluster that the tests of every crate share. It depends on no
//! other crate of the workspace, so storage-node's tests use it without depending on db-manager.
//!
//! A [`LocalInstance`] is one cluster. Layout under the instance root (`<data-dir>/postgres`
//! for the embedded catalog server): `data/` is the cluster (PGDATA), `server.log` its log, and
//! the unix socket lives in the root itself. The root is 0700 and owned by the OS user Postgres
//! runs as ([`RunAs`]).
//!
//! `initdb` runs into `data.init/` and is renamed to `data/` only once complete, so a crash
//! during initialisation is simply redone. A `postmaster.pid` left by a killed process is
//! removed when its pid is not a live postgres, and a cluster still running from an earlier
//! Silo is stopped and started afresh, so neither blocks a restart.

mod binaries;
mod error;
mod os_user;
mod supervisor;
#[cfg(feature = "testing")]
pub mod testing;

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use error::MAX_SOCKET_PATH;

pub use binaries::PgBinaries;
pub use error::InstanceError;
pub use os_user::RunAs;
pub use supervisor::{InstanceHealth, SupervisorHandle, supervise};

/// What a local instance is: where it lives, who its superuser is and how it listens.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// The instance root; the cluster is `root/data`.
    pub root: PathBuf,
    /// The bootstrap superuser's name.
    pub superuser: String,
    /// The bootstrap superuser's password. It reaches `initdb` through a 0600 file that is
    /// removed right after.
    pub superuser_password: String,
    /// The port, which also names the unix socket.
    pub port: u16,
    /// The TCP address to listen on; `None` for the unix socket alone.
    pub listen: Option<IpAddr>,
    /// Extra server settings (`name`, `value`), written to `silo.conf` at every start.
    pub settings: Vec<(String, String)>,
}

/// A local PostgreSQL cluster under Silo's control.
#[derive(Debug)]
pub struct LocalInstance {
    spec: InstanceSpec,
    binaries: PgBinaries,
    run_as: RunAs,
}

impl LocalInstance {
    /// Describes an instance; nothing on disk changes until [`LocalInstance::ensure_initialized`].
    pub fn new(spec: InstanceSpec, binaries: PgBinaries, run_as: RunAs) -> Self {
        LocalInstance { spec, binaries, run_as }
    }

    /// The cluster directory (PGDATA).
    pub fn data_dir(&self) -> PathBuf {
        self.spec.root.join("data")
    }

    /// The directory that holds the unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.spec.root
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.spec.root.join("server.log")
    }

    /// The instance's description.
    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }

    /// The binaries this instance runs.
    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// Creates the cluster unless it exists. Returns whether it was created now.
    ///
    /// # Errors
    /// [`InstanceError`] when the root cannot be prepared or `initdb` fails; a half-made
    /// cluster is left in `data.init/` and redone on the next call.
    pub fn ensure_initialized(&self) -> Result<bool, InstanceError> {
        self.prepare_root()?;
        if self.data_dir().join("PG_VERSION").is_file() {
            return Ok(false);
        }
        let staging = self.spec.root.join("data.init");
        if staging.exists() {
            tracing::warn!(path = %staging.display(), "removing an initdb that did not finish");
            fs::remove_dir_all(&staging).map_err(|source| io_error(&staging, source))?;
        }
        let pwfile = self.spec.root.join(".initdb-pwfile");
        write_private(&pwfile, self.spec.superuser_password.as_bytes())
            .map_err(|source| io_error(&pwfile, source))?;
        self.run_as.give(&pwfile)?;
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(&staging)
            .arg("-U")
            .arg(&self.spec.superuser)
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
            .args(["--encoding=UTF8", "--locale=C", "--data-checksums"]);
        let result = run(initdb, "initdb");
        let _ = fs::remove_file(&pwfile);
        result?;
        let conf = staging.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).map_err(|source| io_error(&conf, source))?;
        text.push_str("\n# Silo's settings, rewritten at every start.\ninclude_if_exists = 'silo.conf'\n");
        fs::write(&conf, text).map_err(|source| io_error(&conf, source))?;
        fs::rename(&staging, self.data_dir()).map_err(|source| io_error(&staging, source))?;
        sync_dir(&self.spec.root)?;
        tracing::info!(path = %self.data_dir().display(), "created a new Postgres cluster");
        Ok(true)
    }

    /// Starts the cluster and returns the postmaster's pid.
    ///
    /// A cluster still running from an earlier Silo is stopped first, and a stale
    /// `postmaster.pid` is removed.
    ///
    /// # Errors
    /// [`InstanceError::Command`] with the tail of the server log when `pg_ctl start` fails.
    pub fn start(&self) -> Result<u32, InstanceError> {
        self.write_settings()?;
        let pid_file = self.data_dir().join("postmaster.pid");
        if let Some(pid) = self.running_pid() {
            tracing::warn!(pid, "Postgres is still running from an earlier run; restarting it");
            self.stop()?;
        } else if pid_file.exists() {
            tracing::warn!(path = %pid_file.display(), "removing a stale postmaster.pid");
            fs::remove_file(&pid_file).map_err(|source| io_error(&pid_file, source))?;
        }
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-s"]);
        run(pg_ctl, "pg_ctl start").map_err(|err| self.with_log_tail(err))?;
        let pid = self.running_pid().ok_or_else(|| {
            self.with_log_tail(InstanceError::Command {
                program: "pg_ctl start".into(),
                status: "exit 0".into(),
                output: "the server is not running after start".into(),
            })
        })?;
        tracing::info!(pid, socket_dir = %self.socket_dir().display(), port = self.spec.port, "Postgres is up");
        Ok(pid)
    }

    /// Stops the cluster with a fast shutdown (open sessions are rolled back), falling back to
    /// an immediate one. A cluster that is not running is left alone.
    ///
    /// # Errors
    /// [`InstanceError::Command`] when neither shutdown succeeds.
    pub fn stop(&self) -> Result<(), InstanceError> {
        let Some(postmaster) = self.running_pid() else {
            return Ok(());
        };
        let fast = self.pg_ctl_stop("fast");
        let stopped = if fast.is_ok() || self.running_pid().is_none() {
            Ok(())
        } else {
            tracing::warn!("fast shutdown failed; stopping Postgres immediately");
            self.pg_ctl_stop("immediate")
        };
        // pg_ctl returns once `postmaster.pid` is gone, which the postmaster removes just
        // before it exits: wait for the exit itself, so that a caller that exits next leaves
        // no postgres behind it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_live_postgres(postmaster) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if is_live_postgres(postmaster) {
            tracing::warn!(pid = postmaster, "the postmaster has not exited 5 s after its shutdown");
        } else if stopped.is_ok() {
            tracing::info!("Postgres stopped");
        }
        stopped
    }

    /// The postmaster's pid while it runs: `postmaster.pid` names a live, non-zombie
    /// `postgres` process.
    pub fn running_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse::<u32>().ok()?;
        is_live_postgres(pid).then_some(pid)
    }

    /// Client settings for `dbname` as the superuser, over the unix socket.
    pub fn client_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.spec.port)
            .user(&self.spec.superuser)
            .password(&self.spec.superuser_password)
            .dbname(dbname);
        config
    }

    /// Creates the database `name` unless it exists.
    ///
    /// # Errors
    /// [`InstanceError::Connect`] when the server cannot be reached or refuses.
    pub async fn ensure_database(&self, name: &str) -> Result<(), InstanceError> {
        let (client, connection) = self.client_config("postgres").connect(tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await?;
        if exists.is_none() {
            let ident = postgres_protocol::escape::escape_identifier(name);
            client.batch_execute(&format!("CREATE DATABASE {ident}")).await?;
            tracing::info!(database = name, "created database");
        }
        drop(client);
        let _ = driver.await;
        Ok(())
    }

    fn prepare_root(&self) -> Result<(), InstanceError> {
        let root = &self.spec.root;
        let socket = root.join(format!(".s.PGSQL.{}", self.spec.port));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(InstanceError::SocketPathTooLong { path: socket.display().to_string() });
        }
        if !root.is_dir() {
            fs::create_dir_all(root).map_err(|source| io_error(root, source))?;
        }
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(|source| io_error(root, source))?;
        self.run_as.give(root)?;
        self.run_as.check_reachable(root)
    }

    fn write_settings(&self) -> Result<(), InstanceError> {
        let listen = self.spec.listen.map(|ip| ip.to_string()).unwrap_or_default();
        let mut settings = vec![
            ("listen_addresses".to_string(), listen),
            ("port".to_string(), self.spec.port.to_string()),
            ("unix_socket_directories".to_string(), self.socket_dir().display().to_string()),
            ("unix_socket_permissions".to_string(), "0700".to_string()),
            ("password_encryption".to_string(), "scram-sha-256".to_string()),
        ];
        settings.extend(self.spec.settings.iter().cloned());
        let mut text =
            String::from("# Written by Silo at every start of this instance; edits here are lost.\n");
        for (name, value) in &settings {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let path = self.data_dir().join("silo.conf");
        fs::write(&path, text).map_err(|source| io_error(&path, source))?;
        self.run_as.give(&path)
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), InstanceError> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("stop").arg("-D").arg(self.data_dir()).args(["-m", mode, "-w", "-t", "60", "-s"]);
        run(pg_ctl, "pg_ctl stop")
    }

    /// A command for the Postgres binary `name`, as the Postgres OS user, with a clean
    /// environment (no stray `PGDATA` or `PGPORT`) and the instance root as its directory.
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.binaries.path(name));
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C")
            .current_dir(&self.spec.root)
            .stdin(Stdio::null());
        self.run_as.apply(&mut command);
        command
    }

    fn with_log_tail(&self, err: InstanceError) -> InstanceError {
        match err {
            InstanceError::Command { program, status, output } => {
                let tail = log_tail(&self.log_path(), 12);
                InstanceError::Command { program, status, output: format!("{output}\nserver log:\n{tail}") }
            }
            other => other,
        }
    }
}

/// The last `lines` lines of the file at `path`, or an empty string.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn run(mut command: Command, program: &str) -> Result<(), InstanceError> {
    let Output { status, stdout, stderr } = command
        .output()
        .map_err(|source| InstanceError::Io { path: PathBuf::from(command.get_program()), source })?;
    if status.success() {
        return Ok(());
    }
    let output = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
    Err(InstanceError::Command {
        program: program.into(),
        status: status.to_string(),
        output: output.trim().into(),
    })
}

/// Whether `pid` is a running (not zombie) process named `postgres`.
fn is_live_postgres(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The format is `pid (comm) state ...`; comm may hold spaces, so split at the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map(|(_, comm)| comm).unwrap_or_default();
    let state = tail.trim_start().chars().next().unwrap_or('?');
    comm == "postgres" && !matches!(state, 'Z' | 'X')
}

/// Writes `contents` to a new file at `path` that only its owner can read (0600 from the
/// moment it exists), replacing any file an interrupted run left there.
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn sync_dir(path: &Path) -> Result<(), InstanceError> {
    fs::File::open(path).and_then(|dir| dir.sync_all()).map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: io::Error) -> InstanceError {
    InstanceError::Io { path: path.to_path_buf(), source }
}
