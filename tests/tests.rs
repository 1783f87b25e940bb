//! The root crate's integration tests, one binary with a module per feature (one link of the AWS
//! SDK, one throwaway Postgres shared by every test that runs against it; each test makes its own
//! databases, tenants, ports and directories, so they run in parallel without meeting).
//!
//! Run one feature with `cargo test --test integration s3_sdk::`, one test by its name.

mod common;

mod backups;
mod caching;
mod catalog_dr;
mod cluster;
mod cluster_upkeep;
mod databases;
mod front_door;
mod internal_tls;
mod memory;
mod node_api;
mod nodes;
mod repair;
mod s3_checksums;
mod s3_clients;
mod s3_fidelity;
mod s3_fidelity_errors;
mod s3_integrity;
mod s3_props;
mod s3_registry;
mod s3_sdk;
mod s3_tools;
mod serve;
mod small_objects;
mod storage_cli;
mod tenants;
