//! [`Context`]: the little that every db-manager service shares. The catalog pool, the server
//! secret that opens sealed admin URLs, one admin pool per server, this catalog's id, the
//! advisory locks that serialize work across Silo replicas, and the token that stops it all.
//! Its fields are private: services reach the catalog and the servers through its methods.

use std::collections::HashMap;
use std::sync::Mutex;

use deadpool_postgres::{ClientWrapper, Object};
use storage_node::ServerSecret;
use storage_node::catalog::CatalogPool;
use tokio_util::sync::CancellationToken;

use crate::servers::{self, Server};
use crate::{DbError, provision};

/// Advisory-lock class of per-database operations ("SD"): one create, resize, rotation or
/// delete of a database at a time, across every Silo replica.
const DATABASE_LOCK_CLASS: i32 = 0x5344;

/// What the services share (see the module doc).
pub(crate) struct Context {
    pool: CatalogPool,
    secret: ServerSecret,
    /// Admin connections to each server, by server id.
    server_pools: Mutex<HashMap<i64, CatalogPool>>,
    /// This catalog's id without dashes (read once: it is fixed), which names Silo's spare
    /// databases, worker roles and ownership markers on shared servers.
    catalog_id: tokio::sync::OnceCell<String>,
    stop: CancellationToken,
}

impl Context {
    pub fn new(pool: CatalogPool, secret: ServerSecret, stop: CancellationToken) -> Self {
        Context {
            pool,
            secret,
            server_pools: Mutex::new(HashMap::new()),
            catalog_id: tokio::sync::OnceCell::new(),
            stop,
        }
    }

    pub fn pool(&self) -> &CatalogPool {
        &self.pool
    }

    pub fn secret(&self) -> &ServerSecret {
        &self.secret
    }

    /// Cancelled when Silo stops.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Takes the per-database lock on its own catalog connection; `None` when another request
    /// holds it. The lock ends when the returned connection is dropped, even on a crash.
    pub async fn lock_database(&self, id: i64) -> Result<Option<ClientWrapper>, DbError> {
        self.lock(DATABASE_LOCK_CLASS, id).await
    }

    /// A session-level advisory lock `(class, id)` on a catalog connection of its own.
    pub async fn lock(&self, class: i32, id: i64) -> Result<Option<ClientWrapper>, DbError> {
        let client = Object::take(self.pool.get().await?);
        let locked: bool =
            client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&class, &(id as i32)]).await?.get(0);
        Ok(locked.then_some(client))
    }

    /// A pooled admin connection to a server's admin database.
    pub async fn admin(&self, server: &Server) -> Result<Object, DbError> {
        let cached = self.server_pools.lock().ok().and_then(|pools| pools.get(&server.id).cloned());
        let pool = match cached {
            Some(pool) => pool,
            None => {
                let reach = servers::admin_config(&self.pool, &self.secret, server.id).await?;
                // A tenant holding a lock on its role (an open `ALTER ROLE ... SET`) must not
                // stall Silo: its statements wait at most this long.
                let mut config = reach.config.clone();
                config.options("-c lock_timeout=10s");
                let pool = reach.with_config(config).pool(&server.name, 4)?;
                if let Ok(mut pools) = self.server_pools.lock() {
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

    /// Drops the admin pool of a server that is gone.
    pub fn forget_admin_pool(&self, server_id: i64) {
        if let Ok(mut pools) = self.server_pools.lock() {
            pools.remove(&server_id);
        }
    }

    /// Connects to a server as its admin, to the admin URL's database or to `dbname`. Inside a
    /// client database the admin runs only catalog queries and DDL, never the tenant's code:
    /// `search_path` is pinned to `pg_catalog` by a startup option (which beats the tenant's
    /// `ALTER DATABASE ... SET search_path`), so no unqualified name resolves to a function of
    /// the tenant's.
    pub async fn connect_server(
        &self,
        server: &Server,
        dbname: Option<&str>,
    ) -> Result<tokio_postgres::Client, DbError> {
        let reach = servers::admin_config(&self.pool, &self.secret, server.id).await?;
        let mut config = reach.config.clone();
        if let Some(dbname) = dbname {
            // The startup options beat the tenant's `ALTER DATABASE ... SET`: no tenant function
            // by name, no read-only default that fails Silo's statements, no role to act as,
            // and no lock the tenant holds open can stall Silo for long.
            config.dbname(dbname).options(format!("{PINNED_SESSION} -c statement_timeout=300s"));
        }
        reach.with_config(config).connect(&server.name).await
    }

    /// This catalog's id, without dashes.
    pub async fn catalog_id(&self) -> Result<String, DbError> {
        let id = self
            .catalog_id
            .get_or_try_init(|| async {
                let id = storage_node::catalog::catalog_id(&self.pool).await?;
                Ok::<_, DbError>(id.replace('-', ""))
            })
            .await?;
        Ok(id.clone())
    }

    /// The marker of Silo's roles for database row `id` (see [`provision::marker`]).
    pub async fn marker(&self, id: i64) -> Result<String, DbError> {
        Ok(provision::marker(&self.catalog_id().await?, id))
    }

    /// Records a change of a database's state, for the API's event list.
    pub async fn record_event(&self, id: i64, event: &str, detail: &str) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client.execute(INSERT_EVENT, &[&id, &event, &detail]).await?;
        Ok(())
    }
}

/// The startup options of every session Silo opens inside a tenant's database (as the admin,
/// or as a worker): they beat the tenant's `ALTER DATABASE ... SET`, so no tenant function
/// resolves by name, no read-only default fails Silo's statements, no role is put on, and no
/// lock the tenant holds open stalls Silo for long. (Admin sessions add a statement timeout;
/// workers do not, since a dump or restore may rightly run for hours.)
pub(crate) const PINNED_SESSION: &str =
    "-c search_path=pg_catalog -c default_transaction_read_only=off -c role=none -c lock_timeout=10s";

/// Records event `$2` with detail `$3` for database `$1`: for a change of state that records its
/// event in the same transaction, so nobody sees the one without the other.
pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO database_events (database_id, event, detail) VALUES ($1, $2, $3)";
