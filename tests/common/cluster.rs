//! Several `silo serve` processes on loopback sharing one throwaway catalog and one server
//! secret, for the multi-node tests (tests/cluster.rs, tests/cluster_upkeep.rs): starting,
//! restarting and reviving nodes, SDK clients of a tenant on every node, the catalog's record of
//! each pack's copies, and the files on each node's disk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use nix::sys::signal::Signal;

use super::{Silo, free_addr, scratch};

pub const READY: Duration = Duration::from_secs(30);
/// Every node of a test cluster seals and names things with this one secret.
pub const CLUSTER_SECRET: &str = "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c";

pub struct Node {
    pub name: String,
    pub silo: Silo,
    /// How it was started, to start it again on the same addresses.
    pub args: Vec<String>,
    /// The `silo` binary it runs: `None` for this build's.
    pub binary: Option<PathBuf>,
}

pub struct Cluster {
    pub catalog: String,
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub nodes: Vec<Node>,
    /// The `silo` binary new nodes run: `None` for this build's (an upgrade test starts them
    /// on the previous release's).
    pub binary: Option<PathBuf>,
}

impl Cluster {
    pub async fn new(label: &str) -> Cluster {
        let catalog = pg_local::testing::shared().fresh_database(label).await;
        let tmp = scratch();
        let root = tmp.path().to_path_buf();
        Cluster { catalog, _tmp: tmp, root, nodes: Vec::new(), binary: None }
    }

    /// Starts node `name` in `zone` (owned by `owner` when given), with its internal API.
    pub async fn start(&mut self, name: &str, zone: &str, owner: Option<&str>) {
        self.start_with(name, zone, owner, &[]).await;
    }

    /// [`Cluster::start`] with `extra` flags.
    pub async fn start_with(&mut self, name: &str, zone: &str, owner: Option<&str>, extra: &[&str]) {
        let internal: SocketAddr = free_addr();
        let internal_listen = internal.to_string();
        let internal_url = format!("http://{internal}");
        let mut args = vec![
            "--postgres-url",
            &self.catalog,
            "--node-name",
            name,
            "--zone",
            zone,
            "--internal-listen",
            &internal_listen,
            "--internal-url",
            &internal_url,
        ];
        if let Some(owner) = owner {
            args.extend(["--owner", owner]);
        }
        args.extend_from_slice(extra);
        let env = [("SILO_SERVER_SECRET", CLUSTER_SECRET)];
        let binary = self.binary.clone();
        let mut silo = start(binary.as_deref(), free_addr(), &self.root.join(name), &args, &env);
        silo.wait_ready(READY).await;
        let args = args.iter().map(|arg| arg.to_string()).collect();
        self.nodes.push(Node { name: name.to_string(), silo, args, binary });
    }

    /// Stops node `name` cleanly and starts it again on this build's binary, on the same
    /// addresses and data directory.
    pub async fn upgrade(&mut self, name: &str) {
        let node = self.nodes.iter_mut().find(|node| node.name == name).expect("a node of the cluster");
        node.binary = None;
        self.restart(name).await;
    }

    /// Stops node `name` cleanly (SIGTERM) and starts it again on the same addresses.
    pub async fn restart(&mut self, name: &str) {
        let node = self.nodes.iter_mut().find(|node| node.name == name).expect("a node of the cluster");
        node.silo.signal(Signal::SIGTERM);
        let status = node.silo.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{name} stops cleanly: {status}\n{}", node.silo.stderr());
        self.revive(name).await;
    }

    /// Starts node `name`, stopped or killed, again on the same addresses.
    pub async fn revive(&mut self, name: &str) {
        let root = self.root.clone();
        let node = self.nodes.iter_mut().find(|node| node.name == name).expect("a node of the cluster");
        let args: Vec<&str> = node.args.iter().map(String::as_str).collect();
        let env = [("SILO_SERVER_SECRET", CLUSTER_SECRET)];
        node.silo = start(node.binary.as_deref(), node.silo.addr, &root.join(name), &args, &env);
        node.silo.wait_ready(READY).await;
    }

    pub fn node(&self, name: &str) -> &Silo {
        &self.nodes.iter().find(|node| node.name == name).expect("a node of the cluster").silo
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Silo {
        &mut self.nodes.iter_mut().find(|node| node.name == name).expect("a node of the cluster").silo
    }

    /// A tenant with a key, and an SDK client for it on every node.
    pub fn tenant(&self, name: &str) -> HashMap<String, aws_sdk_s3::Client> {
        let (id, secret) = super::tenant_with_key(&self.nodes[0].silo, name);
        self.clients(&id, &secret)
    }

    /// A new key of the existing tenant `name`, and an SDK client for it on every node.
    pub fn key_of(&self, name: &str) -> HashMap<String, aws_sdk_s3::Client> {
        let key = super::silo_cli_json(&self.nodes[0].silo, &["key", "create", name]);
        let field = |name: &str| key[name].as_str().expect("key field").to_string();
        self.clients(&field("access_key_id"), &field("secret_access_key"))
    }

    /// SDK clients of the key `id` on every node, by node name.
    pub fn clients(&self, id: &str, secret: &str) -> HashMap<String, aws_sdk_s3::Client> {
        self.nodes.iter().map(|node| (node.name.clone(), super::sdk_client(&node.silo, id, secret))).collect()
    }

    pub async fn sql_rows(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let (client, conn) =
            tokio_postgres::connect(&self.catalog, tokio_postgres::NoTls).await.expect("catalog");
        tokio::spawn(conn);
        client.query(sql, &[]).await.expect(sql)
    }

    /// The names of the nodes, in the order they started.
    pub fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|node| node.name.as_str()).collect()
    }

    /// The data directory of node `name`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// `silo serve` of `binary` (this build's when `None`) on `addr`.
fn start(
    binary: Option<&Path>,
    addr: SocketAddr,
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Silo {
    match binary {
        Some(binary) => Silo::start_binary_at(binary, addr, data_dir, args, env),
        None => Silo::start_at(addr, data_dir, args, env),
    }
}

/// Incompressible bytes with `marker` every 64 KiB, so that a copy on disk can be found by it.
pub fn marked(len: usize, seed: u64, marker: &[u8]) -> Vec<u8> {
    let mut bytes = super::noise(len, seed);
    for at in (0..len.saturating_sub(marker.len())).step_by(64 * 1024) {
        bytes[at..at + marker.len()].copy_from_slice(marker);
    }
    bytes
}

pub async fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|err| panic!("put {key}: {err:?}"));
}

pub async fn get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    try_get(client, bucket, key).await.unwrap_or_else(|err| panic!("get {key}: {err}"))
}

pub async fn try_get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let object =
        client.get_object().bucket(bucket).key(key).send().await.map_err(|err| format!("{err:?}"))?;
    Ok(object.body.collect().await.map_err(|err| format!("{err:?}"))?.into_bytes().to_vec())
}

/// Whether any file under `dir` contains `needle`.
pub fn any_file_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    for entry in walk(dir) {
        let Ok(bytes) = std::fs::read(&entry) else { continue };
        if bytes.windows(needle.len()).any(|window| window == needle) {
            return Some(entry);
        }
    }
    None
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

pub fn pack_file(data_dir: &Path, pack: i64) -> PathBuf {
    storage_node::pack::pack_path(&data_dir.join("packs"), storage_node::pack::PackId(pack))
}

/// Every pack that holds a live chunk: its copies' nodes and zones.
pub async fn copies(cluster: &Cluster) -> Vec<(i64, i64, Vec<String>, Vec<String>)> {
    let rows = cluster
        .sql_rows(
            "SELECT p.id, p.size, array_agg(n.name ORDER BY n.name), array_agg(n.zone ORDER BY n.name) \
             FROM packs p JOIN pack_replicas r ON r.pack_id = p.id JOIN storage_nodes n ON n.id = r.node_id \
             WHERE EXISTS (SELECT 1 FROM chunk_locations l WHERE l.pack_id = p.id) \
             GROUP BY p.id, p.size ORDER BY p.id",
        )
        .await;
    rows.iter().map(|row| (row.get(0), row.get(1), row.get(2), row.get(3))).collect()
}
