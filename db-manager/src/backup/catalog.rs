//! Backups of Silo's own catalog, by the same machinery as client databases.
//!
//! The catalog is dumped (`pg_dump -Fc -Z0`) into the chunk store as an object of the system
//! tenant, and an offline manifest of that object is written to
//! `<data-dir>/catalog-backups/`. With the manifest and the packs, `silo catalog restore`
//! rebuilds a lost catalog without needing the catalog to find the dump (docs/operations.md).

use std::path::PathBuf;

use serde::Serialize;
use storage_node::TenantId;
use storage_node::catalog::tenants::{self, TenantError};
use storage_node::store::PutOptions;

use super::BACKUP_LOCK_CLASS;
use super::Backups;
use super::dump::dump_reader;
use crate::DbError;
use crate::instance::PgBinaries;
use crate::pg_tools::pg_env;
use crate::states::BackupStatus;

/// The tenant that owns Silo's own data (catalog dumps). Its name is reserved.
pub const SYSTEM_TENANT: &str = "silo-system";
/// Catalog backups kept; older ones are deleted when a new one completes.
const KEEP: i64 = 7;

/// A completed catalog backup.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogBackup {
    pub id: i64,
    pub logical_bytes: u64,
    pub new_stored_bytes: u64,
    /// The offline manifest, which `silo catalog restore` reads.
    pub manifest: PathBuf,
}

impl Backups {
    /// Dumps the catalog into the chunk store and writes its offline manifest.
    ///
    /// # Errors
    /// [`DbError::BackupBusy`] when another catalog backup runs; [`DbError::Dump`] when the
    /// dump fails (recorded as failed).
    pub async fn backup_catalog(&self) -> Result<CatalogBackup, DbError> {
        let Some(_lease) = self.ctx.lock(BACKUP_LOCK_CLASS, 0).await? else {
            return Err(DbError::BackupBusy { name: "the catalog".into() });
        };
        let tenant = self.system_tenant().await?;
        let client = self.ctx.pool().get().await?;
        let id: i64 = client
            .query_one(
                "INSERT INTO catalog_backups (status) VALUES ($1) RETURNING id",
                &[&BackupStatus::Running],
            )
            .await?
            .get(0);
        drop(client);
        let outcome = self.dump_catalog(id, tenant).await;
        let client = self.ctx.pool().get().await?;
        match outcome {
            Ok(backup) => {
                client
                    .execute(
                        "UPDATE catalog_backups SET status = $5, finished_at = now(), logical_bytes = $2, \
                         new_stored_bytes = $3, manifest_path = $4 WHERE id = $1",
                        &[
                            &id,
                            &(backup.logical_bytes as i64),
                            &(backup.new_stored_bytes as i64),
                            &backup.manifest.display().to_string(),
                            &BackupStatus::Complete,
                        ],
                    )
                    .await?;
                drop(client);
                tracing::info!(backup = id, manifest = %backup.manifest.display(), "catalog backup complete");
                self.prune_catalog_backups(tenant).await?;
                Ok(backup)
            }
            Err(err) => {
                client
                    .execute(
                        "UPDATE catalog_backups SET status = $3, finished_at = now(), error = $2 WHERE id = $1",
                        &[&id, &err.to_string(), &BackupStatus::Failed],
                    )
                    .await?;
                tracing::error!(backup = id, error = %err, "catalog backup failed");
                Err(err)
            }
        }
    }

    async fn dump_catalog(&self, id: i64, tenant: TenantId) -> Result<CatalogBackup, DbError> {
        let config = &self.settings.catalog;
        let dbname = config.get_dbname().unwrap_or("silo").to_string();
        let binaries = PgBinaries::locate(self.settings.bin_dir.as_deref())?;
        let failed = |message: String| DbError::Dump { database: "the catalog".into(), message };
        let reader = dump_reader(&binaries, &[], pg_env(config, &dbname)).map_err(failed)?;
        let stored = self
            .store
            .put(tenant, reader, PutOptions::default())
            .await
            .map_err(|err| failed(err.to_string()))?;
        let manifest = self.store.offline_manifest(tenant, stored.id).await?;
        let dir = &self.settings.catalog_backups_dir;
        let path = dir.join(format!("catalog-{id:06}.json"));
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
            storage_node::data_dir::write_atomically(&path, &json, 0o600)
        });
        if let Err(err) = written {
            let _ = self.store.delete(tenant, stored.id).await;
            return Err(failed(format!("cannot write the manifest {}: {err}", path.display())));
        }
        let client = self.ctx.pool().get().await?;
        client
            .execute("UPDATE catalog_backups SET object_id = $2 WHERE id = $1", &[&id, &stored.id.0])
            .await?;
        Ok(CatalogBackup {
            id,
            logical_bytes: stored.size,
            new_stored_bytes: stored.new_stored_bytes,
            manifest: path,
        })
    }

    /// The system tenant, created on first use.
    async fn system_tenant(&self) -> Result<TenantId, DbError> {
        match tenants::find(self.ctx.pool(), SYSTEM_TENANT).await {
            Ok(id) => Ok(id),
            Err(TenantError::NotFound(_)) => {
                match tenants::create(self.ctx.pool(), SYSTEM_TENANT, None).await {
                    Ok(id) => Ok(id),
                    Err(_) => crate::servers::tenant_id(self.ctx.pool(), SYSTEM_TENANT).await,
                }
            }
            Err(TenantError::Catalog(err)) => Err(DbError::Catalog(err)),
            Err(other) => Err(DbError::InvalidRequest(other.to_string())),
        }
    }

    /// Keeps the newest [`KEEP`] complete catalog backups; deletes the rest and their manifests.
    async fn prune_catalog_backups(&self, tenant: TenantId) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, object_id, manifest_path FROM catalog_backups WHERE status = $2 \
                 ORDER BY id DESC OFFSET $1",
                &[&KEEP, &BackupStatus::Complete],
            )
            .await?;
        drop(client);
        for row in rows {
            let (id, object, manifest): (i64, Option<i64>, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            if let Some(manifest) = manifest {
                let _ = std::fs::remove_file(manifest);
            }
            if let Some(object) = object {
                self.store.delete(tenant, storage_node::store::ObjectId(object)).await?;
            }
            let client = self.ctx.pool().get().await?;
            client.execute("DELETE FROM catalog_backups WHERE id = $1", &[&id]).await?;
        }
        let client = self.ctx.pool().get().await?;
        client
            .execute(
                "DELETE FROM catalog_backups WHERE status = $1 AND started_at < now() - interval '1 day'",
                &[&BackupStatus::Failed],
            )
            .await?;
        Ok(())
    }
}
