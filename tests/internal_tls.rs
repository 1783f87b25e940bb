//! The internal node API over TLS (`--internal-tls-cert`, `--internal-tls-key`,
//! `--internal-tls-ca`), with certificates of a test CA made with the `openssl` command: a pack
//! is copied between two real nodes over HTTPS; clients that trust another CA, that trust no CA,
//! that speak plain HTTP or that reach a node under a name its certificate does not give are
//! refused; a certificate renewed in place is served without a restart; settings that do not
//! fit together stop the start with a clear error; and a cluster of
//! two nodes whose peers talk over HTTPS writes through one and reads through the other.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::tls::openssl;
use common::{Silo, free_addr, noise, scratch, silo_cli_json};
use storage_node::node_api::{ClientError, IDLE_TIMEOUT, NodeClient, PeerTls, Received};
use storage_node::pack::{PackId, pack_path};
use storage_node::{ServerSecret, TenantId};

const CLUSTER_SECRET: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";
const READY: Duration = Duration::from_secs(30);

fn secret() -> ServerSecret {
    ServerSecret::from_hex(CLUSTER_SECRET).expect("64 hex digits")
}

/// A test CA, another CA, and certificates signed by the first: `node` for 127.0.0.1 and
/// localhost, `elsewhere` for a name no test uses.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = scratch();
        let at = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subject) =
                (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=silo test {ca}"));
            let args = [
                &["req", "-x509", "-days", "1", "-subj", &subject][..],
                &ec,
                &["-keyout", &key, "-out", &pem],
            ];
            openssl(at, &args.concat());
        }
        for (name, san) in [("node", "IP:127.0.0.1,DNS:localhost"), ("elsewhere", "DNS:elsewhere.example")] {
            let (key, csr, crt, ext) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.cnf"));
            openssl(
                at,
                &[&["req", "-subj", "/CN=silo node"][..], &ec, &["-keyout", &key, "-out", &csr]].concat(),
            );
            std::fs::write(at.join(&ext), format!("subjectAltName={san}\n")).expect("write ext");
            openssl(
                at,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-extfile",
                    &ext,
                    "-out",
                    &crt,
                ],
            );
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8 path").to_string()
    }

    fn trusting(&self, ca: &str) -> PeerTls {
        PeerTls::trusting(&self.path(ca)).expect("a CA bundle")
    }
}

/// The arguments that serve the internal API at `internal` over HTTPS with certificate `cert`
/// (and its key), trusting the test CA.
fn tls_args(certs: &Certs, cert: &str, internal: SocketAddr) -> Vec<String> {
    [
        "--internal-listen".to_string(),
        internal.to_string(),
        "--internal-url".into(),
        format!("https://{internal}"),
        "--internal-tls-cert".into(),
        certs.arg(&format!("{cert}.pem")),
        "--internal-tls-key".into(),
        certs.arg(&format!("{cert}.key")),
        "--internal-tls-ca".into(),
        certs.arg("ca.pem"),
    ]
    .into()
}

/// One `silo serve` whose internal API serves HTTPS.
struct Node {
    silo: Silo,
    internal: SocketAddr,
    _tmp: tempfile::TempDir,
}

impl Node {
    /// A node on a catalog of its own, presenting certificate `cert`.
    async fn start(label: &str, certs: &Certs, cert: &str) -> Node {
        let url = pg_local::testing::shared().fresh_database(label).await;
        let tmp = scratch();
        let internal = free_addr();
        let mut args = vec!["--postgres-url".to_string(), url, "--gc-interval-secs".into(), "0".into()];
        args.extend(tls_args(certs, cert, internal));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut silo =
            Silo::start_with_env(&tmp.path().join("data"), &args, &[("SILO_SERVER_SECRET", CLUSTER_SECRET)]);
        silo.wait_ready(READY).await;
        Node { silo, internal, _tmp: tmp }
    }

    fn client(&self, tls: Option<&PeerTls>) -> Result<NodeClient, ClientError> {
        self.client_at(&format!("https://{}", self.internal), tls)
    }

    fn client_at(&self, url: &str, tls: Option<&PeerTls>) -> Result<NodeClient, ClientError> {
        NodeClient::with_tls(url, &secret(), IDLE_TIMEOUT, tls)
    }

    fn packs_dir(&self) -> PathBuf {
        self.silo.data_dir.join("packs")
    }
}

/// A valid sealed pack `id` of a few records, as a node of the cluster writes it.
fn made_pack(dir: &Path, id: i64) -> PathBuf {
    common::write_pack(dir, id, &secret(), TenantId(3), 4, (200_000, id as u64 * 10))
}

/// The whole error, with its sources.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_is_copied_between_two_nodes_over_https_and_other_cas_are_refused() {
    let certs = Certs::make();
    let a = Node::start("internal_tls_a", &certs, "node").await;
    let b = Node::start("internal_tls_b", &certs, "node").await;
    let tls = certs.trusting("ca.pem");

    // A pack sent to A over HTTPS, then relayed from A to B over HTTPS through memory.
    let made = scratch();
    let path = made_pack(made.path(), 41);
    let original = std::fs::read(&path).expect("the pack");
    let to_a = a.client(Some(&tls)).expect("client of A");
    assert_eq!(to_a.put_pack(PackId(41), &path).await.expect("PUT to A"), Received::Created);
    let to_b = b.client(Some(&tls)).expect("client of B");
    let (len, stream) = to_a.get_pack_stream(PackId(41)).await.expect("GET from A");
    assert_eq!(len, original.len() as u64);
    assert_eq!(to_b.put_pack_stream(PackId(41), len, stream).await.expect("PUT to B"), Received::Created);
    assert_eq!(std::fs::read(pack_path(&b.packs_dir(), PackId(41))).expect("B's copy"), original);
    let range = to_b.read_range(PackId(41), 32..4096).await.expect("a range from B");
    assert_eq!(&range[..], &original[32..4096]);

    // A client that trusts another CA is refused at the handshake: nothing reaches B.
    let wrong = b.client(Some(&certs.trusting("other-ca.pem"))).expect("client");
    let err = wrong.pack_len(PackId(41)).await.expect_err("another CA");
    let text = chain(&err);
    assert!(matches!(err, ClientError::Http(_)) && text.contains("certificate"), "{text}");
    // Record reads take a client of their own: refused the same way.
    let err = wrong.read_range(PackId(41), 32..4096).await.expect_err("another CA");
    assert!(chain(&err).contains("certificate"), "{}", chain(&err));
    assert!(wrong.delete_pack(PackId(41)).await.is_err());
    assert!(pack_path(&b.packs_dir(), PackId(41)).exists(), "B kept its copy");

    // By the other name its certificate gives.
    let port = b.internal.port();
    let by_name = b.client_at(&format!("https://localhost:{port}"), Some(&tls)).expect("client");
    assert_eq!(by_name.pack_len(PackId(41)).await.expect("HEAD by name"), Some(len));

    // Without a CA, an https peer is not even tried; plain HTTP to the TLS port gets no answer.
    let none = b.client(None).expect_err("no CA");
    assert!(
        matches!(none, ClientError::NoClusterCa { .. }) && none.to_string().contains("--internal-tls-ca"),
        "{none}"
    );
    let plain = b.client_at(&format!("http://{}", b.internal), None).expect("client");
    assert!(plain.pack_len(PackId(41)).await.is_err(), "plain HTTP to an HTTPS listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_presenting_a_certificate_for_another_name_is_refused() {
    let certs = Certs::make();
    let node = Node::start("internal_tls_misnamed", &certs, "elsewhere").await;
    let client = node.client(Some(&certs.trusting("ca.pem"))).expect("client");
    let err = client.pack_len(PackId(1)).await.expect_err("a certificate for elsewhere.example");
    let text = chain(&err);
    assert!(text.contains("certificate"), "{text}");
    let err = client.read_range(PackId(1), 0..10).await.expect_err("a certificate for elsewhere.example");
    assert!(chain(&err).contains("certificate"), "{}", chain(&err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_in_place_is_served_without_a_restart() {
    let certs = Certs::make();
    // The node starts with the certificate for another name, as if it were about to expire.
    for ext in ["pem", "key"] {
        std::fs::copy(certs.path(&format!("elsewhere.{ext}")), certs.path(&format!("live.{ext}")))
            .expect("copy");
    }
    let node = Node::start("internal_tls_renewal", &certs, "live").await;
    let client = node.client(Some(&certs.trusting("ca.pem"))).expect("client");
    assert!(client.pack_len(PackId(1)).await.is_err(), "the first certificate names another host");
    // The renewed pair replaces the files (each renamed into place, as cert-manager writes them).
    for ext in ["pem", "key"] {
        let staged = certs.path(&format!("staged.{ext}"));
        std::fs::copy(certs.path(&format!("node.{ext}")), &staged).expect("copy");
        std::fs::rename(&staged, certs.path(&format!("live.{ext}"))).expect("rename");
    }
    let deadline = std::time::Instant::now() + storage_node::node_api::TLS_RECHECK_EVERY * 4;
    loop {
        match client.pack_len(PackId(1)).await {
            Ok(len) => break assert_eq!(len, None),
            Err(err) => assert!(std::time::Instant::now() < deadline, "still refused: {}", chain(&err)),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn internal_tls_settings_that_do_not_fit_stop_the_start() {
    let certs = Certs::make();
    let internal = free_addr().to_string();
    let https = format!("https://{internal}");
    let (cert, key, ca) = (certs.arg("node.pem"), certs.arg("node.key"), certs.arg("ca.pem"));
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec![
                "--internal-listen",
                &internal,
                "--internal-url",
                &https,
                "--internal-tls-cert",
                &cert,
                "--internal-tls-key",
                &key,
            ],
            "--internal-tls-ca",
        ),
        (
            vec!["--internal-listen", &internal, "--internal-url", &https, "--internal-tls-ca", &ca],
            "--internal-tls-cert",
        ),
        (vec!["--internal-listen", &internal, "--internal-tls-cert", &cert], "go together"),
        // A key that is not the certificate's own: named before anything starts.
        (
            vec!["--internal-listen", &internal, "--internal-tls-cert", &cert, "--internal-tls-key", &ca],
            "--internal-tls-key",
        ),
    ];
    for (args, expected) in cases {
        let tmp = scratch();
        let (status, stderr) = common::start_expecting_failure(&tmp.path().join("data"), &args).await;
        assert!(!status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!tmp.path().join("data").join("postgres").exists(), "Postgres was not touched: {args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_zone_cluster_over_https_writes_through_one_node_and_reads_through_the_other() {
    let certs = Certs::make();
    let catalog = pg_local::testing::shared().fresh_database("internal_tls_cluster").await;
    let tmp = scratch();
    let mut nodes = Vec::new();
    for (name, zone) in [("tls-a", "a"), ("tls-b", "b")] {
        let mut args = vec!["--postgres-url".to_string(), catalog.clone(), "--node-name".into(), name.into()];
        args.extend(["--zone".to_string(), zone.into()]);
        args.extend(tls_args(&certs, "node", free_addr()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut silo =
            Silo::start_with_env(&tmp.path().join(name), &args, &[("SILO_SERVER_SECRET", CLUSTER_SECRET)]);
        silo.wait_ready(READY).await;
        nodes.push(silo);
    }
    silo_cli_json(&nodes[0], &["tenant", "create", "tls-media"]);
    let key = silo_cli_json(&nodes[0], &["key", "create", "tls-media"]);
    let field = |name: &str| key[name].as_str().expect("key field").to_string();
    let (id, secret_key) = (field("access_key_id"), field("secret_access_key"));
    let through_a = common::sdk_client(&nodes[0], &id, &secret_key);
    let through_b = common::sdk_client(&nodes[1], &id, &secret_key);
    through_a.create_bucket().bucket("site").send().await.expect("bucket");
    let body = noise(6_000_000, 5);
    let put = through_a.put_object().bucket("site").key("clip.bin").body(ByteStream::from(body.clone()));
    put.send().await.expect("a write through A, copied to B over HTTPS");

    // Every pack has its two copies, one per zone, on disk at both nodes.
    let (client, conn) = tokio_postgres::connect(&catalog, tokio_postgres::NoTls).await.expect("catalog");
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT r.pack_id, array_agg(n.name ORDER BY n.name) FROM pack_replicas r \
             JOIN storage_nodes n ON n.id = r.node_id GROUP BY r.pack_id",
            &[],
        )
        .await
        .expect("replicas");
    assert!(!rows.is_empty(), "no pack recorded");
    for row in &rows {
        let (pack, names): (i64, Vec<String>) = (row.get(0), row.get(1));
        assert_eq!(names, ["tls-a", "tls-b"], "pack {pack}");
        for name in &names {
            assert!(
                pack_path(&tmp.path().join(name).join("packs"), PackId(pack)).exists(),
                "{pack} on {name}"
            );
        }
    }

    // B's copies marked damaged and gone from its disk: B reads A's over HTTPS.
    client
        .execute(
            "UPDATE pack_replicas SET state = 'damaged' WHERE node_id = (SELECT id FROM storage_nodes WHERE name = 'tls-b')",
            &[],
        )
        .await
        .expect("mark B's copies");
    for row in &rows {
        let pack: i64 = row.get(0);
        std::fs::remove_file(pack_path(&tmp.path().join("tls-b").join("packs"), PackId(pack)))
            .expect("remove");
    }
    let object =
        through_b.get_object().bucket("site").key("clip.bin").send().await.expect("a read through B");
    let read = object.body.collect().await.expect("body").into_bytes();
    assert!(read.as_ref() == body.as_slice(), "the bytes read through B are the bytes written through A");
}
