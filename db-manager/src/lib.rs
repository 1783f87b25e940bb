//! Silo's database manager: the PostgreSQL instances Silo runs itself and the catalog on top.
//!
//! [`instance`] creates, starts, supervises and stops local Postgres clusters with the local
//! `initdb`, `pg_ctl` and `postgres` binaries. The embedded catalog server is one such instance,
//! and dedicated per-client servers will be others. [`catalog`] attaches Silo to its catalog
//! database, wherever it lives, and brings every component's schema up to date.

pub mod catalog;
pub mod embedded;
pub mod instance;
#[cfg(feature = "testing")]
pub mod testing;

pub use instance::{InstanceError, LocalInstance};
