//! [`DbManager`]: the handle the API holds to servers and client databases, and what it shares
//! between the create, sample and dedicated-instance paths.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use deadpool_postgres::Object;
use storage_node::catalog::CatalogPool;
use storage_node::keys::ServerSecret;
use storage_node::store::ChunkStore;
use tokio_util::sync::CancellationToken;

use crate::dedicated::Running;
use crate::plans::Plans;
use crate::sampler::Sample;
use crate::servers::{self, Server};
use crate::states::{DatabaseState, ServerKind};
use crate::{DbError, provision};

/// Advisory-lock class of per-database operations ("SD"): one create, resize, rotation or
/// delete of a database at a time, across every Silo replica.
const DATABASE_LOCK_CLASS: i32 = 0x5344;

/// How dedicated instances are run.
#[derive(Debug, Clone)]
pub struct DedicatedOptions {
    /// Where their clusters live: `<data-dir>/instances`.
    pub root: PathBuf,
    pub bin_dir: Option<PathBuf>,
    /// The OS user they run as when Silo runs as root.
    pub os_user: String,
    /// The address they listen on, which is also what clients are told.
    pub listen: IpAddr,
}

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
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub pool: CatalogPool,
    /// Where backups are stored: the tenants' chunk store.
    pub store: ChunkStore,
    pub secret: ServerSecret,
    pub config: ManagerConfig,
    pub instances: Mutex<HashMap<String, Running>>,
    pub samples: RwLock<Vec<Sample>>,
    /// Admin connections to each server, by server id.
    pub server_pools: Mutex<HashMap<i64, CatalogPool>>,
    /// This catalog's id without dashes (read once: it is fixed), which names Silo's spare
    /// databases, worker roles and ownership markers on shared servers.
    pub catalog_id: tokio::sync::OnceCell<String>,
    pub stop: CancellationToken,
}

impl std::fmt::Debug for DbManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbManager").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl DbManager {
    /// A manager over the catalog. Nothing runs until [`DbManager::start`].
    pub fn new(store: ChunkStore, config: ManagerConfig, stop: CancellationToken) -> Self {
        let inner = Inner {
            pool: store.catalog().clone(),
            secret: store.server_secret().clone(),
            store,
            config,
            instances: Mutex::new(HashMap::new()),
            samples: RwLock::new(Vec::new()),
            server_pools: Mutex::new(HashMap::new()),
            catalog_id: tokio::sync::OnceCell::new(),
            stop,
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
        self.start_dedicated_instances().await?;
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
        self.replenish_spares_soon();
        tokio::spawn(self.clone().sample_every_interval());
        Ok(())
    }

    /// Stops the dedicated instances.
    pub async fn shutdown(&self) {
        self.stop_dedicated_instances().await;
    }

    pub fn plans(&self) -> &Plans {
        &self.inner.config.plans
    }

    pub fn pool(&self) -> &CatalogPool {
        &self.inner.pool
    }

    /// The latest samples, for the metrics endpoint.
    pub fn samples(&self) -> Vec<Sample> {
        self.inner.samples.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub async fn servers(&self) -> Result<Vec<Server>, DbError> {
        servers::list(&self.inner.pool).await
    }

    pub async fn register_server(&self, registration: servers::Registration) -> Result<Server, DbError> {
        let server = servers::register(&self.inner.pool, &self.inner.secret, registration).await?;
        self.replenish_spares_soon();
        Ok(server)
    }

    /// Records the embedded instance as the server `name`.
    pub async fn register_embedded(&self, server: &servers::NewServer) -> Result<(), DbError> {
        servers::upsert_embedded(&self.inner.pool, &self.inner.secret, server).await
    }

    /// Forgets a server that holds no database; a dedicated instance is stopped and its
    /// cluster deleted.
    pub async fn remove_server(&self, name: &str) -> Result<Server, DbError> {
        let server = servers::get(&self.inner.pool, name).await?;
        if server.databases > 0 {
            return Err(DbError::ServerInUse { name: name.to_string(), databases: server.databases });
        }
        if let Err(err) = self.drop_spares(&server).await {
            tracing::warn!(server = name, error = %err, "cannot drop the server's spare databases");
        }
        servers::forget(&self.inner.pool, &server).await?;
        if let Ok(mut pools) = self.inner.server_pools.lock() {
            pools.remove(&server.id);
        }
        if server.kind == ServerKind::Dedicated {
            self.destroy_dedicated_instance(&server.name).await;
        }
        Ok(server)
    }

    /// Takes the per-database lock on its own catalog connection; `None` when another request
    /// holds it. The lock ends when the returned connection is dropped, even on a crash.
    pub(crate) async fn lock_database(
        &self,
        id: i64,
    ) -> Result<Option<deadpool_postgres::ClientWrapper>, DbError> {
        self.lock(DATABASE_LOCK_CLASS, id).await
    }

    /// A session-level advisory lock `(class, id)` on a catalog connection of its own.
    pub(crate) async fn lock(
        &self,
        class: i32,
        id: i64,
    ) -> Result<Option<deadpool_postgres::ClientWrapper>, DbError> {
        let client = Object::take(self.inner.pool.get().await?);
        let locked: bool =
            client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&class, &(id as i32)]).await?.get(0);
        Ok(locked.then_some(client))
    }

    /// A pooled admin connection to a server's admin database.
    pub(crate) async fn admin(&self, server: &Server) -> Result<Object, DbError> {
        let cached = self.inner.server_pools.lock().ok().and_then(|pools| pools.get(&server.id).cloned());
        let pool = match cached {
            Some(pool) => pool,
            None => {
                let reach = servers::admin_config(&self.inner.pool, &self.inner.secret, server.id).await?;
                // A tenant holding a lock on its role (an open `ALTER ROLE ... SET`) must not
                // stall Silo: its statements wait at most this long.
                let mut config = reach.config.clone();
                config.options("-c lock_timeout=10s");
                let pool = reach.with_config(config).pool(&server.name, 4)?;
                if let Ok(mut pools) = self.inner.server_pools.lock() {
                    pools.insert(server.id, pool.clone());
                }
                pool
            }
        };
        pool.get().await.map_err(|err| DbError::ServerUnreachable {
            server: server.name.clone(),
            message: err.to_string(),
        })
    }

    /// Connects to a server as its admin, to the admin URL's database or to `dbname`. Inside a
    /// client database the admin runs only catalog queries and DDL, never the tenant's code:
    /// `search_path` is pinned to `pg_catalog` by a startup option (which beats the tenant's
    /// `ALTER DATABASE ... SET search_path`), so no unqualified name resolves to a function of
    /// the tenant's.
    pub(crate) async fn connect_server(
        &self,
        server: &Server,
        dbname: Option<&str>,
    ) -> Result<tokio_postgres::Client, DbError> {
        let reach = servers::admin_config(&self.inner.pool, &self.inner.secret, server.id).await?;
        let mut config = reach.config.clone();
        if let Some(dbname) = dbname {
            // The startup options beat the tenant's `ALTER DATABASE ... SET`: no tenant function
            // by name, no read-only default that fails Silo's statements, no role to act as,
            // and no lock the tenant holds open can stall Silo for long.
            config.dbname(dbname).options(
                "-c search_path=pg_catalog -c default_transaction_read_only=off -c role=none \
                 -c lock_timeout=10s -c statement_timeout=300s",
            );
        }
        reach.with_config(config).connect(&server.name).await
    }

    /// This catalog's id, without dashes.
    pub(crate) async fn catalog_id(&self) -> Result<String, DbError> {
        let id = self
            .inner
            .catalog_id
            .get_or_try_init(|| async {
                let id = storage_node::catalog::catalog_id(self.pool()).await?;
                Ok::<_, DbError>(id.replace('-', ""))
            })
            .await?;
        Ok(id.clone())
    }

    /// The marker of Silo's roles for database row `id` (see [`provision::marker`]).
    pub(crate) async fn marker(&self, id: i64) -> Result<String, DbError> {
        Ok(provision::marker(&self.catalog_id().await?, id))
    }

    /// Moves databases made before owner roles to that layout (see
    /// [`provision::upgrade_legacy`]). One that was read-only over its quota is marked active,
    /// and the sampler puts it back into read-only the new way at its next round.
    async fn upgrade_legacy_databases(&self) {
        let rows = match self.inner.pool.get().await {
            Ok(client) => client
                .query(
                    "SELECT id FROM tenant_databases WHERE state IN ($1, $2)",
                    &[&DatabaseState::Active, &DatabaseState::ReadOnlyOverQuota],
                )
                .await
                .map_err(DbError::from),
            Err(err) => Err(err.into()),
        };
        let ids: Vec<i64> = match rows {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(err) => return tracing::warn!(error = %err, "cannot list databases to upgrade"),
        };
        for id in ids {
            if let Err(err) = self.upgrade_legacy_database(id).await {
                tracing::error!(database_id = id, error = %err, "cannot move a database to owner roles; retrying at the next start");
            }
        }
    }

    async fn upgrade_legacy_database(&self, id: i64) -> Result<(), DbError> {
        let Some(_lock) = self.lock_database(id).await? else { return Ok(()) };
        let row = self.row_by_id(id).await?;
        let target = row.target();
        let admin = self.admin(&row.server).await?;
        if !provision::is_legacy(&admin, &target).await? {
            return Ok(());
        }
        let inside = self.connect_server(&row.server, Some(&row.pg_name)).await?;
        provision::upgrade_legacy(&admin, &inside, &target, &self.marker(id).await?).await?;
        let client = self.inner.pool.get().await?;
        client
            .execute("UPDATE tenant_databases SET state = $2 WHERE id = $1", &[&id, &DatabaseState::Active])
            .await?;
        tracing::warn!(tenant = %row.tenant, database = %row.name, "moved a database to an owner role (read-only over quota now holds)");
        Ok(())
    }

    /// Drops the worker roles a crash left on any server.
    async fn sweep_all_workers(&self) {
        let servers = match servers::list(&self.inner.pool).await {
            Ok(servers) => servers,
            Err(err) => return tracing::warn!(error = %err, "cannot list servers to sweep worker roles"),
        };
        for server in servers {
            match self.sweep_workers(&server).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(server = %server.name, roles = n, "dropped worker roles a crash left behind")
                }
                Err(err) => tracing::warn!(server = %server.name, error = %err, "cannot sweep worker roles"),
            }
        }
    }

    /// Cleans up creates that died half-way and finishes deletes that did, unless another
    /// replica is still working on them.
    async fn repair(&self) -> Result<(), DbError> {
        let client = self.inner.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, name, server_id, pg_name, state FROM tenant_databases \
                 WHERE state IN ($1, $2)",
                &[&DatabaseState::Creating, &DatabaseState::Deleting],
            )
            .await?;
        drop(client);
        for row in rows {
            let (id, name, server_id, pg_name, state): (i64, String, i64, String, DatabaseState) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            let Some(_lock) = self.lock_database(id).await? else { continue };
            let server = servers::get_by_id(&self.inner.pool, server_id).await?;
            let target = provision::Target { server: &server.name, pg_name: &pg_name };
            let outcome = async {
                let admin = self.admin(&server).await?;
                // A role or database that is not Silo's (one that a create refused) stays.
                match provision::check_ours(&admin, &target, &self.marker(id).await?).await {
                    Ok(()) => self.drop_database_and_roles(&server, &target).await?,
                    Err(DbError::RoleTaken { .. } | DbError::DatabaseTaken { .. }) => {}
                    Err(err) => return Err(err),
                }
                let client = self.inner.pool.get().await?;
                client.execute("DELETE FROM tenant_databases WHERE id = $1", &[&id]).await?;
                Ok::<_, DbError>(())
            }
            .await;
            match outcome {
                Ok(()) => {
                    tracing::warn!(database = %name, server = %server.name, %state, "cleaned up a database left half-done by a crash")
                }
                Err(err) => {
                    tracing::error!(database = %name, error = %err, "cannot clean up a half-done database; retrying at the next start")
                }
            }
        }
        Ok(())
    }
}
