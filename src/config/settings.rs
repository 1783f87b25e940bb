//! Every setting of `silo serve`, declared once: its flag and `SILO_*` variable (clap), its
//! file key (serde: the field's name), its default (clap's `default_value`) and its doc (the
//! doc comment, which `--help` and the table in docs/operations.md both show).
//!
//! Values stay as an operator writes them (seconds, days); the accessors turn them into what
//! the server uses (durations, a clamped count, a checked region).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use db_manager::plans::{Plan, Plans};
use serde::{Deserialize, Deserializer, Serialize};
use storage_node::repair::RepairConfig;
use storage_node::s3::{DEFAULT_REGION, Region};
use storage_node::store::{MemoryLimits, NodeSpec, StoreConfig};

use crate::secret::Secret;

/// The default data directory (the CLI's service commands look for the admin token there).
pub const DEFAULT_DATA_DIR: &str = "./silo-data";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// The resolved configuration of `silo serve`: flag > variable > file > default.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Where Silo keeps its data.
    #[arg(long, env = "SILO_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The HTTP address.
    #[arg(long, env = "SILO_LISTEN", default_value = "127.0.0.1:8420")]
    pub listen: SocketAddr,
    /// An external catalog Postgres (libpq URL); without it Silo runs its own under the data
    /// directory.
    #[arg(long, env = "SILO_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<Secret>,
    /// Where `initdb`, `pg_ctl` and `postgres` are; without it, PATH, then
    /// `/usr/lib/postgresql/*/bin`.
    #[arg(long, env = "SILO_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<PathBuf>,
    /// A TCP address for the embedded Postgres, besides its unix socket.
    #[arg(long, env = "SILO_POSTGRES_LISTEN")]
    pub postgres_listen: Option<SocketAddr>,
    /// The OS user the embedded Postgres runs as when Silo runs as root.
    #[arg(long, env = "SILO_POSTGRES_OS_USER", default_value = "postgres")]
    pub postgres_os_user: String,
    /// How long in-flight requests may run after SIGTERM, in seconds.
    #[arg(long, env = "SILO_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// Seconds after SIGTERM during which `/readyz` answers 503 but new requests are still
    /// served, so that load balancers stop sending them before the listener closes; the grace
    /// period starts after it. A second signal cuts it short.
    #[arg(long, env = "SILO_SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,
    /// The log format: `text`, or `json` (one object per line, on stderr).
    #[arg(long, env = "SILO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// This storage node's name, unique among the nodes sharing a catalog.
    #[arg(long, env = "SILO_NODE_NAME", default_value = "local")]
    pub node_name: String,
    /// This storage node's availability zone.
    #[arg(long, env = "SILO_ZONE", default_value = "default")]
    pub zone: String,
    /// The tenant whose own node this is: it stores only that tenant's packs, and an `owned`
    /// placement policy stores the tenant's packs only on such nodes. The tenant must exist.
    /// Without it, a shared node (the hosting company's).
    #[arg(long, env = "SILO_OWNER")]
    pub owner: Option<String>,
    /// The URL this node's peers reach its internal node API at (recorded in the node registry).
    #[arg(long, env = "SILO_INTERNAL_URL")]
    pub internal_url: Option<String>,
    /// How many bytes this node may hold; without it, the size of the data directory's
    /// filesystem.
    #[arg(long, env = "SILO_CAPACITY_BYTES")]
    pub capacity_bytes: Option<u64>,
    /// Seconds between background GC passes; 0 turns them off.
    #[arg(long, env = "SILO_GC_INTERVAL_SECS", default_value_t = 300)]
    pub gc_interval_secs: u64,
    /// Seconds a storage node may be silent before the repairer writes its copies off and copies
    /// its packs elsewhere (long enough that a rolling restart causes no repair; at least 10, two
    /// heartbeats).
    #[arg(long, env = "SILO_REPAIR_GRACE_SECS", default_value_t = 600)]
    pub repair_grace_secs: u64,
    /// The most megabytes per second the repairer copies (one node repairs at a time).
    #[arg(long, env = "SILO_REPAIR_RATE_MB", default_value_t = 100)]
    pub repair_rate_mb: u64,
    /// Seconds between repair passes; 0 turns repair off on this node.
    #[arg(long, env = "SILO_REPAIR_INTERVAL_SECS", default_value_t = 10)]
    pub repair_interval_secs: u64,
    /// Seconds after which the GC loop aborts an unfinished multipart upload (a week).
    #[arg(long, env = "SILO_MULTIPART_EXPIRY_SECS", default_value_t = 7 * 24 * 3600)]
    pub multipart_expiry_secs: u64,
    /// Seconds between samples of client databases' sizes and sessions (quotas are enforced on
    /// each).
    #[arg(long, env = "SILO_DATABASE_SAMPLE_INTERVAL_SECS", default_value_t = 30)]
    pub database_sample_interval_secs: u64,
    /// Empty databases kept ready on each server, so that creates are quick; 0 turns them off.
    #[arg(long, env = "SILO_SPARE_DATABASES", default_value_t = 2)]
    pub spare_databases: usize,
    /// Days the final backup of a deleted database is kept.
    #[arg(long, env = "SILO_FINAL_BACKUP_RETENTION_DAYS", default_value_t = 30)]
    pub final_backup_retention_days: u64,
    /// The S3 region Silo serves: requests must be signed for it (`US`/`EU` count as us-east-1
    /// and eu-west-1), and GetBucketLocation answers it (see docs/s3.md).
    #[arg(long, env = "SILO_REGION", default_value = DEFAULT_REGION)]
    pub region: RegionName,
    /// Connections served at once; more are answered `503 SlowDown` with `Retry-After: 1` and
    /// closed. Silo raises its soft open-files limit to the hard one at start and warns when the
    /// cap does not fit under it.
    #[arg(long, env = "SILO_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a request's head may take from its first byte to its last, or the connection is
    /// closed.
    #[arg(long, env = "SILO_HEADER_TIMEOUT_SECS", default_value_t = 15)]
    pub header_timeout_secs: u64,
    /// Seconds a connection with no request in progress (new, or kept alive after a response)
    /// stays open; a request body that stalls this long is cut. Keep clients' pool idle timeouts
    /// below it, or they may reuse a connection as it closes.
    #[arg(long, env = "SILO_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Mebibytes of in-flight upload data this node holds at most (chunker buffers, chunks
    /// being hashed, compressed and written). An upload waits for its share before its body is
    /// read; see `--memory-wait-secs`.
    #[arg(long, env = "SILO_MEMORY_BUDGET_MB", default_value_t = 256)]
    pub memory_budget_mb: u64,
    /// Seconds an upload waits for memory under `--memory-budget-mb` before it is answered
    /// `503 SlowDown` with `Retry-After: 1` (nothing stored).
    #[arg(long, env = "SILO_MEMORY_WAIT_SECS", default_value_t = 30)]
    pub memory_wait_secs: u64,
    /// Where `GET /metrics` is served, apart from the public port (e.g. `127.0.0.1:9420`); off
    /// without it.
    #[arg(long, env = "SILO_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where the internal node API is served (pack transfer between the nodes of a cluster,
    /// authenticated with the cluster token), apart from the public port; off without it. HTTPS
    /// with `--internal-tls-cert` and `--internal-tls-key`, else plain HTTP: then keep it on a
    /// private network.
    #[arg(long, env = "SILO_INTERNAL_LISTEN")]
    pub internal_listen: Option<SocketAddr>,
    /// The internal listener's certificate chain (PEM: this node's certificate, then any
    /// intermediates), naming the host of `--internal-url`; with `--internal-tls-key`, the
    /// internal node API is served over HTTPS.
    #[arg(long, env = "SILO_INTERNAL_TLS_CERT")]
    pub internal_tls_cert: Option<PathBuf>,
    /// The private key of `--internal-tls-cert` (PEM).
    #[arg(long, env = "SILO_INTERNAL_TLS_KEY")]
    pub internal_tls_key: Option<PathBuf>,
    /// The cluster CA (PEM bundle) that peers' internal certificates must chain to: this node
    /// reaches `https://` peers trusting it alone, never the system roots. Needed with an
    /// `https://` `--internal-url`.
    #[arg(long, env = "SILO_INTERNAL_TLS_CA")]
    pub internal_tls_ca: Option<PathBuf>,
    /// The address dedicated Postgres instances listen on, and that clients are given.
    #[arg(long, env = "SILO_DEDICATED_LISTEN", default_value = "127.0.0.1")]
    pub dedicated_listen: IpAddr,
    /// Database plans (`[plans.<name>]` in the file), added to or replacing `small`, `medium`
    /// and `large`.
    #[arg(skip)]
    #[serde(deserialize_with = "plans_over_the_defaults")]
    pub plans: Plans,
    /// The chunk store's tunables (`[store]` in the file: chunk sizes, compression, packs,
    /// caches).
    #[arg(skip)]
    pub store: StoreConfig,
}

impl Default for ServeConfig {
    /// Every default, and nothing from the environment.
    fn default() -> Self {
        let command = Self::augment_args(clap::Command::new("silo")).mut_args(|arg| arg.env(None));
        command
            .try_get_matches_from(["silo"])
            .and_then(|matches| <Self as clap::FromArgMatches>::from_arg_matches(&matches))
            .unwrap_or_else(|err| unreachable!("the declared defaults parse: {err}"))
    }
}

impl ServeConfig {
    /// The chunk store's tunables with the memory budget of the flags.
    pub fn store_config(&self) -> StoreConfig {
        let memory = MemoryLimits {
            bytes: self.memory_budget_mb.max(1).saturating_mul(1024 * 1024),
            wait: Duration::from_secs(self.memory_wait_secs.max(1)),
        };
        StoreConfig { memory, ..self.store.clone() }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_secs(self.shutdown_delay_secs)
    }

    pub fn node(&self) -> NodeSpec {
        NodeSpec { name: self.node_name.clone(), zone: self.zone.clone() }
    }

    /// `None` when background GC is off.
    pub fn gc_interval(&self) -> Option<Duration> {
        (self.gc_interval_secs > 0).then(|| Duration::from_secs(self.gc_interval_secs))
    }

    /// How the repairer runs; `None` when repair is off on this node.
    pub fn repair(&self) -> Option<RepairConfig> {
        (self.repair_interval_secs > 0).then(|| RepairConfig {
            grace: self.repair_grace(),
            rate_bytes_per_sec: self.repair_rate_mb.max(1).saturating_mul(1_000_000),
            interval: Duration::from_secs(self.repair_interval_secs),
        })
    }

    /// How long a silent node's copies still count (also what `remove` counts by): at least two
    /// heartbeats, or live nodes would be written off between their beats.
    pub fn repair_grace(&self) -> Duration {
        Duration::from_secs(self.repair_grace_secs).max(2 * storage_node::model::node::HEARTBEAT_EVERY)
    }

    pub fn multipart_expiry(&self) -> Duration {
        Duration::from_secs(self.multipart_expiry_secs)
    }

    /// At least a second.
    pub fn database_sample_interval(&self) -> Duration {
        Duration::from_secs(self.database_sample_interval_secs.max(1))
    }

    pub fn final_backup_retention(&self) -> Duration {
        Duration::from_secs(self.final_backup_retention_days.saturating_mul(24 * 3600))
    }

    pub fn region(&self) -> Region {
        self.region.0.clone()
    }

    /// At least one.
    pub fn connection_cap(&self) -> usize {
        self.max_connections.max(1)
    }

    /// At least a second.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs.max(1))
    }

    /// At least a second.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }

    /// The internal listener's certificate and key, when it serves HTTPS.
    ///
    /// # Errors
    /// When the internal TLS settings do not fit together: a certificate without its key (or
    /// the reverse), either without `--internal-listen`, an `https://` `--internal-url` without
    /// the cluster CA or without a certificate for the listener, or an `http://` one for a
    /// listener that serves HTTPS.
    pub fn internal_tls_pair(&self) -> Result<Option<(&Path, &Path)>, String> {
        let pair = match (&self.internal_tls_cert, &self.internal_tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => return Err("--internal-tls-cert and --internal-tls-key go together".into()),
        };
        if pair.is_some() && self.internal_listen.is_none() {
            return Err("--internal-tls-cert is for the internal listener: set --internal-listen".into());
        }
        let Some(url) = &self.internal_url else {
            return Ok(pair);
        };
        let https = url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        if https && self.internal_tls_ca.is_none() {
            return Err(format!(
                "--internal-url {url} is https: set --internal-tls-ca, the CA that the nodes' certificates chain to"
            ));
        }
        match (https, pair.is_some()) {
            (true, false) => Err(format!(
                "--internal-url {url} is https: set --internal-tls-cert and --internal-tls-key for the internal listener"
            )),
            (false, true) => Err(format!(
                "--internal-url {url} is not https, but the internal listener serves HTTPS (--internal-tls-cert)"
            )),
            _ => Ok(pair),
        }
    }
}

/// The `[plans]` of a file, over the default plans.
fn plans_over_the_defaults<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Plans, D::Error> {
    std::collections::BTreeMap::<String, Plan>::deserialize(deserializer).map(Plans::with)
}

/// An S3 region name, checked as s3s checks the regions clients sign for: `[a-z0-9-]+`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionName(Region);

impl FromStr for RegionName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Region::new(name.to_owned().into())
            .map(RegionName)
            .map_err(|err| format!("{err}; a region is lowercase letters, digits and dashes"))
    }
}

impl TryFrom<String> for RegionName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<RegionName> for String {
    fn from(region: RegionName) -> String {
        region.0.as_str().to_owned()
    }
}
