//! Changing a client database: its plan and protection, its credentials, its deletion (which
//! [`crate::backup::Backups::delete_database`] runs behind a final backup).

use deadpool_postgres::ClientWrapper;

use super::{Credentials, DatabaseInfo, Databases, Row, UpdateRequest, credentials};
use crate::DbError;
use crate::provision;

impl Databases {
    /// Changes the plan (new limits apply at once; sessions within them stay) or the deletion
    /// protection.
    pub async fn update_database(
        &self,
        tenant: &str,
        name: &str,
        update: UpdateRequest,
    ) -> Result<DatabaseInfo, DbError> {
        let row = self.row(tenant, name).await?;
        let Some(_lock) = self.ctx.lock_database(row.id).await? else {
            return Err(DbError::Busy { name: name.into() });
        };
        if let Some(plan_name) = &update.plan {
            let plan = self.plans.require(plan_name)?.clone();
            let admin = self.ctx.admin(&row.server).await?;
            provision::apply_role_limits(&admin, &row.target(), &plan).await?;
            provision::ensure_database(&admin, &row.target(), &plan).await?;
            let client = self.ctx.pool().get().await?;
            client
                .execute(
                    "UPDATE tenant_databases SET plan = $2, storage_quota_bytes = $3 WHERE id = $1",
                    &[&row.id, plan_name, &(plan.storage_quota_bytes as i64)],
                )
                .await?;
            drop(client);
            self.ctx.record_event(row.id, "resized", &format!("plan {} -> {plan_name}", row.plan)).await?;
            tracing::info!(tenant, database = name, from = %row.plan, to = %plan_name, "resized database");
        }
        if let Some(protection) = update.deletion_protection {
            let client = self.ctx.pool().get().await?;
            client
                .execute(
                    "UPDATE tenant_databases SET deletion_protection = $2 WHERE id = $1",
                    &[&row.id, &protection],
                )
                .await?;
            drop(client);
            self.ctx
                .record_event(row.id, "deletion_protection", if protection { "on" } else { "off" })
                .await?;
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
        let Some(_lock) = self.ctx.lock_database(row.id).await? else {
            return Err(DbError::Busy { name: name.into() });
        };
        let password = provision::generate_password();
        let admin = self.ctx.admin(&row.server).await?;
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
            let client = self.ctx.pool().get().await?;
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
        self.ctx
            .record_event(
                row.id,
                "credentials_rotated",
                &format!("old sessions end after {}s", grace.as_secs()),
            )
            .await?;
        credentials(&row, password)
    }

    /// The row of a database about to be deleted, with its lock held until the returned
    /// connection drops: refused when deletion protection is on, or when another operation holds
    /// the lock (taken first: a restore or resize meanwhile would break a final backup).
    pub(crate) async fn lock_for_delete(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<(Row, ClientWrapper), DbError> {
        let row = self.row(tenant, name).await?;
        if row.deletion_protection {
            return Err(DbError::DeletionProtected { name: name.into() });
        }
        let Some(lock) = self.ctx.lock_database(row.id).await? else {
            return Err(DbError::Busy { name: name.into() });
        };
        Ok((row, lock))
    }

    /// Deletes a database and its role, under the lock [`Databases::lock_for_delete`] took
    /// (and after the final backup, if one is taken).
    pub(crate) async fn delete_locked(&self, row: &Row) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
        client
            .execute(
                "UPDATE tenant_databases SET state = $2 WHERE id = $1",
                &[&row.id, &crate::states::DatabaseState::Deleting],
            )
            .await?;
        drop(client);
        self.ctx.record_event(row.id, "deleting", "").await?;
        self.workers.drop_database_and_roles(&row.server, &row.target()).await?;
        let client = self.ctx.pool().get().await?;
        client.execute("DELETE FROM tenant_databases WHERE id = $1", &[&row.id]).await?;
        tracing::info!(tenant = row.tenant.as_str(), database = row.name.as_str(), server = %row.server.name, "deleted database");
        Ok(())
    }
}
