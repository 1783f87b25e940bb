//! `silo catalog restore`: rebuilds a lost catalog from a catalog backup, offline.
//!
//! It reads the offline manifest that `silo backup catalog` (or `backup run --all`) wrote to
//! `<data-dir>/catalog-backups/`, follows it to the packs, verifies every chunk, and streams
//! the dump into `pg_restore` on a new, empty database, through the same pipeline as every
//! restore ([`pg_restore::stream_into`]). Silo must be stopped: the data directory's lock is
//! taken. It leaves a marker in the data directory, so that the next start reconciles the
//! restored catalog with the packs on disk (chunks GC moved since the backup, packs the backup
//! does not know) before it serves anything. See the disaster-recovery steps in
//! docs/operations.md.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use db_manager::backup::pg_restore::{self, PgRestoreError, RestoreTarget};
use db_manager::instance::PgBinaries;
use db_manager::pg_tools::pg_env;
use storage_node::DataDir;
use storage_node::ServerSecret;
use storage_node::data_dir::{SERVER_SECRET, secret_file};
use storage_node::store::offline::{OfflineManifest, read_offline};

use crate::secret::Secret;

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
    pub postgres_url: Secret,
    /// Where the Postgres client binaries are.
    #[arg(long, env = "SILO_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<PathBuf>,
}

pub fn restore(args: CatalogRestoreArgs) -> anyhow::Result<()> {
    let data_dir =
        DataDir::open(&args.data_dir).context("cannot open the data directory (is Silo still running?)")?;
    if std::env::var_os("SILO_SERVER_SECRET").is_none() && !data_dir.has_secret(SERVER_SECRET) {
        bail!(
            "the data directory has no server secret ({}) and SILO_SERVER_SECRET is unset",
            secret_file(data_dir.path(), SERVER_SECRET).display()
        );
    }
    let secret = ServerSecret::load_or_create(&data_dir)?;
    let text =
        std::fs::read(&args.manifest).with_context(|| format!("cannot read {}", args.manifest.display()))?;
    let manifest: OfflineManifest =
        serde_json::from_slice(&text).context("the manifest is not a catalog manifest")?;
    let config: tokio_postgres::Config =
        args.postgres_url.expose().parse().map_err(|_| anyhow!("--postgres-url is not a valid libpq URL"))?;
    let dbname = config.get_dbname().unwrap_or("silo").to_string();
    let binaries = PgBinaries::locate(args.postgres_bin_dir.as_deref())?;
    let target =
        RestoreTarget { binaries: &binaries, env: pg_env(&config, &dbname), dbname: &dbname, role: None };
    let restored = crate::client::block_on(async {
        // The packs are read on a blocking thread, chunk by verified chunk, into the pipeline.
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, String>>(4);
        let packs = data_dir.packs_dir();
        let reader = tokio::task::spawn_blocking(move || {
            let read = read_offline(&packs, &secret, &manifest, |bytes| {
                sender.blocking_send(Ok(bytes.to_vec())).map_err(|_| std::io::ErrorKind::BrokenPipe.into())
            });
            if let Err(err) = read {
                let _ = sender.blocking_send(Err(err.to_string()));
            }
        });
        let archive = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        let restored = pg_restore::stream_into(target, archive).await;
        reader.await.context("the catalog backup reader")?;
        Ok(restored)
    })?;
    let written = match restored {
        Ok(written) => written,
        Err(PgRestoreError::Damaged(err)) => {
            bail!("the catalog backup cannot be read: {err}; nothing was committed")
        }
        Err(err) => bail!("pg_restore failed ({err}); nothing was committed"),
    };
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
