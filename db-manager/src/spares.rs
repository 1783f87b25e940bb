//! Spare databases: a few empty databases made ahead on each server, so that creating a
//! client database renames one (a catalog change) instead of waiting for `CREATE DATABASE`,
//! which copies the template and fsyncs it.
//!
//! A spare is made by the admin role, closed to PUBLIC (the database and its `public`
//! schema), and only then marked ready. A create claims one (`FOR UPDATE SKIP LOCKED`), renames
//! it and gives it to the new role; on Postgres 15 and later `public` belongs to
//! `pg_database_owner`, so the new owner owns it at once. Older servers get no spares. A
//! replenisher refills the pool after each claim and on every sampler round.

use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};

use crate::context::Context;
use crate::names::ident;
use crate::servers::{self, Server};
use crate::{DbError, provision};

/// Advisory-lock class of a server's replenisher ("SP").
const SPARES_LOCK_CLASS: i32 = 0x5350;
/// Spares need `public` owned by `pg_database_owner`: Postgres 15.
const MIN_VERSION_NUM: i32 = 150_000;
const PREFIX: &str = "silo_spare_";

/// This catalog's spares are `silo_spare_<first 12 hex digits of the catalog id>_<random>`, so
/// that Silo deployments sharing a server never take or drop each other's.
async fn catalog_prefix(ctx: &Context) -> Result<String, DbError> {
    let id = ctx.catalog_id().await?;
    Ok(format!("{PREFIX}{}_", &id[..12.min(id.len())]))
}

/// The spares service: how many each server keeps, over the shared context.
pub(crate) struct Spares {
    ctx: Arc<Context>,
    per_server: usize,
}

impl Spares {
    pub fn new(ctx: Arc<Context>, per_server: usize) -> Self {
        Spares { ctx, per_server }
    }

    /// Refills every server's pool of spares, in the background.
    pub fn replenish_soon(self: &Arc<Self>) {
        if self.per_server == 0 {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(err) = this.replenish().await {
                tracing::warn!(error = %err, "cannot make spare databases");
            }
        });
    }

    /// Tidies every server's spares (see [`Spares::tidy`]) and makes new ones until each
    /// server has its share.
    pub async fn replenish(&self) -> Result<(), DbError> {
        let wanted = self.per_server as i64;
        if wanted == 0 {
            return Ok(());
        }
        for server in servers::list(self.ctx.pool()).await? {
            let Some(_lock) = self.ctx.lock(SPARES_LOCK_CLASS, server.id).await? else { continue };
            self.tidy(&server).await?;
            let client = self.ctx.pool().get().await?;
            let have: i64 = client
                .query_one(
                    "SELECT count(*) FROM database_spares WHERE server_id = $1 AND claimed_at IS NULL",
                    &[&server.id],
                )
                .await?
                .get(0);
            drop(client);
            for _ in have..wanted {
                if !self.make(&server).await? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Makes one spare on `server`; `false` when the server is too old for spares.
    async fn make(&self, server: &Server) -> Result<bool, DbError> {
        let admin = self.ctx.admin(server).await?;
        let version: String = admin
            .query_one("SHOW server_version_num", &[])
            .await
            .map_err(DbError::on_server(&server.name))?
            .get(0);
        if version.parse::<i32>().unwrap_or(0) < MIN_VERSION_NUM {
            return Ok(false);
        }
        let prefix = catalog_prefix(&self.ctx).await?;
        let name =
            format!("{prefix}{}", Alphanumeric.sample_string(&mut rand::rng(), 12).to_ascii_lowercase());
        let client = self.ctx.pool().get().await?;
        client
            .execute("INSERT INTO database_spares (server_id, name) VALUES ($1, $2)", &[&server.id, &name])
            .await?;
        drop(client);
        let quoted = ident(&name);
        admin
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
            .map_err(DbError::on_server(&server.name))?;
        admin
            .batch_execute(&format!("REVOKE ALL ON DATABASE {quoted} FROM PUBLIC"))
            .await
            .map_err(DbError::on_server(&server.name))?;
        let inside = self.ctx.connect_server(server, Some(&name)).await?;
        inside
            .batch_execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            .await
            .map_err(DbError::on_server(&server.name))?;
        drop(inside);
        let client = self.ctx.pool().get().await?;
        client
            .execute(
                "UPDATE database_spares SET ready = true WHERE server_id = $1 AND name = $2",
                &[&server.id, &name],
            )
            .await?;
        Ok(true)
    }

    /// Takes a ready spare of `server`, if there is one. The caller renames it, then calls
    /// [`Spares::release`] whatever happened.
    pub async fn claim(&self, server: &Server) -> Result<Option<String>, DbError> {
        if self.per_server == 0 {
            return Ok(None);
        }
        let client = self.ctx.pool().get().await?;
        let row = client
            .query_opt(
                // Picked once, in a materialized CTE: as a semi-join the LIMIT subquery may be
                // rescanned per row (a plan chosen without statistics, after a catalog restore)
                // and claim two spares.
                "WITH picked AS MATERIALIZED (SELECT server_id, name FROM database_spares \
                   WHERE server_id = $1 AND ready AND claimed_at IS NULL \
                   ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 UPDATE database_spares s SET claimed_at = now() FROM picked \
                 WHERE s.server_id = picked.server_id AND s.name = picked.name RETURNING s.name",
                &[&server.id],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Forgets a claimed spare once the create has renamed it (or given up on it).
    pub async fn release(&self, server: &Server, name: &str) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        client
            .execute("DELETE FROM database_spares WHERE server_id = $1 AND name = $2", &[&server.id, &name])
            .await?;
        Ok(())
    }

    /// Makes `target` out of the spare `spare`: renamed, and owned by the target's role.
    pub async fn adopt(
        &self,
        admin: &tokio_postgres::Client,
        target: &provision::Target<'_>,
        spare: &str,
    ) -> Result<(), DbError> {
        let sql = format!(
            "ALTER DATABASE {spare} RENAME TO {name}; ALTER DATABASE {name} OWNER TO {owner}",
            spare = ident(spare),
            name = ident(target.pg_name),
            owner = ident(&target.owner())
        );
        admin.batch_execute(&sql).await.map_err(DbError::on_server(target.server))
    }

    /// Under the server's replenisher lock: drops the spares that no row stands for, the ones a
    /// crash left half-made, and the ones whose create died between claiming and renaming.
    async fn tidy(&self, server: &Server) -> Result<(), DbError> {
        let admin = self.ctx.admin(server).await?;
        let client = self.ctx.pool().get().await?;
        let half_made: Vec<String> = client
            .query(
                "DELETE FROM database_spares WHERE server_id = $1 AND NOT ready RETURNING name",
                &[&server.id],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let known: Vec<String> = client
            .query("SELECT name FROM database_spares WHERE server_id = $1", &[&server.id])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        drop(client);
        let prefix = catalog_prefix(&self.ctx).await?;
        let present: Vec<String> = admin
            .query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", &[&prefix])
            .await
            .map_err(DbError::on_server(&server.name))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for name in present.iter().filter(|name| !known.contains(name) || half_made.contains(name)) {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)))
                .await
                .map_err(DbError::on_server(&server.name))?;
            tracing::info!(server = %server.name, database = %name, "dropped a stray spare database");
        }
        Ok(())
    }

    /// Drops every spare of a server that is being removed.
    pub async fn drop_all(&self, server: &Server) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        let names: Vec<String> = client
            .query("DELETE FROM database_spares WHERE server_id = $1 RETURNING name", &[&server.id])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        drop(client);
        if names.is_empty() {
            return Ok(());
        }
        let admin = self.ctx.admin(server).await?;
        for name in names {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&name)))
                .await
                .map_err(DbError::on_server(&server.name))?;
        }
        Ok(())
    }
}
