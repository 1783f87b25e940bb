//! The catalog connection: a pool to Silo's PostgreSQL and the versioned schema migrations.
//!
//! Every component keeps its own migration history table (`<component>_schema_history`), so
//! each crate owns its tables. [`apply_migrations`] refuses a catalog whose schema is newer than
//! this binary knows (an old Silo must not write into tables it does not understand), unless
//! the release that migrated it said that this binary's version may still run on it
//! (`schema_compat`, [`Component::runnable_since`]): a rolling upgrade can then restart a node
//! of the previous release.

pub mod access_keys;
pub mod key_cache;
pub mod meta;
pub mod tenants;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A pool of catalog connections.
pub type CatalogPool = Pool;

/// Why the catalog cannot be reached or brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot build the catalog connection pool: {0}")]
    Pool(String),
    #[error("the catalog is unreachable: {0}")]
    Unreachable(String),
    #[error("catalog query failed: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error(
        "the catalog schema of {component} is at version {applied}, newer than this Silo knows \
         ({known}); run a Silo at least as new as the one that migrated it"
    )]
    TooNew { component: String, applied: i64, known: i64 },
    #[error(
        "the catalog schema of {component} is at version {applied}, newer than this Silo knows \
         ({known}), and the release that migrated it runs only with Silos that know version \
         {runnable_since} or later; run a Silo at least that new"
    )]
    NotRunnable { component: String, applied: i64, known: i64, runnable_since: i64 },
    #[error("migrating the catalog schema of {component} failed: {message}")]
    Migration { component: String, message: String },
}

impl From<deadpool_postgres::PoolError> for CatalogError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        CatalogError::Unreachable(err.to_string())
    }
}

/// Describes a Postgres error with the server's own message, which `Display` leaves out.
pub fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => err.to_string(),
    }
}

/// Builds a pool over `config`. Connections are made lazily, with short connect timeouts so
/// that a dead catalog turns into a quick error rather than a hung request.
///
/// # Errors
/// [`CatalogError::Pool`] when the pool cannot be built.
pub fn connect_pool(config: tokio_postgres::Config, max_size: usize) -> Result<CatalogPool, CatalogError> {
    connect_pool_with(config, max_size, NoTls)
}

/// [`connect_pool`] over the TLS connector `tls` (db-manager reaches registered servers over
/// TLS that verifies them).
///
/// # Errors
/// [`CatalogError::Pool`] when the pool cannot be built.
pub fn connect_pool_with<T>(
    mut config: tokio_postgres::Config,
    max_size: usize,
    tls: T,
) -> Result<CatalogPool, CatalogError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
{
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("silo");
    let manager =
        Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        // Under a burst (dozens of uploads, each looking chunks up in parallel) waiting for a
        // free connection beats failing; a dead catalog still fails fast at connect time.
        .wait_timeout(Some(Duration::from_secs(60)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|err| CatalogError::Pool(err.to_string()))
}

/// The parameters of a typed statement: each value with its type.
pub(crate) type TypedParams<'a> =
    [(&'a (dyn tokio_postgres::types::ToSql + Sync), tokio_postgres::types::Type)];

/// The row (if any) of `sql` run in `txn` as a statement prepared once per pooled connection
/// (deadpool's cache): the hot statements of a small PUT are parsed and planned once, not on
/// every call as an unnamed typed statement is. Only for statements whose plan is the same
/// whatever the parameters (inserts, primary-key lookups).
///
/// # Errors
/// The catalog's.
pub(crate) async fn query_prepared_opt(
    txn: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &TypedParams<'_>,
) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let types: Vec<tokio_postgres::types::Type> = params.iter().map(|(_, kind)| kind.clone()).collect();
    let statement = txn.prepare_typed_cached(sql, &types).await?;
    let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|(value, _)| *value).collect();
    Ok(txn.query(&statement, &values).await?.into_iter().next())
}

/// Answers whether the catalog accepts a query right now.
///
/// # Errors
/// [`CatalogError::Unreachable`] or [`CatalogError::Query`] with the reason.
pub async fn ping(pool: &CatalogPool) -> Result<(), CatalogError> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}

/// This catalog's id (`silo_meta`, a UUID in its text form): fixed when the catalog was made,
/// it names the catalog to operators and to what Silo leaves on shared servers.
///
/// # Errors
/// [`CatalogError::Unreachable`] or [`CatalogError::Query`] with the reason.
pub async fn catalog_id(pool: &CatalogPool) -> Result<String, CatalogError> {
    let client = pool.get().await?;
    Ok(client.query_one("SELECT catalog_id::text FROM silo_meta", &[]).await?.get(0))
}

/// The storage node's schema: binaries that know version 17 or later may run on a catalog this
/// release migrated (17 made `schema_compat`; 16's `invalidates_reads` must be set by every
/// node's registration, which releases before it do not do).
pub const STORAGE_NODE: Component = Component { name: "storage_node", runnable_since: 17 };

/// A component's migrations, as [`apply_migrations`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    /// Its history table is `<name>_schema_history`.
    pub name: &'static str,
    /// The lowest schema version a binary must know to run on the catalog once this release's
    /// migrations are applied. Raise it to the new version with a migration that changes, drops
    /// or newly requires what older releases use; leave it with one that only adds what they
    /// can ignore.
    pub runnable_since: i64,
}

/// Applies the storage node's migrations. The caller holds the catalog migration lock.
///
/// # Errors
/// See [`apply_migrations`].
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<i64, CatalogError> {
    apply_migrations(client, STORAGE_NODE, migrations()).await
}

/// The storage node's migrations, as this binary knows them.
pub fn migrations() -> refinery::Runner {
    embedded::migrations::runner()
}

/// The version of the last of `runner`'s migrations (0 for none).
pub fn latest_version(runner: &refinery::Runner) -> i64 {
    runner.get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

/// Applies `runner`'s migrations for `component`, records what releases may still run on the
/// catalog, and returns the schema version the catalog is at. On a catalog ahead of this
/// binary it changes nothing, and goes on only if the release that migrated it allows this one.
/// The storage node's migrations run first (they make `schema_compat`).
///
/// # Errors
/// [`CatalogError::TooNew`] or [`CatalogError::NotRunnable`] when the catalog is ahead of this
/// binary and does not allow it; [`CatalogError::Migration`] when a migration fails (it is
/// rolled back).
pub async fn apply_migrations(
    client: &mut tokio_postgres::Client,
    component: Component,
    mut runner: refinery::Runner,
) -> Result<i64, CatalogError> {
    let name = component.name;
    let table = format!("{name}_schema_history");
    let known = latest_version(&runner);
    let exists: bool = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await?.get(0);
    if exists {
        let sql = format!("SELECT coalesce(max(version), 0)::int8 FROM {table}");
        let applied: i64 = client.query_one(&sql, &[]).await?.get(0);
        if applied > known {
            return runnable_on_newer(client, name, applied, known).await;
        }
    }
    let migration_error =
        |err: refinery::Error| CatalogError::Migration { component: name.into(), message: err.to_string() };
    // Raised before the migrations too: one that commits and is then cut off before the end
    // must not leave a floor that lets older releases onto a schema they cannot use.
    if compat_recorded(client).await? {
        raise_floor(client, component, known).await?;
    }
    runner.set_migration_table_name(&table);
    let report = runner.set_abort_divergent(true).run_async(client).await.map_err(migration_error)?;
    for migration in report.applied_migrations() {
        tracing::info!(
            component = name,
            version = migration.version(),
            name = migration.name(),
            "applied catalog migration"
        );
    }
    raise_floor(client, component, known).await?;
    Ok(known)
}

/// Whether the catalog has `schema_compat` (V17 and later).
async fn compat_recorded(client: &tokio_postgres::Client) -> Result<bool, CatalogError> {
    Ok(client.query_one("SELECT to_regclass('schema_compat') IS NOT NULL", &[]).await?.get(0))
}

/// Records that a binary must know `component.runnable_since` (at most `known`) to run on the
/// catalog. Never lowered: a release that needs more than an earlier one said stays the floor.
async fn raise_floor(
    client: &tokio_postgres::Client,
    component: Component,
    known: i64,
) -> Result<(), CatalogError> {
    client
        .execute(
            "INSERT INTO schema_compat (component, oldest_runnable) VALUES ($1, $2) \
             ON CONFLICT (component) DO UPDATE \
             SET oldest_runnable = greatest(schema_compat.oldest_runnable, EXCLUDED.oldest_runnable)",
            &[&component.name, &component.runnable_since.min(known)],
        )
        .await?;
    Ok(())
}

/// Whether this binary, which knows `name`'s schema up to `known`, may run on a catalog at
/// `applied` (newer): the version it is at when the migrating release allows this one.
async fn runnable_on_newer(
    client: &tokio_postgres::Client,
    name: &str,
    applied: i64,
    known: i64,
) -> Result<i64, CatalogError> {
    let floor: Option<i64> = match compat_recorded(client).await? {
        true => client
            .query_opt("SELECT oldest_runnable FROM schema_compat WHERE component = $1", &[&name])
            .await?
            .map(|row| row.get(0)),
        false => None,
    };
    match floor {
        Some(runnable_since) if known >= runnable_since => {
            tracing::warn!(
                component = name,
                catalog = applied,
                known,
                runnable_since,
                "the catalog schema is newer than this Silo, which the release that migrated it allows; \
                 upgrade this node"
            );
            Ok(applied)
        }
        Some(runnable_since) => {
            Err(CatalogError::NotRunnable { component: name.into(), applied, known, runnable_since })
        }
        None => Err(CatalogError::TooNew { component: name.into(), applied, known }),
    }
}
