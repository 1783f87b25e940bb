//! The states and kinds of db-manager's catalog rows as enums: server kind, database state,
//! backup kind and status, and what a backup run did to a database. Each maps to its checked
//! text column (`ToSql`/`FromSql` over the column's text) and to JSON as the same snake_case
//! word, so neither the catalog nor the API changes. They are declared with storage-node's
//! [`text_enum!`](storage_node::text_enum!), which its node states use too.

use storage_node::text_enum;
pub use storage_node::text_enum::UnknownWord;

text_enum!(
    /// What kind of Postgres server holds client databases.
    ServerKind {
        /// The instance Silo runs for its own catalog.
        Embedded => "embedded",
        /// One that ops run and registered.
        Registered => "registered",
        /// An instance Silo runs for one tenant.
        Dedicated => "dedicated",
    }
);

text_enum!(
    /// Where a client database is in its life.
    DatabaseState {
        /// Being made; not listed until it is active.
        Creating => "creating",
        Active => "active",
        /// Over its storage quota: writes are revoked until it is back under.
        ReadOnlyOverQuota => "read_only_over_quota",
        Deleting => "deleting",
        /// Being restored in place, with a safety backup to go back to.
        Restoring => "restoring",
        /// An in-place restore failed and putting the safety backup back failed too.
        RestoreFailed => "restore_failed",
    }
);

text_enum!(
    /// Why a backup was taken.
    BackupKind {
        Scheduled => "scheduled",
        Manual => "manual",
        /// Taken before a delete, kept until its expiry.
        Final => "final",
        /// Taken before an in-place restore, kept until its expiry.
        Safety => "safety",
    }
);

text_enum!(
    /// Where a backup (of a client database or of the catalog) is.
    BackupStatus {
        Running => "running",
        Complete => "complete",
        Failed => "failed",
    }
);

text_enum!(
    /// What a backup run did to one database.
    RunStatus {
        Complete => "complete",
        Failed => "failed",
        /// Another run holds the lease, or the database is being changed.
        Skipped => "skipped",
        NotDue => "not_due",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_text_and_json() {
        for state in [DatabaseState::Creating, DatabaseState::ReadOnlyOverQuota, DatabaseState::RestoreFailed]
        {
            assert_eq!(state.as_str().parse::<DatabaseState>().ok(), Some(state));
            assert_eq!(serde_json::to_string(&state).ok(), Some(format!("\"{}\"", state.as_str())));
        }
        assert_eq!(serde_json::to_string(&RunStatus::NotDue).ok().as_deref(), Some("\"not_due\""));
        assert!("dedicated ".parse::<ServerKind>().is_err());
    }
}
