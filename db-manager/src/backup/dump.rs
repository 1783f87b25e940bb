//! One backup: `pg_dump -Fc -Z0` of a database, streamed into the chunk store.
//!
//! The dump runs in a snapshot that Silo exports and holds open meanwhile, and in that same
//! snapshot Silo counts every table's rows, so that a later verification can compare exact
//! numbers. Both connect as a worker role with the tenant's own rights (see
//! [`crate::workers`]): a dump runs the tenant's code, and never with the admin's rights. Nothing is staged on disk. A dump that fails, or a `pg_dump` that exits non-zero
//! after its last byte, never becomes an object: the reader fails at the end, the upload is
//! abandoned, and GC reclaims its chunks.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use storage_node::store::{Ingested, PutOptions, StoreError, StoredObject};
use tokio_util::io::{ReaderStream, StreamReader};

use super::{BACKUP_LOCK_CLASS, BackupInfo, Backups};
use crate::databases::Row;
use crate::instance::PgBinaries;
use crate::pg_tools::{collect_stderr, pg_tool};
use crate::states::{BackupKind, BackupStatus};
use crate::workers::Worker;
use crate::{DbError, faults};

/// The archive that `pg_dump -Fc -Z0` writes, as a reader. A non-zero exit of `pg_dump` fails
/// the read at its very end, so a store never commits a dump that `pg_dump` did not finish.
pub(crate) fn dump_reader(
    binaries: &PgBinaries,
    extra_args: &[String],
    env: Vec<(&'static str, String)>,
) -> Result<impl tokio::io::AsyncRead + Unpin + Send + 'static, String> {
    let mut child = pg_tool(binaries, "pg_dump")
        .args(["--format=custom", "--compress=0", "--no-password"])
        .args(extra_args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot run pg_dump: {err}"))?;
    let stderr = collect_stderr(child.stderr.take());
    let stdout = child.stdout.take().ok_or("pg_dump has no stdout")?;
    let verdict = futures::stream::once(async move {
        let status = child.wait().await;
        let message = stderr.await.unwrap_or_default();
        match status {
            Ok(status) if status.success() => None,
            Ok(status) => {
                Some(Err(std::io::Error::other(format!("pg_dump exited with {status}: {message}"))))
            }
            Err(err) => Some(Err(err)),
        }
    })
    .filter_map(|item| async move { item });
    let archive = ReaderStream::with_capacity(stdout, 1 << 20).chain(verdict);
    Ok(StreamReader::new(Box::pin(archive) as futures::stream::BoxStream<'static, std::io::Result<Bytes>>))
}

impl Backups {
    /// Takes one backup of `row` now (`kind`: scheduled, manual, final or safety), under the
    /// database's backup lease.
    ///
    /// # Errors
    /// [`DbError::BackupBusy`] when another run holds the lease; the backup's own failure is
    /// recorded (status `failed`, with the reason) and returned as [`DbError::Dump`].
    pub(crate) async fn backup_now(&self, row: &Row, kind: BackupKind) -> Result<BackupInfo, DbError> {
        let Some(_lease) = self.ctx.lock(BACKUP_LOCK_CLASS, row.id).await? else {
            return Err(DbError::BackupBusy { name: row.name.clone() });
        };
        let admin = self.ctx.admin(&row.server).await?;
        let version: String = admin
            .query_one("SHOW server_version", &[])
            .await
            .map_err(DbError::on_server(&row.server.name))?
            .get(0);
        drop(admin);
        let expires = match kind {
            BackupKind::Final => Some(self.settings.final_backup_retention),
            BackupKind::Safety => Some(Duration::from_secs(7 * 24 * 3600)),
            BackupKind::Scheduled | BackupKind::Manual => None,
        };
        let client = self.ctx.pool().get().await?;
        let id: i64 = client
            .query_one(
                "INSERT INTO database_backups (tenant_id, database_id, database_name, plan, server_name, \
                 server_version, kind, status, expires_at) \
                 SELECT tenant_id, id, name, plan, $2, $3, $4, $6, now() + make_interval(secs => $5) \
                 FROM tenant_databases WHERE id = $1 RETURNING id",
                &[
                    &row.id,
                    &row.server.name,
                    &version,
                    &kind,
                    &expires.map(|e| e.as_secs_f64()),
                    &BackupStatus::Running,
                ],
            )
            .await?
            .get(0);
        drop(client);
        tracing::info!(backup = id, tenant = %row.tenant, database = %row.name, %kind, "backup started");
        let outcome = match self.dump_into_store(row).await {
            Ok((ingested, counts)) => self.commit_backup(id, ingested, counts).await,
            Err(err) => Err(err),
        };
        let client = self.ctx.pool().get().await?;
        match outcome {
            Ok(stored) => {
                drop(client);
                tracing::info!(
                    backup = id, tenant = %row.tenant, database = %row.name, bytes = stored.size,
                    new_stored_bytes = stored.new_stored_bytes, "backup complete"
                );
                self.backup(id).await
            }
            Err(err) => {
                let message = err.to_string();
                client
                    .execute(
                        "UPDATE database_backups SET status = $3, finished_at = now(), error = $2 WHERE id = $1",
                        &[&id, &message, &BackupStatus::Failed],
                    )
                    .await?;
                tracing::error!(backup = id, tenant = %row.tenant, database = %row.name, error = %message, "backup failed");
                let database = format!("{}/{}", row.tenant, row.name);
                match err {
                    DbError::Store(StoreError::QuotaExceeded { .. }) => {
                        Err(DbError::BackupOverQuota { database, message })
                    }
                    _ => Err(DbError::Dump { database, message }),
                }
            }
        }
    }

    /// Commits the dump as an object and marks backup `id` complete in one catalog
    /// transaction, so that a crash leaves either both or neither (never an object that no
    /// backup names). An ingest that is not committed is abandoned; GC reclaims its bytes.
    async fn commit_backup(
        &self,
        id: i64,
        ingested: Ingested,
        counts: serde_json::Value,
    ) -> Result<StoredObject, DbError> {
        let committed = async {
            let mut client = self.ctx.pool().get().await?;
            let txn = client.transaction().await?;
            let stored = self.store.commit(&txn, &ingested).await?;
            txn.execute(
                "WITH done AS (UPDATE database_backups SET status = $6, finished_at = now(), \
                 logical_bytes = $2, new_stored_bytes = $3, object_id = $4, table_counts = $5 WHERE id = $1 \
                 RETURNING database_id, started_at) \
                 UPDATE tenant_databases d SET last_backup_at = done.started_at FROM done WHERE d.id = done.database_id",
                &[
                    &id,
                    &(stored.size as i64),
                    &(stored.new_stored_bytes as i64),
                    &stored.id.0,
                    &counts,
                    &BackupStatus::Complete,
                ],
            )
            .await?;
            faults::crash_point("backup.before_commit");
            txn.commit().await?;
            Ok::<_, DbError>(stored)
        }
        .await;
        if committed.is_err() {
            self.store.abandon(ingested).await;
        }
        committed
    }

    /// Dumps the database in an exported snapshot, counting its tables' rows in the same one, as
    /// a worker role that is a member of the database's owner role and nothing else. The dump
    /// is ingested (durable in packs) but not yet an object.
    async fn dump_into_store(&self, row: &Row) -> Result<(Ingested, serde_json::Value), DbError> {
        let owner = row.target().owner();
        let worker = self.workers.create_worker(&row.server, Some(&owner)).await?;
        let outcome = self.dump_as(row, &worker).await;
        self.workers.drop_worker(worker, Some(&row.pg_name)).await;
        outcome
    }

    async fn dump_as(&self, row: &Row, worker: &Worker) -> Result<(Ingested, serde_json::Value), DbError> {
        let server = &row.server.name;
        let reach = self.workers.worker_config(worker, &row.pg_name).await?;
        let snapshot_session = reach.connect(server).await?;
        snapshot_session
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(DbError::on_server(server))?;
        let snapshot: String = snapshot_session
            .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
            .await
            .map_err(DbError::on_server(server))?
            .get(0);
        let tables: Vec<String> = snapshot_session
            .query(
                "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
                 ORDER BY 1",
                &[],
            )
            .await
            .map_err(DbError::on_server(server))?
            .iter()
            .map(|r| r.get(0))
            .collect();

        let binaries = PgBinaries::locate(self.settings.bin_dir.as_deref())?;
        let env = self.workers.worker_tool_env(&reach, &row.pg_name)?;
        let reader = dump_reader(&binaries, &[format!("--snapshot={snapshot}")], env)
            .map_err(|message| DbError::Dump { database: row.name.clone(), message })?;
        let tenant = row.tenant_id;
        let put = self.store.ingest(tenant, reader, PutOptions::default());
        let count = async {
            let mut counts = serde_json::Map::new();
            for table in &tables {
                // Qualified, and `search_path` is pinned: `count` is always pg_catalog's.
                let n: i64 = snapshot_session
                    .query_one(&format!("SELECT pg_catalog.count(*) FROM {table}"), &[])
                    .await
                    .map_err(DbError::on_server(server))?
                    .get(0);
                counts.insert(table.clone(), n.into());
            }
            Ok::<_, DbError>(serde_json::Value::Object(counts))
        };
        let (ingested, counts) = tokio::join!(put, count);
        let _ = snapshot_session.batch_execute("COMMIT").await;
        let ingested = ingested.map_err(|err| match err {
            quota @ StoreError::QuotaExceeded { .. } => DbError::Store(quota),
            other => DbError::Dump { database: row.name.clone(), message: other.to_string() },
        })?;
        match counts {
            Ok(counts) => Ok((ingested, counts)),
            Err(err) => {
                // Without its counts the backup cannot be verified: it does not count.
                self.store.abandon(ingested).await;
                Err(err)
            }
        }
    }
}
