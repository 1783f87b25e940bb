//! Sweeping orphan objects: objects that nothing references, left behind when a process died
//! between committing an object and recording what it is for.
//!
//! The S3 paths commit an object and bind it (to a key or an upload part) in one transaction,
//! so they leave no orphans. Other components store objects with [`ChunkStore::put`] and
//! reference them from their own tables afterwards (db-manager's database and catalog
//! backups): a crash in between leaves an object counted against the tenant forever. Those
//! components declare where they keep object ids as [`Referrer`]s; an object older than the
//! grace period that no referrer names (nor an S3 key or part) is deleted like any other.
//!
//! Each candidate is deleted in its own transaction that locks the object's row and checks
//! again: a referrer that writes a reference meanwhile either commits first (the object is
//! kept) or waits and then fails its foreign key check (never a reference to a deleted object).

use std::time::Duration;

use super::{ChunkStore, ObjectId, StoreError};
use crate::TenantId;

/// A column of some table that holds object ids: an object named there is not an orphan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Referrer {
    pub table: &'static str,
    pub column: &'static str,
}

/// Where the storage node itself references objects.
pub const S3_REFERRERS: [Referrer; 2] = [
    Referrer { table: "s3_objects", column: "object_id" },
    Referrer { table: "multipart_parts", column: "object_id" },
];

const BATCH: i64 = 500;

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl ChunkStore {
    /// Deletes objects created more than `grace` ago that neither the S3 namespace nor any of
    /// `referrers` names. Returns how many it deleted.
    ///
    /// # Errors
    /// [`StoreError::Task`] for a referrer that is not a plain identifier; catalog errors.
    pub async fn sweep_orphans(&self, grace: Duration, referrers: &[Referrer]) -> Result<u64, StoreError> {
        let all: Vec<&Referrer> = S3_REFERRERS.iter().chain(referrers).collect();
        if let Some(bad) = all.iter().find(|r| !is_identifier(r.table) || !is_identifier(r.column)) {
            return Err(StoreError::Task(format!("not a referrer: {}.{}", bad.table, bad.column)));
        }
        let unreferenced: Vec<String> = all
            .iter()
            .map(|r| format!("NOT EXISTS (SELECT 1 FROM {} r WHERE r.{} = o.id)", r.table, r.column))
            .collect();
        let unreferenced = unreferenced.join(" AND ");
        let candidates = format!(
            "SELECT o.id, o.tenant_id FROM objects o \
             WHERE o.created_at < now() - make_interval(secs => $1) AND o.id > $2 AND {unreferenced} \
             ORDER BY o.id LIMIT {BATCH}"
        );
        let recheck = format!("SELECT 1 FROM objects o WHERE o.id = $1 AND {unreferenced}");
        let mut deleted = 0;
        let mut after = 0i64;
        loop {
            let client = self.inner.pool.get().await?;
            let rows = client.query(&candidates, &[&grace.as_secs_f64(), &after]).await?;
            drop(client);
            for row in &rows {
                let (object, tenant): (i64, i64) = (row.get(0), row.get(1));
                after = object;
                let mut client = self.inner.pool.get().await?;
                let txn = client.transaction().await?;
                super::usage::lock_tenant(&txn, TenantId(tenant)).await?;
                let locked =
                    txn.query_opt("SELECT 1 FROM objects WHERE id = $1 FOR UPDATE", &[&object]).await?;
                if locked.is_none() || txn.query_opt(&recheck, &[&object]).await?.is_none() {
                    continue;
                }
                self.delete_in(&txn, TenantId(tenant), ObjectId(object)).await?;
                txn.commit().await?;
                tracing::warn!(object, tenant, "deleted an orphan object that nothing references");
                deleted += 1;
            }
            if (rows.len() as i64) < BATCH {
                return Ok(deleted);
            }
        }
    }
}
