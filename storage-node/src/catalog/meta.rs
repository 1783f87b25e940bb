//! `silo_meta`: the one row that names this catalog, and the server it lives on.
//!
//! Its id survives restarts and tells operators (and tests) which catalog a Silo process is
//! attached to; db-manager marks the roles it makes with it.

use super::{CatalogError, CatalogPool};

/// What the catalog says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogMeta {
    /// The catalog's id, a UUID in its canonical text form (with dashes).
    pub catalog_id: String,
    /// The catalog server's `server_version` setting.
    pub server_version: String,
}

impl CatalogMeta {
    /// The catalog id without its dashes (32 hex digits), for names that must stay short.
    pub fn compact_id(&self) -> String {
        self.catalog_id.replace('-', "")
    }
}

/// Reads the catalog's id and its server's version.
///
/// # Errors
/// [`CatalogError::Unreachable`] or [`CatalogError::Query`] (before migrations, the table is
/// missing).
pub async fn read(pool: &CatalogPool) -> Result<CatalogMeta, CatalogError> {
    let client = pool.get().await?;
    let row = client
        .query_one("SELECT catalog_id::text, current_setting('server_version') FROM silo_meta", &[])
        .await?;
    Ok(CatalogMeta { catalog_id: row.get(0), server_version: row.get(1) })
}
