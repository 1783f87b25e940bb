//! The internal node API: how the nodes of one cluster move packs between them.
//!
//! Served on a listener of its own (`--internal-listen`), never on the public port. The routes,
//! by the protocol version that brought them (a node accepts versions 1 to 3):
//!
//! Version 1:
//! - `PUT /internal/v1/packs/{id}`: a whole sealed pack, streamed into a temporary file,
//!   fsynced, verified record by record and only then linked into place; `201` when stored,
//!   `200` when the same bytes were already held, `409` when other bytes are ([`receive`]);
//! - `GET /internal/v1/packs/{id}`: the pack, or one byte range of it (`Range`, `206`, `416`);
//!   `HEAD` gives its length; `DELETE` removes it (idempotent) ([`packs`]).
//!
//! Version 2 (version 1 routes unchanged):
//! - `PATCH /internal/v1/packs/{id}` with `Silo-Pack-Offset: N`: appends the streamed records
//!   at byte `N` of this node's copy of a pack being written, only while the catalog records a
//!   `writing` replica of it here and only records of the pack's domain; `200 {"len": L}` once
//!   durable, `409 offset_mismatch` with `Silo-Pack-Length` when the copy is shorter than `N`,
//!   `422 damaged` (nothing kept), `403 wrong_domain`, `409 not_writing` ([`append`]). A
//!   request in version 1 is refused as `unsupported_version`.
//!
//! Version 3 (earlier routes unchanged):
//! - `POST /internal/v1/reads/invalidate` with `{"bucket": B, "keys": [K...]}` (no `keys`: the
//!   whole bucket): drops those lookups from the node's read cache before a peer's write is
//!   acknowledged; `204` ([`crate::read_cache`]). Only nodes of version 3 or later hold read
//!   cache leases, so only they are asked.
//!
//! In production the API is served over TLS ([`tls`]: the listener's certificate, and the
//! cluster CA that clients trust peers' certificates to chain to, and nothing else).
//!
//! Every request presents the cluster token ([`auth`]) and names its protocol version
//! ([`version`]). Pack ids in paths are canonical positive integers ([`pack_id`]), and a pack
//! larger than [`pack_size_limit`] is refused with `413`. [`NodeClient`] is the other side: it
//! sends packs from files or streams, appends, and reads packs as streams, so that a node can
//! relay a pack through memory. Replicated writes append to each replica with it, and repair
//! copies packs with it.

mod append;
mod auth;
mod client;
mod error;
mod pack_id;
mod packs;
mod range_client;
mod receive;
mod server;
mod tee;
mod tls;
mod transfer;
mod verify;
pub mod version;
mod writing;

pub use append::{LENGTH_HEADER, OFFSET_HEADER};
pub use auth::ClusterToken;
pub use client::{ClientError, IDLE_TIMEOUT, NodeClient, PackStream};
pub use pack_id::parse_pack_id;
pub use packs::{PackRead, ReadError};
pub use receive::{ReceiveError, Received, receive_pack};
pub use server::{INVALIDATE_ROUTE, NodeApi, PACK_ROUTE};
pub use tls::{PeerTls, RECHECK_EVERY as TLS_RECHECK_EVERY, TlsError, server_config};
pub use verify::{VerifiedPack, verify_pack_file};
pub use writing::ThisNode;

use crate::pack::{PACK_HEADER_LEN, RECORD_HEADER_LEN};

/// The largest pack a node takes from a peer when packs are sealed at `pack_target_bytes`: a
/// pack is sealed once it reaches that, so it may pass it by one record, of the largest chunk any
/// configuration allows (packs written under an older, larger chunk maximum still pass).
pub fn pack_size_limit(pack_target_bytes: u64) -> u64 {
    let largest_chunk = fastcdc::v2020::MAXIMUM_MAX as u64;
    pack_target_bytes + PACK_HEADER_LEN + RECORD_HEADER_LEN + largest_chunk
}
