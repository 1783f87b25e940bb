//! The hot path's caches across nodes (issue 13): two `silo serve` processes sharing one
//! throwaway catalog. A key revoked through one node is refused by the other within a second,
//! though the other had it cached; a lost or frozen LISTEN connection never leaves a revoked key
//! working;
//! an overwrite or a delete acknowledged by one node is never followed by the old bytes from the
//! other. And a public-read GET carries what a CDN or browser needs (ETag, Last-Modified, the
//! stored Cache-Control, Accept-Ranges) and answers a revalidation 304 with no body.

use crate::common;

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::get_object::builders::GetObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketCannedAcl, CompletedMultipartUpload, CompletedPart, Delete, ObjectCannedAcl, ObjectIdentifier,
};
use common::{Silo, free_addr, scratch};

const READY: Duration = Duration::from_secs(30);
/// Both nodes seal and name things with this one secret.
const SECRET: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";
/// The bound on a revocation reaching every node (docs/security.md).
const REVOCATION_BOUND: Duration = Duration::from_secs(1);

/// Two nodes, in zones a and b, on one catalog.
struct Pair {
    a: Silo,
    b: Silo,
    catalog: String,
    _tmp: tempfile::TempDir,
}

impl Pair {
    async fn start(label: &str) -> Pair {
        Pair::start_advertising(label, None).await
    }

    /// Two nodes, node b telling its peers `b_url` (when given) instead of where its internal
    /// API listens.
    async fn start_advertising(label: &str, b_url: Option<String>) -> Pair {
        let catalog = pg_local::testing::shared().fresh_database(label).await;
        let tmp = scratch();
        let mut nodes = Vec::new();
        for (name, zone) in [("node-a", "a"), ("node-b", "b")] {
            let internal = free_addr();
            let listen = internal.to_string();
            let url = match (&b_url, name) {
                (Some(url), "node-b") => url.clone(),
                _ => format!("http://{internal}"),
            };
            let args = [
                "--postgres-url",
                &catalog,
                "--node-name",
                name,
                "--zone",
                zone,
                "--internal-listen",
                &listen,
                "--internal-url",
                &url,
            ];
            let mut silo =
                Silo::start_with_env(&tmp.path().join(name), &args, &[("SILO_SERVER_SECRET", SECRET)]);
            silo.wait_ready(READY).await;
            nodes.push(silo);
        }
        let b = nodes.pop().expect("node b");
        let a = nodes.pop().expect("node a");
        Pair { a, b, catalog, _tmp: tmp }
    }

    async fn sql(&self, sql: &str) {
        let (client, conn) =
            tokio_postgres::connect(&self.catalog, tokio_postgres::NoTls).await.expect("catalog");
        tokio::spawn(conn);
        client.batch_execute(sql).await.expect(sql);
    }

    /// The server processes of both nodes' LISTEN connections.
    async fn listeners(&self) -> Vec<i32> {
        let (client, conn) =
            tokio_postgres::connect(&self.catalog, tokio_postgres::NoTls).await.expect("catalog");
        tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
                &[&storage_node::catalog::key_cache::APPLICATION_NAME],
            )
            .await
            .expect("listeners");
        rows.iter().map(|row| row.get(0)).collect()
    }
}

/// The sample `name` of `silo`'s `/metrics`, 0 when absent.
async fn metric(silo: &Silo, name: &str) -> f64 {
    common::metric(silo, name).await.unwrap_or(0.0)
}

/// Waits until `silo`'s key cache answers (its LISTEN connection is up to date).
async fn wait_trusted(silo: &Silo) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(silo, "silo_s3_key_cache_trusted").await < 1.0 {
        assert!(Instant::now() < deadline, "the key cache never became trusted:\n{}", silo.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn hits(silo: &Silo) -> f64 {
    metric(silo, "silo_s3_key_cache_hits_total").await
}

/// Reads `bucket`/`key` through `client` on `silo` until a read is answered from its read cache
/// (its lease may have to start, start over on a loaded machine, or come back after a fence);
/// the bytes are `body`.
async fn read_through_read_cache(silo: &Silo, client: &Client, bucket: &str, key: &str, body: &[u8]) {
    until_answered_from_cache(silo, 2, || async {
        assert_eq!(get(client, bucket, key).await.as_deref(), Ok(body));
    })
    .await;
}

/// Runs `read` (which asserts what it reads) `times` in a row on `silo` until one of them is
/// answered from its read cache, waiting for a lease while there is none.
async fn until_answered_from_cache<F, Fut>(silo: &Silo, times: usize, mut read: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = Instant::now() + storage_node::read_cache::lease::FENCED_FOR + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no read was answered from the read cache:\n{}", silo.stderr());
        if metric(silo, "silo_read_cache_leased").await < 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let before = metric(silo, "silo_read_cache_hits_total").await;
        for _ in 0..times {
            read().await;
        }
        if metric(silo, "silo_read_cache_hits_total").await > before {
            return;
        }
    }
}

async fn put(client: &Client, bucket: &str, key: &str, body: &[u8]) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|err| panic!("put {key}: {err:?}"));
}

/// The object's bytes, or the error code.
async fn get(client: &Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    fetch(client.get_object().bucket(bucket).key(key)).await
}

/// What `request` answers: the bytes, or the error code.
async fn fetch(request: GetObjectFluentBuilder) -> Result<Vec<u8>, String> {
    match request.send().await {
        Ok(object) => {
            Ok(object.body.collect().await.map_err(|err| format!("{err:?}"))?.into_bytes().to_vec())
        }
        Err(err) => Err(err.code().map_or_else(|| format!("{err:?}"), str::to_owned)),
    }
}

/// Revokes `key` of `tenant` through `silo`'s management API.
async fn revoke(silo: &Silo, tenant: &str, key: &str) {
    let response = reqwest::Client::new()
        .delete(silo.url(&format!("/v1/tenants/{tenant}/keys/{key}")))
        .bearer_auth(silo.token())
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), 204, "revoke {key}");
}

/// Reads through `client` until it is refused with `InvalidAccessKeyId`; returns how long that
/// took, failing past the revocation bound.
async fn refused_within_bound(client: &Client, bucket: &str, key: &str, since: Instant) -> Duration {
    loop {
        // A read sent within the bound may be answered after it.
        let asked = since.elapsed();
        match get(client, bucket, key).await {
            Err(code) if code == "InvalidAccessKeyId" => return since.elapsed(),
            Err(code) => panic!("a read with a revoked key failed otherwise: {code}"),
            Ok(_) => {
                assert!(asked < REVOCATION_BOUND, "a revoked key still worked when asked {asked:?} after");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A key and a client for it on each node, and a bucket with one object.
async fn tenant_on(pair: &Pair, tenant: &str) -> (String, Client, Client) {
    let (id, secret) = common::tenant_with_key(&pair.a, tenant);
    let on_a = common::sdk_client(&pair.a, &id, &secret);
    let on_b = common::sdk_client(&pair.b, &id, &secret);
    on_a.create_bucket().bucket(tenant).send().await.expect("create bucket");
    put(&on_a, tenant, "k", b"hello").await;
    (id, on_a, on_b)
}

/// Reads through `client` on `silo` until a read is answered from its key cache (a few tries:
/// on a loaded machine a late probe may make the cache start over).
async fn read_from_cache(silo: &Silo, client: &Client, bucket: &str) {
    for _ in 0..5 {
        wait_trusted(silo).await;
        let before = hits(silo).await;
        for _ in 0..2 {
            assert_eq!(get(client, bucket, "k").await.as_deref(), Ok(&b"hello"[..]));
        }
        if hits(silo).await > before {
            return;
        }
    }
    panic!("no signed read was answered from the key cache:\n{}", silo.stderr());
}

#[tokio::test]
async fn a_key_revoked_on_one_node_is_refused_by_the_other_within_a_second_though_it_had_it_cached() {
    let pair = Pair::start("cache_revoke").await;
    let (id, on_a, on_b) = tenant_on(&pair, "shop").await;
    read_from_cache(&pair.b, &on_b, "shop").await;
    read_from_cache(&pair.a, &on_a, "shop").await;
    revoke(&pair.a, "shop", &id).await;
    let revoked = Instant::now();
    // The node that revoked forgets at once; the other when the notice comes.
    assert_eq!(get(&on_a, "shop", "k").await, Err("InvalidAccessKeyId".into()));
    let took = refused_within_bound(&on_b, "shop", "k", revoked).await;
    eprintln!("node b refused the revoked key {took:?} after the revocation returned");
}

#[tokio::test]
async fn a_lost_listen_connection_never_leaves_a_revoked_key_working() {
    let pair = Pair::start("cache_lost").await;
    let (id, on_a, on_b) = tenant_on(&pair, "shop").await;
    let (other_id, other_secret) = common::tenant_with_key(&pair.a, "blog");
    let other = common::sdk_client(&pair.b, &other_id, &other_secret);
    other.create_bucket().bucket("blog").send().await.expect("create bucket");
    put(&other, "blog", "k", b"hello").await;
    read_from_cache(&pair.b, &on_b, "shop").await;
    read_from_cache(&pair.b, &other, "blog").await;
    let losses = metric(&pair.b, "silo_s3_key_cache_losses_total").await;
    // Both nodes' LISTEN connections die (waiting until they are gone), and the key is revoked
    // while nobody listens: that notice is lost for good.
    pair.sql(&format!(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
         WHERE application_name = '{}' AND datname = current_database(); \
         UPDATE access_keys SET revoked_at = now() WHERE id = '{id}';",
        storage_node::catalog::key_cache::APPLICATION_NAME
    ))
    .await;
    let revoked = Instant::now();
    refused_within_bound(&on_b, "shop", "k", revoked).await;
    refused_within_bound(&on_a, "shop", "k", revoked).await;
    // The cache comes back (and was cleared): the revoked key stays refused, the other works
    // and is cached again.
    wait_trusted(&pair.b).await;
    assert!(
        metric(&pair.b, "silo_s3_key_cache_losses_total").await > losses,
        "node b saw its connection lost"
    );
    assert_eq!(get(&on_b, "shop", "k").await, Err("InvalidAccessKeyId".into()));
    read_from_cache(&pair.b, &other, "blog").await;
}

#[tokio::test]
async fn a_stalled_listen_connection_stops_the_cache_within_a_second() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pair = Pair::start("cache_stalled").await;
    let (id, _, on_b) = tenant_on(&pair, "shop").await;
    read_from_cache(&pair.b, &on_b, "shop").await;
    // The listening server processes freeze: the connections stay open but nothing comes back,
    // and the revocation's notice is never delivered while they are frozen.
    let frozen = pair.listeners().await;
    assert_eq!(frozen.len(), 2, "one LISTEN connection per node");
    for pid in &frozen {
        kill(Pid::from_raw(*pid), Signal::SIGSTOP).expect("SIGSTOP a listener");
    }
    pair.sql(&format!("UPDATE access_keys SET revoked_at = now() WHERE id = '{id}'")).await;
    let revoked = Instant::now();
    let outcome =
        tokio::time::timeout(Duration::from_secs(5), refused_within_bound(&on_b, "shop", "k", revoked)).await;
    for pid in &frozen {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
    }
    let took = outcome.expect("refused in time");
    eprintln!("node b refused the revoked key {took:?} after its listener froze");
    wait_trusted(&pair.b).await;
    assert_eq!(get(&on_b, "shop", "k").await, Err("InvalidAccessKeyId".into()));
}

#[tokio::test]
async fn an_overwrite_or_delete_acknowledged_on_one_node_is_never_followed_by_old_bytes_from_the_other() {
    let pair = Pair::start("cache_overwrite").await;
    let (_, on_a, on_b) = tenant_on(&pair, "shop").await;
    for round in 0..40u64 {
        // Small and inline-sized, then chunked sizes; written on either node, read on the other.
        let len = if round % 2 == 0 { 100 + round as usize } else { 200_000 + round as usize };
        let body = common::noise(len, round);
        let (writer, reader) = if round % 3 == 0 { (&on_b, &on_a) } else { (&on_a, &on_b) };
        put(writer, "shop", "page.html", &body).await;
        // Twice: the second read is answered from the reader's read cache, once it has a lease.
        for _ in 0..2 {
            let read = get(reader, "shop", "page.html").await.expect("read back");
            assert!(read == body, "round {round}: the other node served other bytes ({} bytes)", read.len());
        }
    }
    for silo in [&pair.a, &pair.b] {
        assert!(metric(silo, "silo_read_cache_hits_total").await > 0.0, "the read cache was never used");
    }
    read_through_read_cache(&pair.b, &on_b, "shop", "page.html", &common::noise(200_039, 39)).await;
    on_a.delete_object().bucket("shop").key("page.html").send().await.expect("delete");
    assert_eq!(get(&on_b, "shop", "page.html").await, Err("NoSuchKey".into()));
    // DeleteObjects: every key of the request is dropped from the other node's cache before it
    // answers.
    for key in ["a.css", "b.css"] {
        put(&on_a, "shop", key, key.as_bytes()).await;
        read_through_read_cache(&pair.b, &on_b, "shop", key, key.as_bytes()).await;
    }
    let keys = ["a.css", "b.css"].map(|key| ObjectIdentifier::builder().key(key).build().expect("id"));
    let delete = Delete::builder().set_objects(Some(keys.to_vec())).build().expect("delete");
    let deleted = on_a.delete_objects().bucket("shop").delete(delete).send().await.expect("delete objects");
    assert_eq!(deleted.deleted().len(), 2);
    for key in ["a.css", "b.css"] {
        assert_eq!(get(&on_b, "shop", key).await, Err("NoSuchKey".into()), "{key}");
    }
    // CopyObject, then CompleteMultipartUpload, onto a key the other node has cached.
    put(&on_a, "shop", "copy.css", b"first").await;
    read_through_read_cache(&pair.b, &on_b, "shop", "copy.css", b"first").await;
    put(&on_a, "shop", "source.css", b"copied").await;
    on_a.copy_object()
        .bucket("shop")
        .key("copy.css")
        .copy_source("shop/source.css")
        .send()
        .await
        .expect("copy");
    read_through_read_cache(&pair.b, &on_b, "shop", "copy.css", b"copied").await;
    let upload = on_a.create_multipart_upload().bucket("shop").key("copy.css").send().await.expect("create");
    let id = upload.upload_id().expect("upload id");
    let part = on_a
        .upload_part()
        .bucket("shop")
        .key("copy.css")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from_static(b"assembled"))
        .send()
        .await
        .expect("part");
    let part = CompletedPart::builder().part_number(1).e_tag(part.e_tag().expect("etag")).build();
    let parts = CompletedMultipartUpload::builder().parts(part).build();
    on_a.complete_multipart_upload()
        .bucket("shop")
        .key("copy.css")
        .upload_id(id)
        .multipart_upload(parts)
        .send()
        .await
        .expect("complete");
    assert_eq!(get(&on_b, "shop", "copy.css").await.as_deref(), Ok(&b"assembled"[..]));
    let head = on_b.head_object().bucket("shop").key("page.html").send().await;
    assert_eq!(head.map_err(|err| err.raw_response().map(|r| r.status().as_u16())).err(), Some(Some(404)));
}

/// The bytes `range` (`first..=last`) of the object, or the error code.
async fn get_range(
    client: &Client,
    bucket: &str,
    key: &str,
    first: usize,
    last: usize,
) -> Result<Vec<u8>, String> {
    fetch(client.get_object().bucket(bucket).key(key).range(format!("bytes={first}-{last}"))).await
}

/// A large object's manifest is too long to come whole with its lookup, so its first range GET
/// has the whole of it read for the read cache in the background; later ranges, anywhere in it,
/// are answered from the cache with the right bytes, and an overwrite on the other node ends
/// that at once.
#[tokio::test]
async fn ranges_of_a_large_object_are_served_from_its_cached_manifest_until_it_is_overwritten() {
    let pair = Pair::start("cache_ranges").await;
    let (_, on_a, on_b) = tenant_on(&pair, "video").await;
    // Some 48 chunks of 512 KiB on average: more than a lookup brings (32).
    let body = common::noise(24 << 20, 1);
    put(&on_a, "video", "movie.mp4", &body).await;
    let span = |first: usize| (first, (first + 300_000).min(body.len()) - 1);
    let deadline = Instant::now() + storage_node::read_cache::lease::FENCED_FOR + Duration::from_secs(10);
    let mut from_cache = 0;
    let mut at = 0;
    while from_cache < 20 {
        assert!(
            Instant::now() < deadline,
            "ranges were not answered from the read cache:\n{}",
            pair.b.stderr()
        );
        let before = metric(&pair.b, "silo_read_cache_hits_total").await;
        let (first, last) = span(at * 1_234_567 % body.len());
        let read = get_range(&on_b, "video", "movie.mp4", first, last).await.expect("range");
        assert!(read == body[first..=last], "range {first}-{last} read other bytes");
        if metric(&pair.b, "silo_read_cache_hits_total").await > before {
            from_cache += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        at += 1;
    }
    // The last bytes, and a range across many chunks, from the cache too.
    let end = body.len() - 1;
    assert!(get_range(&on_b, "video", "movie.mp4", end - 10, end).await.expect("tail") == body[end - 10..]);
    let wide = get_range(&on_b, "video", "movie.mp4", 1_000, 9_000_000).await.expect("wide range");
    assert!(wide == body[1_000..=9_000_000], "a range across chunks read other bytes");
    // The whole object from the cached manifest: more entries than one batch of a read.
    let before = metric(&pair.b, "silo_read_cache_hits_total").await;
    assert!(
        get(&on_b, "video", "movie.mp4").await.expect("whole") == body,
        "the whole object read other bytes"
    );
    assert!(metric(&pair.b, "silo_read_cache_hits_total").await > before, "answered from the cache");

    let new = common::noise(24 << 20, 2);
    put(&on_a, "video", "movie.mp4", &new).await;
    for at in [0, 5_000_000, 20_000_000] {
        let (first, last) = span(at);
        let read = get_range(&on_b, "video", "movie.mp4", first, last).await.expect("range after");
        assert!(read == new[first..=last], "range {first}-{last} after the overwrite read the old bytes");
    }
}

/// Node b reaches the catalog but not node a (it advertises an internal URL where nothing
/// listens): a's overwrite cannot tell b what it replaced, so it raises b's fence and waits out
/// b's lease before it answers; b empties its cache at its next renewal and never serves the old
/// bytes. (Objects this small live in the catalog: no pack needs b's internal API.)
#[tokio::test]
async fn a_node_that_cannot_be_told_of_an_overwrite_is_fenced_and_never_serves_the_old_bytes() {
    let unreachable = format!("http://{}", free_addr());
    let pair = Pair::start_advertising("cache_fence", Some(unreachable)).await;
    // These first writes may fence node b already (if it took its lease before them); it then
    // takes one again after `FENCED_FOR`.
    let (_, on_a, on_b) = tenant_on(&pair, "shop").await;
    put(&on_a, "shop", "page.html", b"old").await;
    read_through_read_cache(&pair.b, &on_b, "shop", "page.html", b"old").await;
    let emptied = metric(&pair.b, "silo_read_cache_emptied_total").await;
    let started = Instant::now();
    put(&on_a, "shop", "page.html", b"new").await;
    let took = started.elapsed();
    assert_eq!(get(&on_b, "shop", "page.html").await.as_deref(), Ok(&b"new"[..]));
    assert!(
        took >= storage_node::read_cache::broadcast::FENCE_WAIT,
        "the overwrite was acknowledged after {took:?}, before node b's lease had run out"
    );
    assert!(metric(&pair.a, "silo_read_cache_fences_total").await >= 1.0);
    assert!(metric(&pair.b, "silo_read_cache_emptied_total").await > emptied, "node b kept its cache");
    // Node b saw its fence and cleared its stamp: the next write asks it nothing, waits for
    // nothing, and node b answers from the catalog (its cache is off for a while).
    let started = Instant::now();
    put(&on_a, "shop", "page.html", b"newer").await;
    assert!(started.elapsed() < storage_node::read_cache::broadcast::FENCE_WAIT, "{:?}", started.elapsed());
    assert_eq!(metric(&pair.b, "silo_read_cache_leased").await, 0.0);
    assert_eq!(get(&on_b, "shop", "page.html").await.as_deref(), Ok(&b"newer"[..]));
}

/// Anonymous reads cached on node b stop the moment node a's ACL change returns: the bucket's,
/// then an object's own.
#[tokio::test]
async fn an_acl_change_on_one_node_ends_anonymous_reads_on_the_other_at_once() {
    let pair = Pair::start("cache_acl").await;
    let (_, on_a, _) = tenant_on(&pair, "shop").await;
    let http = reqwest::Client::new();
    on_a.put_bucket_acl().bucket("shop").acl(BucketCannedAcl::PublicRead).send().await.expect("acl");
    put(&on_a, "shop", "logo.png", b"png").await;
    wait_for(|| async { metric(&pair.b, "silo_read_cache_leased").await >= 1.0 }).await;
    read_anonymously_from_cache(&http, &pair.b).await;
    // A listing looks up the bucket's access alone, which node b now keeps too.
    for _ in 0..2 {
        assert_eq!(anonymous_list(&http, &pair.b).await, 200);
    }
    on_a.put_bucket_acl().bucket("shop").acl(BucketCannedAcl::Private).send().await.expect("acl");
    assert_eq!(anonymous_get(&http, &pair.b).await, 403);
    assert_eq!(anonymous_list(&http, &pair.b).await, 403);

    on_a.put_object_acl()
        .bucket("shop")
        .key("logo.png")
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .expect("acl");
    read_anonymously_from_cache(&http, &pair.b).await;
    on_a.put_object_acl()
        .bucket("shop")
        .key("logo.png")
        .acl(ObjectCannedAcl::Private)
        .send()
        .await
        .expect("acl");
    assert_eq!(anonymous_get(&http, &pair.b).await, 403);

    // The management API's switch (`PATCH /v1/buckets/{bucket}`), too.
    let patch = |public_read: bool| {
        http.patch(pair.a.url("/v1/buckets/shop"))
            .bearer_auth(pair.a.token())
            .json(&serde_json::json!({ "public_read": public_read }))
            .send()
    };
    assert_eq!(patch(true).await.expect("patch").status(), 200);
    read_anonymously_from_cache(&http, &pair.b).await;
    assert_eq!(patch(false).await.expect("patch").status(), 200);
    assert_eq!(anonymous_get(&http, &pair.b).await, 403);
}

/// The status of an anonymous GET of `shop/logo.png` on `silo`.
async fn anonymous_get(http: &reqwest::Client, silo: &Silo) -> u16 {
    http.get(silo.url("/shop/logo.png")).send().await.expect("anonymous get").status().as_u16()
}

/// The status of an anonymous ListObjectsV2 of `shop` on `silo`.
async fn anonymous_list(http: &reqwest::Client, silo: &Silo) -> u16 {
    http.get(silo.url("/shop?list-type=2")).send().await.expect("anonymous list").status().as_u16()
}

/// A bucket's access kept by one node goes when the bucket is deleted through another, and
/// when the name is created again: created again by another tenant, it is that tenant's on
/// both nodes at once, even where the deletion's invalidation was lost.
#[tokio::test]
async fn a_bucket_deleted_on_one_node_and_created_again_by_another_tenant_is_theirs_on_the_other_at_once() {
    let pair = Pair::start("cache_bucket_again").await;
    let (_, on_a, on_b) = tenant_on(&pair, "shop").await;
    wait_for(|| async { metric(&pair.b, "silo_read_cache_leased").await >= 1.0 }).await;
    // Two PUTs of new keys through node b: the second finds the bucket's access in its cache.
    put(&on_b, "shop", "x", b"x").await;
    put(&on_b, "shop", "y", b"y").await;
    for key in ["k", "x", "y"] {
        on_a.delete_object().bucket("shop").key(key).send().await.expect("delete object");
    }
    on_a.delete_bucket().bucket("shop").send().await.expect("delete bucket");
    let (id, secret) = common::tenant_with_key(&pair.a, "other");
    let other_on_a = common::sdk_client(&pair.a, &id, &secret);
    let other_on_b = common::sdk_client(&pair.b, &id, &secret);
    other_on_a.create_bucket().bucket("shop").send().await.expect("created again");

    let refused = on_b.put_object().bucket("shop").key("z").body(ByteStream::from_static(b"z")).send().await;
    let code = refused.expect_err("the old owner's PUT").code().map(str::to_owned);
    assert_eq!(code.as_deref(), Some("AccessDenied"));
    put(&other_on_b, "shop", "z", b"theirs").await;
    assert_eq!(get(&other_on_b, "shop", "z").await.as_deref(), Ok(&b"theirs"[..]));
    assert_eq!(get(&on_b, "shop", "z").await, Err("AccessDenied".to_string()));

    // A deletion whose invalidation was lost (its node died right after the commit): the
    // creation that takes the name again invalidates it on every node before it answers.
    on_a.create_bucket().bucket("lost").send().await.expect("create");
    put(&on_b, "lost", "x", b"x").await;
    put(&on_b, "lost", "y", b"y").await;
    for key in ["x", "y"] {
        on_a.delete_object().bucket("lost").key(key).send().await.expect("delete object");
    }
    pair.sql("DELETE FROM buckets WHERE name = 'lost'").await;
    other_on_a.create_bucket().bucket("lost").send().await.expect("created again");
    let refused = on_b.put_object().bucket("lost").key("z").body(ByteStream::from_static(b"z")).send().await;
    let code = refused.expect_err("the old owner's PUT").code().map(str::to_owned);
    assert_eq!(code.as_deref(), Some("AccessDenied"));
    put(&other_on_b, "lost", "z", b"theirs").await;
}

/// Three anonymous GETs of `shop/logo.png` on `silo` succeed, and its read cache answered some.
async fn read_anonymously_from_cache(http: &reqwest::Client, silo: &Silo) {
    until_answered_from_cache(silo, 3, || async { assert_eq!(anonymous_get(http, silo).await, 200) }).await;
}

/// While a live node of a release older than the read cache shares the catalog (its writes
/// would invalidate nothing), no node answers from its read cache; once it stops, they do again.
#[tokio::test]
async fn a_live_node_of_an_older_release_turns_every_read_cache_off() {
    let pair = Pair::start("cache_old_release").await;
    let (_, _, on_b) = tenant_on(&pair, "shop").await;
    read_through_read_cache(&pair.b, &on_b, "shop", "k", b"hello").await;
    // What a node of the previous release looks like in the registry: it never sets the flag.
    pair.sql(
        "INSERT INTO storage_nodes (name, zone, internal_url, capacity_bytes, started_at, heartbeat_at) \
         VALUES ('node-old', 'c', 'http://127.0.0.1:9', 1, now(), now())",
    )
    .await;
    for silo in [&pair.a, &pair.b] {
        wait_for(|| async { metric(silo, "silo_read_cache_leased").await == 0.0 }).await;
    }
    let before = metric(&pair.b, "silo_read_cache_hits_total").await;
    for _ in 0..3 {
        assert_eq!(get(&on_b, "shop", "k").await.as_deref(), Ok(&b"hello"[..]));
    }
    assert_eq!(metric(&pair.b, "silo_read_cache_hits_total").await, before, "answered from a cache");
    pair.sql("UPDATE storage_nodes SET stopped_at = now() WHERE name = 'node-old'").await;
    read_through_read_cache(&pair.b, &on_b, "shop", "k", b"hello").await;
}

/// Waits up to 10 s for `condition`.
async fn wait_for<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_public_read_get_carries_what_caches_need_and_a_revalidation_is_304_without_a_body() {
    let (silo, _tmp) = common::silo_on_fresh_catalog("cache_public").await;
    let (id, secret) = common::tenant_with_key(&silo, "site");
    let client = common::sdk_client(&silo, &id, &secret);
    client.create_bucket().bucket("assets").acl(BucketCannedAcl::PublicRead).send().await.expect("bucket");
    client.create_bucket().bucket("private").send().await.expect("bucket");
    let css = common::noise(16 * 1024, 1);
    let stored = client
        .put_object()
        .bucket("assets")
        .key("app.css")
        .content_type("text/css")
        .cache_control("public, max-age=3600")
        .body(ByteStream::from(css.clone()))
        .send()
        .await
        .expect("put");
    let etag = stored.e_tag().expect("etag").to_string();
    put(&client, "assets", "plain.js", b"x").await;
    put(&client, "private", "secret.txt", b"x").await;
    client
        .put_object()
        .bucket("private")
        .key("shared.txt")
        .acl(ObjectCannedAcl::PublicRead)
        .body(ByteStream::from_static(b"shared"))
        .send()
        .await
        .expect("put");
    let http = reqwest::Client::new();
    let url = |path: &str| silo.url(path);

    let full = http.get(url("/assets/app.css")).send().await.expect("anonymous get");
    assert_eq!(full.status(), 200);
    let headers = full.headers().clone();
    assert_eq!(headers["etag"], etag.as_str());
    assert_eq!(headers["cache-control"], "public, max-age=3600");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["content-type"], "text/css");
    let last_modified = headers["last-modified"].to_str().expect("last-modified").to_string();
    httpdate::parse_http_date(&last_modified).expect("an HTTP date");
    assert!(full.bytes().await.expect("body") == css);

    // What was not stored is not invented.
    let plain = http.get(url("/assets/plain.js")).send().await.expect("anonymous get");
    assert_eq!(plain.status(), 200);
    assert!(!plain.headers().contains_key("cache-control"), "no Cache-Control unless one was stored");

    // Revalidations: 304 with the validators and no body, on GET and HEAD.
    let revalidations = [("if-none-match", etag.clone()), ("if-modified-since", last_modified.clone())];
    for (name, value) in &revalidations {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let response = http
                .request(method.clone(), url("/assets/app.css"))
                .header(*name, value)
                .send()
                .await
                .expect("get");
            assert_eq!(response.status(), 304, "{method} with {name}");
            assert_eq!(response.headers()["etag"], etag.as_str());
            assert_eq!(response.headers()["last-modified"], last_modified.as_str());
            assert_eq!(response.headers()["cache-control"], "public, max-age=3600");
            // No length, or the object's (RFC 9110 §8.6), never the length of some other body.
            let length =
                response.headers().get("content-length").map(|v| v.to_str().expect("length").to_owned());
            assert!(
                length.is_none() || length == Some(css.len().to_string()),
                "{method} with {name}: {length:?}"
            );
            assert!(response.bytes().await.expect("body").is_empty(), "a 304 has no body");
        }
    }
    // A changed object, or an older date, is served whole.
    let other =
        http.get(url("/assets/app.css")).header("if-none-match", "\"other\"").send().await.expect("get");
    assert_eq!(other.status(), 200);
    let older = httpdate::fmt_http_date(std::time::SystemTime::UNIX_EPOCH);
    let since =
        http.get(url("/assets/app.css")).header("if-modified-since", older).send().await.expect("get");
    assert_eq!(since.status(), 200);
    let range = http.get(url("/assets/app.css")).header("range", "bytes=0-99").send().await.expect("range");
    assert_eq!(range.status(), 206);
    assert_eq!(range.headers()["etag"], etag.as_str());
    assert!(range.bytes().await.expect("range body") == css[..100]);

    // A private object is refused to anonymous callers; a public-read object in a private
    // bucket is served.
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let private = http.request(method.clone(), url("/private/secret.txt")).send().await.expect("get");
        assert_eq!(private.status(), 403, "{method} of a private object");
        let shared = http.request(method.clone(), url("/private/shared.txt")).send().await.expect("get");
        assert_eq!(shared.status(), 200, "{method} of a public-read object");
    }
}
