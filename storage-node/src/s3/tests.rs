//! Races of the S3 model against a real catalog, with uploads the test holds open: a bucket
//! deleted and taken by another tenant mid-upload, parts racing a completion or an abort,
//! DeleteBucket with uploads in progress, conditional writes overtaken by another write; and
//! remembered completions forgotten after the multipart expiry.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use s3s::S3ErrorCode;
use tokio::sync::{mpsc, oneshot};

use super::SiloS3;
use super::integrity::Incoming;
use super::multipart::CompletionClaims;
use super::object::body_reader;
use crate::TenantId;
use crate::catalog::{CatalogPool, connect_pool, tenants};
use crate::model::object::{ObjectHeaders, WriteCondition};
use crate::store::{ChunkStore, NodeSpec, StoreConfig};

pub(crate) struct Fixture {
    pub s3: SiloS3,
    pub pool: CatalogPool,
    _tmp: tempfile::TempDir,
}

pub(crate) async fn fixture(label: &str) -> Fixture {
    let url = pg_local::testing::shared().fresh_database(label).await;
    let pool = connect_pool(url.parse().expect("url"), 16).expect("pool");
    let mut client = deadpool_postgres::Object::take(pool.get().await.expect("connect"));
    crate::catalog::migrate(&mut client).await.expect("migrate");
    let tmp = tempfile::tempdir().expect("tmp");
    let data_dir = crate::DataDir::open(&tmp.path().join("data")).expect("data dir");
    let node = NodeSpec { name: "test-node".into(), zone: "zone-a".into() };
    let store =
        ChunkStore::open(pool.clone(), &data_dir, &node, StoreConfig::default()).await.expect("store");
    Fixture {
        s3: SiloS3 { store, region: super::region::default_region(), small_puts: Default::default() },
        pool,
        _tmp: tmp,
    }
}

/// A request body the test feeds by hand; it says when the server first reads from it.
struct Held {
    rx: mpsc::Receiver<Bytes>,
    polled: Option<oneshot::Sender<()>>,
}

impl Stream for Held {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(polled) = self.polled.take() {
            let _ = polled.send(());
        }
        self.rx.poll_recv(cx).map(|piece| piece.map(Ok))
    }
}

/// A body, its feeder, and the signal that the upload is reading it (so it passed its checks).
fn held() -> (Held, mpsc::Sender<Bytes>, oneshot::Receiver<()>) {
    let (tx, rx) = mpsc::channel(4);
    let (polled, reading) = oneshot::channel();
    (Held { rx, polled: Some(polled) }, tx, reading)
}

pub(crate) async fn count(pool: &CatalogPool, sql: &str, tenant: TenantId) -> i64 {
    let client = pool.get().await.expect("client");
    client.query_one(sql, &[&tenant.0]).await.expect(sql).get(0)
}

/// Tenants a and b, and a's bucket `shared`.
async fn two_tenants_and_a_bucket_of_a(fx: &Fixture) -> (TenantId, TenantId) {
    let a = tenants::create(&fx.pool, "tenant-a", None).await.expect("a");
    let b = tenants::create(&fx.pool, "tenant-b", None).await.expect("b");
    fx.s3.create_bucket_for(a, "shared").await.expect("bucket of a");
    (a, b)
}

/// The id of bucket `name`.
pub(crate) async fn bucket_id(pool: &CatalogPool, name: &str) -> i64 {
    let client = pool.get().await.expect("client");
    client.query_one("SELECT id FROM buckets WHERE name = $1", &[&name]).await.expect("bucket").get(0)
}

/// Objects the tenant has in the catalog, and what its usage counter says.
pub(crate) async fn objects_of(pool: &CatalogPool, tenant: TenantId) -> (i64, i64) {
    let rows = count(pool, "SELECT count(*) FROM objects WHERE tenant_id = $1", tenant).await;
    let sql = "SELECT object_count + (SELECT coalesce(sum(objects), 0) FROM tenant_usage_deltas WHERE tenant_id = $1)::int8 \
               FROM tenants WHERE id = $1";
    let counted = count(pool, sql, tenant).await;
    (rows, counted)
}

/// Waits until `n` catalog sessions wait on a lock, or `done` says the racing request ended.
pub(crate) async fn until_waiting(pool: &CatalogPool, n: i64, done: impl Fn() -> bool) {
    let client = pool.get().await.expect("client");
    for _ in 0..500 {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting >= n || done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no session came to wait on a lock");
}

#[tokio::test]
async fn a_put_never_lands_in_a_bucket_recreated_by_another_tenant_mid_upload() {
    let fx = fixture("s3_rebind_put").await;
    let (a, b) = two_tenants_and_a_bucket_of_a(&fx).await;

    let (body, feed, reading) = held();
    let s3 = fx.s3.clone();
    let put = tokio::spawn(async move {
        let body = s3s::dto::StreamingBlob::wrap(body);
        s3.put_object_for(
            Some(a),
            "shared",
            "k",
            Incoming::plain(body_reader(Some(body))),
            ObjectHeaders::default(),
        )
        .await
    });
    reading.await.expect("the upload reads its body");
    feed.send(Bytes::from(vec![7u8; 100_000])).await.expect("first piece");
    // Mid-upload: A deletes the bucket and B takes the name.
    fx.s3.delete_bucket_for(Some(a), "shared").await.expect("delete the empty bucket");
    fx.s3.create_bucket_for(b, "shared").await.expect("B takes the name");
    feed.send(Bytes::from(vec![8u8; 100_000])).await.expect("last piece");
    drop(feed);

    let err = put.await.expect("join").expect_err("A's upload must not land in B's bucket");
    assert_eq!(*err.code(), S3ErrorCode::NoSuchBucket, "{err:?}");
    let shared = bucket_id(&fx.pool, "shared").await;
    let listing = fx.s3.list_keys("shared", shared, "", None, "", 10).await.expect("list");
    assert!(listing.objects.is_empty(), "B's bucket stays empty: {listing:?}");
    assert_eq!(objects_of(&fx.pool, a).await, (0, 0), "nothing of the refused upload is kept");
    assert_eq!(objects_of(&fx.pool, b).await, (0, 0));
}

/// What a node read of a bucket's access (its id) may be older than the name's owner (a lost
/// invalidation): the reads by name then tell nothing of the bucket that holds the name now.
#[tokio::test]
async fn reads_by_name_under_an_old_id_tell_nothing_of_the_new_owners_bucket() {
    let fx = fixture("s3_reads_by_old_id").await;
    let (a, b) = two_tenants_and_a_bucket_of_a(&fx).await;
    let old = bucket_id(&fx.pool, "shared").await;
    fx.s3.delete_bucket_for(Some(a), "shared").await.expect("delete");
    fx.s3.create_bucket_for(b, "shared").await.expect("B takes the name");
    let new = bucket_id(&fx.pool, "shared").await;
    let body = Incoming::plain(std::io::Cursor::new(vec![1u8; 1000]));
    fx.s3.put_object_for(Some(b), "shared", "k", body, ObjectHeaders::default()).await.expect("b's object");
    fx.s3.create_upload(Some(b), "shared", "u", (ObjectHeaders::default(), None)).await.expect("b's upload");

    assert_eq!(fx.s3.list_keys("shared", new, "", None, "", 10).await.expect("list").objects.len(), 1);
    assert!(fx.s3.list_keys("shared", old, "", None, "", 10).await.expect("list").objects.is_empty());
    let marker = crate::model::multipart::UploadMarker { key: "", upload_id: None };
    let uploads = |id| crate::model::multipart::list(&fx.pool, "shared", id, "", marker, 10);
    assert_eq!(uploads(new).await.expect("uploads").len(), 1);
    assert!(uploads(old).await.expect("uploads").is_empty());
    let probe = fx.s3.check_write_condition("shared", old, "k", &WriteCondition::Absent).await;
    assert_eq!(*probe.expect_err("an old id").code(), S3ErrorCode::NoSuchBucket);
    let probe = fx.s3.check_write_condition("shared", new, "k", &WriteCondition::Absent).await;
    assert_eq!(*probe.expect_err("b's key is there").code(), S3ErrorCode::PreconditionFailed);
}

#[tokio::test]
async fn a_stale_multipart_upload_cannot_complete_into_a_recreated_bucket() {
    let fx = fixture("s3_rebind_multipart").await;
    let (a, b) = two_tenants_and_a_bucket_of_a(&fx).await;
    let upload =
        fx.s3.create_upload(Some(a), "shared", "k", (ObjectHeaders::default(), None)).await.expect("upload");
    let body = std::io::Cursor::new(vec![1u8; 1000]);
    let etag = fx
        .s3
        .upload_part_for(Some(a), "shared", "k", &upload, 1, Incoming::plain(body))
        .await
        .expect("part")
        .0;

    // DeleteBucket with an upload in progress succeeds and aborts it, as AWS does; its part
    // is released, not left counted with no upload.
    fx.s3.delete_bucket_for(Some(a), "shared").await.expect("delete a bucket with an upload in progress");
    assert_eq!(objects_of(&fx.pool, a).await, (0, 0), "the aborted upload's part is released");
    fx.s3.create_bucket_for(b, "shared").await.expect("B takes the name");

    let err = fx
        .s3
        .complete_upload(Some(a), "shared", "k", &upload, (&[(1, etag)], &Default::default()))
        .await
        .expect_err("A's upload must not complete into B's bucket");
    assert!(matches!(err.code(), S3ErrorCode::NoSuchUpload | S3ErrorCode::AccessDenied), "{err:?}");
    let body = std::io::Cursor::new(vec![2u8; 1000]);
    let err = fx
        .s3
        .upload_part_for(Some(a), "shared", "k", &upload, 2, Incoming::plain(body))
        .await
        .expect_err("part");
    assert!(matches!(err.code(), S3ErrorCode::NoSuchUpload | S3ErrorCode::AccessDenied), "{err:?}");
    let shared = bucket_id(&fx.pool, "shared").await;
    assert!(fx.s3.list_keys("shared", shared, "", None, "", 10).await.expect("list").objects.is_empty());
    assert_eq!(objects_of(&fx.pool, a).await, (0, 0));
}

/// A part whose upload is completed or aborted while it streams: held until the completion
/// or abort waits on the upload's row, then let through. Either it lands first and the
/// completion or abort releases it, or it fails with NoSuchUpload; its object never outlives
/// the upload, and it never fails with a catalog error.
async fn part_racing(label: &str, complete: bool) {
    let fx = fixture(label).await;
    let a = tenants::create(&fx.pool, "tenant-a", None).await.expect("a");
    fx.s3.create_bucket_for(a, "media").await.expect("bucket");
    let upload =
        fx.s3.create_upload(Some(a), "media", "k", (ObjectHeaders::default(), None)).await.expect("upload");
    let body = std::io::Cursor::new(vec![1u8; 1000]);
    let etag = fx
        .s3
        .upload_part_for(Some(a), "media", "k", &upload, 1, Incoming::plain(body))
        .await
        .expect("part 1")
        .0;

    let (body, feed, reading) = held();
    let (s3, id) = (fx.s3.clone(), upload.clone());
    let part = tokio::spawn(async move {
        let body = tokio_util::io::StreamReader::new(body);
        s3.upload_part_for(Some(a), "media", "k", &id, 2, Incoming::plain(body)).await
    });
    reading.await.expect("part 2 reads its body");
    feed.send(Bytes::from(vec![2u8; 50_000])).await.expect("piece");

    // Hold the upload's row (as a part's foreign key check does) so the completion or abort
    // stops on it, then let part 2 commit meanwhile.
    let mut holder = fx.pool.get().await.expect("client");
    let hold = holder.transaction().await.expect("txn");
    hold.execute("SELECT 1 FROM multipart_uploads WHERE id = $1 FOR KEY SHARE", &[&upload])
        .await
        .expect("hold");
    let (s3, id) = (fx.s3.clone(), upload.clone());
    let ending = tokio::spawn(async move {
        if complete {
            s3.complete_upload(Some(a), "media", "k", &id, (&[(1, etag)], &Default::default()))
                .await
                .map(|_| ())
        } else {
            s3.abort_upload(Some(a), "media", "k", &id).await
        }
    });
    until_waiting(&fx.pool, 1, || ending.is_finished()).await;
    drop(feed);
    until_waiting(&fx.pool, 2, || part.is_finished()).await;
    hold.commit().await.expect("release");

    ending.await.expect("join").expect("the completion or abort succeeds");
    match part.await.expect("join") {
        Ok(_) => {}
        Err(err) => assert_eq!(*err.code(), S3ErrorCode::NoSuchUpload, "{err:?}"),
    }
    let expected = i64::from(complete);
    assert_eq!(objects_of(&fx.pool, a).await, (expected, expected), "no part outlives its upload");
    let parts = count(
        &fx.pool,
        "SELECT count(*) FROM multipart_parts p JOIN objects o ON o.id = p.object_id WHERE o.tenant_id = $1",
        a,
    )
    .await;
    assert_eq!(parts, 0);
}

#[tokio::test]
async fn a_part_racing_a_completion_is_released_or_refused() {
    part_racing("s3_part_vs_complete", true).await;
}

#[tokio::test]
async fn a_part_racing_an_abort_is_released_or_refused() {
    part_racing("s3_part_vs_abort", false).await;
}

/// A PUT and a DELETE of one key at once. The PUT waits for the tenant's row (held here, as a
/// concurrent upload would hold it) and the DELETE comes next: had the DELETE locked the key's
/// row before the tenant's, each would wait for the other (a deadlock, which Postgres breaks
/// by failing one with a catalog error). Both take the tenant first, so both succeed. (A small
/// PUT to a bound key takes no lock in its one statement, and queues here in its transaction.)
#[tokio::test]
async fn a_put_and_a_delete_of_one_key_never_deadlock() {
    let fx = fixture("s3_put_vs_delete").await;
    let a = tenants::create(&fx.pool, "tenant-a", None).await.expect("a");
    fx.s3.create_bucket_for(a, "media").await.expect("bucket");
    let put = |s3: SiloS3, byte: u8| async move {
        let piece = Ok::<_, std::io::Error>(Bytes::from(vec![byte; 20_000]));
        let body = s3s::dto::StreamingBlob::wrap(futures::stream::iter([piece]));
        s3.put_object_for(
            Some(a),
            "media",
            "k",
            Incoming::plain(body_reader(Some(body))),
            ObjectHeaders::default(),
        )
        .await
        .map(|_| ())
    };
    put(fx.s3.clone(), 1).await.expect("the key exists");

    let mut holder = fx.pool.get().await.expect("client");
    let hold = holder.transaction().await.expect("txn");
    hold.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&a.0]).await.expect("hold");
    let putting = tokio::spawn(put(fx.s3.clone(), 2));
    until_waiting(&fx.pool, 1, || putting.is_finished()).await;
    let s3 = fx.s3.clone();
    let deleting = tokio::spawn(async move { s3.delete_object_for(Some(a), "media", "k").await });
    until_waiting(&fx.pool, 2, || deleting.is_finished()).await;
    hold.commit().await.expect("release");

    putting.await.expect("join").expect("the PUT succeeds");
    deleting.await.expect("join").expect("the DELETE succeeds");
    let media = bucket_id(&fx.pool, "media").await;
    assert!(fx.s3.list_keys("media", media, "", None, "", 10).await.expect("list").objects.is_empty());
    assert_eq!(objects_of(&fx.pool, a).await, (0, 0), "nothing is left counted");
}

#[tokio::test]
async fn a_conditional_put_that_another_write_overtakes_mid_upload_is_a_conflict() {
    let fx = fixture("s3_conditional_race").await;
    let a = tenants::create(&fx.pool, "tenant-a", None).await.expect("a");
    fx.s3.create_bucket_for(a, "media").await.expect("bucket");
    let (body, feed, reading) = held();
    let s3 = fx.s3.clone();
    let put = tokio::spawn(async move {
        let mut incoming = Incoming::plain(body_reader(Some(s3s::dto::StreamingBlob::wrap(body))));
        incoming.claims.condition = WriteCondition::Absent;
        s3.put_object_for(Some(a), "media", "k", incoming, ObjectHeaders::default()).await
    });
    reading.await.expect("the conditional upload passed its check and reads its body");
    feed.send(Bytes::from(vec![1u8; 10_000])).await.expect("piece");
    let other = Incoming::plain(std::io::Cursor::new(vec![2u8; 10]));
    fx.s3
        .put_object_for(Some(a), "media", "k", other, ObjectHeaders::default())
        .await
        .expect("the other write");
    drop(feed);
    let err = put.await.expect("join").expect_err("the key changed meanwhile");
    assert_eq!(*err.code(), S3ErrorCode::ConditionalRequestConflict, "{err:?}");
    assert_eq!(objects_of(&fx.pool, a).await, (1, 1), "only the other write is stored");
}

/// A fixture with tenant A's bucket `media` and an upload of `k` with one 1,000-byte part: the
/// fixture, the tenant, the upload id and the part's ETag.
async fn upload_of_one_part(label: &str) -> (Fixture, TenantId, String, String) {
    let fx = fixture(label).await;
    let a = tenants::create(&fx.pool, "tenant-a", None).await.expect("a");
    fx.s3.create_bucket_for(a, "media").await.expect("bucket");
    let upload =
        fx.s3.create_upload(Some(a), "media", "k", (ObjectHeaders::default(), None)).await.expect("upload");
    let body = Incoming::plain(std::io::Cursor::new(vec![1u8; 1000]));
    let etag = fx.s3.upload_part_for(Some(a), "media", "k", &upload, 1, body).await.expect("part").0;
    (fx, a, upload, etag)
}

/// A conditional CompleteMultipartUpload (`If-None-Match: *`) passes its first check, then a
/// PUT of the key commits before the completion's transaction binds it: the completion is
/// `409 ConditionalRequestConflict`, and the upload stays to be completed again. The tenant's
/// row (held here) orders them: the PUT waits on it first, the completion next.
#[tokio::test]
async fn a_conditional_completion_that_another_write_overtakes_is_a_conflict() {
    let (fx, a, upload, etag) = upload_of_one_part("s3_conditional_complete_race").await;

    let mut holder = fx.pool.get().await.expect("client");
    let hold = holder.transaction().await.expect("txn");
    hold.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&a.0]).await.expect("hold");
    let s3 = fx.s3.clone();
    let putting = tokio::spawn(async move {
        let other = Incoming::plain(std::io::Cursor::new(vec![2u8; 10]));
        s3.put_object_for(Some(a), "media", "k", other, ObjectHeaders::default()).await.map(|_| ())
    });
    until_waiting(&fx.pool, 1, || putting.is_finished()).await;
    let (s3, id, named) = (fx.s3.clone(), upload.clone(), vec![(1, etag)]);
    let completing = tokio::spawn(async move {
        let claims = CompletionClaims { parts: vec![None], whole: None, condition: WriteCondition::Absent };
        s3.complete_upload(Some(a), "media", "k", &id, (&named, &claims)).await
    });
    until_waiting(&fx.pool, 2, || completing.is_finished()).await;
    hold.commit().await.expect("release");

    putting.await.expect("join").expect("the PUT succeeds");
    let err = completing.await.expect("join").expect_err("the key was bound meanwhile");
    assert_eq!(*err.code(), S3ErrorCode::ConditionalRequestConflict, "{err:?}");
    let parts = fx.s3.parts(&upload).await.expect("the upload is still there");
    assert_eq!(parts.len(), 1, "its part is kept");
    assert_eq!(objects_of(&fx.pool, a).await, (2, 2), "the PUT's object and the kept part");
}

/// A completion is remembered for as long as an upload in progress would be kept: a retry
/// answers the same ETag until the sweep that aborts stale uploads (every GC pass, with
/// `--multipart-expiry-secs`) forgets it, and then `NoSuchUpload`; the object stays.
#[tokio::test]
async fn a_remembered_completion_is_forgotten_after_the_multipart_expiry() {
    let (fx, a, upload, etag) = upload_of_one_part("s3_completion_expiry").await;
    let named = [(1, etag)];
    let claims = CompletionClaims { parts: vec![None], whole: None, condition: WriteCondition::Any };
    let complete = || fx.s3.complete_upload(Some(a), "media", "k", &upload, (&named, &claims));
    let first = complete().await.expect("complete").0;
    let kept = Duration::from_secs(3600);
    crate::model::multipart::abort_stale(&fx.s3.store, kept).await.expect("sweep");
    assert_eq!(complete().await.expect("a retry within the expiry").0, first);

    tokio::time::sleep(Duration::from_millis(20)).await;
    crate::model::multipart::abort_stale(&fx.s3.store, Duration::ZERO).await.expect("sweep");
    let err = complete().await.expect_err("the completion is forgotten");
    assert_eq!(*err.code(), S3ErrorCode::NoSuchUpload, "{err:?}");
    assert_eq!(objects_of(&fx.pool, a).await, (1, 1), "the completed object stays");
}

/// 32 small PUTs of one tenant at once, each of which tries its one statement first: far from
/// the quota every one is stored and counted; at its boundary exactly those that fit are.
#[tokio::test]
async fn small_puts_at_once_count_exactly_far_from_the_quota_and_at_its_boundary() {
    let fx = fixture("s3_small_puts_quota").await;
    for (name, quota, fit) in [("tenant-far", 1u64 << 40, 32), ("tenant-near", 10 * 20_000, 10)] {
        let tenant = tenants::create(&fx.pool, name, Some(quota)).await.expect("tenant");
        let bucket = format!("{name}-media");
        fx.s3.create_bucket_for(tenant, &bucket).await.expect("bucket");
        let puts = (0..32u8).map(|i| {
            let (s3, bucket) = (fx.s3.clone(), bucket.clone());
            async move {
                let piece = Ok::<_, std::io::Error>(Bytes::from(vec![i; 20_000]));
                let body = s3s::dto::StreamingBlob::wrap(futures::stream::iter([piece]));
                let incoming = Incoming::plain(body_reader(Some(body)));
                s3.put_object_for(Some(tenant), &bucket, &format!("k{i}"), incoming, ObjectHeaders::default())
                    .await
            }
        });
        let results = futures::future::join_all(puts).await;
        let stored = results.iter().filter(|r| r.is_ok()).count();
        let quota_exceeded = S3ErrorCode::Custom("QuotaExceeded".into());
        let refused =
            results.iter().filter(|r| r.as_ref().is_err_and(|e| *e.code() == quota_exceeded)).count();
        assert_eq!((stored, refused), (fit, 32 - fit), "{name}: {results:?}");
        assert_eq!(objects_of(&fx.pool, tenant).await, (fit as i64, fit as i64), "{name}");
        let id = bucket_id(&fx.pool, &bucket).await;
        let listed = fx.s3.list_keys(&bucket, id, "", None, "", 100).await.expect("list").objects.len();
        assert_eq!(listed, fit, "{name}");
    }
}
