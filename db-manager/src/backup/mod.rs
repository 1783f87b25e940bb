//! Backups of client databases into the deduplicating chunk store.
//!
//! A backup is `pg_dump -Fc -Z0` streamed straight into the chunk store as an object of the
//! tenant that no bucket names, so S3 keys can neither see nor change it; uncompressed, each
//! day's dump shares its unchanged chunks with the day before. [`run`] picks what is due and
//! runs it under a per-database lease, [`dump`] takes one backup, [`retention`] prunes by the
//! plan's GFS policy, [`restore`] restores, verifies and downloads, and [`pg_restore`] is the
//! one pipeline that streams a dump into `pg_restore` (for `silo catalog restore` too), and
//! [`delete`] deletes a database behind its final backup.
//!
//! [`Backups`] is the service: it sits above [`Databases`] (it looks rows up, creates the
//! database a restore goes into, and deletes databases after their final backup) and shares
//! the [`Workers`] with it; nothing below it calls back up.

pub mod catalog;
mod delete;
pub mod dump;
pub mod pg_restore;
pub mod restore;
pub mod retention;
pub mod run;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use storage_node::TenantId;
use storage_node::store::{ChunkStore, ObjectId};

use crate::DbError;
use crate::context::Context;
use crate::databases::Databases;
use crate::plans::Plans;
use crate::states::{BackupKind, BackupStatus};
use crate::timestamp;
use crate::workers::Workers;

/// Advisory-lock class of backups ("BK"): one backup of a database at a time, across replicas.
pub(crate) const BACKUP_LOCK_CLASS: i32 = 0x424B;

/// What backups need of the manager's settings.
#[derive(Debug, Clone)]
pub(crate) struct BackupSettings {
    pub plans: Plans,
    /// How long final backups (taken before a delete) are kept.
    pub final_backup_retention: Duration,
    /// How to reach Silo's own catalog database, for its backups.
    pub catalog: tokio_postgres::Config,
    /// Where the offline manifests of catalog backups go.
    pub catalog_backups_dir: PathBuf,
    /// Where the pg tools are (`None`: on the `PATH`).
    pub bin_dir: Option<PathBuf>,
}

/// Backups of client databases and of the catalog: take, run, prune, restore, verify.
pub struct Backups {
    ctx: Arc<Context>,
    /// Where backups are stored: the tenants' chunk store.
    store: ChunkStore,
    databases: Arc<Databases>,
    workers: Arc<Workers>,
    settings: BackupSettings,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// A backup as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub id: i64,
    pub tenant: String,
    pub database: String,
    /// Whether the database still exists.
    pub database_exists: bool,
    pub server: String,
    pub server_version: Option<String>,
    pub kind: BackupKind,
    pub status: BackupStatus,
    #[serde(serialize_with = "timestamp::serialize")]
    pub started_at: time::OffsetDateTime,
    #[serde(serialize_with = "timestamp::option::serialize")]
    pub finished_at: Option<time::OffsetDateTime>,
    pub logical_bytes: Option<i64>,
    /// What this backup added to the store after dedup and compression.
    pub new_stored_bytes: Option<i64>,
    #[serde(serialize_with = "timestamp::option::serialize")]
    pub expires_at: Option<time::OffsetDateTime>,
    pub error: Option<String>,
}

/// What a tenant's complete backups add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupUsage {
    pub backups: u64,
    pub logical_bytes: u64,
}

/// A backup with what restoring it needs.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub info: BackupInfo,
    pub tenant_id: TenantId,
    pub object: Option<ObjectId>,
    pub plan: String,
    pub table_counts: Option<serde_json::Value>,
}

fn select(filter: &str) -> String {
    format!(
        "SELECT b.id, t.name, b.database_name, b.database_id IS NOT NULL, b.server_name, b.server_version, b.kind, \
                b.status, b.started_at, b.finished_at, b.logical_bytes, b.new_stored_bytes, b.expires_at, b.error, b.tenant_id, b.object_id, b.plan, \
                b.table_counts \
         FROM database_backups b JOIN tenants t ON t.id = b.tenant_id {filter}"
    )
}

fn from_row(row: &tokio_postgres::Row) -> Stored {
    Stored {
        info: BackupInfo {
            id: row.get(0),
            tenant: row.get(1),
            database: row.get(2),
            database_exists: row.get(3),
            server: row.get(4),
            server_version: row.get(5),
            kind: row.get(6),
            status: row.get(7),
            started_at: row.get(8),
            finished_at: row.get(9),
            logical_bytes: row.get(10),
            new_stored_bytes: row.get(11),
            expires_at: row.get(12),
            error: row.get(13),
        },
        tenant_id: TenantId(row.get(14)),
        object: row.get::<_, Option<i64>>(15).map(ObjectId),
        plan: row.get(16),
        table_counts: row.get(17),
    }
}

impl Backups {
    pub(crate) fn new(
        ctx: Arc<Context>,
        store: ChunkStore,
        databases: Arc<Databases>,
        workers: Arc<Workers>,
        settings: BackupSettings,
    ) -> Self {
        Backups { ctx, store, databases, workers, settings }
    }

    /// Backups, newest first, of a tenant (and one of its databases) or of everyone.
    ///
    /// # Errors
    /// [`DbError::TenantNotFound`] and catalog errors.
    pub async fn list_backups(
        &self,
        tenant: Option<&str>,
        database: Option<&str>,
    ) -> Result<Vec<BackupInfo>, DbError> {
        if let Some(tenant) = tenant {
            crate::servers::tenant_id(self.ctx.pool(), tenant).await?;
        }
        let client = self.ctx.pool().get().await?;
        let rows = client
            .query(
                &select(
                    "WHERE ($1::text IS NULL OR t.name = $1) AND ($2::text IS NULL OR b.database_name = $2) \
                     ORDER BY b.started_at DESC, b.id DESC",
                ),
                &[&tenant, &database],
            )
            .await?;
        Ok(rows.iter().map(|row| from_row(row).info).collect())
    }

    /// How many complete backups a tenant keeps, and their logical bytes.
    pub async fn backup_usage(&self, tenant: TenantId) -> Result<BackupUsage, DbError> {
        let client = self.ctx.pool().get().await?;
        let row = client
            .query_one(
                "SELECT count(*), coalesce(sum(logical_bytes), 0)::int8 FROM database_backups \
                 WHERE tenant_id = $1 AND status = $2",
                &[&tenant.0, &BackupStatus::Complete],
            )
            .await?;
        Ok(BackupUsage { backups: row.get::<_, i64>(0) as u64, logical_bytes: row.get::<_, i64>(1) as u64 })
    }

    /// One backup.
    pub async fn backup(&self, id: i64) -> Result<BackupInfo, DbError> {
        Ok(self.stored_backup(id).await?.info)
    }

    pub(crate) async fn stored_backup(&self, id: i64) -> Result<Stored, DbError> {
        let client = self.ctx.pool().get().await?;
        let row = client.query_opt(&select("WHERE b.id = $1"), &[&id]).await?;
        row.as_ref().map(from_row).ok_or(DbError::BackupNotFound(id))
    }

    /// A complete backup's stored object, or why it cannot be read.
    pub(crate) async fn complete_backup(&self, id: i64) -> Result<(Stored, ObjectId), DbError> {
        let stored = self.stored_backup(id).await?;
        match (stored.info.status, stored.object) {
            (BackupStatus::Complete, Some(object)) => Ok((stored, object)),
            (status, _) => Err(DbError::BackupNotComplete { id, status }),
        }
    }

    /// Marks backups that were running when their Silo died as failed. A backup whose lease is
    /// still held (another replica runs it) is left alone.
    pub(crate) async fn fail_interrupted_backups(&self) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, coalesce(database_id, -id) FROM database_backups WHERE status = $1",
                &[&BackupStatus::Running],
            )
            .await?;
        drop(client);
        for row in rows {
            let (id, database): (i64, i64) = (row.get(0), row.get(1));
            let Some(_lease) = self.ctx.lock(BACKUP_LOCK_CLASS, database).await? else { continue };
            let client = self.ctx.pool().get().await?;
            client
                .execute(
                    "UPDATE database_backups SET status = $2, finished_at = now(), \
                     error = 'interrupted: Silo stopped while it ran' WHERE id = $1 AND status = $3",
                    &[&id, &BackupStatus::Failed, &BackupStatus::Running],
                )
                .await?;
            tracing::warn!(backup = id, "a backup was interrupted; marked failed (GC reclaims its chunks)");
        }
        Ok(())
    }
}
