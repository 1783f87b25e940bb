//! A small new object committed and bound to its key in one catalog statement, with no
//! transaction around it: the PUT a website makes most (a new key, one inline chunk, a tenant
//! far from its quota, no condition) costs one round trip to Postgres instead of five (`BEGIN`,
//! the bucket's and the tenant's locks, the commit, the binding, `COMMIT`), and one statement's
//! start-up instead of six.
//!
//! The statement first looks for the key in its snapshot: a key that holds an object takes no
//! lock and goes to [`super::object::bind`]'s transaction, which replaces objects. Otherwise it
//! takes what that transaction takes, in the same order: the bucket's row shared, the tenant's
//! lock shared (`store::usage`), the chunk's row, the object and its key. The order follows
//! from what each step reads of the one before (the tenant's lock names the bucket row's
//! tenant; the chunk waits on the CTE `go`, which reads the tenant's; the object on the chunk's
//! `added`; the key on the object), not from an order Postgres promises for CTEs. Every write
//! waits on `go`, which has a row only when the bucket is there and open and the tenant far
//! from its quota; otherwise nothing is written, and the caller binds in a transaction, or
//! refuses a tenant already over its quota. A key bound by a commit that lands after the
//! snapshot fails the statement's insert (a unique violation), which undoes the whole statement
//! as it undoes any, and the caller goes to the transaction too.

use std::sync::LazyLock;

use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::ModelError;
use super::object::{ObjectHeaders, RowParams, S3_OBJECT_COLUMNS, Target};
use crate::read_cache::broadcast::{LEASED_PEERS, Leased, Pending, leased_from_rows, leased_peers_params};
use crate::store::{
    ChunkStore, OneStatementCommit, StoreError, record_object, tenant_lock_shared, used_logical_bytes,
};

/// How [`bind`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Committed and bound, at this modification time; with the peers that may hold a read
    /// cache lease, read after the commit, when that read succeeded.
    Bound(OffsetDateTime, Option<Vec<Leased>>),
    /// Nothing written: bind in a transaction, which may share the tenant's lock or not.
    InTransaction { may_share: bool },
}

/// Commits `commit` and binds it at `target` with `etag` and `headers`, in one statement, when
/// nothing stands in the way (see the module's doc). `pending` is armed while the statement may
/// have changed the catalog.
///
/// # Errors
/// [`StoreError::QuotaExceeded`] when the tenant is over its quota in the statement's snapshot
/// (as an upload's early check finds it, no lock waited for); catalog errors, other than those
/// that send the caller to a transaction.
pub(super) async fn bind(
    store: &ChunkStore,
    commit: &OneStatementCommit<'_>,
    target: &Target<'_>,
    etag: &str,
    headers: &ObjectHeaders,
    pending: &Pending,
) -> Result<Outcome, ModelError> {
    let row = RowParams::of(etag, headers);
    let key = [
        (&target.bucket as &(dyn ToSql + Sync), Type::TEXT),
        (&target.key, Type::TEXT),
        (&target.id, Type::INT8),
    ];
    let typed = [commit.params(), key.to_vec(), row.params()].concat();
    let types: Vec<Type> = typed.iter().map(|(_, kind)| kind.clone()).collect();
    let values: Vec<&(dyn ToSql + Sync)> = typed.iter().map(|(value, _)| *value).collect();
    let client = store.catalog().get().await?;
    let statement = client.prepare_typed_cached(&STATEMENT, &types).await?;
    let peers_statement = client.prepare_cached(LEASED_PEERS).await?;
    let (node, window) = leased_peers_params(store);
    let peers_params: [&(dyn ToSql + Sync); 2] = [&node, &window];
    pending.arm();
    // The read caches' question goes behind the statement in the same round trip: Postgres
    // runs it once the statement's commit is done (each ends with its own Sync), as a query
    // sent after the answer would run. tokio-postgres sends them in the order first polled.
    let (answer, peers) =
        futures::join!(client.query_one(&statement, &values), client.query(&peers_statement, &peers_params));
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) if err.as_db_error().is_some() => {
            // Postgres refused the statement, so it changed nothing.
            pending.disarm();
            return match sends_to_transaction(&err) {
                true => Ok(Outcome::InTransaction { may_share: true }),
                false => Err(err.into()),
            };
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(modified) = answer.get::<_, Option<OffsetDateTime>>(0) {
        // A failed read is asked again, with retries, by the invalidation.
        return Ok(Outcome::Bound(modified, peers.ok().map(|rows| leased_from_rows(&rows))));
    }
    pending.disarm();
    let (used, quota): (Option<i64>, Option<i64>) = (answer.get(1), answer.get(2));
    let (Some(used), Some(quota)) = (used.map(|u| u as u64), quota.map(|q| q as u64)) else {
        // A key taken, a bucket gone or closed, or a tenant with no quota: the transaction
        // tells which, or binds.
        return Ok(Outcome::InTransaction { may_share: true });
    };
    let needed = commit.size();
    if used.saturating_add(needed) > quota {
        return Err(StoreError::QuotaExceeded { used, quota, needed }.into());
    }
    Ok(Outcome::InTransaction { may_share: false })
}

/// Whether `err` undid the statement for a reason a transaction deals with: the key bound
/// meanwhile, or a deadlock Postgres broke.
fn sends_to_transaction(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|db| {
        (*db.code() == SqlState::UNIQUE_VIOLATION && db.table() == Some("s3_objects"))
            || *db.code() == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// The statement, over [`OneStatementCommit::params`] (`$1` to `$14`), then the bucket's name,
/// the key and the bucket's id, then [`RowParams::params`]. It answers the key's modification
/// time when it bound the object; else the tenant's used bytes and quota when it took the
/// tenant's lock (with a quota), to tell a tenant near its quota from one over it.
static STATEMENT: LazyLock<String> = LazyLock::new(|| {
    let (tenant, room) = (OneStatementCommit::TENANT, OneStatementCommit::ROOM);
    let first = OneStatementCommit::PARAMS + 1;
    let (bucket, key, bucket_id) =
        (format!("${first}"), format!("${}", first + 1), format!("${}", first + 2));
    format!(
        "WITH free AS MATERIALIZED (SELECT NOT EXISTS (SELECT 1 FROM s3_objects \
                                                       WHERE bucket = {bucket} AND key = {key}) AS free), \
              b AS MATERIALIZED (SELECT b.tenant_id FROM free, buckets b JOIN tenants t ON t.id = b.tenant_id \
                                 WHERE free.free AND b.name = {bucket} AND b.id = {bucket_id} \
                                   AND b.tenant_id = {tenant} AND t.deleting_at IS NULL FOR KEY SHARE OF b), \
              admitted AS MATERIALIZED (SELECT t.storage_quota_bytes AS quota, {used} AS used \
                                        FROM b JOIN tenants t ON t.id = b.tenant_id \
                                        WHERE {lock} FOR KEY SHARE OF t), \
              go AS MATERIALIZED (SELECT 1 FROM admitted WHERE quota IS NULL OR used + {room} <= quota), \
              {chunks}, {object}, {delta}, \
              s AS (INSERT INTO s3_objects ({S3_OBJECT_COLUMNS}) \
                    SELECT {bucket}, {key}, o.id, {row} FROM o RETURNING last_modified) \
         SELECT s.last_modified, admitted.used, admitted.quota \
         FROM (SELECT 1) AS one LEFT JOIN admitted ON true LEFT JOIN s ON true",
        used = used_logical_bytes(),
        // It names a column of the bucket's row, so it comes after that row's lock.
        lock = tenant_lock_shared("b.tenant_id"),
        chunks = OneStatementCommit::chunks(),
        // After the chunks (`added`), as in the transaction.
        object = record_object("FROM added, go"),
        delta = OneStatementCommit::usage_delta(),
        row = RowParams::values(first + 3),
    )
});

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::TenantId;
    use crate::catalog::tenants;
    use crate::read_cache::Invalidation;
    use crate::s3::tests::{Fixture, bucket_id, count, fixture, objects_of, until_waiting};
    use crate::store::{Ingested, PutOptions};

    /// A 20,000-byte upload of `byte` repeated, for `tenant`.
    pub(in crate::model) async fn ingest(fx: &Fixture, tenant: TenantId, byte: u8) -> Ingested {
        ingest_body(fx, tenant, vec![byte; 20_000]).await
    }

    /// An upload of `body` for `tenant`.
    pub(in crate::model) async fn ingest_body(fx: &Fixture, tenant: TenantId, body: Vec<u8>) -> Ingested {
        let options = PutOptions { expected_len: Some(body.len() as u64), md5: true };
        fx.s3.store().ingest(tenant, std::io::Cursor::new(body), options).await.expect("ingest")
    }

    /// The generic plan Postgres makes of `statement` over parameters of `types`, as `EXPLAIN`
    /// shows it: the plan a connection keeps once it stops planning each execution apart.
    pub(in crate::model) async fn generic_plan(fx: &Fixture, types: &[String], statement: &str) -> String {
        let client = fx.pool.get().await.expect("client");
        let prepare = format!("PREPARE planned ({}) AS {statement}", types.join(", "));
        client
            .batch_execute(&format!("SET plan_cache_mode = force_generic_plan; {prepare}"))
            .await
            .expect("prepare");
        let nulls = vec!["NULL"; types.len()].join(", ");
        let rows = client.query(&format!("EXPLAIN EXECUTE planned ({nulls})"), &[]).await.expect("explain");
        client.batch_execute("DEALLOCATE planned; RESET plan_cache_mode").await.expect("deallocate");
        rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
    }

    /// Fails when `plan` scans any of `tables` whole.
    pub(in crate::model) fn assert_looks_up_by_index(plan: &str, tables: &[&str]) {
        for table in tables {
            assert!(!plan.contains(&format!("Seq Scan on {table} ")), "{table} is scanned whole:\n{plan}");
        }
    }

    async fn try_bind(
        store: &ChunkStore,
        ingested: &Ingested,
        bucket: &str,
        id: i64,
        key: &str,
    ) -> Result<Outcome, ModelError> {
        let commit = ingested.in_one_statement().expect("a small upload commits in one statement");
        let target = Target { bucket, id, key };
        let pending = Pending::new(store, Invalidation::key(bucket, key));
        let outcome = bind(store, &commit, &target, "etag", &ObjectHeaders::default(), &pending).await;
        // Nothing written must leave nothing owed to the read caches.
        if !matches!(outcome, Ok(Outcome::Bound(..))) {
            assert!(!pending.is_armed(), "{outcome:?} left the invalidation armed");
        }
        outcome
    }

    async fn bind_at(fx: &Fixture, ingested: &Ingested, bucket: &str, id: i64, key: &str) -> Outcome {
        try_bind(fx.s3.store(), ingested, bucket, id, key).await.expect("bind")
    }

    pub(in crate::model) async fn chunks_of(fx: &Fixture, tenant: TenantId) -> i64 {
        count(&fx.pool, "SELECT count(*) FROM chunks WHERE tenant_id = $1", tenant).await
    }

    /// Binds `ingested` at `media`/`k` in a task of its own, once it waits on a lock `hold`
    /// holds.
    async fn bind_behind(
        fx: &Fixture,
        ingested: Ingested,
        id: i64,
    ) -> tokio::task::JoinHandle<Result<Outcome, ModelError>> {
        let s3 = fx.s3.clone();
        let binding = tokio::spawn(async move { try_bind(s3.store(), &ingested, "media", id, "k").await });
        until_waiting(&fx.pool, 1, || binding.is_finished()).await;
        binding
    }

    /// Takes `tenant`'s advisory lock exclusively in `hold` (the lock alone, not its row), as a
    /// commit near the quota or a delete does.
    pub(in crate::model) async fn hold_tenant_alone(
        hold: &deadpool_postgres::Transaction<'_>,
        tenant: TenantId,
    ) {
        let lock = crate::store::tenant_lock_exclusive("$1::int8");
        hold.execute(&format!("SELECT {lock}"), &[&tenant.0]).await.expect("the tenant's lock, exclusively");
    }

    /// A tenant with bucket `media`, and that bucket's id.
    pub(in crate::model) async fn tenant_with_bucket(fx: &Fixture, quota: Option<u64>) -> (TenantId, i64) {
        let a = tenants::create(&fx.pool, "tenant-a", quota).await.expect("a");
        fx.s3.create_bucket_for(a, "media").await.expect("bucket");
        (a, bucket_id(&fx.pool, "media").await)
    }

    #[tokio::test]
    async fn a_free_key_is_bound_and_anything_else_writes_nothing() {
        let fx = fixture("one_statement_outcomes").await;
        let (a, id) = tenant_with_bucket(&fx, None).await;
        let first = ingest(&fx, a, 1).await;
        assert!(matches!(bind_at(&fx, &first, "media", id, "k").await, Outcome::Bound(..)));
        assert_eq!(objects_of(&fx.pool, a).await, (1, 1));
        assert_eq!(chunks_of(&fx, a).await, 1);

        // A key that holds an object, a bucket gone (its id is another's now): a transaction's.
        let second = ingest(&fx, a, 2).await;
        let taken = bind_at(&fx, &second, "media", id, "k").await;
        assert_eq!(taken, Outcome::InTransaction { may_share: true });
        let gone = bind_at(&fx, &second, "media", id + 1000, "other").await;
        assert_eq!(gone, Outcome::InTransaction { may_share: true });
        // A tenant being deleted stores nothing new.
        let client = fx.pool.get().await.expect("client");
        client
            .execute("UPDATE tenants SET deleting_at = now() WHERE id = $1", &[&a.0])
            .await
            .expect("deleting");
        let deleting = bind_at(&fx, &second, "media", id, "other").await;
        assert_eq!(deleting, Outcome::InTransaction { may_share: true });
        assert_eq!(objects_of(&fx.pool, a).await, (1, 1), "no object was added");
        assert_eq!(chunks_of(&fx, a).await, 1, "no chunk was added");
    }

    #[tokio::test]
    async fn near_its_quota_a_tenant_goes_to_a_transaction_and_over_it_is_refused() {
        let fx = fixture("one_statement_quota").await;
        let (a, id) = tenant_with_bucket(&fx, Some(30_000)).await;
        let small = ingest(&fx, a, 1).await;
        let near = bind_at(&fx, &small, "media", id, "k").await;
        assert_eq!(near, Outcome::InTransaction { may_share: false });
        let client = fx.pool.get().await.expect("client");
        client
            .execute("UPDATE tenants SET storage_quota_bytes = 10000 WHERE id = $1", &[&a.0])
            .await
            .expect("quota");
        let over = try_bind(fx.s3.store(), &small, "media", id, "k").await;
        assert!(
            matches!(
                over,
                Err(ModelError::Store(StoreError::QuotaExceeded { used: 0, quota: 10_000, needed: 20_000 }))
            ),
            "{over:?}"
        );
        assert_eq!(objects_of(&fx.pool, a).await, (0, 0));
        assert_eq!(chunks_of(&fx, a).await, 0);
    }

    /// An exclusive holder of the tenant's lock (a commit near the quota, a delete) is waited
    /// for, so that it counts this commit's bytes or this commit counts its own.
    #[tokio::test]
    async fn the_statement_waits_for_an_exclusive_holder_of_the_tenant() {
        let fx = fixture("one_statement_tenant_lock").await;
        let (a, id) = tenant_with_bucket(&fx, None).await;
        let mut holder = fx.pool.get().await.expect("client");
        let hold = holder.transaction().await.expect("txn");
        hold_tenant_alone(&hold, a).await;
        let binding = bind_behind(&fx, ingest(&fx, a, 1).await, id).await;
        assert!(!binding.is_finished(), "the statement waits for the tenant");
        hold.commit().await.expect("release");
        let outcome = binding.await.expect("join").expect("bind");
        assert!(matches!(outcome, Outcome::Bound(..)), "{outcome:?}");
    }

    /// A bucket deleted while the statement waits for its row: nothing is written, and the
    /// transaction that follows tells why.
    #[tokio::test]
    async fn a_bucket_deleted_while_the_statement_waits_gets_nothing() {
        let fx = fixture("one_statement_bucket_lock").await;
        let (a, id) = tenant_with_bucket(&fx, None).await;
        let mut holder = fx.pool.get().await.expect("client");
        let hold = holder.transaction().await.expect("txn");
        hold.execute("SELECT 1 FROM buckets WHERE id = $1 FOR UPDATE", &[&id]).await.expect("hold");
        let binding = bind_behind(&fx, ingest(&fx, a, 1).await, id).await;
        hold.execute("DELETE FROM buckets WHERE id = $1", &[&id]).await.expect("delete");
        hold.commit().await.expect("commit the delete");
        let outcome = binding.await.expect("join").expect("bind");
        assert_eq!(outcome, Outcome::InTransaction { may_share: true });
        assert_eq!(objects_of(&fx.pool, a).await, (0, 0));
        assert_eq!(chunks_of(&fx, a).await, 0);
    }

    /// The key is bound by a transaction still open when the statement takes its snapshot:
    /// the statement finds the key free, writes, waits on the key, and fails once that
    /// transaction commits. Nothing it wrote is left.
    #[tokio::test]
    async fn a_key_bound_after_the_snapshot_undoes_the_whole_statement() {
        let fx = fixture("one_statement_race").await;
        let (a, id) = tenant_with_bucket(&fx, None).await;
        let first = ingest(&fx, a, 1).await;
        assert!(matches!(bind_at(&fx, &first, "media", id, "elsewhere").await, Outcome::Bound(..)));

        // Another writer moves that object to the key, and has not committed yet.
        let mut holder = fx.pool.get().await.expect("client");
        let hold = holder.transaction().await.expect("txn");
        hold.execute("UPDATE s3_objects SET key = 'k' WHERE bucket = 'media' AND key = 'elsewhere'", &[])
            .await
            .expect("move");
        let binding = bind_behind(&fx, ingest(&fx, a, 2).await, id).await;
        hold.commit().await.expect("commit the move");
        let outcome = binding.await.expect("join").expect("bind");
        assert_eq!(outcome, Outcome::InTransaction { may_share: true });
        assert_eq!(objects_of(&fx.pool, a).await, (1, 1), "the statement's object is undone");
        assert_eq!(chunks_of(&fx, a).await, 1, "and its chunk");
    }

    /// The peers that hold a read cache lease are read after the statement's commit, not in
    /// its snapshot: a lease stamped while the statement waits for a lock is in the answer.
    #[tokio::test]
    async fn the_leased_peers_come_from_after_the_commit() {
        let fx = fixture("one_statement_peers").await;
        let (a, id) = tenant_with_bucket(&fx, None).await;
        let first = ingest(&fx, a, 1).await;
        let alone = bind_at(&fx, &first, "media", id, "first").await;
        assert!(matches!(alone, Outcome::Bound(_, Some(ref peers)) if peers.is_empty()), "{alone:?}");

        let client = fx.pool.get().await.expect("client");
        let peer: i32 = client
            .query_one(
                "INSERT INTO storage_nodes (name, zone, internal_url) VALUES ('peer', 'b', 'http://127.0.0.1:9') \
                 RETURNING id",
                &[],
            )
            .await
            .expect("a peer")
            .get(0);
        let mut holder = fx.pool.get().await.expect("client");
        let hold = holder.transaction().await.expect("txn");
        hold_tenant_alone(&hold, a).await;
        let binding = bind_behind(&fx, ingest(&fx, a, 2).await, id).await;
        // Stamped once the statement's snapshot was taken, before its commit.
        client
            .execute("UPDATE storage_nodes SET cache_lease_at = now() WHERE id = $1", &[&peer])
            .await
            .expect("the peer's lease");
        hold.commit().await.expect("release");
        let outcome = binding.await.expect("join").expect("bind");
        let expected =
            vec![Leased { node: crate::node_state::NodeId(peer), url: Some("http://127.0.0.1:9".into()) }];
        assert_eq!(outcome, Outcome::Bound(modified_of(&outcome), Some(expected)));
    }

    fn modified_of(outcome: &Outcome) -> OffsetDateTime {
        match outcome {
            Outcome::Bound(modified, _) => *modified,
            other => panic!("not bound: {other:?}"),
        }
    }

    /// As the batch's (`put_batch`): a plan made on empty tables still looks rows up by index.
    #[tokio::test]
    async fn the_statement_looks_up_keys_buckets_and_tenants_by_index_even_planned_on_empty_tables() {
        let fx = fixture("one_statement_plan").await;
        let (a, _) = tenant_with_bucket(&fx, None).await;
        let ingested = ingest(&fx, a, 1).await;
        let commit = ingested.in_one_statement().expect("one statement");
        let (headers, etag) = (ObjectHeaders::default(), "e");
        let row = RowParams::of(etag, &headers);
        let key_types = [Type::TEXT, Type::TEXT, Type::INT8];
        let types: Vec<String> = commit
            .params()
            .iter()
            .map(|(_, kind)| kind.clone())
            .chain(key_types)
            .chain(row.params().iter().map(|(_, kind)| kind.clone()))
            .map(|kind| kind.name().to_owned())
            .collect();
        let plan = generic_plan(&fx, &types, &STATEMENT).await;
        assert_looks_up_by_index(&plan, &["s3_objects", "buckets", "tenants"]);
    }
}
