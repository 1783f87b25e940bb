//! A tenant's usage counters as deltas: how commits record usage without queueing on the
//! tenant's row, how the quota stays exact, and the background fold.
//!
//! Every change to a tenant's objects inserts one row into `tenant_usage_deltas` (no lock on
//! anything shared), so concurrent commits of one tenant overlap and share WAL flushes. The usage
//! is the tenant row's counters plus the sum of its deltas; [`ChunkStore::fold_usage`] moves
//! the deltas into the row in the background, one small transaction per tenant.
//!
//! The quota: a commit of one chunk that leaves the tenant at least [`QUOTA_LOCK_MARGIN`] below
//! its quota (as far as the commits visible to it tell) takes the tenant's lock shared with
//! other such commits (a transaction-level advisory lock, and a key share of the tenant's row).
//! Every other commit (more than one chunk, or near the quota: the shared try then asks to be
//! run again, see [`needs_exclusive`]) takes both exclusively and then reads the usage afresh:
//! that waits for every shared commit in flight, so it counts all of them, and the quota holds
//! exactly at that boundary. The advisory lock is fair, so a stream of small commits cannot
//! starve an exclusive one. The bound: a shared commit can only pass the quota when the
//! commits it does not see (those in their transactions at the same moment, milliseconds) add
//! more than the margin together, and then by at most their bytes beyond the margin. Within
//! the margin of the quota, the quota is exact.

use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Transaction};

use super::ingest::QuotaRoom;
use super::{ChunkStore, StoreError};
use crate::TenantId;

/// How far below its quota a tenant must stay, with a commit's bytes added, for that commit to
/// skip the tenant row lock. 64 MiB is more than a busy tenant commits in the few milliseconds
/// a commit transaction lasts, and small enough that a tenant near its quota pays the lock only
/// for its last 64 MiB.
pub const QUOTA_LOCK_MARGIN: u64 = 64 * 1024 * 1024;

/// The sum of `column` over the deltas of the tenant row `t`.
fn deltas_of(column: &str) -> String {
    format!("(SELECT coalesce(sum(d.{column}), 0)::int8 FROM tenant_usage_deltas d WHERE d.tenant_id = t.id)")
}

/// The usage columns of the tenant row `t` with its deltas added: objects, logical bytes,
/// unique raw bytes, stored bytes.
pub(super) fn usage_columns() -> String {
    format!(
        "t.object_count + {}, t.logical_bytes + {}, t.unique_raw_bytes + {}, t.stored_bytes + {}",
        deltas_of("objects"),
        deltas_of("logical_bytes"),
        deltas_of("unique_raw_bytes"),
        deltas_of("stored_bytes")
    )
}

/// A change to a tenant's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UsageDelta {
    pub objects: i64,
    pub logical_bytes: i64,
    pub unique_raw_bytes: i64,
    pub stored_bytes: i64,
}

/// Records `delta` of `tenant` in `txn`.
pub(crate) async fn add_usage(
    txn: &Transaction<'_>,
    tenant: TenantId,
    delta: UsageDelta,
) -> Result<(), StoreError> {
    txn.execute(
        "INSERT INTO tenant_usage_deltas (tenant_id, objects, logical_bytes, unique_raw_bytes, stored_bytes) \
         VALUES ($1, $2, $3, $4, $5)",
        &[&tenant.0, &delta.objects, &delta.logical_bytes, &delta.unique_raw_bytes, &delta.stored_bytes],
    )
    .await?;
    Ok(())
}

/// The logical bytes `tenant` uses (its deltas included, when it has a quota) and its quota,
/// as the commits visible to `client` tell. No lock.
pub(super) async fn quota_room(
    client: &impl GenericClient,
    tenant: TenantId,
) -> Result<QuotaRoom, StoreError> {
    // Typed: one round trip, no separate prepare (the statements inside a small PUT's commit
    // are prepared once per connection instead, `catalog::query_prepared_opt`).
    let row = client
        .query_typed_opt(
            &format!("SELECT t.storage_quota_bytes, {} FROM tenants t WHERE t.id = $1", used_logical_bytes()),
            &[(&tenant.0, Type::INT8)],
        )
        .await?
        .ok_or(StoreError::UnknownTenant(tenant.0))?;
    Ok(QuotaRoom { quota: row.get::<_, Option<i64>>(0).map(|q| q as u64), used: row.get::<_, i64>(1) as u64 })
}

/// The first key of the transaction-level advisory lock that orders a tenant's commits ("USAG";
/// the second key is the tenant's id). Shared by the commits that share the tenant, exclusive
/// for the others. Unlike a row lock it is fair: a commit waiting for it exclusively holds
/// back the shared ones that come after it, so a stream of small commits cannot starve it.
const TENANT_LOCK: i32 = 0x5553_4147;

/// The logical bytes the tenant row `t` uses, its deltas counted, as the quota counts them:
/// 0 when it has no quota (the deltas are not summed then).
pub(crate) fn used_logical_bytes() -> String {
    format!(
        "CASE WHEN t.storage_quota_bytes IS NULL THEN 0 ELSE t.logical_bytes + {} END",
        deltas_of("logical_bytes")
    )
}

/// The room a commit of `needed` bytes asks of [`far_from_quota`] to share the tenant's lock.
pub(crate) fn shared_room(needed: u64) -> i64 {
    needed.saturating_add(QUOTA_LOCK_MARGIN).min(i64::MAX as u64) as i64
}

/// Whether the tenant row `t`, its deltas counted, stays within its quota with `room` more
/// logical bytes (an SQL expression: a parameter, say).
fn far_from_quota(room: &str) -> String {
    format!(
        "(t.storage_quota_bytes IS NULL OR t.logical_bytes + {} + {room} <= t.storage_quota_bytes)",
        deltas_of("logical_bytes")
    )
}

/// A condition that takes the lock of the tenant `tenant` (an SQL expression) shared with
/// other commits, for the rest of the transaction. It holds once the lock is taken.
pub(crate) fn tenant_lock_shared(tenant: &str) -> String {
    format!("pg_advisory_xact_lock_shared({TENANT_LOCK}, ({tenant} % 2147483647)::int4) IS NOT NULL")
}

/// [`tenant_lock_shared`] when no one holds it exclusively: the condition does not wait, and
/// holds only when the lock was taken.
pub(crate) fn tenant_lock_shared_at_once(tenant: &str) -> String {
    format!("pg_try_advisory_xact_lock_shared({TENANT_LOCK}, ({tenant} % 2147483647)::int4)")
}

/// [`tenant_lock_shared`], the lock taken alone.
pub(crate) fn tenant_lock_exclusive(tenant: &str) -> String {
    format!("pg_advisory_xact_lock({TENANT_LOCK}, ({tenant} % 2147483647)::int4) IS NOT NULL")
}

/// Whether `err` asks for the transaction to be run again with an exclusive commit.
pub fn needs_exclusive(err: &StoreError) -> bool {
    matches!(err, StoreError::NeedsExclusive)
}

/// Makes sure `tenant` may add `needed` logical bytes in `txn`: when `shared` (see the module's
/// doc), under the tenant's lock shared with other commits and a key share of its row, else
/// under both exclusively. Either way the tenant is locked before any chunk row, in every
/// transaction, so the two kinds of commit cannot deadlock.
///
/// # Errors
/// [`StoreError::QuotaExceeded`], [`StoreError::UnknownTenant`], catalog errors; a shared
/// admission of a tenant near its quota fails as [`needs_exclusive`] (no lock is upgraded).
pub(crate) async fn admit(
    txn: &deadpool_postgres::Transaction<'_>,
    tenant: TenantId,
    needed: u64,
    shared: bool,
) -> Result<(), StoreError> {
    if shared {
        let room = shared_room(needed);
        // The advisory lock is taken in the scan, before the row's lock above it.
        let far = crate::catalog::query_prepared_opt(
            txn,
            &format!(
                "SELECT {} FROM tenants t WHERE t.id = $1 AND {} FOR KEY SHARE",
                far_from_quota("$2"),
                tenant_lock_shared("$1")
            ),
            &[(&tenant.0, Type::INT8), (&room, Type::INT8)],
        )
        .await?
        .ok_or(StoreError::UnknownTenant(tenant.0))?;
        return if far.get(0) { Ok(()) } else { Err(StoreError::NeedsExclusive) };
    }
    let (used, quota) = lock_tenant(txn, tenant).await?;
    QuotaRoom { used, quota }.check(needed)
}

/// Locks the tenant exclusively (its advisory lock, then its row), which serialises this
/// transaction with every other change to the tenant's chunks that takes it (so chunk row locks
/// are taken in one order), and with every commit in flight. Returns the logical bytes used
/// (read after the lock, deltas included; 0 when the tenant has no quota) and the quota.
pub(crate) async fn lock_tenant(
    txn: &Transaction<'_>,
    tenant: TenantId,
) -> Result<(u64, Option<u64>), StoreError> {
    txn.query_typed_opt(
        &format!(
            "SELECT 1 FROM tenants WHERE id = $1 \
               AND {} FOR UPDATE",
            tenant_lock_exclusive("$1")
        ),
        &[(&tenant.0, Type::INT8)],
    )
    .await?
    .ok_or(StoreError::UnknownTenant(tenant.0))?;
    // A statement of its own: its snapshot, taken after the lock, sees every commit it waited for.
    let room = quota_room(txn, tenant).await?;
    Ok((room.used, room.quota))
}

impl ChunkStore {
    /// Folds every tenant's usage deltas into its row. Returns how many deltas were folded.
    ///
    /// # Errors
    /// Catalog errors.
    pub async fn fold_usage(&self) -> Result<u64, StoreError> {
        let client = self.inner.pool.get().await?;
        let tenants: Vec<i64> = client
            .query("SELECT DISTINCT tenant_id FROM tenant_usage_deltas", &[])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut folded = 0;
        for tenant in tenants {
            // One statement: the deltas it deletes are exactly the ones it adds (those committed
            // before it started); later ones wait for the next fold.
            let row = client
                .query_one(
                    "WITH gone AS (DELETE FROM tenant_usage_deltas WHERE tenant_id = $1 RETURNING *), \
                     total AS (SELECT count(*)::int8 AS n, coalesce(sum(objects), 0)::int8 AS objects, \
                                      coalesce(sum(logical_bytes), 0)::int8 AS logical, \
                                      coalesce(sum(unique_raw_bytes), 0)::int8 AS raw, \
                                      coalesce(sum(stored_bytes), 0)::int8 AS stored FROM gone), \
                     folded AS (UPDATE tenants t SET object_count = t.object_count + total.objects, \
                                       logical_bytes = t.logical_bytes + total.logical, \
                                       unique_raw_bytes = t.unique_raw_bytes + total.raw, \
                                       stored_bytes = t.stored_bytes + total.stored \
                                FROM total WHERE t.id = $1) \
                     SELECT n FROM total",
                    &[&tenant],
                )
                .await?;
            folded += row.get::<_, i64>(0) as u64;
        }
        Ok(folded)
    }
}
