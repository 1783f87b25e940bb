//! Deleting and copying objects, and a tenant's usage.

use tokio_postgres::Transaction;

use super::usage::{UsageDelta, add_usage, lock_tenant, usage_columns};
use super::{ChunkStore, ObjectId, StoreError};
use crate::TenantId;

/// A tenant's usage, from the catalog's counters (no scan of data).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Usage {
    pub objects: u64,
    /// The sum of the objects' sizes.
    pub logical_bytes: u64,
    /// The raw size of the tenant's distinct chunks.
    pub unique_bytes: u64,
    /// Those chunks as stored on disk, after compression, counted once.
    pub stored_bytes: u64,
    /// Those chunks counted once per copy of their packs (damaged copies left out): what the
    /// tenant takes on the cluster's disks.
    pub replicated_bytes: u64,
    pub quota_bytes: Option<u64>,
    /// `logical_bytes / unique_bytes`: how much dedup saves (1.0 = nothing).
    pub dedup_ratio: f64,
    /// `unique_bytes / stored_bytes`: how much compression saves (1.0 = nothing).
    pub compression_ratio: f64,
}

impl ChunkStore {
    /// Deletes `object`: its manifest goes, and its chunks lose their references. The bytes
    /// are reclaimed by GC.
    ///
    /// # Errors
    /// [`StoreError::NoSuchObject`] when the tenant has no such object.
    pub async fn delete(&self, tenant: TenantId, object: ObjectId) -> Result<(), StoreError> {
        let mut client = self.inner.pool.get().await?;
        let txn = client.transaction().await?;
        self.delete_in(&txn, tenant, object).await?;
        txn.commit().await?;
        Ok(())
    }

    /// [`ChunkStore::delete`] inside the caller's transaction.
    ///
    /// # Errors
    /// See [`ChunkStore::delete`].
    pub async fn delete_in(
        &self,
        txn: &Transaction<'_>,
        tenant: TenantId,
        object: ObjectId,
    ) -> Result<(), StoreError> {
        lock_tenant(txn, tenant).await?;
        self.release_in(txn, tenant, object).await
    }

    /// [`ChunkStore::delete_in`] without the tenant's row lock: for a caller whose transaction
    /// committed an object of the tenant already (and so holds what that commit took).
    ///
    /// # Errors
    /// See [`ChunkStore::delete`].
    pub(crate) async fn release_in(
        &self,
        txn: &Transaction<'_>,
        tenant: TenantId,
        object: ObjectId,
    ) -> Result<(), StoreError> {
        txn.execute(
            "UPDATE chunks c SET refcount = c.refcount - refs.n \
             FROM (SELECT chunk_id, count(*) AS n FROM object_chunks WHERE object_id = $1 GROUP BY chunk_id) AS refs \
             WHERE c.tenant_id = $2 AND c.id = refs.chunk_id \
               AND EXISTS (SELECT 1 FROM objects WHERE id = $1 AND tenant_id = $2)",
            &[&object.0, &tenant.0],
        )
        .await?;
        let size: i64 = txn
            .query_opt(
                "DELETE FROM objects WHERE id = $1 AND tenant_id = $2 RETURNING size",
                &[&object.0, &tenant.0],
            )
            .await?
            .ok_or(StoreError::NoSuchObject(object.0))?
            .get(0);
        add_usage(txn, tenant, UsageDelta { objects: -1, logical_bytes: -size, ..UsageDelta::default() })
            .await
    }

    /// A new object with the same bytes as `object`, sharing its chunks: only the manifest is
    /// copied, and the chunks gain references. The copy counts against the quota.
    ///
    /// # Errors
    /// [`StoreError::NoSuchObject`], [`StoreError::QuotaExceeded`].
    pub async fn copy_in(
        &self,
        txn: &Transaction<'_>,
        tenant: TenantId,
        object: ObjectId,
    ) -> Result<ObjectId, StoreError> {
        let (used, quota) = lock_tenant(txn, tenant).await?;
        let size: i64 = txn
            .query_opt("SELECT size FROM objects WHERE id = $1 AND tenant_id = $2", &[&object.0, &tenant.0])
            .await?
            .ok_or(StoreError::NoSuchObject(object.0))?
            .get(0);
        if let Some(quota) = quota
            && used + size as u64 > quota
        {
            return Err(StoreError::QuotaExceeded { used, quota, needed: size as u64 });
        }
        let copy: i64 = txn
            .query_one(
                "INSERT INTO objects (tenant_id, size, chunk_count, md5) \
                 SELECT tenant_id, size, chunk_count, md5 FROM objects WHERE id = $1 RETURNING id",
                &[&object.0],
            )
            .await?
            .get(0);
        txn.execute(
            "INSERT INTO object_chunks (object_id, logical_offset, tenant_id, chunk_id) \
             SELECT $2, logical_offset, tenant_id, chunk_id FROM object_chunks WHERE object_id = $1",
            &[&object.0, &copy],
        )
        .await?;
        txn.execute(
            "UPDATE chunks c SET refcount = c.refcount + refs.n \
             FROM (SELECT chunk_id, count(*) AS n FROM object_chunks WHERE object_id = $1 GROUP BY chunk_id) AS refs \
             WHERE c.tenant_id = $2 AND c.id = refs.chunk_id",
            &[&object.0, &tenant.0],
        )
        .await?;
        add_usage(txn, tenant, UsageDelta { objects: 1, logical_bytes: size, ..UsageDelta::default() })
            .await?;
        Ok(ObjectId(copy))
    }

    /// A new object whose bytes are `parts` one after another, sharing their chunks (only
    /// manifests are copied). The parts stay; the caller deletes them in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::NoSuchObject`] when a part is not the tenant's.
    pub async fn concat_in(
        &self,
        txn: &Transaction<'_>,
        tenant: TenantId,
        parts: &[ObjectId],
        md5: Option<Vec<u8>>,
    ) -> Result<ObjectId, StoreError> {
        lock_tenant(txn, tenant).await?;
        let ids: Vec<i64> = parts.iter().map(|part| part.0).collect();
        let rows = txn
            .query(
                "SELECT p.id, o.size FROM unnest($1::int8[]) WITH ORDINALITY AS p(id, n) \
                 LEFT JOIN objects o ON o.id = p.id AND o.tenant_id = $2 ORDER BY p.n",
                &[&ids, &tenant.0],
            )
            .await?;
        let mut bases = Vec::with_capacity(rows.len());
        let mut size = 0i64;
        for row in &rows {
            let part_size: Option<i64> = row.get(1);
            let part_size = part_size.ok_or(StoreError::NoSuchObject(row.get(0)))?;
            bases.push(size);
            size += part_size;
        }
        let object: i64 = txn
            .query_one(
                "INSERT INTO objects (tenant_id, size, chunk_count, md5) \
                 SELECT $1, $2, (SELECT count(*) FROM object_chunks WHERE object_id = ANY($3::int8[]))::int4, $4 \
                 RETURNING id",
                &[&tenant.0, &size, &ids, &md5],
            )
            .await?
            .get(0);
        txn.execute(
            "INSERT INTO object_chunks (object_id, logical_offset, tenant_id, chunk_id) \
             SELECT $1, p.base + oc.logical_offset, oc.tenant_id, oc.chunk_id \
             FROM unnest($2::int8[], $3::int8[]) AS p(id, base) JOIN object_chunks oc ON oc.object_id = p.id",
            &[&object, &ids, &bases],
        )
        .await?;
        txn.execute(
            "UPDATE chunks c SET refcount = c.refcount + refs.n \
             FROM (SELECT chunk_id, count(*) AS n FROM object_chunks WHERE object_id = $1 GROUP BY chunk_id) AS refs \
             WHERE c.tenant_id = $2 AND c.id = refs.chunk_id",
            &[&object, &tenant.0],
        )
        .await?;
        add_usage(txn, tenant, UsageDelta { objects: 1, logical_bytes: size, ..UsageDelta::default() })
            .await?;
        Ok(ObjectId(object))
    }

    /// The tenant's usage.
    ///
    /// # Errors
    /// [`StoreError::UnknownTenant`].
    pub async fn usage(&self, tenant: TenantId) -> Result<Usage, StoreError> {
        let client = self.inner.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {}, t.storage_quota_bytes FROM tenants t WHERE t.id = $1", usage_columns()),
                &[&tenant.0],
            )
            .await?
            .ok_or(StoreError::UnknownTenant(tenant.0))?;
        let as_u64 = |i: usize| row.get::<_, i64>(i).max(0) as u64;
        let (logical, unique, stored) = (as_u64(1), as_u64(2), as_u64(3));
        let replicated = client
            .query_one(
                "SELECT coalesce(sum(b.bytes * (SELECT count(*) FROM pack_replicas r \
                                               WHERE r.pack_id = b.pack_id AND r.state <> 'damaged')), 0)::int8 \
                 FROM (SELECT l.pack_id, sum(c.stored_len)::int8 AS bytes \
                       FROM chunk_locations l JOIN chunks c ON c.tenant_id = l.tenant_id AND c.id = l.chunk_id \
                       WHERE l.tenant_id = $1 GROUP BY l.pack_id) b",
                &[&tenant.0],
            )
            .await?
            .get::<_, i64>(0)
            .max(0) as u64;
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        Ok(Usage {
            objects: as_u64(0),
            logical_bytes: logical,
            unique_bytes: unique,
            stored_bytes: stored,
            replicated_bytes: replicated,
            quota_bytes: row.get::<_, Option<i64>>(4).map(|q| q as u64),
            dedup_ratio: ratio(logical, unique),
            compression_ratio: ratio(unique, stored),
        })
    }
}

impl ChunkStore {
    /// Deletes a tenant with everything it stores: objects, chunks (their bytes become dead in
    /// their packs, for GC), access keys, the owner of its removed nodes, and the tenant itself.
    ///
    /// # Errors
    /// [`StoreError::UnknownTenant`].
    pub async fn purge_tenant(&self, tenant: TenantId) -> Result<(), StoreError> {
        let mut client = self.inner.pool.get().await?;
        let txn = client.transaction().await?;
        lock_tenant(&txn, tenant).await?;
        txn.execute("DELETE FROM object_chunks WHERE tenant_id = $1", &[&tenant.0]).await?;
        txn.execute("DELETE FROM objects WHERE tenant_id = $1", &[&tenant.0]).await?;
        txn.execute(
            "UPDATE packs SET live_bytes = packs.live_bytes - f.bytes \
             FROM (SELECT l.pack_id, sum($2::int8 + c.stored_len)::int8 AS bytes \
                   FROM chunk_locations l JOIN chunks c ON c.tenant_id = l.tenant_id AND c.id = l.chunk_id \
                   WHERE l.tenant_id = $1 GROUP BY l.pack_id) AS f \
             WHERE packs.id = f.pack_id",
            &[&tenant.0, &(crate::pack::RECORD_HEADER_LEN as i64)],
        )
        .await?;
        txn.execute("DELETE FROM chunks WHERE tenant_id = $1", &[&tenant.0]).await?;
        txn.execute("DELETE FROM access_keys WHERE tenant_id = $1", &[&tenant.0]).await?;
        // A removed node of the tenant's keeps its row (packs name it) but not its owner; a
        // node not removed keeps the tenant (the delete below fails on it).
        txn.execute(
            "UPDATE storage_nodes SET owner_tenant_id = NULL WHERE owner_tenant_id = $1 AND state = $2",
            &[&tenant.0, &crate::node_state::NodeState::Removed],
        )
        .await?;
        txn.execute("DELETE FROM tenant_usage_deltas WHERE tenant_id = $1", &[&tenant.0]).await?;
        txn.execute("DELETE FROM tenants WHERE id = $1", &[&tenant.0]).await?;
        txn.commit().await?;
        Ok(())
    }
}
