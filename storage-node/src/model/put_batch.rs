//! Small PUTs of new keys committed and bound many to a statement: group commit in the catalog.
//!
//! A small PUT that may go in one statement (`one_statement`) joins a queue instead. A few
//! workers each take what is queued (up to [`MAX_ROWS`]) and write it with one statement, so
//! that one executor start-up, one commit and one WAL flush serve them all: those are most of
//! what a small PUT costs Postgres, and Postgres most of what it costs the machine. Under no
//! load a batch is one PUT and waits for nothing; under load, the PUTs that arrive while a
//! batch is in flight go together in the next.
//!
//! The statement does what `one_statement` does, for every row at once, and takes its locks in
//! the same order: the keys are looked for in the snapshot; the buckets' rows are held shared;
//! the tenants' locks are taken shared (in the tenants' order); then the chunks (each distinct
//! chunk once, in id order), the objects, and the keys (in key order), so that two batches
//! take rows they share in one order. A tenant's rows are written only when the tenant stays a
//! margin below its quota with all of its rows in the batch added (`store::usage`), as one
//! upload's would be alone. A row whose key is taken, whose bucket changed or whose tenant is
//! near its quota is not written, and its PUT binds as it would have alone; the others are.
//! Anything that fails the statement (a key bound since the snapshot, a deadlock broken, a
//! lost connection) sends every row of the batch to bind alone: nothing was written, or, when
//! the connection was lost after the commit, the row's own binding finds its key taken and
//! replaces the object, as a client's retry would.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::{ToSql, Type};

use super::ModelError;
use super::bucket::CannedAcl;
use super::object::{ChecksumAlgorithm, ChecksumKind, ObjectHeaders, S3_OBJECT_COLUMNS, Target};
use super::one_statement::Outcome;
use crate::read_cache::broadcast::{LEASED_PEERS, Leased, Pending, leased_from_rows, leased_peers_params};
use crate::store::{
    BatchedCommit, BatchedCommits, ChunkStore, Ingested, QUOTA_LOCK_MARGIN, StoreError, tenant_lock_shared,
    used_logical_bytes,
};

/// The most PUTs one statement writes. Beyond a few dozen, a larger batch saves little more
/// and holds its first PUTs longer.
pub const MAX_ROWS: usize = 64;

/// How many batches may be in flight at once: one statement runs while the next gathers.
const WORKERS: usize = 2;

/// How many PUTs may wait in the queue; more wait to join it.
const QUEUE: usize = 1024;

/// The queue of small PUTs, with its workers started at its first PUT. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SmallPuts {
    queue: Arc<OnceLock<mpsc::Sender<Row>>>,
    counts: Arc<Counts>,
}

/// What the batches did, as `/metrics` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmallPutStats {
    /// Statements run.
    pub batches: u64,
    /// PUTs they bound.
    pub bound: u64,
    /// PUTs they sent back to bind alone: a failed statement's, or a key's second in a batch.
    pub alone: u64,
}

#[derive(Debug, Default)]
struct Counts {
    batches: AtomicU64,
    bound: AtomicU64,
    alone: AtomicU64,
}

/// One queued PUT: its commit, its key, its row's columns and where its outcome goes.
#[derive(Debug)]
struct Row {
    commit: BatchedCommit,
    bucket: String,
    bucket_id: i64,
    key: String,
    etag: String,
    headers: ObjectHeaders,
    reply: oneshot::Sender<Reply>,
}

/// What became of a queued PUT.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Written, or not (an [`Outcome::InTransaction`]).
    Done(Outcome),
    /// Not written: the tenant is over its quota.
    OverQuota { used: u64, quota: u64 },
    /// Not written, for a reason of the batch's, not the PUT's: bind it alone.
    Alone,
}

impl SmallPuts {
    /// What the batches did so far.
    pub fn stats(&self) -> SmallPutStats {
        let counts = &self.counts;
        SmallPutStats {
            batches: counts.batches.load(Ordering::Relaxed),
            bound: counts.bound.load(Ordering::Relaxed),
            alone: counts.alone.load(Ordering::Relaxed),
        }
    }

    /// Commits `ingested` and binds it at `target` in the next batch, when it is small enough
    /// ([`Ingested::in_batch`]). `None`: the PUT binds alone, in `one_statement` (it was not
    /// written, or, after a lost connection, perhaps was; see the module's doc). `pending` is
    /// armed from the moment the PUT is queued.
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`] when the tenant is over its quota, as in
    /// `one_statement::bind`.
    pub(super) async fn bind(
        &self,
        store: &ChunkStore,
        ingested: &Ingested,
        target: &Target<'_>,
        etag: &str,
        headers: &ObjectHeaders,
        pending: &Pending,
    ) -> Result<Option<Outcome>, ModelError> {
        let Some(commit) = ingested.in_batch() else { return Ok(None) };
        let needed = commit.size();
        let queue = self.queue.get_or_init(|| start(store, &self.counts));
        let (reply, answer) = oneshot::channel();
        let row = Row {
            commit,
            bucket: target.bucket.to_owned(),
            bucket_id: target.id,
            key: target.key.to_owned(),
            etag: etag.to_owned(),
            headers: headers.clone(),
            reply,
        };
        pending.arm();
        if queue.send(row).await.is_err() {
            pending.disarm();
            return Ok(None);
        }
        match answer.await {
            Ok(Reply::Done(outcome)) => {
                if !matches!(outcome, Outcome::Bound(..)) {
                    pending.disarm();
                }
                Ok(Some(outcome))
            }
            Ok(Reply::OverQuota { used, quota }) => {
                pending.disarm();
                Err(StoreError::QuotaExceeded { used, quota, needed }.into())
            }
            // A worker gone mid-batch may have committed: the invalidation stays armed.
            Ok(Reply::Alone) | Err(_) => Ok(None),
        }
    }
}

/// Starts the workers of a new queue; the queue's sender.
fn start(store: &ChunkStore, counts: &Arc<Counts>) -> mpsc::Sender<Row> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    let receiver = Arc::new(Mutex::new(receiver));
    for _ in 0..WORKERS {
        tokio::spawn(work(store.clone(), receiver.clone(), counts.clone()));
    }
    sender
}

/// A worker: takes a batch, writes it, answers its PUTs; until the queue is dropped.
async fn work(store: ChunkStore, queue: Arc<Mutex<mpsc::Receiver<Row>>>, counts: Arc<Counts>) {
    while let Some(batch) = next_batch(&queue, &counts).await {
        write(&store, batch, &counts).await;
    }
}

/// What is queued, at least one PUT (waiting for it), at most [`MAX_ROWS`]. A PUT whose client
/// is gone is dropped unwritten; a second PUT of a key already in the batch binds alone.
async fn next_batch(queue: &Mutex<mpsc::Receiver<Row>>, counts: &Counts) -> Option<Vec<Row>> {
    let mut taken = Vec::with_capacity(MAX_ROWS);
    if queue.lock().await.recv_many(&mut taken, MAX_ROWS).await == 0 {
        return None;
    }
    let mut keys = HashSet::with_capacity(taken.len());
    let mut batch = Vec::with_capacity(taken.len());
    for row in taken {
        if row.reply.is_closed() {
            continue;
        }
        match keys.insert((row.bucket.clone(), row.key.clone())) {
            true => batch.push(row),
            false => {
                counts.alone.fetch_add(1, Ordering::Relaxed);
                let _gone = row.reply.send(Reply::Alone);
            }
        }
    }
    Some(batch)
}

/// Writes `batch` in one statement and answers each of its PUTs.
async fn write(store: &ChunkStore, batch: Vec<Row>, counts: &Counts) {
    if batch.is_empty() {
        return;
    }
    counts.batches.fetch_add(1, Ordering::Relaxed);
    let answers = match run(store, &batch).await {
        Ok(answers) => answers,
        Err(err) => {
            tracing::debug!(rows = batch.len(), error = %err, "a batch of small PUTs binds alone");
            counts.alone.fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.into_iter().for_each(|row| drop(row.reply.send(Reply::Alone)));
            return;
        }
    };
    for (row, answer) in batch.into_iter().zip(answers) {
        match answer {
            Reply::Done(Outcome::Bound(..)) => counts.bound.fetch_add(1, Ordering::Relaxed),
            Reply::Alone => counts.alone.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let _gone = row.reply.send(answer);
    }
}

/// Runs the statement over `batch`: one answer per row, in order.
async fn run(store: &ChunkStore, batch: &[Row]) -> Result<Vec<Reply>, ModelError> {
    let commits = BatchedCommits::of(batch.iter().map(|row| &row.commit));
    let keys = KeyColumns::of(batch);
    let typed = [commits.params(), keys.params()].concat();
    let types: Vec<Type> = typed.iter().map(|(_, kind)| kind.clone()).collect();
    let values: Vec<&(dyn ToSql + Sync)> = typed.iter().map(|(value, _)| *value).collect();
    let client = store.catalog().get().await?;
    let statement = client.prepare_typed_cached(&STATEMENT, &types).await?;
    let peers_statement = client.prepare_cached(LEASED_PEERS).await?;
    let (node, window) = leased_peers_params(store);
    let peers_params: [&(dyn ToSql + Sync); 2] = [&node, &window];
    // As in `one_statement`: the peers are read after the commit, in the same round trip.
    let (answer, peers) =
        futures::join!(client.query(&statement, &values), client.query(&peers_statement, &peers_params));
    let rows = answer?;
    let peers: Option<Vec<Leased>> = peers.ok().map(|rows| leased_from_rows(&rows));
    // One row per PUT, by the statement's outer joins; a row missing binds alone all the same.
    Ok(batch
        .iter()
        .enumerate()
        .map(|(at, put)| rows.get(at).map_or(Reply::Alone, |row| reply(&put.commit, row, &peers)))
        .collect())
}

/// The answer to `commit`'s PUT from its row of the statement's answer.
fn reply(commit: &BatchedCommit, row: &tokio_postgres::Row, peers: &Option<Vec<Leased>>) -> Reply {
    if let Some(modified) = row.get::<_, Option<OffsetDateTime>>(0) {
        return Reply::Done(Outcome::Bound(modified, peers.clone()));
    }
    let (used, quota, admitted): (Option<i64>, Option<i64>, bool) = (row.get(1), row.get(2), row.get(3));
    let (Some(used), Some(quota)) = (used.map(|u| u as u64), quota.map(|q| q as u64)) else {
        // A key taken, a bucket gone or closed, or a tenant with no quota.
        return Reply::Done(Outcome::InTransaction { may_share: true });
    };
    match admitted {
        // Its tenant was far from its quota: a key taken or a bucket changed.
        true => Reply::Done(Outcome::InTransaction { may_share: true }),
        false if used.saturating_add(commit.size()) > quota => Reply::OverQuota { used, quota },
        false => Reply::Done(Outcome::InTransaction { may_share: false }),
    }
}

/// The keys' and rows' columns of a batch, as array parameters after [`BatchedCommits`]'s.
struct KeyColumns<'a> {
    buckets: Vec<&'a str>,
    bucket_ids: Vec<i64>,
    keys: Vec<&'a str>,
    etags: Vec<&'a str>,
    content_types: Vec<Option<&'a str>>,
    content_dispositions: Vec<Option<&'a str>>,
    cache_controls: Vec<Option<&'a str>>,
    metadata: Vec<String>,
    content_encodings: Vec<Option<&'a str>>,
    content_languages: Vec<Option<&'a str>>,
    expires: Vec<Option<OffsetDateTime>>,
    algorithms: Vec<Option<ChecksumAlgorithm>>,
    kinds: Vec<Option<ChecksumKind>>,
    checksums: Vec<Option<&'a str>>,
    acls: Vec<CannedAcl>,
}

impl<'a> KeyColumns<'a> {
    /// The names of the columns, in the order of [`KeyColumns::params`].
    const COLUMNS: &'static str = "bucket, bucket_id, key, etag, content_type, content_disposition, \
         cache_control, user_metadata, content_encoding, content_language, expires, checksum_algorithm, \
         checksum_type, checksum, acl";
    /// Their types, as `unnest` takes them.
    const TYPES: [&'static str; 15] = [
        "text[]",
        "int8[]",
        "text[]",
        "text[]",
        "text[]",
        "text[]",
        "text[]",
        "text[]",
        "text[]",
        "text[]",
        "timestamptz[]",
        "text[]",
        "text[]",
        "text[]",
        "text[]",
    ];

    fn of(batch: &'a [Row]) -> Self {
        let headers = |get: fn(&ObjectHeaders) -> &Option<String>| -> Vec<Option<&'a str>> {
            batch.iter().map(|row| get(&row.headers).as_deref()).collect()
        };
        let checksums = || batch.iter().map(|row| row.headers.checksum.as_ref());
        KeyColumns {
            buckets: batch.iter().map(|row| row.bucket.as_str()).collect(),
            bucket_ids: batch.iter().map(|row| row.bucket_id).collect(),
            keys: batch.iter().map(|row| row.key.as_str()).collect(),
            etags: batch.iter().map(|row| row.etag.as_str()).collect(),
            content_types: headers(|h| &h.content_type),
            content_dispositions: headers(|h| &h.content_disposition),
            cache_controls: headers(|h| &h.cache_control),
            metadata: batch.iter().map(|row| row.headers.metadata_json()).collect(),
            content_encodings: headers(|h| &h.content_encoding),
            content_languages: headers(|h| &h.content_language),
            expires: batch.iter().map(|row| row.headers.expires).collect(),
            algorithms: checksums().map(|c| c.map(|c| c.algorithm)).collect(),
            kinds: checksums().map(|c| c.map(|c| c.kind)).collect(),
            checksums: checksums().map(|c| c.map(|c| c.value.as_str())).collect(),
            acls: batch.iter().map(|row| row.headers.acl).collect(),
        }
    }

    fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        vec![
            (&self.buckets, Type::TEXT_ARRAY),
            (&self.bucket_ids, Type::INT8_ARRAY),
            (&self.keys, Type::TEXT_ARRAY),
            (&self.etags, Type::TEXT_ARRAY),
            (&self.content_types, Type::TEXT_ARRAY),
            (&self.content_dispositions, Type::TEXT_ARRAY),
            (&self.cache_controls, Type::TEXT_ARRAY),
            (&self.metadata, Type::TEXT_ARRAY),
            (&self.content_encodings, Type::TEXT_ARRAY),
            (&self.content_languages, Type::TEXT_ARRAY),
            (&self.expires, Type::TIMESTAMPTZ_ARRAY),
            (&self.algorithms, Type::TEXT_ARRAY),
            (&self.kinds, Type::TEXT_ARRAY),
            (&self.checksums, Type::TEXT_ARRAY),
            (&self.acls, Type::TEXT_ARRAY),
        ]
    }
}

/// The statement over [`BatchedCommits::params`] then [`KeyColumns::params`]. It answers one
/// row per PUT, in order: the key's modification time when it was bound; else, when the
/// tenant's lock was taken (with a quota), the tenant's used bytes and quota; and whether the
/// tenant was admitted (far enough from its quota with the whole batch's rows).
static STATEMENT: LazyLock<String> = LazyLock::new(|| {
    let types = BatchedCommits::TYPES.iter().chain(KeyColumns::TYPES.iter());
    let arrays: Vec<String> = types.enumerate().map(|(at, kind)| format!("${}::{kind}", at + 1)).collect();
    format!(
        "WITH input AS MATERIALIZED (SELECT * FROM unnest({arrays}) WITH ORDINALITY \
                                     AS i({commits}, {keys}, ord)), \
              free AS MATERIALIZED (SELECT i.* FROM input i WHERE (SELECT true FROM s3_objects s \
                                    WHERE s.bucket = i.bucket AND s.key = i.key) IS NULL), \
              b AS MATERIALIZED (SELECT b.name, b.id, b.tenant_id FROM buckets b \
                                 WHERE b.name = ANY (ARRAY (SELECT DISTINCT bucket FROM free)) \
                                   AND (SELECT t.deleting_at IS NULL FROM tenants t WHERE t.id = b.tenant_id) \
                                 ORDER BY b.name FOR KEY SHARE OF b), \
              bt AS MATERIALIZED (SELECT DISTINCT tenant_id FROM b ORDER BY tenant_id), \
              admitted AS MATERIALIZED (SELECT bt.tenant_id AS id, t.quota, t.used FROM bt, \
                                        LATERAL (SELECT t.storage_quota_bytes AS quota, {used} AS used \
                                                 FROM tenants t WHERE t.id = bt.tenant_id FOR KEY SHARE) AS t \
                                        WHERE {lock} ORDER BY bt.tenant_id), \
              go AS MATERIALIZED (SELECT a.id FROM admitted a \
                                  WHERE a.quota IS NULL OR a.used + {QUOTA_LOCK_MARGIN} \
                                        + (SELECT sum(f.size) FROM free f WHERE f.tenant = a.id) <= a.quota), \
              w AS MATERIALIZED (SELECT f.*, nextval('objects_id_seq'::regclass) AS object_id \
                                 FROM free f JOIN b ON b.name = f.bucket AND b.id = f.bucket_id \
                                                   AND b.tenant_id = f.tenant \
                                 WHERE f.tenant IN (SELECT id FROM go)), \
              {commit}, \
              s AS (INSERT INTO s3_objects ({S3_OBJECT_COLUMNS}) \
                    SELECT w.bucket, w.key, w.object_id, w.etag, w.content_type, w.content_disposition, \
                           w.cache_control, w.user_metadata::jsonb, w.content_encoding, w.content_language, \
                           w.expires, w.checksum_algorithm, w.checksum_type, w.checksum, NULL, w.acl \
                    FROM w JOIN o ON o.id = w.object_id ORDER BY w.bucket, w.key \
                    RETURNING object_id, last_modified) \
         SELECT s.last_modified, a.used, a.quota, coalesce(i.tenant IN (SELECT id FROM go), false) \
         FROM input i LEFT JOIN w ON w.ord = i.ord LEFT JOIN s ON s.object_id = w.object_id \
                      LEFT JOIN admitted a ON a.id = i.tenant \
         ORDER BY i.ord",
        arrays = arrays.join(", "),
        commits = BatchedCommits::COLUMNS,
        keys = KeyColumns::COLUMNS,
        used = used_logical_bytes(),
        // It names the tenants' CTE, scanned in order, so the locks are taken in that order.
        lock = tenant_lock_shared("bt.tenant_id"),
        commit = BatchedCommits::ctes("w"),
    )
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;
    use crate::catalog::tenants;
    use crate::model::one_statement::tests::{
        assert_looks_up_by_index, chunks_of, generic_plan, hold_tenant_alone, ingest, ingest_body,
        tenant_with_bucket,
    };
    use crate::read_cache::Invalidation;
    use crate::s3::tests::{Fixture, bucket_id, fixture, objects_of, until_waiting};

    /// `ingested` as a queued PUT to `bucket` (of id `id`) at `key`, and where its answer comes.
    fn row(ingested: &Ingested, bucket: &str, id: i64, key: &str) -> (Row, oneshot::Receiver<Reply>) {
        let (reply, answer) = oneshot::channel();
        let commit = ingested.in_batch().expect("a small upload goes in a batch");
        let headers = ObjectHeaders::default();
        let row = Row {
            commit,
            bucket: bucket.into(),
            bucket_id: id,
            key: key.into(),
            etag: "e".into(),
            headers,
            reply,
        };
        (row, answer)
    }

    /// A tenant with quota `quota` and bucket `bucket`, and that bucket's id.
    async fn tenant_and_bucket(fx: &Fixture, name: &str, quota: u64, bucket: &str) -> (TenantId, i64) {
        let tenant = tenants::create(&fx.pool, name, Some(quota)).await.expect("tenant");
        fx.s3.create_bucket_for(tenant, bucket).await.expect("bucket");
        (tenant, bucket_id(&fx.pool, bucket).await)
    }

    fn bound(reply: &Reply) -> bool {
        matches!(reply, Reply::Done(Outcome::Bound(..)))
    }

    /// Every row gets what it would have got alone: free keys bound (a chunk twice counted
    /// once), a taken key or a changed bucket to a transaction, a tenant near its quota to an
    /// exclusive one, a tenant over it refused; nothing of the rows not bound is written.
    #[tokio::test]
    async fn a_batch_binds_its_free_keys_and_answers_each_other_row_as_alone() {
        let fx = fixture("put_batch_outcomes").await;
        let store = fx.s3.store();
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let (near, near_bucket) = tenant_and_bucket(&fx, "tenant-near", 30_000, "near").await;
        let (over, over_bucket) = tenant_and_bucket(&fx, "tenant-over", 10_000, "over").await;
        let first = ingest(&fx, a, 2).await;
        let (taken, _) = row(&first, "media", media, "taken");
        assert!(bound(&run(store, &[taken]).await.expect("run")[0]));

        let (same, other, empty) =
            (ingest(&fx, a, 1).await, ingest(&fx, a, 3).await, ingest_body(&fx, a, vec![]).await);
        let (near_put, over_put) = (ingest(&fx, near, 1).await, ingest(&fx, over, 1).await);
        let rows = [
            row(&same, "media", media, "one").0,
            row(&same, "media", media, "two").0,
            row(&other, "media", media, "taken").0,
            row(&other, "media", media + 1000, "moved").0,
            row(&empty, "media", media, "empty").0,
            row(&near_put, "near", near_bucket, "k").0,
            row(&over_put, "over", over_bucket, "k").0,
        ];
        let replies = run(store, &rows).await.expect("run");
        assert!(replies[..2].iter().all(bound), "{replies:?}");
        assert_eq!(replies[2], Reply::Done(Outcome::InTransaction { may_share: true }));
        assert_eq!(replies[3], Reply::Done(Outcome::InTransaction { may_share: true }));
        assert!(bound(&replies[4]), "{replies:?}");
        assert_eq!(replies[5], Reply::Done(Outcome::InTransaction { may_share: false }));
        assert_eq!(replies[6], Reply::OverQuota { used: 0, quota: 10_000 });

        assert_eq!(objects_of(&fx.pool, a).await, (4, 4), "taken, one, two and empty");
        assert_eq!(chunks_of(&fx, a).await, 2, "one chunk for one and two, none for the empty body");
        let usage = store.usage(a).await.expect("usage");
        assert_eq!((usage.logical_bytes, usage.unique_bytes), (60_000, 40_000));
        for tenant in [near, over] {
            assert_eq!(objects_of(&fx.pool, tenant).await, (0, 0));
            assert_eq!(chunks_of(&fx, tenant).await, 0);
        }
        // The chunk shared by two keys is referenced twice: deleting one keeps it.
        let refs = crate::s3::tests::count(
            &fx.pool,
            "SELECT sum(refcount)::int8 FROM chunks WHERE tenant_id = $1",
            a,
        )
        .await;
        assert_eq!(refs, 3);
    }

    /// A key twice in what is queued: the second binds alone. A PUT whose client is gone is
    /// not written.
    #[tokio::test]
    async fn a_key_queued_twice_binds_alone_the_second_time_and_a_gone_client_is_not_written() {
        let fx = fixture("put_batch_queue").await;
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let ingested = ingest(&fx, a, 1).await;
        let (sender, receiver) = mpsc::channel(8);
        let (first, _first_answer) = row(&ingested, "media", media, "k");
        let (again, again_answer) = row(&ingested, "media", media, "k");
        let (gone, gone_answer) = row(&ingested, "media", media, "gone");
        drop(gone_answer);
        for queued in [first, again, gone] {
            sender.send(queued).await.expect("queued");
        }
        let counts = Counts::default();
        let batch = next_batch(&Mutex::new(receiver), &counts).await.expect("a batch");
        assert_eq!(batch.iter().map(|row| row.key.as_str()).collect::<Vec<_>>(), ["k"]);
        assert_eq!(again_answer.await.expect("answered"), Reply::Alone);
        assert_eq!(counts.alone.load(Ordering::Relaxed), 1);
    }

    /// A key bound by a transaction still open at the batch's snapshot fails the whole
    /// statement: nothing of it is left, and each of its PUTs is sent to bind alone.
    #[tokio::test]
    async fn a_failed_batch_leaves_nothing_and_sends_each_put_alone() {
        let fx = fixture("put_batch_failure").await;
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let first = ingest(&fx, a, 1).await;
        assert!(bound(
            &run(fx.s3.store(), &[row(&first, "media", media, "elsewhere").0]).await.expect("run")[0]
        ));

        let mut holder = fx.pool.get().await.expect("client");
        let hold = holder.transaction().await.expect("txn");
        hold.execute("UPDATE s3_objects SET key = 'k' WHERE bucket = 'media' AND key = 'elsewhere'", &[])
            .await
            .expect("move");
        let (second, third) = (ingest(&fx, a, 2).await, ingest(&fx, a, 3).await);
        let (racing, racing_answer) = row(&second, "media", media, "k");
        let (free, free_answer) = row(&third, "media", media, "free");
        let counts = Arc::new(Counts::default());
        let (store, task_counts) = (fx.s3.store().clone(), counts.clone());
        let writing = tokio::spawn(async move { write(&store, vec![free, racing], &task_counts).await });
        until_waiting(&fx.pool, 1, || writing.is_finished()).await;
        hold.commit().await.expect("commit the move");
        writing.await.expect("join");
        assert_eq!(racing_answer.await.expect("answered"), Reply::Alone);
        assert_eq!(free_answer.await.expect("answered"), Reply::Alone);
        assert_eq!(counts.alone.load(Ordering::Relaxed), 2);
        assert_eq!(objects_of(&fx.pool, a).await, (1, 1), "the batch's objects are undone");
        assert_eq!(chunks_of(&fx, a).await, 1, "and its chunks");
    }

    /// PUTs that queue while the batches before them wait share statements, and each is
    /// bound.
    #[tokio::test]
    async fn puts_queued_behind_a_waiting_batch_share_a_statement() {
        let fx = fixture("put_batch_shared").await;
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let mut holder = fx.pool.get().await.expect("client");
        let hold = holder.transaction().await.expect("txn");
        hold_tenant_alone(&hold, a).await;
        let puts = SmallPuts::default();
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let ingested = ingest(&fx, a, i).await;
            let (puts, store) = (puts.clone(), fx.s3.store().clone());
            tasks.push(tokio::spawn(async move {
                let key = format!("k{i}");
                let target = Target { bucket: "media", id: media, key: &key };
                let pending = Pending::new(&store, Invalidation::key("media", &key));
                let headers = ObjectHeaders::default();
                puts.bind(&store, &ingested, &target, "e", &headers, &pending).await.expect("bind")
            }));
        }
        until_waiting(&fx.pool, 1, || false).await;
        // The other PUTs queue behind the batches that wait.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        hold.commit().await.expect("release");
        for task in tasks {
            let outcome = task.await.expect("join");
            assert!(matches!(outcome, Some(Outcome::Bound(..))), "{outcome:?}");
        }
        let stats = puts.stats();
        assert_eq!(stats.bound, 8);
        assert!(stats.batches <= 3, "{stats:?}");
        assert_eq!(objects_of(&fx.pool, a).await, (8, 8));
    }

    /// The keys, buckets and tenants are looked up by index whatever the tables' size when
    /// the plan was made: a connection keeps the generic plan it made while the tables were
    /// small, and a plan that scanned `s3_objects` then made every later statement scan all of
    /// it (the bench's PUT rate fell by half within 50,000 PUTs).
    #[tokio::test]
    async fn the_statement_looks_up_keys_buckets_and_tenants_by_index_even_planned_on_empty_tables() {
        let fx = fixture("put_batch_plan").await;
        let types: Vec<String> = BatchedCommits::TYPES
            .iter()
            .chain(KeyColumns::TYPES.iter())
            .map(|kind| kind.to_string())
            .collect();
        let plan = generic_plan(&fx, &types, &STATEMENT).await;
        assert_looks_up_by_index(&plan, &["s3_objects", "buckets", "tenants"]);
        assert!(plan.contains("s3_objects_pkey"), "{plan}");
    }
}
