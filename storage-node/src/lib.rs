//! Silo's storage node: media bytes at rest and the S3 data plane over them.
//!
//! This crate is the bottom of Silo's dependency chain (`storage-node` ← `db-manager` ← `silo`).
//! It owns everything about bytes at rest: the on-disk data directory ([`data_dir`]: its claim
//! marker, its lock and its secret files), content-defined [`chunker`], [`compress`]ion, the
//! keyed ids of [`keys`], the append-only [`pack`] files, the chunk [`store`] (ingest, commit,
//! verified reads, GC, scrub, the reconcile of a restored catalog and the orphan sweep) with its
//! [`catalog`] tables, and the [`s3`] data plane on top.

pub mod catalog;
pub mod chunker;
pub mod compress;
pub mod data_dir;
pub mod keys;
pub mod pack;
pub mod s3;
pub mod store;

pub use data_dir::{DataDir, DataDirError};
