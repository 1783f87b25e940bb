//! The one `pg_restore` pipeline: a `pg_dump -Fc` archive streamed into `pg_restore` on one
//! database, all or nothing. Restores and verifications of client databases
//! ([`super::restore`]) and `silo catalog restore` both run it.
//!
//! `pg_restore` starts with an empty environment (see [`pg_tool`]): only the libpq variables the
//! caller gives reach it. The archive is read as it streams in; at the first item that fails
//! (a damaged chunk), `pg_restore` is killed before it sees the end of its input, so its single
//! transaction never commits.

use std::fmt::Display;
use std::process::{ExitStatus, Stdio};

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::instance::PgBinaries;
use crate::pg_tools::{collect_stderr, pg_tool};

/// How every restore runs `pg_restore`: objects owned by whoever restores (the database's
/// role), no grants of the source's roles, all or nothing.
pub const RESTORE_ARGS: [&str; 5] =
    ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", "--no-password"];

/// The database a dump goes into, and how `pg_restore` reaches it.
pub struct RestoreTarget<'a> {
    pub binaries: &'a PgBinaries,
    /// The libpq variables (see [`crate::pg_tools::pg_env`]): the whole environment `pg_restore` gets.
    pub env: Vec<(&'static str, String)>,
    pub dbname: &'a str,
    /// The role to act as (`--role`), if any.
    pub role: Option<&'a str>,
}

/// Why a restore did not commit.
#[derive(Debug, thiserror::Error)]
pub enum PgRestoreError {
    #[error("cannot run pg_restore: {0}")]
    Spawn(std::io::Error),
    #[error("pg_restore has no stdin")]
    NoStdin,
    /// The archive failed to read (its message); `pg_restore` was stopped.
    #[error("{0}")]
    Damaged(String),
    #[error("{0}")]
    Wait(std::io::Error),
    #[error("pg_restore exited with {status}: {stderr}")]
    Failed { status: ExitStatus, stderr: String },
}

/// Streams `archive` into `pg_restore` on `target` and returns how many bytes it was given.
///
/// # Errors
/// [`PgRestoreError::Damaged`] when an item of `archive` fails; the others when `pg_restore`
/// cannot run or does not succeed (its stderr's end is in the error).
pub async fn stream_into<B, E>(
    target: RestoreTarget<'_>,
    archive: impl Stream<Item = Result<B, E>>,
) -> Result<u64, PgRestoreError>
where
    B: AsRef<[u8]>,
    E: Display,
{
    let mut command = pg_tool(target.binaries, "pg_restore");
    command.args(RESTORE_ARGS);
    command.arg(format!("--dbname={}", target.dbname));
    if let Some(role) = target.role {
        command.arg(format!("--role={role}"));
    }
    let mut child = command
        .envs(target.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(PgRestoreError::Spawn)?;
    let stderr = collect_stderr(child.stderr.take());
    let mut stdin = child.stdin.take().ok_or(PgRestoreError::NoStdin)?;
    let mut archive = std::pin::pin!(archive);
    let mut written = 0u64;
    while let Some(piece) = archive.next().await {
        match piece {
            Ok(bytes) => {
                if stdin.write_all(bytes.as_ref()).await.is_err() {
                    break; // pg_restore stopped reading; its exit status says why.
                }
                written += bytes.as_ref().len() as u64;
            }
            Err(err) => {
                let _ = child.kill().await;
                return Err(PgRestoreError::Damaged(err.to_string()));
            }
        }
    }
    drop(stdin);
    let status = child.wait().await.map_err(PgRestoreError::Wait)?;
    let stderr = stderr.await.unwrap_or_default();
    if !status.success() {
        return Err(PgRestoreError::Failed { status, stderr });
    }
    Ok(written)
}
