//! The catalog connection: a pool to Silo's PostgreSQL and the versioned schema migrations.
//!
//! Every component keeps its own migration history table (`<component>_schema_history`), so
//! each crate owns its tables. [`apply_migrations`] refuses a catalog whose schema is newer than
//! this binary knows: an old Silo must not write into tables it does not understand.

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

/// Applies the storage node's migrations. The caller holds the catalog migration lock.
///
/// # Errors
/// See [`apply_migrations`].
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<i64, CatalogError> {
    apply_migrations(client, "storage_node", embedded::migrations::runner()).await
}

/// Applies `runner`'s migrations for `component`, and returns the schema version reached.
///
/// # Errors
/// [`CatalogError::TooNew`] when the catalog is ahead of this binary;
/// [`CatalogError::Migration`] when a migration fails (it is rolled back).
pub async fn apply_migrations(
    client: &mut tokio_postgres::Client,
    component: &str,
    mut runner: refinery::Runner,
) -> Result<i64, CatalogError> {
    let table = format!("{component}_schema_history");
    let known = runner.get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0);
    let exists: bool = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await?.get(0);
    if exists {
        let sql = format!("SELECT coalesce(max(version), 0)::int8 FROM {table}");
        let applied: i64 = client.query_one(&sql, &[]).await?.get(0);
        if applied > known {
            return Err(CatalogError::TooNew { component: component.into(), applied, known });
        }
    }
    let migration_error = |err: refinery::Error| CatalogError::Migration {
        component: component.into(),
        message: err.to_string(),
    };
    runner.set_migration_table_name(&table);
    let report = runner.set_abort_divergent(true).run_async(client).await.map_err(migration_error)?;
    for migration in report.applied_migrations() {
        tracing::info!(
            component,
            version = migration.version(),
            name = migration.name(),
            "applied catalog migration"
        );
    }
    Ok(known)
}
