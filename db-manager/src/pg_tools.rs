//! Running the Postgres client tools (`pg_dump`, `pg_restore`): a command with an empty
//! environment, the libpq variables of one connection as the whole of what it gets, and the
//! tail of its stderr for error messages. Backups, restores and the worker roles share these.

use tokio::io::AsyncReadExt;
use tokio_postgres::config::Host;

use crate::instance::PgBinaries;

/// Where the pg tools connect, as libpq environment variables (so no password is on a command
/// line). The tools get these and nothing else of Silo's environment (see [`pg_tool`]).
pub fn pg_env(config: &tokio_postgres::Config, dbname: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("PGDATABASE", dbname.to_string()),
        ("PGCONNECT_TIMEOUT", "10".into()),
        ("PGAPPNAME", "silo".into()),
        ("LC_ALL", "C".into()),
    ];
    match config.get_hosts().first() {
        Some(Host::Tcp(host)) => env.push(("PGHOST", host.clone())),
        Some(Host::Unix(path)) => env.push(("PGHOST", path.display().to_string())),
        None => {}
    }
    if let Some(port) = config.get_ports().first() {
        env.push(("PGPORT", port.to_string()));
    }
    if let Some(user) = config.get_user() {
        env.push(("PGUSER", user.to_string()));
    }
    if let Some(password) = config.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(password).into_owned()));
    }
    env
}

/// A command for the pg tool `name` (pg_dump, pg_restore) with an empty environment: Silo's
/// own (`SILO_*` secrets, stray `PG*` variables that would redirect or change a connection)
/// never reaches it. The caller adds what [`pg_env`] gives.
pub fn pg_tool(binaries: &PgBinaries, name: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binaries.path(name));
    command.env_clear();
    command
}

/// Reads a child's stderr to a string (the last 4 KiB), for error messages.
pub(crate) fn collect_stderr(stderr: Option<tokio::process::ChildStderr>) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text).await;
        }
        let start = text.len().saturating_sub(4096);
        text[text.char_indices().map(|(i, _)| i).find(|i| *i >= start).unwrap_or(0)..].trim().to_string()
    })
}
