//! Silo's storage node: media bytes at rest and the S3 data plane over them.
//!
//! This crate is the bottom of Silo's dependency chain (`storage-node` ← `db-manager` ← `silo`).
//! It owns everything about bytes at rest: the on-disk data directory ([`data_dir`]: its claim
//! marker, its lock and its secret files), content-defined [`chunker`], [`compress`]ion, the
//! three kinds of key ([`tenant_id`] names a tenant, [`chunk_id`] names a tenant's chunks with
//! a key of its own, [`chunk_tree`] keeps the per-block values that verify part of a chunk, [`server_secret`] derives those keys and seals secrets at rest), the
//! append-only [`pack`] files, the chunk [`store`] (ingest, commit, verified reads, GC, scrub,
//! the reconcile of a restored catalog and the orphan sweep) with its [`catalog`] tables, the
//! [`model`] of buckets, objects and multipart uploads over the store, and the [`s3`] data
//! plane on top, which only translates S3 to and from the model. [`timestamp`] says how the
//! API writes an instant, [`text_enum`] how a state is kept in a text column. [`node_api`]
//! moves packs between the nodes of a cluster (records in [`buffer_pool`]'s reused buffers); [`placement`] says which nodes a tenant's packs go to;
//! [`read_cache`] keeps hot objects' lookups on each node, coherent across nodes;
//! [`repair`] keeps every pack at its copies (the model's `node_retire` drains and removes nodes).

pub mod buffer_pool;
pub mod catalog;
pub mod chunk_id;
pub mod chunk_tree;
pub mod chunker;
pub mod compress;
pub mod data_dir;
pub mod model;
pub mod node_api;
pub mod node_state;
pub mod pack;
pub mod placement;
pub mod read_cache;
pub mod repair;
pub mod s3;
pub mod server_secret;
pub mod store;
pub mod tenant_id;
pub mod text_enum;
pub mod timestamp;

pub use chunk_id::{ChunkId, ChunkKey};
pub use data_dir::{DataDir, DataDirError};
pub use server_secret::ServerSecret;
pub use tenant_id::TenantId;
