//! The embedded catalog server: the local instance that `silo serve` owns when no external
//! Postgres is configured, under `<data-dir>/postgres`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};
use storage_node::DataDir;

use crate::DbError;
use crate::instance::{InstanceError, InstanceSpec, LocalInstance, PgBinaries, RunAs};

/// The catalog database's name on the embedded server.
pub const CATALOG_DATABASE: &str = "silo";
/// The embedded server's superuser.
pub const SUPERUSER: &str = "silo";
/// The secret file holding the superuser's password.
pub use storage_node::data_dir::POSTGRES_PASSWORD_SECRET as PASSWORD_SECRET;
const DEFAULT_PORT: u16 = 5432;

/// How to run the embedded server.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Where the Postgres binaries are; searched for when `None`.
    pub bin_dir: Option<PathBuf>,
    /// The OS user Postgres runs as when Silo runs as root.
    pub os_user: String,
    /// A TCP address to listen on besides the unix socket.
    pub listen: Option<SocketAddr>,
}

/// Creates the embedded server on first use, starts it and makes sure the catalog database
/// exists. Returns the instance and its postmaster pid.
///
/// # Errors
/// [`DbError::Instance`] when the binaries are missing or the server does not start, and
/// [`DbError::DataDir`] when the data directory is unusable.
pub async fn start(
    data_dir: &DataDir,
    options: &EmbeddedOptions,
) -> Result<(Arc<LocalInstance>, u32), DbError> {
    let binaries = PgBinaries::locate(options.bin_dir.as_deref())?;
    let run_as = RunAs::for_this_process(&options.os_user)?;
    if run_as.switched_user().is_some() {
        data_dir.allow_traversal_by_others()?;
    }
    let (password, _) =
        data_dir.secret_or_create(PASSWORD_SECRET, || Alphanumeric.sample_string(&mut rand::rng(), 40))?;
    let spec = InstanceSpec {
        root: data_dir.postgres_dir(),
        superuser: SUPERUSER.into(),
        superuser_password: password,
        port: options.listen.map_or(DEFAULT_PORT, |addr| addr.port()),
        listen: options.listen.map(|addr| addr.ip()),
        settings: Vec::new(),
    };
    let instance = Arc::new(LocalInstance::new(spec, binaries, run_as));
    let starting = instance.clone();
    let pid = tokio::task::spawn_blocking(move || {
        starting.ensure_initialized()?;
        starting.start()
    })
    .await
    .map_err(|err| InstanceError::Task(err.to_string()))??;
    instance.ensure_database(CATALOG_DATABASE).await?;
    Ok((instance, pid))
}
