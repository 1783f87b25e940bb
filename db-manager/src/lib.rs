//! Silo's database manager: the PostgreSQL instances Silo runs itself and the catalog on top.
//!
//! [`instance`] (the `pg-local` crate, re-exported) creates, starts, supervises and stops local
//! Postgres clusters with the local `initdb`, `pg_ctl` and `postgres` binaries. The embedded catalog server is one such instance,
//! and [`dedicated`] per-client servers are others. [`catalog`] attaches Silo to its catalog
//! database, wherever it lives, and brings every component's schema up to date.
//!
//! On top, client databases: [`servers`] are the Postgres servers they live on (the embedded
//! one, registered ones, and [`dedicated`] instances), [`databases`] creates, resizes, rotates
//! and deletes them through [`provision`]'s statements, and [`sampler`] watches their size and
//! enforces the quotas of their [`plans`]. [`backup`] backs them up into the chunk store and
//! restores them. [`DbManager`] is the facade the API holds: it builds and starts the services
//! ([`fleet`] of servers, dedicated instances, spare databases, the sampler, workers,
//! [`databases`], [`backup`]s, [`tenant_deletion`]), each with its own state over a small
//! shared context (catalog pool, server secret, admin pools, advisory locks), and hands each
//! out through an accessor.
//! [`states`] types every state and kind as an enum, [`timestamp`] writes timestamps as the
//! API shows them, and [`conn_url`] builds libpq URLs.
//! [`tenant_deletion`] deletes a tenant with all it has, resumably; [`orphans`] tells the
//! storage node's orphan sweep which objects db-manager references. [`tls`] reaches registered
//! servers over TLS that verifies them. Anything that runs a tenant's code (dumps, row counts,
//! restores, verification) connects as a throwaway worker role with no more than the tenant's
//! rights (`workers`), and read-only over quota works by role membership (`read_only`); see
//! docs/security.md.

pub mod backup;
pub mod catalog;
pub mod conn_url;
mod context;
pub mod databases;
pub mod dedicated;
pub mod embedded;
mod error;
pub mod faults;
pub mod fleet;
pub mod manager;
pub mod names;
pub mod orphans;
pub mod pg_tools;
pub mod plans;
mod provision;
mod read_only;
pub mod sampler;
pub mod servers;
mod spares;
pub mod states;
pub mod tenant_deletion;
pub mod timestamp;
pub mod tls;
pub mod usage;
mod workers;

/// Local Postgres clusters (the embedded catalog server, dedicated servers) are `pg-local`'s,
/// below storage-node; db-manager runs them and hands them on under this name.
pub use pg_local as instance;

pub use dedicated::DedicatedOptions;
pub use error::DbError;
pub use instance::{InstanceError, LocalInstance};
pub use manager::{DbManager, ManagerConfig};
