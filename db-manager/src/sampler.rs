//! The sampler: on an interval, records each database's size and connection count, enforces
//! storage quotas, and ends the sessions of rotated credentials whose grace has run out.
//!
//! Over its quota, a database turns read-only: INSERT, UPDATE and CREATE are revoked from its
//! role, `default_transaction_read_only` is set, and its sessions are ended so both take hold.
//! DELETE and TRUNCATE still work (in a `BEGIN READ WRITE` transaction), so the client can get
//! back under the quota. Below 95% of it, write access comes back by itself.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::DbError;
use crate::context::{Context, INSERT_EVENT};
use crate::plans::Plans;
use crate::states::DatabaseState;
use crate::{provision, read_only};

/// How long one database's quota switch may take before the round moves on.
const ENFORCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Write access comes back below this share of the quota.
const RESTORE_BELOW: f64 = 0.95;
/// Only one replica samples at a time ("SS").
const SAMPLER_LOCK: i64 = 0x5353_0000;

/// One database's latest sample, for the metrics endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub tenant: String,
    pub database: String,
    pub server: String,
    pub size_bytes: i64,
    pub connections: i32,
    pub quota_bytes: i64,
    pub read_only: bool,
}

struct Sampled {
    id: i64,
    tenant: String,
    name: String,
    pg_name: String,
    plan: String,
    state: DatabaseState,
    quota: i64,
    terminate_before: Option<std::time::SystemTime>,
}

/// The sampler service: the plans it enforces and the latest samples, over the shared
/// context. [`crate::DbManager`] runs its rounds on an interval.
pub(crate) struct Sampler {
    ctx: Arc<Context>,
    plans: Plans,
    latest: RwLock<Vec<Sample>>,
}

impl Sampler {
    pub fn new(ctx: Arc<Context>, plans: Plans) -> Self {
        Sampler { ctx, plans, latest: RwLock::new(Vec::new()) }
    }

    /// The latest round's samples.
    pub fn latest(&self) -> Vec<Sample> {
        self.latest.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// One round: sample every server, enforce quotas, end expired rotation graces.
    ///
    /// # Errors
    /// Catalog errors; a server that cannot be reached is logged and skipped.
    pub(crate) async fn sample_once(&self) -> Result<(), DbError> {
        let lock = deadpool_postgres::Object::take(self.ctx.pool().get().await?);
        let locked: bool = lock.query_one("SELECT pg_try_advisory_lock($1)", &[&SAMPLER_LOCK]).await?.get(0);
        if !locked {
            return Ok(());
        }
        let client = self.ctx.pool().get().await?;
        let rows = client
            .query(
                "SELECT d.id, t.name, d.name, d.server_id, d.pg_name, d.plan, d.state, d.storage_quota_bytes, \
                        CASE WHEN d.terminate_at <= now() THEN d.terminate_started_before END \
                 FROM tenant_databases d JOIN tenants t ON t.id = d.tenant_id \
                 WHERE d.state IN ($1, $2) ORDER BY d.server_id",
                &[&DatabaseState::Active, &DatabaseState::ReadOnlyOverQuota],
            )
            .await?;
        drop(client);
        let mut by_server: HashMap<i64, Vec<Sampled>> = HashMap::new();
        for row in rows {
            let plan: String = row.get(5);
            let quota = self.plans.get(&plan).map_or(row.get(7), |p| p.storage_quota_bytes as i64);
            by_server.entry(row.get(3)).or_default().push(Sampled {
                id: row.get(0),
                tenant: row.get(1),
                name: row.get(2),
                pg_name: row.get(4),
                plan,
                state: row.get(6),
                quota,
                terminate_before: row.get(8),
            });
        }
        let mut samples = Vec::new();
        for (server_id, databases) in by_server {
            match self.sample_server(server_id, &databases).await {
                Ok(mut sampled) => samples.append(&mut sampled),
                Err(err) => tracing::warn!(server_id, error = %err, "cannot sample a database server"),
            }
        }
        if let Ok(mut latest) = self.latest.write() {
            *latest = samples;
        }
        drop(lock);
        Ok(())
    }

    async fn sample_server(&self, server_id: i64, databases: &[Sampled]) -> Result<Vec<Sample>, DbError> {
        let server = crate::servers::get_by_id(self.ctx.pool(), server_id).await?;
        let admin = self.ctx.admin(&server).await?;
        let names: Vec<&str> = databases.iter().map(|d| d.pg_name.as_str()).collect();
        let rows = admin
            .query(
                "SELECT d.datname, pg_database_size(d.oid), \
                        (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname)::int4 \
                 FROM pg_database d WHERE d.datname = ANY($1)",
                &[&names],
            )
            .await
            .map_err(DbError::on_server(&server.name))?;
        let measured: HashMap<String, (i64, i32)> =
            rows.iter().map(|row| (row.get::<_, String>(0), (row.get(1), row.get(2)))).collect();
        let mut samples = Vec::new();
        // One catalog statement records the whole server's sample.
        let present: Vec<&Sampled> = databases.iter().filter(|d| measured.contains_key(&d.pg_name)).collect();
        let ids: Vec<i64> = present.iter().map(|d| d.id).collect();
        let sizes: Vec<i64> = present.iter().map(|d| measured[&d.pg_name].0).collect();
        let counts: Vec<i32> = present.iter().map(|d| measured[&d.pg_name].1).collect();
        let quotas: Vec<i64> = present.iter().map(|d| d.quota).collect();
        let client = self.ctx.pool().get().await?;
        client
            .execute(
                "UPDATE tenant_databases d SET size_bytes = s.size, connections = s.connections, \
                 sampled_at = now(), storage_quota_bytes = s.quota \
                 FROM unnest($1::int8[], $2::int8[], $3::int4[], $4::int8[]) AS s(id, size, connections, quota) \
                 WHERE d.id = s.id",
                &[&ids, &sizes, &counts, &quotas],
            )
            .await?;
        drop(client);
        for database in present {
            let (size, connections) = measured[&database.pg_name];
            // One database (a tenant holding locks open, say) never stalls the others' rounds.
            let enforced =
                tokio::time::timeout(ENFORCE_TIMEOUT, self.enforce_quota(&server, database, size)).await;
            let read_only = match enforced {
                Ok(Ok(read_only)) => read_only,
                Ok(Err(err)) => {
                    tracing::error!(database = %database.name, error = %err, "cannot enforce the quota");
                    database.state == DatabaseState::ReadOnlyOverQuota
                }
                Err(_) => {
                    tracing::error!(database = %database.name, "enforcing the quota timed out; retrying next round");
                    database.state == DatabaseState::ReadOnlyOverQuota
                }
            };
            if let Some(before) = database.terminate_before {
                self.end_rotated_sessions(&server, database, before).await?;
            }
            samples.push(Sample {
                tenant: database.tenant.clone(),
                database: database.name.clone(),
                server: server.name.clone(),
                size_bytes: size,
                connections,
                quota_bytes: database.quota,
                read_only,
            });
        }
        Ok(samples)
    }

    /// Moves a database into or out of read-only as its size demands. Returns whether it is
    /// read-only now.
    async fn enforce_quota(
        &self,
        server: &crate::servers::Server,
        database: &Sampled,
        size: i64,
    ) -> Result<bool, DbError> {
        let read_only = database.state == DatabaseState::ReadOnlyOverQuota;
        let over = size > database.quota;
        let back_under = (size as f64) < database.quota as f64 * RESTORE_BELOW;
        if read_only == over || (read_only && !back_under) {
            return Ok(read_only);
        }
        let Some(_lock) = self.ctx.lock_database(database.id).await? else { return Ok(read_only) };
        let target = provision::Target { server: &server.name, pg_name: &database.pg_name };
        let admin = self.ctx.admin(server).await?;
        let inside = self.ctx.connect_server(server, Some(&database.pg_name)).await?;
        let mut client = self.ctx.pool().get().await?;
        let detail = format!("size {size} bytes, quota {} bytes (plan {})", database.quota, database.plan);
        let (state, event) = if read_only {
            let revoked: Vec<String> = client
                .query_one("SELECT read_only_revoked FROM tenant_databases WHERE id = $1", &[&database.id])
                .await?
                .get(0);
            read_only::leave(&admin, &inside, &target, &revoked).await?;
            let tx = client.transaction().await?;
            tx.execute(
                "UPDATE tenant_databases SET state = $2, read_only_revoked = '{}' WHERE id = $1",
                &[&database.id, &DatabaseState::Active],
            )
            .await?;
            tx.execute(INSERT_EVENT, &[&database.id, &"write_access_restored", &detail]).await?;
            tx.commit().await?;
            (DatabaseState::Active, "write_access_restored")
        } else {
            // Fail closed: once `enter` has started, the login role may already have lost the
            // owner, so the catalog says read-only either way, and the way back (`leave`, when
            // the size falls) gives everything back even after a half-done switch.
            let revoked = match read_only::enter(&admin, &inside, &target).await {
                Ok(revoked) => revoked,
                Err(err) => {
                    client
                        .execute(
                            "UPDATE tenant_databases SET state = $2 WHERE id = $1",
                            &[&database.id, &DatabaseState::ReadOnlyOverQuota],
                        )
                        .await?;
                    return Err(err);
                }
            };
            let tx = client.transaction().await?;
            tx.execute(
                "UPDATE tenant_databases SET state = $3, read_only_revoked = $2 WHERE id = $1",
                &[&database.id, &revoked, &DatabaseState::ReadOnlyOverQuota],
            )
            .await?;
            tx.execute(INSERT_EVENT, &[&database.id, &"read_only_over_quota", &detail]).await?;
            tx.commit().await?;
            (DatabaseState::ReadOnlyOverQuota, "read_only_over_quota")
        };
        drop((inside, client));
        tracing::debug!(%state, event, "quota state and its event recorded");
        if read_only {
            tracing::info!(tenant = %database.tenant, database = %database.name, size, quota = database.quota, "database back under its quota; write access restored");
        } else {
            tracing::warn!(tenant = %database.tenant, database = %database.name, size, quota = database.quota, "database over its quota; now read-only");
        }
        Ok(!read_only)
    }

    async fn end_rotated_sessions(
        &self,
        server: &crate::servers::Server,
        database: &Sampled,
        before: std::time::SystemTime,
    ) -> Result<(), DbError> {
        let admin = self.ctx.admin(server).await?;
        let target = provision::Target { server: &server.name, pg_name: &database.pg_name };
        let ended = provision::terminate_role_sessions(&admin, &target, before).await?;
        let client = self.ctx.pool().get().await?;
        client
            .execute(
                "UPDATE tenant_databases SET terminate_started_before = NULL, terminate_at = NULL WHERE id = $1",
                &[&database.id],
            )
            .await?;
        tracing::info!(tenant = %database.tenant, database = %database.name, ended, "ended sessions of rotated credentials after their grace");
        Ok(())
    }
}
