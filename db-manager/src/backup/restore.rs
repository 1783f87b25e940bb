//! Restoring, verifying and downloading backups. Every path streams the archive out of the
//! chunk store, which verifies each chunk before it yields a byte: a damaged backup fails with
//! an integrity error and never produces a silently wrong database.
//!
//! A restore runs the tenant's code (CHECK constraints, index expressions, triggers of the
//! archive), so `pg_restore` connects as a worker role (see [`crate::workers`]): for a restore,
//! a member of the target database's owner role; for a verification, a role with no rights
//! that owns the scratch database. An in-place restore is recorded before it drops anything,
//! and a start after a crash puts the safety backup back.

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use storage_node::store::StoreError;

use super::Backups;
use super::pg_restore::{self, PgRestoreError, RestoreTarget};
use crate::DbError;
use crate::databases::{CreateRequest, Credentials};
use crate::instance::PgBinaries;
use crate::names::ident;
use crate::states::{BackupKind, DatabaseState};
use crate::workers::Worker;
use crate::{faults, provision, read_only};

/// Where a restore goes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// A new database of the same tenant, with fresh credentials.
    #[serde(default)]
    pub into: Option<String>,
    /// Replace the source database (a safety backup is taken first).
    #[serde(default)]
    pub in_place: bool,
}

/// What a restore made.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Restored {
    /// A new database and its credentials.
    New(Credentials),
    /// The source database, replaced; `safety_backup` holds what it was before.
    InPlace { tenant: String, name: String, safety_backup: i64 },
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backup_id: i64,
    pub ok: bool,
    pub tables: usize,
    pub mismatches: Vec<Mismatch>,
}

/// A table whose restored row count differs from the one counted at backup time.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub table: String,
    pub expected: i64,
    pub found: Option<i64>,
}

impl VerifyReport {
    pub fn summary(&self) -> String {
        let names: Vec<String> = self
            .mismatches
            .iter()
            .map(|m| {
                format!(
                    "{} (expected {}, found {})",
                    m.table,
                    m.expected,
                    m.found.map_or("none".into(), |f| f.to_string())
                )
            })
            .collect();
        format!("{} of {} tables differ: {}", names.len(), self.tables, names.join(", "))
    }
}

impl Backups {
    /// Streams a complete backup's archive (a `pg_dump -Fc` file). Returns its size and bytes.
    ///
    /// # Errors
    /// [`DbError::BackupNotFound`], [`DbError::BackupNotComplete`]; integrity errors arrive as
    /// items of the stream.
    pub async fn backup_archive(
        &self,
        id: i64,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StoreError>>), DbError> {
        let (stored, object) = self.complete_backup(id).await?;
        let read = self.store.read(stored.tenant_id, object, None).await?;
        Ok((read.size, read.stream))
    }

    /// Restores a backup into a new database of its tenant, or in place.
    ///
    /// # Errors
    /// [`DbError::Exists`] when the new name is taken; [`DbError::Integrity`] when the backup is
    /// damaged; [`DbError::Restore`] when `pg_restore` fails. A failed restore into a new
    /// database drops it again; a failed in-place restore puts the safety backup back.
    pub async fn restore_backup(&self, id: i64, request: RestoreRequest) -> Result<Restored, DbError> {
        let (stored, _) = self.complete_backup(id).await?;
        let tenant = stored.info.tenant.clone();
        match (request.into, request.in_place) {
            (Some(into), false) => {
                let plan = if self.settings.plans.get(&stored.plan).is_some() {
                    stored.plan.clone()
                } else {
                    "small".into()
                };
                let create =
                    CreateRequest { name: into.clone(), plan, zone: None, deletion_protection: false };
                let credentials = self.databases.create_database(&tenant, create, None).await?;
                let row = self.databases.row(&tenant, &into).await?;
                if let Err(err) = self.restore_as_owner(id, &row).await {
                    tracing::error!(backup = id, database = %into, error = %err, "restore failed; dropping the new database");
                    if let Err(drop_err) = self.delete_database(&tenant, &into, true).await {
                        tracing::error!(database = %into, error = %drop_err, "cannot drop the half-restored database; delete it by hand");
                    }
                    return Err(err);
                }
                tracing::info!(backup = id, tenant, database = %into, "restored a backup into a new database");
                Ok(Restored::New(credentials))
            }
            (None, true) => {
                if !stored.info.database_exists {
                    return Err(DbError::InvalidRequest(format!(
                        "database {:?} no longer exists; restore into a new one instead",
                        stored.info.database
                    )));
                }
                let row = self.databases.row(&tenant, &stored.info.database).await?;
                let Some(_lock) = self.ctx.lock_database(row.id).await? else {
                    return Err(DbError::Busy { name: row.name.clone() });
                };
                let safety = self.backup_now(&row, BackupKind::Safety).await?;
                self.set_restore_state(row.id, DatabaseState::Restoring, Some(safety.id)).await?;
                if let Err(err) = self.replace_contents(id, &row).await {
                    tracing::error!(backup = id, error = %err, safety = safety.id, "in-place restore failed; putting the safety backup back");
                    self.roll_back_restore(&row, safety.id).await.map_err(|rollback| DbError::Restore {
                        message: format!(
                            "{err}; putting back safety backup {} failed too ({rollback}): restore it by hand",
                            safety.id
                        ),
                    })?;
                    return Err(err);
                }
                self.set_restore_state(row.id, DatabaseState::Active, None).await?;
                tracing::info!(backup = id, tenant, database = %row.name, safety = safety.id, "restored a backup in place");
                Ok(Restored::InPlace { tenant, name: row.name, safety_backup: safety.id })
            }
            _ => Err(DbError::InvalidRequest("give either into (a new database) or in_place".into())),
        }
    }

    /// Records where an in-place restore stands: `restoring` (with its safety backup) before
    /// anything is dropped, `active` when done, `restore_failed` when even the rollback failed.
    async fn set_restore_state(
        &self,
        id: i64,
        state: DatabaseState,
        safety: Option<i64>,
    ) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        client
            .execute(
                "UPDATE tenant_databases SET state = $2, restore_safety_backup = $3 WHERE id = $1",
                &[&id, &state, &safety],
            )
            .await?;
        Ok(())
    }

    /// Puts the safety backup back after a failed or interrupted in-place restore; the state
    /// ends `active`, or `restore_failed` (with an event naming the safety backup) when that
    /// fails too.
    async fn roll_back_restore(&self, row: &crate::databases::Row, safety: i64) -> Result<(), DbError> {
        match self.replace_contents(safety, row).await {
            Ok(()) => {
                self.set_restore_state(row.id, DatabaseState::Active, None).await?;
                self.ctx
                    .record_event(row.id, "restore_rolled_back", &format!("to safety backup {safety}"))
                    .await
            }
            Err(err) => {
                self.set_restore_state(row.id, DatabaseState::RestoreFailed, Some(safety)).await?;
                let detail = format!("putting back safety backup {safety} failed: {err}; restore it by hand");
                self.ctx.record_event(row.id, "restore_failed", &detail).await?;
                Err(err)
            }
        }
    }

    /// At start: in-place restores that a crash interrupted are rolled back to their safety
    /// backups (or reported as `restore_failed`).
    pub(crate) async fn finish_interrupted_restores(&self) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, restore_safety_backup FROM tenant_databases \
                 WHERE state = $1 AND restore_safety_backup IS NOT NULL",
                &[&DatabaseState::Restoring],
            )
            .await?;
        drop(client);
        for found in rows {
            let (id, safety): (i64, i64) = (found.get(0), found.get(1));
            let Some(_lock) = self.ctx.lock_database(id).await? else { continue };
            let row = self.databases.row_by_id(id).await?;
            tracing::warn!(database = %row.name, tenant = %row.tenant, safety, "an in-place restore was interrupted; putting the safety backup back");
            if let Err(err) = self.roll_back_restore(&row, safety).await {
                tracing::error!(database = %row.name, safety, error = %err, "cannot put the safety backup back; restore it by hand");
            }
        }
        Ok(())
    }

    /// Drops and recreates the database (same roles, same password, full write access), then
    /// restores `backup` into it.
    async fn replace_contents(&self, backup: i64, row: &crate::databases::Row) -> Result<(), DbError> {
        let target = row.target();
        let plan = self.settings.plans.require(&row.plan)?.clone();
        let admin = self.ctx.admin(&row.server).await?;
        provision::drop_database(&admin, &row.server.name, &row.pg_name).await?;
        faults::crash_point("restore.after_drop");
        provision::ensure_database(&admin, &target, &plan).await?;
        let inside = self.ctx.connect_server(&row.server, Some(&row.pg_name)).await?;
        provision::own_public_schema(&inside, &target).await?;
        // Over quota or not before, the sampler decides anew.
        read_only::leave(&admin, &inside, &target, &[]).await?;
        drop((inside, admin));
        self.ctx.record_event(row.id, "restored", &format!("from backup {backup}")).await?;
        self.restore_as_owner(backup, row).await
    }

    /// Restores `backup` into the row's database as a worker that is a member of its owner
    /// role, acting as the owner so that what it makes belongs to the owner.
    async fn restore_as_owner(&self, backup: i64, row: &crate::databases::Row) -> Result<(), DbError> {
        let owner = row.target().owner();
        let worker = self.workers.create_worker(&row.server, Some(&owner)).await?;
        let outcome = self.pg_restore(backup, &worker, &row.pg_name, Some(&owner)).await;
        self.workers.drop_worker(worker, Some(&row.pg_name)).await;
        outcome
    }

    /// Streams backup `id` into `pg_restore` on `dbname`, connected as `worker` (acting as
    /// `role` when given).
    async fn pg_restore(
        &self,
        id: i64,
        worker: &Worker,
        dbname: &str,
        role: Option<&str>,
    ) -> Result<(), DbError> {
        let (_, archive) = self.backup_archive(id).await?;
        let reach = self.workers.worker_config(worker, dbname).await?;
        let env = self.workers.worker_tool_env(&reach, dbname)?;
        let binaries = PgBinaries::locate(self.settings.bin_dir.as_deref())?;
        let target = RestoreTarget { binaries: &binaries, env, dbname, role };
        match pg_restore::stream_into(target, archive).await {
            Ok(_) => Ok(()),
            Err(PgRestoreError::Damaged(message)) => Err(DbError::Integrity { id, message }),
            Err(err) => Err(DbError::Restore { message: err.to_string() }),
        }
    }

    /// Restores a backup into a scratch database on its database's server, compares every
    /// table's row count with the one counted at backup time, and drops the scratch database.
    ///
    /// # Errors
    /// [`DbError::Integrity`] for a damaged backup, [`DbError::Restore`] when it does not
    /// restore; a restore with wrong counts is an `Ok` report with `ok: false`.
    pub async fn verify_backup(&self, id: i64) -> Result<VerifyReport, DbError> {
        let (stored, _) = self.complete_backup(id).await?;
        let server = crate::servers::get(self.ctx.pool(), &stored.info.server).await?;
        let scratch =
            format!("silo_verify_{id}_{}", crate::provision::generate_password()[..8].to_ascii_lowercase());
        // The worker owns the scratch database and has no other right anywhere.
        // The admin pool first: a worker made before a failure to reach it would be left behind.
        let admin = self.ctx.admin(&server).await?;
        let worker = self.workers.create_worker(&server, None).await?;
        let made = admin
            .batch_execute(&format!("CREATE DATABASE {} OWNER {}", ident(&scratch), ident(&worker.name)))
            .await
            .map_err(DbError::on_server(&server.name));
        let outcome = match made {
            Ok(()) => self.verify_in(id, &worker, &scratch, stored.table_counts.as_ref()).await,
            Err(err) => Err(err),
        };
        let dropped = provision::drop_database(&admin, &server.name, &scratch).await;
        if let Err(err) = dropped {
            tracing::warn!(database = scratch, error = %err, "cannot drop a verification scratch database");
        }
        drop(admin);
        self.workers.drop_worker(worker, None).await;
        let report = outcome?;
        tracing::info!(backup = id, ok = report.ok, tables = report.tables, "verified backup");
        Ok(report)
    }

    async fn verify_in(
        &self,
        id: i64,
        worker: &Worker,
        scratch: &str,
        counts: Option<&serde_json::Value>,
    ) -> Result<VerifyReport, DbError> {
        // A NOINHERIT owner does not get `pg_database_owner`'s rights on `public`: give it the
        // schema by name (the database is still empty, so no tenant code is there to run).
        let empty = self.ctx.connect_server(worker.server(), Some(scratch)).await?;
        empty
            .batch_execute(&format!("ALTER SCHEMA public OWNER TO {}", ident(&worker.name)))
            .await
            .map_err(DbError::on_server(&worker.server().name))?;
        drop(empty);
        self.pg_restore(id, worker, scratch, None).await?;
        let inside =
            self.workers.worker_config(worker, scratch).await?.connect(&worker.server().name).await?;
        let expected = counts.and_then(|c| c.as_object()).cloned().unwrap_or_default();
        let mut mismatches = Vec::new();
        for (table, count) in &expected {
            let expected = count.as_i64().unwrap_or(-1);
            // Qualified, and `search_path` is pinned: `count` is always pg_catalog's.
            let found = match inside.query_one(&format!("SELECT pg_catalog.count(*) FROM {table}"), &[]).await
            {
                Ok(row) => Some(row.get::<_, i64>(0)),
                Err(_) => None,
            };
            if found != Some(expected) {
                mismatches.push(Mismatch { table: table.clone(), expected, found });
            }
        }
        Ok(VerifyReport { backup_id: id, ok: mismatches.is_empty(), tables: expected.len(), mismatches })
    }
}
