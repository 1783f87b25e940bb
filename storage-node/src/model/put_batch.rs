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
//! upload's would be alone.
//!
//! One PUT must not hold up the others for long. The batch does not wait for a tenant's lock
//! or a bucket's row that another transaction holds (GC, a delete, a bucket's deletion): those
//! rows are left out and bind alone, in a transaction that waits. For a row lock it does wait
//! for (a chunk's, a key's), it waits at most [`LOCK_TIMEOUT`]. A row whose key is taken or
//! whose bucket changed is not written either, and binds as it would have alone. A key always
//! goes to the same worker's queue, and a second PUT of a key waits for the next batch, so
//! batches do not race each other for a key. Anything that fails the statement (a lock waited
//! for too long, a key bound since the snapshot by another path, a deadlock) sends every row of
//! the batch to bind alone: Postgres refused it, so nothing was written. A lost connection
//! sends them to a transaction instead, which replaces the object if the statement committed,
//! as a client's retry would, with the read caches' invalidation still owed.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::ModelError;
use super::bucket::CannedAcl;
use super::object::{ChecksumAlgorithm, ChecksumKind, ObjectHeaders, S3_OBJECT_COLUMNS, Target};
use super::one_statement::Outcome;
use crate::read_cache::broadcast::{LEASED_PEERS, Leased, Pending, leased_from_rows, leased_peers_params};
use crate::store::{
    BatchedCommit, BatchedCommits, ChunkStore, Ingested, QUOTA_LOCK_MARGIN, StoreError,
    tenant_lock_shared_at_once, used_logical_bytes,
};

/// The most PUTs one statement writes. Beyond a few dozen, a larger batch saves little more
/// and holds its first PUTs longer.
pub const MAX_ROWS: usize = 64;

/// How many batches may be in flight at once: one statement runs while the next gathers.
/// Each has its own queue, and a key always goes to the same one (by its hash), so that two
/// batches never race for one key.
const WORKERS: usize = 2;

/// How many PUTs may wait in each queue; more wait to join it.
const QUEUE: usize = 512;

/// The longest a batch waits for a row lock another transaction holds (a chunk's, a key's)
/// before it gives up and its PUTs bind alone: one PUT's wait must not hold up the others for
/// long. The tenants' and buckets' locks it does not wait for at all.
const LOCK_TIMEOUT: &str = "100ms";

/// The queues of small PUTs, with their workers started at the first PUT. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SmallPuts {
    queues: Arc<OnceLock<Vec<mpsc::Sender<Row>>>>,
    counts: Arc<Counts>,
}

/// What the batches did, as `/metrics` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmallPutStats {
    /// Statements run.
    pub batches: u64,
    /// PUTs they bound.
    pub bound: u64,
    /// Statements that failed, whose PUTs all bound alone.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counts {
    batches: AtomicU64,
    bound: AtomicU64,
    failed: AtomicU64,
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
    /// The statement was sent and no answer came back (a lost connection): it may have
    /// committed.
    MaybeWritten,
}

/// How [`SmallPuts::bind`] ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Batched {
    /// As `one_statement::bind` would have ended.
    Done(Outcome),
    /// Not written: bind alone, in `one_statement`.
    Alone,
    /// Perhaps written (see [`Reply::MaybeWritten`]): bind in a transaction, which replaces
    /// the object if it was; the caches' invalidation stays owed.
    MaybeWritten,
}

impl SmallPuts {
    /// What the batches did so far.
    pub fn stats(&self) -> SmallPutStats {
        let counts = &self.counts;
        SmallPutStats {
            batches: counts.batches.load(Ordering::Relaxed),
            bound: counts.bound.load(Ordering::Relaxed),
            failed: counts.failed.load(Ordering::Relaxed),
        }
    }

    /// Commits `ingested` and binds it at `target` in the next batch, when it is small enough
    /// ([`Ingested::in_batch`]); else [`Batched::Alone`]. `pending` is armed from the moment the
    /// PUT is queued.
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
    ) -> Result<Batched, ModelError> {
        let Some(commit) = ingested.in_batch() else { return Ok(Batched::Alone) };
        let needed = commit.size();
        let queues = self.queues.get_or_init(|| start(store, &self.counts));
        let queue = &queues[queue_of(target.bucket, target.key, queues.len())];
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
            return Ok(Batched::Alone);
        }
        match answer.await {
            Ok(Reply::Done(outcome)) => {
                if !matches!(outcome, Outcome::Bound(..)) {
                    pending.disarm();
                }
                Ok(Batched::Done(outcome))
            }
            Ok(Reply::OverQuota { used, quota }) => {
                pending.disarm();
                Err(StoreError::QuotaExceeded { used, quota, needed }.into())
            }
            Ok(Reply::Alone) => {
                pending.disarm();
                Ok(Batched::Alone)
            }
            // A worker gone mid-batch may have committed, as a lost connection may have.
            Ok(Reply::MaybeWritten) | Err(_) => Ok(Batched::MaybeWritten),
        }
    }
}

/// The queue of `bucket`/`key`, among `queues`.
fn queue_of(bucket: &str, key: &str, queues: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    (bucket, key).hash(&mut hasher);
    (hasher.finish() % queues as u64) as usize
}

/// Starts the workers, each with its queue; the queues' senders.
fn start(store: &ChunkStore, counts: &Arc<Counts>) -> Vec<mpsc::Sender<Row>> {
    (0..WORKERS)
        .map(|_| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(work(store.clone(), receiver, counts.clone()));
            sender
        })
        .collect()
}

/// A worker: takes a batch, writes it, answers its PUTs; until its queue is dropped.
async fn work(store: ChunkStore, mut queue: mpsc::Receiver<Row>, counts: Arc<Counts>) {
    let mut held = Vec::new();
    while let Some(batch) = next_batch(&mut queue, &mut held).await {
        write(&store, batch, &counts).await;
    }
}

/// The PUTs `held` from the batch before, then what is queued: at least one PUT (waiting for
/// it), at most [`MAX_ROWS`]. A PUT whose client is gone is dropped unwritten. A second PUT of
/// a key already in the batch is held for the next, so that it replaces the first as it would
/// have had they come one after the other.
async fn next_batch(queue: &mut mpsc::Receiver<Row>, held: &mut Vec<Row>) -> Option<Vec<Row>> {
    let mut taken = std::mem::take(held);
    if taken.is_empty() {
        if queue.recv_many(&mut taken, MAX_ROWS).await == 0 {
            return None;
        }
    } else {
        while taken.len() < MAX_ROWS
            && let Ok(row) = queue.try_recv()
        {
            taken.push(row);
        }
    }
    let mut keys = HashSet::with_capacity(taken.len());
    let mut batch = Vec::with_capacity(taken.len());
    for row in taken {
        if row.reply.is_closed() {
            continue;
        }
        match batch.len() < MAX_ROWS && keys.insert((row.bucket.clone(), row.key.clone())) {
            true => batch.push(row),
            false => held.push(row),
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
    let client = match store.catalog().get().await {
        Ok(client) => client,
        Err(err) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(rows = batch.len(), error = %err, "no catalog connection for a batch of small PUTs");
            batch.into_iter().for_each(|row| drop(row.reply.send(Reply::Alone)));
            return;
        }
    };
    let answers = match run(store, &client, &batch).await {
        Ok(answers) => answers,
        Err(err) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            let refused = err.as_db_error();
            match refused.map(|db| db.code()) {
                // A lock waited for too long, a key bound meanwhile, a deadlock: contention.
                Some(code) if EXPECTED.contains(code) => {
                    tracing::debug!(rows = batch.len(), error = %err, "a batch of small PUTs binds alone")
                }
                _ => {
                    tracing::warn!(rows = batch.len(), error = %err, "a batch of small PUTs failed; they bind alone")
                }
            }
            // Postgres refused it, so nothing was written; else it may have committed.
            let reply = || if refused.is_some() { Reply::Alone } else { Reply::MaybeWritten };
            batch.into_iter().for_each(|row| drop(row.reply.send(reply())));
            return;
        }
    };
    for (row, answer) in batch.into_iter().zip(answers) {
        if matches!(answer, Reply::Done(Outcome::Bound(..))) {
            counts.bound.fetch_add(1, Ordering::Relaxed);
        }
        let _gone = row.reply.send(answer);
    }
}

/// The errors contention makes a batch fail with.
const EXPECTED: [SqlState; 3] =
    [SqlState::LOCK_NOT_AVAILABLE, SqlState::UNIQUE_VIOLATION, SqlState::T_R_DEADLOCK_DETECTED];

/// Runs the statement over `batch`: one answer per row, in order.
async fn run(
    store: &ChunkStore,
    client: &deadpool_postgres::Client,
    batch: &[Row],
) -> Result<Vec<Reply>, tokio_postgres::Error> {
    let commits = BatchedCommits::of(batch.iter().map(|row| &row.commit));
    let keys = KeyColumns::of(batch);
    let typed = [commits.params(), keys.params()].concat();
    let types: Vec<Type> = typed.iter().map(|(_, kind)| kind.clone()).collect();
    let values: Vec<&(dyn ToSql + Sync)> = typed.iter().map(|(value, _)| *value).collect();
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
    /// The columns' names and types, in the order of [`KeyColumns::params`].
    const COLUMNS: [(&'static str, Type); 15] = [
        ("bucket", Type::TEXT_ARRAY),
        ("bucket_id", Type::INT8_ARRAY),
        ("key", Type::TEXT_ARRAY),
        ("etag", Type::TEXT_ARRAY),
        ("content_type", Type::TEXT_ARRAY),
        ("content_disposition", Type::TEXT_ARRAY),
        ("cache_control", Type::TEXT_ARRAY),
        ("user_metadata", Type::TEXT_ARRAY),
        ("content_encoding", Type::TEXT_ARRAY),
        ("content_language", Type::TEXT_ARRAY),
        ("expires", Type::TIMESTAMPTZ_ARRAY),
        ("checksum_algorithm", Type::TEXT_ARRAY),
        ("checksum_type", Type::TEXT_ARRAY),
        ("checksum", Type::TEXT_ARRAY),
        ("acl", Type::TEXT_ARRAY),
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
        let values: [&(dyn ToSql + Sync); 15] = [
            &self.buckets,
            &self.bucket_ids,
            &self.keys,
            &self.etags,
            &self.content_types,
            &self.content_dispositions,
            &self.cache_controls,
            &self.metadata,
            &self.content_encodings,
            &self.content_languages,
            &self.expires,
            &self.algorithms,
            &self.kinds,
            &self.checksums,
            &self.acls,
        ];
        values.into_iter().zip(Self::COLUMNS.iter().map(|(_, kind)| kind.clone())).collect()
    }
}

/// The batch's columns, [`BatchedCommits`]'s then [`KeyColumns`]'s: names and types.
fn columns() -> impl Iterator<Item = &'static (&'static str, Type)> {
    BatchedCommits::COLUMNS.iter().chain(KeyColumns::COLUMNS.iter())
}

/// The statement over [`BatchedCommits::params`] then [`KeyColumns::params`]. It answers one
/// row per PUT, in order: the key's modification time when it was bound; else, when the
/// tenant's lock was taken (with a quota), the tenant's used bytes and quota; and whether the
/// tenant was admitted (far enough from its quota with the whole batch's rows).
static STATEMENT: LazyLock<String> = LazyLock::new(|| {
    let arrays: Vec<String> =
        columns().enumerate().map(|(at, (_, kind))| format!("${}::{}", at + 1, kind.name())).collect();
    let names: Vec<&str> = columns().map(|(name, _)| *name).collect();
    format!(
        "WITH settings AS MATERIALIZED (SELECT set_config('lock_timeout', '{LOCK_TIMEOUT}', true)), \
              input AS MATERIALIZED (SELECT i.* FROM settings, unnest({arrays}) WITH ORDINALITY \
                                     AS i({names}, ord)), \
              free AS MATERIALIZED (SELECT i.* FROM input i WHERE (SELECT true FROM s3_objects s \
                                    WHERE s.bucket = i.bucket AND s.key = i.key) IS NULL), \
              b AS MATERIALIZED (SELECT b.name, b.id, b.tenant_id FROM buckets b \
                                 WHERE b.name = ANY (ARRAY (SELECT DISTINCT bucket FROM free)) \
                                   AND EXISTS (SELECT 1 FROM free f WHERE f.bucket = b.name \
                                                 AND f.bucket_id = b.id AND f.tenant = b.tenant_id) \
                                   AND (SELECT t.deleting_at IS NULL FROM tenants t WHERE t.id = b.tenant_id) \
                                 ORDER BY b.name FOR KEY SHARE OF b SKIP LOCKED), \
              bt AS MATERIALIZED (SELECT DISTINCT tenant_id FROM b ORDER BY tenant_id), \
              admitted AS MATERIALIZED (SELECT bt.tenant_id AS id, t.quota, t.used FROM bt, \
                                        LATERAL (SELECT t.storage_quota_bytes AS quota, {used} AS used \
                                                 FROM tenants t WHERE t.id = bt.tenant_id FOR KEY SHARE SKIP LOCKED) AS t \
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
        names = names.join(", "),
        used = used_logical_bytes(),
        // It names the tenants' CTE, scanned in order, so the locks are taken in that order.
        lock = tenant_lock_shared_at_once("bt.tenant_id"),
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
    use crate::s3::tests::{Fixture, bucket_id, count, fixture, objects_of};

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

    /// Runs `rows` as one batch on a connection of its own.
    async fn run_batch(fx: &Fixture, rows: &[Row]) -> Result<Vec<Reply>, tokio_postgres::Error> {
        let client = fx.pool.get().await.expect("client");
        run(fx.s3.store(), &client, rows).await
    }

    /// Every row gets what it would have got alone: free keys bound (a chunk twice counted
    /// once per tenant), a taken key or a changed bucket to a transaction, a tenant near its
    /// quota (with the batch's rows summed) to an exclusive one, a tenant over it refused;
    /// nothing of the rows not bound is written.
    #[tokio::test]
    async fn a_batch_binds_its_free_keys_and_answers_each_other_row_as_alone() {
        let fx = fixture("put_batch_outcomes").await;
        let store = fx.s3.store();
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let (near, near_bucket) = tenant_and_bucket(&fx, "tenant-near", 30_000, "near").await;
        let (over, over_bucket) = tenant_and_bucket(&fx, "tenant-over", 10_000, "over").await;
        // Room for each of two 20,000-byte rows alone, not for both.
        let (tight, tight_bucket) =
            tenant_and_bucket(&fx, "tenant-tight", QUOTA_LOCK_MARGIN + 30_000, "tight").await;
        let (roomy, roomy_bucket) =
            tenant_and_bucket(&fx, "tenant-roomy", QUOTA_LOCK_MARGIN * 2, "roomy").await;
        let first = ingest(&fx, a, 2).await;
        let (taken, _) = row(&first, "media", media, "taken");
        assert!(bound(&run_batch(&fx, &[taken]).await.expect("run")[0]));

        let (same, other, empty) =
            (ingest(&fx, a, 1).await, ingest(&fx, a, 3).await, ingest_body(&fx, a, vec![]).await);
        let (near_put, over_put) = (ingest(&fx, near, 1).await, ingest(&fx, over, 1).await);
        let (tight_one, tight_two) = (ingest(&fx, tight, 1).await, ingest(&fx, tight, 2).await);
        let roomy_put = ingest(&fx, roomy, 1).await;
        let rows = [
            row(&same, "media", media, "one").0,
            row(&same, "media", media, "two").0,
            row(&other, "media", media, "taken").0,
            row(&other, "media", media + 1000, "moved").0,
            row(&empty, "media", media, "empty").0,
            row(&near_put, "near", near_bucket, "k").0,
            row(&over_put, "over", over_bucket, "k").0,
            row(&tight_one, "tight", tight_bucket, "one").0,
            row(&tight_two, "tight", tight_bucket, "two").0,
            row(&roomy_put, "roomy", roomy_bucket, "k").0,
            row(&roomy_put, "roomy", roomy_bucket + 1000, "moved").0,
        ];
        let replies = run_batch(&fx, &rows).await.expect("run");
        let transaction = |may_share| Reply::Done(Outcome::InTransaction { may_share });
        assert!(replies[..2].iter().all(bound), "{replies:?}");
        assert_eq!(replies[2..4], [transaction(true), transaction(true)]);
        assert!(bound(&replies[4]), "{replies:?}");
        assert_eq!(replies[5], transaction(false));
        assert_eq!(replies[6], Reply::OverQuota { used: 0, quota: 10_000 });
        assert_eq!(replies[7..9], [transaction(false), transaction(false)]);
        assert!(bound(&replies[9]), "{replies:?}");
        assert_eq!(replies[10], transaction(true), "a tenant admitted, a bucket changed");

        assert_eq!(objects_of(&fx.pool, a).await, (4, 4), "taken, one, two and empty");
        assert_eq!(chunks_of(&fx, a).await, 2, "one chunk for one and two, none for the empty body");
        let usage = store.usage(a).await.expect("usage");
        assert_eq!((usage.logical_bytes, usage.unique_bytes), (60_000, 40_000));
        let stored =
            count(&fx.pool, "SELECT sum(stored_len)::int8 FROM chunks WHERE tenant_id = $1", a).await;
        assert_eq!(usage.stored_bytes, stored as u64);
        // The same bytes under another tenant are that tenant's chunk.
        assert_eq!((objects_of(&fx.pool, roomy).await, chunks_of(&fx, roomy).await), ((1, 1), 1));
        for tenant in [near, over, tight] {
            assert_eq!(objects_of(&fx.pool, tenant).await, (0, 0));
            assert_eq!(chunks_of(&fx, tenant).await, 0);
        }
        // The chunk shared by two keys is referenced twice: deleting one keeps it.
        let refs = count(&fx.pool, "SELECT sum(refcount)::int8 FROM chunks WHERE tenant_id = $1", a).await;
        assert_eq!(refs, 3);
    }

    /// A tenant whose lock another transaction holds exclusively (GC, a delete), or a bucket
    /// whose row one holds, does not hold up the batch: those rows are left to bind alone, and
    /// the others are bound at once.
    #[tokio::test]
    async fn a_batch_waits_for_no_tenant_and_no_bucket_another_transaction_holds() {
        let fx = fixture("put_batch_no_wait").await;
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let (b, other) = tenant_and_bucket(&fx, "tenant-b", QUOTA_LOCK_MARGIN * 2, "other").await;
        let (c, third) = tenant_and_bucket(&fx, "tenant-c", QUOTA_LOCK_MARGIN * 2, "third").await;
        let mut holder = fx.pool.get().await.expect("client");
        let hold = holder.transaction().await.expect("txn");
        hold_tenant_alone(&hold, a).await;
        hold.execute("SELECT 1 FROM buckets WHERE id = $1 FOR UPDATE", &[&other]).await.expect("hold");
        let (for_a, for_b, for_c) =
            (ingest(&fx, a, 1).await, ingest(&fx, b, 1).await, ingest(&fx, c, 1).await);
        let rows = [
            row(&for_a, "media", media, "k").0,
            row(&for_b, "other", other, "k").0,
            row(&for_c, "third", third, "k").0,
        ];
        let replies = tokio::time::timeout(std::time::Duration::from_secs(5), run_batch(&fx, &rows))
            .await
            .expect("the batch waits for neither")
            .expect("run");
        let transaction = || Reply::Done(Outcome::InTransaction { may_share: true });
        assert_eq!(replies[..2], [transaction(), transaction()]);
        assert!(bound(&replies[2]), "{replies:?}");
        hold.commit().await.expect("release");
        assert_eq!(objects_of(&fx.pool, a).await, (0, 0));
        assert_eq!(objects_of(&fx.pool, b).await, (0, 0));
    }

    /// A second PUT of a key already in the batch waits for the next one; a PUT whose client
    /// is gone is not written.
    #[tokio::test]
    async fn a_key_queued_twice_goes_in_the_next_batch_and_a_gone_client_is_not_written() {
        let fx = fixture("put_batch_queue").await;
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let ingested = ingest(&fx, a, 1).await;
        let (sender, mut receiver) = mpsc::channel(8);
        let (first, _first_answer) = row(&ingested, "media", media, "k");
        let (again, _again_answer) = row(&ingested, "media", media, "k");
        let (gone, gone_answer) = row(&ingested, "media", media, "gone");
        let (last, _last_answer) = row(&ingested, "media", media, "last");
        drop(gone_answer);
        for queued in [first, again, gone, last] {
            sender.send(queued).await.expect("queued");
        }
        let keys = |batch: Vec<Row>| batch.into_iter().map(|row| row.key).collect::<Vec<_>>();
        let mut held = Vec::new();
        let batch = next_batch(&mut receiver, &mut held).await.expect("a batch");
        assert_eq!(keys(batch), ["k", "last"]);
        let batch = next_batch(&mut receiver, &mut held).await.expect("the next");
        assert_eq!(keys(batch), ["k"]);
        assert!(held.is_empty());
    }

    /// A row lock another transaction holds (here a key's, bound and not yet committed) is
    /// waited for at most [`LOCK_TIMEOUT`]; then the statement fails and leaves nothing.
    #[tokio::test]
    async fn a_batch_waits_for_a_row_lock_no_longer_than_its_timeout_and_leaves_nothing() {
        let fx = fixture("put_batch_lock_timeout").await;
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let first = ingest(&fx, a, 1).await;
        assert!(bound(&run_batch(&fx, &[row(&first, "media", media, "elsewhere").0]).await.expect("run")[0]));

        let mut holder = fx.pool.get().await.expect("client");
        let hold = holder.transaction().await.expect("txn");
        hold.execute("UPDATE s3_objects SET key = 'k' WHERE bucket = 'media' AND key = 'elsewhere'", &[])
            .await
            .expect("move");
        let (second, third) = (ingest(&fx, a, 2).await, ingest(&fx, a, 3).await);
        let rows = [row(&third, "media", media, "free").0, row(&second, "media", media, "k").0];
        let started = std::time::Instant::now();
        let failed = run_batch(&fx, &rows).await.expect_err("the key is held");
        assert_eq!(failed.code(), Some(&SqlState::LOCK_NOT_AVAILABLE), "{failed}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        hold.commit().await.expect("commit the move");
        assert_eq!(objects_of(&fx.pool, a).await, (1, 1), "the batch's objects are undone");
        assert_eq!(chunks_of(&fx, a).await, 1, "and its chunks");
    }

    /// A statement Postgres refuses sends every PUT of the batch to bind alone.
    #[tokio::test]
    async fn a_refused_batch_sends_each_put_alone() {
        let fx = fixture("put_batch_refused").await;
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let (one, two) = (ingest(&fx, a, 1).await, ingest(&fx, a, 2).await);
        // The catalog's text cannot hold U+0000 (the S3 layer refuses such a key first).
        let (good, good_answer) = row(&one, "media", media, "good");
        let (bad, bad_answer) = row(&two, "media", media, "b\0d");
        let counts = Counts::default();
        write(fx.s3.store(), vec![good, bad], &counts).await;
        assert_eq!(good_answer.await.expect("answered"), Reply::Alone);
        assert_eq!(bad_answer.await.expect("answered"), Reply::Alone);
        assert_eq!((counts.batches.load(Ordering::Relaxed), counts.failed.load(Ordering::Relaxed)), (1, 1));
        assert_eq!(objects_of(&fx.pool, a).await, (0, 0));
    }

    /// PUTs that queue while the workers wait (here for a catalog connection) share
    /// statements, and each is bound.
    #[tokio::test]
    async fn puts_queued_while_the_workers_wait_share_a_statement() {
        let fx = fixture("put_batch_shared").await;
        let (a, media) = tenant_with_bucket(&fx, None).await;
        let mut uploads = Vec::new();
        for i in 0..8u8 {
            uploads.push(ingest(&fx, a, i).await);
        }
        // Every connection of the pool, so that the first batches wait for one.
        let mut connections = Vec::new();
        for _ in 0..fx.pool.status().max_size {
            connections.push(fx.pool.get().await.expect("client"));
        }
        let puts = SmallPuts::default();
        let mut tasks = Vec::new();
        for (i, ingested) in uploads.into_iter().enumerate() {
            let (puts, store) = (puts.clone(), fx.s3.store().clone());
            tasks.push(tokio::spawn(async move {
                let key = format!("k{i}");
                let target = Target { bucket: "media", id: media, key: &key };
                let pending = Pending::new(&store, Invalidation::key("media", &key));
                let headers = ObjectHeaders::default();
                puts.bind(&store, &ingested, &target, "e", &headers, &pending).await.expect("bind")
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        drop(connections);
        for task in tasks {
            let outcome = task.await.expect("join");
            assert!(matches!(outcome, Batched::Done(Outcome::Bound(..))), "{outcome:?}");
        }
        let stats = puts.stats();
        assert_eq!((stats.bound, stats.failed), (8, 0));
        // Each worker's first batch, then the rest of its queue in one.
        assert!(stats.batches <= 2 * WORKERS as u64, "{stats:?}");
        assert_eq!(objects_of(&fx.pool, a).await, (8, 8));
    }

    /// The keys, buckets and tenants are looked up by index whatever the tables' size when
    /// the plan was made: a connection keeps the generic plan it made while the tables were
    /// small, and a plan that scanned `s3_objects` then made every later statement scan all of
    /// it (the bench's PUT rate fell by half within 50,000 PUTs).
    #[tokio::test]
    async fn the_statement_looks_up_keys_buckets_and_tenants_by_index_even_planned_on_empty_tables() {
        let fx = fixture("put_batch_plan").await;
        let types: Vec<String> = columns().map(|(_, kind)| kind.name().to_owned()).collect();
        let plan = generic_plan(&fx, &types, &STATEMENT).await;
        assert_looks_up_by_index(&plan, &["s3_objects", "buckets", "tenants"]);
        assert!(plan.contains("s3_objects_pkey"), "{plan}");
    }
}
