//! Bringing the whole catalog schema up to date, once, even with several Silo replicas starting.
//!
//! Every component's migrations run under one session-level advisory lock, on a connection
//! taken out of the pool and closed afterwards, so the lock can never leak into a pooled
//! connection. Components migrate in dependency order: `storage_node`, then `db_manager`.

use deadpool_postgres::Object;
use storage_node::catalog::{CatalogError, CatalogPool, Component};

/// The advisory lock key that serialises catalog migrations ("silo" in ASCII).
const MIGRATION_LOCK: i64 = 0x7369_6c6f;

/// The schema version each component reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaVersions {
    pub storage_node: i64,
    pub db_manager: i64,
}

/// The database manager's schema: only binaries that know all of it may run on a catalog this
/// release migrated (see [`Component::runnable_since`]).
pub const DB_MANAGER: Component = Component { name: "db_manager", runnable_since: 5 };

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Applies every component's pending migrations.
///
/// # Errors
/// [`CatalogError`] when the catalog is unreachable, newer than this binary, or a migration fails.
pub async fn migrate_all(pool: &CatalogPool) -> Result<SchemaVersions, CatalogError> {
    let mut client = Object::take(pool.get().await?);
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let storage_node = storage_node::catalog::migrate(&mut client).await?;
    let db_manager =
        storage_node::catalog::apply_migrations(&mut client, DB_MANAGER, embedded::migrations::runner())
            .await?;
    // Dropping the connection releases the lock, whatever happened above.
    drop(client);
    Ok(SchemaVersions { storage_node, db_manager })
}

#[cfg(test)]
mod tests {
    use storage_node::catalog::{STORAGE_NODE, latest_version};

    /// The latest migrations of the storage node and of the database manager for which their
    /// floors ([`STORAGE_NODE`], [`super::DB_MANAGER`]) were decided.
    const FLOORS_DECIDED_AT: (i64, i64) = (17, 5);

    /// Whoever adds a migration decides whether releases before it may still run on the catalog
    /// it makes: raise its component's `runnable_since` to the new version if it changes, drops
    /// or newly requires what they use, leave it if it only adds; then move `FLOORS_DECIDED_AT`.
    #[test]
    fn the_floors_were_decided_for_the_latest_migrations() {
        let latest = (
            latest_version(&storage_node::catalog::migrations()),
            latest_version(&super::embedded::migrations::runner()),
        );
        assert_eq!(latest, FLOORS_DECIDED_AT, "a new migration: decide the runnable_since of its component");
        assert!(STORAGE_NODE.runnable_since <= latest.0 && super::DB_MANAGER.runnable_since <= latest.1);
    }
}
