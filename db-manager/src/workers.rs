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

use std::path::PathBuf;
use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};
use tokio_postgres::Config;

use crate::DbError;
use crate::context::Context;
use crate::context::PINNED_SESSION;
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
    /// Client settings for `dbname` as this worker, with the session pinned as every Silo
    /// session in a tenant's database is ([`crate::context::PINNED_SESSION`]).
    pub fn config(&self, base: &Config, dbname: &str) -> Config {
        let mut config = base.clone();
        config.user(&self.name).password(&self.password).dbname(dbname).options(PINNED_SESSION);
        config
    }

    pub fn server(&self) -> &Server {
        &self.server
    }
}

/// The worker roles of this catalog on every server, and the dropping of what roles own: the
/// service that databases and backups share to run tenant code and to clean up after it.
pub(crate) struct Workers {
    ctx: Arc<Context>,
    /// Where the CAs of servers reached over TLS are written for the pg tools.
    tls_dir: PathBuf,
}

impl Workers {
    pub fn new(ctx: Arc<Context>, tls_dir: PathBuf) -> Self {
        Workers { ctx, tls_dir }
    }

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
        let admin = self.ctx.admin(server).await?;
        let superuser = crate::provision::admin_is_superuser(&admin, &server.name).await?;
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
        let admin = servers::admin_config(self.ctx.pool(), self.ctx.secret(), worker.server.id).await?;
        Ok(admin.with_config(worker.config(&admin.config, dbname)))
    }

    /// The environment of a pg tool that connects as `worker` to `dbname`: where, who, and
    /// the TLS that checks the server.
    pub(crate) fn worker_tool_env(
        &self,
        reach: &Reach,
        dbname: &str,
    ) -> Result<Vec<(&'static str, String)>, DbError> {
        let mut env = crate::pg_tools::pg_env(&reach.config, dbname);
        let tls = reach.tool_env(&self.tls_dir).map_err(|err| DbError::Server {
            server: "-".into(),
            message: format!("cannot write the server's CA for the pg tools: {err}"),
        })?;
        env.extend(tls);
        Ok(env)
    }

    /// Drops a worker: takes its rights and its login first (and every role that was made a
    /// member of it: tenant code may have granted it to the tenant), ends its sessions, hands
    /// what it made in `database` to the owner role it worked for, drops what it was granted
    /// anywhere, and drops the role. Failures are logged; the next start tries again.
    pub(crate) async fn drop_worker(&self, worker: Worker, database: Option<&str>) {
        if let Err(err) = self.try_drop_worker(&worker, database).await {
            tracing::warn!(worker = %worker.name, server = %worker.server.name, error = %err, "cannot drop a worker role; the next start drops it");
        }
    }

    async fn try_drop_worker(&self, worker: &Worker, database: Option<&str>) -> Result<(), DbError> {
        let on_server = DbError::on_server(&worker.server.name);
        let role = ident(&worker.name);
        let admin = self.ctx.admin(&worker.server).await?;
        disarm(&admin, &worker.server, &worker.name).await?;
        // Tenant code ran in one database only (the scratch one, for verification, is gone):
        // what it could have made or been granted is there or on shared objects, and
        // DROP OWNED in that database (or the admin's) takes both.
        let here = match database {
            Some(database)
                if crate::provision::database_named(&admin, &worker.server.name, database).await? =>
            {
                Some(database)
            }
            _ => None,
        };
        let mut cleanup = String::new();
        if let (Some(_), Some(owner)) = (here, &worker.member_of) {
            cleanup.push_str(&format!("REASSIGN OWNED BY {role} TO {};", ident(owner)));
        }
        cleanup.push_str(&format!("DROP OWNED BY {role} CASCADE"));
        let inside = self.ctx.connect_server(&worker.server, here).await?;
        inside.batch_execute(&cleanup).await.map_err(&on_server)?;
        admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await.map_err(&on_server)
    }

    /// Runs `DROP OWNED BY roles` in every database of `server` that takes connections: what
    /// they own goes, and so does every privilege granted to them (here and on shared objects),
    /// which a tenant may have granted on purpose to make `DROP ROLE` fail. Returns an error
    /// only when the server is unreachable.
    pub(crate) async fn drop_owned_everywhere(
        &self,
        server: &Server,
        roles: &[String],
    ) -> Result<(), DbError> {
        let admin = self.ctx.admin(server).await?;
        let on_server = DbError::on_server(&server.name);
        let existing: Vec<String> = admin
            .query("SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1)", &[&roles])
            .await
            .map_err(&on_server)?
            .iter()
            .map(|r| ident(r.get(0)))
            .collect();
        if existing.is_empty() {
            return Ok(());
        }
        let databases: Vec<String> = admin
            .query("SELECT datname::text FROM pg_catalog.pg_database WHERE datallowconn", &[])
            .await
            .map_err(&on_server)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(admin);
        let statement = format!("DROP OWNED BY {} CASCADE", existing.join(", "));
        for database in &databases {
            let dropped = match self.ctx.connect_server(server, Some(database)).await {
                Ok(inside) => inside.batch_execute(&statement).await,
                Err(err) => {
                    tracing::debug!(database, error = %err, "cannot reach a database to drop what roles own");
                    continue;
                }
            };
            if let Err(err) = dropped {
                tracing::warn!(database, error = %err, "cannot drop what roles own; dropping them may fail");
            }
        }
        Ok(())
    }

    /// Drops a client database and its roles. Only call it for a database that
    /// [`provision::check_ours`] accepts. What the roles own or were granted in any other
    /// database goes first: another tenant may have granted them something on purpose, so that
    /// `DROP ROLE` would fail and leave the login role (whose password its tenant knows) behind.
    pub(crate) async fn drop_database_and_roles(
        &self,
        server: &Server,
        target: &crate::provision::Target<'_>,
    ) -> Result<(), DbError> {
        let admin = self.ctx.admin(server).await?;
        crate::provision::drop_database(&admin, target.server, target.pg_name).await?;
        drop(admin);
        self.drop_owned_everywhere(server, &crate::provision::roles(target)).await?;
        let admin = self.ctx.admin(server).await?;
        crate::provision::drop_roles(&admin, target).await
    }

    /// Drops the worker roles a crash left on any server.
    pub async fn sweep_all_workers(&self) {
        let servers = match servers::list(self.ctx.pool()).await {
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

    /// Drops the workers a crash left on `server` (this catalog's only), one by one.
    pub(crate) async fn sweep_workers(&self, server: &Server) -> Result<usize, DbError> {
        let prefix = self.worker_prefix().await?;
        let admin = self.ctx.admin(server).await?;
        let on_server = DbError::on_server(&server.name);
        let left: Vec<String> = admin
            .query("SELECT rolname::text FROM pg_catalog.pg_roles WHERE starts_with(rolname, $1)", &[&prefix])
            .await
            .map_err(&on_server)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for worker in &left {
            disarm(&admin, server, worker).await?;
        }
        self.drop_owned_everywhere(server, &left).await?;
        let mut dropped = 0;
        for worker in &left {
            match admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(worker))).await {
                Ok(()) => dropped += 1,
                Err(err) => {
                    tracing::warn!(worker, error = %DbError::on_server(&server.name)(err), "cannot drop a stray worker role")
                }
            }
        }
        Ok(dropped)
    }

    /// `silo_w_<first 12 hex digits of the catalog id>_`.
    async fn worker_prefix(&self) -> Result<String, DbError> {
        Ok(format!("{PREFIX}{}_", &self.ctx.catalog_id().await?[..12]))
    }
}

/// Takes a worker's rights before anything else: no login, no membership in any role, no role
/// made a member of it but the admin (tenant code may have granted it to the tenant's login
/// role), and no session.
async fn disarm(admin: &tokio_postgres::Client, server: &Server, worker: &str) -> Result<(), DbError> {
    let on_server = DbError::on_server(&server.name);
    let role = ident(worker);
    let memberships: Vec<String> = admin
        .query(
            "SELECT pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(m.roleid)), \
                    pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(m.member)), \
                    m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1) \
             FROM pg_catalog.pg_auth_members m \
             WHERE (m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1) \
                 OR m.roleid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)) \
               AND m.member <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)",
            &[&worker],
        )
        .await
        .map_err(&on_server)?
        .iter()
        .map(|r| format!("REVOKE {} FROM {} CASCADE;", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    let mut sql = format!("ALTER ROLE {role} NOLOGIN;");
    for revoke in memberships {
        sql.push_str(&revoke);
    }
    admin.batch_execute(&sql).await.map_err(&on_server)?;
    admin
        .execute(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = $1",
            &[&worker],
        )
        .await
        .map_err(&on_server)?;
    Ok(())
}
