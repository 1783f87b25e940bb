//! Deleting a client database behind its final backup: the one operation on a database that
//! needs a backup first, so it lives with the backups, above [`crate::databases`].

use super::Backups;
use crate::DbError;
use crate::states::BackupKind;

impl Backups {
    /// Deletes a database and its role, unless deletion protection is on; first takes a final
    /// backup (kept for the configured retention) unless `skip_final_backup`.
    pub async fn delete_database(
        &self,
        tenant: &str,
        name: &str,
        skip_final_backup: bool,
    ) -> Result<(), DbError> {
        // The lock first: a restore or resize meanwhile would break the final backup.
        let (row, _lock) = self.databases.lock_for_delete(tenant, name).await?;
        if !skip_final_backup {
            let backup = self.backup_now(&row, BackupKind::Final).await?;
            tracing::info!(tenant, database = name, backup = backup.id, "took the final backup");
        }
        self.databases.delete_locked(&row).await
    }
}
