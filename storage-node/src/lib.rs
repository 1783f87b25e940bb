//! Silo's storage node: the data directory it owns and the catalog schema of stored media.
//!
//! This crate is the bottom of Silo's dependency chain (`storage-node` ← `db-manager` ← `silo`).
//! It owns everything about bytes at rest: the on-disk data directory (its claim marker, its lock
//! and its secret files) and the catalog tables that describe stored media. Later layers add
//! chunking, the chunk store, the S3 data plane, GC and scrub here.

pub mod catalog;
pub mod chunker;
pub mod compress;
pub mod data_dir;
pub mod keys;
pub mod pack;
pub mod s3;
pub mod store;

pub use data_dir::{DataDir, DataDirError};
