//! The errors of managing servers and client databases, each precise enough for an HTTP status.

use storage_node::catalog::{CatalogError, describe};

use crate::InstanceError;
use crate::names::NAME_RULE;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database name {0:?}: names must match {NAME_RULE}")]
    InvalidName(String),
    #[error("invalid server name {0:?}: names must match ^[a-z][a-z0-9-]{{1,62}}$")]
    InvalidServerName(String),
    #[error("unknown plan {plan:?}; the plans are: {known}")]
    UnknownPlan { plan: String, known: String },
    #[error("no tenant named {0:?}")]
    TenantNotFound(String),
    #[error(
        "the tenant {tenant} still has {objects} objects and {databases} databases; pass ?force=true to delete them too"
    )]
    TenantNotEmpty { tenant: String, objects: i64, databases: i64 },
    #[error("the tenant {0:?} is being deleted")]
    TenantDeleting(String),
    #[error("tenant {tenant:?} has no database named {name:?}")]
    NotFound { tenant: String, name: String },
    #[error("tenant {tenant:?} already has a database named {name:?}")]
    Exists { tenant: String, name: String },
    #[error("database {name:?} is being changed by another request; retry shortly")]
    Busy { name: String },
    #[error("deletion protection is on for {name:?}; PATCH it with {{\"deletion_protection\": false}} first")]
    DeletionProtected { name: String },
    #[error(
        "tenant {tenant:?} owns the storage node(s) {nodes:?}: start them without --owner first (a node that holds packs keeps its owner)"
    )]
    TenantOwnsNodes { tenant: String, nodes: Vec<String> },
    #[error("no Postgres server can take a database of tenant {tenant:?}{}", zone_clause(.zone))]
    NoServer { tenant: String, zone: Option<String> },
    #[error("no Postgres server is in zone {zone:?}; the zones are: {known}")]
    UnknownZone { zone: String, known: String },
    #[error("no server named {0:?}")]
    ServerNotFound(String),
    #[error("a server named {0:?} already exists")]
    ServerExists(String),
    #[error("server {name:?} still holds {databases} database(s); delete them first")]
    ServerInUse { name: String, databases: i64 },
    #[error("invalid server: {0}")]
    InvalidServer(String),
    #[error("the Postgres server {server:?} is unreachable: {message}")]
    ServerUnreachable { server: String, message: String },
    #[error("on Postgres server {server:?}: {message}")]
    Server { server: String, message: String },
    #[error("a role named {role:?} already exists on server {server:?} and is not Silo's")]
    RoleTaken { role: String, server: String },
    #[error("a database named {database:?} already exists on server {server:?} and is not Silo's")]
    DatabaseTaken { database: String, server: String },
    #[error(
        "tenant {tenant:?} cannot have databases: names starting with \"silo_\" are reserved for Silo's own roles and databases"
    )]
    ReservedName { tenant: String },
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyMismatch,
    #[error("no backup with id {0}")]
    BackupNotFound(i64),
    #[error("backup {id} is {status}, not complete: it cannot be restored")]
    BackupNotComplete { id: i64, status: crate::states::BackupStatus },
    #[error("database {name:?} is being backed up by another run")]
    BackupBusy { name: String },
    #[error(
        "the backup of {database:?} does not fit the tenant's storage quota ({message}); raise the quota, or delete with skip_final_backup"
    )]
    BackupOverQuota { database: String, message: String },
    #[error("the dump of {database:?} failed: {message}")]
    Dump { database: String, message: String },
    #[error("the restore failed: {message}")]
    Restore { message: String },
    #[error("backup {id} is damaged: {message}")]
    Integrity { id: i64, message: String },
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Store(#[from] storage_node::store::StoreError),
    #[error("a secret in the catalog cannot be opened with this server secret")]
    SealedSecret,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    DataDir(#[from] storage_node::DataDirError),
}

fn zone_clause(zone: &Option<String>) -> String {
    zone.as_ref().map(|z| format!(" in zone {z:?}")).unwrap_or_default()
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        DbError::Catalog(CatalogError::Query(err))
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        DbError::Catalog(CatalogError::from(err))
    }
}

impl DbError {
    /// An error of a statement run on a managed server (not the catalog).
    pub(crate) fn on_server(server: &str) -> impl Fn(tokio_postgres::Error) -> DbError + '_ {
        move |err| DbError::Server { server: server.to_string(), message: describe(&err) }
    }
}
