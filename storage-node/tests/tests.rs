//! The storage node's integration tests, one binary with a module per feature, against one
//! throwaway Postgres (each test makes its own catalog database and data directory).
//!
//! Run one feature with `cargo test -p storage-node --test integration faults::`.

mod common;

mod chunk_store;
mod faults;
mod recovery;
mod small_objects;
