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
    /// The latest migration for which [`super::DB_MANAGER`]'s floor was decided.
    const FLOOR_DECIDED_AT: i64 = 5;

    /// See the storage node's test of the same name: a new migration needs its floor decided.
    #[test]
    fn the_floor_was_decided_for_the_latest_migration() {
        let latest = super::embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| i64::from(m.version()))
            .max();
        assert_eq!(latest, Some(FLOOR_DECIDED_AT), "a new migration: decide DB_MANAGER.runnable_since");
    }
}
