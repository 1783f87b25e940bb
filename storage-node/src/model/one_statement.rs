//! A small new object committed and bound to its key in one catalog statement, with no
//! transaction around it: the PUT a website makes most (a new key, one inline chunk, a tenant
//! far from its quota, no condition) costs one round trip to Postgres instead of five (`BEGIN`,
//! the bucket's and the tenant's locks, the commit, the binding, `COMMIT`), and one statement's
//! start-up instead of six.
//!
//! The statement takes what [`super::object::bind`]'s transaction takes, in the same order: the
//! bucket's row shared, the tenant's lock shared (`store::usage`), the chunk's row, then the
//! object and its key. Each write waits on the CTE `go`, which has a row only when the bucket is
//! there and open, the tenant far from its quota and the key free in the statement's snapshot;
//! otherwise nothing is written, and the caller binds in a transaction as before. A key bound
//! by a commit that lands after that snapshot fails the statement's insert (a unique
//! violation), which undoes the whole statement as it undoes any, and the caller goes the same
//! way.

use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::ModelError;
use super::object::{RowParams, S3_OBJECT_COLUMNS, Target};
use crate::store::{
    ChunkStore, OneStatementCommit, StoreError, far_from_quota, record_object, tenant_lock_shared,
};

/// How [`bind`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Committed and bound, at this modification time.
    Bound(OffsetDateTime),
    /// Nothing written: bind in a transaction, sharing the tenant's lock or not.
    InTransaction { shared: bool },
}

/// Commits `commit` and binds it at `target` with `etag` and `headers`, in one statement, when
/// nothing stands in the way (see the module's doc).
///
/// # Errors
/// Catalog errors, other than those that send the caller to a transaction.
pub(super) async fn bind(
    store: &ChunkStore,
    commit: &OneStatementCommit<'_>,
    target: &Target<'_>,
    etag: &str,
    headers: &super::object::ObjectHeaders,
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
    let statement = client.prepare_typed_cached(&statement_sql(), &types).await?;
    let answer = match client.query_one(&statement, &values).await {
        Ok(answer) => answer,
        Err(err) if sends_to_transaction(&err) => return Ok(Outcome::InTransaction { shared: true }),
        Err(err) => return Err(err.into()),
    };
    let far: Option<bool> = answer.get(0);
    let free: bool = answer.get(1);
    Ok(match answer.get::<_, Option<OffsetDateTime>>(2) {
        Some(modified) => Outcome::Bound(modified),
        None if far == Some(false) => Outcome::InTransaction { shared: false },
        None if far.is_none() || !free => Outcome::InTransaction { shared: true },
        None => return Err(StoreError::Task("the one-statement put bound nothing".into()).into()),
    })
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
/// the key and the bucket's id, then [`RowParams::params`].
fn statement_sql() -> String {
    let (tenant, room) = (OneStatementCommit::TENANT, OneStatementCommit::ROOM);
    let first = OneStatementCommit::PARAMS + 1;
    let (bucket, key, bucket_id) =
        (format!("${first}"), format!("${}", first + 1), format!("${}", first + 2));
    format!(
        "WITH b AS MATERIALIZED (SELECT b.tenant_id, t.deleting_at IS NULL AS open \
                                 FROM buckets b JOIN tenants t ON t.id = b.tenant_id \
                                 WHERE b.name = {bucket} AND b.id = {bucket_id} FOR KEY SHARE OF b), \
              admitted AS MATERIALIZED (SELECT {far} AS far FROM b JOIN tenants t ON t.id = b.tenant_id \
                                        WHERE b.open AND b.tenant_id = {tenant} AND {lock} FOR KEY SHARE OF t), \
              free AS MATERIALIZED (SELECT NOT EXISTS (SELECT 1 FROM s3_objects \
                                                       WHERE bucket = {bucket} AND key = {key}) AS free), \
              go AS MATERIALIZED (SELECT 1 FROM admitted, free WHERE admitted.far AND free.free), \
              {chunks}, {object}, {delta}, \
              s AS (INSERT INTO s3_objects ({S3_OBJECT_COLUMNS}) \
                    SELECT {bucket}, {key}, o.id, {row} FROM o RETURNING last_modified) \
         SELECT admitted.far, coalesce(free.free, false), s.last_modified \
         FROM (SELECT 1) AS one LEFT JOIN admitted ON true LEFT JOIN free ON true LEFT JOIN s ON true",
        far = far_from_quota(room),
        // After the bucket's row (it names a column of it), as the transaction's order is.
        lock = tenant_lock_shared("b.tenant_id"),
        chunks = OneStatementCommit::chunks(),
        // After the chunks (`added`), as the transaction's order is.
        object = record_object("FROM added, go"),
        delta = OneStatementCommit::usage_delta(),
        row = RowParams::values(first + 3),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;
    use crate::catalog::tenants;
    use crate::model::object::ObjectHeaders;
    use crate::s3::tests::{Fixture, count, fixture, objects_of, until_waiting};
    use crate::store::{Ingested, PutOptions};

    async fn ingest(fx: &Fixture, tenant: TenantId, byte: u8) -> Ingested {
        let body = vec![byte; 20_000];
        let options = PutOptions { expected_len: Some(body.len() as u64), md5: true };
        fx.s3.store().ingest(tenant, std::io::Cursor::new(body), options).await.expect("ingest")
    }

    async fn bind_at(fx: &Fixture, ingested: &Ingested, bucket: &str, id: i64, key: &str) -> Outcome {
        let commit = ingested.in_one_statement().expect("a small upload commits in one statement");
        let target = Target { bucket, id, key };
        bind(fx.s3.store(), &commit, &target, "etag", &ObjectHeaders::default()).await.expect("bind")
    }

    async fn bucket_id(fx: &Fixture, name: &str) -> i64 {
        let client = fx.pool.get().await.expect("client");
        client.query_one("SELECT id FROM buckets WHERE name = $1", &[&name]).await.expect("bucket").get(0)
    }

    async fn chunks_of(fx: &Fixture, tenant: TenantId) -> i64 {
        count(&fx.pool, "SELECT count(*) FROM chunks WHERE tenant_id = $1", tenant).await
    }

    #[tokio::test]
    async fn a_free_key_is_bound_and_anything_else_writes_nothing() {
        let fx = fixture("one_statement_outcomes").await;
        let a = tenants::create(&fx.pool, "tenant-a", None).await.expect("a");
        fx.s3.create_bucket_for(a, "media").await.expect("bucket");
        let id = bucket_id(&fx, "media").await;

        let first = ingest(&fx, a, 1).await;
        assert!(matches!(bind_at(&fx, &first, "media", id, "k").await, Outcome::Bound(_)));
        assert_eq!(objects_of(&fx.pool, a).await, (1, 1));
        assert_eq!(chunks_of(&fx, a).await, 1);

        // A key that holds an object, a bucket gone (its id is another's now): a transaction's.
        let second = ingest(&fx, a, 2).await;
        let taken = bind_at(&fx, &second, "media", id, "k").await;
        assert_eq!(taken, Outcome::InTransaction { shared: true });
        let gone = bind_at(&fx, &second, "media", id + 1000, "other").await;
        assert_eq!(gone, Outcome::InTransaction { shared: true });
        assert_eq!(objects_of(&fx.pool, a).await, (1, 1), "no object was added");
        assert_eq!(chunks_of(&fx, a).await, 1, "no chunk was added");
    }

    #[tokio::test]
    async fn near_its_quota_a_tenant_goes_to_a_transaction_that_holds_it_alone() {
        let fx = fixture("one_statement_quota").await;
        let a = tenants::create(&fx.pool, "tenant-a", Some(10 << 20)).await.expect("a");
        fx.s3.create_bucket_for(a, "media").await.expect("bucket");
        let id = bucket_id(&fx, "media").await;
        let small = ingest(&fx, a, 1).await;
        let near = bind_at(&fx, &small, "media", id, "k").await;
        assert_eq!(near, Outcome::InTransaction { shared: false });
        assert_eq!(objects_of(&fx.pool, a).await, (0, 0));
        assert_eq!(chunks_of(&fx, a).await, 0);
    }

    /// The key is bound by a transaction still open when the statement takes its snapshot:
    /// the statement finds the key free, writes, waits on the key, and fails once that
    /// transaction commits. Nothing it wrote is left.
    #[tokio::test]
    async fn a_key_bound_after_the_snapshot_undoes_the_whole_statement() {
        let fx = fixture("one_statement_race").await;
        let a = tenants::create(&fx.pool, "tenant-a", None).await.expect("a");
        fx.s3.create_bucket_for(a, "media").await.expect("bucket");
        let id = bucket_id(&fx, "media").await;
        let first = ingest(&fx, a, 1).await;
        assert!(matches!(bind_at(&fx, &first, "media", id, "elsewhere").await, Outcome::Bound(_)));

        // Another writer moves that object to the key, and has not committed yet.
        let mut holder = fx.pool.get().await.expect("client");
        let hold = holder.transaction().await.expect("txn");
        hold.execute("UPDATE s3_objects SET key = 'k' WHERE bucket = 'media' AND key = 'elsewhere'", &[])
            .await
            .expect("move");
        let second = ingest(&fx, a, 2).await;
        let s3 = fx.s3.clone();
        let binding = tokio::spawn(async move {
            let commit = second.in_one_statement().expect("one statement");
            let target = Target { bucket: "media", id, key: "k" };
            bind(s3.store(), &commit, &target, "etag", &ObjectHeaders::default()).await
        });
        until_waiting(&fx.pool, 1, || binding.is_finished()).await;
        hold.commit().await.expect("commit the move");
        let outcome = binding.await.expect("join").expect("bind");
        assert_eq!(outcome, Outcome::InTransaction { shared: true });
        assert_eq!(objects_of(&fx.pool, a).await, (1, 1), "the statement's object is undone");
        assert_eq!(chunks_of(&fx, a).await, 1, "and its chunk");
    }
}
