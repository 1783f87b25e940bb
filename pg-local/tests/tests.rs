//! pg-local's integration tests, one binary with a module per feature, each test with a cluster
//! of its own in a scratch directory.
//!
//! Run one feature with `cargo test -p pg-local --test integration instance::`.

mod instance;
