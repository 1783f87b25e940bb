//! `silo serve` configuration: flags, `SILO_*` environment variables and an optional TOML file.
//!
//! Precedence, highest first: a flag, its environment variable, the file, the default. Every
//! setting is optional in the flags and in the file, so that "not given" can fall through.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, ValueEnum};
use db_manager::plans::{Plan, Plans};
use serde::Deserialize;
use storage_node::s3::{DEFAULT_REGION, Region};
use storage_node::store::{NodeSpec, StoreConfig};

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./silo-data";
/// The default HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8420";
const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 20;
const DEFAULT_GC_INTERVAL_SECS: u64 = 300;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// The flags of `silo serve`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "SILO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where Silo keeps its data [default: ./silo-data].
    #[arg(long, env = "SILO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The HTTP listen address [default: 127.0.0.1:8420].
    #[arg(long, env = "SILO_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// An external catalog Postgres (libpq URL). Without it, Silo runs its own under the data dir.
    #[arg(long, env = "SILO_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Where the Postgres binaries are [default: PATH, then /usr/lib/postgresql/*/bin].
    #[arg(long, env = "SILO_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<PathBuf>,
    /// A TCP address for the embedded Postgres, besides its unix socket [default: none].
    #[arg(long, env = "SILO_POSTGRES_LISTEN")]
    pub postgres_listen: Option<SocketAddr>,
    /// The OS user the embedded Postgres runs as when Silo runs as root [default: postgres].
    #[arg(long, env = "SILO_POSTGRES_OS_USER")]
    pub postgres_os_user: Option<String>,
    /// How long in-flight requests may run after a shutdown signal, in seconds [default: 20].
    #[arg(long, env = "SILO_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// The log format [default: text].
    #[arg(long, env = "SILO_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// This storage node's name, unique among the nodes sharing a catalog [default: local].
    #[arg(long, env = "SILO_NODE_NAME")]
    pub node_name: Option<String>,
    /// The availability zone of this storage node [default: default].
    #[arg(long, env = "SILO_ZONE")]
    pub zone: Option<String>,
    /// Seconds between background GC runs; 0 turns them off [default: 300].
    #[arg(long, env = "SILO_GC_INTERVAL_SECS")]
    pub gc_interval_secs: Option<u64>,
    /// Seconds after which an unfinished multipart upload is aborted [default: 604800, a week].
    #[arg(long, env = "SILO_MULTIPART_EXPIRY_SECS")]
    pub multipart_expiry_secs: Option<u64>,
    /// Seconds between samples of client databases' sizes and connections [default: 30].
    #[arg(long, env = "SILO_DATABASE_SAMPLE_INTERVAL_SECS")]
    pub database_sample_interval_secs: Option<u64>,
    /// The address dedicated Postgres instances listen on, and clients are given [default: 127.0.0.1].
    #[arg(long, env = "SILO_DEDICATED_LISTEN")]
    pub dedicated_listen: Option<IpAddr>,
    /// Empty databases kept ready on each server so creates are quick; 0 turns them off [default: 2].
    #[arg(long, env = "SILO_SPARE_DATABASES")]
    pub spare_databases: Option<usize>,
    /// Days a database's final backup (taken when it is deleted) is kept [default: 30].
    #[arg(long, env = "SILO_FINAL_BACKUP_RETENTION_DAYS")]
    pub final_backup_retention_days: Option<u64>,
    /// The S3 region Silo serves: requests must be signed for it (or `US`/`EU` for us-east-1 and
    /// eu-west-1), GetBucketLocation answers it [default: us-east-1].
    #[arg(long, env = "SILO_REGION")]
    pub region: Option<String>,
}

/// The settings a TOML file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    postgres_url: Option<String>,
    postgres_bin_dir: Option<PathBuf>,
    postgres_listen: Option<SocketAddr>,
    postgres_os_user: Option<String>,
    shutdown_grace_secs: Option<u64>,
    log_format: Option<LogFormat>,
    node_name: Option<String>,
    zone: Option<String>,
    gc_interval_secs: Option<u64>,
    multipart_expiry_secs: Option<u64>,
    database_sample_interval_secs: Option<u64>,
    dedicated_listen: Option<IpAddr>,
    final_backup_retention_days: Option<u64>,
    spare_databases: Option<usize>,
    region: Option<String>,
    /// Database plans (`[plans.<name>]`), added to or replacing `small`, `medium` and `large`.
    #[serde(default)]
    plans: BTreeMap<String, Plan>,
    /// The chunk store's tunables (`[store]`: chunk sizes, compression, packs, caches).
    store: Option<StoreConfig>,
}

/// The resolved configuration of `silo serve`.
#[derive(Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub postgres_url: Option<String>,
    pub postgres_bin_dir: Option<PathBuf>,
    pub postgres_listen: Option<SocketAddr>,
    pub postgres_os_user: String,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub node: NodeSpec,
    pub gc_interval: Option<Duration>,
    pub multipart_expiry: Duration,
    pub database_sample_interval: Duration,
    pub dedicated_listen: IpAddr,
    pub final_backup_retention: Duration,
    pub spare_databases: usize,
    /// The S3 region Silo serves.
    pub region: Region,
    pub plans: Plans,
    pub store: StoreConfig,
}

impl std::fmt::Debug for ServeConfig {
    /// Leaves out the Postgres URL, which may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("postgres_url", &self.postgres_url.as_ref().map(|_| "<set>"))
            .field("postgres_bin_dir", &self.postgres_bin_dir)
            .field("postgres_listen", &self.postgres_listen)
            .field("postgres_os_user", &self.postgres_os_user)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("log_format", &self.log_format)
            .field("node", &self.node)
            .field("gc_interval", &self.gc_interval)
            .field("multipart_expiry", &self.multipart_expiry)
            .field("database_sample_interval", &self.database_sample_interval)
            .field("dedicated_listen", &self.dedicated_listen)
            .field("final_backup_retention", &self.final_backup_retention)
            .field("spare_databases", &self.spare_databases)
            .field("region", &self.region)
            .field("plans", &self.plans)
            .field("store", &self.store)
            .finish()
    }
}

impl ServeArgs {
    /// Merges the flags (and their environment variables) over the file over the defaults.
    ///
    /// # Errors
    /// When the file cannot be read or holds an unknown key or a bad value.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let default_listen: SocketAddr = DEFAULT_LISTEN.parse().context("the default listen address")?;
        Ok(ServeConfig {
            data_dir: self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: self.listen.or(file.listen).unwrap_or(default_listen),
            postgres_url: self.postgres_url.or(file.postgres_url),
            postgres_bin_dir: self.postgres_bin_dir.or(file.postgres_bin_dir),
            postgres_listen: self.postgres_listen.or(file.postgres_listen),
            postgres_os_user: self
                .postgres_os_user
                .or(file.postgres_os_user)
                .unwrap_or_else(|| "postgres".into()),
            shutdown_grace: Duration::from_secs(
                self.shutdown_grace_secs.or(file.shutdown_grace_secs).unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
            ),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            node: NodeSpec {
                name: self.node_name.or(file.node_name).unwrap_or_else(|| "local".into()),
                zone: self.zone.or(file.zone).unwrap_or_else(|| "default".into()),
            },
            gc_interval: match self
                .gc_interval_secs
                .or(file.gc_interval_secs)
                .unwrap_or(DEFAULT_GC_INTERVAL_SECS)
            {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            multipart_expiry: Duration::from_secs(
                self.multipart_expiry_secs.or(file.multipart_expiry_secs).unwrap_or(7 * 24 * 3600),
            ),
            database_sample_interval: Duration::from_secs(
                self.database_sample_interval_secs
                    .or(file.database_sample_interval_secs)
                    .unwrap_or(30)
                    .max(1),
            ),
            dedicated_listen: self
                .dedicated_listen
                .or(file.dedicated_listen)
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            final_backup_retention: Duration::from_secs(
                self.final_backup_retention_days.or(file.final_backup_retention_days).unwrap_or(30)
                    * 24
                    * 3600,
            ),
            spare_databases: self.spare_databases.or(file.spare_databases).unwrap_or(2),
            region: region(self.region.or(file.region))?,
            plans: Plans::with(file.plans),
            store: file.store.unwrap_or_default(),
        })
    }
}

/// The region, checked as s3s checks the regions clients sign for: `[a-z0-9-]+`.
fn region(name: Option<String>) -> anyhow::Result<Region> {
    let name = name.unwrap_or_else(|| DEFAULT_REGION.to_string());
    Region::new(name.into())
        .map_err(|err| anyhow!("--region: {err}; a region is lowercase letters, digits and dashes"))
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let config = ServeArgs::default().resolve().unwrap();
        assert_eq!(config.data_dir, PathBuf::from("./silo-data"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:8420");
        assert_eq!(config.postgres_os_user, "postgres");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.region.as_str(), "us-east-1");
    }

    #[test]
    fn the_region_comes_from_a_flag_or_the_file_and_must_be_lowercase() {
        let toml = file("region = \"eu-central-1\"\n");
        let args = ServeArgs { config: Some(toml.path().into()), ..ServeArgs::default() };
        assert_eq!(args.resolve().unwrap().region.as_str(), "eu-central-1");
        let wrapper = Wrapper::parse_from(["silo", "--region", "auto"]);
        assert_eq!(wrapper.args.resolve().unwrap().region.as_str(), "auto");
        let args = ServeArgs { region: Some("US".into()), ..ServeArgs::default() };
        let err = format!("{:#}", args.resolve().unwrap_err());
        assert!(err.contains("--region"), "{err}");
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let toml = file("listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/silo\"\nlog_format = \"json\"\n");
        let path = toml.path().to_str().unwrap();
        let wrapper = Wrapper::parse_from(["silo", "--config", path, "--listen", "127.0.0.1:9100"]);
        let config = wrapper.args.resolve().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(config.data_dir, PathBuf::from("/srv/silo"));
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn the_store_table_sets_chunk_sizes() {
        let toml = file("[store]\nchunk_sizes = { min = 65536, avg = 262144, max = 1048576 }\n");
        let args = ServeArgs { config: Some(toml.path().into()), ..ServeArgs::default() };
        let config = args.resolve().unwrap();
        assert_eq!(config.store.chunk_sizes.avg, 262144);
        assert_eq!(config.store.compression.min_saving, 0.10, "unset keys keep their defaults");
    }

    #[test]
    fn plans_come_from_the_file_beside_the_defaults() {
        let toml = file(
            "[plans.tiny]\nconnection_limit = 3\nstorage_quota_bytes = 1000\nstatement_timeout_ms = 500\n\
             backup_retention = { keep_last = 2 }\n",
        );
        let args = ServeArgs { config: Some(toml.path().into()), ..ServeArgs::default() };
        let config = args.resolve().unwrap();
        let tiny = config.plans.get("tiny").unwrap();
        assert_eq!((tiny.connection_limit, tiny.storage_quota_bytes), (3, 1000));
        assert_eq!((tiny.backup_retention.keep_last, tiny.backup_retention.daily), (2, 7));
        assert!(config.plans.get("small").is_some() && config.plans.get("large").is_some());
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let toml = file("listne = \"127.0.0.1:9000\"\n");
        let args = ServeArgs { config: Some(toml.path().into()), ..ServeArgs::default() };
        let err = format!("{:#}", args.resolve().unwrap_err());
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn the_postgres_url_never_shows_in_debug_output() {
        let args =
            ServeArgs { postgres_url: Some("postgresql://u:hunter2@db/silo".into()), ..ServeArgs::default() };
        let shown = format!("{:?}", args.resolve().unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
