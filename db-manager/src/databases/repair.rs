//! Start-up repair of client databases: rows a crash left `creating` or `deleting` are
//! finished, and databases made before owner roles move to them.

use super::Databases;
use crate::DbError;
use crate::provision;
use crate::servers;
use crate::states::DatabaseState;

impl Databases {
    /// Moves databases made before owner roles to that layout (see
    /// [`provision::upgrade_legacy`]). One that was read-only over its quota is marked active,
    /// and the sampler puts it back into read-only the new way at its next round.
    pub(crate) async fn upgrade_legacy_databases(&self) {
        let rows = match self.ctx.pool().get().await {
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
        let Some(_lock) = self.ctx.lock_database(id).await? else { return Ok(()) };
        let row = self.row_by_id(id).await?;
        let target = row.target();
        let admin = self.ctx.admin(&row.server).await?;
        if !provision::is_legacy(&admin, &target).await? {
            return Ok(());
        }
        let inside = self.ctx.connect_server(&row.server, Some(&row.pg_name)).await?;
        provision::upgrade_legacy(&admin, &inside, &target, &self.ctx.marker(id).await?).await?;
        let client = self.ctx.pool().get().await?;
        client
            .execute("UPDATE tenant_databases SET state = $2 WHERE id = $1", &[&id, &DatabaseState::Active])
            .await?;
        tracing::warn!(tenant = %row.tenant, database = %row.name, "moved a database to an owner role (read-only over quota now holds)");
        Ok(())
    }

    /// Cleans up creates that died half-way and finishes deletes that did, unless another
    /// replica is still working on them.
    pub(crate) async fn repair(&self) -> Result<(), DbError> {
        let client = self.ctx.pool().get().await?;
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
            let Some(_lock) = self.ctx.lock_database(id).await? else { continue };
            let server = servers::get_by_id(self.ctx.pool(), server_id).await?;
            let target = provision::Target { server: &server.name, pg_name: &pg_name };
            let outcome = async {
                let admin = self.ctx.admin(&server).await?;
                // A role or database that is not Silo's (one that a create refused) stays.
                match provision::check_ours(&admin, &target, &self.ctx.marker(id).await?).await {
                    Ok(()) => self.workers.drop_database_and_roles(&server, &target).await?,
                    Err(DbError::RoleTaken { .. } | DbError::DatabaseTaken { .. }) => {}
                    Err(err) => return Err(err),
                }
                let client = self.ctx.pool().get().await?;
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
