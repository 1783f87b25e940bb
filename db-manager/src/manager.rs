//! [`DbManager`]: the facade the API holds. It owns the services, each with its own state
//! over the shared [`Context`], builds them in dependency order and starts them in order:
//!
//! [`Fleet`] (servers, with the [`Dedicated`] instances and the [`Spares`] pools) and the
//! [`Sampler`] at the bottom; [`Workers`] (throwaway roles) beside them; [`Databases`] over
//! spares and workers; [`Backups`] over databases and workers; [`TenantDeletions`] over backups
//! and the fleet. Each service holds handles to the ones below it only. Callers reach a service
//! through its accessor ([`DbManager::databases`], ...) and never see how they are wired.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use storage_node::TenantId;
use storage_node::catalog::CatalogPool;
use storage_node::store::ChunkStore;
use tokio_util::sync::CancellationToken;

use crate::DbError;
use crate::backup::{BackupSettings, Backups};
use crate::context::Context;
use crate::databases::Databases;
use crate::dedicated::{Dedicated, DedicatedOptions, Placement};
use crate::fleet::Fleet;
use crate::plans::Plans;
use crate::sampler::{Sample, Sampler};
use crate::spares::Spares;
use crate::tenant_deletion::TenantDeletions;
use crate::usage::TenantUsage;
use crate::workers::Workers;

/// The database manager's settings.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub plans: Plans,
    /// How often sizes and connections are sampled and quotas enforced.
    pub sample_interval: Duration,
    /// This Silo node, which owns the dedicated instances under its data directory.
    pub node_name: String,
    pub zone: String,
    pub dedicated: DedicatedOptions,
    /// How long final backups (taken before a delete) are kept.
    pub final_backup_retention: Duration,
    /// How to reach Silo's own catalog database, for its backups.
    pub catalog: tokio_postgres::Config,
    /// Where the offline manifests of catalog backups go: `<data-dir>/catalog-backups`.
    pub catalog_backups_dir: PathBuf,
    /// Where the CAs of servers reached over TLS are written for the pg tools: `<data-dir>/tls`.
    pub tls_dir: PathBuf,
    /// Empty databases kept ready on each server, so creates rename one (0: none).
    pub spares_per_server: usize,
}

/// Servers and client databases.
#[derive(Clone)]
pub struct DbManager {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Context>,
    /// Where backups are stored: the tenants' chunk store.
    store: ChunkStore,
    config: ManagerConfig,
    fleet: Arc<Fleet>,
    sampler: Sampler,
    spares: Arc<Spares>,
    workers: Arc<Workers>,
    databases: Arc<Databases>,
    backups: Arc<Backups>,
    tenant_deletions: Arc<TenantDeletions>,
}

impl std::fmt::Debug for DbManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbManager").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl DbManager {
    /// A manager over the catalog. Nothing runs until [`DbManager::start`].
    pub fn new(store: ChunkStore, config: ManagerConfig, stop: CancellationToken) -> Self {
        let ctx = Arc::new(Context::new(store.catalog().clone(), store.server_secret().clone(), stop));
        let spares = Arc::new(Spares::new(ctx.clone(), config.spares_per_server));
        let dedicated = Dedicated::new(
            ctx.clone(),
            config.dedicated.clone(),
            config.plans.clone(),
            Placement { node_name: config.node_name.clone(), zone: config.zone.clone() },
        );
        let fleet = Arc::new(Fleet::new(ctx.clone(), dedicated, spares.clone()));
        let workers = Arc::new(Workers::new(ctx.clone(), config.tls_dir.clone()));
        let databases =
            Arc::new(Databases::new(ctx.clone(), config.plans.clone(), spares.clone(), workers.clone()));
        let settings = BackupSettings {
            plans: config.plans.clone(),
            final_backup_retention: config.final_backup_retention,
            catalog: config.catalog.clone(),
            catalog_backups_dir: config.catalog_backups_dir.clone(),
            bin_dir: config.dedicated.bin_dir.clone(),
        };
        let backups =
            Arc::new(Backups::new(ctx.clone(), store.clone(), databases.clone(), workers.clone(), settings));
        let tenant_deletions =
            Arc::new(TenantDeletions::new(ctx.clone(), store.clone(), fleet.clone(), backups.clone()));
        let inner = Inner {
            sampler: Sampler::new(ctx.clone(), config.plans.clone()),
            fleet,
            spares,
            workers,
            databases,
            backups,
            tenant_deletions,
            ctx,
            store,
            config,
        };
        DbManager { inner: Arc::new(inner) }
    }

    /// Starts this node's dedicated instances, repairs what a crash left half-done, and starts
    /// the sampler.
    ///
    /// # Errors
    /// [`DbError`] when the catalog is unreachable; an instance that does not start is logged
    /// and retried by its supervisor.
    pub async fn start(&self) -> Result<(), DbError> {
        let inner = &self.inner;
        inner.fleet.start().await?;
        inner.databases.repair().await?;
        inner.databases.upgrade_legacy_databases().await;
        inner.backups.fail_interrupted_backups().await?;
        inner.backups.finish_interrupted_restores().await?;
        inner.workers.sweep_all_workers().await;
        // Tenant deletions a crash interrupted finish in the background (they may take final
        // backups first).
        let deletions = inner.tenant_deletions.clone();
        tokio::spawn(async move {
            if let Err(err) = deletions.resume_tenant_deletions().await {
                tracing::error!(error = %err, "cannot resume tenant deletions; the next GC pass retries");
            }
        });
        inner.spares.replenish_soon();
        tokio::spawn(self.clone().sample_every_interval());
        Ok(())
    }

    /// Stops the dedicated instances.
    pub async fn shutdown(&self) {
        self.inner.fleet.shutdown().await;
    }

    pub fn plans(&self) -> &Plans {
        &self.inner.config.plans
    }

    pub fn pool(&self) -> &CatalogPool {
        self.inner.ctx.pool()
    }

    /// The latest samples, for the metrics endpoint.
    pub fn samples(&self) -> Vec<Sample> {
        self.inner.sampler.latest()
    }

    /// One sampler round: sample every server, enforce quotas, end expired rotation graces.
    ///
    /// # Errors
    /// Catalog errors; a server that cannot be reached is logged and skipped.
    pub async fn sample_once(&self) -> Result<(), DbError> {
        self.inner.sampler.sample_once().await
    }

    /// Samples, enforces quotas and refills spares every interval until Silo stops.
    async fn sample_every_interval(self) {
        let interval = self.inner.config.sample_interval;
        loop {
            if let Err(err) = self.sample_once().await {
                tracing::warn!(error = %err, "sampling the databases failed");
            }
            if let Err(err) = self.inner.spares.replenish().await {
                tracing::warn!(error = %err, "cannot make spare databases");
            }
            tokio::select! {
                () = self.inner.ctx.stop().cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// The services, for callers to reach each through its own narrow handle.
impl DbManager {
    /// The servers databases are placed on: list, register, create dedicated, remove.
    pub fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    /// Client databases: list, show, create, change, rotate.
    pub fn databases(&self) -> &Arc<Databases> {
        &self.inner.databases
    }

    /// Backups: list, run, prune, restore, verify, download; and deleting a database behind
    /// its final backup.
    pub fn backups(&self) -> &Backups {
        &self.inner.backups
    }

    /// Deleting tenants with everything they have, and resuming interrupted deletions.
    pub fn tenant_deletions(&self) -> &TenantDeletions {
        &self.inner.tenant_deletions
    }
    /// `tenant`'s usage and its breakdown (store, S3, backups).
    ///
    /// # Errors
    /// [`DbError`] when the catalog cannot be read.
    pub async fn tenant_usage(&self, tenant: TenantId) -> Result<TenantUsage, DbError> {
        crate::usage::tenant_usage(&self.inner.store, &self.inner.backups, tenant).await
    }

    /// Deletes objects older than [`crate::orphans::ORPHAN_GRACE`] that nothing references
    /// (see [`crate::orphans`]). Returns how many.
    ///
    /// # Errors
    /// Catalog errors.
    pub async fn sweep_orphan_objects(&self) -> Result<u64, DbError> {
        crate::orphans::sweep_orphan_objects(&self.inner.store).await
    }
}
