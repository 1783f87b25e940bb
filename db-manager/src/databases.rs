//! Client databases: create (idempotent, resumable), list, show, resize, rotate and delete.
//!
//! A create runs its steps (role, database, grants, schema ownership) under a per-database
//! advisory lock, in a task of its own so that a client hanging up cannot stop it half-way.
//! A create that dies anyway leaves a `creating` row: the next create of the same name
//! finishes it, and the next start cleans it up.

use serde::{Deserialize, Serialize};
use storage_node::keys::TenantId;

use crate::manager::DbManager;
use crate::names::{is_valid_database_name, server_name};
use crate::plans::Plan;
use crate::provision::{self, Target};
use crate::servers::{self, Server};
use crate::{DbError, faults};

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
    pub state: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub size_bytes: Option<i64>,
    pub storage_quota_bytes: i64,
    pub connection_limit: Option<u32>,
    pub connections: Option<i32>,
    pub sampled_at: Option<String>,
    pub last_backup_at: Option<String>,
    pub deletion_protection: bool,
    pub created_at: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

/// A change of a database's state, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: String,
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
    pub tenant: String,
    pub name: String,
    pub server: Server,
    pub pg_name: String,
    pub plan: String,
    pub state: String,
    pub deletion_protection: bool,
}

impl Row {
    pub fn target(&self) -> Target<'_> {
        Target { server: &self.server.name, pg_name: &self.pg_name }
    }
}

const RFC3339: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

fn info_select(filter: &str) -> String {
    format!(
        "SELECT t.name, d.name, s.name, s.zone, d.plan, d.state, s.public_host, s.public_port, d.pg_name, \
                d.size_bytes, d.storage_quota_bytes, d.connections, \
                to_char(d.sampled_at AT TIME ZONE 'UTC', {RFC3339}), \
                to_char(d.last_backup_at AT TIME ZONE 'UTC', {RFC3339}), d.deletion_protection, \
                to_char(d.created_at AT TIME ZONE 'UTC', {RFC3339}), d.id \
         FROM tenant_databases d JOIN tenants t ON t.id = d.tenant_id JOIN db_servers s ON s.id = d.server_id \
         WHERE t.name = $1 AND d.state <> 'creating' {filter} ORDER BY d.name"
    )
}

impl DbManager {
    /// Creates a database for `tenant`. With an `idempotency_key` that was used before for the
    /// same request, returns the first result again.
    ///
    /// # Errors
    /// [`DbError::InvalidName`] (nothing runs on any server), [`DbError::UnknownPlan`],
    /// [`DbError::TenantNotFound`], [`DbError::Exists`], [`DbError::Busy`], [`DbError::NoServer`],
    /// [`DbError::IdempotencyMismatch`], and server errors.
    pub async fn create_database(
        &self,
        tenant: &str,
        request: CreateRequest,
        idempotency_key: Option<String>,
    ) -> Result<Credentials, DbError> {
        if !is_valid_database_name(&request.name) {
            return Err(DbError::InvalidName(request.name));
        }
        self.plans().require(&request.plan)?;
        let tenant_id = servers::tenant_id(self.pool(), tenant).await?;
        let digest = blake3::hash(&serde_json::to_vec(&request).unwrap_or_default()).as_bytes().to_vec();
        if let Some(key) = &idempotency_key
            && let Some(first) = self.idempotent_result(tenant_id, key, &digest).await?
        {
            return Ok(first);
        }
        // A task of its own: the steps run to the end even if the caller goes away.
        let this = self.clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move {
            let created = this.create_steps(tenant_id, &tenant, &request).await?;
            if let Some(key) = idempotency_key {
                this.remember_result(tenant_id, &key, &digest, &created).await?;
            }
            Ok(created)
        })
        .await
        .map_err(|err| DbError::Server {
            server: "-".into(),
            message: format!("the create task failed: {err}"),
        })?
    }

    async fn create_steps(
        &self,
        tenant_id: TenantId,
        tenant: &str,
        request: &CreateRequest,
    ) -> Result<Credentials, DbError> {
        let plan = self.plans().require(&request.plan)?.clone();
        let (id, resumed) = self.claim_row(tenant_id, tenant, request, &plan).await?;
        let Some(_lock) = self.lock_database(id).await? else {
            return Err(DbError::Busy { name: request.name.clone() });
        };
        let row = self.row_by_id(id).await?;
        if row.state != "creating" {
            return Err(DbError::Exists { tenant: tenant.into(), name: request.name.clone() });
        }
        let password = provision::generate_password();
        let outcome = self.provision(&row, &plan, &password, resumed).await;
        if let Err(err) = outcome {
            tracing::warn!(tenant, database = %row.name, error = %err, "create failed; undoing it");
            if !matches!(err, DbError::RoleTaken { .. }) {
                let undo = async {
                    let admin = self.admin(&row.server).await?;
                    provision::drop_database_and_role(&admin, &row.target()).await
                };
                if let Err(undo_err) = undo.await {
                    tracing::error!(database = %row.name, error = %undo_err, "cannot undo the create; the next start cleans it up");
                    return Err(err);
                }
            }
            let client = self.pool().get().await?;
            client.execute("DELETE FROM tenant_databases WHERE id = $1", &[&id]).await?;
            return Err(err);
        }
        let client = self.pool().get().await?;
        client
            .execute(
                "WITH activated AS (UPDATE tenant_databases SET state = 'active' WHERE id = $1) \
                 INSERT INTO database_events (database_id, event, detail) VALUES ($1, 'created', $2)",
                &[&id, &format!("plan {} on server {}", row.plan, row.server.name)],
            )
            .await?;
        drop(client);
        tracing::info!(tenant, database = %row.name, server = %row.server.name, plan = %row.plan, resumed, "created database");
        Ok(credentials(&row, password))
    }

    /// Inserts the `creating` row (placing the database), or finds the one a dead create left.
    /// Returns its id and whether it was left over.
    async fn claim_row(
        &self,
        tenant_id: TenantId,
        tenant: &str,
        request: &CreateRequest,
        plan: &Plan,
    ) -> Result<(i64, bool), DbError> {
        let client = self.pool().get().await?;
        let existing = client
            .query_opt(
                "SELECT id, state FROM tenant_databases WHERE tenant_id = $1 AND name = $2",
                &[&tenant_id.0, &request.name],
            )
            .await?;
        if let Some(row) = existing {
            if row.get::<_, String>(1) == "creating" {
                return Ok((row.get(0), true));
            }
            return Err(DbError::Exists { tenant: tenant.into(), name: request.name.clone() });
        }
        drop(client);
        let server =
            servers::place(self.pool(), tenant_id, tenant, request.zone.as_deref(), plan.storage_quota_bytes)
                .await?;
        let pg_name = server_name(tenant, &request.name);
        let client = self.pool().get().await?;
        let inserted = client
            .query_opt(
                "INSERT INTO tenant_databases (tenant_id, name, server_id, pg_name, plan, storage_quota_bytes, \
                 state, deletion_protection) VALUES ($1, $2, $3, $4, $5, $6, 'creating', $7) \
                 ON CONFLICT DO NOTHING RETURNING id",
                &[
                    &tenant_id.0,
                    &request.name,
                    &server.id,
                    &pg_name,
                    &request.plan,
                    &(plan.storage_quota_bytes as i64),
                    &request.deletion_protection,
                ],
            )
            .await?;
        match inserted {
            Some(row) => Ok((row.get(0), false)),
            None => Err(DbError::Busy { name: request.name.clone() }),
        }
    }

    /// The steps on the server. Each is idempotent, so a resumed create runs them all.
    async fn provision(&self, row: &Row, plan: &Plan, password: &str, resumed: bool) -> Result<(), DbError> {
        let target = row.target();
        let admin = self.admin(&row.server).await?;
        if !resumed && provision::role_exists(&admin, &target).await? {
            return Err(DbError::RoleTaken { role: row.pg_name.clone(), server: row.server.name.clone() });
        }
        faults::crash_point("create.before_role");
        provision::ensure_role(&admin, &target, password, plan).await?;
        faults::crash_point("create.after_role");
        let mut from_spare = false;
        if !provision::database_exists(&admin, &target).await?
            && let Some(spare) = self.claim_spare(&row.server).await?
        {
            self.replenish_spares_soon();
            match self.adopt_spare(&admin, &target, &spare).await {
                Ok(()) => from_spare = true,
                Err(err) => tracing::warn!(spare, error = %err, "cannot use a spare database; creating one"),
            }
        }
        provision::ensure_database(&admin, &target, plan).await?;
        faults::crash_point("create.after_database");
        if from_spare {
            // The spare's `public` is closed to PUBLIC and belongs to pg_database_owner.
            return Ok(());
        }
        let inside = self.connect_server(&row.server, Some(&row.pg_name)).await?;
        provision::own_public_schema(&inside, &target).await
    }

    async fn idempotent_result(
        &self,
        tenant_id: TenantId,
        key: &str,
        digest: &[u8],
    ) -> Result<Option<Credentials>, DbError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT request_digest, response_sealed FROM database_idempotency WHERE tenant_id = $1 AND key = $2",
                &[&tenant_id.0, &key],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        if row.get::<_, &[u8]>(0) != digest {
            return Err(DbError::IdempotencyMismatch);
        }
        let opened = self.inner.secret.open(IDEMPOTENCY_PURPOSE, row.get(1)).ok_or(DbError::SealedSecret)?;
        serde_json::from_slice(&opened).map(Some).map_err(|_| DbError::SealedSecret)
    }

    async fn remember_result(
        &self,
        tenant_id: TenantId,
        key: &str,
        digest: &[u8],
        created: &Credentials,
    ) -> Result<(), DbError> {
        let sealed =
            self.inner.secret.seal(IDEMPOTENCY_PURPOSE, &serde_json::to_vec(created).unwrap_or_default());
        let client = self.pool().get().await?;
        client
            .execute(
                "INSERT INTO database_idempotency (tenant_id, key, request_digest, response_sealed) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&tenant_id.0, &key, &digest, &sealed],
            )
            .await?;
        Ok(())
    }

    /// The tenant's databases.
    pub async fn list_databases(&self, tenant: &str) -> Result<Vec<DatabaseInfo>, DbError> {
        servers::tenant_id(self.pool(), tenant).await?;
        let client = self.pool().get().await?;
        let rows = client.query(&info_select(""), &[&tenant]).await?;
        Ok(rows.iter().map(|row| self.info_from_row(row)).collect())
    }

    /// One database, with its recent state changes.
    pub async fn database(&self, tenant: &str, name: &str) -> Result<DatabaseInfo, DbError> {
        servers::tenant_id(self.pool(), tenant).await?;
        let client = self.pool().get().await?;
        let row = client
            .query_opt(&info_select("AND d.name = $2"), &[&tenant, &name])
            .await?
            .ok_or_else(|| DbError::NotFound { tenant: tenant.into(), name: name.into() })?;
        let mut info = self.info_from_row(&row);
        let id: i64 = row.get(16);
        let events = client
            .query(
                &format!(
                    "SELECT to_char(at AT TIME ZONE 'UTC', {RFC3339}), event, detail FROM database_events \
                     WHERE database_id = $1 ORDER BY id DESC LIMIT 50"
                ),
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
            connection_limit: self.plans().get(&plan).map(|p| p.connection_limit),
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
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT d.id FROM tenant_databases d JOIN tenants t ON t.id = d.tenant_id \
                 WHERE t.name = $1 AND d.name = $2 AND d.state <> 'creating'",
                &[&tenant, &name],
            )
            .await?
            .ok_or_else(|| DbError::NotFound { tenant: tenant.into(), name: name.into() })?;
        drop(client);
        self.row_by_id(row.get(0)).await
    }

    pub(crate) async fn row_by_id(&self, id: i64) -> Result<Row, DbError> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "SELECT d.id, t.name, d.name, d.server_id, d.pg_name, d.plan, d.state, d.deletion_protection \
                 FROM tenant_databases d JOIN tenants t ON t.id = d.tenant_id WHERE d.id = $1",
                &[&id],
            )
            .await?;
        drop(client);
        Ok(Row {
            id,
            tenant: row.get(1),
            name: row.get(2),
            server: servers::get_by_id(self.pool(), row.get(3)).await?,
            pg_name: row.get(4),
            plan: row.get(5),
            state: row.get(6),
            deletion_protection: row.get(7),
        })
    }

    pub(crate) async fn record_event(&self, id: i64, event: &str, detail: &str) -> Result<(), DbError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "INSERT INTO database_events (database_id, event, detail) VALUES ($1, $2, $3)",
                &[&id, &event, &detail],
            )
            .await?;
        Ok(())
    }

    /// Changes the plan (new limits apply at once; sessions within them stay) or the deletion
    /// protection.
    pub async fn update_database(
        &self,
        tenant: &str,
        name: &str,
        update: UpdateRequest,
    ) -> Result<DatabaseInfo, DbError> {
        let row = self.row(tenant, name).await?;
        let Some(_lock) = self.lock_database(row.id).await? else {
            return Err(DbError::Busy { name: name.into() });
        };
        if let Some(plan_name) = &update.plan {
            let plan = self.plans().require(plan_name)?.clone();
            let admin = self.admin(&row.server).await?;
            provision::apply_role_limits(&admin, &row.target(), &plan).await?;
            provision::ensure_database(&admin, &row.target(), &plan).await?;
            let client = self.pool().get().await?;
            client
                .execute(
                    "UPDATE tenant_databases SET plan = $2, storage_quota_bytes = $3 WHERE id = $1",
                    &[&row.id, plan_name, &(plan.storage_quota_bytes as i64)],
                )
                .await?;
            drop(client);
            self.record_event(row.id, "resized", &format!("plan {} -> {plan_name}", row.plan)).await?;
            tracing::info!(tenant, database = name, from = %row.plan, to = %plan_name, "resized database");
        }
        if let Some(protection) = update.deletion_protection {
            let client = self.pool().get().await?;
            client
                .execute(
                    "UPDATE tenant_databases SET deletion_protection = $2 WHERE id = $1",
                    &[&row.id, &protection],
                )
                .await?;
            drop(client);
            self.record_event(row.id, "deletion_protection", if protection { "on" } else { "off" }).await?;
        }
        self.database(tenant, name).await
    }

    /// Sets a new password. Sessions opened with the old one end after `grace` (at once when
    /// zero; later ones by the sampler, so a restart does not forget them).
    pub async fn rotate_credentials(
        &self,
        tenant: &str,
        name: &str,
        grace: std::time::Duration,
    ) -> Result<Credentials, DbError> {
        let row = self.row(tenant, name).await?;
        let Some(_lock) = self.lock_database(row.id).await? else {
            return Err(DbError::Busy { name: name.into() });
        };
        let password = provision::generate_password();
        let admin = self.admin(&row.server).await?;
        provision::set_password(&admin, &row.target(), &password).await?;
        let rotated_at: std::time::SystemTime = admin
            .query_one("SELECT clock_timestamp()", &[])
            .await
            .map_err(DbError::on_server(&row.server.name))?
            .get(0);
        if grace.is_zero() {
            let ended = provision::terminate_role_sessions(&admin, &row.target(), rotated_at).await?;
            tracing::info!(tenant, database = name, ended, "rotated credentials; ended the old sessions");
        } else {
            let client = self.pool().get().await?;
            client
                .execute(
                    "UPDATE tenant_databases SET terminate_started_before = $2, \
                     terminate_at = now() + make_interval(secs => $3) WHERE id = $1",
                    &[&row.id, &rotated_at, &grace.as_secs_f64()],
                )
                .await?;
            tracing::info!(
                tenant,
                database = name,
                ?grace,
                "rotated credentials; old sessions end after the grace"
            );
        }
        self.record_event(
            row.id,
            "credentials_rotated",
            &format!("old sessions end after {}s", grace.as_secs()),
        )
        .await?;
        Ok(credentials(&row, password))
    }

    /// Deletes a database and its role, unless deletion protection is on; first takes a final
    /// backup (kept for the configured retention) unless `skip_final_backup`.
    pub async fn delete_database(
        &self,
        tenant: &str,
        name: &str,
        skip_final_backup: bool,
    ) -> Result<(), DbError> {
        let row = self.row(tenant, name).await?;
        if row.deletion_protection {
            return Err(DbError::DeletionProtected { name: name.into() });
        }
        if !skip_final_backup {
            let backup = self.backup_now(&row, "final").await?;
            tracing::info!(tenant, database = name, backup = backup.id, "took the final backup");
        }
        let Some(_lock) = self.lock_database(row.id).await? else {
            return Err(DbError::Busy { name: name.into() });
        };
        let client = self.pool().get().await?;
        client.execute("UPDATE tenant_databases SET state = 'deleting' WHERE id = $1", &[&row.id]).await?;
        drop(client);
        self.record_event(row.id, "deleting", "").await?;
        let admin = self.admin(&row.server).await?;
        provision::drop_database_and_role(&admin, &row.target()).await?;
        let client = self.pool().get().await?;
        client.execute("DELETE FROM tenant_databases WHERE id = $1", &[&row.id]).await?;
        tracing::info!(tenant, database = name, server = %row.server.name, "deleted database");
        Ok(())
    }

    /// How many databases the tenant has (tenant deletion refuses while there are any).
    pub async fn count_databases(&self, tenant: TenantId) -> Result<i64, DbError> {
        let client = self.pool().get().await?;
        Ok(client
            .query_one("SELECT count(*) FROM tenant_databases WHERE tenant_id = $1", &[&tenant.0])
            .await?
            .get(0))
    }
}

fn credentials(row: &Row, password: String) -> Credentials {
    let host = &row.server.host;
    let url_host = if host.starts_with('/') {
        host.replace('/', "%2F")
    } else if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Credentials {
        tenant: row.tenant.clone(),
        name: row.name.clone(),
        server: row.server.name.clone(),
        zone: row.server.zone.clone(),
        plan: row.plan.clone(),
        url: format!(
            "postgresql://{}:{password}@{url_host}:{}/{}",
            row.pg_name, row.server.port, row.pg_name
        ),
        host: host.clone(),
        port: row.server.port,
        database: row.pg_name.clone(),
        user: row.pg_name.clone(),
        password,
    }
}
