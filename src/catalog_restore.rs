//! `silo catalog restore`: rebuilds a lost catalog from a catalog backup, offline.
//!
//! It reads the offline manifest that `silo backup catalog` (or `backup run --all`) wrote to
//! `<data-dir>/catalog-backups/`, follows it to the packs, verifies every chunk, and streams
//! the dump into `pg_restore` on a new, empty database. Silo must be stopped: the data
//! directory's lock is taken. It leaves a marker in the data directory, so that the next start
//! reconciles the restored catalog with the packs on disk (chunks GC moved since the backup,
//! packs the backup does not know) before it serves anything. See the disaster-recovery steps in docs/operations.md.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use db_manager::instance::PgBinaries;
use storage_node::DataDir;
use storage_node::ServerSecret;
use storage_node::store::offline::{OfflineManifest, read_offline};

/// The flags of `silo catalog restore`.
#[derive(Debug, Args)]
pub struct CatalogRestoreArgs {
    /// The manifest (`<data-dir>/catalog-backups/catalog-NNNNNN.json`).
    #[arg(long)]
    pub manifest: PathBuf,
    /// The data directory that holds the packs and the server secret.
    #[arg(long, env = "SILO_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The new, empty catalog database (libpq URL).
    #[arg(long, env = "SILO_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: String,
    /// Where the Postgres client binaries are.
    #[arg(long, env = "SILO_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<PathBuf>,
}

pub fn restore(args: CatalogRestoreArgs) -> anyhow::Result<()> {
    let data_dir =
        DataDir::open(&args.data_dir).context("cannot open the data directory (is Silo still running?)")?;
    let has_secret = std::env::var_os("SILO_SERVER_SECRET").is_some()
        || data_dir.secret_path("chunk-key-secret").is_ok_and(|path| path.exists());
    if !has_secret {
        bail!(
            "the data directory has no server secret (secrets/chunk-key-secret) and SILO_SERVER_SECRET is unset"
        );
    }
    let secret = ServerSecret::load_or_create(&data_dir)?;
    let text =
        std::fs::read(&args.manifest).with_context(|| format!("cannot read {}", args.manifest.display()))?;
    let manifest: OfflineManifest =
        serde_json::from_slice(&text).context("the manifest is not a catalog manifest")?;
    let config: tokio_postgres::Config =
        args.postgres_url.parse().map_err(|_| anyhow!("--postgres-url is not a valid libpq URL"))?;
    let dbname = config.get_dbname().unwrap_or("silo").to_string();
    let binaries = PgBinaries::locate(args.postgres_bin_dir.as_deref())?;
    // Like every pg tool Silo runs: none of Silo's environment (secrets, stray PG* variables).
    let mut child = Command::new(binaries.path("pg_restore"))
        .env_clear()
        .args(db_manager::backup::restore::RESTORE_ARGS)
        .arg(format!("--dbname={dbname}"))
        .envs(db_manager::backup::dump::pg_env(&config, &dbname))
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run pg_restore")?;
    let mut stdin = child.stdin.take().context("pg_restore has no stdin")?;
    let read =
        read_offline(&data_dir.path().join("packs"), &secret, &manifest, |bytes| stdin.write_all(bytes));
    drop(stdin);
    let status = child.wait().context("pg_restore")?;
    let written = match read {
        Ok(written) => written,
        Err(err) => {
            bail!("the catalog backup cannot be read: {err}; nothing was committed (pg_restore {status})")
        }
    };
    if !status.success() {
        bail!("pg_restore failed ({status}); nothing was committed");
    }
    // The restored catalog is as old as its backup; GC may have moved chunks since. The next
    // start reconciles it with the packs on disk before serving anything.
    storage_node::store::mark_catalog_restored(data_dir.path())
        .context("the catalog is restored, but the reconcile marker could not be written")?;
    println!(
        "restored the catalog ({written} bytes of dump) into {dbname}; start Silo with this --postgres-url \
         (its first start reconciles the catalog with the packs on disk)"
    );
    Ok(())
}
