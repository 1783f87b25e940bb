//! Client databases: the [`Databases`] service, what the API shows of them, and how they are
//! looked up. [`create`] makes them (idempotent, resumable); [`change`] resizes, protects,
//! rotates and deletes them; [`repair`] finishes at start what a crash left half-done.

mod change;
mod create;
mod repair;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use storage_node::TenantId;

use crate::DbError;
use crate::context::Context;
use crate::plans::Plans;
use crate::provision::Target;
use crate::servers::{self, Server};
use crate::spares::Spares;
use crate::states::DatabaseState;
use crate::timestamp;
use crate::workers::Workers;

/// Client databases on the servers: create, look up, change, delete, repair. It uses the spare
/// databases of [`Spares`] and the [`Workers`] that drop roles, and nothing above it: backups
/// and tenant deletion use it, never the reverse.
pub struct Databases {
    ctx: Arc<Context>,
    plans: Plans,
    spares: Arc<Spares>,
    workers: Arc<Workers>,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Databases").field("plans", &self.plans).finish_non_exhaustive()
    }
}

const IDEMPOTENCY_PURPOSE: &str = "database create response";

/// What ops send to create a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    #[serde(default = "default_plan")]
    pub plan: String,
    /// The zone to place it in; any when absent.
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub deletion_protection: bool,
}

fn default_plan() -> String {
    "small".into()
}

/// How to reach a database: shown at create and rotation only, as it holds the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub tenant: String,
    pub name: String,
    pub server: String,
    pub zone: String,
    pub plan: String,
    /// A libpq URL that `psql` takes as it is.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
}

/// A database as listed and shown.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseInfo {
    pub tenant: String,
    pub name: String,
    pub server: String,
    pub zone: String,
    pub plan: String,
    pub state: DatabaseState,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub size_bytes: Option<i64>,
    pub storage_quota_bytes: i64,
    pub connection_limit: Option<u32>,
    pub connections: Option<i32>,
    #[serde(serialize_with = "timestamp::option::serialize")]
    pub sampled_at: Option<time::OffsetDateTime>,
    #[serde(serialize_with = "timestamp::option::serialize")]
    pub last_backup_at: Option<time::OffsetDateTime>,
    pub deletion_protection: bool,
    #[serde(serialize_with = "timestamp::serialize")]
    pub created_at: time::OffsetDateTime,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

/// A change of a database's state, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(serialize_with = "timestamp::serialize")]
    pub at: time::OffsetDateTime,
    pub event: String,
    pub detail: String,
}

/// What a PATCH may change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    pub plan: Option<String>,
    pub deletion_protection: Option<bool>,
}

/// A database row with the fields the operations need.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: i64,
    pub tenant_id: TenantId,
    pub tenant: String,
    pub name: String,
    pub server: Server,
    pub pg_name: String,
    pub plan: String,
    pub state: DatabaseState,
    pub deletion_protection: bool,
}

impl Row {
    pub fn target(&self) -> Target<'_> {
        Target { server: &self.server.name, pg_name: &self.pg_name }
    }
}

/// The listing query: `$1` is the tenant, `$2` the state the API never shows (`creating`);
/// `filter` may use `$3` on.
fn info_select(filter: &str) -> String {
    format!(
        "SELECT t.name, d.name, s.name, s.zone, d.plan, d.state, s.public_host, s.public_port, d.pg_name, \
                d.size_bytes, d.storage_quota_bytes, d.connections, d.sampled_at, d.last_backup_at, \
                d.deletion_protection, d.created_at, d.id \
         FROM tenant_databases d JOIN tenants t ON t.id = d.tenant_id JOIN db_servers s ON s.id = d.server_id \
         WHERE t.name = $1 AND d.state <> $2 {filter} ORDER BY d.name"
    )
}

impl Databases {
    pub(crate) fn new(ctx: Arc<Context>, plans: Plans, spares: Arc<Spares>, workers: Arc<Workers>) -> Self {
        Databases { ctx, plans, spares, workers }
    }

    /// The tenant's databases.
    pub async fn list_databases(&self, tenant: &str) -> Result<Vec<DatabaseInfo>, DbError> {
        servers::tenant_id(self.ctx.pool(), tenant).await?;
        let client = self.ctx.pool().get().await?;
        let rows = client.query(&info_select(""), &[&tenant, &DatabaseState::Creating]).await?;
        Ok(rows.iter().map(|row| self.info_from_row(row)).collect())
    }

    /// One database, with its recent state changes.
    pub async fn database(&self, tenant: &str, name: &str) -> Result<DatabaseInfo, DbError> {
        servers::tenant_id(self.ctx.pool(), tenant).await?;
        let client = self.ctx.pool().get().await?;
        let row = client
            .query_opt(&info_select("AND d.name = $3"), &[&tenant, &DatabaseState::Creating, &name])
            .await?
            .ok_or_else(|| DbError::NotFound { tenant: tenant.into(), name: name.into() })?;
        let mut info = self.info_from_row(&row);
        let id: i64 = row.get(16);
        let events = client
            .query(
                "SELECT at, event, detail FROM database_events WHERE database_id = $1 \
                 ORDER BY id DESC LIMIT 50",
                &[&id],
            )
            .await?;
        info.events =
            events.iter().map(|e| Event { at: e.get(0), event: e.get(1), detail: e.get(2) }).collect();
        Ok(info)
    }

    fn info_from_row(&self, row: &tokio_postgres::Row) -> DatabaseInfo {
        let plan: String = row.get(4);
        let pg_name: String = row.get(8);
        DatabaseInfo {
            tenant: row.get(0),
            name: row.get(1),
            server: row.get(2),
            zone: row.get(3),
            connection_limit: self.plans.get(&plan).map(|p| p.connection_limit),
            plan,
            state: row.get(5),
            host: row.get(6),
            port: row.get::<_, i32>(7) as u16,
            database: pg_name.clone(),
            user: pg_name,
            size_bytes: row.get(9),
            storage_quota_bytes: row.get(10),
            connections: row.get(11),
            sampled_at: row.get(12),
            last_backup_at: row.get(13),
            deletion_protection: row.get(14),
            created_at: row.get(15),
            events: Vec::new(),
        }
    }

    pub(crate) async fn row(&self, tenant: &str, name: &str) -> Result<Row, DbError> {
        let client = self.ctx.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT d.id FROM tenant_databases d JOIN tenants t ON t.id = d.tenant_id \
                 WHERE t.name = $1 AND d.name = $2 AND d.state <> $3",
                &[&tenant, &name, &DatabaseState::Creating],
            )
            .await?
            .ok_or_else(|| DbError::NotFound { tenant: tenant.into(), name: name.into() })?;
        drop(client);
        self.row_by_id(row.get(0)).await
    }

    pub(crate) async fn row_by_id(&self, id: i64) -> Result<Row, DbError> {
        let client = self.ctx.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT d.tenant_id, t.name, d.name, d.server_id, d.pg_name, d.plan, d.state, d.deletion_protection \
                 FROM tenant_databases d JOIN tenants t ON t.id = d.tenant_id WHERE d.id = $1",
                &[&id],
            )
            .await?
            .ok_or_else(|| DbError::InvalidRequest(format!("database #{id} vanished from the catalog")))?;
        drop(client);
        Ok(Row {
            id,
            tenant_id: TenantId(row.get(0)),
            tenant: row.get(1),
            name: row.get(2),
            server: servers::get_by_id(self.ctx.pool(), row.get(3)).await?,
            pg_name: row.get(4),
            plan: row.get(5),
            state: row.get(6),
            deletion_protection: row.get(7),
        })
    }
}

fn credentials(row: &Row, password: String) -> Result<Credentials, DbError> {
    let host = &row.server.host;
    let url = crate::conn_url::postgres_url(&row.pg_name, &password, host, row.server.port, &row.pg_name)
        .map_err(|err| DbError::InvalidServer(err.to_string()))?;
    Ok(Credentials {
        tenant: row.tenant.clone(),
        name: row.name.clone(),
        server: row.server.name.clone(),
        zone: row.server.zone.clone(),
        plan: row.plan.clone(),
        url,
        host: host.clone(),
        port: row.server.port,
        database: row.pg_name.clone(),
        user: row.pg_name.clone(),
        password,
    })
}
