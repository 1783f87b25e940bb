//! The chunk-store objects db-manager references, for the storage node's orphan sweep.
//!
//! Database backups and catalog backups are stored with `ChunkStore::put` and then recorded
//! in `database_backups.object_id` and `catalog_backups.object_id`; a crash in between leaves
//! an object that nothing names. The sweep deletes such objects once they are older than
//! [`ORPHAN_GRACE`], and never one that these columns (or an S3 key or part) name. A new
//! table of db-manager that keeps object ids must be added to [`REFERRERS`].

use std::time::Duration;

use storage_node::store::{ChunkStore, Referrer};

use crate::DbError;

/// Where db-manager keeps object ids.
pub const REFERRERS: [Referrer; 2] = [
    Referrer { table: "database_backups", column: "object_id" },
    Referrer { table: "catalog_backups", column: "object_id" },
];

/// How old an unreferenced object must be before the sweep takes it: far longer than the
/// moment between a backup's object committing and its row naming it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Deletes objects older than [`ORPHAN_GRACE`] that nothing references. Returns how many.
pub async fn sweep_orphan_objects(store: &ChunkStore) -> Result<u64, DbError> {
    Ok(store.sweep_orphans(ORPHAN_GRACE, &REFERRERS).await?)
}
