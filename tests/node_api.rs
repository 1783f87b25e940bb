//! The internal node API against a real `silo serve` started with `--internal-listen`: a sealed
//! pack written through S3 on one node is copied to another with the client and reads back byte
//! for byte (whole, by ranges, by length); repeated copies are no-ops and other bytes under the
//! same id conflict; damaged, cut and oversized uploads leave nothing behind; and requests
//! without the cluster token, without a known version or with ids that are not pack ids are
//! refused. A taken internal port fails the start before Postgres is touched. Version 2: a pack
//! a node is writing is built on a peer by appends (only where the catalog records a `writing`
//! replica, only of its domain's records, nothing kept of a refused piece), and a pack is
//! relayed between two nodes through memory (`get_pack_stream` into `put_pack_stream`).

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::{Silo, free_addr, noise, scratch, silo_cli_json};
use nix::sys::signal::Signal;
use storage_node::ServerSecret;
use storage_node::TenantId;
use storage_node::compress::Compression;
use storage_node::node_api::{ClientError, ClusterToken, NodeClient, Received};
use storage_node::pack::{PackId, pack_path, scan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server secret every node of the test cluster shares.
const CLUSTER_SECRET: &str = "6e6f64652d617069207465737473207368617265207468697320736563726574";
const VERSION: &str = "silo-internal-version";

/// One `silo serve` with its internal API.
struct Node {
    silo: Silo,
    internal: SocketAddr,
    /// Its catalog's URL.
    catalog: String,
    _tmp: tempfile::TempDir,
}

impl Node {
    /// Starts a node on a catalog of its own; `store` is a `[store]` table for its config file.
    async fn start(label: &str, store: &str) -> Node {
        let url = pg_local::testing::shared().fresh_database(label).await;
        let tmp = scratch();
        let config = tmp.path().join("silo.toml");
        std::fs::write(&config, format!("[store]\n{store}")).expect("config file");
        let internal = free_addr();
        let args = [
            "--postgres-url",
            &url,
            "--internal-listen",
            &internal.to_string(),
            "--gc-interval-secs",
            "0",
            "--config",
            config.to_str().expect("utf-8 path"),
        ];
        let mut silo =
            Silo::start_with_env(&tmp.path().join("data"), &args, &[("SILO_SERVER_SECRET", CLUSTER_SECRET)]);
        silo.wait_ready(Duration::from_secs(30)).await;
        Node { silo, internal, catalog: url, _tmp: tmp }
    }

    fn client(&self) -> NodeClient {
        NodeClient::new(&format!("http://{}", self.internal), &secret()).expect("client")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.internal)
    }

    /// Its id in its catalog (the only node there).
    async fn node_id(&self) -> i32 {
        let (client, conn) =
            tokio_postgres::connect(&self.catalog, tokio_postgres::NoTls).await.expect("catalog");
        tokio::spawn(conn);
        client.query_one("SELECT id FROM storage_nodes", &[]).await.expect("node id").get(0)
    }

    fn packs_dir(&self) -> PathBuf {
        self.silo.data_dir.join("packs")
    }

    /// The names of the files in the packs directory.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.packs_dir())
            .expect("packs dir")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Waits until the packs directory holds exactly `expected` (partial transfers gone).
    async fn wait_for_files(&self, expected: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.files() != expected {
            assert!(
                Instant::now() < deadline,
                "the packs directory holds {:?}, not {expected:?}",
                self.files()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn secret() -> ServerSecret {
    ServerSecret::from_hex(CLUSTER_SECRET).expect("64 hex digits")
}

fn token() -> String {
    ClusterToken::of(&secret()).authorization()
}

/// A valid pack `id` of a few records made here, as a node would write it; returns its path.
fn made_pack(dir: &Path, id: i64, records: usize) -> PathBuf {
    made_pack_of(dir, id, TenantId(7), records)
}

fn made_pack_of(dir: &Path, id: i64, tenant: TenantId, records: usize) -> PathBuf {
    common::write_pack(dir, id, &secret(), tenant, records, (100_000, id as u64 * 100))
}

/// The status of a refused client call.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result.expect_err("the call must be refused") {
        ClientError::Refused { status, code, .. } => (status, code),
        other => panic!("not a refusal: {other}"),
    }
}

/// Sends `request` as it is on a new connection and reads the answer to its end; returns the
/// status (0 when the connection closed without one) and the whole answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("send");
    read_answer(&mut tcp).await
}

async fn read_answer(tcp: &mut TcpStream) -> (u16, String) {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no end of the answer within 10 s: {}", String::from_utf8_lossy(&answer));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|status| status.parse().ok()).unwrap_or(0);
    (status, answer)
}

/// The head of a request to the internal API with the cluster token and version 1.
fn head(method: &str, path: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: node\r\nAuthorization: {}\r\n{VERSION}: 1\r\nConnection: close\r\n{extra}\r\n",
        token()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_pack_written_through_s3_copies_to_another_node_byte_for_byte() {
    // Node A takes objects through S3 (compressible text and noise), then stops, which seals
    // its packs.
    let mut a = Node::start("node_api_source", "").await;
    silo_cli_json(&a.silo, &["tenant", "create", "node-api-a"]);
    let key = silo_cli_json(&a.silo, &["key", "create", "node-api-a"]);
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    let s3 = common::sdk_client(&a.silo, &field("access_key_id"), &field("secret_access_key"));
    s3.create_bucket().bucket("media").send().await.expect("create bucket");
    let text = b"GET /media/cat.jpg 200 1234 \"Mozilla/5.0\"\n".repeat(60_000);
    for (name, body) in [("access.log", text), ("clip.mp4", noise(5 << 20, 11))] {
        s3.put_object().bucket("media").key(name).body(body.into()).send().await.expect("put");
    }
    a.silo.signal(Signal::SIGTERM);
    assert!(a.silo.wait_exit(Duration::from_secs(30)).await.success(), "{}", a.silo.stderr());
    let packs: Vec<(PackId, PathBuf)> = scan::pack_ids_on_disk(&a.packs_dir())
        .expect("A's packs")
        .into_iter()
        .map(|id| (id, pack_path(&a.packs_dir(), id)))
        .collect();
    assert!(!packs.is_empty(), "A wrote no pack");
    let compressed = packs.iter().any(|(id, path)| {
        scan::scan_pack(path, *id)
            .expect("scan")
            .records
            .iter()
            .any(|(_, h)| h.compression == Compression::Zstd)
    });
    assert!(compressed, "the text was stored compressed, so both kinds of record travel");

    let b = Node::start("node_api_target", "").await;
    let client = b.client();
    for (id, path) in &packs {
        let original = std::fs::read(path).expect("A's pack");
        let len = original.len() as u64;
        assert_eq!(client.pack_len(*id).await.expect("HEAD"), None);
        assert_eq!(client.put_pack(*id, path).await.expect("PUT"), Received::Created);
        assert_eq!(std::fs::read(pack_path(&b.packs_dir(), *id)).expect("B's copy"), original);
        assert_eq!(client.put_pack(*id, path).await.expect("PUT again"), Received::AlreadyHeld);
        assert_eq!(client.pack_len(*id).await.expect("HEAD"), Some(len));
        for range in [0..len, 0..32, 32..88, len - 1..len, len / 3..len / 2] {
            let bytes = client.read_range(*id, range.clone()).await.expect("range");
            assert_eq!(&bytes[..], &original[range.start as usize..range.end as usize], "{range:?}");
        }
        assert_eq!(client.version(), 3);
    }

    // A whole GET and the range answers, as HTTP says them.
    let (id, path) = &packs[0];
    let len = std::fs::metadata(path).expect("len").len();
    let http = reqwest::Client::new();
    let get = |range: Option<String>| {
        let mut request = http.get(b.url(&format!("/internal/v1/packs/{}", id.0)));
        request = request.header("authorization", token()).header(VERSION, "1");
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send()
    };
    let whole = get(None).await.expect("GET");
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()[VERSION], "3");
    assert_eq!(whole.bytes().await.expect("body"), std::fs::read(path).expect("A's pack"));
    let tail = get(Some("bytes=-10".into())).await.expect("GET");
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.headers()["content-range"], format!("bytes {}-{}/{len}", len - 10, len - 1));
    let past = get(Some(format!("bytes={len}-"))).await.expect("GET");
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], format!("bytes */{len}"));
    for malformed in ["bytes=9-2", "bytes=0-1,5-6", "lines=0-1"] {
        assert_eq!(get(Some(malformed.into())).await.expect("GET").status(), 400, "{malformed}");
    }

    // Other bytes under a held id (a valid pack: A's first record alone) conflict.
    let first = scan::scan_pack(path, *id).expect("scan").records[0];
    let end = first.0 + 56 + u64::from(first.1.stored_len);
    let other = scratch();
    let shorter = pack_path(other.path(), *id);
    std::fs::write(&shorter, &std::fs::read(path).expect("A's pack")[..end as usize]).expect("write");
    assert_eq!(refusal(client.put_pack(*id, &shorter).await), (409, "pack_conflict".into()));
    assert_eq!(
        std::fs::read(pack_path(&b.packs_dir(), *id)).expect("B's copy"),
        std::fs::read(path).expect("A")
    );

    // DELETE is idempotent.
    client.delete_pack(*id).await.expect("DELETE");
    assert!(!pack_path(&b.packs_dir(), *id).exists());
    client.delete_pack(*id).await.expect("DELETE again");
    assert_eq!(client.pack_len(*id).await.expect("HEAD"), None);
    assert_eq!(refusal(client.read_range(*id, 0..10).await), (404, "no_such_pack".into()));
}

#[tokio::test]
async fn a_peer_cannot_delete_a_pack_this_node_still_needs() {
    let node = Node::start("node_api_live", "").await;
    silo_cli_json(&node.silo, &["tenant", "create", "node-api-live"]);
    let key = silo_cli_json(&node.silo, &["key", "create", "node-api-live"]);
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    let s3 = common::sdk_client(&node.silo, &field("access_key_id"), &field("secret_access_key"));
    s3.create_bucket().bucket("media").send().await.expect("create bucket");
    let body = noise(1 << 20, 5);
    s3.put_object().bucket("media").key("a.bin").body(body.clone().into()).send().await.expect("put");
    let ids = scan::pack_ids_on_disk(&node.packs_dir()).expect("packs");
    assert!(!ids.is_empty(), "the upload wrote a pack");
    for id in ids {
        assert_eq!(refusal(node.client().delete_pack(id).await), (409, "pack_in_use".into()));
        assert!(pack_path(&node.packs_dir(), id).exists(), "pack {} was kept", id.0);
    }
    let got = s3.get_object().bucket("media").key("a.bin").send().await.expect("get");
    assert_eq!(got.body.collect().await.expect("body").into_bytes().to_vec(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_cut_and_oversized_packs_leave_nothing_behind() {
    // Packs of at most 1 MiB: the limit is that plus one record of the largest chunk.
    let b = Node::start("node_api_refusals", "pack_target_bytes = 1048576").await;
    let before = b.files();
    let client = b.client();
    let src = scratch();
    let good = made_pack(src.path(), 41, 4);
    let bytes = std::fs::read(&good).expect("pack");

    // A flipped byte, in a record's bytes and in a record's header.
    for at in [bytes.len() / 2, 32 + 20] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 1;
        std::fs::write(&good, &damaged).expect("write");
        assert_eq!(
            refusal(client.put_pack(PackId(41), &good).await),
            (422, "invalid_pack".into()),
            "at {at}"
        );
        assert_eq!(b.files(), before);
    }
    // A pack sent under another pack's id.
    std::fs::write(&good, &bytes).expect("write");
    assert_eq!(refusal(client.put_pack(PackId(42), &good).await), (422, "invalid_pack".into()));
    assert_eq!(b.files(), before);

    // A connection cut mid-body, half-closed (the server can still answer) and dropped.
    let half = bytes.len() / 2;
    let request = head("PUT", "/internal/v1/packs/41", &format!("Content-Length: {}\r\n", bytes.len()));
    for close in ["half", "drop"] {
        let mut tcp = TcpStream::connect(b.internal).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("head");
        tcp.write_all(&bytes[..half]).await.expect("half the body");
        // The transfer is under way: its temporary file is there.
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.files() == before {
            assert!(Instant::now() < deadline, "no transfer began");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if close == "half" {
            tcp.shutdown().await.expect("half-close");
            let (status, answer) = read_answer(&mut tcp).await;
            assert_eq!(status, 400, "a cut body answered {answer}");
            assert!(answer.contains("incomplete_body"), "{answer}");
        }
        drop(tcp);
        b.wait_for_files(&before).await;
    }

    // Over the limit: by Content-Length (refused before the body) and by counting a chunked body.
    let (status, answer) =
        raw(b.internal, head("PUT", "/internal/v1/packs/41", "Content-Length: 1000000000000\r\n").as_bytes())
            .await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("pack_too_large"), "{answer}");
    let chunked = head("PUT", "/internal/v1/packs/41", "Transfer-Encoding: chunked\r\n");
    let mut tcp = TcpStream::connect(b.internal).await.expect("connect");
    tcp.write_all(chunked.as_bytes()).await.expect("head");
    let chunk = [format!("{:x}\r\n", 1 << 20).into_bytes(), vec![b'x'; 1 << 20], b"\r\n".to_vec()].concat();
    let mut sent = 0;
    for _ in 0..40 {
        let write = tokio::time::timeout(Duration::from_secs(10), tcp.write_all(&chunk)).await;
        if !matches!(write, Ok(Ok(()))) {
            break;
        }
        sent += 1;
    }
    assert!(sent < 40, "the server took 40 MiB for a pack of at most ~17 MiB");
    drop(tcp);
    b.wait_for_files(&before).await;

    // And a good one is taken.
    assert_eq!(client.put_pack(PackId(41), &good).await.expect("PUT"), Received::Created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_cluster_token_a_known_version_and_pack_ids_are_accepted() {
    let b = Node::start("node_api_guard", "").await;
    let src = scratch();
    let pack = made_pack(src.path(), 5, 1);
    assert_eq!(b.client().put_pack(PackId(5), &pack).await.expect("PUT"), Received::Created);
    let http = reqwest::Client::new();
    let send = |path: &str, authorization: Option<String>, version: Option<&str>| {
        let mut request = http.get(b.url(path));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(version) = version {
            request = request.header(VERSION, version);
        }
        request.send()
    };
    let code = |body: &serde_json::Value| body["error"]["code"].as_str().unwrap_or_default().to_string();

    // No token, another cluster's token, the admin token, a tenant's S3 signature.
    let other = ClusterToken::of(&ServerSecret::from_hex(&"ab".repeat(32)).expect("hex")).authorization();
    let sigv4 = "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261130/us-east-1/s3/aws4_request, \
                 SignedHeaders=host, Signature=0000";
    for (what, authorization) in [
        ("none", None),
        ("another cluster's", Some(other)),
        ("the admin token", Some(format!("Bearer {}", b.silo.token()))),
        ("an S3 signature", Some(sigv4.to_string())),
        ("the token without its scheme", Some(token().replace("Bearer ", ""))),
    ] {
        for path in ["/internal/v1/packs/5", "/internal/v1/elsewhere"] {
            let response = send(path, authorization.clone(), Some("1")).await.expect("GET");
            assert_eq!(response.status(), 401, "{what} on {path}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            assert_eq!(response.headers()[VERSION], "3");
            assert_eq!(code(&response.json().await.expect("JSON error")), "unauthorized");
        }
    }
    let unknown = send("/internal/v1/elsewhere", Some(token()), Some("1")).await.expect("GET");
    assert_eq!(unknown.status(), 404);

    // A missing or unknown version is refused, naming the versions this node accepts.
    for version in [None, Some("0"), Some("4"), Some("99"), Some("one")] {
        let response = send("/internal/v1/packs/5", Some(token()), version).await.expect("GET");
        assert_eq!(response.status(), 400, "{version:?}");
        assert_eq!(response.headers()["silo-internal-accepts"], "1-3");
        let body: serde_json::Value = response.json().await.expect("JSON error");
        assert_eq!(code(&body), "unsupported_version");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("1-3"), "{body}");
    }
    for version in ["1", "2", "3"] {
        assert_eq!(
            send("/internal/v1/packs/5", Some(token()), Some(version)).await.expect("GET").status(),
            200
        );
    }

    // Read cache invalidations: version 3, addressed to this node, in JSON; or a clear refusal.
    let id = b.node_id().await;
    let invalidate = |version: &str, body: String| {
        http.post(b.url(storage_node::node_api::INVALIDATE_ROUTE))
            .header("authorization", token())
            .header(VERSION, version)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let refusals = [
        ("2", format!(r#"{{"node":{id},"bucket":"shop"}}"#), 400, "unsupported_version"),
        ("3", format!(r#"{{"node":{id},"keys":"shop"}}"#), 400, "invalid_invalidation"),
        ("3", r#"{"bucket":"shop"}"#.to_string(), 400, "invalid_invalidation"),
        ("3", format!(r#"{{"node":{},"bucket":"shop"}}"#, id + 1), 409, "wrong_node"),
    ];
    for (version, body, status, expected) in refusals {
        let refused = invalidate(version, body.clone()).await.expect("POST");
        assert_eq!(refused.status(), status, "{body}");
        assert_eq!(code(&refused.json().await.expect("JSON error")), expected, "{body}");
    }
    for body in [
        format!(r#"{{"node":{id},"bucket":"shop"}}"#),
        format!(r#"{{"node":{id},"bucket":"shop","keys":["a","b/c"]}}"#),
    ] {
        assert_eq!(invalidate("3", body.clone()).await.expect("POST").status(), 204, "{body}");
    }
    let anonymous = http
        .post(b.url(storage_node::node_api::INVALIDATE_ROUTE))
        .header(VERSION, "3")
        .body(format!(r#"{{"node":{id},"bucket":"shop"}}"#))
        .send()
        .await
        .expect("POST");
    assert_eq!(anonymous.status(), 401);

    // Ids that are not canonical positive integers, and paths that climb out of the packs.
    for id in
        ["0", "-5", "05", "5.0", "0x5", "abc", "99999999999999999999", "..%2F..%2Fsecrets%2Fchunk-key-secret"]
    {
        let response =
            send(&format!("/internal/v1/packs/{id}"), Some(token()), Some("1")).await.expect("GET");
        assert_eq!(response.status(), 400, "{id}");
        assert_eq!(code(&response.json().await.expect("JSON error")), "invalid_pack_id", "{id}");
    }
    for path in [
        "/internal/v1/packs/%2e%2e",
        "/internal/v1/packs/..%2f..%2fsilo.lock",
        "/internal/v1/packs/../../secrets/chunk-key-secret",
        "/internal/v1/packs/5/../../../secrets/chunk-key-secret",
    ] {
        let (status, answer) = raw(b.internal, head("GET", path, "").as_bytes()).await;
        assert!(status == 400 || status == 404, "{path}: {answer}");
        assert!(!answer.contains(CLUSTER_SECRET), "{path}");
    }
    for method in ["DELETE", "PUT"] {
        let (status, _) =
            raw(b.internal, head(method, "/internal/v1/packs/..", "Content-Length: 0\r\n").as_bytes()).await;
        assert_eq!(status, 400, "{method}");
    }
    assert!(pack_path(&b.packs_dir(), PackId(5)).exists());
}

#[tokio::test]
async fn a_taken_internal_port_is_named_before_postgres_is_touched() {
    let tmp = scratch();
    let data = tmp.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let silo = Silo::start(&data, &["--internal-listen", &addr]);
    let (status, stderr) = common::wait_for_failure(silo).await;
    assert!(!status.success());
    assert!(stderr.contains(&format!("cannot listen for the internal node API on {addr}")), "{stderr}");
    assert!(!data.join("postgres").exists(), "no Postgres is created before the port is secured");
}

/// The catalog of `node`, as the lead's write path will fill it: the rows that make a pack one
/// this node is writing a replica of.
struct Catalog {
    db: tokio_postgres::Client,
    /// The serving node's id.
    node: i32,
    /// Another node, the packs' writer (registered as removed, so the serving one runs on).
    writer: i32,
}

impl Catalog {
    async fn of(node: &Node) -> Catalog {
        let (db, conn) =
            tokio_postgres::connect(&node.catalog, tokio_postgres::NoTls).await.expect("catalog");
        tokio::spawn(conn);
        let serving =
            db.query("SELECT id FROM storage_nodes WHERE state <> 'removed'", &[]).await.expect("nodes");
        assert_eq!(serving.len(), 1, "one serving node");
        let writer = db
            .query_one(
                "INSERT INTO storage_nodes (name, zone, state) VALUES ('writer', 'b', 'removed') RETURNING id",
                &[],
            )
            .await
            .expect("writer");
        Catalog { node: serving[0].get(0), writer: writer.get(0), db }
    }

    /// A new open pack of `owner`'s domain with a `writing` replica on the serving node.
    async fn writing_pack(&self, owner: Option<i64>) -> PackId {
        let row = self
            .db
            .query_one(
                "INSERT INTO packs (node_id, state, owner_tenant_id) VALUES ($1, 'open', $2) RETURNING id",
                &[&self.writer, &owner],
            )
            .await
            .expect("pack");
        let id: i64 = row.get(0);
        self.db
            .execute("INSERT INTO pack_replicas (pack_id, node_id) VALUES ($1, $2)", &[&id, &self.node])
            .await
            .expect("replica");
        PackId(id)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) {
        self.db.execute(sql, params).await.expect(sql);
    }
}

/// `bytes` as a body streamed in pieces of 10 000 bytes.
fn streamed(bytes: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let pieces: Vec<_> = bytes.chunks(10_000).map(|piece| Ok(Bytes::copy_from_slice(piece))).collect();
    futures::stream::iter(pieces)
}

/// The offsets of the records of the pack at `path`.
fn record_offsets(path: &Path, id: PackId) -> Vec<usize> {
    scan::scan_pack(path, id).expect("scan").records.iter().map(|(offset, _)| *offset as usize).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_is_built_on_a_replica_by_appends_and_a_refused_piece_leaves_it_as_it_was() {
    let b = Node::start("node_api_appends", "").await;
    let catalog = Catalog::of(&b).await;
    let client = b.client();
    let id = catalog.writing_pack(None).await;
    let src = scratch();
    let original_path = made_pack(src.path(), id.0, 5);
    let original = std::fs::read(&original_path).expect("pack");
    let records = record_offsets(&original_path, id);
    let (first, second) = (records[1], records[3]);
    let pieces = [&original[..first], &original[first..second], &original[second..]];
    let held = || std::fs::read(pack_path(&b.packs_dir(), id)).expect("the replica");

    // Three pieces, each answered with the length it brings the replica to.
    assert_eq!(client.append(id, 0, streamed(pieces[0])).await.expect("first") as usize, first);
    assert_eq!(client.version(), 3);
    assert_eq!(client.append(id, first as u64, streamed(pieces[1])).await.expect("second") as usize, second);
    // A gap: refused with the length held.
    let gap = client.append(id, second as u64 + 56, streamed(pieces[2])).await.expect_err("a gap");
    assert!(matches!(gap, ClientError::OffsetMismatch { len } if len as usize == second), "{gap}");
    // A flipped byte in a piece: refused, the replica stays at the piece's offset.
    let mut flipped = pieces[2].to_vec();
    flipped[1000] ^= 1;
    assert_eq!(refusal(client.append(id, second as u64, streamed(&flipped)).await), (422, "damaged".into()));
    assert_eq!(held(), &original[..second]);
    assert_eq!(
        client.append(id, second as u64, streamed(pieces[2])).await.expect("third") as usize,
        original.len()
    );
    assert_eq!(held(), original, "the replica is the pack, byte for byte");
    // A piece sent again at an old offset (its answer was lost): the tail is cut, then rebuilt.
    assert_eq!(client.append(id, first as u64, streamed(pieces[1])).await.expect("again") as usize, second);
    assert_eq!(held(), &original[..second]);
    client.append(id, second as u64, streamed(pieces[2])).await.expect("third again");
    assert_eq!(held(), original);

    // As HTTP says it: the gap's length in a header, the append's length as JSON.
    let http = reqwest::Client::new();
    let patch = |id: PackId, version: &str, offset: usize, body: Vec<u8>| {
        http.patch(b.url(&format!("/internal/v1/packs/{}", id.0)))
            .header("authorization", token())
            .header(VERSION, version)
            .header("silo-pack-offset", offset.to_string())
            .body(body)
            .send()
    };
    let response = patch(id, "2", original.len() + 1, b"x".to_vec()).await.expect("PATCH");
    assert_eq!(response.status(), 409);
    assert_eq!(response.headers()["silo-pack-length"], original.len().to_string());
    let response = patch(id, "2", original.len(), Vec::new()).await.expect("PATCH");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(answer["len"], original.len());
    // A client of version 1 cannot append: the route came with version 2.
    let response = patch(id, "1", original.len(), Vec::new()).await.expect("PATCH");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "unsupported_version");
    for offset in ["", "-1", "007", "12", "1e3", "0x20"] {
        let response = http
            .patch(b.url(&format!("/internal/v1/packs/{}", id.0)))
            .header("authorization", token())
            .header(VERSION, "2")
            .header("silo-pack-offset", offset)
            .send()
            .await
            .expect("PATCH");
        assert_eq!(response.status(), 400, "{offset:?}");
    }

    // No writing replica here: a pack the catalog does not know, one sealed since.
    let unknown = PackId(id.0 + 1000);
    let other = made_pack(src.path(), unknown.0, 1);
    let bytes = std::fs::read(&other).expect("pack");
    assert_eq!(refusal(client.append(unknown, 0, streamed(&bytes)).await), (409, "not_writing".into()));
    assert!(!pack_path(&b.packs_dir(), unknown).exists());
    catalog.execute("UPDATE pack_replicas SET state = 'ok' WHERE pack_id = $1", &[&id.0]).await;
    assert_eq!(
        refusal(client.append(id, original.len() as u64, streamed(&[])).await),
        (409, "not_writing".into())
    );
    assert_eq!(held(), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_pack_takes_only_its_tenants_records_and_only_on_its_tenants_node() {
    let b = Node::start("node_api_domains", "").await;
    silo_cli_json(&b.silo, &["tenant", "create", "acme"]);
    let catalog = Catalog::of(&b).await;
    let acme: i64 =
        catalog.db.query_one("SELECT id FROM tenants WHERE name = 'acme'", &[]).await.expect("acme").get(0);
    let client = b.client();
    let src = scratch();
    let id = catalog.writing_pack(Some(acme)).await;
    let acmes = std::fs::read(made_pack_of(src.path(), id.0, TenantId(acme), 3)).expect("pack");
    let other_src = scratch();
    let foreign_path = made_pack_of(other_src.path(), id.0, TenantId(acme + 1), 3);
    let foreign = std::fs::read(&foreign_path).expect("pack");
    let second = record_offsets(&foreign_path, id)[1];
    let replica = pack_path(&b.packs_dir(), id);

    // A shared node takes no owned pack, not even its tenant's records.
    assert_eq!(refusal(client.append(id, 0, streamed(&acmes)).await), (403, "wrong_domain".into()));
    assert!(!replica.exists());
    catalog
        .execute("UPDATE storage_nodes SET owner_tenant_id = $1 WHERE id = $2", &[&acme, &catalog.node])
        .await;
    // On acme's node: another tenant's records are refused, with not a byte of them kept.
    let (status, code) = refusal(client.append(id, 0, streamed(&foreign)).await);
    assert_eq!((status, code.as_str()), (403, "wrong_domain"));
    assert!(!replica.exists());
    assert_eq!(client.append(id, 0, streamed(&acmes)).await.expect("acme's") as usize, acmes.len());
    let (status, _) = refusal(client.append(id, acmes.len() as u64, streamed(&foreign[second..])).await);
    assert_eq!(status, 403);
    assert_eq!(std::fs::read(&replica).expect("replica"), acmes);
    // And a shared pack is not taken by acme's node.
    let shared = catalog.writing_pack(None).await;
    let bytes = std::fs::read(made_pack(src.path(), shared.0, 1)).expect("pack");
    assert_eq!(refusal(client.append(shared, 0, streamed(&bytes)).await), (403, "wrong_domain".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_is_relayed_between_two_nodes_through_memory() {
    let (a, b) = (Node::start("node_api_relay_a", "").await, Node::start("node_api_relay_b", "").await);
    let src = scratch();
    let path = made_pack(src.path(), 77, 6);
    let original = std::fs::read(&path).expect("pack");
    assert_eq!(a.client().put_pack(PackId(77), &path).await.expect("PUT"), Received::Created);

    let (len, stream) = a.client().get_pack_stream(PackId(77)).await.expect("GET");
    assert_eq!(len, original.len() as u64);
    assert_eq!(b.client().put_pack_stream(PackId(77), len, stream).await.expect("relay"), Received::Created);
    assert_eq!(std::fs::read(pack_path(&b.packs_dir(), PackId(77))).expect("B's copy"), original);
    let (len, stream) = b.client().get_pack_stream(PackId(77)).await.expect("GET");
    assert_eq!(
        a.client().put_pack_stream(PackId(77), len, stream).await.expect("back"),
        Received::AlreadyHeld
    );
    let missing = b.client().get_pack_stream(PackId(78)).await.map(|(len, _)| len);
    assert_eq!(refusal(missing), (404, "no_such_pack".into()));

    // A hung peer (SIGSTOP: the kernel still accepts connections) fails calls within about
    // twice the idle timeout, streamed ones too.
    let idle = Duration::from_millis(500);
    let hung =
        NodeClient::with_idle_timeout(&format!("http://{}", b.internal), &secret(), idle).expect("client");
    b.silo.freeze().await;
    let started = Instant::now();
    let read = hung.get_pack_stream(PackId(77)).await.map(|(len, _)| len);
    let (len, stream) = a.client().get_pack_stream(PackId(77)).await.expect("GET");
    let relay = hung.put_pack_stream(PackId(77), len, stream).await;
    let elapsed = started.elapsed();
    b.silo.signal(Signal::SIGCONT);
    assert!(matches!(read, Err(ClientError::Stalled(_))), "{read:?}");
    assert!(matches!(relay, Err(ClientError::Stalled(_))), "{relay:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(b.client().pack_len(PackId(77)).await.expect("HEAD"), Some(len), "B answers again");
}
