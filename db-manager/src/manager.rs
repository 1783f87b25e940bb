//! [`DbManager`]: the facade the API holds. It owns the services, each with its own state
//! over the shared [`Context`]: [`Dedicated`] instances, the [`Sampler`], the [`Spares`] pools,
//! and the databases, backups and tenant deletions written as `impl DbManager` blocks in their
//! own modules. It starts them in order and runs the sampler's loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use storage_node::catalog::CatalogPool;
use storage_node::store::ChunkStore;
use tokio_util::sync::CancellationToken;

use crate::DbError;
use crate::context::Context;
use crate::dedicated::{Dedicated, DedicatedOptions, DedicatedRequest, Placement};
use crate::plans::Plans;
use crate::sampler::{Sample, Sampler};
use crate::servers::{self, Server};
use crate::spares::Spares;
use crate::states::ServerKind;

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
    dedicated: Dedicated,
    sampler: Sampler,
    spares: Arc<Spares>,
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
        let inner = Inner {
            dedicated: Dedicated::new(
                ctx.clone(),
                config.dedicated.clone(),
                config.plans.clone(),
                Placement { node_name: config.node_name.clone(), zone: config.zone.clone() },
            ),
            sampler: Sampler::new(ctx.clone(), config.plans.clone()),
            spares: Arc::new(Spares::new(ctx.clone(), config.spares_per_server)),
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
        self.inner.dedicated.start_all().await?;
        self.repair().await?;
        self.upgrade_legacy_databases().await;
        self.fail_interrupted_backups().await?;
        self.finish_interrupted_restores().await?;
        self.sweep_all_workers().await;
        // Tenant deletions a crash interrupted finish in the background (they may take final
        // backups first).
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(err) = this.resume_tenant_deletions().await {
                tracing::error!(error = %err, "cannot resume tenant deletions; the next GC pass retries");
            }
        });
        self.spares().replenish_soon();
        tokio::spawn(self.clone().sample_every_interval());
        Ok(())
    }

    /// Stops the dedicated instances.
    pub async fn shutdown(&self) {
        self.inner.dedicated.stop_all().await;
    }

    pub fn plans(&self) -> &Plans {
        &self.inner.config.plans
    }

    pub fn pool(&self) -> &CatalogPool {
        self.inner.ctx.pool()
    }

    /// The shared context: catalog, server connections, locks.
    pub(crate) fn ctx(&self) -> &Context {
        &self.inner.ctx
    }

    /// The chunk store backups go to.
    pub(crate) fn store(&self) -> &ChunkStore {
        &self.inner.store
    }

    pub(crate) fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    pub(crate) fn spares(&self) -> &Arc<Spares> {
        &self.inner.spares
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
            if let Err(err) = self.spares().replenish().await {
                tracing::warn!(error = %err, "cannot make spare databases");
            }
            tokio::select! {
                () = self.ctx().stop().cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    pub async fn servers(&self) -> Result<Vec<Server>, DbError> {
        servers::list(self.pool()).await
    }

    pub async fn register_server(&self, registration: servers::Registration) -> Result<Server, DbError> {
        let server = servers::register(self.pool(), self.ctx().secret(), registration).await?;
        self.spares().replenish_soon();
        Ok(server)
    }

    /// Records the embedded instance as the server `name`.
    pub async fn register_embedded(&self, server: &servers::NewServer) -> Result<(), DbError> {
        servers::upsert_embedded(self.pool(), self.ctx().secret(), server).await
    }

    /// Creates, starts and records a dedicated instance for a tenant, then refills spares.
    ///
    /// # Errors
    /// [`DbError::InvalidServerName`], [`DbError::UnknownPlan`], [`DbError::TenantNotFound`],
    /// [`DbError::ServerExists`], and [`DbError::Instance`] when the cluster cannot be made.
    pub async fn create_dedicated(&self, request: DedicatedRequest) -> Result<Server, DbError> {
        let server = self.inner.dedicated.create(request).await?;
        self.spares().replenish_soon();
        Ok(server)
    }

    /// Forgets a server that holds no database; a dedicated instance is stopped and its
    /// cluster deleted.
    pub async fn remove_server(&self, name: &str) -> Result<Server, DbError> {
        let server = servers::get(self.pool(), name).await?;
        if server.databases > 0 {
            return Err(DbError::ServerInUse { name: name.to_string(), databases: server.databases });
        }
        if let Err(err) = self.spares().drop_all(&server).await {
            tracing::warn!(server = name, error = %err, "cannot drop the server's spare databases");
        }
        servers::forget(self.pool(), &server).await?;
        self.ctx().forget_admin_pool(server.id);
        if server.kind == ServerKind::Dedicated {
            self.inner.dedicated.destroy(&server.name).await;
        }
        Ok(server)
    }
}
