//! Why a local instance could not be set up, started, stopped or kept running.

use std::io;
use std::path::PathBuf;

/// The longest unix socket path the kernel accepts (`sun_path` is 108 bytes, NUL included).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Why a local instance could not be set up, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {searched}. On Debian \
         or Ubuntu run `apt-get install postgresql`; or pass --postgres-bin-dir, or \
         --postgres-url to use an existing server"
    )]
    BinariesNotFound { searched: String },
    #[error("{0}")]
    OsUser(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("`{program}` failed ({status}): {output}")]
    Command { program: String, status: String, output: String },
    #[error(
        "the unix socket path {path} is longer than the {MAX_SOCKET_PATH} bytes the kernel allows; use a shorter data directory"
    )]
    SocketPathTooLong { path: String },
    #[error("cannot connect to the local instance: {}", describe(.0))]
    Connect(#[from] tokio_postgres::Error),
    #[error("a background task failed: {0}")]
    Task(String),
    #[error("Postgres died and {attempts} restarts failed; the last error: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// A Postgres error as the server gave it (severity, message and SQLSTATE), the way
/// `storage_node::catalog::describe` words catalog errors; other errors as they display.
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => err.to_string(),
    }
}
