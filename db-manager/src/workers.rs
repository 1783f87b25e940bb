//! Worker roles: the throwaway login roles through which Silo runs everything that may execute
//! a tenant's code.
//!
//! A dump, a row count, a restore or a verification runs whatever the tenant put in its
//! database: functions called by CHECK constraints, triggers, index expressions, an aggregate
//! named `count` found first on a `search_path` the tenant set. Run by the server's admin, that
//! code would have the admin's rights (on the embedded server, a superuser next to Silo's
//! catalog), and `SET ROLE` would not help, since the code can `RESET ROLE`. So none of it runs
//! as the admin. Each such operation connects as a worker made for it: `LOGIN NOSUPERUSER
//! NOCREATEDB NOCREATEROLE`, with a random password known only to this process, and either
//! a member of the database's owner role (backups and restores: the tenant's own rights) or a
//! `NOINHERIT` member of nothing (verification, which owns its scratch database). The worker is
//! dropped when the operation ends, and workers a crash left behind are dropped at the next
//! start. Their names start with `silo_w_` and this catalog's id, so deployments sharing a
//! server never drop each other's.

use rand::distr::{Alphanumeric, SampleString};
use tokio_postgres::Config;

use crate::DbError;
use crate::manager::DbManager;
use crate::names::{ident, literal};
use crate::provision::{generate_password, verifier};
use crate::servers::{self, Server};
use crate::tls::Reach;

const PREFIX: &str = "silo_w_";

/// A worker role on one server.
pub(crate) struct Worker {
    pub name: String,
    password: String,
    server: Server,
    /// The owner role it is a member of, if any.
    member_of: Option<String>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).field("server", &self.server.name).finish()
    }
}

impl Worker {
    /// Client settings for `dbname` as this worker, with `search_path` pinned to `pg_catalog`
    /// for the session (a startup option beats the tenant's `ALTER DATABASE ... SET`).
    pub fn config(&self, base: &Config, dbname: &str) -> Config {
        let mut config = base.clone();
        config.user(&self.name).password(&self.password).dbname(dbname).options("-c search_path=pg_catalog");
        config
    }

    pub fn server(&self) -> &Server {
        &self.server
    }
}

impl DbManager {
    /// Makes a worker on `server`. With `member_of` (an owner role) it inherits that role's
    /// rights, CONNECT on the owner's database included (no grant is written to the shared
    /// catalog, so concurrent workers never race on it); without, it has no rights at all and
    /// is made `NOINHERIT`. A non-superuser admin becomes a member of the worker, which Postgres 15
    /// requires to give it a database or drop what it owns.
    ///
    /// # Errors
    /// [`DbError::Server`] when the server refuses.
    pub(crate) async fn create_worker(
        &self,
        server: &Server,
        member_of: Option<&str>,
    ) -> Result<Worker, DbError> {
        let name = format!(
            "{}{}",
            self.worker_prefix().await?,
            Alphanumeric.sample_string(&mut rand::rng(), 12).to_ascii_lowercase()
        );
        let password = generate_password();
        let admin = self.admin(server).await?;
        let superuser: bool = admin
            .query_one("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user", &[])
            .await
            .map_err(DbError::on_server(&server.name))?
            .get(0);
        let role = ident(&name);
        let inherit = if member_of.is_some() { "INHERIT" } else { "NOINHERIT" };
        let mut sql = format!(
            "CREATE ROLE {role} LOGIN {inherit} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
             CONNECTION LIMIT 4 PASSWORD {};",
            literal(&verifier(&password))
        );
        if let Some(owner) = member_of {
            sql.push_str(&format!("GRANT {} TO {role};", ident(owner)));
        }
        if !superuser {
            sql.push_str(&format!("GRANT {role} TO CURRENT_USER;"));
        }
        admin.batch_execute(&sql).await.map_err(DbError::on_server(&server.name))?;
        Ok(Worker { name, password, server: server.clone(), member_of: member_of.map(str::to_string) })
    }

    /// How to reach `dbname` as `worker` (over the server's TLS, if it has any).
    pub(crate) async fn worker_config(&self, worker: &Worker, dbname: &str) -> Result<Reach, DbError> {
        let admin = servers::admin_config(self.pool(), &self.inner.secret, worker.server.id).await?;
        Ok(admin.with_config(worker.config(&admin.config, dbname)))
    }

    /// The environment of a pg tool that connects as `worker` to `dbname`: where, who, and
    /// the TLS that checks the server.
    pub(crate) fn worker_tool_env(
        &self,
        reach: &Reach,
        dbname: &str,
    ) -> Result<Vec<(&'static str, String)>, DbError> {
        let mut env = crate::backup::dump::pg_env(&reach.config, dbname);
        let tls = reach.tool_env(&self.inner.config.tls_dir).map_err(|err| DbError::Server {
            server: "-".into(),
            message: format!("cannot write the server's CA for the pg tools: {err}"),
        })?;
        env.extend(tls);
        Ok(env)
    }

    /// Drops a worker: ends its sessions, hands what it made in `database` to the owner role it
    /// worked for, and drops the role. Failures are logged; the next start tries again.
    pub(crate) async fn drop_worker(&self, worker: Worker, database: Option<&str>) {
        if let Err(err) = self.try_drop_worker(&worker, database).await {
            tracing::warn!(worker = %worker.name, server = %worker.server.name, error = %err, "cannot drop a worker role; the next start drops it");
        }
    }

    async fn try_drop_worker(&self, worker: &Worker, database: Option<&str>) -> Result<(), DbError> {
        let on_server = DbError::on_server(&worker.server.name);
        let role = ident(&worker.name);
        let admin = self.admin(&worker.server).await?;
        admin
            .execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = $1",
                &[&worker.name],
            )
            .await
            .map_err(&on_server)?;
        if let (Some(database), Some(owner)) = (database, &worker.member_of) {
            let exists = admin
                .query_opt("SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", &[&database])
                .await
                .map_err(&on_server)?
                .is_some();
            if exists {
                let inside = self.connect_server(&worker.server, Some(database)).await?;
                inside
                    .batch_execute(&format!(
                        "REASSIGN OWNED BY {role} TO {}; DROP OWNED BY {role}",
                        ident(owner)
                    ))
                    .await
                    .map_err(&on_server)?;
            }
        }
        admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await.map_err(&on_server)
    }

    /// Drops the workers a crash left on `server` (this catalog's only), after dropping what
    /// they own in each database.
    pub(crate) async fn sweep_workers(&self, server: &Server) -> Result<usize, DbError> {
        let prefix = self.worker_prefix().await?;
        let admin = self.admin(server).await?;
        let on_server = DbError::on_server(&server.name);
        let left: Vec<String> = admin
            .query("SELECT rolname::text FROM pg_catalog.pg_roles WHERE starts_with(rolname, $1)", &[&prefix])
            .await
            .map_err(&on_server)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if left.is_empty() {
            return Ok(0);
        }
        let databases: Vec<String> = admin
            .query("SELECT datname::text FROM pg_catalog.pg_database WHERE datallowconn", &[])
            .await
            .map_err(&on_server)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let roles = left.iter().map(|r| ident(r)).collect::<Vec<_>>().join(", ");
        for database in databases {
            if let Ok(inside) = self.connect_server(server, Some(&database)).await {
                // DROP OWNED also revokes what they were granted, here and on shared objects.
                if let Err(err) = inside.batch_execute(&format!("DROP OWNED BY {roles}")).await {
                    tracing::debug!(database, error = %err, "cannot drop what stray workers own");
                }
            }
        }
        admin.batch_execute(&format!("DROP ROLE IF EXISTS {roles}")).await.map_err(&on_server)?;
        Ok(left.len())
    }

    /// `silo_w_<first 12 hex digits of the catalog id>_`.
    async fn worker_prefix(&self) -> Result<String, DbError> {
        Ok(format!("{PREFIX}{}_", &self.catalog_id().await?[..12]))
    }
}
