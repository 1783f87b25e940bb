//! Creating a client database: idempotent and resumable.
//!
//! The steps (role, database, grants, limits, schema ownership) run under a per-database
//! advisory lock, in a task of their own so that a client hanging up cannot stop them half-way.
//! A create that dies anyway leaves a `creating` row: the next create of the same name finishes
//! it, and the next start cleans it up.

use std::sync::Arc;

use storage_node::TenantId;

use super::{CreateRequest, Credentials, Databases, IDEMPOTENCY_PURPOSE, Row, credentials};
use crate::names::{is_valid_database_name, server_name};
use crate::plans::Plan;
use crate::provision;
use crate::servers;
use crate::states::DatabaseState;
use crate::{DbError, faults};

impl Databases {
    /// Creates a database for `tenant`. With an `idempotency_key` that was used before for the
    /// same request, returns the first result again.
    ///
    /// # Errors
    /// [`DbError::InvalidName`] (nothing runs on any server), [`DbError::UnknownPlan`],
    /// [`DbError::TenantNotFound`], [`DbError::Exists`], [`DbError::Busy`], [`DbError::NoServer`],
    /// [`DbError::IdempotencyMismatch`], and server errors.
    pub async fn create_database(
        self: &Arc<Self>,
        tenant: &str,
        request: CreateRequest,
        idempotency_key: Option<String>,
    ) -> Result<Credentials, DbError> {
        if !is_valid_database_name(&request.name) {
            return Err(DbError::InvalidName(request.name));
        }
        self.plans.require(&request.plan)?;
        let tenant_id = servers::tenant_id(self.ctx.pool(), tenant).await?;
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
        let plan = self.plans.require(&request.plan)?.clone();
        let (id, resumed) = self.claim_row(tenant_id, tenant, request, &plan).await?;
        let Some(_lock) = self.ctx.lock_database(id).await? else {
            return Err(DbError::Busy { name: request.name.clone() });
        };
        let row = self.row_by_id(id).await?;
        if row.state != DatabaseState::Creating {
            return Err(DbError::Exists { tenant: tenant.into(), name: request.name.clone() });
        }
        let password = provision::generate_password();
        let outcome = self.provision(&row, &plan, &password).await;
        if let Err(err) = outcome {
            tracing::warn!(tenant, database = %row.name, error = %err, "create failed; undoing it");
            if !matches!(err, DbError::RoleTaken { .. } | DbError::DatabaseTaken { .. }) {
                let undo = async {
                    let admin = self.ctx.admin(&row.server).await?;
                    // Only what Silo made for this row is ever dropped.
                    provision::check_ours(&admin, &row.target(), &self.ctx.marker(row.id).await?).await?;
                    drop(admin);
                    self.workers.drop_database_and_roles(&row.server, &row.target()).await
                };
                if let Err(undo_err) = undo.await {
                    tracing::error!(database = %row.name, error = %undo_err, "cannot undo the create; the next start cleans it up");
                    return Err(err);
                }
            }
            let client = self.ctx.pool().get().await?;
            client.execute("DELETE FROM tenant_databases WHERE id = $1", &[&id]).await?;
            return Err(err);
        }
        let client = self.ctx.pool().get().await?;
        client
            .execute(
                "WITH activated AS (UPDATE tenant_databases SET state = $3 WHERE id = $1) \
                 INSERT INTO database_events (database_id, event, detail) VALUES ($1, 'created', $2)",
                &[&id, &format!("plan {} on server {}", row.plan, row.server.name), &DatabaseState::Active],
            )
            .await?;
        drop(client);
        tracing::info!(tenant, database = %row.name, server = %row.server.name, plan = %row.plan, resumed, "created database");
        credentials(&row, password)
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
        let client = self.ctx.pool().get().await?;
        let existing = client
            .query_opt(
                "SELECT id, state FROM tenant_databases WHERE tenant_id = $1 AND name = $2",
                &[&tenant_id.0, &request.name],
            )
            .await?;
        if let Some(row) = existing {
            if row.get::<_, DatabaseState>(1) == DatabaseState::Creating {
                return Ok((row.get(0), true));
            }
            return Err(DbError::Exists { tenant: tenant.into(), name: request.name.clone() });
        }
        drop(client);
        let server = servers::place(
            self.ctx.pool(),
            tenant_id,
            tenant,
            request.zone.as_deref(),
            plan.storage_quota_bytes,
        )
        .await?;
        let pg_name = server_name(tenant, &request.name)
            .ok_or_else(|| DbError::ReservedName { tenant: tenant.into() })?;
        // The tenant's row is held shared while the row goes in: a deletion that starts meanwhile
        // (it marks the tenant first) waits, and then finds this database to delete.
        let mut client = self.ctx.pool().get().await?;
        let txn = client.transaction().await?;
        let live = txn
            .query_opt(
                "SELECT 1 FROM tenants WHERE id = $1 AND deleting_at IS NULL FOR SHARE",
                &[&tenant_id.0],
            )
            .await?;
        if live.is_none() {
            return Err(DbError::TenantDeleting(tenant.into()));
        }
        let inserted = txn
            .query_opt(
                "INSERT INTO tenant_databases (tenant_id, name, server_id, pg_name, plan, storage_quota_bytes, \
                 state, deletion_protection) VALUES ($1, $2, $3, $4, $5, $6, $8, $7) \
                 ON CONFLICT DO NOTHING RETURNING id",
                &[
                    &tenant_id.0,
                    &request.name,
                    &server.id,
                    &pg_name,
                    &request.plan,
                    &(plan.storage_quota_bytes as i64),
                    &request.deletion_protection,
                    &DatabaseState::Creating,
                ],
            )
            .await?;
        txn.commit().await?;
        match inserted {
            Some(row) => Ok((row.get(0), false)),
            None => Err(DbError::Busy { name: request.name.clone() }),
        }
    }

    /// The steps on the server. Each is idempotent, so a resumed create runs them all. A role or
    /// database of the same name that Silo did not make for this row is refused, untouched.
    async fn provision(&self, row: &Row, plan: &Plan, password: &str) -> Result<(), DbError> {
        let target = row.target();
        let marker = self.ctx.marker(row.id).await?;
        let admin = self.ctx.admin(&row.server).await?;
        faults::crash_point("create.before_role");
        provision::ensure_roles(&admin, &target, password, plan, &marker).await?;
        faults::crash_point("create.after_role");
        let mut from_spare = false;
        let spare = match provision::database_exists(&admin, &target).await? {
            true => None,
            // A spare is an optimisation: failing to take one only means making the database.
            false => self.spares.claim(&row.server).await.unwrap_or_else(|err| {
                tracing::warn!(error = %err, "cannot take a spare database; creating one");
                None
            }),
        };
        if let Some(spare) = spare {
            self.spares.replenish_soon();
            match self.spares.adopt(&admin, &target, &spare).await {
                Ok(()) => from_spare = true,
                Err(err) => tracing::warn!(spare, error = %err, "cannot use a spare database; creating one"),
            }
            self.spares.release(&row.server, &spare).await?;
        }
        provision::ensure_database(&admin, &target, plan).await?;
        faults::crash_point("create.after_database");
        if from_spare {
            // The spare's `public` is closed to PUBLIC and belongs to pg_database_owner.
            return Ok(());
        }
        let inside = self.ctx.connect_server(&row.server, Some(&row.pg_name)).await?;
        provision::own_public_schema(&inside, &target).await
    }

    async fn idempotent_result(
        &self,
        tenant_id: TenantId,
        key: &str,
        digest: &[u8],
    ) -> Result<Option<Credentials>, DbError> {
        let client = self.ctx.pool().get().await?;
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
        let opened = self.ctx.secret().open(IDEMPOTENCY_PURPOSE, row.get(1)).ok_or(DbError::SealedSecret)?;
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
            self.ctx.secret().seal(IDEMPOTENCY_PURPOSE, &serde_json::to_vec(created).unwrap_or_default());
        let client = self.ctx.pool().get().await?;
        client
            .execute(
                "INSERT INTO database_idempotency (tenant_id, key, request_digest, response_sealed) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&tenant_id.0, &key, &digest, &sealed],
            )
            .await?;
        Ok(())
    }
}
