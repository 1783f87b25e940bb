//! Deleting a tenant with everything it has, as one ordered procedure that a crash at any
//! step cannot leave half-done: running it again (by hand, or at the next start) finishes it.
//!
//! 1. Mark the tenant as being deleted (`tenants.deleting_at`, with how it was asked to run):
//!    its keys stop working, no bucket, object or upload is created for it any more.
//! 2. Delete its databases, each after a final backup unless told otherwise; then remove the
//!    dedicated servers it owns.
//! 3. Delete its buckets with their objects and uploads in progress (parts released).
//! 4. Delete its access keys.
//! 5. Delete every other object it stores, but its final backups when they are kept; then,
//!    when nothing is kept, its chunks and the tenant itself. A tenant whose final backups
//!    are kept stays (as being deleted, holding only them) until retention prunes them: the
//!    next run after that removes it. Its name stays taken meanwhile, so a new tenant of the
//!    same name never sees its backups.
//!
//! Every step only deletes, and each one finds what is left, so a rerun takes up where the
//! last one stopped. One deletion of a tenant runs at a time (an advisory lock).
//!
//! [`TenantDeletions`] runs it over the other services: the [`Backups`] (which delete each
//! database behind its final backup), the [`Fleet`] (the servers the tenant owns) and the
//! chunk store (its buckets and objects). It is the top of the service graph: nothing uses it
//! but the facade.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use storage_node::TenantId;
use storage_node::catalog::access_keys;
use storage_node::catalog::tenants::{self, TenantError};
use storage_node::store::{ChunkStore, ObjectId};

use crate::backup::Backups;
use crate::backup::catalog::SYSTEM_TENANT;
use crate::context::Context;
use crate::fleet::Fleet;
use crate::states::{BackupKind, BackupStatus, DatabaseState};
use crate::{DbError, faults};

/// Advisory-lock class of tenant deletions ("TD").
const TENANT_DELETION_LOCK_CLASS: i32 = 0x5444;

/// How a tenant is deleted.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct TenantDeletion {
    /// Delete it even though it stores objects or has databases (which are deleted too).
    pub force: bool,
    /// Take a final backup of each database first, and keep those backups.
    pub final_backup: bool,
}

/// What a tenant deletion did (this run; a resumed deletion counts only what was left).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TenantDeleted {
    pub databases: u64,
    pub servers: u64,
    pub buckets: u64,
    pub s3_objects: u64,
    pub uploads: u64,
    pub keys: u64,
    /// Other objects (backups, and orphans) deleted.
    pub objects: u64,
    /// Final backups kept; the tenant is removed once they have expired and been pruned.
    pub final_backups_kept: u64,
    /// Whether the tenant row is gone.
    pub removed: bool,
}

fn tenant_error(name: &str) -> impl Fn(TenantError) -> DbError + '_ {
    move |err| match err {
        TenantError::NotFound(_) => DbError::TenantNotFound(name.to_string()),
        TenantError::Catalog(err) => DbError::Catalog(err),
        other => DbError::InvalidRequest(other.to_string()),
    }
}

/// Tenant deletion, the procedure (see the module doc).
pub struct TenantDeletions {
    ctx: Arc<Context>,
    store: ChunkStore,
    fleet: Arc<Fleet>,
    backups: Arc<Backups>,
}

impl std::fmt::Debug for TenantDeletions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDeletions").finish_non_exhaustive()
    }
}

impl TenantDeletions {
    pub(crate) fn new(
        ctx: Arc<Context>,
        store: ChunkStore,
        fleet: Arc<Fleet>,
        backups: Arc<Backups>,
    ) -> Self {
        TenantDeletions { ctx, store, fleet, backups }
    }

    /// Deletes tenant `name` and everything it has (see the module's steps). Without
    /// `force`, a tenant that stores any object or has a database is refused; a database with
    /// deletion protection refuses the whole deletion before anything starts. A tenant whose
    /// deletion already started is finished as it was first asked.
    ///
    /// # Errors
    /// [`DbError::TenantNotFound`], [`DbError::TenantNotEmpty`], [`DbError::DeletionProtected`],
    /// [`DbError::Busy`] (another deletion of it runs), and the errors of the steps, after
    /// which a rerun continues.
    pub async fn delete_tenant(&self, name: &str, options: TenantDeletion) -> Result<TenantDeleted, DbError> {
        if name == SYSTEM_TENANT {
            return Err(DbError::InvalidRequest(format!("the tenant {name} is Silo's own")));
        }
        let tenant = tenants::get(self.ctx.pool(), name).await.map_err(tenant_error(name))?;
        let Some(_lock) = self.ctx.lock(TENANT_DELETION_LOCK_CLASS, tenant.id.0).await? else {
            return Err(DbError::Busy { name: name.to_string() });
        };
        if tenant.deleting_since.is_none() {
            self.check_deletable(tenant.id, name, options.force).await?;
        }
        let keeps_final_backups = tenants::mark_deleting(self.ctx.pool(), tenant.id, options.final_backup)
            .await
            .map_err(tenant_error(name))?;
        tracing::info!(tenant = name, keeps_final_backups, "deleting tenant");
        faults::crash_point("tenant_delete.after_mark");
        self.finish_tenant_deletion(tenant.id, name, keeps_final_backups).await
    }

    /// Finishes every tenant deletion that a crash interrupted, and removes the tenants kept
    /// for final backups once those are gone. Runs at start and with each GC pass.
    ///
    /// # Errors
    /// Catalog errors; a deletion that fails is logged and left for the next run.
    pub async fn resume_tenant_deletions(&self) -> Result<(), DbError> {
        for tenants::DeletingTenant { id, name, keeps_final_backups } in
            tenants::deleting(self.ctx.pool()).await.map_err(tenant_error("-"))?
        {
            let Some(_lock) = self.ctx.lock(TENANT_DELETION_LOCK_CLASS, id.0).await? else { continue };
            match self.finish_tenant_deletion(id, &name, keeps_final_backups).await {
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(tenant = name, error = %err, "cannot finish deleting tenant; retrying later")
                }
            }
        }
        Ok(())
    }

    /// Refuses a deletion that must not start: data without `force`, or a protected database.
    async fn check_deletable(&self, tenant: TenantId, name: &str, force: bool) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM objects WHERE tenant_id = $1), \
                        (SELECT count(*) FROM tenant_databases WHERE tenant_id = $1), \
                        (SELECT min(name) FROM tenant_databases WHERE tenant_id = $1 AND deletion_protection)",
                &[&tenant.0],
            )
            .await?;
        let (objects, databases, protected): (i64, i64, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        if (objects > 0 || databases > 0) && !force {
            return Err(DbError::TenantNotEmpty { tenant: name.to_string(), objects, databases });
        }
        if let Some(database) = protected {
            return Err(DbError::DeletionProtected { name: database });
        }
        let nodes = storage_node::model::node::owned_by(self.ctx.pool(), tenant).await?;
        if !nodes.is_empty() {
            return Err(DbError::TenantOwnsNodes { tenant: name.to_string(), nodes });
        }
        Ok(())
    }

    /// Steps 2 to 5 for a tenant already marked as being deleted.
    async fn finish_tenant_deletion(
        &self,
        tenant: TenantId,
        name: &str,
        keeps_final_backups: bool,
    ) -> Result<TenantDeleted, DbError> {
        let mut done = TenantDeleted::default();
        let client = self.ctx.pool().get().await?;
        let databases = client
            .query(
                "SELECT name, state FROM tenant_databases WHERE tenant_id = $1 ORDER BY name",
                &[&tenant.0],
            )
            .await?;
        drop(client);
        for database in databases {
            let (database, state): (String, DatabaseState) = (database.get(0), database.get(1));
            if state == DatabaseState::Creating {
                // Finished or undone by its create, or by the repair at the next start.
                return Err(DbError::Busy { name: database });
            }
            // A database already being deleted may be gone from its server: no backup then.
            let skip_final_backup = !keeps_final_backups || state == DatabaseState::Deleting;
            self.backups.delete_database(name, &database, skip_final_backup).await?;
            done.databases += 1;
        }
        for server in self.fleet.list().await? {
            if server.owner.as_deref() == Some(name) {
                self.fleet.remove(&server.name).await?;
                done.servers += 1;
            }
        }
        faults::crash_point("tenant_delete.after_databases");
        let s3 = storage_node::model::purge::purge_tenant(&self.store, tenant).await?;
        (done.buckets, done.s3_objects, done.uploads) = (s3.buckets, s3.objects, s3.uploads);
        faults::crash_point("tenant_delete.after_buckets");
        done.keys = access_keys::delete_all(self.ctx.pool(), tenant).await.map_err(tenant_error(name))?;
        self.delete_remaining_objects(tenant, keeps_final_backups, &mut done).await?;
        if done.final_backups_kept == 0 {
            self.store.purge_tenant(tenant).await?;
            done.removed = true;
            tracing::info!(tenant = name, ?done, "deleted tenant");
        } else if done
            != (TenantDeleted { final_backups_kept: done.final_backups_kept, ..Default::default() })
        {
            tracing::info!(
                tenant = name,
                ?done,
                "deleted tenant but its final backups, kept until they expire"
            );
        }
        Ok(done)
    }

    /// Deletes the tenant's objects but its complete final backups when those are kept.
    async fn delete_remaining_objects(
        &self,
        tenant: TenantId,
        keeps_final_backups: bool,
        done: &mut TenantDeleted,
    ) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        let rows = client
            .query(
                "SELECT o.id, EXISTS (SELECT 1 FROM database_backups b WHERE b.object_id = o.id \
                                      AND b.kind = $2 AND b.status = $3) \
                 FROM objects o WHERE o.tenant_id = $1 ORDER BY o.id",
                &[&tenant.0, &BackupKind::Final, &BackupStatus::Complete],
            )
            .await?;
        drop(client);
        for row in rows {
            let (object, final_backup): (i64, bool) = (row.get(0), row.get(1));
            if keeps_final_backups && final_backup {
                done.final_backups_kept += 1;
                continue;
            }
            // The backup row, if any, goes with its object (ON DELETE CASCADE).
            match self.store.delete(tenant, ObjectId(object)).await {
                Ok(()) => done.objects += 1,
                Err(storage_node::store::StoreError::NoSuchObject(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}
