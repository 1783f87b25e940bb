//! The database manager's integration tests, one binary with a module per feature, against one
//! throwaway Postgres (each test makes its own databases or its own cluster).
//!
//! Run one feature with `cargo test -p db-manager --test integration catalog::`.

mod catalog;
mod orphans;
